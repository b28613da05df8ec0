"""Colour a film: decode -> L tiles -> model -> merge with full-res L -> encode, overlapped.

This module owns the video run: its config (`VideoConfig`), its result
(`VideoReport`) and the three overlapping stages of `colour_video`:

1. a DataLoader worker iterates `FrameStream` (an IterableDataset over the
   decoded stream): decode, RGB -> L8 (colour.rgb_to_l), L8 -> 224 tile
   (colour.l_tile), grey detection on a few sampled frames; it yields batches of
   (full-res L planes, tiles, pts). One worker decodes: a film is one stream,
   and splitting it by time between workers would need keyframe-exact segment
   bounds to avoid decoding frames twice, so `workers` is capped at 1 (0 =
   decode in the main process, for debugging);
2. the main process runs the model on each batch (pipeline.Colouriser.predict:
   one host transfer per batch);
3. a writer thread merges a/b with each frame's own L (colour.merge_l_ab) and
   encodes/muxes it (media.Encoder), fed through a bounded queue.

Every hand-off is bounded (DataLoader prefetch, the writer queue), so memory is
flat in the film's length. The output is written to a hidden temporary name in
the output folder and renamed over the target only when complete.
"""
from __future__ import annotations

import os
import queue
import threading
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from . import colour, media
from .data import make_loader
from .media import MediaError  # noqa: F401  (re-exported: colour_video raises it)
from .pipeline import Colouriser, RunConfig


class VideoError(RuntimeError):
    """A film that cannot be coloured (nothing decodes, the part is empty, the encoder fails)."""


@dataclass
class VideoConfig:
    start: float | None = None   # seconds: colour from here (previews of a part)
    end: float | None = None     # seconds: stop before this time; None = to the end
    codec: str = "libx264"       # video encoder: H.264 plays everywhere; libx265, ffv1 (archival)...
    crf: int | None = 18         # constant quality; 18 is visually lossless for x264
    preset: str | None = None    # encoder speed/size trade-off (x264/x265); None = encoder default
    pix_fmt: str | None = None   # None: yuv420p for players (ffv1: yuv444p)
    compare: bool = False        # write grey | colour side by side instead of the colour film
    overwrite: bool = False      # replace an existing output file
    queue_batches: int = 2       # model->writer queue depth in batches: bounds memory, enough to overlap
    grey_samples: int = 5        # frames sampled (spread over the film) for grey detection


@dataclass
class VideoReport:
    src: str                      # input file
    dst: str                      # output file (only exists when the run completed)
    frames_in: int = 0            # frames decoded
    frames_out: int = 0           # frames encoded (equals frames_in on success)
    frames_expected: int | None = None  # the container's count or duration x rate
    frames_lost: int = 0          # frames that did not decode (truncated or corrupt input)
    duration: float = 0.0         # output duration, seconds
    seconds: float = 0.0          # wall-clock time of the run
    fps: float = 0.0              # processing speed, frames per second
    video_fps: Fraction = Fraction(0)  # the film's nominal frame rate
    width: int = 0                # output frame width
    height: int = 0               # output frame height
    output_bytes: int = 0         # size of the output file
    was_greyscale: bool | None = None  # input judged grey on sampled frames (None: not sampled)
    truncated: bool = False       # input ended early or failed to decode: the CLI exits non-zero
    decode_error: str | None = None     # FFmpeg's reason when decoding stopped early
    audio_copied: int = 0         # audio streams copied packet for packet
    audio_encoded: int = 0        # audio streams re-encoded to AAC (codec not allowed in the container)
    subtitles: int = 0            # subtitle streams carried
    warnings: list[str] = field(default_factory=list)  # things left out (e.g. a subtitle codec)

    @property
    def ok(self) -> bool:
        return not self.truncated and self.frames_out == self.frames_in > 0


ProgressFn = Callable[[int, "int | None"], None]


def default_output(src: str | os.PathLike, folder: str | os.PathLike | None = None,
                   compare: bool = False) -> Path:
    """`<stem>.colour.mp4` (or `.compare.mp4`) beside the input or in `folder`."""
    src = Path(src)
    name = f"{src.stem}.{'compare' if compare else 'colour'}.mp4"
    return (Path(folder) if folder is not None else src.parent) / name


def temp_path(dst: str | os.PathLike) -> Path:
    """Hidden name beside `dst` with the same extension, so the muxer picks the same container."""
    dst = Path(dst)
    return dst.with_name(f".{dst.name}.colourbatch-tmp{dst.suffix}")


