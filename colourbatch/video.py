"""Colour films: plan the run, then decode luma -> L tiles -> model -> chroma beside the source's luma -> encode.

This module owns the video command's library side (its settings, `VideoConfig`
with the encoder and time defaults, live in config.py): planning
(`plan_videos`: which files are films, where each output goes, and every
refusal, all before a model is loaded), running a plan with one loaded model
(`colour_videos`), its results (`VideoReport`, `VideosReport`) and the four
overlapping stages of `colour_job`:

1. a DataLoader worker iterates `FrameStream` (an IterableDataset over the
   decoded stream): decode to the luma plane (media.Decoder with the film's
   ColourTags: no RGB, no LAB), luma -> L8 (colour.yuv_to_l), L8 -> 224 tile
   (colour.l_tile), grey detection on a few sampled frames; with the model on
   a GPU also the stabiliser's optical flow between consecutive tiles
   (temporal.Linker, in a thread beside the decoding: `flows_in_decoder`); it
   yields batches of (full-res luma planes, tiles, pts[, links]). One worker
   decodes: a film is one stream, and splitting it by time between workers
   would need keyframe-exact segment bounds to avoid decoding frames twice, so
   `workers` is capped at 1 (0 = decode in the main process, for debugging);
2. the main process runs the model on each batch (pipeline.Colouriser.predict:
   one host transfer per batch; on a CPU beside x264, the batch's chunks in
   lanes, device.lanes_beside_encoder) and hands the batch to the colour stage;
3. the colour stage's thread (`_Colour`) runs temporal.Stabiliser, which holds
   the low-resolution a/b still along the motion between the L tiles,
   averaging each frame's with its shot's neighbours up to `VideoConfig.reach`
   frames either side, carrying its state from batch to batch in display
   order, and counts the scene cuts that end a shot (on a CPU it computes the
   optical flow itself). It looks ahead, so a frame's a/b are final up to
   `reach` frames later: the frames' luma planes and pts wait in a queue of
   that length (`held`). It then turns each final frame's a/b into chroma at
   the output's chroma-plane size (colour.lab_to_chroma, with L from the luma
   averaged down to that size, in the source's matrix and range; on a GPU
   host a hand-on's frames in threads, `chroma_threads`) and hands the
   source's luma plane, untouched, with that chroma to
4. the writer's thread (`_Writer`), a few frames at a time through a bounded
   queue: it only calls the encoder (media.Encoder.write_planes, with
   carry.Carrier bringing the audio and subtitles along). With a lossless
   codec the output's luma is the input's, bit for bit. --compare writes the
   luma twice, neutral chroma on the left.

Every hand-off is bounded (DataLoader prefetch, the two stages' queues), so memory is
flat in the film's length. The output is written through files.atomic_output:
it appears only when complete.

Errors (exit codes from errors.py): `VideoPlanError` and media.SettingsError
(exit 2) refuse the run as asked before anything is done; `VideoError` and
media.MediaError (exit 1) concern one film, which planning lists in
`VideoPlan.failed` so the others still run. A plan with no film left raises
`NothingToColour` (exit 2): a run that cannot start.
"""
from __future__ import annotations

import os
import queue
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from . import colour, files, media, temporal
from .carry import Carrier
from .data import make_loader
from .errors import ColourbatchError, InputError, WriteError, one_line
from .config import VideoConfig
from .device import cpu_count, lanes_beside_encoder, one_opencv_thread, threads_beside_encoder
from .pipeline import Colouriser, RunConfig, on_ray
from .shard import Shard, resolve as resolve_shard

#: Extensions a folder input is scanned for.
VIDEO_EXTS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts",
              ".m2ts", ".wmv", ".flv", ".ogv", ".3gp")
#: Output names: `<stem>.colour.mp4`, or `<stem>.compare.mp4` for --compare; folder scans skip them.
OUTPUT_TAGS = {False: "colour", True: "compare"}
OUTPUT_EXT = ".mp4"


class VideoError(InputError):
    """One film that cannot be coloured (exit 1): nothing decodes, the part is empty, its output is taken."""


class VideoPlanError(ColourbatchError):
    """The run as asked cannot start (exit 2): -o is wrong for the inputs, outputs collide, bad times."""


class NothingToColour(VideoPlanError):
    """Every input was refused while planning: nothing can start (exit 2). `failed` lists them all."""

    def __init__(self, failed: list[tuple[str, str]]):
        super().__init__(failed[0][1] if len(failed) == 1
                         else f"none of the {len(failed)} inputs can be coloured")
        self.failed = failed


