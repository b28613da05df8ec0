"""PyAV decoding and encoding of films: the only module that touches containers.

It owns probing an input (with a typed `MediaError` for every way a path can
fail to be a video), decoding the video stream into RGB frames with their own
timestamps, and writing the output container: the encoded video stream with
each frame's pts carried over, every audio stream (packets copied when the
output container takes the codec, else re-encoded to AAC), subtitle streams the
container takes, the container/stream metadata and the rotation flag.

Nothing here knows about the model or colour: video.py feeds RGB frames in.
Audio and subtitle packets are read lazily from a second demuxer on the same
file and muxed up to the time of the video packet being written, so memory
stays flat however long the film is (the muxer never has to hold a backlog).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator

import av
import numpy as np

#: Extensions a folder input is scanned for.
VIDEO_EXTS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts",
              ".m2ts", ".wmv", ".flv", ".ogv", ".3gp")
#: Fallback frame rate when a stream states none at all (rare, broken files).
FALLBACK_FPS = Fraction(25)
#: Metadata keys the muxer writes itself; copying them would claim the wrong tool.
_OWN_KEYS = {"encoder", "major_brand", "minor_version", "compatible_brands", "creation_time_raw"}
#: Audio sent ahead of the video being written, seconds: keeps the muxer's interleaving buffer small.
AUDIO_LEAD = 0.5


#: Named layouts for files that give only a channel count (AAC refuses unordered layouts).
_LAYOUTS = {1: "mono", 2: "stereo", 3: "2.1", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}


class MediaError(ValueError):
    """A path that cannot be read or written as a video; the message is one line for the user."""


# ---------------------------------------------------------------------------- probe
@dataclass
class StreamInfo:
    index: int                 # stream index in the input container
    type: str                  # "audio" | "subtitle"
    codec: str                 # codec name, e.g. "aac", "mp3", "subrip"
    language: str | None       # language tag, carried to the output
    rate: int | None = None    # audio sample rate (Hz)
    channels: int | None = None  # audio channel count


@dataclass
class VideoInfo:
    path: str                  # the input file
    container: str             # demuxer name, e.g. "mov,mp4,m4a,3gp,3g2,mj2"
    codec: str                 # video codec name
    width: int                 # coded frame width in pixels
    height: int                # coded frame height in pixels
    time_base: Fraction        # the video stream's time base: frame pts are in these units
    fps: Fraction              # nominal frame rate (average, else guessed); VFR keeps pts, not this
    frames: int | None         # frame count the container states (exact for MP4), None when it does not say
    duration: float | None     # video duration in seconds, None when unknown
    start_time: float          # time of the first video timestamp, seconds
    duration_exact: bool       # duration is the video stream's own (not the container's, audio included)
    rotation: int              # display rotation in degrees (counter-clockwise), kept on the output
    sample_aspect: Fraction | None  # pixel aspect ratio for anamorphic sources
    streams: list[StreamInfo] = field(default_factory=list)  # audio and subtitle streams
    metadata: dict[str, str] = field(default_factory=dict)   # container tags (title, date...)
    video_tags: dict[str, str] = field(default_factory=dict)  # the video stream's tags (language, handler)

    @property
    def audio(self) -> list[StreamInfo]:
        return [s for s in self.streams if s.type == "audio"]

    def frame_estimate(self, start: float | None = None, end: float | None = None) -> int | None:
        """Frames the run will see: the container's count, else duration x rate."""
        if start is None and end is None and self.frames:
            return self.frames
        if self.duration is None:
            return None
        lo = max(0.0, start or 0.0)
        hi = self.duration if end is None else min(end, self.duration)
        return max(0, math.ceil((hi - lo) * self.fps - 1e-6))


def check_input_path(path: str | os.PathLike) -> Path:
    """Raise MediaError for a path that cannot be a video file (before FFmpeg sees it)."""
    p = Path(path)
    if not p.exists():
        raise MediaError(f"{p}: no such file")
    if p.is_dir():
        raise MediaError(f"{p}: is a folder, not a video file")
    if not os.access(p, os.R_OK):
        raise MediaError(f"{p}: not readable (permission denied)")
    if p.stat().st_size == 0:
        raise MediaError(f"{p}: empty file (0 bytes)")
    return p


def open_input(path: str | os.PathLike) -> av.container.InputContainer:
    """Open a container, turning FFmpeg's errors into one-line MediaErrors."""
    p = check_input_path(path)
    try:
        return av.open(str(p), "r")
    except av.FFmpegError as exc:
        raise MediaError(f"{p}: not a video file FFmpeg can read ({_why(exc)})") from None


