"""colour_video end to end on tiny clips: frames, timing, audio, luma, trims, errors, temp files."""
from fractions import Fraction

from pathlib import Path

import av
import numpy as np
import pytest
import torch

from colourbatch import config
from colourbatch import colour, media, video
from colourbatch.errors import ColourbatchError
from colourbatch.pipeline import RunConfig
from colourbatch.video import VideoConfig, VideoError, colour_video
from conftest import _write_audio_only, _write_clip
from test_media import _yuv_clip, luma


@pytest.fixture
def run(tiny_tinted_weights):
    return RunConfig(weights=str(tiny_tinted_weights), workers=0, batch_size=4, precision="fp32")


def streams(path):
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = list(c.decode(v))
        audio = [(s.codec_context.name, s.codec_context.sample_rate, s.codec_context.channels,
                  s.metadata.get("language")) for s in c.streams.audio]
        return frames, v, audio, dict(c.metadata)


def test_mp4_with_audio_keeps_frames_timing_and_sound(tmp_path, make_clip, run):
    clip = make_clip("a.mp4", frames=8, audio="aac", rate=48000, channels=2, title="A Film", rotation=90)
    dst = tmp_path / "out.mp4"
    rep = colour_video(clip, dst, run)
    assert rep.ok and rep.frames_in == rep.frames_out == 8 and rep.frames_lost == 0
    assert rep.audio_copied == 1 and rep.was_greyscale is True
    assert rep.duration == pytest.approx(8 / 25, abs=1e-6) and rep.output_bytes == dst.stat().st_size
    frames, v, audio, meta = streams(dst)
    src_frames, *_ = streams(clip)
    assert len(frames) == 8 and (frames[0].width, frames[0].height) == (64, 48)
    assert [f.time for f in frames] == pytest.approx([f.time for f in src_frames])
    assert audio == [("aac", 48000, 2, "fra")]
    assert meta.get("title") == "A Film"
    assert frames[0].rotation == 90
    # colour arrived (tinted weights); the luma is the source's within x264's rounding at crf 18,
    # and the lightness within what a constant luma allows a tint (luma is not L for a hue)
    out_rgb = frames[3].to_ndarray(format="rgb24")
    assert not colour.is_greyscale(out_rgb)
    assert np.abs(luma(frames[3]).astype(int) - luma(src_frames[3])).mean() < 1.5
    diff = np.abs(colour.rgb_to_l(out_rgb).astype(int)
                  - colour.rgb_to_l(src_frames[3].to_ndarray(format="rgb24")).astype(int))
    assert diff.mean() < 6.0


@pytest.mark.parametrize("pix_fmt,colorspace,color_range,out_fmt,tags", [
    ("yuv420p", 1, 1, "yuv420p", (1, 1)),   # BT.709 limited 4:2:0, written 4:2:0
    ("yuv420p", 6, 2, None, (6, 2)),        # BT.601 full range, written 4:4:4 (ffv1's default)
    ("yuv444p", 2, 0, None, (6, 1)),        # untagged SD: taken (and tagged) as BT.601 limited
    ("yuv422p", 5, 1, "yuv422p", (6, 1)),   # 4:2:2
    ("gray", 2, 0, None, (6, 2)),           # grey: full range, as FFmpeg's scaler reads it
])
def test_lossless_output_keeps_the_source_luma_bit_for_bit(tmp_path, run, pix_fmt, colorspace,
                                                           color_range, out_fmt, tags):
    clip = _yuv_clip(tmp_path / "a.mkv", pix_fmt, colorspace, color_range)
    dst = tmp_path / "out.mkv"
    rep = colour_video(clip, dst, run, VideoConfig(codec="ffv1", pix_fmt=out_fmt))
    assert rep.ok and rep.frames_out == 4
    out, v, *_ = streams(dst)
    src, *_ = streams(clip)
    for a, b in zip(out, src):
        assert np.array_equal(luma(a), luma(b))
        assert not colour.is_greyscale(a.to_ndarray(format="rgb24"))  # the tint arrived
    assert out[0].format.name == (out_fmt or "yuv444p")
    assert (v.codec_context.colorspace, v.codec_context.color_range) == tags
    assert (out[0].colorspace, out[0].color_range) == tags


def test_a_10_bit_source_is_converted_to_8_bit_luma(tmp_path, run):
    clip = _yuv_clip(tmp_path / "deep.mkv", "yuv420p10le", 1, 1, frames=2)
    dst = tmp_path / "out.mkv"
    assert colour_video(clip, dst, run, VideoConfig(codec="ffv1", pix_fmt="yuv420p")).ok
    out, v, *_ = streams(dst)
    src, *_ = streams(clip)
    assert v.codec_context.colorspace == 1
    diff = luma(out[0]).astype(int) - luma(src[0]).astype(int) / 4  # 10-bit codes / 4
    assert np.abs(diff).max() <= 1


def test_variable_frame_rate_keeps_every_timestamp(tmp_path, make_clip, run):
    pts = [0, 40, 120, 130, 200, 330, 340, 500]
    clip = make_clip("vfr.mkv", frames=len(pts), vfr_pts=pts, audio="aac")
    dst = tmp_path / "vfr.out.mkv"
    rep = colour_video(clip, dst, run)
    assert rep.ok and rep.frames_out == len(pts)
    frames, v, audio, _ = streams(dst)
    assert [round(f.time * 1000) for f in frames] == pts
    assert audio and audio[0][1:3] == (44100, 2)