@dataclass
class VideoReport:
    src: str                      # input file
    dst: str                      # output file (only exists when the run completed)
    frames_in: int = 0            # frames decoded
    frames_out: int = 0           # frames encoded (equals frames_in on success)
    frames_expected: int | None = None  # the container's count or duration x rate
    frames_lost: int = 0          # frames that did not decode (truncated or corrupt input)
    frames_dropped: int = 0       # frames left out for a timestamp another frame holds (media.Decoder)
    cuts: int = 0                 # scene cuts found (the colour stabiliser starts afresh at each)
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


# ------------------------------------------------------------------ planning
@dataclass
class VideoJob:
    src: Path                  # the input film
    dst: Path                  # its output file
    info: media.VideoInfo      # the input, probed (proves it decodes)
    make_folder: bool = False  # the output folder is new: the run creates it when it writes


@dataclass
class VideoPlan:
    jobs: list[VideoJob] = field(default_factory=list)             # films to colour, in order
    failed: list[tuple[str, str]] = field(default_factory=list)    # (input, one-line reason naming it)
    skipped: list[tuple[str, str]] = field(default_factory=list)   # (input, its output): done earlier
    notes: list[str] = field(default_factory=list)                 # what was left aside, and why


def default_output(src: str | os.PathLike, folder: str | os.PathLike | None = None,
                   compare: bool = False) -> Path:
    """`<stem>.colour.mp4` (or `.compare.mp4`) beside the input or in `folder`."""
    src = Path(src)
    return (Path(folder) if folder is not None else src.parent) / f"{src.stem}.{OUTPUT_TAGS[compare]}{OUTPUT_EXT}"


def find_videos(folder: str | os.PathLike, plan: VideoPlan | None = None) -> list[Path]:
    """Videos under `folder`, recursively, in sorted depth-first order.

    Hidden files and folders (our temporaries) are passed over; so are our own
    outputs (`*.colour.mp4`, `*.compare.mp4`, which sit beside their inputs by
    default), folder symlinks (not followed: they may loop) and, with `plan`,
    each is said in plan.notes; a film name that is not a regular file (a
    FIFO, a device) and an unreadable folder go in plan.failed.
    """
    tags = tuple(f".{t}" for t in OUTPUT_TAGS.values())
    plan = plan if plan is not None else VideoPlan()
    walked = files.walk(folder)
    plan.failed += [(str(d), f"{d}: {why}") for d, why in walked.unreadable]
    plan.notes += [f"{d}: folder symlink not followed" for d in walked.linked_folders]
    found, ours = [], 0
    for p in walked.files:
        if p.suffix.lower() not in VIDEO_EXTS:
            continue
        if p.stem.endswith(tags):
            ours += 1
        elif not p.is_file():
            plan.failed.append((str(p), f"{p}: not a regular file (a FIFO, device or broken link)"))
        else:
            found.append(p)
    if ours:
        plan.notes.append(f"{folder}: {ours} file(s) named like colourbatch outputs (*.colour.mp4, "
                          "*.compare.mp4) passed over")
    return found