def video_stream(container, path) -> Any:
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["nothing"]
        raise MediaError(f"{path}: has no video stream (holds {', '.join(kinds)})")
    stream = container.streams.video[0]
    name = stream.codec_context.name if stream.codec_context else None
    try:
        av.Codec(name, "r")
    except Exception:
        raise MediaError(f"{path}: video codec {name or 'unknown'!r} is not supported by this FFmpeg") from None
    if not stream.codec_context.width or not stream.codec_context.height:
        raise MediaError(f"{path}: video stream has no frame size (codec {name!r} not decodable)")
    return stream


def probe(path: str | os.PathLike) -> VideoInfo:
    """What video.py needs to plan a run; decodes one frame to prove the stream decodes."""
    with open_input(path) as c:
        vs = video_stream(c, path)
        tb = vs.time_base or Fraction(1, 90000)
        fps = vs.average_rate or vs.guessed_rate or vs.base_rate or FALLBACK_FPS
        if not (0 < fps < 1000):
            fps = vs.guessed_rate if vs.guessed_rate and 0 < vs.guessed_rate < 1000 else FALLBACK_FPS
        # The video stream's own duration, else Matroska's per-track DURATION tag, else the
        # container's (which may include a longer audio track: a looser bound).
        duration, exact = (float(vs.duration * tb), True) if vs.duration else (_tag_seconds(vs), True)
        if duration is None:
            duration, exact = (c.duration / av.time_base if c.duration else None), False
        start = float(vs.start_time * tb) if vs.start_time is not None else 0.0
        streams = []
        for s in c.streams:
            if s.type not in ("audio", "subtitle") or s.codec_context is None:
                continue
            info = StreamInfo(s.index, s.type, s.codec_context.name, s.metadata.get("language"))
            if s.type == "audio":
                info.rate, info.channels = s.codec_context.sample_rate, s.codec_context.channels
            streams.append(info)
        vs.thread_type = "AUTO"
        first = _first_frame(c, vs, path)
        rotation = int(round(first.rotation or 0))  # the display matrix rides on decoded frames
        sar = vs.sample_aspect_ratio if vs.sample_aspect_ratio and vs.sample_aspect_ratio != 1 else None
        return VideoInfo(str(path), c.format.name, vs.codec_context.name, first.width, first.height,
                         Fraction(tb), Fraction(fps), vs.frames or None, duration, start, exact, rotation, sar,
                         streams, {k: v for k, v in c.metadata.items() if k not in _OWN_KEYS},
                         _stream_tags(vs.metadata))


def _first_frame(c, vs, path, tries: int = 64):
    """The first decodable frame; a few damaged packets at the start are skipped, not fatal."""
    why = "no frame in the stream"
    try:
        for i, packet in enumerate(c.demux(vs)):
            try:
                frames = vs.codec_context.decode(packet)
            except av.FFmpegError as exc:
                why = _why(exc)
                frames = []
            if frames:
                return frames[0]
            if i >= tries:
                break
    except av.FFmpegError as exc:  # the demuxer itself gave up (file cut before the first frame)
        why = _why(exc)
    raise MediaError(f"{path}: video stream does not decode ({why})")


