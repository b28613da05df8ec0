"""Batched predict -> upsample a/b -> merge with the source L -> write.

The engine every command shares: `load_weights` (a self-describing weights
file, or the shipped one), `open_device` (device, precision, CPU threads) and
`Colouriser`, which pages and video drive: uint8 L tiles in, uint8 a/b planes
out, with one host transfer per batch. Train and evaluate build their model
and device through the same two functions. A page's windows and tiles
(`tile_page`) and its colouring from the model's output (`colour_page`: a/b
merged with the page's own L by colour.merge_l_ab, or a colour layer laid
under the ink by flats.flat_colour) are here too, so `pages` and `evaluate`
colour a page the same way. Progress leaves through callbacks;
nothing here prints.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import torch
from torch import nn

from . import checkpoint, colour, flats
from .cluster import Unit, run_units
from .config import DECODES, RunConfig
from .device import autocast, pick_device, prepare_model, resolve_precision, set_cpu_threads
from .errors import ColourbatchError
from .model import predict_ab8, predict_layer8


class PipelineError(ColourbatchError):
    """A run that cannot start: bad weights, bad device, bad paths (exit 2)."""


def load_weights(weights: str | None = None, model: str | None = None,
                 shipped: str = checkpoint.DEFAULT_NAME) -> tuple[nn.Module, dict, Path]:
    """(network in eval mode on the CPU, its metadata, its path) from a weights file.

    `weights` None means the shipped weights named `shipped` (weights/NAME.pt);
    `model` names the network of a bare state dict. CheckpointError (or
    PipelineError when the shipped weights are missing) in one line.
    """
    path = Path(weights) if weights else checkpoint.shipped_weights(shipped)
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


#: Tiles torch on one CPU thread (video beside x264 on a small machine) takes through the
#: network at a time. At 16 a layer's activations (25-77 MB) pass glibc's 32 MB mmap
#: ceiling, so each call maps fresh pages and faults them in (50,000 minor faults a batch);
#: 4 at a time reuse the heap (none), and the batch's logits (51 MB) never exist at once:
#: forward + decode 3-7 % cheaper (2-vCPU Xeon, docs/speed.md). On several threads the whole
#: batch: each smaller call is more OpenMP barriers, which a busy machine makes dear. CUDA
#: takes the whole batch.
CPU_CHUNK = 4


class Colouriser:
    """A loaded model on its device: uint8 L tiles in, uint8 a/b planes (or colour layers) out.

    `shipped` names the shipped weights used when `cfg.weights` is None
    ('default' for photos and film, 'page' for drawn pages); `threads`: torch's
    CPU threads (None: every core; a run that also encodes video gives
    device.threads_beside_encoder()); `lanes`: on one CPU thread, how many of a
    batch's CPU_CHUNK chunks run at once, each in a thread of its own
    (device.lanes_beside_encoder(); 1: one after the other).
    """

    def __init__(self, cfg: RunConfig, shipped: str = checkpoint.DEFAULT_NAME, threads: int | None = None,
                 lanes: int = 1):
        self.cfg = cfg
        if cfg.decode is not None and cfg.decode not in DECODES:
            raise PipelineError(f"unknown decode {cfg.decode!r} (use {', '.join(DECODES)})")
        # CheckpointError and DeviceError are ColourbatchErrors (exit 2): they leave as they are.
        model, self.metadata, self.weights = load_weights(cfg.weights, cfg.model, shipped)
        self.device, self.dtype = open_device(cfg.device, cfg.precision, threads)
        self.model_name = checkpoint.model_config(model)[0]
        self.model = prepare_model(model, self.device).eval()
        self.pin = self.device.type == "cuda"
        self.lanes = max(1, lanes) if self.device.type == "cpu" else 1

    def describe(self) -> dict[str, Any]:
        return {"weights": str(self.weights), "model": self.model_name, "device": str(self.device),
                "precision": str(self.dtype).replace("torch.", ""),
                "trained": bool(self.metadata.get("steps"))}

    def _on_device(self, tiles: torch.Tensor) -> torch.Tensor:
        return (tiles[:, None] if tiles.ndim == 3 else tiles).to(self.device, non_blocking=True)

    def _in_chunks(self, predict, x: torch.Tensor) -> np.ndarray:
        """predict(x) of a whole batch, CPU_CHUNK tiles at a time on one CPU thread (in `lanes`
        threads at once), else at once."""
        one_thread = self.device.type == "cpu" and torch.get_num_threads() == 1
        step = CPU_CHUNK if one_thread and len(x) > CPU_CHUNK else max(1, len(x))

        def chunk(i: int) -> torch.Tensor:
            # Inference mode and autocast belong to the thread that runs the chunk.
            with torch.inference_mode(), autocast(self.device, self.dtype):
                return predict(x[i:i + step])
        starts = range(0, max(1, len(x)), step)
        if self.lanes > 1 and len(starts) > 1:
            # A pool per batch (threads cost microseconds, a batch hundreds of ms): between
            # batches this process holds no lane thread, so a film's decode worker never forks
            # beside one.
            with ThreadPoolExecutor(self.lanes, thread_name_prefix="colourbatch-lane") as pool:
                outs = list(pool.map(chunk, starts))
        else:
            outs = [chunk(i) for i in starts]
        out = outs[0] if len(outs) == 1 else torch.cat(outs)  # one chunk (GPU, many threads): no copy
        return out.cpu().numpy()  # one transfer (and sync) per batch, never per frame

    @torch.inference_mode()
    def predict(self, tiles: torch.Tensor) -> np.ndarray:
        """uint8 tiles (B, 1, S, S) or (B, S, S) -> uint8 a/b (B, 2, h, w) as a numpy array."""
        return self._in_chunks(partial(predict_ab8, self.model, temperature=self.cfg.temperature,
                                       decode=self.cfg.decode), self._on_device(tiles))

    @torch.inference_mode()
    def predict_layer(self, tiles: torch.Tensor) -> np.ndarray:
        """uint8 tiles (B, 1, S, S) or (B, S, S) -> uint8 OpenCV LAB colour layers (B, 3, h, w)
        (model.predict_layer8: the page model's layer; L8 = 255 under other models' a/b)."""
        return self._in_chunks(partial(predict_layer8, self.model, temperature=self.cfg.temperature),
                               self._on_device(tiles))


# ------------------------------------------------------------ one page
def tile_windows(h: int, w: int, max_aspect: float = 2.0) -> list[tuple[int, int, int, int]]:
    """Windows (y0, y1, x0, x1) covering a page, each no more elongated than `max_aspect`.

    The model sees each window squeezed to a square tile, as it saw crops of
    aspect 1:2..2:1 in training. A webtoon strip 10x taller than wide becomes
    overlapping windows, so its colour is not smeared along the strip.
    """
    long_side, short = max(h, w), min(h, w)
    if long_side <= short * max_aspect:
        return [(0, h, 0, w)]
    win = int(short * max_aspect)
    n = 1 + int(np.ceil((long_side - win) / (0.75 * win)))
    starts = np.round(np.linspace(0, long_side - win, n)).astype(int)
    if h >= w:
        return [(int(s), int(s) + win, 0, w) for s in starts]
    return [(0, h, int(s), int(s) + win) for s in starts]


def blend_windows(h: int, w: int, windows, ab_small: list[np.ndarray]) -> np.ndarray:
    """Low-resolution planes of each window (a/b, or a colour layer's L/a/b) -> one
    (C, h, w) uint8 stack for the page.

    Overlaps are cross-faded with weights that fall linearly towards each
    window's inner edges, so there is no seam where windows meet.
    """
    if len(windows) == 1:
        return ab_small[0]
    acc = np.zeros((len(ab_small[0]), h, w), np.float32)
    wsum = np.zeros((h, w), np.float32)
    for (y0, y1, x0, x1), ab in zip(windows, ab_small):
        wh, ww = y1 - y0, x1 - x0
        up = np.stack([cv2.resize(np.ascontiguousarray(p), (ww, wh), interpolation=cv2.INTER_LINEAR)
                       for p in ab]).astype(np.float32)
        # Windows only overlap along the long side, so only that side ramps.
        ramp_y = np.minimum(np.arange(wh) + 1, wh - np.arange(wh)).astype(np.float32)
        ramp_x = np.minimum(np.arange(ww) + 1, ww - np.arange(ww)).astype(np.float32)
        wt = np.outer(ramp_y, np.ones(ww, np.float32)) if h >= w else np.outer(np.ones(wh, np.float32), ramp_x)
        acc[:, y0:y1, x0:x1] += up * wt
        wsum[y0:y1, x0:x1] += wt
    return np.clip(acc / np.maximum(wsum, 1e-6) + 0.5, 0, 255).astype(np.uint8)


def tile_page(l8: np.ndarray, style: str) -> tuple[list[tuple[int, int, int, int]], list[np.ndarray]]:
    """A page's windows (tile_windows) and the model's tile of each, for its style
    ('drawn' tiles are descreened first: flats.drawn_tile)."""
    windows = tile_windows(*l8.shape)
    tile = flats.drawn_tile if style == "drawn" else colour.l_tile
    return windows, [tile(l8[y0:y1, x0:x1]) for y0, y1, x0, x1 in windows]


def colour_page(l8: np.ndarray, style: str, windows, small: list[np.ndarray]) -> np.ndarray:
    """RGB of a page from the model's output for each of its windows: a/b merged with the
    page's own L ('photo'), or the colour layer laid flat under the ink ('drawn')."""
    planes = blend_windows(*l8.shape, windows, small)
    return flats.flat_colour(l8, planes) if style == "drawn" else colour.merge_l_ab(l8, planes)


# ------------------------------------------------------------- on a cluster
class _EngineWorker:
    """A cluster worker: builds the engine once, then runs `work(payload, engine)` per unit."""

    def __init__(self, build: Callable[[], Any], work: Callable[[Any, Any], Any]):
        self.engine, self.work = build(), work

    def process(self, unit) -> Any:
        return self.work(unit.payload, self.engine)


def on_ray(items: list[tuple[str, Any]], run: RunConfig, work: Callable[[Any, Any], Any],
           on_result: Callable[[str, Any], None], on_failure: Callable[[str, str], None],
           build: Callable[[], Any] | None = None) -> None:
    """Run `work(payload, engine)` for each (key, payload) as a task on Ray (`run.ray_address`,
    or a local instance).

    `engine` is what `build()` returns (picklable; None: `Colouriser(run)`).
    Each Ray worker builds it once (cluster.run_units balances the
    items over the workers, redoes those whose worker died, isolates
    failures). `work` must be picklable (a module-level function or a
    functools.partial of one); results and failures come back through the
    callbacks, in the driver process.
    """
    def on_unit(kind: str, info: dict) -> None:
        if kind == "unit" and info["outcome"] == "done":
            on_result(info["key"], info["result"])
        elif kind == "unit":
            on_failure(info["key"], info["reason"])

    build = build or partial(Colouriser, run)
    run_units([Unit(key, payload) for key, payload in items], partial(_EngineWorker, build, work),
              address=run.ray_address, on_event=on_unit,
              # A CPU run reserves no GPU, even on a cluster that has them.
              gpus_per_worker=0 if run.device == "cpu" else None)
