"""PyAV decoding and encoding of films: the only module that opens containers.

It owns probing an input (with a typed `MediaError` for every way a file can
fail to be a video), decoding the video stream into RGB frames or into luma
planes (`Picture`) with their own timestamps, the source's colour description
(`ColourTags`: matrix, range, primaries, transfer), checking encoder settings,
and writing the output's video stream (RGB frames, or Y/Cb/Cr planes with the
luma passed through bit for bit) with each frame's pts carried over, the
colour tags, the container/stream metadata and the rotation flag.

What the planes path takes natively (`NATIVE_LUMA`): every 8-bit format whose
first plane is the luma (4:2:0, 4:2:2, 4:4:4, 4:4:0, 4:1:1, limited or full
"yuvj" range, NV12/NV21/NV16, grey), since only the luma is kept and the
chroma is computed anew. Anything else (10/12-bit, RGB, packed YUYV, palette
GIFs) is converted by FFmpeg's scaler to 8-bit yuv420p first, in the matrix
and range the output will be tagged with. PyAV 18 neither reads nor writes the
chroma siting (chroma_location); the chroma is computed centre-sited from L
averaged over each chroma sample's luma pixels, a half-pixel difference from
MPEG's left siting in an a/b field the model predicts at 56x56. The other streams (audio, subtitles) are carry.py's: the Encoder
drives a Carrier it is handed. Which files to colour and where the outputs go
is video.py's planning.

FFmpeg's own log is silenced here, where containers are opened: its reasons
reach the user through the one-line errors instead.
"""
from __future__ import annotations

import heapq
import io
import math
import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator

import av
import av.logging
import numpy as np

from . import files
from .config import EncodeSettings
from .errors import ColourbatchError, InputError, one_line

#: Decoded frames held to put them in presentation order: more than any codec's reordering
#: delay (H.264/HEVC keep at most 16 frames), so only a broken stream can overrun it.
REORDER_WINDOW = 16
#: Fallback frame rate when a stream states none at all (rare, broken files).
FALLBACK_FPS = Fraction(25)
#: Metadata keys the muxer writes itself; copying them would claim the wrong tool.
_OWN_KEYS = {"encoder", "major_brand", "minor_version", "compatible_brands", "creation_time_raw"}
#: Audio sent ahead of the video being written, seconds: keeps the muxer's interleaving buffer small.
AUDIO_LEAD = 0.5
#: Demuxers of single pictures ("image2", "png_pipe", "jpeg_pipe"...): FFmpeg reads a photo as a
#: one-frame film, which is `colourbatch pages`' work.
_PICTURE_DEMUXERS = ("image2",)
_PICTURE_SUFFIX = "_pipe"
#: 8-bit pixel formats whose first plane is the luma at full size: the planes path keeps it as it
#: is (bit for bit); their chroma layout does not matter, as the chroma is computed anew.
NATIVE_LUMA = ("yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "yuv440p",
               "yuvj440p", "yuv411p", "yuv410p", "gray", "nv12", "nv21", "nv16")
#: What every other decoded format becomes first (10-bit, RGB, packed, palette): 8-bit 4:2:0.
CONVERT_TO = "yuv420p"
#: Output formats the Encoder fills plane by plane (3 planes, 8 bits); others are converted from 4:4:4.
PLANAR_OUT = ("yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "yuv440p",
              "yuvj440p", "yuv411p", "yuv410p")
#: FFmpeg's AVColorSpace codes -> colour.YCBCR's matrix names (those it can convert to).
_MATRIX_OF = {1: "bt709", 4: "fcc", 5: "bt601", 6: "bt601", 7: "smpte240m", 9: "bt2020"}
#: The AVColorSpace code written for a matrix (BT.601: SMPTE 170M, what FFmpeg tags NTSC/DV with).
_CODE_OF = {"bt709": 1, "fcc": 4, "bt601": 6, "smpte240m": 7, "bt2020": 9}
#: The scaler's colorspace for a matrix (libswscale's SWS_CS_* codes: 170M and 470BG are one).
_SWS_OF = {"bt709": 1, "fcc": 4, "bt601": 5, "smpte240m": 7, "bt2020": 9}
#: AVColorRange codes: limited (MPEG, "TV") and full (JPEG, "PC").
RANGE_LIMITED, RANGE_FULL = 1, 2
#: Frame height from which an untagged film is taken for BT.709 (HD), as players guess it.
HD_HEIGHT = 720