# ------------------------------------------------------------- stage 1: decode
class FrameStream(IterableDataset):
    """Batches of decoded frames as uint8 tensors: {"l": (B,H,W), "tiles": (B,1,S,S), "pts": (B,)}.

    The last item is {"end": True, "decoded": n, "error": "..."}: decode errors
    (a truncated file) travel as data, so the main process still encodes what
    decoded and reports the loss, instead of the worker dying.
    """

    def __init__(self, path: str, batch: int, start: float | None = None, end: float | None = None,
                 size: tuple[int, int] | None = None, sample_at: frozenset[int] = frozenset(),
                 tile: int = colour.TILE, origin: float = 0.0):
        self.path, self.batch, self.start, self.end, self.origin = path, batch, start, end, origin
        self.size, self.sample_at, self.tile = size, sample_at, tile

    def __iter__(self):
        info = get_worker_info()
        if info is not None and info.id > 0:
            return  # one decoder per film; extra workers would duplicate frames
        dec = media.Decoder(self.path, self.start, self.end, self.size, self.origin)
        ls, tiles, pts, grey = [], [], [], []
        index = 0
        for rgb, p in dec:
            l8 = colour.rgb_to_l(rgb)
            ls.append(l8)
            tiles.append(colour.l_tile(l8, self.tile))
            pts.append(p)
            if index in self.sample_at:
                grey.append(colour.is_greyscale(rgb))
            index += 1
            if len(ls) == self.batch:
                yield _batch(ls, tiles, pts, grey)
                ls, tiles, pts, grey = [], [], [], []
        if ls:
            yield _batch(ls, tiles, pts, grey)
        elif grey:
            yield _batch([], [], [], grey)
        yield {"end": True, "decoded": dec.frames, "error": dec.error or ""}


def _batch(ls, tiles, pts, grey) -> dict:
    return {"l": torch.from_numpy(np.stack(ls)) if ls else torch.empty(0, dtype=torch.uint8),
            "tiles": torch.from_numpy(np.stack(tiles))[:, None] if tiles else torch.empty(0, dtype=torch.uint8),
            "pts": torch.tensor(pts, dtype=torch.int64),
            "grey": torch.tensor(grey, dtype=torch.bool)}


def sample_indices(estimate: int | None, k: int) -> frozenset[int]:
    """k frame indices spread over the film (the first k-ish when its length is unknown)."""
    if k <= 0:
        return frozenset()
    if not estimate:
        return frozenset([0, 12, 50, 200, 1000][:k])
    return frozenset(int(i) for i in np.linspace(0, max(0, estimate - 1), k).round())


# ------------------------------------------------------------- stage 3: write
class _Writer(threading.Thread):
    """Merges a/b with L and encodes, off the main thread (cv2 and the encoders release the GIL)."""

    def __init__(self, enc: media.Encoder, compare: bool, depth: int,
                 on_frames: Callable[[int], None]):
        super().__init__(name="colourbatch-writer", daemon=True)
        self.enc, self.compare, self.on_frames = enc, compare, on_frames
        self.q: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self.error: BaseException | None = None
        self.stop = threading.Event()
        self.first_pts: int | None = None
        self.last_pts: int | None = None

    def run(self) -> None:
        try:
            while True:
                item = self.q.get()
                if item is None or self.stop.is_set():
                    return
                l, ab, pts = item
                for i in range(len(l)):
                    rgb = colour.merge_l_ab(l[i], ab[i])
                    if self.compare:
                        rgb = np.hstack([colour.grey_to_rgb(l[i]), rgb])
                    self.enc.write(rgb, int(pts[i]))
                    if self.first_pts is None:
                        self.first_pts = int(pts[i])
                    self.last_pts = int(pts[i])
                    if self.stop.is_set():
                        return
                self.on_frames(len(l))
        except BaseException as exc:  # handed to the main thread, which raises it
            self.error = exc

    def put(self, item) -> None:
        # Never block forever on a writer that died: re-check it every 0.2 s.
        while True:
            if self.error is not None or not self.is_alive():
                raise self.error or VideoError("the writer stopped unexpectedly")
            try:
                self.q.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def cancel(self) -> None:
        self.stop.set()
        try:
            while True:
                self.q.get_nowait()
        except queue.Empty:
            pass
        try:
            self.q.put_nowait(None)
        except queue.Full:
            pass
        self.join(timeout=30)