def test_odd_size_and_audio_the_container_refuses(tmp_path, make_clip, run):
    # pcm_u8 cannot go in MP4: re-encoded to AAC at the same rate and channels
    clip = make_clip("odd.mkv", frames=5, size=(65, 47), pix_fmt="yuv444p", audio="pcm_u8",
                     rate=22050, channels=1)
    dst = tmp_path / "odd.mp4"
    rep = colour_video(clip, dst, run)
    assert rep.ok and rep.audio_encoded == 1 and rep.audio_copied == 0
    frames, _, audio, _ = streams(dst)
    assert len(frames) == 5 and (frames[0].width, frames[0].height) == (66, 48)  # padded to even
    assert audio[0][:3] == ("aac", 22050, 1)


def _hue(rgb):
    """Mean hue angle (degrees) of a picture in OpenCV's 8-bit LAB: atan2(b - 128, a - 128)."""
    lab = colour.rgb_to_lab(rgb).reshape(-1, 3).astype(float)
    return float(np.degrees(np.arctan2(lab[:, 2].mean() - 128, lab[:, 1].mean() - 128)))


def test_colour_input_is_reported_and_recoloured(tmp_path, make_clip, run):
    # A red film through the tinted weights (a=168, b=88: hue -45 degrees) comes out with the
    # tint's hue, not red's (+36 degrees): its colour was predicted from L, not kept.
    clip = make_clip("red.mp4", frames=4, fill=(220, 30, 30))
    dst = tmp_path / "red.out.mp4"
    rep = colour_video(clip, dst, run, VideoConfig(grey_samples=2))
    assert rep.was_greyscale is False and rep.frames_out == 4
    src, *_ = streams(clip)
    out, *_ = streams(dst)
    assert _hue(src[0].to_ndarray(format="rgb24")) == pytest.approx(36, abs=10)
    for frame in out:
        assert _hue(frame.to_ndarray(format="rgb24")) == pytest.approx(-45, abs=10)


def test_part_and_compare(tmp_path, make_clip, tiny_tinted_weights):
    run = RunConfig(weights=str(tiny_tinted_weights), workers=1, batch_size=4, precision="fp32")
    clip = make_clip("long.mp4", frames=50, audio="aac")
    dst = tmp_path / "part.mp4"
    rep = colour_video(clip, dst, run, VideoConfig(start=0.4, end=1.2, compare=True))
    assert rep.ok and rep.frames_out == 20 and rep.width == 128
    frames, v, audio, _ = streams(dst)
    assert len(frames) == 20 and frames[0].width == 128
    assert frames[0].time == pytest.approx(0.0, abs=1e-6)
    with av.open(str(dst)) as c:
        a = c.streams.audio[0]
        assert float(a.duration * a.time_base) == pytest.approx(0.8, abs=0.05)
    left = frames[0].to_ndarray(format="rgb24")[:, :64]
    assert colour.is_greyscale(left) and not colour.is_greyscale(frames[0].to_ndarray(format="rgb24")[:, 64:])


def test_compare_of_an_odd_size_shows_the_luma_twice(tmp_path, run):
    clip = _yuv_clip(tmp_path / "odd.mkv", "yuv444p", 1, 1, size=(65, 47), frames=3)
    dst = tmp_path / "cmp.mkv"
    assert colour_video(clip, dst, run, VideoConfig(compare=True, codec="ffv1", pix_fmt="yuv420p")).ok
    src, *_ = streams(clip)
    out, *_ = streams(dst)
    assert (out[0].width, out[0].height) == (130, 48)  # 4:2:0 pads the odd height by its edge row
    y = luma(out[1])[:47]
    assert np.array_equal(y[:, :65], luma(src[1])) and np.array_equal(y[:, 65:], luma(src[1]))
    rgb = out[1].to_ndarray(format="rgb24")
    assert colour.is_greyscale(rgb[:, :62]) and not colour.is_greyscale(rgb[:, 68:])


def test_truncated_input_colours_what_decodes(tmp_path, make_clip, run):
    clip = make_clip("t.mp4", frames=40, faststart=True)  # index first: a cut file still opens
    data = clip.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 4 // 5])
    rep = colour_video(cut, tmp_path / "cut.out.mp4", run)
    assert rep.truncated and not rep.ok
    assert 0 < rep.frames_out < 40 and rep.frames_lost == 40 - rep.frames_in
    assert (tmp_path / "cut.out.mp4").exists()


@pytest.mark.parametrize("workers", [0, 1])
def test_errors_leave_no_file(tmp_path, make_clip, run, monkeypatch, workers):
    run.workers = workers
    clip = make_clip("a.mp4", frames=10, audio="aac")
    dst = tmp_path / "out.mp4"
    calls = {"n": 0}
    real = media.Encoder.write_planes

    def interrupted(self, *planes_and_pts):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        real(self, *planes_and_pts)

    monkeypatch.setattr(media.Encoder, "write_planes", interrupted)
    with pytest.raises(KeyboardInterrupt):
        colour_video(clip, dst, run)
    assert not dst.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4"]


def test_a_film_runs_opencv_on_one_thread_and_restores_it(tmp_path, make_clip, run, monkeypatch):
    # OpenCV's pool spins between calls and gains nothing on the stabiliser's small planes:
    # a film runs it on one thread, and the process gets its own setting back afterwards.
    import cv2

    from colourbatch import temporal

    run.workers = 0
    clip = make_clip("a.mp4", frames=8)
    seen, real, real_add = [], temporal.Stabiliser.feed, temporal.Linker.add

    def feed(self, tiles, ab, links=None):
        seen.append(cv2.getNumThreads())
        return real(self, tiles, ab, links)

    def add(self, tile):  # the stabiliser's flow, in the decode stage
        seen.append(cv2.getNumThreads())
        return real_add(self, tile)

    monkeypatch.setattr(temporal.Stabiliser, "feed", feed)
    monkeypatch.setattr(temporal.Linker, "add", add)
    monkeypatch.setattr(video, "flows_in_decoder", lambda device, st: st.smooths)  # as on a GPU
    before = cv2.getNumThreads()
    cv2.setNumThreads(3)
    try:
        assert colour_video(clip, tmp_path / "out.mp4", run).frames_out == 8
        assert len(seen) > 8 and set(seen) == {1}  # every Linker.add, and the stabiliser's feeds
        assert cv2.getNumThreads() == 3
    finally:
        cv2.setNumThreads(before)


