"""Weights files that describe themselves: {format, model, config, state, metadata}.

A file is rebuilt into a network from its own model name and config (as
nanoGPT's `model_args`), loaded with ``torch.load(weights_only=True)`` so a
file can never run code, and its structure is checked in full before anything
uses it: every way a file can be wrong ends in one CheckpointError line.
Training checkpoints add a ``train`` entry (optimizer, step, RNG, data
position) used by ``--resume``. Writes go through files.atomic_output: a
failed or interrupted save leaves the previous file whole.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import warnings
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import files
from .errors import ColourbatchError, InputError, WriteError, one_line
from .model import build_model, model_config

FORMAT = "colourbatch-weights"
VERSION = 1
#: The shipped weights file pages and video use when no --weights is given.
DEFAULT_NAME = "default"


def shipped_weights(name: str = DEFAULT_NAME) -> Path:
    """The path of a shipped weights file (`weights/NAME.pt`, installed as colourbatch.weights).

    Found through importlib.resources, so it works from an editable install and
    a wheel alike; from a checkout that is not installed (the package imported
    from the repository's root, as benchmarks/ and a GPU machine's copy do), the
    weights/ folder beside it.
    """
    try:
        folder = resources.files("colourbatch.weights")
    except ModuleNotFoundError:
        folder = Path(__file__).resolve().parent.parent / "weights"
    return Path(str(folder.joinpath(f"{name}.pt")))


class CheckpointError(ColourbatchError):
    """A weights file that is missing, corrupt, or not a colourbatch checkpoint (exit 2)."""


def save(path: str | os.PathLike, model: nn.Module, metadata: dict[str, Any] | None = None,
         train_state: dict[str, Any] | None = None, half: bool = False) -> Path:
    """Write `model` (and optionally its training state) atomically to `path`.

    WriteError (one line) when it cannot be written; the previous file stays.
    """
    name, config = model_config(_unwrap(model))
    state = {k: v.detach().cpu() for k, v in _unwrap(model).state_dict().items()}
    if half:  # shipped weights: fp16 storage halves the file, floats come back as fp32 on load
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    blob = {"format": FORMAT, "version": VERSION, "model": name, "config": config,
            "state": state, "metadata": dict(metadata or {})}
    if train_state is not None:
        blob["train"] = train_state
    path = Path(path)
    with files.atomic_output(path, make_parents=True) as tmp:
        try:
            torch.save(blob, tmp)
        except RuntimeError as exc:  # torch's zip writer reports a full disk as RuntimeError
            raise WriteError(f"cannot write {path} ({one_line(exc)})") from None
    return path


def _torch_load(path: Path) -> Any:
    """torch.load(weights_only=True) with every failure as one CheckpointError line."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. the pickle-protocol note: not the user's business
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # torch's own text advises loading with weights_only=False; never repeat that.
        # Garbage and pickled code land here alike: one answer for both.
        raise CheckpointError(f"{path}: not a readable weights file (not a file of tensors; "
                              f"colourbatch never runs code from a file)") from None
    except Exception as exc:  # torch raises many types for a bad file; all mean the same here
        raise CheckpointError(f"{path}: not a readable weights file ({one_line(exc)})") from None


def _open(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: weights file not found")
    try:
        files.check_regular(path)  # a FIFO would block torch.load forever, /dev/zero never ends
    except InputError as exc:
        raise CheckpointError(f"{path}: {exc}, not a weights file") from None
    return _torch_load(path)


def _is_tensor_dict(obj: Any) -> bool:
    return (isinstance(obj, dict) and bool(obj)
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()))


def read_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A file's named tensors: a plain state dict (such as torchvision's .pth files) or a
    colourbatch weights file's state (checked in full); CheckpointError otherwise."""
    return read(path)["state"]


def read(path: str | os.PathLike) -> dict[str, Any]:
    """The raw checkpoint dict, validated in full; raises CheckpointError with a one-line reason."""
    blob = _open(path)
    if not isinstance(blob, dict):
        raise CheckpointError(f"{path}: not a colourbatch weights file")
    if blob.get("format") != FORMAT:
        if _is_tensor_dict(blob):
            # A bare state dict (e.g. from another training script): usable when the
            # caller names the model, since it does not describe itself.
            return {"format": FORMAT, "version": VERSION, "model": None, "config": {},
                    "state": blob, "metadata": {"source": "bare state dict"}}
        raise CheckpointError(f"{path}: not a colourbatch weights file")
    _check_body(blob, path)
    return blob


