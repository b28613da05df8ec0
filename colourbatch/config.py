"""Every run's settings and their defaults: the one home of each default.

The command line builds these dataclasses and reads its option defaults from
their fields; library code receives them and never sees click. This module
imports nothing heavy (no torch, OpenCV or PyAV), so `colourbatch --help`
stays instant while still showing the real defaults.
"""
from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from .errors import UsageError

#: Side of the square tile the models see (training, validation and inference alike).
TILE = 224
#: Compute precisions; device.py decides what "auto" means on each device.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: Page formats read and written (OpenCV codecs), as file extensions.
PAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
#: The same formats as names, for --format.
PAGE_FORMATS = tuple(e[1:] for e in PAGE_EXTS)
#: Archives of pages read and written.
ARCHIVE_EXTS = (".cbz", ".zip")
#: How a page is coloured: 'photo' keeps its own L and adds a/b (continuous tone: photos,
#: paintings, desaturated colour comics); 'drawn' lays a flat colour layer under the ink
#: (ink and paper, screentone); 'auto' decides per page (flats.page_style).
STYLES = ("auto", "photo", "drawn")
#: Share of a training set held out for validation when nothing else is said.
VAL_FRACTION = 0.05
#: How a bin-distribution model turns its distribution into a/b (model.DefaultNet.decode):
#: 'annealed' = the annealed mean (what the weights were tuned with: lively, sometimes
#: confidently wrong); 'confident' = that mean with its chroma scaled by the
#: distribution's certainty, so regions the model is unsure of stay near neutral.
DECODES = ("annealed", "confident")
#: Most frames the colour stabiliser may reach either side (--reach): the video path holds that
#: many full-resolution luma planes while it looks ahead (a second of 4K film is 200 MB).
MAX_REACH = 25


class BadTime(UsageError):
    """A --start/--end/--duration value that is not a finite time of 0 or more, or an empty part."""


@dataclass
class RunConfig:
    """How pages and video run the model."""

    weights: str | None = None     # weights file; None = the shipped weights (weights/default.pt)
    model: str | None = None       # model name, only needed for a bare state dict
    device: str = "auto"           # auto | cpu | cuda | cuda:N
    precision: str = "auto"        # one of PRECISIONS; device.py decides 'auto'
    batch_size: int = 16           # tiles per model call; large batches amortise launch costs on GPU
    workers: int = 2               # DataLoader processes decoding and converting inputs ahead of the model
    temperature: float | None = None  # annealed-mean T for the default model; None = the weights' own
    decode: str | None = None      # one of DECODES for the default model; None = the weights' own
    shard: str | None = None       # "I/N": only this shard of the inputs; None = the scheduler's environment, else all
    ray: bool = False              # run each input as a task on a Ray cluster instead of in this process
    ray_address: str | None = None  # that cluster's address (implies ray); None = a local Ray instance


@dataclass
class PagesConfig:
    """What `colourbatch pages` writes where."""

    out: str = "coloured"          # output folder; mirrors the input tree
    fmt: str | None = None         # output format (one of PAGE_FORMATS); None keeps each page's own
    recolour: bool = False         # colour pages already in colour instead of copying them through
    overwrite: bool = False        # redo pages whose output exists (default: skip them, i.e. resume)
    style: str = "auto"            # one of STYLES: auto sorts each page by flats.page_style's rule
    page_weights: str | None = None  # weights for drawn pages; None = the shipped weights/page.pt


@dataclass
class EncodeSettings:
    """The video encoder's settings: the one home of their defaults (the CLI's options read them)."""

    codec: str = "libx264"       # H.264 plays everywhere; libx265 is smaller, ffv1 (in .mkv) lossless
    crf: int | None = 18         # constant quality where the encoder has one; 18 is visually lossless for x264
    preset: str | None = None    # x264/x265 speed preset; None = the encoder's own default (medium)
    pix_fmt: str | None = None   # None: yuv420p, which every player shows (ffv1: yuv444p, archival)



