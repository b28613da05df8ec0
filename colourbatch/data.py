"""Datasets and the DataLoader builder.

Training/evaluation data, and the one train/val/all split (`split_dataset`: by a
hash of each path, or by whole held-out sources): the Kaggle "image-colorization" arrays (memory-mapped,
never loaded whole) and folders of colour images (RGBA cut-outs composited on a
background). Both yield ``(l8, ab8)``: uint8 tensors (1, S, S) and (2, S, S) in
OpenCV 8-bit LAB; conversion to floats happens on the training device. For a
model of drawn pages (``drawn``) they yield ``(x8, l8, ab8)``: first the
picture drawn as ink on paper (lineart.draw_page, at the crop's own resolution,
then squeezed as a page is), the network's input (`split_batch` takes a batch
of either apart).

Every random choice of a training sample is drawn from a generator seeded by
(seed, epoch, index), so a resumed run sees exactly the batches it would have
seen, and the validation split (a hash of each file's path) never moves.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import math
import multiprocessing.queues
import os
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate, default_convert

from . import colour, files, lineart
from .config import SPLITS, VAL_FRACTION
from .device import return_free_memory
from .errors import EXIT_FAILED, ColourbatchError, InputError, one_line

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")
KAGGLE_GREY = Path("l") / "gray_scale.npy"
KAGGLE_AB = ("ab1.npy", "ab2.npy", "ab3.npy")




class DataError(ColourbatchError):
    """A data set that is missing, malformed or empty (refused before any work: exit 2)."""


class ImageError(InputError, ValueError):
    """One picture that cannot be read or converted: skipped and listed, the rest go on (exit 1).

    Also a ValueError, as the data errors it replaced were: callers that catch a
    bad value around a conversion keep working.
    """


# ------------------------------------------------------------------ the split
def split_hash(key: str) -> float:
    """A stable number in [0, 1) per sample key: the split is decided by it alone,
    so adding or removing files never moves another file across the split."""
    h = hashlib.sha1(f"colourbatch-split:{key}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2.0**64


def validation_keys(keys: Sequence[str], fraction: float) -> set[str]:
    """The keys held out for validation: hash below `fraction`, at least one when
    the fraction is positive and there are two or more samples."""
    val = {k for k in keys if split_hash(k) < fraction}
    if not val and fraction > 0 and len(keys) >= 2:
        val = {min(keys, key=split_hash)}
    return val


# --------------------------------------------------------------------- Kaggle
def is_kaggle_dir(path: str | os.PathLike) -> bool:
    return (Path(path) / KAGGLE_GREY).is_file()


def _kaggle_ab_files(root: Path) -> list[Path]:
    for sub in (root / "ab" / "ab", root / "ab"):
        files = [sub / n for n in KAGGLE_AB]
        if all(f.is_file() for f in files):
            return files
    raise DataError(f"{root}: Kaggle layout needs ab/ab/ab1.npy..ab3.npy (or ab/ab1.npy..ab3.npy)")


def _open_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r")
    except (ValueError, OSError) as exc:
        raise DataError(f"{path}: not a readable .npy array ({one_line(exc)})") from None


class KaggleDataset(Dataset):
    """The Kaggle set, memory-mapped: gray[i] pairs with concat(ab1, ab2, ab3)[i].

    Only the pages of the arrays that are touched are read, so the 3.8 GB set
    trains in a few hundred MB of RAM.
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", val_fraction: float = VAL_FRACTION,
                 augment: bool = True, size: int = colour.TILE, seed: int = 0, drawn: bool = False):
        root = Path(root)
        self.root, self.augment, self.size, self.seed, self.drawn = root, augment, size, seed, drawn
        self.grey = _open_npy(root / KAGGLE_GREY)
        if self.grey.dtype != np.uint8 or self.grey.ndim != 3:
            raise DataError(f"{root / KAGGLE_GREY}: expected uint8 (N, H, W), got "
                            f"{self.grey.dtype} {self.grey.shape}")
        self.ab = [_open_npy(f) for f in _kaggle_ab_files(root)]
        for f, a in zip(KAGGLE_AB, self.ab):
            if a.dtype != np.uint8 or a.ndim != 4 or a.shape[1:] != self.grey.shape[1:] + (2,):
                raise DataError(f"{root}: {f} should be uint8 (N, {self.grey.shape[1]}, "
                                f"{self.grey.shape[2]}, 2), got {a.dtype} {a.shape}")
        self.offsets = np.cumsum([0] + [len(a) for a in self.ab])
        if self.offsets[-1] != len(self.grey):
            raise DataError(f"{root}: gray_scale.npy has {len(self.grey)} images but the ab "
                            f"arrays hold {self.offsets[-1]}: they do not pair")
        # The last val_fraction of the set is validation: fixed, and never trained on.
        n_val = int(round(len(self.grey) * val_fraction))
        cut = len(self.grey) - n_val
        first, end = {"train": (0, cut), "val": (cut, len(self.grey)), "all": (0, len(self.grey))}[split]
        self.indices = np.arange(first, end)
        if len(self.indices) == 0:
            raise DataError(f"{root}: the {split} split is empty")
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.indices)

    def name(self, i: int) -> str:
        return f"kaggle[{int(self.indices[i])}]"

    def source(self, i: int) -> str:
        return self.root.name  # one source: the set has no collections to tell apart

    def __getitem__(self, i: int):
        j = int(self.indices[i])
        k = int(np.searchsorted(self.offsets, j, side="right") - 1)
        # np.array copies the one picture out of the read-only memmap: a tensor aliasing
        # the map is unwritable (torch warns of undefined behaviour) and pins its pages.
        lab = np.dstack([self.grey[j], self.ab[k][j - self.offsets[k]]])
        rng = _rng(self.seed, self.epoch, i)
        if self.augment and rng.random() < 0.5:
            lab = lab[:, ::-1]
        return _sample(lab, self.size, self.drawn, rng if self.augment else None)


