"""Batched predict -> upsample a/b -> merge with the source L -> write.

`Colouriser` is the engine pages and video share: it loads a self-describing
weights file, picks the device and precision, and turns a batch of uint8 L
tiles into uint8 a/b planes with one host transfer per batch. Merging a/b with
the full-resolution L is colour.merge_l_ab. Progress leaves through callbacks;
nothing here prints.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import checkpoint
from .device import autocast, pick_device, prepare_model, resolve_precision, set_cpu_threads


class PipelineError(RuntimeError):
    """A run that cannot start: bad weights, bad device, bad paths."""


@dataclass
class RunConfig:
    weights: str | None = None     # weights file; None = the shipped weights/default.pt
    model: str | None = None       # model name, only needed for a bare state dict
    device: str = "auto"           # auto | cpu | cuda | cuda:N
    precision: str = "auto"        # auto | fp32 | bf16 | fp16 (device.py decides 'auto')
    batch_size: int = 16           # tiles per model call; large batches amortise launch costs on GPU
    workers: int = 2               # DataLoader processes decoding and converting inputs
    temperature: float | None = None  # annealed-mean T for the default model; None = the weights' own


def weights_path(weights: str | None) -> Path:
    if weights:
        return Path(weights)
    return checkpoint.shipped_weights()


class Colouriser:
    """A loaded model on its device: uint8 L tiles in, uint8 a/b planes out."""

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        path = weights_path(cfg.weights)
        if cfg.weights is None and not path.exists():
            raise PipelineError(f"no shipped weights at {path}; pass --weights FILE")
        try:
            model, self.metadata = checkpoint.load(path, cfg.model)
            self.device = pick_device(cfg.device)
            self.dtype = resolve_precision(self.device, cfg.precision)
        except (checkpoint.CheckpointError, RuntimeError) as exc:
            raise PipelineError(str(exc)) from None
        if self.device.type == "cpu":
            set_cpu_threads()
        self.weights = path
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
        from .model import predict_ab8

        if tiles.ndim == 3:
            tiles = tiles[:, None]
        x = tiles.to(self.device, non_blocking=True)
        with autocast(self.device, self.dtype):
            ab = predict_ab8(self.model, x, self.cfg.temperature)
        return ab.cpu().numpy()  # one transfer (and sync) per batch, never per frame