# --------------------------------------------------------------------- driver
def colour_video(src: str | os.PathLike, dst: str | os.PathLike, run: RunConfig,
                 vcfg: VideoConfig | None = None, on_progress: ProgressFn | None = None,
                 colouriser: Colouriser | None = None) -> VideoReport:
    """Colour `src` into `dst`; returns a report (truncated input: report.truncated, output kept).

    Raises MediaError (bad input/output paths, unreadable or unsupported
    files), VideoError (nothing to colour) or pipeline.PipelineError (weights,
    device). Pass `colouriser` to reuse one loaded model across several films.
    """
    vcfg = vcfg or VideoConfig()
    t0 = time.perf_counter()
    start = vcfg.start if vcfg.start and vcfg.start > 0 else None
    end = vcfg.end
    if end is not None and end <= (start or 0):
        raise VideoError(f"--end ({end:g}s) must be after --start ({start or 0:g}s)")
    info = media.probe(src)
    if start is not None and info.duration is not None and start >= info.duration:
        raise VideoError(f"{src}: --start {start:g}s is past the end of the film ({info.duration:.2f}s)")
    dst = media.check_output_path(dst, src, vcfg.overwrite)
    colouriser = colouriser or Colouriser(run)

    estimate = info.frame_estimate(start, end)
    report = VideoReport(str(src), str(dst), frames_expected=estimate, video_fps=info.fps)
    width = info.width * (2 if vcfg.compare else 1)
    settings = media.EncodeSettings(vcfg.codec, vcfg.crf, vcfg.preset, vcfg.pix_fmt)
    tmp = temp_path(dst)
    done = [0]

    def frames_written(n: int) -> None:
        done[0] += n
        if on_progress is not None:
            on_progress(done[0], estimate)

    enc = writer = it = None
    end_item: dict = {}
    greys: list[bool] = []
    try:
        workers = min(run.workers, 1)
        stream = FrameStream(info.path, run.batch_size, start, end, (info.width, info.height),
                             sample_indices(estimate, vcfg.grey_samples), origin=info.start_time)
        # Two decoded batches ahead: enough to overlap, and full-resolution L planes are big.
        loader = make_loader(stream, batch_size=None, workers=workers, prefetch=2)
        # Fork the decode worker first, before this process holds an open output or a thread.
        it = iter(loader)
        enc = media.Encoder(tmp, info, width, info.height, settings, start, end,
                            video_title="colourbatch compare: grey | colour" if vcfg.compare else None)
        writer = _Writer(enc, vcfg.compare, vcfg.queue_batches, frames_written)
        writer.start()
        try:
            for item in it:
                if "end" in item:
                    end_item = item
                    break
                greys.extend(bool(g) for g in item["grey"])
                if not len(item["l"]):
                    continue
                tiles = item["tiles"]
                if colouriser.pin:
                    tiles = tiles.pin_memory()  # only the small tiles: the full-res L stays on the host
                ab = colouriser.predict(tiles)
                writer.put((item["l"].numpy(), ab, item["pts"].numpy()))
        finally:
            it = None  # shuts the decode worker down, also on Ctrl-C
        writer.put(None)
        writer.join()
        if writer.error is not None:
            raise writer.error
        report.frames_in = int(end_item.get("decoded", 0))
        if report.frames_in == 0 or enc.frames == 0:
            raise VideoError(f"{src}: no frame decoded"
                             + (f" ({end_item['error']})" if end_item.get("error") else "")
                             + (" in the requested part" if start or end else ""))
        enc.close()
        os.replace(tmp, dst)
    except BaseException:
        it = None  # an Encoder that failed to open leaves the worker to shut down here
        if writer is not None and writer.is_alive():
            writer.cancel()
        if enc is not None:
            enc.abort()
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        raise

    report.frames_out = enc.frames
    report.decode_error = end_item.get("error") or None
    # Cut short? Compare where the last frame ends with where the film (or the part) should end.
    frame_s = float(1 / info.fps)
    shortfall = 0.0
    if writer.last_pts is not None and info.duration and (end is None or end < info.duration):
        stop = info.duration if end is None else end
        shortfall = stop - (float(writer.last_pts * info.time_base) - info.start_time) - frame_s
    counted = bool(info.frames) and start is None and end is None
    # Slack: half a frame against an exact count, one frame against the stream's own duration
    # (a VFR film's last frame may outlast the average), a second against the container's
    # duration (which may be a longer audio track's).
    slack = (0.5 if counted else 1.0) * frame_s if info.duration_exact else max(1.0, 2 * frame_s)
    cut = shortfall > slack
    if counted:
        # MP4 states its exact count; an edit list may hide a few samples at the start, so only
        # a cut end or an error makes the difference a loss.
        if cut or report.decode_error:
            report.frames_lost = max(0, info.frames - report.frames_in)
    elif cut:
        report.frames_lost = round(shortfall / frame_s)
    if report.decode_error and not report.frames_lost and estimate:
        report.frames_lost = max(0, estimate - report.frames_in)
    report.truncated = bool(report.decode_error) or cut
    if writer.first_pts is not None:
        report.duration = float((writer.last_pts - writer.first_pts) * info.time_base + 1 / info.fps)
    report.seconds = time.perf_counter() - t0
    report.fps = report.frames_out / report.seconds if report.seconds > 0 else 0.0
    report.width, report.height = width, info.height
    report.output_bytes = Path(dst).stat().st_size
    report.was_greyscale = all(greys) if greys else None
    report.audio_copied, report.audio_encoded = len(enc.audio_copied), len(enc.audio_encoded)
    report.subtitles = len(enc.subtitles)
    report.warnings = list(enc.warnings)
    return report
