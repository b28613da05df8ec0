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

from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from . import checkpoint
from .cluster import Unit, run_units
from .config import DECODES, RunConfig
from .device import autocast, pick_device, prepare_model, resolve_precision, set_cpu_threads
from .errors import ColourbatchError
from .model import predict_ab8


class PipelineError(ColourbatchError):
    """A run that cannot start: bad weights, bad device, bad paths (exit 2)."""


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
        if cfg.decode is not None and cfg.decode not in DECODES:
            raise PipelineError(f"unknown decode {cfg.decode!r} (use {', '.join(DECODES)})")
        # CheckpointError and DeviceError are ColourbatchErrors (exit 2): they leave as they are.
        model, self.metadata, self.weights = load_weights(cfg.weights, cfg.model)
        self.device, self.dtype = open_device(cfg.device, cfg.precision)
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
            ab = predict_ab8(self.model, x, self.cfg.temperature, self.cfg.decode)
        return ab.cpu().numpy()  # one transfer (and sync) per batch, never per frame


# ------------------------------------------------------------- on a cluster
class _EngineWorker:
    """A cluster worker: builds the engine once, then runs `work(payload, engine)` per unit."""

    def __init__(self, run: RunConfig, work: Callable[[Any, Colouriser], Any]):
        self.engine, self.work = Colouriser(run), work

    def process(self, unit) -> Any:
        return self.work(unit.payload, self.engine)


def on_ray(items: list[tuple[str, Any]], run: RunConfig, work: Callable[[Any, Colouriser], Any],
           on_result: Callable[[str, Any], None], on_failure: Callable[[str, str], None]) -> None:
    """Run `work(payload, engine)` for each (key, payload) as a task on Ray (`run.ray_address`,
    or a local instance).

    Each Ray worker loads the model once (cluster.run_units balances the
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

    run_units([Unit(key, payload) for key, payload in items], partial(_EngineWorker, run, work),
              address=run.ray_address, on_event=on_unit,
              # A CPU run reserves no GPU, even on a cluster that has them.
              gpus_per_worker=0 if run.device == "cpu" else None)
