"""Batched predict -> upsample a/b -> merge with the source L -> write.

The engine every command shares: `load_weights` (a self-describing weights
file, or the shipped one), `open_device` (device, precision, CPU threads) and
`Colouriser`, which pages and video drive: uint8 L tiles in, uint8 a/b planes
out, with one host transfer per batch. Train and evaluate build their model
and device through the same two functions. Merging a/b with the
full-resolution L is colour.merge_l_ab. Progress leaves through callbacks;
nothing here prints.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from . import checkpoint
from .device import DeviceError, autocast, pick_device, prepare_model, resolve_precision, set_cpu_threads
from .errors import ColourbatchError
from .model import predict_ab8


class PipelineError(ColourbatchError):
    """A run that cannot start: bad weights, bad device, bad paths (exit 2)."""


@dataclass
class RunConfig:
    weights: str | None = None     # weights file; None = the shipped weights/default.pt
    model: str | None = None       # model name, only needed for a bare state dict
    device: str = "auto"           # auto | cpu | cuda | cuda:N
    precision: str = "auto"        # one of device.PRECISIONS ('auto': device.py decides)
    batch_size: int = 16           # tiles per model call; large batches amortise launch costs on GPU
    workers: int = 2               # DataLoader processes decoding and converting inputs
    temperature: float | None = None  # annealed-mean T for the default model; None = the weights' own


def load_weights(weights: str | None = None, model: str | None = None) -> tuple[nn.Module, dict, Path]:
    """(network in eval mode on the CPU, its metadata, its path) from a weights file.

    `weights` None means the shipped default weights; `model` names the network
    of a bare state dict. CheckpointError (or PipelineError when the shipped
    weights are missing) in one line.
    """
    path = Path(weights) if weights else checkpoint.shipped_weights()
    if not weights and not path.exists():
        raise PipelineError(f"no shipped weights at {path}; pass --weights FILE")
    net, metadata = checkpoint.load(path, model)
    return net, metadata, path


def open_device(device: str = "auto", precision: str = "auto",
                threads: int | None = None) -> tuple[torch.device, torch.dtype]:
    """The torch device and compute dtype asked for; on the CPU, also sets torch's threads
    (`threads` None: every core this process may use). DeviceError when unavailable."""
    dev = pick_device(device)
    dtype = resolve_precision(dev, precision)
    if dev.type == "cpu":
        set_cpu_threads(threads)
    return dev, dtype


class Colouriser:
    """A loaded model on its device: uint8 L tiles in, uint8 a/b planes out."""

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        try:
            model, self.metadata, self.weights = load_weights(cfg.weights, cfg.model)
            self.device, self.dtype = open_device(cfg.device, cfg.precision)
        except (checkpoint.CheckpointError, DeviceError) as exc:
            raise PipelineError(str(exc)) from None  # the engine could not start
        self.model_name = checkpoint.model_config(model)[0]
        self.model = prepare_model(model, self.device).eval()
        self.pin = self.device.type == "cuda"

    def describe(self) -> dict[str, Any]:
        return {"weights": str(self.weights), "model": self.model_name, "device": str(self.device),
                "precision": str(self.dtype).replace("torch.", ""),
                "trained": bool(self.metadata.get("steps"))}

    @torch.inference_mode()
    def predict(self, tiles: torch.Tensor) -> np.ndarray:
        """uint8 tiles (B, 1, S, S) or (B, S, S) -> uint8 a/b (B, 2, h, w) as a numpy array."""
        if tiles.ndim == 3:
            tiles = tiles[:, None]
        x = tiles.to(self.device, non_blocking=True)
        with autocast(self.device, self.dtype):
            ab = predict_ab8(self.model, x, self.cfg.temperature)
        return ab.cpu().numpy()  # one transfer (and sync) per batch, never per frame


# ===================================================================== pages
@dataclass
class PagesConfig:
    out: str = "coloured"          # output folder; mirrors the input tree
    fmt: str | None = None         # output format (png, jpg, ...); None keeps each page's own
    recolour: bool = False         # colour pages already in colour instead of copying them through
    overwrite: bool = False        # redo pages whose output exists (default: skip them, i.e. resume)


@dataclass
class PagesReport:
    done: list[str]                # pages coloured
    copied: list[str]              # colour pages passed through untouched
    skipped: list[str]             # outputs that already existed
    failed: list[tuple[str, str]]  # (page, one-line reason)
    archives: list[str]            # archives written
    seconds: float

    @property
    def ok(self) -> bool:
        return not self.failed


class PageDataset(torch.utils.data.Dataset):
    """Reads, decodes and converts one page per item, in DataLoader workers.

    An item is a dict: kind "colour" with the full-resolution L plane and its
    tiles (one per window, see pages.tile_windows), kind "copy" for a colour
    page passed through, or kind "error" with the reason. Errors are values,
    not exceptions, so one bad page never stops the batch.
    """

    def __init__(self, jobs, recolour: bool):
        self.jobs, self.recolour = jobs, recolour
        self._zips: dict = {}  # per worker: open archives, reused across pages

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, i: int) -> dict:
        from . import colour, pages

        job = self.jobs[i]
        try:
            data = pages.page_bytes(job, self._zips)
            rgb = pages.decode_page(data)
            if not self.recolour and not colour.is_greyscale(rgb):
                return {"i": i, "kind": "copy", "data": data}
            l8 = colour.rgb_to_l(rgb)
            h, w = l8.shape
            windows = pages.tile_windows(h, w)
            tiles = np.stack([colour.l_tile(l8[y0:y1, x0:x1]) for y0, y1, x0, x1 in windows])
            return {"i": i, "kind": "colour", "l8": l8, "tiles": torch.from_numpy(tiles),
                    "windows": windows}
        except pages.PageError as exc:
            return {"i": i, "kind": "error", "reason": str(exc)}
        except (cv2.error, MemoryError, ValueError) as exc:
            return {"i": i, "kind": "error", "reason": f"cannot decode ({_one_line(exc)})"}


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[-1] if text else type(exc).__name__)[:200]


def _collate_pages(items: list[dict]) -> list[dict]:
    return items  # pages differ in size: the model batches their tiles, not the pages


def colour_pages(inputs: list[str], pcfg: PagesConfig, run: RunConfig,
                 on_progress=None) -> PagesReport:
    """Colour every page under `inputs` into `pcfg.out`; returns what happened to each.

    Reading/decoding runs in `run.workers` DataLoader processes; the model sees
    up to `run.batch_size` tiles per call; merging, encoding and writing run in
    a small thread pool while the next batch is predicted.
    """
    import time
    from concurrent.futures import ThreadPoolExecutor

    from . import colour, pages
    from .data import make_loader

    t0 = time.monotonic()
    emit = on_progress or (lambda kind, info: None)
    try:
        plan = pages.plan_pages(inputs, pcfg.out, pcfg.fmt, pcfg.overwrite)
    except pages.PlanError as exc:
        raise PipelineError(str(exc)) from None
    report = PagesReport([], [], list(plan.skipped), list(plan.failed), [], 0.0)
    emit("start", {"total": len(plan.jobs), "skipped": len(plan.skipped)})
    engine = Colouriser(run) if plan.jobs else None
    if engine is not None:
        emit("engine", engine.describe())
    failed_members: dict[int, set[str]] = {}

    def finish(job, result, ab_small):
        """Runs in a writer thread: merge, encode, write."""
        try:
            if result["kind"] == "copy":
                if job.member is not None:
                    pages.write_atomic(job.dest.with_suffix(".copy"), b"")  # marker: keep original
                else:
                    pages.write_atomic(job.dest.with_suffix(job.path.suffix), result["data"])
                return "copy", None
            l8 = result["l8"]
            h, w = l8.shape
            ab = pages.blend_windows(h, w, result["windows"], ab_small)
            rgb = colour.merge_l_ab(l8, ab)
            pages.write_atomic(job.dest, pages.encode_page(rgb, job.out_ext))
            return "done", None
        except pages.PageError as exc:
            return "error", str(exc)
        except OSError as exc:
            return "error", f"cannot write {job.dest} ({exc.strerror or exc})"

    def record(job, outcome, reason):
        if outcome == "done":
            report.done.append(job.source)
        elif outcome == "copy":
            report.copied.append(job.source)
        else:
            report.failed.append((job.source, reason))
            if job.archive is not None:
                failed_members.setdefault(job.archive, set()).add(job.member)
        emit("page", {"source": job.source, "outcome": outcome, "reason": reason})

    if plan.jobs:
        loader = make_loader(PageDataset(plan.jobs, pcfg.recolour), batch_size=run.batch_size,
                             workers=run.workers, collate_fn=_collate_pages,
                             pin_memory=engine.pin)
        pending = []
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="colourbatch-write") as pool:
            for items in loader:
                colour_items = [r for r in items if r["kind"] == "colour"]
                ab_all: list[np.ndarray] = []
                if colour_items:
                    tiles = torch.cat([r["tiles"] for r in colour_items])
                    for s in range(0, len(tiles), run.batch_size):
                        ab_all.extend(engine.predict(tiles[s:s + run.batch_size]))
                k = 0
                for r in items:
                    job = plan.jobs[r["i"]]
                    if r["kind"] == "error":
                        record(job, "error", r["reason"])
                        continue
                    n = len(r["windows"]) if r["kind"] == "colour" else 0
                    pending.append((job, pool.submit(finish, job, r, ab_all[k:k + n])))
                    k += n
                # Bound the write queue: memory stays flat however many pages there are.
                while len(pending) > 4 * run.batch_size:
                    job, fut = pending.pop(0)
                    record(job, *fut.result())
            for job, fut in pending:
                record(job, *fut.result())

    for idx, arch in enumerate(plan.archives):
        try:
            pages.finish_archive(arch, failed_members.get(idx, set()))
            report.archives.append(str(arch.dest))
            emit("archive", {"path": str(arch.dest)})
        except (OSError, zipfile.BadZipFile) as exc:
            report.failed.append((str(arch.source), f"cannot write archive ({_one_line(exc)})"))
    report.seconds = time.monotonic() - t0
    emit("end", {"seconds": report.seconds})
    return report