# --------------------------------------------------------------------------- decode
class Decoder:
    """Iterate (rgb uint8 (H, W, 3), pts) over the video stream, optionally a [start, end) part.

    Timestamps are the stream's own (in `time_base`), made strictly increasing
    where a broken file repeats or omits them, so the encoder never drops or
    refuses a frame. Decode errors never escape mid-stream: a bad packet is
    skipped, a cut-off file ends the iteration with what decoded, and the last
    FFmpeg reason is kept in `error` for the report.
    """

    def __init__(self, path: str | os.PathLike, start: float | None = None, end: float | None = None,
                 size: tuple[int, int] | None = None, origin: float = 0.0):
        # start/end count from `origin`, the stream's first timestamp (MPEG-TS films rarely start at 0).
        self.path, self.start, self.end, self.size = str(path), start, end, size
        self.origin = origin
        self.error: str | None = None
        self.frames = 0

    def __iter__(self) -> Iterator[tuple[np.ndarray, int]]:
        with open_input(self.path) as c:
            vs = video_stream(c, self.path)
            # FRAME/AUTO threading: PyAV's default SLICE is single-threaded for H.264.
            vs.thread_type = "AUTO"
            tb = vs.time_base or Fraction(1, 90000)
            fps = vs.average_rate or vs.guessed_rate or FALLBACK_FPS
            step = max(1, round(1 / (fps * tb)))  # one nominal frame in pts units
            if self.start:
                try:
                    c.seek(int((self.start + self.origin) / tb), stream=vs, backward=True)  # to the keyframe before
                except av.FFmpegError:
                    pass  # unseekable: decode from the top and skip frames below start
            last = None
            w, h = self.size or (None, None)
            try:
                for frame in self._frames(c, vs):
                    pts = frame.pts if frame.pts is not None else (last + step if last is not None else 0)
                    t = pts * tb - self.origin
                    if self.start is not None and t < self.start - 1e-6:
                        continue
                    if self.end is not None and t >= self.end - 1e-6:
                        break
                    if last is not None and pts <= last:
                        pts = last + 1  # strictly increasing, or encoders refuse the frame
                    last = pts
                    # Scale to the first frame's size should the stream change resolution mid-way.
                    rgb = frame.to_ndarray(format="rgb24", width=w, height=h)
                    if self.size is None:
                        w, h = rgb.shape[1], rgb.shape[0]
                    self.frames += 1
                    yield rgb, pts
            except av.FFmpegError as exc:
                self.error = _why(exc)

    def _frames(self, c, vs):
        """Decoded frames; a bad packet is skipped (its frame is lost) rather than ending the film,
        and a cut-off file still flushes the frames the decoder holds."""
        packets = c.demux(vs)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except av.FFmpegError as exc:  # the demuxer hit the cut: flush what is buffered
                self.error = _why(exc)
                packet = None
            try:
                frames = vs.codec_context.decode(packet)
            except av.FFmpegError as exc:
                self.error = _why(exc)
                continue
            yield from frames
            if packet is None:
                return


# --------------------------------------------------------------------------- encode
@dataclass
class EncodeSettings:
    codec: str = "libx264"       # video encoder name
    crf: int | None = 18         # constant quality where the encoder has it; 18 ~ visually lossless
    preset: str | None = None    # encoder speed preset (x264/x265), None = the encoder's default
    pix_fmt: str | None = None   # None = yuv420p for players, yuv444p for ffv1 (archival, lossless)


def default_pix_fmt(codec: str) -> str:
    if codec == "ffv1":
        return "yuv444p"
    try:
        formats = [f.name for f in av.Codec(codec, "w").video_formats or []]
    except Exception:
        formats = []
    return "yuv420p" if not formats or "yuv420p" in formats else formats[0]


def needs_even(pix_fmt: str) -> tuple[bool, bool]:
    """(width, height) must be even for chroma-subsampled formats (4:2:0, 4:2:2, NV12...)."""
    name = pix_fmt
    horiz = any(k in name for k in ("420", "422", "411")) or name.startswith(("nv12", "nv21", "nv16"))
    vert = "420" in name or name.startswith(("nv12", "nv21"))
    return horiz, vert


def check_output_path(dst: str | os.PathLike, src: str | os.PathLike | None = None,
                      overwrite: bool = False) -> Path:
    """Raise MediaError for an output that cannot or must not be written."""
    d = Path(dst)
    if src is not None and (d.resolve() == Path(src).resolve()
                            or (d.exists() and Path(src).exists() and os.path.samefile(d, src))):
        raise MediaError(f"{d}: output is the input file; choose another output")
    if d.is_dir():
        raise MediaError(f"{d}: output is a folder; give a file name")
    if not d.parent.is_dir():
        raise MediaError(f"{d.parent}: output folder does not exist")
    if not os.access(d.parent, os.W_OK):
        raise MediaError(f"{d.parent}: output folder is not writable")
    if d.exists() and not overwrite:
        raise MediaError(f"{d}: exists (pass --overwrite to replace it)")
    try:
        av.format.ContainerFormat(_format_for(d), "w")
    except (ValueError, MediaError, av.FFmpegError):
        raise MediaError(f"{d}: unknown output container {d.suffix!r} (use .mp4, .mkv, .mov...)") from None
    return d


def _format_for(path: Path) -> str:
    ext = path.suffix.lower().lstrip(".")
    if not ext:
        raise MediaError(f"{path}: output needs an extension (.mp4, .mkv...)")
    known = {"mp4": "mp4", "m4v": "mp4", "mkv": "matroska", "webm": "webm", "mov": "mov",
             "avi": "avi", "ts": "mpegts", "nut": "nut", "ogv": "ogg"}
    return known.get(ext, ext)


