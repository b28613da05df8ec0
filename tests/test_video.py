"""colour_video end to end on tiny clips: frames, timing, audio, luma, trims, errors, temp files."""
from fractions import Fraction

import av
import numpy as np
import pytest

from colourbatch import colour, media
from colourbatch.media import MediaError
from colourbatch.pipeline import RunConfig
from colourbatch.video import VideoConfig, VideoError, colour_video, default_output, temp_path


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
    # colour arrived (tinted weights), and the lightness is the source's within codec rounding
    out_rgb = frames[3].to_ndarray(format="rgb24")
    assert not colour.is_greyscale(out_rgb)
    diff = np.abs(colour.rgb_to_l(out_rgb).astype(int)
                  - colour.rgb_to_l(src_frames[3].to_ndarray(format="rgb24")).astype(int))
    assert diff.mean() < 3.0  # x264 at crf 18 with 4:2:0 chroma


def test_lossless_output_keeps_luma_within_rounding(tmp_path, make_clip, run):
    clip = make_clip("a.mkv", frames=4, codec="ffv1", pix_fmt="yuv444p")
    dst = tmp_path / "out.mkv"
    rep = colour_video(clip, dst, run, VideoConfig(codec="ffv1"))
    assert rep.ok
    out, *_ = streams(dst)
    src, *_ = streams(clip)
    for a, b in zip(out, src):
        la = colour.rgb_to_l(a.to_ndarray(format="rgb24")).astype(int)
        lb = colour.rgb_to_l(b.to_ndarray(format="rgb24")).astype(int)
        assert np.abs(la - lb).mean() < 1.0 and np.percentile(np.abs(la - lb), 99) <= 3


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


def test_colour_input_is_reported_and_recoloured(tmp_path, make_clip, run):
    clip = make_clip("c.mp4", frames=4, colour=True)
    rep = colour_video(clip, tmp_path / "c.out.mp4", run, VideoConfig(grey_samples=2))
    assert rep.was_greyscale is False and rep.frames_out == 4


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
    real = media.Encoder.write

    def interrupted(self, rgb, pts):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        real(self, rgb, pts)

    monkeypatch.setattr(media.Encoder, "write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        colour_video(clip, dst, run)
    assert not dst.exists() and not temp_path(dst).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4"]


def test_refusals(tmp_path, make_clip, run):
    clip = make_clip("a.mp4")
    with pytest.raises(MediaError, match="is the input"):
        colour_video(clip, clip, run)
    (tmp_path / "exists.mp4").write_bytes(b"x")
    with pytest.raises(MediaError, match="overwrite"):
        colour_video(clip, tmp_path / "exists.mp4", run)
    with pytest.raises(VideoError, match="past the end"):
        colour_video(clip, tmp_path / "o.mp4", run, VideoConfig(start=99))
    assert default_output(clip) == tmp_path / "a.colour.mp4"
    assert default_output(clip, tmp_path / "x", compare=True) == tmp_path / "x" / "a.compare.mp4"
    assert temp_path(tmp_path / "f.mkv").name == ".f.mkv.colourbatch-tmp.mkv"


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