# None: FFmpeg logs nothing to stderr (decode warnings of a damaged film would flood the
# terminal); the reasons travel in PyAV's exceptions and become MediaError's one line. A level
# routes FFmpeg's log through Python from its decoder threads, which hung the test suite here.
av.logging.set_level(None)


class MediaError(InputError):
    """One film that cannot be read or written (exit 1 in a batch); the message is one line."""


class SettingsError(ColourbatchError):
    """Encoder settings or an output container that no film could be written with (exit 2)."""


# ---------------------------------------------------------------------------- probe
@dataclass(frozen=True)
class ColourTags:
    """How a film's Y'CbCr codes mean colours: what the planes path computes in and the output is tagged with."""

    matrix: str          # a key of colour.YCBCR: the source's matrix, or the guess for an untagged one
    full_range: bool     # full ("JPEG", yuvj*, grey) or limited ("MPEG", 16..235) codes
    primaries: int = 2   # AVColorPrimaries, copied as the source states them (2 = unspecified)
    trc: int = 2         # AVColorTransferCharacteristic, copied likewise
    native: bool = True  # the source's luma plane is used as it is (NATIVE_LUMA), not converted

    @property
    def colorspace(self) -> int:
        """The AVColorSpace code to write."""
        return _CODE_OF[self.matrix]

    @property
    def color_range(self) -> int:
        return RANGE_FULL if self.full_range else RANGE_LIMITED

    def sws(self) -> dict:
        """FFmpeg scaler arguments (PyAV's reformat) that convert into (and from) these tags."""
        rng, cs = self.color_range, _SWS_OF[self.matrix]
        return {"src_colorspace": cs, "dst_colorspace": cs, "src_color_range": rng, "dst_color_range": rng}


#: What a frame with no description is taken for: a standard-definition film, limited range.
SD_TAGS = ColourTags("bt601", False)


def colour_tags(frame, codec_context=None) -> ColourTags:
    """The colour description of a decoded frame (the stream's where the frame says nothing).

    The matrix is the frame's (else the stream's); an untagged or unknown one is
    BT.709 from HD_HEIGHT lines up, BT.601 below, the guess players make. Full
    range when tagged so, for yuvj* formats and for grey (FFmpeg's scaler reads
    grey as full range). An RGB or palette source has no matrix of its own: it is
    converted into the guessed one, limited range.
    """
    fmt = frame.format
    cc = codec_context
    code = frame.colorspace if frame.colorspace in _MATRIX_OF else getattr(cc, "colorspace", None)
    matrix = _MATRIX_OF.get(code) or ("bt709" if frame.height >= HD_HEIGHT else "bt601")
    rgb = fmt.is_rgb or fmt.has_palette
    rng = frame.color_range or getattr(cc, "color_range", 0)
    full = not rgb and (rng == RANGE_FULL or fmt.name.startswith("yuvj") or fmt.name == "gray")
    prim = frame.color_primaries if frame.color_primaries not in (0, 2) else getattr(cc, "color_primaries", 2)
    trc = frame.color_trc if frame.color_trc not in (0, 2) else getattr(cc, "color_trc", 2)
    return ColourTags(matrix, full, int(prim or 2), int(trc or 2), fmt.name in NATIVE_LUMA)


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
    colour: ColourTags = SD_TAGS  # the first frame's colour description (matrix, range...)

    @property
    def audio(self) -> list[StreamInfo]:
        return [s for s in self.streams if s.type == "audio"]

    @property
    def still(self) -> bool:
        """A single picture FFmpeg reads as a film: a photo's demuxer, or a GIF of one frame."""
        return (self.container in _PICTURE_DEMUXERS or self.container.endswith(_PICTURE_SUFFIX)
                or (self.container == "gif" and self.frames == 1))

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
    """MediaError for a path that cannot be a video file, before FFmpeg sees it.

    Regular files only: FFmpeg would block forever on a FIFO and read a device without end.
    """
    p = Path(path)
    if not p.exists():
        raise MediaError(f"{p}: no such file")
    if p.is_dir():
        raise MediaError(f"{p}: is a folder, not a video file")
    try:
        st = files.check_regular(p)
    except InputError as exc:
        raise MediaError(f"{p}: {exc}") from None
    if not os.access(p, os.R_OK):
        raise MediaError(f"{p}: not readable (permission denied)")
    if st.st_size == 0:
        raise MediaError(f"{p}: empty file (0 bytes)")
    return p