def plan_videos(inputs: Sequence[str | os.PathLike], output: str | os.PathLike | None,
                cfg: VideoConfig, shard: Shard | None = None) -> VideoPlan:
    """Every film to colour with its output, or why not; loads no model and creates nothing.

    `output` is None (each output beside its input), a file (one input only)
    or a folder (several inputs, a folder input, an existing folder, or a path
    ending in '/'); a new output folder is made by the run when it writes.
    Raises VideoPlanError/SettingsError (exit 2) for the run as a whole: -o a
    file with several inputs, a missing or read-only output folder, an output
    that is an input, two inputs mapping to one output, encoder settings no
    film could use; NothingToColour (exit 2) when no film is left. One film's
    problem (not a film, a still image...) goes in `failed`; a film whose
    output exists is done (outputs appear only when complete) and goes in
    `skipped`, unless cfg.overwrite.
    With `shard`, only the films that shard owns (by their path relative to
    the folder they were found in) are probed and planned; a shard left with
    no film is an empty plan, not an error.
    """
    if not inputs:
        raise VideoPlanError("no INPUT given")
    plan = VideoPlan()
    sources: list[Path] = []
    keys: list[str] = []  # each film's path relative to its input: what sharding hashes and -o mirrors
    for raw in inputs:
        p = Path(raw)
        if not p.is_dir():
            sources.append(p)  # a missing or bad file is refused with the others below
            keys.append(p.name)
            continue
        found = find_videos(p, plan)
        if not found and not any(src == str(p) for src, _ in plan.failed):
            plan.failed.append((str(p), f"{p}: folder holds no video files ({' '.join(VIDEO_EXTS)})"))
        sources.extend(found)
        keys.extend(f.relative_to(p).as_posix() for f in found)
    many = len(sources) > 1 or any(Path(r).is_dir() for r in inputs)
    folder, make_folder, out_file = _output_folder(output, many)
    # A folder's sub-folders are mirrored under -o, as pages mirrors them.
    dsts = [out_file or default_output(src, folder / Path(key).parent if folder else None, cfg.compare)
            for src, key in zip(sources, keys)]
    _check_collisions(sources, dsts)
    for suffix in sorted({d.suffix.lower() for d in dsts}):
        media.check_settings(cfg, next(d for d in dsts if d.suffix.lower() == suffix))
    if shard is not None:
        mine = sum(shard.owns(key) for key in keys)
        plan.notes.append(f"shard {shard}: {mine} of {len(keys)} films are this shard's")
    for src, dst, key in zip(sources, dsts, keys):
        if shard is not None and not shard.owns(key):
            continue  # another shard's film: not even probed
        if (dst.exists() or dst.is_symlink()) and not cfg.overwrite and not dst.is_dir():
            # Outputs appear only when complete (files.atomic_output): one that exists is done,
            # so a re-run (of a shard, after a kill) finishes only what is missing.
            plan.skipped.append((str(src), str(dst)))
            continue
        try:
            plan.jobs.append(VideoJob(src, dst, _check_film(src, dst, cfg),
                                      make_folder or not dst.parent.exists()))
        except InputError as exc:
            plan.failed.append((str(src), str(exc)))
    if not plan.jobs and (plan.failed or (shard is None and not plan.skipped)):
        raise NothingToColour(plan.failed)
    return plan


def _output_folder(output: str | os.PathLike | None, many: bool) -> tuple[Path | None, bool, Path | None]:
    """(folder for default names or None, whether the run must create it, the one output file or None)."""
    if output is None:
        return None, False, None
    out = Path(output)
    if many or out.is_dir() or str(output).endswith(("/", os.sep)):
        if out.exists() and not out.is_dir():
            raise VideoPlanError(f"{out}: -o must be a folder" + (" with several inputs" if many else ""))
        if out.is_dir():
            _check_writable(out)
            return out, False, None
        _check_writable(out.absolute().parent)
        return out, True, None
    _check_writable(out.absolute().parent)
    return None, False, out