def parse_time(text: str) -> float:
    """Seconds from 'SS', 'MM:SS' or 'HH:MM:SS' (each part may have decimals; a trailing 's' is allowed).

    BadTime for anything else, including negative, NaN and infinite values.
    """
    parts = str(text).strip().removesuffix("s").split(":")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if not 1 <= len(values) <= 3 or not all(math.isfinite(v) and v >= 0 for v in values):
        raise BadTime(f"{text!r} is not a time (use seconds, MM:SS or HH:MM:SS)")
    seconds = 0.0
    for v in values:
        seconds = seconds * 60 + v
    return seconds


@dataclass
class VideoConfig(EncodeSettings):
    """A video run's settings; the encoder's (codec, crf, preset, pix_fmt) come from EncodeSettings.

    Times are checked on construction (BadTime, exit 2), so no NaN or negative
    value ever reaches the frame arithmetic.
    """

    start: float | None = None     # seconds: colour from here (previews of a part)
    end: float | None = None       # seconds: stop before this time; None = to the end
    duration: float | None = None  # seconds from `start`, instead of `end`
    compare: bool = False          # write grey | colour side by side instead of the colour film
    overwrite: bool = False        # replace an existing output file
    queue_batches: int = 2         # model->colour stage queue depth in batches: bounds memory, enough to overlap
    grey_samples: int = 5          # frames sampled (spread over the film) for grey detection
    stability: float = 0.95        # weight a neighbouring frame's motion-warped colour keeps per frame of distance where the warp is trusted; 0 = off (per-frame colour crawls)
    reach: int = 16                # frames either side a frame's colour is averaged over (the output runs this many behind): centred, so colour that really changes is followed without lag

    def __post_init__(self) -> None:
        for name in ("start", "end", "duration"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise BadTime(f"--{name} must be a time of 0 seconds or more, not {value!r}")
        if self.end is not None and self.duration is not None:
            raise BadTime("give --end or --duration, not both")
        if not (isinstance(self.stability, (int, float)) and 0 <= self.stability < 1):
            raise UsageError(f"--stability must be at least 0 and below 1, not {self.stability!r}")
        if not (isinstance(self.reach, int) and 0 <= self.reach <= MAX_REACH):
            raise UsageError(f"--reach must be a whole number of frames from 0 to {MAX_REACH}, not {self.reach!r}")
        stop = self.stop
        if stop is not None and stop <= (self.start or 0):
            raise BadTime(f"--end ({stop:g}s) must be after --start ({self.start or 0:g}s)")

    @property
    def stop(self) -> float | None:
        """Where the part ends, seconds: `end`, or `start + duration`; None = the film's end."""
        if self.duration is not None:
            return (self.start or 0.0) + self.duration
        return self.end



@dataclass
class TrainConfig:
    """A training run: data, model, schedule, checkpoints."""

    data: tuple = ()                 # a Kaggle folder, or one or more folders of colour images
    out: str = "weights/model.pt"    # weights file for pages/video (fp16, no training state)
    checkpoint: str | None = None    # full training state for --resume; default <out>.ckpt
    model: str | None = None         # a name from the model table; None = 'default', or the resumed checkpoint's own
    steps: int | None = None         # optimiser steps; wins over epochs
    epochs: float | None = None      # passes over the training split when steps is not given (1 if neither)
    max_minutes: float | None = None  # wall-clock budget, checked at each log step: stop cleanly and save
    batch_size: int = 16             # per process; 16 keeps a 2-core CPU busy without waste
    lr: float | None = None          # None: the model's own recipe (its entry in the model table)
    weight_decay: float = 1e-4       # AdamW decay where the model's recipe uses AdamW
    warmup: int = 200                # linear warm-up steps before cosine decay
    size: int = TILE                 # training tile side; inference uses TILE
    crops: int = 8                   # random crops per image per epoch (image folders)
    val_fraction: float = VAL_FRACTION  # share held out, by stable hash (folders) or the set's tail (Kaggle)
    holdout: tuple = ()              # whole sources (sub-folders of --data) validated on, never trained on: measures generalisation
    val_every: int = 500             # steps between validations
    val_images: int = 128            # validation pictures per mid-run check (all at the end)
    ckpt_every: int = 500            # steps between checkpoints
    log_every: int = 10              # steps between progress events (the only host syncs)
    workers: int = 2                 # DataLoader worker processes
    device: str = "auto"             # auto | cpu | cuda | cuda:N
    precision: str = "auto"          # one of PRECISIONS
    threads: int | None = None       # CPU threads per process; None = the cores, shared among torchrun's local processes
    seed: int = 0                    # data order, augmentation and initialisation
    resume: str | None = None        # a .ckpt file to continue from exactly
    init_encoder: str = "auto"       # start weights: 'auto' (installed ImageNet package), 'none', a .pth path, or a colourbatch weights file
    rebalance: float = 1.0           # Zhang's lambda (1: no class rebalancing): on collections never seen, rebalancing painted rare colours wrongly
    sigma: float = 5.0               # soft-encoding width (LAB units) over the 5 nearest bins
    reg_weight: float = 0.5          # weight of the L1 term on the distribution's mean a/b (faithfulness)
    encoder_lr: float = 1.0          # the pretrained encoder's lr as a share of the peak: below 1 keeps more of what ImageNet taught; 0 freezes it
    ema: float = 0.0                 # decay of an exponential moving average of the weights (0: off); the average is validated and saved
    metadata: dict = field(default_factory=dict)  # extra facts to record in the weights (recipe, data hash)


#: Evaluation splits: val is what training held out, never trained on.
SPLITS = ("val", "train", "all")


@dataclass
class EvalConfig:
    """What `colourbatch evaluate` scores, on what."""

    data: tuple = ()                   # a Kaggle folder or image folders, as train takes them
    split: str = "val"                 # one of SPLITS
    val_fraction: float | None = None  # None: the first weights' own training split, else VAL_FRACTION
    holdout: tuple = ()                # held-out sources as train takes them; empty: the first weights' own (if any)
    per_source: bool = False           # a row per source as well as the pooled one: sources differ more than pictures
    drawn: bool = False                # score page models on drawn pages made from the colour pictures (lineart.draw_page)
    weights: tuple = ()                # weights files to compare; empty: the shipped default weights
    pred: str | None = None            # folder of finished predictions (with truth: no model runs)
    truth: str | None = None           # folder of true colour pictures, matched to pred by path
    video: str | None = None           # a coloured film, scored for flicker and colour against `source`
    source: str | None = None          # the film `video` was coloured from (grey, or colour for the floor)
    max_frames: int | None = None      # with video: compare only the first N frames (quick checks)
    max_images: int | None = None      # stop after this many pictures: quick checks on big sets
    temperature: float | None = None   # annealed-mean T for default models; None: the weights' own
    decode: tuple = ()                 # DECODES to score each default model with (a row each); empty: the weights' own
    size: int = TILE                   # tile side the models see: training's validation uses TILE
    device: str = "auto"               # auto | cpu | cuda | cuda:N
    precision: str = "auto"            # one of PRECISIONS
    batch_size: int = 16               # tiles per model call
    workers: int = 0                   # DataLoader processes; tiles are small, 0 avoids start-up cost
    sheet: str | None = None           # contact sheet PNG: grey | each model | truth
    sheet_images: int = 12             # pictures (rows) on the contact sheet
    sheet_cell: int = 192              # side of one sheet cell in pixels


def default(cls: type, name: str) -> Any:
    """The default of field `name` of dataclass `cls` (the CLI shows and uses it)."""
    for f in fields(cls):
        if f.name == name:
            if f.default is not MISSING:
                return f.default
            if f.default_factory is not MISSING:  # type: ignore[misc]
                return f.default_factory()  # type: ignore[misc]
            raise KeyError(f"{cls.__name__}.{name} has no default")
    raise KeyError(f"{cls.__name__} has no field {name!r}")


def build(cls: type, values: dict[str, Any]):
    """An instance of `cls` from the entries of `values` whose names are its fields."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names})

