"""media.py: probing, decoding, encoding and the typed errors for bad inputs (tiny PyAV clips)."""
import os
from fractions import Fraction

import av
import numpy as np
import pytest

from colourbatch import media
from colourbatch.media import MediaError
from conftest import _write_audio_only, _write_clip


def test_probe_reads_size_rate_count_and_audio(make_clip):
    clip = make_clip("a.mp4", frames=6, size=(64, 48), audio="aac", rate=44100, channels=2)
    info = media.probe(clip)
    assert (info.width, info.height) == (64, 48)
    assert info.fps == Fraction(25) and info.frames == 6
    assert info.frame_estimate() == 6
    assert info.duration == pytest.approx(6 / 25, abs=0.01)
    assert [(s.codec, s.rate, s.channels, s.language) for s in info.audio] == [("aac", 44100, 2, "fra")]


def test_probe_mkv_estimates_frames_from_duration(make_clip):
    clip = make_clip("a.mkv", frames=10, fps=25)
    info = media.probe(clip)
    assert info.frames is None  # Matroska does not state a count
    assert info.frame_estimate() == 10  # duration x rate
    assert info.frame_estimate(start=0.2) == 5


def test_decoder_yields_rgb_frames_with_their_pts(make_clip):
    clip = make_clip("v.mkv", frames=6, vfr_pts=[0, 40, 120, 130, 200, 330])
    dec = media.Decoder(clip)
    got = list(dec)
    assert [p for _, p in got] == [0, 40, 120, 130, 200, 330]
    assert got[0][0].shape == (48, 64, 3) and got[0][0].dtype == np.uint8
    assert dec.frames == 6 and dec.error is None


def test_decoder_trims_a_part(make_clip):
    clip = make_clip("a.mp4", frames=25, fps=25)
    pts = [p for _, p in media.Decoder(clip, start=0.4, end=0.8)]
    times = [p * Fraction(1, 12800) for p in pts]
    assert len(pts) == 10 and float(times[0]) == pytest.approx(0.4) and float(times[-1]) < 0.8


@pytest.mark.parametrize("kind", ["missing", "folder", "empty", "text", "audio_only", "unknown_codec",
                                  "fifo", "dev_null_link"])
def test_bad_inputs_raise_media_error(tmp_path, make_clip, kind):
    path = tmp_path / "bad.mp4"
    if kind == "fifo":
        os.mkfifo(path)  # FFmpeg would wait for a writer forever
    elif kind == "dev_null_link":
        path.symlink_to("/dev/zero")  # FFmpeg would read without end
    elif kind == "folder":
        path.mkdir()
    elif kind == "empty":
        path.touch()
    elif kind == "text":
        path.write_text("this is not a film\n" * 20)
    elif kind == "audio_only":
        _write_audio_only(path)
    elif kind == "unknown_codec":
        # An AVI whose video fourcc no decoder knows: FFmpeg opens it, cannot decode it.
        src = make_clip("m.avi", codec="mjpeg", pix_fmt="yuvj420p")
        data = src.read_bytes().replace(b"MJPG", b"ZQZQ")
        path = tmp_path / "bad.avi"
        path.write_bytes(data)
    with pytest.raises(MediaError) as err:
        media.probe(path)
    msg = str(err.value)
    expect = {"missing": "no such file", "folder": "is a folder", "empty": "empty file",
              "text": "not a video file", "audio_only": "no video stream",
              "unknown_codec": "codec", "fifo": "not a regular file (a FIFO)",
              "dev_null_link": "not a regular file (a device)"}[kind]
    assert expect in msg and "\n" not in msg
    assert err.value.exit_code == 1  # one film: a batch goes on past it
    assert msg.count(str(path)) <= 1  # FFmpeg's reason without PyAV's repeated path


def _still(path, ext):
    import cv2
    picture = np.zeros((40, 48, 3), np.uint8)
    picture[10:30, 10:30] = 200
    path.write_bytes(cv2.imencode(ext, picture)[1].tobytes())
    return path