class Encoder:
    """The output container: video frames in (RGB + pts), audio/subtitles carried from `info`.

    Call `write(rgb, pts)` per frame in order, then `close()`; `abort()` on
    failure closes what is open (the caller removes the file).
    """

    def __init__(self, dst: str | os.PathLike, info: VideoInfo, width: int, height: int,
                 settings: EncodeSettings, start: float | None = None, end: float | None = None,
                 video_title: str | None = None):
        self.info, self.settings = info, settings
        self.start, self.end = start, end
        self.warnings: list[str] = []
        self.frames = 0
        self.audio_copied: list[int] = []
        self.audio_encoded: list[int] = []
        self.subtitles: list[int] = []
        self._src = None
        self._closed = False
        dst = Path(dst)
        try:
            self.out = av.open(str(dst), "w", format=_format_for(dst))
        except av.FFmpegError as exc:
            raise MediaError(f"{dst}: cannot create output ({_why(exc)})") from None
        try:
            self._setup_video(width, height, video_title)
            self._setup_carried()
        except BaseException:
            self.abort()
            raise

    # -- setup
    def _setup_video(self, width: int, height: int, title: str | None) -> None:
        s, info = self.settings, self.info
        try:
            codec = av.Codec(s.codec, "w")
        except Exception:
            raise MediaError(f"unknown video encoder {s.codec!r} (try libx264, libx265, ffv1)") from None
        if codec.type != "video":
            raise MediaError(f"{s.codec!r} is not a video encoder")
        supported = self.out.supported_codecs
        if supported and codec.name not in supported and codec.canonical_name not in supported:
            raise MediaError(f"{s.codec} cannot be stored in a {Path(self.out.name).suffix} file; "
                             f"use .mkv or another codec")
        self.pix_fmt = s.pix_fmt or default_pix_fmt(s.codec)
        even_w, even_h = needs_even(self.pix_fmt)
        # Chroma-subsampled formats need even sizes: pad by repeating the edge pixel.
        self.pad_w = width % 2 if even_w else 0
        self.pad_h = height % 2 if even_h else 0
        vs = self.out.add_stream(s.codec, rate=info.fps)
        vs.width, vs.height = width + self.pad_w, height + self.pad_h
        vs.pix_fmt = self.pix_fmt
        # The input's own time base: each frame's pts goes through unchanged (CFR and VFR alike).
        vs.time_base = info.time_base
        vs.codec_context.time_base = info.time_base
        vs.codec_context.framerate = info.fps
        if info.sample_aspect:
            vs.codec_context.sample_aspect_ratio = info.sample_aspect
        opts: dict[str, str] = {}
        if s.crf is not None and s.codec in ("libx264", "libx265", "libvpx-vp9", "libsvtav1", "libaom-av1"):
            opts["crf"] = str(s.crf)
            if s.codec == "libvpx-vp9":
                opts["b"] = "0"  # constant-quality mode for VP9
        if s.preset and s.codec in ("libx264", "libx265", "libsvtav1"):
            opts["preset"] = s.preset
        if s.codec == "libx265":
            opts["x265-params"] = "log-level=error"
        vs.options = opts
        # PyAV's default thread_type is SLICE, which runs x264 on one slice thread
        # (measured 2.4x slower here); FRAME threading keeps every core busy.
        vs.thread_type = "AUTO"
        if info.rotation:
            vs.set_display_rotation(info.rotation)
        meta = dict(info.video_tags)
        if title:
            meta["title"] = title
        vs.metadata.update(meta)
        self.vstream = vs
        self.out.metadata.update(info.metadata)

    def _setup_carried(self) -> None:
        """Audio and subtitle streams: copy, re-encode audio to AAC, or drop a subtitle with a warning."""
        if not self.info.streams:
            return
        self._src = av.open(self.info.path, "r")
        supported = self.out.supported_codecs
        self._map: dict[int, tuple[str, Any, Any]] = {}
        for s in self.info.streams:
            ist = self._src.streams[s.index]
            ok = not supported or s.codec in supported
            if ok:
                try:
                    ost = self.out.add_stream_from_template(ist)
                    self._map[s.index] = ("copy", ist, ost)
                    (self.audio_copied if s.type == "audio" else self.subtitles).append(s.index)
                    ost.metadata.update(_stream_tags(ist.metadata))
                    continue
                except (ValueError, av.FFmpegError):
                    pass
            if s.type == "audio":
                ost = self.out.add_stream("aac", rate=s.rate)
                layout = ist.codec_context.layout.name
                if "channels" in layout:  # unordered ("1 channels"): AAC needs a named layout
                    layout = _LAYOUTS.get(ist.codec_context.channels, "stereo")
                ost.layout = layout
                ost.format = "fltp"  # FFmpeg's AAC encoder takes planar float only
                ost.metadata.update(_stream_tags(ist.metadata))
                ist.codec_context.thread_type = "AUTO"
                self._map[s.index] = ("encode", ist, ost)
                self.audio_encoded.append(s.index)
            else:
                self.warnings.append(f"subtitle stream {s.index} ({s.codec}) cannot go in a "
                                     f"{Path(self.out.name).suffix} file: left out")
        if not self._map:
            self._src.close()
            self._src = None
            return
        streams = [st for _, st, _ in self._map.values()]
        if self.start:
            try:
                self._src.seek(int((self.start + self.info.start_time) * av.time_base), backward=True)
            except av.FFmpegError:
                pass
        self._packets = self._src.demux(*streams)
        self._pending = None
        self._done = False

    # -- writing
    def write(self, rgb: np.ndarray, pts: int) -> None:
        if self.pad_w or self.pad_h:
            rgb = np.pad(rgb, ((0, self.pad_h), (0, self.pad_w), (0, 0)), mode="edge")
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts = pts - self._offset(self.info.time_base)
        frame.time_base = self.info.time_base
        self._mux(self.vstream.encode(frame))
        self.frames += 1
        self._pump(float(pts * self.info.time_base) - self.info.start_time + AUDIO_LEAD)

    def _offset(self, tb: Fraction) -> int:
        # A part keeps its own timing from zero: shift every stream by the same start.
        return int(round((self.start + self.info.start_time) / tb)) if self.start else 0

    def _mux(self, packets) -> None:
        for p in packets:
            self.out.mux(p)

    def _pump(self, until: float | None) -> None:
        """Mux carried packets up to `until` seconds (None: to the end or the part's end)."""
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
                    self.warnings.append(f"audio/subtitles cut short ({_why(exc)})")
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
        self._mux(ost.encode(f))

    def close(self) -> None:
        """Flush the encoders, carry the rest of the audio, finish the file."""
        if self._closed:
            return
        self._mux(self.vstream.encode(None))
        self._pump(None)
        if self._src is not None:
            for mode, ist, ost in self._map.values():
                if mode == "encode":
                    try:
                        for f in ist.codec_context.decode(None):
                            self._encode_audio(f, ost)
                    except av.FFmpegError:
                        pass
                    self._mux(ost.encode(None))
            self._src.close()
        self.out.close()
        self._closed = True

    def abort(self) -> None:
        if self._closed:
            return
        self._closed = True
        for c in (self._src, getattr(self, "out", None)):
            if c is not None:
                try:
                    c.close()
                except Exception:
                    pass  # closing a half-written file may fail; the caller deletes it anyway


