"""Weights files that describe themselves: {format, model, config, state, metadata}.

A file is rebuilt into a network from its own model name and config (as
nanoGPT's `model_args`), loaded with ``torch.load(weights_only=True)`` so a
file can never run code. Training checkpoints add a ``train`` entry (optimizer,
step, RNG, data position) used by ``--resume``. Writes are atomic: a temporary
file in the same folder, fsynced, then renamed over the target.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .model import build_model, model_config

FORMAT = "colourbatch-weights"
VERSION = 1
#: The shipped weights file pages and video use when no --weights is given.
DEFAULT_NAME = "default"


def shipped_weights(name: str = DEFAULT_NAME) -> Path:
    """The path of a shipped weights file (`weights/NAME.pt`, installed as colourbatch.weights).

    Found through importlib.resources, so it works from the repository, an
    editable install and a wheel alike.
    """
    from importlib.resources import files

    return Path(str(files("colourbatch.weights").joinpath(f"{name}.pt")))


class CheckpointError(ValueError):
    """A weights file that is missing, corrupt, or not a colourbatch checkpoint."""


def save(path: str | os.PathLike, model: nn.Module, metadata: dict[str, Any] | None = None,
         train_state: dict[str, Any] | None = None, half: bool = False) -> Path:
    """Write `model` (and optionally its training state) atomically to `path`."""
    name, config = model_config(_unwrap(model))
    state = {k: v.detach().cpu() for k, v in _unwrap(model).state_dict().items()}
    if half:  # shipped weights: fp16 storage halves the file, floats come back as fp32 on load
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    blob = {"format": FORMAT, "version": VERSION, "model": name, "config": config,
            "state": state, "metadata": dict(metadata or {})}
    if train_state is not None:
        blob["train"] = train_state
    return atomic_torch_save(blob, path)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """torch.save to a temporary name beside `path`, fsync, rename: all or nothing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; weights are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        with _suppress():
            os.unlink(tmp)
        raise
    return path


def read(path: str | os.PathLike) -> dict[str, Any]:
    """The raw checkpoint dict, validated; raises CheckpointError with a one-line reason."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: weights file not found")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, not a weights file")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file; all mean the same here
        raise CheckpointError(f"{path}: not a readable weights file ({_first_line(exc)})") from None
    if not isinstance(blob, dict):
        raise CheckpointError(f"{path}: not a colourbatch weights file")
    if blob.get("format") != FORMAT:
        if blob and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in blob.items()):
            # A bare state dict (e.g. from another training script): usable when the
            # caller names the model, since it does not describe itself.
            return {"format": FORMAT, "version": VERSION, "model": None, "config": {},
                    "state": blob, "metadata": {"source": "bare state dict"}}
        raise CheckpointError(f"{path}: not a colourbatch weights file")
    if blob.get("version", 0) > VERSION:
        raise CheckpointError(f"{path}: written by a newer colourbatch (format {blob['version']})")
    for key in ("model", "config", "state"):
        if key not in blob:
            raise CheckpointError(f"{path}: weights file lacks '{key}'")
    return blob


def load(path: str | os.PathLike, expect_model: str | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the network a weights file describes; returns (model in eval mode, metadata).

    `expect_model` must match what the file says; for a bare state dict, which
    says nothing, it names the model to build.
    """
    blob = read(path)
    if blob["model"] is None:
        if expect_model is None:
            raise CheckpointError(f"{path}: a bare state dict does not say its model; pass --model")
        blob = dict(blob, model=expect_model)
    return model_from_blob(blob, path, expect_model), blob["metadata"]


def model_from_blob(blob: dict[str, Any], path: str | os.PathLike = "<checkpoint>",
                    expect_model: str | None = None) -> nn.Module:
    if expect_model is not None and blob["model"] != expect_model:
        raise CheckpointError(f"{path}: holds model '{blob['model']}', not '{expect_model}'")
    try:
        model = build_model(blob["model"], blob["config"])
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    state = {k: v.float() if v.is_floating_point() else v for k, v in blob["state"].items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit model '{blob['model']}' "
                              f"({_first_line(exc)})") from None
    return model.eval()


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)  # DistributedDataParallel wraps the real model


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


class _suppress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return True