# ---------------------------------------------------------------- image folders
def list_images(root: str | os.PathLike) -> list[Path]:
    """Image files under `root`, recursively, in a stable order (files.walk: hidden files and
    folders passed over, folder links not followed)."""
    root = Path(root)
    if root.is_file():
        return [root]
    return sorted(p for p in files.walk(root).files if p.suffix.lower() in IMAGE_EXTS and p.is_file())


def read_colour_image(path: str | os.PathLike, max_side: int = 0,
                      background: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    """A colour image file -> uint8 RGB, alpha composited on `background`.

    16-bit images are scaled to 8 bits; `max_side` > 0 downsizes larger images
    (INTER_AREA) so a folder of wallpapers fits in memory.
    """
    buf = np.fromfile(str(path), np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if buf.size else None
    if img is None:
        raise ImageError(f"{path}: not a readable image")
    rgb = to_rgb8(img, background)
    h, w = rgb.shape[:2]
    if max_side and max(h, w) > max_side:
        s = max_side / max(h, w)
        rgb = cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))),
                         interpolation=cv2.INTER_AREA)
    return rgb


def to_rgb8(img: np.ndarray, background=(255, 255, 255)) -> np.ndarray:
    """Whatever cv2.imdecode(IMREAD_UNCHANGED) returned -> uint8 RGB (H, W, 3).

    Handles grey, grey+alpha, BGR, BGRA and 16-bit/float images; alpha is
    composited over `background` (RGB). This is the one place BGR is touched
    on the way in.
    """
    if img.dtype == np.uint16:
        img = (img.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
    elif img.dtype in (np.float32, np.float64):
        img = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise ImageError(f"unsupported pixel type {img.dtype}")
    if img.ndim == 2:
        return colour.grey_to_rgb(img)
    c = img.shape[2]
    if c == 1:
        return colour.grey_to_rgb(img[..., 0])
    if c == 2:  # grey + alpha
        rgb, alpha = colour.grey_to_rgb(img[..., 0]), img[..., 1]
    elif c == 3:
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    elif c == 4:
        rgb, alpha = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB), img[..., 3]
    else:
        raise ImageError(f"unsupported channel count {c}")
    a = alpha.astype(np.float32)[..., None] / 255.0
    bg = np.asarray(background, np.float32)
    return (rgb.astype(np.float32) * a + bg * (1.0 - a) + 0.5).astype(np.uint8)


