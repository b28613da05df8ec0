"""Subtitles ride along: copied into containers that take them, left out (and said) elsewhere."""
import av
import numpy as np
import pytest

from colourbatch.config import RunConfig, VideoConfig
from colourbatch.video import colour_video

SRT = """1
00:00:00,000 --> 00:00:00,200
Hello there

2
00:00:00,240 --> 00:00:00,440
General Kenobi
"""


def film_with_subtitles(tmp_path):
    """An MKV with 12 frames and an English SubRip track, muxed from a real .srt file."""
    (tmp_path / "s.srt").write_text(SRT)
    path = tmp_path / "subbed.mkv"
    with av.open(str(tmp_path / "s.srt")) as srt, av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=25)
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        ss = out.add_stream_from_template(srt.streams[0])
        ss.metadata["language"] = "eng"
        for i in range(12):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 20 * i, np.uint8), format="rgb24")
            frame.pts = i
            for p in vs.encode(frame):
                out.mux(p)
        for p in vs.encode():
            out.mux(p)
        for p in srt.demux(srt.streams[0]):
            if p.size:
                p.stream = ss
                out.mux(p)
    return path


def subtitles(path):
    with av.open(str(path)) as c:
        if not c.streams.subtitles:
            return None
        s = c.streams.subtitles[0]
        return s.metadata.get("language"), [(bytes(p), p.pts) for p in c.demux(s) if p.size]


@pytest.fixture
def run(tiny_tinted_weights):
    return RunConfig(weights=str(tiny_tinted_weights), workers=0, batch_size=4, precision="fp32")


def test_subtitles_are_copied_into_mkv(tmp_path, run):
    src = film_with_subtitles(tmp_path)
    rep = colour_video(src, tmp_path / "out.mkv", run)
    assert rep.ok and rep.subtitles == 1 and not rep.warnings
    assert subtitles(tmp_path / "out.mkv") == subtitles(src)
    lang, packets = subtitles(src)
    assert lang == "eng" and [text for text, _ in packets] == [b"Hello there", b"General Kenobi"]


def test_subtitles_a_container_cannot_take_are_left_out_and_said(tmp_path, run):
    src = film_with_subtitles(tmp_path)
    rep = colour_video(src, tmp_path / "out.mp4", run)
    assert rep.ok and rep.subtitles == 0
    assert subtitles(tmp_path / "out.mp4") is None
    assert len(rep.warnings) == 1 and "subtitle" in rep.warnings[0] and "left out" in rep.warnings[0]


def test_a_part_keeps_the_subtitles_that_overlap_it(tmp_path, run):
    src = film_with_subtitles(tmp_path)
    rep = colour_video(src, tmp_path / "part.mkv", run, VideoConfig(start=0.24))
    assert rep.ok and rep.frames_out == 6
    lang, packets = subtitles(tmp_path / "part.mkv")
    assert [text for text, _ in packets] == [b"General Kenobi"]
    assert packets[0][1] == 0  # shifted with the part: it starts at the part's start