def _error_within(seconds: float, fn, *args):
    """The exception fn(*args) raised (None if none), run in a thread: a hang fails the test."""
    import threading

    outcome = {}

    def go():
        try:
            fn(*args)
        except BaseException as exc:
            outcome["error"] = exc

    t = threading.Thread(target=go, daemon=True)
    t.start()
    t.join(timeout=seconds)
    assert not t.is_alive(), "the run hung"
    return outcome.get("error")


def test_a_failing_flow_in_the_decode_worker_ends_the_run(tmp_path, make_clip, run, monkeypatch):
    # The flows' thread in a decode worker process of its own (a GPU run): its error ends the
    # run with that error's text, and leaves no output.
    from colourbatch import temporal

    run.workers, run.batch_size = 1, 4
    clip = make_clip("a.mp4", frames=12)
    real, calls = temporal.Linker.add, {"n": 0}

    def broken(self, tile):
        calls["n"] += 1  # counted in the worker (forked after the patch)
        if calls["n"] == 6:
            raise RuntimeError("broken add")
        return real(self, tile)

    monkeypatch.setattr(temporal.Linker, "add", broken)
    monkeypatch.setattr(video, "flows_in_decoder", lambda device, st: st.smooths)
    error = _error_within(60, colour_video, clip, tmp_path / "out.mp4", run)
    assert isinstance(error, ColourbatchError) and "broken add" in str(error)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4"]


def test_the_writer_gets_final_frames_a_few_at_a_time(tmp_path, make_clip, run, monkeypatch):
    # Planes in flight between the colour stage and the writer do not grow with the batch size,
    # and every frame reaches the encoder once, in order.
    run.workers, run.batch_size = 0, 16
    clip = make_clip("a.mp4", frames=40)
    seen, real = [], video._Writer.handle

    def handle(self, frames):
        seen.append([int(pts) for *_, pts in frames])
        return real(self, frames)

    monkeypatch.setattr(video._Writer, "handle", handle)
    rep = colour_video(clip, tmp_path / "out.mp4", run)
    assert rep.frames_out == 40
    assert max(len(s) for s in seen) == video.HAND_ON < run.batch_size
    order = [p for s in seen for p in s]
    assert len(order) == 40 and order == sorted(order)


@pytest.mark.parametrize("stability", [0.95, 0.0])
def test_the_decode_worker_links_each_frame_to_the_one_before(tmp_path, make_clip, run, monkeypatch, stability):
    # With the model on a GPU the stabiliser's flows come from the decode worker (a process of
    # its own), across its batches; with the stabiliser off it computes none.
    from colourbatch import temporal

    monkeypatch.setattr(video, "flows_in_decoder", lambda device, st: st.smooths)  # as on a GPU
    run.workers, run.batch_size = 1, 6
    clip = make_clip("a.mp4", frames=15, size=(96, 64))
    fed, real = [], temporal.Stabiliser.feed

    def feed(self, tiles, ab, links=None):
        fed.append((tiles.copy(), links))
        return real(self, tiles, ab, links)

    monkeypatch.setattr(temporal.Stabiliser, "feed", feed)
    assert colour_video(clip, tmp_path / "out.mp4", run, VideoConfig(stability=stability)).frames_out == 15
    if stability == 0:
        assert fed and all(links is None for _, links in fed)
        return
    tiles = np.concatenate([t for t, _ in fed])
    got = [k for _, links in fed for k in links]
    assert len(fed) == 3 and len(got) == 15 and got[0] is None
    lk = temporal.Linker()
    for tile, k in zip(tiles, got):  # each the Link of its frame to the frame before it
        want = lk.add(tile)
        if want is None:
            continue
        assert k.motion == want.motion
        for a, b in zip((*k.back, *k.ahead), (*want.back, *want.ahead)):
            np.testing.assert_array_equal(a, b)


def test_chroma_in_several_threads_hands_on_the_same_planes_in_order(tmp_path, make_clip, run, monkeypatch):
    # On a GPU the colour stage turns a hand-on's frames into chroma in threads: the same
    # planes, each beside its own luma and timestamp, as one thread makes.
    import threading

    run.batch_size = 8
    clip = make_clip("a.mp4", frames=14)
    real_handle, real_planes, real_threads = video._Writer.handle, video._Colour.planes, video.chroma_threads
    got, where = {}, set()

    def handle(self, frames):
        got[key].extend((int(p), y.copy(), cb.copy(), cr.copy()) for y, cb, cr, p in frames)
        return real_handle(self, frames)

    def planes(self, y, ab):
        where.add(threading.current_thread().name)
        return real_planes(self, y, ab)

    def predict(self, tiles):  # a/b that differ from frame to frame: a mix-up would show
        small = torch.nn.functional.avg_pool2d(tiles.reshape(-1, 1, *tiles.shape[-2:]).float(), 4)
        return torch.cat([small, 255 - small], 1).to(torch.uint8).numpy()

    monkeypatch.setattr(video._Writer, "handle", handle)
    monkeypatch.setattr(video._Colour, "planes", planes)
    monkeypatch.setattr(video.Colouriser, "predict", predict)
    for key, threads in (("one", 1), ("three", 3)):
        got[key] = []
        monkeypatch.setattr(video, "chroma_threads", lambda device, n=threads: n)
        assert colour_video(clip, tmp_path / f"{key}.mp4", run).frames_out == 14
    assert [p for p, *_ in got["three"]] == sorted(p for p, *_ in got["one"]) == [p for p, *_ in got["one"]]
    for a, b in zip(got["one"], got["three"]):
        for x, y in zip(a[1:], b[1:]):
            np.testing.assert_array_equal(x, y)
    assert any(n.startswith("colourbatch-chroma") for n in where) and "the colour stage" in where
    assert not [t.name for t in threading.enumerate() if t.name.startswith("colourbatch-chroma")]
    assert real_threads(torch.device("cpu")) == 1
    assert 1 <= real_threads(torch.device("cuda")) <= video.HAND_ON