def open_input(path: str | os.PathLike) -> av.container.InputContainer:
    """Open a container, turning FFmpeg's errors into one-line MediaErrors."""
    p = check_input_path(path)
    try:
        return av.open(str(p), "r")
    except av.FFmpegError as exc:
        raise MediaError(f"{p}: not a video file FFmpeg can read ({ffmpeg_reason(exc)})") from None


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
                         stream_tags(vs.metadata), colour_tags(first, vs.codec_context))


def _first_frame(c, vs, path, tries: int = 64):
    """The first decodable frame; a few damaged packets at the start are skipped, not fatal."""
    why = "no frame in the stream"
    try:
        for i, packet in enumerate(c.demux(vs)):
            try:
                frames = vs.codec_context.decode(packet)
            except av.FFmpegError as exc:
                why = ffmpeg_reason(exc)
                frames = []
            if frames:
                return frames[0]
            if i >= tries:
                break
    except av.FFmpegError as exc:  # the demuxer itself gave up (file cut before the first frame)
        why = ffmpeg_reason(exc)
    raise MediaError(f"{path}: video stream does not decode ({why})")


# --------------------------------------------------------------------------- decode
class Picture:
    """One decoded frame on the planes path: its luma `y` (uint8 (H, W), in `tags`), and `rgb()`
    on demand (grey detection samples a few frames). Hold it only until the next frame:
    it keeps the decoded frame alive."""

    __slots__ = ("y", "_frame", "_size")

    def __init__(self, y: np.ndarray, frame, size: tuple[int, int]):
        self.y, self._frame, self._size = y, frame, size

    def rgb(self) -> np.ndarray:
        """uint8 RGB (H, W, 3) of the frame, as the RGB path decodes it."""
        return self._frame.to_ndarray(format="rgb24", width=self._size[0], height=self._size[1])


def luma_plane(frame, tags: ColourTags, width: int, height: int) -> np.ndarray:
    """The frame's uint8 luma plane (height, width): its own when NATIVE_LUMA and of that size,
    else after FFmpeg's scaler turned it into 8-bit CONVERT_TO in `tags`' matrix and range."""
    if frame.format.name not in NATIVE_LUMA or (frame.width, frame.height) != (width, height):
        fmt = frame.format.name if frame.format.name in NATIVE_LUMA else CONVERT_TO
        sws = tags.sws()
        if frame.format.is_rgb or frame.format.has_palette:
            sws.pop("src_colorspace"), sws.pop("src_color_range")  # RGB has neither
        frame = frame.reformat(width=width, height=height, format=fmt, **sws)
    p = frame.planes[0]
    return np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, :p.width].copy()