@pytest.mark.parametrize("name,make,still", [
    ("p.png", lambda p: _still(p, ".png"), True), ("p.jpg", lambda p: _still(p, ".jpg"), True),
    ("p.webp", lambda p: _still(p, ".webp"), True), ("p.tif", lambda p: _still(p, ".tif"), True),
    ("photo.mp4", lambda p: _still(p, ".jpg"), True),  # by content, not by name
    ("one.gif", lambda p: _write_clip(p, frames=1, codec="gif", pix_fmt="rgb8"), True),
    ("anim.gif", lambda p: _write_clip(p, frames=3, codec="gif", pix_fmt="rgb8"), False),
])
def test_still_pictures_are_told_from_films(tmp_path, make_clip, name, make, still):
    info = media.probe(make(tmp_path / name))
    assert info.still is still
    assert media.probe(make_clip("film.mp4", frames=2)).still is False


def test_ffmpeg_says_nothing_on_the_terminal(tmp_path, make_clip, capfd):
    import subprocess
    import sys

    import av.logging
    # Some PyAV versions log by default: importing media switches FFmpeg's log off whatever it was.
    code = ("import av.logging; av.logging.set_level(av.logging.WARNING); import colourbatch.media; "
            "assert av.logging.get_level() is None")
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0
    assert av.logging.get_level() is None  # media switched FFmpeg's log off: reasons travel in errors
    clip = make_clip("t.mp4", frames=30, faststart=True)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(clip.read_bytes()[: clip.stat().st_size * 4 // 5])
    dec = media.Decoder(cut)
    assert 0 < len(list(dec)) < 30
    garbage = tmp_path / "garbage.mkv"
    garbage.write_bytes(b"\x1a\x45\xdf\xa3" + os.urandom(4000))
    with pytest.raises(MediaError):
        media.probe(garbage)
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize("codec,pix,size,out_size", [
    ("libx264", None, (65, 47), (66, 48)),   # 4:2:0 needs even sizes: padded by one edge pixel
    ("ffv1", None, (65, 47), (65, 47)),      # 4:4:4 archival: exact odd size
])
def test_encoder_handles_odd_sizes(tmp_path, make_clip, codec, pix, size, out_size):
    clip = make_clip("odd.mkv", size=size, pix_fmt="yuv444p", frames=4)
    info = media.probe(clip)
    dst = tmp_path / "out.mkv"
    enc = media.Encoder(dst, info, *size, media.EncodeSettings(codec=codec, pix_fmt=pix))
    for rgb, pts in media.Decoder(clip):
        enc.write(rgb, pts)
    enc.close()
    with av.open(str(dst)) as c:
        frames = list(c.decode(video=0))
    assert len(frames) == 4 and (frames[0].width, frames[0].height) == out_size


@pytest.mark.parametrize("settings,dst,expect", [
    (media.EncodeSettings(codec="nope264"), "o.mp4", "unknown video encoder 'nope264'"),
    (media.EncodeSettings(codec="aac"), "o.mp4", "not a video encoder"),
    (media.EncodeSettings(codec="libx264"), "o.webm", "cannot be stored in a .webm file"),
    (media.EncodeSettings(preset="ludicrous"), "o.mp4", "unknown preset 'ludicrous'"),
    (media.EncodeSettings(pix_fmt="rgb48le"), "o.mp4", "cannot encode pixel format 'rgb48le'"),
    (media.EncodeSettings(), "o.nope", "unknown output container"),
])
def test_encoder_settings_refused_in_one_line(tmp_path, make_clip, capfd, settings, dst, expect):
    info = media.probe(make_clip("a.mp4"))
    with pytest.raises(media.SettingsError) as err:
        media.Encoder(tmp_path / dst, info, 64, 48, settings)
    msg = str(err.value)
    assert expect in msg and "avcodec" not in msg and "\n" not in msg and err.value.exit_code == 2
    assert not (tmp_path / dst).exists() and capfd.readouterr().err == ""


def _mux_out_of_order(path, pts, tb=Fraction(1, 1000)):
    """An FFV1 .mkv whose packets (so the decoder's frames) carry `pts` in the order given,
    not sorted: the phone clip whose decoder handed out 0, 101, 67, 134, 34 (here in ms:
    Matroska's time base).
    Frame i is a flat grey of level 40 * i, so content shows which frame came out where."""
    import av

    out = av.open(str(path), "w")
    vs = out.add_stream("ffv1", rate=30)
    vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv444p"
    vs.codec_context.time_base = vs.time_base = tb
    packets = []
    for i in range(len(pts)):
        f = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 40 * i, np.uint8), format="rgb24")
        f.pts, f.time_base = i, tb
        packets += vs.encode(f)
    packets += vs.encode()
    for i, (packet, p) in enumerate(zip(packets, pts)):
        packet.pts, packet.dts, packet.time_base = p, i - 100, tb  # dts rises, pts does not
        out.mux(packet)
    out.close()
    return path


