"""media.py: probing, decoding, encoding and the typed errors for bad inputs (tiny PyAV clips)."""
from fractions import Fraction

import av
import numpy as np
import pytest

from colourbatch import media
from colourbatch.media import MediaError
from conftest import _write_audio_only


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


@pytest.mark.parametrize("kind", ["missing", "folder", "empty", "text", "audio_only", "unknown_codec"])
def test_bad_inputs_raise_media_error(tmp_path, make_clip, kind):
    path = tmp_path / "bad.mp4"
    if kind == "folder":
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
              "unknown_codec": "codec"}[kind]
    assert expect in msg and "\n" not in msg


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


def test_encoder_rejects_codec_the_container_cannot_hold(tmp_path, make_clip):
    info = media.probe(make_clip("a.mp4"))
    with pytest.raises(media.SettingsError, match="unknown video encoder"):
        media.Encoder(tmp_path / "o.mp4", info, 64, 48, media.EncodeSettings(codec="nope264"))