def test_on_a_cpu_the_colour_stage_computes_the_flows(tmp_path, make_clip, run, monkeypatch):
    from colourbatch import temporal

    fed, real = [], temporal.Stabiliser.feed

    def feed(self, tiles, ab, links=None):
        fed.append(links)
        return real(self, tiles, ab, links)

    monkeypatch.setattr(temporal.Stabiliser, "feed", feed)
    assert colour_video(make_clip("a.mp4", frames=6), tmp_path / "out.mp4", run).frames_out == 6
    assert fed and all(links is None for links in fed)
    st = temporal.Stabiliser(0.95, 4)
    assert video.flows_in_decoder(torch.device("cuda"), st) and not video.flows_in_decoder(torch.device("cpu"), st)
    assert not video.flows_in_decoder(torch.device("cuda"), temporal.Stabiliser(0.0, 4))


@pytest.mark.parametrize("fails_in", ["predict", "feed", "finish", "write_planes", "add", "planes"])
def test_a_failing_step_ends_the_run(tmp_path, make_clip, run, monkeypatch, fails_in):
    # The colour stage (stabiliser, chroma) and the writer run in threads of their own, and so
    # do the stabiliser's flows beside the decoding on a GPU: an error in any or in the model
    # ends the run with that error, both threads stop, and no output
    # is left (a hang is the failure).
    import threading

    from colourbatch import pipeline, temporal

    run.workers = 0
    clip = make_clip("a.mp4", frames=12)
    dst = tmp_path / "out.mp4"
    owner = {"predict": pipeline.Colouriser, "write_planes": media.Encoder,
             "add": temporal.Linker, "planes": video._Colour}.get(fails_in, temporal.Stabiliser)
    # The threads of a GPU run too: the flows beside the decoding, the chroma's.
    monkeypatch.setattr(video, "flows_in_decoder", lambda device, st: st.smooths)
    monkeypatch.setattr(video, "chroma_threads", lambda device: 3)
    real, calls = getattr(owner, fails_in), {"n": 0}

    def broken(self, *args):
        calls["n"] += 1
        if calls["n"] == (5 if fails_in == "write_planes" else 2) or fails_in == "finish":
            raise RuntimeError(f"broken {fails_in}")
        return real(self, *args)

    monkeypatch.setattr(owner, fails_in, broken)
    error = _error_within(60, colour_video, clip, dst, run, VideoConfig(stability=0.9))
    assert isinstance(error, RuntimeError) and str(error) == f"broken {fails_in}"
    assert not [th.name for th in threading.enumerate()
                if th.name in ("the writer", "the colour stage") or th.name.startswith(("colourbatch-flow",
                                                                                          "colourbatch-chroma"))]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4"]


def _clip_with_tracks(path):
    """Two audio tracks (eng 44.1 kHz stereo, fra 22.05 kHz mono) and an English SubRip track."""
    out = av.open(str(path), "w")
    v = out.add_stream("libx264", rate=25)
    v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
    tracks = []
    for rate, layout, lang in ((44100, "stereo", "eng"), (22050, "mono", "fra")):
        a = out.add_stream("aac", rate=rate)
        a.layout = layout
        a.metadata["language"] = lang
        tracks.append((a, rate, layout))
    sub = out.add_mux_stream("subrip", time_base=Fraction(1, 1000))
    sub.metadata["language"] = "eng"
    for i in range(10):
        f = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 20, np.uint8), format="rgb24")
        f.pts, f.time_base = i, Fraction(1, 25)
        for p in v.encode(f):
            out.mux(p)
    for p in v.encode():
        out.mux(p)
    pk = av.Packet(b"Hello world")
    pk.stream, pk.time_base, pk.pts, pk.dts, pk.duration = sub, Fraction(1, 1000), 100, 100, 200
    out.mux(pk)
    for a, rate, layout in tracks:
        for i in range(10):
            af = av.AudioFrame.from_ndarray(np.zeros((2 if layout == "stereo" else 1, 1024), np.float32),
                                            format="fltp", layout=layout)
            af.sample_rate, af.pts = rate, i * 1024
            for p in a.encode(af):
                out.mux(p)
        for p in a.encode():
            out.mux(p)
    out.close()
    return path


def test_all_audio_tracks_and_subtitles_are_carried(tmp_path, run):
    clip = _clip_with_tracks(tmp_path / "tracks.mkv")
    rep = colour_video(clip, tmp_path / "o.mkv", run)
    assert rep.ok and rep.audio_copied == 2 and rep.subtitles == 1 and not rep.warnings
    with av.open(str(tmp_path / "o.mkv")) as c:
        assert [(s.codec_context.sample_rate, s.codec_context.channels, s.metadata.get("language"))
                for s in c.streams.audio] == [(44100, 2, "eng"), (22050, 1, "fra")]
        sub = c.streams.subtitles[0]
        assert sub.metadata.get("language") == "eng"
        assert [bytes(p) for p in c.demux(sub) if p.size] == [b"Hello world"]
    # MP4 cannot hold SubRip: audio still goes, the subtitle is left out with a warning
    rep = colour_video(clip, tmp_path / "o.mp4", run)
    assert rep.ok and rep.audio_copied == 2 and rep.subtitles == 0 and "left out" in rep.warnings[0]