def _check_body(blob: dict[str, Any], path) -> None:
    """Refuse a file with the right tag whose body is not what save() writes."""
    def bad(why: str) -> CheckpointError:
        return CheckpointError(f"{path}: malformed weights file ({why})")

    version = blob.get("version", VERSION)
    if type(version) is not int:
        raise bad(f"version is {type(version).__name__}, not a whole number")
    if version > VERSION:
        raise CheckpointError(f"{path}: written by a newer colourbatch (format {version})")
    for key in ("model", "config", "state"):
        if key not in blob:
            raise CheckpointError(f"{path}: weights file lacks '{key}'")
    if not isinstance(blob["model"], str):
        raise bad(f"model is {type(blob['model']).__name__}, not a name")
    for key in ("config", "metadata"):
        if not isinstance(blob.get(key, {}), dict):
            raise bad(f"{key} is {type(blob[key]).__name__}, not a dict")
    if not _is_tensor_dict(blob["state"]):
        raise bad("state is not a dict of named tensors")
    blob.setdefault("metadata", {})
    if "train" in blob:
        _check_train_state(blob["train"], bad)


def _check_train_state(st: Any, bad) -> None:
    """The `train` entry --resume needs: optimizer, counters and the CPU RNG state."""
    if not isinstance(st, dict):
        raise bad(f"training state is {type(st).__name__}, not a dict")
    for key in ("optimizer", "step", "seen", "rng"):
        if key not in st:
            raise bad(f"training state lacks '{key}'")
    opt = st["optimizer"]
    if (not isinstance(opt, dict) or not isinstance(opt.get("state"), dict)
            or not isinstance(opt.get("param_groups"), list)
            or not all(isinstance(g, dict) and isinstance(g.get("params"), list)
                       for g in opt["param_groups"])):
        raise bad("optimizer state is not an optimizer's state dict")
    for key in ("step", "seen", "world"):
        if key in st and (type(st[key]) is not int or st[key] < (1 if key == "world" else 0)):
            raise bad(f"training state '{key}' is not a count")
    if type(st.get("seconds", 0.0)) not in (int, float):
        raise bad("training state 'seconds' is not a number")
    rng = st["rng"]
    if not isinstance(rng, torch.Tensor) or rng.dtype != torch.uint8 or rng.dim() != 1:
        raise bad("training state 'rng' is not a CPU random generator state")
    if "ema" in st and not _is_tensor_dict(st["ema"]):
        raise bad("training state 'ema' is not a weight average's tensors")


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
    except Exception as exc:  # building is deterministic: any failure means a config it cannot use
        raise CheckpointError(f"{path}: cannot build model '{blob['model']}' ({one_line(exc)})") from None
    state = {k: v.float() if v.is_floating_point() else v for k, v in blob["state"].items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit model '{blob['model']}' "
                              f"({one_line(exc)})") from None
    return model.eval()


def load_optimizer_state(opt: torch.optim.Optimizer, blob: dict[str, Any],
                         path: str | os.PathLike = "<checkpoint>") -> None:
    """Load a checkpoint's optimizer state into `opt`, built for the same model; CheckpointError
    when it does not fit (other parameter groups, other shapes)."""
    saved = blob["train"]["optimizer"]
    groups, ours = saved["param_groups"], opt.param_groups
    if len(groups) != len(ours) or any(len(g["params"]) != len(o["params"])
                                       for g, o in zip(groups, ours)):
        raise CheckpointError(f"{path}: its optimizer state has other parameter groups than "
                              f"model '{blob['model']}' trains")
    params = [p for g in ours for p in g["params"]]
    for idx, entry in saved["state"].items():
        fits = type(idx) is int and 0 <= idx < len(params) and isinstance(entry, dict)
        if not fits or any(isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape != params[idx].shape
                           for v in entry.values()):
            raise CheckpointError(f"{path}: its optimizer state does not fit model '{blob['model']}'")
    try:
        opt.load_state_dict(saved)
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: its optimizer state does not fit ({one_line(exc)})") from None


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)  # DistributedDataParallel wraps the real model