@dataclass
class FolderImage:
    key: str        # path relative to its data root: the split hash and reports use it
    lab: np.ndarray  # uint8 LAB, already composited and downsized
    source: str     # the collection it came from (see source_of): held out and reported whole


def source_of(key: str) -> str:
    """The source of a picture key 'root/sub/.../file': its first sub-folder under the
    --data folder (one collection of photos), or the --data folder itself for a file
    directly in it. Pictures of one source share photographers, scanners and subjects,
    so only a split by source measures how a model does on pictures from elsewhere."""
    parts = key.split("/")
    return parts[1] if len(parts) > 2 else parts[0]


class ImageFolderDataset(Dataset):
    """Colour images from folders, converted once to LAB and kept in memory.

    With `augment` (training): `crops` random crops per image per epoch, each
    of random area (25-100 % of the image), aspect ratio (1:2 to 2:1, squeezed
    to a square exactly as inference squeezes frames and pages), horizontal
    flip, and scale jitter from the area choice. Without (validation,
    evaluation): each whole image squeezed once. RGBA cut-outs are composited
    on a random flat background per image. `drawn`: each sample is (x8, l8, ab8),
    x8 the crop drawn by lineart.draw_page (random style when augmenting, the
    plain one otherwise).
    """

    def __init__(self, roots: Sequence[str | os.PathLike], split: str = "train",
                 val_fraction: float = VAL_FRACTION, size: int = colour.TILE, crops: int = 1,
                 seed: int = 0, max_side: int = 1024, on_skip=None, augment: bool | None = None,
                 holdout: Sequence[str] = (), drawn: bool = False):
        self.size, self.seed, self.drawn = size, seed, drawn
        self.augment = split == "train" if augment is None else augment
        self.crops = crops if self.augment else 1
        self.items: list[FolderImage] = []
        self.skipped: list[tuple[str, str]] = []
        files: list[tuple[Path, str]] = []
        seen_sources: set[str] = set()
        for root in roots:
            root = Path(root)
            if not root.exists():
                raise DataError(f"{root}: no such folder")
            base = root if root.is_dir() else root.parent
            found = [(p, f"{base.name}/{p.relative_to(base).as_posix()}") for p in list_images(root)]
            seen_sources.update(source_of(k) for _, k in found)
            if holdout:  # whole sources are validation, everything else trains
                val = {k for _, k in found if source_of(k) in holdout or base.name in holdout}
                seen_sources.add(base.name)
            else:
                val = validation_keys([k for _, k in found], val_fraction)
            files += [(p, k) for p, k in found if split == "all" or (k in val) == (split == "val")]
        unknown = sorted(set(holdout) - seen_sources)
        if unknown:
            raise DataError(f"held-out source(s) {', '.join(unknown)} are not a sub-folder of "
                            f"--data (sources: {', '.join(sorted(seen_sources))})")
        for p, key in files:
            bg = tuple(int(v) for v in _rng(seed, 0, _stable_int(key)).integers(0, 256, 3))
            try:
                rgb = read_colour_image(p, max_side, bg)
            except (ImageError, cv2.error) as exc:
                self.skipped.append((str(p), one_line(exc)))
                if on_skip:
                    on_skip(str(p), one_line(exc))
                continue
            if min(rgb.shape[:2]) < 8:
                self.skipped.append((str(p), "smaller than 8 pixels"))
                continue
            self.items.append(FolderImage(key, colour.rgb_to_lab(rgb), source_of(key)))
        if not self.items:
            raise DataError(f"{', '.join(map(str, roots))}: no readable images in the {split} split")
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.items) * self.crops

    def name(self, i: int) -> str:
        return self.items[i % len(self.items)].key

    def source(self, i: int) -> str:
        return self.items[i % len(self.items)].source

    def __getitem__(self, i: int):
        lab = self.items[i % len(self.items)].lab
        rng = _rng(self.seed, self.epoch, i)
        if self.augment:
            lab = self._random_crop(lab, rng)
        return _sample(lab, self.size, self.drawn, rng if self.augment else None)

    def _random_crop(self, lab: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        h, w = lab.shape[:2]
        area = h * w * rng.uniform(0.25, 1.0)
        aspect = math.exp(rng.uniform(math.log(0.5), math.log(2.0)))
        cw = int(min(w, round(math.sqrt(area * aspect))))
        ch = int(min(h, round(math.sqrt(area / aspect))))
        y = int(rng.integers(0, h - ch + 1))
        x = int(rng.integers(0, w - cw + 1))
        crop = lab[y:y + ch, x:x + cw]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        return crop


#: A drawn sample is drawn at up to this many times its tile's side, then squeezed to the tile
#: (INTER_AREA), so thin lines fade to grey as a large page's do when it becomes a tile;
#: drawing at the full crop (up to 1024 px) would cost the data worker more than the step.
DRAW_OVERSAMPLE = 2.5


def _sample(lab: np.ndarray, size: int, drawn: bool, rng: np.random.Generator | None) -> tuple:
    """uint8 LAB picture or crop (H, W, 3) -> what a data set yields for it, squeezed to `size`:
    (l8 (1, S, S), ab8 (2, S, S)), or with `drawn` (x8 (1, S, S), l8, ab8), x8 drawn by
    lineart.draw_page (`rng` None: the plain style) at up to DRAW_OVERSAMPLE x the tile,
    then squeezed."""
    t = torch.from_numpy(colour.l_tile(lab, size)).permute(2, 0, 1)
    pair = (t[:1].contiguous(), t[1:].contiguous())
    if not drawn:
        return pair
    h, w = lab.shape[:2]
    s = DRAW_OVERSAMPLE * size / max(h, w)
    if s < 1:
        lab = cv2.resize(lab, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    page = lineart.draw_page(colour.lab_to_rgb(np.ascontiguousarray(lab)), rng)
    return (torch.from_numpy(colour.l_tile(page, size))[None],) + pair


def split_batch(batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A batch of (l8, ab8), or of (x8, l8, ab8) from a drawn data set -> (x8, l8, ab8):
    the tiles the network is given (the L tiles themselves when not drawn), and the truth."""
    if len(batch) == 3:
        return tuple(batch)
    l8, ab8 = batch
    return l8, l8, ab8


def check_paths(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """The data paths as Paths; DataError when none is given or one is missing."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise DataError("no data given")
    for p in paths:
        if not p.exists():
            raise DataError(f"{p}: no such file or folder")
    return paths


def split_dataset(paths: Sequence[str | os.PathLike], split: str, val_fraction: float = VAL_FRACTION,
                  size: int = colour.TILE, crops: int = 1, seed: int = 0, augment: bool = False,
                  on_skip=None, holdout: Sequence[str] = (), drawn: bool = False) -> Dataset:
    """One Kaggle folder, or any number of image folders, as a Dataset of (l8, ab8) tiles.

    `split` is one of SPLITS. Without `holdout`, validation is the pictures
    whose path hashes below `val_fraction` (the same fraction always holds out
    the same pictures, so training and evaluation agree on what was never
    trained on). With `holdout` (source names: sub-folders of a --data folder,
    or a --data folder's own name), validation is exactly those whole sources
    and training is every other picture, so validation measures pictures from
    elsewhere. A Kaggle folder keeps its fixed tail split and has no sources.
    `augment` (training) draws `crops` random crops and flips per picture;
    without it every picture is squeezed whole, once. Each data set's
    `source(i)` names the source of picture i. `drawn` (a model of drawn pages):
    samples are (x8, l8, ab8), x8 the picture drawn as ink on paper.
    """
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r} (use {', '.join(SPLITS)})")
    paths = check_paths(paths)
    kaggle = [p for p in paths if is_kaggle_dir(p)]
    if kaggle:
        if len(paths) > 1:
            raise DataError("a Kaggle folder trains on its own; give it as the only --data")
        if holdout:
            raise DataError("a Kaggle folder has no sources to hold out; it keeps its tail split")
        return KaggleDataset(kaggle[0], split, val_fraction, augment=augment, size=size, seed=seed,
                             drawn=drawn)
    if any((p / "l").is_dir() or (p / "ab").is_dir() for p in paths):
        raise DataError(f"{paths[0]}: looks like a Kaggle folder but lacks l/gray_scale.npy")
    return ImageFolderDataset(paths, split, val_fraction, size, crops if augment else 1, seed,
                              on_skip=on_skip, augment=augment, holdout=tuple(holdout), drawn=drawn)


# ------------------------------------------------------------------- sampling
class ResumableSampler(Sampler[int]):
    """Seeded per-epoch permutation, sharded over ranks, that can start mid-epoch.

    Position is counted in global samples (all ranks together), so a resumed
    run on the same world size continues with exactly the next batch.
    """

    def __init__(self, n: int, seed: int = 0, rank: int = 0, world: int = 1,
                 epoch: int = 0, offset: int = 0):
        self.n, self.seed, self.rank, self.world = n, seed, rank, world
        self.epoch, self.offset = epoch, offset

    def order(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 100003 + epoch)
        perm = torch.randperm(self.n, generator=g)
        pad = (-self.n) % self.world  # every rank gets the same count, as DistributedSampler does
        return torch.cat([perm, perm[:pad]]) if pad else perm

    def __iter__(self) -> Iterator[int]:
        perm = self.order(self.epoch)
        return iter(perm[self.offset + self.rank::self.world].tolist())

    def __len__(self) -> int:
        total = self.n + (-self.n) % self.world
        return (total - self.offset) // self.world


def set_epoch(dataset: Dataset, epoch: int) -> None:
    """Tell a dataset (and the sampler-driven augmentation) which epoch is running."""
    if hasattr(dataset, "epoch"):
        dataset.epoch = epoch


class WorkerError(ColourbatchError):
    """A DataLoader worker died or could not hand its result back: the run ends (exit 1)."""

    exit_code = EXIT_FAILED


@dataclass(frozen=True)
class _WorkerFailure:
    """What a worker returns instead of a result it could not hand over (no tensors in it)."""

    reason: str


class Loader(DataLoader):
    """A DataLoader whose worker failures end the run with a WorkerError instead of a hang.

    torch notices a worker that died by polling the workers' liveness whenever
    no result arrived for MP_STATUS_CHECK_INTERVAL (5 s); that RuntimeError
    leaves here as a WorkerError. It does not notice a result lost in a
    worker's queue-feeder thread: sending tensors copies them into shared
    memory there, and when that fails (a full disk, ``ulimit -f``: 'unable to
    resize file ... File too large') the thread prints a traceback, drops the
    result and the parent waits for it forever. So each result's tensors are
    moved into shared memory in the worker's own thread (`_share_result`),
    where a failure becomes a `_WorkerFailure` value, and any other feeder
    failure kills the worker (`_worker_init`), which the polling then finds.

    torch also installs a SIGCHLD handler that raises its RuntimeError in the
    main thread wherever it happens to be: inside a finaliser or a weakref
    callback it is printed as "Exception ignored" with a traceback and lost.
    That handler is put back to what it was, so a death is answered at the
    next wait for data, within seconds, always in the same place.
    """

    def __iter__(self):
        main = threading.current_thread() is threading.main_thread()
        before = signal.getsignal(signal.SIGCHLD) if main else None
        if self.num_workers > 0:
            return_free_memory()  # the workers fork now: share less with them (see there)
        it = super().__iter__()
        if self.num_workers == 0:
            return it  # in-process: errors arrive as they are, with their own types
        if main and before is not None and signal.getsignal(signal.SIGCHLD) is not before:
            signal.signal(signal.SIGCHLD, before)  # torch installs it once per process
        return _guarded(it)


def _guarded(it):
    try:
        for item in it:
            if isinstance(item, _WorkerFailure):
                raise WorkerError(f"a data worker failed: {item.reason}")
            yield item
    except RuntimeError as exc:
        # With workers, the RuntimeErrors leaving the iterator are torch's own (a worker
        # died, the pin-memory thread died) or a worker's re-raised: none can be resumed.
        raise WorkerError(f"a data worker failed: {_worker_reason(exc)}") from None
    except (ConnectionError, EOFError) as exc:
        # A worker that dies while the parent is fetching a batch's shared memory from it
        # breaks that connection (ECONNRESET, EOF) before torch's liveness check runs.
        raise WorkerError(f"a data worker died while handing over a batch ({one_line(exc)})") from None


def _worker_reason(exc: BaseException) -> str:
    """One line on why a worker failed: the worker's own error where torch re-raised one (the
    last line of the worker's traceback it quotes: "RuntimeError: ..."), else the first line."""
    text = str(exc)
    if "Original Traceback" in text:
        return one_line(text.strip().splitlines()[-1])
    return one_line(exc)


def _share_tensors(obj) -> None:
    if isinstance(obj, torch.Tensor):
        if obj.device.type == "cpu" and not obj.is_shared():
            obj.share_memory_()
    elif isinstance(obj, dict):
        for v in obj.values():
            _share_tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _share_tensors(v)


def _share_result(collate_fn, batch):
    """Runs in a worker: collate, then move the tensors to shared memory here, not in
    the queue's feeder thread, so a failure is reported instead of lost."""
    try:
        out = collate_fn(batch)  # default_collate allocates its output in shared memory itself
        _share_tensors(out)
    except (RuntimeError, OSError, MemoryError) as exc:
        return _WorkerFailure(one_line(exc))
    return out


#: Exit status of a worker whose queue-feeder thread failed to send a result.
FEEDER_FAILED = 70
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _feeder_failed(exc, obj) -> None:
    # The result is lost and the parent would wait for it forever: die, so it notices.
    os._exit(FEEDER_FAILED)


def _worker_init(parent: int, worker_init_fn, worker_id: int) -> None:
    """First thing in each worker: die with the parent, and die rather than lose a result."""
    if sys.platform.startswith("linux"):
        # A worker outlived a SIGKILLed parent by minutes; the kernel now kills it at once.
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(1)  # the parent died before prctl took effect
    multiprocessing.queues.Queue._on_queue_feeder_error = staticmethod(_feeder_failed)
    if worker_init_fn is not None:
        worker_init_fn(worker_id)


def make_loader(dataset: Dataset, batch_size: int | None, workers: int, sampler=None,
                pin_memory: bool = False, collate_fn=None, drop_last: bool = False,
                shuffle: bool = False, prefetch: int = 4, worker_init_fn=None) -> Loader:
    """The DataLoader every command uses: worker prefetching, pinned memory on CUDA.

    `batch_size=None` passes items through as they are (an IterableDataset that
    yields whole batches); `prefetch` is batches queued per worker. A worker
    that dies or cannot hand back a result raises WorkerError (see `Loader`).
    """
    kw = {}
    if workers > 0:
        collate = collate_fn or (default_collate if batch_size is not None else default_convert)
        kw.update(prefetch_factor=prefetch, persistent_workers=False,
                  collate_fn=functools.partial(_share_result, collate),
                  worker_init_fn=functools.partial(_worker_init, os.getpid(), worker_init_fn))
        if sys.platform.startswith("linux"):
            # Forked, as _worker_init's parent check and Loader's hand-back of free memory
            # assume; Python 3.14 made forkserver Linux's default.
            kw.update(multiprocessing_context="fork")
    else:
        kw.update(collate_fn=collate_fn, worker_init_fn=worker_init_fn)
    return Loader(dataset, batch_size=batch_size, num_workers=workers, sampler=sampler,
                  shuffle=shuffle if sampler is None else False, pin_memory=pin_memory,
                  drop_last=drop_last, **kw)


def _rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, index])


def _stable_int(key: str) -> int:
    return int.from_bytes(hashlib.sha1(key.encode()).digest()[:4], "big")