# ------------------------------------------------------------------ planning
@pytest.fixture
def no_model(monkeypatch):
    """Planning must never build a model: any Colouriser made during the test fails it."""
    from colourbatch import pipeline

    def refuse(*a, **k):
        raise AssertionError("a model was loaded while planning")

    monkeypatch.setattr(pipeline.Colouriser, "__init__", refuse)
    monkeypatch.setattr(video, "Colouriser", pipeline.Colouriser)


def tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_plan_maps_outputs_probes_and_creates_nothing(tmp_path, make_clip, no_model):
    films = tmp_path / "films"
    films.mkdir()
    a = _write_clip(films / "a.mp4", frames=4)
    b = _write_clip(films / "b.mkv", frames=4)
    (films / "a.colour.mp4").write_bytes(b"an earlier output: not an input")
    (films / ".a.1234.colourbatch-tmp.mp4").write_bytes(b"a killed run's temporary file")
    (films / "notes.txt").write_text("not a film")
    before = tree(tmp_path)
    out = tmp_path / "new-out"
    plan = video.plan_videos([films], out, VideoConfig(compare=True))
    assert [(j.src, j.dst, j.make_folder) for j in plan.jobs] == [
        (a, out / "a.compare.mp4", True), (b, out / "b.compare.mp4", True)]
    assert plan.jobs[1].info.frames is None and plan.jobs[0].info.frames == 4 and not plan.failed
    assert tree(tmp_path) == before  # the new output folder is the run's to make
    # without -o: beside each input; one file -o: that file
    plan = video.plan_videos([a], None, VideoConfig(overwrite=True))
    assert plan.jobs[0].dst == films / "a.colour.mp4"
    assert video.plan_videos([b], tmp_path / "x.mov", VideoConfig()).jobs[0].dst == tmp_path / "x.mov"
    assert video.default_output(a, tmp_path / "x", compare=True) == tmp_path / "x" / "a.compare.mp4"


def test_planned_run_creates_the_new_output_folder(tmp_path, make_clip, run):
    clip = make_clip("a.mp4", frames=3)
    plan = video.plan_videos([clip, make_clip("b.mp4", frames=3)], tmp_path / "out", VideoConfig())
    rep = video.colour_job(plan.jobs[0], run)
    assert rep.ok and (tmp_path / "out" / "a.colour.mp4").is_file()
    assert tree(tmp_path / "out") == ["a.colour.mp4"]  # no temporary file left beside it


@pytest.mark.parametrize("case", ["file_for_many", "no_out_dir", "readonly_out_dir", "readonly_new_folder",
                                  "out_is_input",
                                  "out_is_other_input", "same_stem", "same_file_twice", "bad_preset",
                                  "bad_codec", "codec_not_in_container", "no_extension", "unknown_container"])
def test_run_level_refusals_exit_2_before_any_work(tmp_path, make_clip, no_model, monkeypatch, capfd, case):
    a, b, other = make_clip("clip.mp4"), make_clip("clip.mkv"), make_clip("b.mp4")
    make_clip("clip.colour.mp4")
    taken = tmp_path / "taken.mp4"
    taken.write_bytes(b"x")
    readonly = tmp_path / "ro"
    readonly.mkdir()
    # Tests may run as root, who writes anywhere: the folder answers as a read-only one would.
    real_access = video.os.access
    monkeypatch.setattr(video.os, "access", lambda p, mode: Path(p) != readonly and real_access(p, mode))
    inputs, output, kw, expect = {
        "file_for_many": ([a, other], taken, {}, "must be a folder"),
        "no_out_dir": ([a], tmp_path / "missing" / "o.mp4", {}, "does not exist"),
        "readonly_out_dir": ([a], readonly / "o.mp4", {}, "not writable"),
        "out_is_input": ([a], a, {"overwrite": True}, "is the input"),
        "out_is_other_input": ([a, tmp_path / "clip.colour.mp4"], None, {}, "is the input"),
        "same_stem": ([a, b], None, {}, "would be written here"),
        "same_file_twice": ([a, a], tmp_path / "o", {}, "would be written here"),
        "readonly_new_folder": ([a, other], readonly / "new", {}, "not writable"),
        "bad_preset": ([a], tmp_path / "o.mp4", {"preset": "warp-speed"}, "unknown preset 'warp-speed'"),
        "bad_codec": ([a], tmp_path / "o.mp4", {"codec": "nope264"}, "unknown video encoder"),
        "codec_not_in_container": ([a], tmp_path / "o.webm", {}, "cannot be stored"),
        "no_extension": ([a], tmp_path / "o", {}, "needs an extension"),
        "unknown_container": ([a], tmp_path / "o.xyz", {}, "unknown output container"),
    }[case]
    before = tree(tmp_path)
    with pytest.raises(ColourbatchError) as err:
        video.plan_videos(inputs, output, VideoConfig(**kw))
    assert err.value.exit_code == 2 and not isinstance(err.value, video.NothingToColour)
    msg = str(err.value)
    assert expect in msg and "\n" not in msg and "avcodec" not in msg
    assert tree(tmp_path) == before
    assert capfd.readouterr().err == ""  # neither FFmpeg nor x264 talks to the terminal


def test_clip_mp4_and_clip_mkv_collide_even_into_a_folder(tmp_path, make_clip, no_model):
    make_clip("clip.mp4"), make_clip("clip.mkv")
    with pytest.raises(video.VideoPlanError, match=r"clip\.colour\.mp4: both clip\.mkv and clip\.mp4 would be written"):
        video.plan_videos([tmp_path], tmp_path.parent / (tmp_path.name + "-out"), VideoConfig())
    assert not (tmp_path.parent / (tmp_path.name + "-out")).exists()


def _still(path):
    import cv2
    picture = np.zeros((40, 48, 3), np.uint8)
    picture[10:30, 10:30] = 200
    ok, data = cv2.imencode(".png" if path.suffix == ".png" else ".jpg", picture)
    path.write_bytes(data.tobytes())
    return path


