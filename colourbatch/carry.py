"""Audio and subtitle carry-over: the input's other streams, copied into the coloured film.

Owns which of a film's audio and subtitle streams go into the output and how:
packets copied when the output container takes the codec, audio re-encoded to
AAC when it does not, a subtitle the container cannot hold left out with a
warning. Packets are read lazily from a second demuxer on the input file and
muxed up to the time of the video frame just written (`pump`), so memory stays
flat however long the film is: the muxer never has to hold a backlog.

media.Encoder drives a `Carrier` it is given (it never imports this module);
video.py makes one per film. A part (`start`/`end`) keeps the packets inside
it, shifted by the same offset as the video.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import av

from .media import VideoInfo, ffmpeg_reason, part_offset, stream_tags

#: Named layouts for files that give only a channel count (AAC refuses unordered layouts).
LAYOUTS = {1: "mono", 2: "stereo", 3: "2.1", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}


class Carrier:
    """The audio and subtitle streams of `info`'s file, for one output container."""

    def __init__(self, info: VideoInfo, start: float | None = None, end: float | None = None):
        self.info, self.start, self.end = info, start, end
        self.audio_copied: list[int] = []   # input stream indices copied packet for packet
        self.audio_encoded: list[int] = []  # input stream indices re-encoded to AAC
        self.subtitles: list[int] = []      # input subtitle stream indices carried
        self.warnings: list[str] = []       # streams left out, audio cut short
        self._src = None
        self._map: dict[int, tuple[str, Any, Any]] = {}
        self._pending = None
        self._done = True

    def attach(self, out) -> None:
        """Add the carried streams to `out` (after its video stream, before anything is muxed)."""
        self.out = out
        if not self.info.streams:
            return
        self._src = av.open(self.info.path, "r")
        supported = out.supported_codecs
        for s in self.info.streams:
            ist = self._src.streams[s.index]
            if not supported or s.codec in supported:
                try:
                    ost = out.add_stream_from_template(ist)
                    self._map[s.index] = ("copy", ist, ost)
                    (self.audio_copied if s.type == "audio" else self.subtitles).append(s.index)
                    ost.metadata.update(stream_tags(ist.metadata))
                    continue
                except (ValueError, av.FFmpegError):
                    pass
            if s.type == "audio":
                self._map[s.index] = ("encode", ist, self._aac_like(ist, s.rate))
                self.audio_encoded.append(s.index)
            else:
                self.warnings.append(f"subtitle stream {s.index} ({s.codec}) cannot go in a "
                                     f"{Path(out.name).suffix} file: left out")
        if not self._map:
            self.close()
            return
        if self.start:
            try:
                self._src.seek(int((self.start + self.info.start_time) * av.time_base), backward=True)
            except av.FFmpegError:
                pass  # unseekable: packets before the part are skipped by time instead
        self._packets = self._src.demux(*[ist for _, ist, _ in self._map.values()])
        self._done = False

    def _aac_like(self, ist, rate: int | None):
        ost = self.out.add_stream("aac", rate=rate)
        layout = ist.codec_context.layout.name
        if "channels" in layout:  # unordered ("1 channels"): AAC needs a named layout
            layout = LAYOUTS.get(ist.codec_context.channels, "stereo")
        ost.layout = layout
        ost.format = "fltp"  # FFmpeg's AAC encoder takes planar float only
        ost.metadata.update(stream_tags(ist.metadata))
        ist.codec_context.thread_type = "AUTO"
        return ost

    def pump(self, until: float | None) -> None:
        """Mux carried packets up to `until` seconds of film time (None: all that remain)."""
        if self._src is None or self._done:
            return
        while True:
            pkt = self._pending
            if pkt is None:
                try:
                    pkt = next(self._packets)
                except StopIteration:
                    self._done = True
                    break
                except av.FFmpegError as exc:  # a truncated file: keep what came before
                    self.warnings.append(f"audio/subtitles cut short ({ffmpeg_reason(exc)})")
                    self._done = True
                    break
            if pkt.dts is None and pkt.pts is None:
                self._pending = None
                continue  # demuxer flush packet
            t = float((pkt.pts if pkt.pts is not None else pkt.dts) * pkt.time_base) - self.info.start_time
            if until is not None and t > until:
                self._pending = pkt
                return
            self._pending = None
            if self.end is not None and t >= self.end:
                continue
            if self.start and t + float((pkt.duration or 0) * pkt.time_base) <= self.start:
                continue
            self._carry(pkt)

    def _offset(self, tb) -> int:
        return part_offset(self.start, self.info.start_time, tb)

    def _carry(self, pkt) -> None:
        mode, ist, ost = self._map[pkt.stream.index]
        if mode == "copy":
            off = self._offset(pkt.time_base)
            if off:
                pkt.pts = pkt.pts - off if pkt.pts is not None else None
                pkt.dts = pkt.dts - off if pkt.dts is not None else None
                if pkt.dts is not None and pkt.dts < 0:
                    if pkt.stream.type == "audio":
                        return  # the muxer refuses negative dts; the part starts at most a packet later
                    pkt.pts = pkt.dts = 0  # a subtitle already on screen at the start: show it from 0
            pkt.stream = ost
            self.out.mux(pkt)
            return
        try:
            frames = ist.codec_context.decode(pkt)
        except av.FFmpegError:
            return  # one bad audio packet is a click, not a reason to stop the film
        for f in frames:
            self._encode_audio(f, ost)

    def _encode_audio(self, f, ost) -> None:
        if f is not None and f.pts is not None:
            f.pts -= self._offset(f.time_base)
            if f.pts < 0:
                return
        for p in ost.encode(f):
            self.out.mux(p)

    def finish(self) -> None:
        """Carry the rest (up to the part's end) and flush the audio encoders; the output stays open."""
        self.pump(None)
        for mode, ist, ost in self._map.values():
            if mode == "encode":
                try:
                    for f in ist.codec_context.decode(None):
                        self._encode_audio(f, ost)
                except av.FFmpegError:
                    pass  # a bad last packet: the sound ends a few milliseconds early
                self._encode_audio(None, ost)
        self.close()

    def close(self) -> None:
        """Close the second demuxer (also after a failure)."""
        self._done = True
        if self._src is not None:
            src, self._src = self._src, None
            try:
                src.close()
            except Exception:
                pass  # nothing was written through it; a failed close loses nothing