class Decoder:
    """Iterate (rgb uint8 (H, W, 3), pts) over the video stream in presentation order,
    optionally a [start, end) part; with `tags` (the probe's ColourTags), (Picture, pts):
    the luma plane, no RGB.

    Timestamps are the stream's own (in `time_base`). A decoder may hand frames
    out in an order whose timestamps go backwards (a phone's VFR clip: 0,
    101000, 67000, 134000, 34000...), so frames pass through a reorder window
    of REORDER_WINDOW frames (a heap on pts) and leave sorted: the output holds
    exactly the source's timestamps, each frame at its own. Two rules keep the
    pts strictly increasing, which encoders require:

    * a frame whose pts equals one already taken (an exact duplicate), or that
      comes later than the window can reorder (its pts is below a frame already
      yielded), is dropped and counted in `dropped`: a player shows one picture
      per timestamp, and moving the frame to an invented time would misplace it;
    * a frame with no pts gets the largest seen so far plus one nominal frame.

    Decode errors never escape mid-stream: a bad packet is skipped, a cut-off
    file ends the iteration with what decoded, and the last FFmpeg reason is
    kept in `error` for the report.
    """

    def __init__(self, path: str | os.PathLike, start: float | None = None, end: float | None = None,
                 size: tuple[int, int] | None = None, origin: float = 0.0, tags: ColourTags | None = None):
        # start/end count from `origin`, the stream's first timestamp (MPEG-TS films rarely start at 0).
        self.path, self.start, self.end, self.size = str(path), start, end, size
        self.tags = tags
        self.origin = origin
        self.error: str | None = None
        self.frames = 0      # frames yielded
        self.dropped = 0     # frames dropped: duplicate timestamps, or too late to reorder
        self.reached_end = False  # a frame at or past `end` was decoded: the part is whole

    def __iter__(self) -> Iterator[tuple[Any, int]]:
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
            w, h = self.size or (None, None)
            try:
                for frame, pts in self._in_order(self._frames(c, vs), step):
                    t = pts * tb - self.origin
                    if self.start is not None and t < self.start - 1e-6:
                        continue
                    if self.end is not None and t >= self.end - 1e-6:
                        self.reached_end = True
                        break  # frames leave sorted: every later one is past the end too
                    if w is None:
                        w, h = frame.width, frame.height
                    # Scaled to the first frame's size should the stream change resolution mid-way.
                    if self.tags is not None:
                        out = Picture(luma_plane(frame, self.tags, w, h), frame, (w, h))
                    else:
                        out = frame.to_ndarray(format="rgb24", width=w, height=h)
                    self.frames += 1
                    yield out, pts
            except av.FFmpegError as exc:
                self.error = ffmpeg_reason(exc)

    def _in_order(self, frames, step: int):
        """(frame, pts) sorted by pts through a heap of REORDER_WINDOW decoded frames.

        The heap holds decoded frames (in the codec's own pixel format, a
        quarter of RGB's size for 4:2:0), not RGB. Ties between equal pts keep
        decode order (the sequence number), so the first of two duplicates wins.
        """
        heap: list[tuple[int, int, Any]] = []
        top = None      # largest pts seen: where a frame without one goes
        out = None      # last pts yielded
        taken: set[int] = set()  # pts in the window, to drop exact duplicates on arrival
        for seq, frame in enumerate(frames):
            pts = frame.pts if frame.pts is not None else (top + step if top is not None else 0)
            if pts in taken or (out is not None and pts <= out):
                self.dropped += 1
                continue
            top = pts if top is None else max(top, pts)
            taken.add(pts)
            heapq.heappush(heap, (pts, seq, frame))
            if len(heap) > REORDER_WINDOW:
                out, _, first = heapq.heappop(heap)
                taken.discard(out)
                yield first, out
        while heap:
            out, _, first = heapq.heappop(heap)
            yield first, out

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
                self.error = ffmpeg_reason(exc)
                packet = None
            try:
                frames = vs.codec_context.decode(packet)
            except av.FFmpegError as exc:
                self.error = ffmpeg_reason(exc)
                continue
            yield from frames
            if packet is None:
                return


# --------------------------------------------------------------------------- encode
#: Encoders that take a constant-quality `crf` option.
CRF_CODECS = ("libx264", "libx265", "libvpx-vp9", "libsvtav1", "libaom-av1")
#: Speed presets by encoder; checked here because x264 prints its refusal straight to stderr.
PRESETS = {name: ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower",
                  "veryslow", "placebo") for name in ("libx264", "libx265")}
PRESETS["libsvtav1"] = tuple(str(i) for i in range(-1, 14))
#: Output containers by extension (FFmpeg's muxer names); the extension picks the container.
CONTAINERS = {"mp4": "mp4", "m4v": "mp4", "mkv": "matroska", "webm": "webm", "mov": "mov",
              "avi": "avi", "ts": "mpegts", "nut": "nut", "ogv": "ogg"}


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


def output_format(path: str | os.PathLike) -> str:
    """FFmpeg's muxer for an output path's extension; SettingsError when there is none."""
    path = Path(path)
    ext = path.suffix.lower().lstrip(".")
    if not ext:
        raise SettingsError(f"{path}: output needs an extension (.mp4, .mkv, .mov...)")
    name = CONTAINERS.get(ext, ext)
    try:
        av.format.ContainerFormat(name, "w")
    except (ValueError, av.FFmpegError):
        raise SettingsError(f"{path}: unknown output container {path.suffix!r} (use .mp4, .mkv, .mov...)") from None
    return name


def encoder_options(s: EncodeSettings) -> dict[str, str]:
    """The FFmpeg options `s` means for its encoder (options an encoder lacks are left out)."""
    opts: dict[str, str] = {}
    if s.crf is not None and s.codec in CRF_CODECS:
        opts["crf"] = str(s.crf)
        if s.codec == "libvpx-vp9":
            opts["b"] = "0"  # constant-quality mode for VP9
    if s.preset and s.codec in PRESETS:
        opts["preset"] = s.preset
    if s.codec == "libx265":
        opts["x265-params"] = "log-level=error"
    return opts