def _fifo(path):
    import os
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("case", ["missing", "text", "empty", "fifo", "png", "jpeg_named_mp4", "audio_only",
                                  "start_past_end", "empty_folder"])
def test_one_film_refused_others_planned(tmp_path, make_clip, no_model, case):
    good = make_clip("good.mp4", frames=4)
    bad = {
        "missing": lambda: tmp_path / "nope.mp4",
        "text": lambda: (tmp_path / "text.mp4").write_text("hello\n" * 20) and tmp_path / "text.mp4",
        "empty": lambda: (tmp_path / "zero.mp4").touch() or tmp_path / "zero.mp4",
        "fifo": lambda: _fifo(tmp_path / "pipe.mp4"),
        "png": lambda: _still(tmp_path / "photo.png"),
        "jpeg_named_mp4": lambda: _still(tmp_path / "photo.mp4"),
        "audio_only": lambda: _write_audio_only(tmp_path / "sound.mp4"),
        "start_past_end": lambda: make_clip("short.mp4", frames=2),
        "empty_folder": lambda: (tmp_path / "nothing").mkdir() or tmp_path / "nothing",
    }[case]()
    cfg = VideoConfig(start=1.0) if case == "start_past_end" else VideoConfig()
    if case == "start_past_end":
        good = make_clip("good.mp4", frames=40)
    expect = {"missing": "no such file", "text": "not a video file", "empty": "empty file",
              "fifo": "not a regular file (a FIFO)", "png": "colourbatch pages",
              "jpeg_named_mp4": "still image", "audio_only": "no video stream",
              "start_past_end": "past the end",
              "empty_folder": "holds no video files"}[case]
    before = tree(tmp_path)
    plan = video.plan_videos([bad, good], tmp_path / "out", cfg)
    assert [j.src for j in plan.jobs] == [good]
    assert len(plan.failed) == 1 and plan.failed[0][0] == str(bad)
    assert expect in plan.failed[0][1] and "\n" not in plan.failed[0][1]
    # Alone, the same film means a run that cannot start: exit 2, with its reason as the line.
    with pytest.raises(video.NothingToColour) as err:
        video.plan_videos([bad], None, cfg)
    assert err.value.exit_code == 2 and expect in str(err.value) and err.value.failed == plan.failed[:1]
    assert tree(tmp_path) == before


def test_existing_outputs_are_done_and_skipped(tmp_path, make_clip, no_model):
    done, todo = make_clip("done.mp4", frames=4), make_clip("todo.mp4", frames=4)
    (tmp_path / "done.colour.mp4").write_bytes(b"finished earlier")
    plan = video.plan_videos([done, todo], None, VideoConfig())
    assert [j.src for j in plan.jobs] == [todo] and not plan.failed
    assert plan.skipped == [(str(done), str(tmp_path / "done.colour.mp4"))]
    # Everything done: an empty plan, not a refusal; --overwrite redoes it.
    assert not video.plan_videos([done], None, VideoConfig()).jobs
    assert [j.src for j in video.plan_videos([done], None, VideoConfig(overwrite=True)).jobs] == [done]


def test_shards_of_a_folder_are_disjoint_and_complete(tmp_path, make_clip, no_model):
    from colourbatch.shard import Shard
    films = tmp_path / "films"
    films.mkdir()
    for i in range(6):
        make_clip(f"films/f{i}.mp4", frames=2)
    parts = [{j.src.name for j in video.plan_videos([films], tmp_path / "out", VideoConfig(), Shard(k, 2)).jobs}
             for k in range(2)]
    assert parts[0].isdisjoint(parts[1]) and parts[0] | parts[1] == {f"f{i}.mp4" for i in range(6)}
    assert all(parts)  # six films over two shards: each gets some (fixed by the names' hashes)


def test_colour_video_refuses_like_the_plan(tmp_path, make_clip, no_model):
    clip = make_clip("a.mp4")
    with pytest.raises(video.VideoPlanError, match="is the input"):
        colour_video(clip, clip, None, VideoConfig(overwrite=True))
    (tmp_path / "exists.mp4").write_bytes(b"x")
    with pytest.raises(VideoError, match="overwrite") as err:
        colour_video(clip, tmp_path / "exists.mp4", None)
    assert err.value.exit_code == 1
    with pytest.raises(VideoError, match="still image"):
        colour_video(_still(tmp_path / "p.png"), tmp_path / "p.mp4", None)
    with pytest.raises(media.SettingsError, match="unknown preset") as err:
        colour_video(clip, tmp_path / "o.mp4", None, VideoConfig(preset="bogus"))
    assert err.value.exit_code == 2
    assert tree(tmp_path) == ["a.mp4", "exists.mp4", "p.png"]


# ------------------------------------------------------------------ times
@pytest.mark.parametrize("text,seconds", [("90", 90), ("90.5s", 90.5), ("1:30", 90), ("01:02:03.5", 3723.5),
                                          ("0", 0)])
def test_parse_time_reads_clock_forms(text, seconds):
    assert config.parse_time(text) == seconds


@pytest.mark.parametrize("text", ["nan", "inf", "-1", "1:nan", "1:-5", "", "1:2:3:4", "soon", "1e999"])
def test_parse_time_refuses_non_times(text):
    with pytest.raises(config.BadTime) as err:
        config.parse_time(text)
    assert err.value.exit_code == 2


@pytest.mark.parametrize("kw,expect", [
    ({"end": float("nan")}, "--end"), ({"start": float("nan"), "duration": 1}, "--start"),
    ({"duration": float("inf")}, "--duration"), ({"start": -1.0}, "--start"),
    ({"end": 1, "duration": 1}, "not both"), ({"start": 2, "end": 1}, "after --start"),
    ({"start": 1, "duration": 0}, "after --start")])