def _check_writable(folder: Path) -> None:
    if not folder.is_dir():
        raise VideoPlanError(f"{folder}: output folder does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise VideoPlanError(f"{folder}: output folder is not writable")


def _check_collisions(sources: list[Path], dsts: list[Path]) -> None:
    """VideoPlanError when an output is an input, or two inputs would write one output."""
    inputs = {files.path_key(s): s for s in sources}
    seen: dict[Path, Path] = {}
    for src, dst in zip(sources, dsts):
        key = files.path_key(dst)
        if key in inputs or any(_same_file(dst, s) for s in sources):
            raise VideoPlanError(f"{dst}: output is the input {inputs.get(key, src)}; choose another -o")
        if key in seen:
            raise VideoPlanError(f"{dst}: both {seen[key].name} and {src.name} would be written here; "
                                 f"colour them in separate runs or into separate folders")
        seen[key] = src


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False  # one of them does not exist: not the same file


def _check_film(src: Path, dst: Path, cfg: VideoConfig) -> media.VideoInfo:
    """The probed input, or the InputError that refuses this one film (the input's fault named first)."""
    info = media.probe(src)
    if info.still:
        raise VideoError(f"{src}: a still image, not a film; colour it with `colourbatch pages`")
    if cfg.start and info.duration is not None and cfg.start >= info.duration:
        raise VideoError(f"{src}: --start {cfg.start:g}s is past the end of the film ({info.duration:.2f}s)")
    if dst.is_dir():
        raise VideoError(f"{dst}: output is a folder; give a file name")
    if (dst.exists() or dst.is_symlink()) and not cfg.overwrite:
        raise VideoError(f"{dst}: exists (pass --overwrite to replace it)")
    parent = dst.absolute().parent
    if parent.is_dir() and not os.access(parent, os.W_OK | os.X_OK):  # beside an input in a read-only folder
        raise VideoError(f"{dst.parent}: output folder is not writable")
    return info


# ------------------------------------------------------------- stage 1: decode
class FrameStream(IterableDataset):
    """Batches of decoded frames as tensors: {"y": (B,H,W) uint8 luma, "tiles": (B,1,S,S) uint8 L, "pts": (B,)},
    with `links` also each frame's temporal.Link to the one before it (the arrays
    temporal.LINK_ARRAYS names): the stabiliser's optical flow, computed here in the decode
    worker beside the thread that stabilises.

    The last item is {"end": True, "decoded": n, "error": "..."}: decode errors
    (a truncated file) travel as data, so the main process still encodes what
    decoded and reports the loss, instead of the worker dying.
    """

    def __init__(self, path: str, batch: int, start: float | None = None, end: float | None = None,
                 size: tuple[int, int] | None = None, sample_at: frozenset[int] = frozenset(),
                 tile: int = colour.TILE, origin: float = 0.0, tags: media.ColourTags | None = None,
                 links: bool = False):
        self.path, self.batch, self.start, self.end, self.origin = path, batch, start, end, origin
        self.size, self.sample_at, self.tile, self.links = size, sample_at, tile, links
        self.tags = tags or media.SD_TAGS

    def __iter__(self):
        info = get_worker_info()
        if info is not None and info.id > 0:
            return  # one decoder per film; extra workers would duplicate frames
        dec = media.Decoder(self.path, self.start, self.end, self.size, self.origin, self.tags)
        # The flows in a thread of their own beside the decoding (DIS and FFmpeg release the
        # GIL), one frame after another: each Link needs the tile before it.
        linker, flows = (temporal.Linker(), ThreadPoolExecutor(1, "colourbatch-flow")) if self.links else (None, None)
        ls, tiles, pts, grey, links = [], [], [], [], []
        index = 0
        try:
            for pic, p in dec:
                ls.append(pic.y)
                tiles.append(colour.l_tile(colour.yuv_to_l(pic.y, self.tags.full_range), self.tile))
                if flows is not None:
                    links.append(flows.submit(linker.add, tiles[-1]))
                pts.append(p)
                if index in self.sample_at:
                    grey.append(colour.is_greyscale(pic.rgb()))
                index += 1
                if len(ls) == self.batch:
                    yield _batch(ls, tiles, pts, grey, [f.result() for f in links])
                    ls, tiles, pts, grey, links = [], [], [], [], []
            if ls:
                yield _batch(ls, tiles, pts, grey, [f.result() for f in links])
            elif grey:
                yield _batch([], [], [], grey, [])
        finally:
            if flows is not None:
                flows.shutdown(cancel_futures=True)
        yield {"end": True, "decoded": dec.frames, "dropped": dec.dropped, "error": dec.error or "",
               "reached_end": dec.reached_end}


def _batch(ls, tiles, pts, grey, links) -> dict:
    out = {"y": torch.from_numpy(np.stack(ls)) if ls else torch.empty(0, dtype=torch.uint8),
           "tiles": torch.from_numpy(np.stack(tiles))[:, None] if tiles else torch.empty(0, dtype=torch.uint8),
           "pts": torch.tensor(pts, dtype=torch.int64),
           "grey": torch.tensor(grey, dtype=torch.bool)}
    if links:
        out.update((k, torch.from_numpy(v)) for k, v in temporal.pack_links(links).items())
    return out


def _links(item: dict) -> list[temporal.Link | None] | None:
    """A batch's Links, when the decode worker computed them (FrameStream's `links`)."""
    if "linked" not in item:
        return None
    return temporal.unpack_links({k: item[k].numpy() for k in temporal.LINK_ARRAYS})


def flows_in_decoder(device: torch.device, stabiliser: temporal.Stabiliser) -> bool:
    """Whether the decode worker computes the stabiliser's flows (FrameStream's `links`).

    With the model on an accelerator the colour stage's thread and x264 set a film's pace
    and the CPU has cores to spare: the flows, half the stabiliser's cost, move out of that
    thread into the decode worker's process. On a CPU every core is busy already, and the
    decode worker, one process beside torch's and x264's threads, then falls behind the model
    now and then: slower on 2 cores (docs/speed.md, "On a GPU host").
    There the colour stage computes them as it stabilises."""
    return stabiliser.smooths and device.type != "cpu"


def chroma_threads(device: torch.device) -> int:
    """Threads the colour stage turns a hand-on's a/b into chroma in (`_Colour`).

    With the model on an accelerator, on a film x264 finds easy, the colour stage is the
    slowest step and the CPU has cores to spare: up to HAND_ON frames at once, one thread for
    every 4 cores (the cores x264 and the decode worker leave). On a CPU every core is busy
    already: one, the colour stage's own."""
    if device.type == "cpu":
        return 1
    return min(HAND_ON, max(1, cpu_count() // 4))


def sample_indices(estimate: int | None, k: int) -> frozenset[int]:
    """k frame indices spread over the film (the first k-ish when its length is unknown)."""
    if k <= 0:
        return frozenset()
    if not estimate:
        return frozenset([0, 12, 50, 200, 1000][:k])
    return frozenset(int(i) for i in np.linspace(0, max(0, estimate - 1), k).round())


# ------------------------------------------------- stages 3 and 4: colour, write
class _Stage(threading.Thread):
    """A step after the model in a thread of its own (cv2, numpy's loops and the encoder release
    the GIL), fed through a bounded queue, while the main thread runs the model on the next
    batch. `handle` takes one item; None ends the stream (`finish`). An error stops the stage
    and is raised to whoever feeds it next: a dead stage ends the run instead of hanging it."""

    def __init__(self, name: str, depth: int):
        super().__init__(name=name, daemon=True)
        self.q: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self.error: BaseException | None = None
        self.stop = threading.Event()

    def handle(self, item) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        """The stream ended: hand on whatever is still held."""

    def run(self) -> None:
        try:
            while True:
                item = self.q.get()
                if self.stop.is_set():
                    return
                if item is None:
                    self.finish()
                    return
                self.handle(item)
        except BaseException as exc:  # handed to the feeding thread, which raises it
            self.error = exc

    def put(self, item) -> None:
        # Never block forever on a stage that died: re-check it every 0.2 s.
        while True:
            if self.error is not None or not self.is_alive():
                raise self.error or VideoError(f"{self.name} stopped unexpectedly")
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


#: Frames the colour stage hands the writer at a time.
HAND_ON = 4


class _Colour(_Stage):
    """Stabilises the model's a/b (temporal.Stabiliser), turns each final frame's a/b into chroma
    beside its luma, and hands the planes with the frame's timestamp to the writer. Its own
    thread beside the writer's: on a GPU these steps and x264 are a film's slowest, and in one
    thread they added up (benchmarks/RESULTS-cuda.md). On a GPU host it also makes a hand-on's
    chroma in threads (`chroma_threads`)."""

    def __init__(self, stabiliser: temporal.Stabiliser, writer: "_Writer", compare: bool, depth: int,
                 threads: int = 1):
        super().__init__("the colour stage", depth)
        self.stabiliser, self.writer, self.compare = stabiliser, writer, compare
        # A hand-on's frames' chroma at once (`chroma_threads`; OpenCV and numpy's loops release
        # the GIL); None: one after another, in this thread.
        self.pool = ThreadPoolExecutor(threads, "colourbatch-chroma") if threads > 1 else None
        # (luma, pts) of the frames the stabiliser still holds (it looks ahead): its reach in
        # frames. Each luma is a view of its batch's array, which stays alive until its last
        # frame is encoded: at most reach + 2 batches' luma here, and one more batch's for the
        # frames handed on and not yet written (at most 3 HAND_ON).
        self.held: deque[tuple[np.ndarray, int]] = deque()

    def run(self) -> None:
        try:
            super().run()
        finally:
            if self.pool is not None:
                self.pool.shutdown(cancel_futures=True)

    def handle(self, item) -> None:
        tiles, ys, ab, pts, links = item
        self.held.extend(zip(ys, pts))
        self.hand_on(self.stabiliser.feed(tiles, ab, links))

    def finish(self) -> None:
        self.hand_on(self.stabiliser.finish())  # every frame still held is final now
        self.writer.put(None)

    def hand_on(self, ab: np.ndarray) -> None:
        """The oldest len(ab) frames held are final: their planes to the writer, HAND_ON frames
        at a time (the writer starts on a batch's first frames while the rest are made, and
        the planes in flight do not grow with the batch size)."""
        for start in range(0, len(ab), HAND_ON):
            if self.stop.is_set():  # cancelled: the run is ending, hand on nothing more
                return
            frames = [self.held.popleft() for _ in ab[start:start + HAND_ON]]
            ys, pts = [y for y, _ in frames], [p for _, p in frames]
            made = (map if self.pool is None else self.pool.map)(self.planes, ys, ab[start:start + HAND_ON])
            self.writer.put([(*planes, p) for planes, p in zip(made, pts)])

    def planes(self, y: np.ndarray, ab: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(luma, Cb, Cr) of one output frame: the source's luma, chroma from `ab` at the chroma size."""
        enc = self.writer.enc
        tags, (cw, ch) = enc.info.colour, enc.chroma_size
        # With --compare the left half is the grey source (neutral chroma) and the right the colour.
        grey_w = cw // 2 if self.compare else 0
        cb, cr = colour.lab_to_chroma(y, ab, tags.matrix, tags.full_range, (cw - grey_w, ch))
        if self.compare:
            neutral = np.full((ch, grey_w), int(colour.AB_OFFSET), np.uint8)
            y, cb, cr = np.hstack([y, y]), np.hstack([neutral, cb]), np.hstack([neutral, cr])
        return y, cb, cr


class _Writer(_Stage):
    """Encodes each frame's planes (x264 works in frame threads of its own; this call blocks
    while they are all busy)."""

    def __init__(self, enc: media.Encoder, depth: int, on_frames: Callable[[int], None]):
        super().__init__("the writer", depth)
        self.enc, self.on_frames = enc, on_frames
        self.first_pts: int | None = None
        self.last_pts: int | None = None

    def handle(self, frames) -> None:
        for y, cb, cr, pts in frames:
            self.enc.write_planes(y, cb, cr, int(pts))
            if self.first_pts is None:
                self.first_pts = int(pts)
            self.last_pts = int(pts)
            if self.stop.is_set():
                return
        self.on_frames(len(frames))


# --------------------------------------------------------------------- driver
def film_engine(run: RunConfig) -> Colouriser:
    """The model a film run colours with: torch on the cores x264 leaves it, in lanes that take
    the cores it leaves idle (one home for that choice, in this process and in each Ray worker)."""
    threads = threads_beside_encoder()
    return Colouriser(run, threads=threads, lanes=lanes_beside_encoder(threads))


def colour_video(src: str | os.PathLike, dst: str | os.PathLike, run: RunConfig,
                 vcfg: VideoConfig | None = None, on_progress: ProgressFn | None = None,
                 colouriser: Colouriser | None = None) -> VideoReport:
    """Colour one film `src` into `dst` (a file): plans it as `plan_videos` would, then `colour_job`.

    The same refusals, raised instead of listed: VideoPlanError/SettingsError
    (exit 2) before anything is read, MediaError/VideoError for the film.
    """
    vcfg = vcfg or VideoConfig()
    src, dst = Path(src), Path(dst)
    if dst.is_dir():
        raise VideoPlanError(f"{dst}: output is a folder; give a file name")
    _check_writable(dst.absolute().parent)
    _check_collisions([src], [dst])
    media.check_settings(vcfg, dst)
    return colour_job(VideoJob(src, dst, _check_film(src, dst, vcfg)), run, vcfg, on_progress, colouriser)


def colour_job(job: VideoJob, run: RunConfig, vcfg: VideoConfig | None = None,
               on_progress: ProgressFn | None = None, colouriser: Colouriser | None = None) -> VideoReport:
    """Colour one planned film; returns a report (truncated input: report.truncated, output kept).

    Raises VideoError (its output appeared since planning, nothing to colour),
    MediaError (the encoder failed), files.WriteError (the output could not be
    written) or CheckpointError/DeviceError/PipelineError (weights, device: exit 2). Pass `colouriser` to
    reuse one loaded model across several films.
    """
    vcfg = vcfg or VideoConfig()
    t0 = time.perf_counter()
    src, dst, info = job.src, job.dst, job.info
    start = vcfg.start if vcfg.start and vcfg.start > 0 else None
    end = vcfg.stop
    if dst.exists() and not vcfg.overwrite:  # written by someone else since the plan was made
        raise VideoError(f"{dst}: exists (pass --overwrite to replace it)")
    # torch on half the cores: its OpenMP threads spin and would take CPU from x264.
    colouriser = colouriser or film_engine(run)

    estimate = info.frame_estimate(start, end)
    report = VideoReport(str(src), str(dst), frames_expected=estimate, video_fps=info.fps)
    width = info.width * (2 if vcfg.compare else 1)
    done = [0]

    def frames_written(n: int) -> None:
        done[0] += n
        if on_progress is not None:
            on_progress(done[0], estimate)

    enc = writer = colouring = None
    end_item: dict = {}
    greys: list[bool] = []
    carried = Carrier(info, start, end)
    files.remove_stale_temps([dst])  # what a killed earlier run of this film left
    # A fresh state per film and per part: --start begins a shot of its own.
    stabiliser = temporal.Stabiliser(vcfg.stability, vcfg.reach)
    # OpenCV on one thread for the film, the decode worker too (set before it forks): its
    # pool's threads spin between calls, and on the stabiliser's small planes they gain no
    # time (bikes 720p, 2 cores: 5.0 ms a frame either way, CPU 5.0 on one thread against 9.8
    # on two), while x264, the decoder and torch's lanes already take every core.
    with one_opencv_thread(), files.atomic_output(dst, make_parents=job.make_folder) as tmp:
        try:
            workers = min(run.workers, 1)
            stream = FrameStream(info.path, run.batch_size, start, end, (info.width, info.height),
                                 sample_indices(estimate, vcfg.grey_samples), origin=info.start_time,
                                 tags=info.colour, links=flows_in_decoder(colouriser.device, stabiliser))
            # Two decoded batches ahead: enough to overlap, and full-resolution luma planes are big.
            loader = make_loader(stream, batch_size=None, workers=workers, prefetch=2)
            # Fork the decode worker first, before this process holds an open output or a thread.
            it = iter(loader)
            enc = media.Encoder(tmp, info, width, info.height, vcfg, start, end,
                                video_title="colourbatch compare: grey | colour" if vcfg.compare else None,
                                carried=carried)
            # Two hand-ons of final frames wait for the writer: enough for the two threads to
            # overlap, and full-resolution planes are big.
            writer = _Writer(enc, 2, frames_written)
            colouring = _Colour(stabiliser, writer, vcfg.compare, vcfg.queue_batches,
                                chroma_threads(colouriser.device))
            writer.start()
            colouring.start()
            try:
                for item in it:
                    if "end" in item:
                        end_item = item
                        break
                    greys.extend(bool(g) for g in item["grey"])
                    if not len(item["y"]):
                        continue
                    tiles = item["tiles"]
                    if colouriser.pin:
                        tiles = tiles.pin_memory()  # only the small tiles: the full-res luma stays on the host
                    colouring.put((item["tiles"][:, 0].numpy(), item["y"].numpy(), colouriser.predict(tiles),
                                   item["pts"].numpy(), _links(item)))
            finally:
                it = None  # shuts the decode worker down, also on Ctrl-C
            colouring.put(None)
            colouring.join()
            if colouring.error is not None:
                raise colouring.error  # the writer's own, or the colour stage's (the writer is cancelled below)
            writer.join()
            if writer.error is not None:
                raise writer.error
            report.frames_in = int(end_item.get("decoded", 0))
            if report.frames_in == 0 or enc.frames == 0:
                raise VideoError(f"{src}: no frame decoded"
                                 + (f" ({end_item['error']})" if end_item.get("error") else "")
                                 + (" in the requested part" if start or end else ""))
            enc.close()
        except BaseException:
            it = None  # an Encoder that failed to open leaves the worker to shut down here
            stages = [stage for stage in (colouring, writer) if stage is not None]
            for stage in stages:  # both told first: neither starts new work while the other stops
                stage.stop.set()
            for stage in stages:
                if stage.is_alive():
                    stage.cancel()
            if enc is not None:
                enc.abort()
            else:
                carried.close()
            raise  # atomic_output removes the temporary file

    report.frames_out = enc.frames
    report.decode_error = end_item.get("error") or None
    report.frames_dropped = int(end_item.get("dropped", 0))
    report.cuts = stabiliser.cuts
    # Cut short? Compare where the last frame ends with where the film (or the part) should end.
    frame_s = float(1 / info.fps)
    shortfall = 0.0
    # A part whose end was reached is whole, however long a VFR film's last frame before it lasts.
    if writer.last_pts is not None and info.duration and (end is None or end < info.duration) \
            and not end_item.get("reached_end"):
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
    report.audio_copied, report.audio_encoded = len(carried.audio_copied), len(carried.audio_encoded)
    report.subtitles = len(carried.subtitles)
    report.warnings = list(carried.warnings)
    return report


# ------------------------------------------------------------- many films
@dataclass
class VideosReport:
    """What happened to every film of a plan."""

    reports: list[VideoReport] = field(default_factory=list)  # films written (truncated ones too)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (input, reason naming it): refused by the plan
    failed: list[tuple[str, str]] = field(default_factory=list)   # (input, reason naming it): failed while colouring
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (input, output) done in an earlier run
    notes: list[str] = field(default_factory=list)                # what the plan left aside, and why

    @property
    def ok(self) -> bool:
        return not self.refused and not self.failed

    @property
    def films(self) -> int:
        return len(self.reports) + len(self.refused) + len(self.failed) - sum(r.truncated for r in self.reports)


def truncation_reason(report: VideoReport) -> str:
    """Why a film that came out short counts as failed, in one line."""
    return (f"input truncated: {report.frames_lost} frame(s) lost"
            + (f" ({report.decode_error})" if report.decode_error else "")
            + f"; the {report.frames_out} that decoded are in {report.dst}")


def _naming(src: str | os.PathLike, reason: BaseException | str) -> str:
    """A film's failure as one line that names the film (once: some reasons name it already)."""
    text = one_line(reason)
    return text if text.startswith(str(src)) else f"{src}: {text}"


def colour_films(inputs: Sequence[str | os.PathLike], output: str | os.PathLike | None, vcfg: VideoConfig,
                 run: RunConfig, on_event: Callable[[str, dict], None] | None = None) -> VideosReport:
    """`colourbatch video`: plan every input (this shard's, from run.shard or the scheduler's
    environment), then colour the plan here or on Ray (run.ray, run.ray_address).

    Refusals found by the plan leave as ("refused", {"source", "reason"}) events
    before any model loads, then colour_videos' events follow. Raises what
    plan_videos raises for a run that cannot start (exit 2).
    """
    emit = on_event or (lambda kind, info: None)
    plan = plan_videos(inputs, output, vcfg, resolve_shard(run.shard))
    for source, reason in plan.failed:
        emit("refused", {"source": source, "reason": reason})
    return colour_videos(plan, run, vcfg, on_event)


def colour_videos(plan: VideoPlan, run: RunConfig, vcfg: VideoConfig,
                  on_event: Callable[[str, dict], None] | None = None,
                  colouriser: Colouriser | None = None) -> VideosReport:
    """Colour every film of `plan` with one loaded model; one film's failure never stops the others.

    Events: ("engine", describe()), ("film", {"job", "index", "total"}),
    ("progress", {"done", "total"}), ("film_done", {"report"}),
    ("film_failed", {"source", "reason"}); on Ray ("films", {"total"}) first
    and no per-frame events (each film runs on a worker). Errors that concern every film
    (weights, device: exit 2) are raised; a film's own (InputError,
    WriteError: exit 1) is listed and the next film goes on.
    """
    emit = on_event or (lambda kind, info: None)
    out = VideosReport(refused=list(plan.failed), skipped=list(plan.skipped), notes=list(plan.notes))
    if run.ray or run.ray_address:
        return _on_ray(plan, run, vcfg, emit, out)
    for index, job in enumerate(plan.jobs):
        if colouriser is None:
            # Only once a film is certain to be coloured; torch beside x264 on half the cores.
            colouriser = film_engine(run)
            emit("engine", colouriser.describe())
        emit("film", {"job": job, "index": index, "total": len(plan.jobs)})
        try:
            report = colour_job(job, run, vcfg, colouriser=colouriser,
                                on_progress=lambda done, total: emit("progress", {"done": done, "total": total}))
        except (InputError, WriteError) as exc:
            out.failed.append((str(job.src), _naming(job.src, exc)))
            emit("film_failed", {"source": str(job.src), "reason": str(exc)})
            continue
        out.reports.append(report)
        if report.truncated:
            out.failed.append((str(job.src), _naming(job.src, truncation_reason(report))))
        emit("film_done", {"report": report})
    return out


def _colour_film(run: RunConfig, vcfg: VideoConfig, job: VideoJob, engine: Colouriser) -> VideoReport:
    return colour_job(job, run, vcfg, colouriser=engine)


def _on_ray(plan: VideoPlan, run: RunConfig, vcfg: VideoConfig, emit, out: VideosReport) -> VideosReport:
    """Each film of `plan` as a task on a Ray cluster (pipeline.on_ray); one film per task
    keeps its audio and the order of its frames whole."""
    def on_result(key: str, report: VideoReport) -> None:
        out.reports.append(report)
        if report.truncated:
            out.failed.append((key, _naming(key, truncation_reason(report))))
        emit("film_done", {"report": report})

    def on_failure(key: str, reason: str) -> None:
        out.failed.append((key, _naming(key, reason)))
        emit("film_failed", {"source": key, "reason": reason})

    emit("films", {"total": len(plan.jobs)})  # on a cluster, progress is counted in films
    on_ray([(str(job.src), job) for job in plan.jobs], run, partial(_colour_film, run, vcfg),
           on_result, on_failure, build=partial(film_engine, run))
    return out