def check_settings(s: EncodeSettings, dst: str | os.PathLike) -> None:
    """SettingsError unless `s` opens an encoder whose output `dst`'s container can hold.

    Cheap (a 64x48 encoder is opened, nothing is written), so a run refuses a
    bad codec, preset or pixel format before loading the model.
    """
    fmt = output_format(dst)
    try:
        codec = av.Codec(s.codec, "w")
    except Exception:
        raise SettingsError(f"unknown video encoder {s.codec!r} (try libx264, libx265, ffv1)") from None
    if codec.type != "video":
        raise SettingsError(f"{s.codec!r} is not a video encoder")
    with av.open(io.BytesIO(), "w", format=fmt) as probe_out:
        supported = probe_out.supported_codecs
    if supported and codec.name not in supported and codec.canonical_name not in supported:
        raise SettingsError(f"{s.codec} cannot be stored in a {Path(dst).suffix} file; use .mkv or another codec")
    if s.preset and s.codec in PRESETS and s.preset not in PRESETS[s.codec]:
        raise SettingsError(f"unknown preset {s.preset!r} for {s.codec} (one of {', '.join(PRESETS[s.codec])})")
    pix_fmt = s.pix_fmt or default_pix_fmt(s.codec)
    formats = [f.name for f in codec.video_formats or []]
    if formats and pix_fmt not in formats:
        raise SettingsError(f"{s.codec} cannot encode pixel format {pix_fmt!r} (it takes {', '.join(formats[:8])})")
    ctx = av.CodecContext.create(codec, "w")
    ctx.width, ctx.height, ctx.pix_fmt = 64, 48, pix_fmt
    ctx.time_base, ctx.framerate = Fraction(1, 25), Fraction(25)
    ctx.options = encoder_options(s)
    try:
        ctx.open()
    except av.FFmpegError as exc:
        raise SettingsError(f"{s.codec} refuses these settings ({ffmpeg_reason(exc)})") from None


def part_offset(start: float | None, origin: float, tb: Fraction) -> int:
    """The shift, in `tb` units, that makes a part starting at `start` begin at 0 (every stream alike)."""
    return int(round((start + origin) / tb)) if start else 0