def _stream_tags(meta) -> dict[str, str]:
    """A stream's tags minus those that describe the old encoding (the muxer writes fresh ones)."""
    stale = ("encoder", "rotate", "duration", "number_of_frames", "number_of_bytes", "bps")
    return {k: v for k, v in dict(meta).items()
            if k.lower() not in stale and not k.upper().startswith("_STATISTICS")}


def _tag_seconds(stream) -> float | None:
    """Matroska's DURATION tag ('00:01:02.500000000') in seconds, if present."""
    tag = stream.metadata.get("DURATION") or stream.metadata.get("duration")
    if not tag:
        return None
    try:
        h, m, sec = tag.split(":")
        return int(h) * 3600 + int(m) * 60 + float(sec)
    except ValueError:
        return None


def _why(exc: BaseException) -> str:
    """FFmpeg's reason without the path PyAV repeats in the message."""
    strerror = getattr(exc, "strerror", None)
    text = strerror or str(exc)
    return text.strip().splitlines()[0][:160] if text.strip() else type(exc).__name__


def find_videos(folder: str | os.PathLike) -> list[Path]:
    """Videos directly in `folder`, sorted; our own outputs and temporaries left out."""
    out = []
    for p in sorted(Path(folder).iterdir()):
        if p.is_file() and p.suffix.lower() in VIDEO_EXTS and not p.name.startswith(".") \
                and not p.stem.endswith((".colour", ".compare")):
            out.append(p)
    return out