def test_decoder_yields_frames_in_presentation_order(tmp_path):
    src = [0, 101, 67, 134, 34, 168, 201]
    clip = _mux_out_of_order(tmp_path / "phone.mkv", src)
    with av.open(str(clip)) as c:  # the decoder itself really hands them out of order
        assert [f.pts for f in c.decode(video=0)] == src
    dec = media.Decoder(clip)
    got = list(dec)
    assert [p for _, p in got] == sorted(src)
    # each frame keeps its own picture: frame i (level 40 i) at its own timestamp
    assert [int(rgb[0, 0, 0]) // 10 for rgb, _ in got] == [src.index(p) * 4 for p in sorted(src)]
    assert dec.frames == len(src) and dec.dropped == 0


def test_decoder_drops_a_duplicate_timestamp_and_counts_it(tmp_path):
    clip = _mux_out_of_order(tmp_path / "dup.mkv", [0, 67, 34, 67, 101])
    dec = media.Decoder(clip)
    got = list(dec)
    assert [p for _, p in got] == [0, 34, 67, 101]
    assert int(got[2][0][0, 0, 0]) // 10 == 4  # the first frame at 67 (frame 1) is the one kept
    assert dec.dropped == 1 and dec.frames == 4


def test_decoder_sorts_before_trimming_a_part(tmp_path):
    src = [0, 101, 67, 134, 34, 168, 201]
    clip = _mux_out_of_order(tmp_path / "part.mkv", src)
    pts = [p for _, p in media.Decoder(clip, start=0.05, end=0.15)]
    assert pts == [67, 101, 134]


# ------------------------------------------------------------- luma planes
def luma(frame) -> np.ndarray:
    """A decoded frame's first plane (its luma codes, or 16-bit codes for 10-bit) as stored."""
    p = frame.planes[0]
    dtype = np.uint16 if frame.format.components[0].bits > 8 else np.uint8
    return np.frombuffer(p, dtype).reshape(p.height, -1)[:, :p.width].copy()


def _yuv_clip(path, pix_fmt, colorspace=2, color_range=0, size=(96, 64), frames=4):
    """An FFV1 .mkv written plane by plane in `pix_fmt`, tagged with `colorspace`/`color_range`:
    textured luma over the whole code range, and chroma of its own (a colour source)."""
    w, h = size
    out = av.open(str(path), "w")
    vs = out.add_stream("ffv1", rate=25)
    vs.width, vs.height, vs.pix_fmt = w, h, pix_fmt
    vs.codec_context.colorspace, vs.codec_context.color_range = colorspace, color_range
    rng = np.random.default_rng(7)
    for i in range(frames):
        f = av.VideoFrame(w, h, pix_fmt)
        for k, plane in enumerate(f.planes):
            dtype = np.uint16 if f.format.components[0].bits > 8 else np.uint8
            top = 1023 if dtype == np.uint16 else 255
            codes = rng.integers(0, top + 1, (plane.height, plane.width)) if k == 0 else \
                np.full((plane.height, plane.width), (top + 1) // 2 + 20 * (k * 2 - 3) * (top // 255))
            np.frombuffer(plane, dtype).reshape(plane.height, -1)[:, :plane.width] = codes
        f.pts, f.colorspace, f.color_range = i, colorspace, color_range
        out.mux(vs.encode(f))
    out.mux(vs.encode())
    out.close()
    return path


def _rgb_clip(path, frames=2, size=(64, 48)):
    """A PNG-in-QuickTime film stored as RGB: a source with no Y'CbCr matrix of its own."""
    w, h = size
    out = av.open(str(path), "w")
    vs = out.add_stream("png", rate=25)
    vs.width, vs.height, vs.pix_fmt = w, h, "rgb24"
    rng = np.random.default_rng(5)
    rgbs = [rng.integers(0, 256, (h, w, 3)).astype(np.uint8) for _ in range(frames)]
    for i, rgb in enumerate(rgbs):
        f = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        f.pts = i
        out.mux(vs.encode(f))
    out.mux(vs.encode())
    out.close()
    return path, rgbs


@pytest.mark.parametrize("pix_fmt,colorspace,color_range,size,tags", [
    ("yuv420p", 2, 0, (96, 64), ("bt601", False, True)),     # untagged SD: BT.601, limited
    ("yuv420p", 2, 0, (1280, 720), ("bt709", False, True)),  # untagged HD: BT.709
    ("yuv422p", 1, 2, (96, 64), ("bt709", True, True)),      # tagged: as tagged
    ("gray", 2, 0, (96, 64), ("bt601", True, True)),         # grey: full range
    ("yuv420p10le", 9, 1, (96, 64), ("bt2020", False, False)),  # 10-bit: converted
])
def test_probe_reads_the_colour_description(tmp_path, pix_fmt, colorspace, color_range, size, tags):
    clip = _yuv_clip(tmp_path / "c.mkv", pix_fmt, colorspace, color_range, size=size, frames=1)
    t = media.probe(clip).colour
    assert (t.matrix, t.full_range, t.native) == tags


def test_decoder_yields_the_luma_plane_as_stored_and_rgb_on_demand(tmp_path):
    clip = _yuv_clip(tmp_path / "c.mkv", "yuv420p", 1, 1, frames=3)
    info = media.probe(clip)
    got = list(media.Decoder(clip, tags=info.colour))
    with av.open(str(clip)) as c:
        stored = [luma(f) for f in c.decode(video=0)]
    assert [p for _, p in got] == [0, 40, 80]  # Matroska counts milliseconds
    assert all(np.array_equal(pic.y, y) for (pic, _), y in zip(got, stored))
    assert got[0][0].rgb().shape == (64, 96, 3)


def test_an_rgb_source_is_converted_in_the_matrix_the_output_is_tagged_with(tmp_path):
    clip, rgbs = _rgb_clip(tmp_path / "rgb.mov")
    info = media.probe(clip)
    assert (info.colour.matrix, info.colour.full_range, info.colour.native) == ("bt601", False, False)
    pic, _ = next(iter(media.Decoder(clip, tags=info.colour)))
    expect = 16 + rgbs[0].astype(float) @ np.array([0.299, 0.587, 0.114]) * 219 / 255
    assert np.abs(pic.y - expect).max() <= 1.5


@pytest.mark.parametrize("pix_fmt,size,chroma", [
    ("yuv420p", (65, 47), (33, 24)),      # padded to 66x48, chroma half of that
    ("yuv422p", (64, 48), (32, 48)),
    ("yuv444p", (65, 47), (65, 47)),
    ("yuv420p10le", (64, 48), (64, 48)),  # not 8-bit planar: filled as 4:4:4, converted by FFmpeg
])
def test_encoder_takes_planes_at_its_chroma_size_and_keeps_the_luma(tmp_path, pix_fmt, size, chroma):
    clip = _yuv_clip(tmp_path / "c.mkv", "yuv444p", 1, 1, size=size, frames=2)
    info = media.probe(clip)
    dst = tmp_path / "out.mkv"
    enc = media.Encoder(dst, info, *size, media.EncodeSettings(codec="ffv1", pix_fmt=pix_fmt))
    assert enc.chroma_size == chroma
    ys = []
    for pic, pts in media.Decoder(clip, tags=info.colour):
        ys.append(pic.y)
        cw, ch = enc.chroma_size
        enc.write_planes(pic.y, np.full((ch, cw), 100, np.uint8), np.full((ch, cw), 150, np.uint8), pts)
    enc.close()
    with av.open(str(dst)) as c:
        frames = list(c.decode(video=0))
    scale = 4 if pix_fmt == "yuv420p10le" else 1  # 8-bit codes in 10 bits: x4
    for f, y in zip(frames, ys):
        assert np.array_equal(luma(f)[:size[1], :size[0]], y.astype(np.uint16) * scale)
    assert (frames[0].colorspace, frames[0].color_range) == (1, 1)