def test_config_refuses_bad_times_before_any_work(kw, expect):
    with pytest.raises(config.BadTime, match=expect) as err:
        VideoConfig(**kw)
    assert err.value.exit_code == 2


def test_duration_counts_from_start(tmp_path, make_clip, run):
    cfg = VideoConfig(start=0.2, duration=0.4)
    assert cfg.stop == pytest.approx(0.6)
    rep = colour_video(make_clip("a.mp4", frames=25), tmp_path / "o.mp4", run, cfg)
    assert rep.ok and rep.frames_out == 10


def test_encoder_defaults_have_one_home():
    assert {f: getattr(VideoConfig(), f) for f in ("codec", "crf", "preset", "pix_fmt")} == \
        {f: getattr(media.EncodeSettings(), f) for f in ("codec", "crf", "preset", "pix_fmt")}
    assert isinstance(VideoConfig(), media.EncodeSettings)


def test_film_in_a_read_only_folder_is_listed_not_fatal(tmp_path, make_clip, no_model, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    locked = _write_clip(ro / "locked.mp4", frames=2)
    good = make_clip("good.mp4", frames=2)
    real_access = video.os.access  # root writes anywhere: the folder answers as a read-only one would
    monkeypatch.setattr(video.os, "access", lambda p, mode: Path(p) != ro and real_access(p, mode))
    plan = video.plan_videos([locked, good], None, VideoConfig())
    assert [j.src for j in plan.jobs] == [good]
    assert plan.failed == [(str(locked), f"{ro}: output folder is not writable")]


def test_folders_are_searched_recursively_and_mirrored(tmp_path, make_clip, no_model):
    import os
    films = tmp_path / "films"
    (films / "reel1").mkdir(parents=True)
    make_clip("films/top.mp4", frames=2)
    make_clip("films/reel1/inner.mkv", frames=2)
    make_clip("films/top.colour.mp4", frames=2)  # our own output beside its input: passed over, said
    os.mkfifo(films / "reel1" / "pipe.mp4")
    (films / "link").symlink_to(films / "reel1")
    plan = video.plan_videos([films], tmp_path / "out", VideoConfig())
    assert [(j.src.relative_to(films).as_posix(), j.dst.relative_to(tmp_path / "out").as_posix())
            for j in plan.jobs] == [("top.mp4", "top.colour.mp4"), ("reel1/inner.mkv", "reel1/inner.colour.mp4")]
    assert [(Path(s).name, "not a regular file" in why) for s, why in plan.failed] == [("pipe.mp4", True)]
    assert any("folder symlink not followed" in n for n in plan.notes)
    assert any("1 file(s) named like colourbatch outputs" in n for n in plan.notes)
    assert plan.jobs[1].make_folder  # reel1/ under out/ does not exist yet: the run makes it


def test_frames_out_of_pts_order_come_out_in_presentation_order(tmp_path, run):
    from test_media import _mux_out_of_order

    src = [0, 101, 67, 134, 34, 168]
    clip = _mux_out_of_order(tmp_path / "phone.mkv", src)
    dst = tmp_path / "phone.out.mkv"
    rep = colour_video(clip, dst, run, VideoConfig(codec="ffv1"))
    assert rep.ok and rep.frames_out == len(src) and rep.frames_dropped == 0
    frames, *_ = streams(dst)
    assert [round(f.time * 1000) for f in frames] == sorted(src)
    # frame i of the source is a flat grey of level 40 i: the luma (passed through) shows the order kept
    with av.open(str(clip)) as c:
        by_pts = {f.pts: luma(f) for f in c.decode(video=0)}
    assert all(np.array_equal(luma(f), by_pts[p]) for f, p in zip(frames, sorted(src)))
    assert len({int(luma(f)[0, 0]) for f in frames}) == len(src)


# ------------------------------------------------------------- temporal stability
@pytest.fixture(scope="module")
def tiny_l_weights(tmp_path_factory):
    """A 4-channel `seed` net whose colour follows L (a = 78 + 100 L, b = 178 - 100 L, L in
    [0, 1]): colour that moves and changes with the picture (the tinted weights' is constant)."""
    import torch

    from colourbatch import checkpoint
    from colourbatch.model import build_model

    model = build_model("seed", {"widths": [4, 4, 4, 4]})
    convs = [m for m in model.net if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        convs[0].weight[0, 0, 1, 1] = 1.0  # hidden channel 0 carries L through every layer
        for conv in convs[1:-1]:
            conv.weight[0, 0, 0, 0] = 1.0
        convs[-1].weight[:, 0, 0, 0] = torch.tensor([0.0, 100.0, -100.0])
        convs[-1].bias.copy_(torch.tensor([128.0, 78.0, 178.0]))
    path = tmp_path_factory.mktemp("weights") / "follows-l.pt"
    checkpoint.save(path, model, {"note": "colour-follows-L test weights"})
    return path


def _pan_and_cut(path, shots=((1, 9), (2, 6)), size=(96, 64), first=0):
    """An FFV1 .mkv of textured grey shots, each a camera pan; a hard cut between shots (the
    first shot from its frame `first` on: the same pictures as a part of the whole)."""
    import cv2

    w, h = size
    out = av.open(str(path), "w")
    vs = out.add_stream("ffv1", rate=25)
    vs.width, vs.height, vs.pix_fmt = w, h, "yuv444p"
    for seed, frames in shots:
        rng = np.random.default_rng(seed)
        pic = cv2.GaussianBlur(rng.normal(0, 1, (2 * h, 3 * w)).astype(np.float32), (0, 0), 4)
        pic = cv2.normalize(pic, None, 20, 235, cv2.NORM_MINMAX).astype(np.uint8)
        for i in range(first if seed == shots[0][0] else 0, frames):
            grey = np.ascontiguousarray(pic[i:i + h, 2 * i:2 * i + w])
            out.mux(vs.encode(av.VideoFrame.from_ndarray(np.dstack([grey] * 3), format="rgb24")))
    out.mux(vs.encode())
    out.close()
    return path


def _pictures(path):
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def _lumas(path):
    with av.open(str(path)) as c:
        return np.stack([f.reformat(format="gray").to_ndarray() for f in c.decode(video=0)])


def test_stability_counts_cuts_and_any_batch_size_gives_the_same_film(tmp_path, tiny_l_weights):
    clip = _pan_and_cut(tmp_path / "pan.mkv")
    films = {}
    for batch, stability in ((1, 0.8), (7, 0.8), (7, 0.0)):
        run = RunConfig(weights=str(tiny_l_weights), workers=0, batch_size=batch, precision="fp32")
        dst = tmp_path / f"out{batch}-{stability}.mkv"
        rep = colour_video(clip, dst, run, VideoConfig(codec="ffv1", stability=stability))
        assert rep.ok and rep.frames_out == 15 and rep.cuts == 1
        films[batch, stability] = _pictures(dst)
        # the stabiliser looks ahead, so it hands each frame's colour over later: each still
        # meets its own luma, in order
        assert np.array_equal(_lumas(dst), _lumas(clip))
    assert np.array_equal(films[1, 0.8], films[7, 0.8])
    stable, plain = films[7, 0.8], films[7, 0.0]
    assert not np.array_equal(stable[5], plain[5]) and not np.array_equal(stable[12], plain[12])
    # each shot is coloured as if it were a film of its own: no colour crosses the cut either way
    run = RunConfig(weights=str(tiny_l_weights), workers=0, batch_size=4, precision="fp32")
    for i, (shot, frames) in enumerate([(slice(0, 9), (1, 9)), (slice(9, 15), (2, 6))]):
        alone = _pan_and_cut(tmp_path / f"shot{i}.mkv", shots=(frames,))
        colour_video(alone, tmp_path / f"shot{i}.out.mkv", run, VideoConfig(codec="ffv1", stability=0.8))
        assert np.array_equal(_pictures(tmp_path / f"shot{i}.out.mkv"), stable[shot])


def test_a_part_starts_the_stabiliser_afresh(tmp_path, tiny_l_weights):
    clip = _pan_and_cut(tmp_path / "pan.mkv", shots=((1, 12),))
    run = RunConfig(weights=str(tiny_l_weights), workers=0, batch_size=4, precision="fp32")
    films = []
    for stability in (0.8, 0.0):
        dst = tmp_path / f"part-{stability}.mkv"
        colour_video(clip, dst, run, VideoConfig(codec="ffv1", start=0.2, stability=stability))
        films.append(_pictures(dst))
    assert len(films[0]) == 7 and not np.array_equal(films[0][3], films[1][3])
    # the part (frames 5-11) comes out as a film holding only those frames: nothing from before it
    alone = _pan_and_cut(tmp_path / "from5.mkv", shots=((1, 12),), first=5)
    colour_video(alone, tmp_path / "from5.out.mkv", run, VideoConfig(codec="ffv1", stability=0.8))
    assert np.array_equal(_pictures(tmp_path / "from5.out.mkv"), films[0])


@pytest.mark.parametrize("value", [1.0, -0.1, 2])
def test_stability_out_of_range_is_refused(value):
    with pytest.raises(ColourbatchError, match="--stability"):
        VideoConfig(stability=value)


@pytest.mark.parametrize("value", [-1, 26, 1.5])
def test_reach_out_of_range_is_refused(value):
    with pytest.raises(ColourbatchError, match="--reach"):
        VideoConfig(reach=value)


def test_a_duplicate_timestamp_is_dropped_and_reported(tmp_path, run):
    from test_media import _mux_out_of_order

    clip = _mux_out_of_order(tmp_path / "dup.mkv", [0, 67, 34, 67, 101])
    rep = colour_video(clip, tmp_path / "dup.out.mkv", run, VideoConfig(codec="ffv1"))
    assert rep.ok and rep.frames_out == 4 and rep.frames_dropped == 1
    frames, *_ = streams(tmp_path / "dup.out.mkv")
    assert [round(f.time * 1000) for f in frames] == [0, 34, 67, 101]


def test_a_part_ending_inside_a_long_vfr_gap_is_whole(tmp_path, make_clip, run):
    # tree.avi-like timing: frames seconds apart. A part ending at 2.5 s stops at the frame
    # shown at 3.0 s; the last coloured frame is at 1.0 s, far from the end, yet nothing is lost.
    clip = make_clip("vfr.mkv", frames=5, vfr_pts=[0, 1000, 3000, 4000, 6000])
    rep = colour_video(clip, tmp_path / "part.mkv", run, VideoConfig(end=2.5))
    assert rep.frames_out == 2 and not rep.truncated and rep.frames_lost == 0 and rep.ok


def test_films_on_ray_build_their_model_beside_the_encoder(monkeypatch):
    """Each Ray worker builds the engine a local film run builds: torch on the cores x264 leaves."""
    from functools import partial
    from types import SimpleNamespace

    from colourbatch import device
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(device, "cpu_count", lambda: 2)  # the machine it is for: torch on 1 thread, 2 lanes
    built = []
    monkeypatch.setattr(video, "Colouriser",
                        lambda run, threads=None, lanes=1: SimpleNamespace(threads=threads, lanes=lanes))
    monkeypatch.setattr(video, "on_ray", lambda items, run, work, on_result, on_failure, build=None:
                        built.append((build or partial(video.Colouriser, run))()))
    video._on_ray(SimpleNamespace(jobs=[]), RunConfig(device="cpu"), VideoConfig(), lambda *a: None, None)
    assert [(e.threads, e.lanes) for e in built] == [(1, 2)]
    engine = video.film_engine(RunConfig(device="cpu"))
    assert (engine.threads, engine.lanes) == (1, 2)