class Encoder:
    """The output container: video frames in (RGB, or Y/Cb/Cr planes, + pts), other streams from
    a `carried` Carrier.

    Call `write(rgb, pts)` or `write_planes(y, cb, cr, pts)` per frame in order,
    then `close()`; `abort()` on failure closes what is open (the caller removes
    the file). `carried` (a carry.Carrier, or None for a silent film) adds its
    streams once the video stream exists and is pumped up to each frame's time.
    The stream is tagged with the input's ColourTags (matrix, range, primaries,
    transfer), and RGB frames are converted in them, so both ways of writing
    mean the same colours. `chroma_size` is the (w, h) `write_planes` wants
    its Cb/Cr in: the output format's chroma planes.
    """

    def __init__(self, dst: str | os.PathLike, info: VideoInfo, width: int, height: int,
                 settings: EncodeSettings, start: float | None = None, end: float | None = None,
                 video_title: str | None = None, carried=None):
        self.info, self.settings = info, settings
        self.start, self.end = start, end
        self.carried = carried
        self.frames = 0
        self._closed = False
        dst = Path(dst)
        check_settings(settings, dst)
        try:
            self.out = av.open(str(dst), "w", format=output_format(dst))
        except av.FFmpegError as exc:
            raise MediaError(f"{dst}: cannot create output ({ffmpeg_reason(exc)})") from None
        try:
            self._setup_video(width, height, video_title)
            if carried is not None:
                carried.attach(self.out)
        except BaseException:
            self.abort()
            raise

    def _setup_video(self, width: int, height: int, title: str | None) -> None:
        s, info = self.settings, self.info
        self.pix_fmt = s.pix_fmt or default_pix_fmt(s.codec)
        even_w, even_h = needs_even(self.pix_fmt)
        # Chroma-subsampled formats need even sizes: pad by repeating the edge pixel.
        self.pad_w = width % 2 if even_w else 0
        self.pad_h = height % 2 if even_h else 0
        # Planes are filled in the output's own format where it is 8-bit planar Y'CbCr (the luma
        # goes in bit for bit); any other (NV12, 10-bit, RGB) is converted from 4:4:4 by FFmpeg.
        self.plane_fmt = self.pix_fmt if self.pix_fmt in PLANAR_OUT else "yuv444p"
        self.size = (width + self.pad_w, height + self.pad_h)
        chroma = av.VideoFrame(*self.size, self.plane_fmt).planes[1]
        self.chroma_size = (chroma.width, chroma.height)
        vs = self.out.add_stream(s.codec, rate=info.fps)
        vs.width, vs.height = width + self.pad_w, height + self.pad_h
        vs.pix_fmt = self.pix_fmt
        # The input's own time base: each frame's pts goes through unchanged (CFR and VFR alike).
        vs.time_base = info.time_base
        vs.codec_context.time_base = info.time_base
        vs.codec_context.framerate = info.fps
        if info.sample_aspect:
            vs.codec_context.sample_aspect_ratio = info.sample_aspect
        tags = info.colour
        cc = vs.codec_context
        cc.colorspace, cc.color_range = tags.colorspace, tags.color_range
        cc.color_primaries, cc.color_trc = tags.primaries, tags.trc
        vs.options = encoder_options(s)
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

    def write(self, rgb: np.ndarray, pts: int) -> None:
        """One uint8 RGB frame (H, W, 3), converted in the input's matrix and range."""
        if self.pad_w or self.pad_h:
            rgb = np.pad(rgb, ((0, self.pad_h), (0, self.pad_w), (0, 0)), mode="edge")
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        sws = self.info.colour.sws()
        frame = frame.reformat(format=self.pix_fmt, dst_colorspace=sws["dst_colorspace"],
                               dst_color_range=sws["dst_color_range"])
        self._send(frame, pts)

    def write_planes(self, y: np.ndarray, cb: np.ndarray, cr: np.ndarray, pts: int) -> None:
        """One frame as planes: uint8 luma (H, W), goes in as it is; Cb, Cr at `chroma_size`."""
        if self.pad_w or self.pad_h:
            y = np.pad(y, ((0, self.pad_h), (0, self.pad_w)), mode="edge")
        frame = av.VideoFrame(*self.size, self.plane_fmt)
        for plane, data in zip(frame.planes, (y, cb, cr)):
            np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)[:, :plane.width] = data
        tags = self.info.colour
        frame.colorspace, frame.color_range = tags.colorspace, tags.color_range
        if self.plane_fmt != self.pix_fmt:
            frame = frame.reformat(format=self.pix_fmt, **tags.sws())
        self._send(frame, pts)

    def _send(self, frame, pts: int) -> None:
        frame.pts = pts - part_offset(self.start, self.info.start_time, self.info.time_base)
        frame.time_base = self.info.time_base
        self._encode(frame)
        self.frames += 1
        if self.carried is not None:
            self.carried.pump(float(pts * self.info.time_base) - self.info.start_time + AUDIO_LEAD)

    def _encode(self, frame) -> None:
        try:
            packets = self.vstream.encode(frame)
        except av.FFmpegError as exc:  # the encoder opens on the first frame: keep its repr from the user
            raise MediaError(f"{self.settings.codec} failed ({ffmpeg_reason(exc)})") from None
        for p in packets:
            self.out.mux(p)

    def close(self) -> None:
        """Flush the encoder, carry the rest of the other streams, finish the file."""
        if self._closed:
            return
        self._encode(None)
        if self.carried is not None:
            self.carried.finish()
        self.out.close()
        self._closed = True

    def abort(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.carried is not None:
            self.carried.close()
        out = getattr(self, "out", None)
        if out is not None:
            try:
                out.close()
            except Exception:
                pass  # closing a half-written file may fail; the caller deletes it anyway


def stream_tags(meta) -> dict[str, str]:
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


def ffmpeg_reason(exc: BaseException) -> str:
    """FFmpeg's reason, one line: its error text without the path or call PyAV repeats.

    PyAV's message is "[Errno N] Invalid data...: '/the/path'" or "Invalid argument:
    'avcodec_open2(...)' returned 22"; the user reads "Invalid data found when
    processing input" or "Invalid argument", plus FFmpeg's last logged error when
    PyAV kept one.
    """
    reason = getattr(exc, "strerror", None) or str(exc)
    log = getattr(exc, "log", None)  # (level, component, message) when PyAV kept FFmpeg's last error
    if isinstance(log, tuple) and len(log) == 3 and log[2]:
        reason = f"{reason} ({log[1]}: {one_line(str(log[2]))})"
    return one_line(reason)
