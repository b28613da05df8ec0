"""Device choice, precision and the gradient scaler: the one copy.

`precision` is one of "auto", "fp32", "bf16", "fp16". "auto" means fp16 on CUDA
(bf16 where the card supports it), bf16 on CPUs whose oneDNN has native bf16
(about 2x faster for these conv nets), else fp32.
"""
from __future__ import annotations

import contextlib
import os

import torch

from .config import PRECISIONS
from .errors import ColourbatchError



class DeviceError(ColourbatchError):
    """The requested device or precision is not available here (refused before work: exit 2)."""


def pick_device(name: str = "auto") -> torch.device:
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' -> a usable torch.device."""
    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError("CUDA was asked for but no CUDA device is available")
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"{name}: only {torch.cuda.device_count()} CUDA device(s)")
        return dev
    if name == "cpu":
        return torch.device("cpu")
    raise DeviceError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)")


def cpu_bf16_ok() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(device: torch.device, precision: str = "auto") -> torch.dtype:
    """The compute dtype for `precision` on `device`."""
    if precision not in PRECISIONS:
        raise DeviceError(f"unknown precision {precision!r} (use {', '.join(PRECISIONS)})")
    if precision == "fp32":
        return torch.float32
    if device.type == "cuda":
        if precision == "auto":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if precision == "bf16" else torch.float16
    if precision == "fp16":
        raise DeviceError("fp16 autocast is for CUDA; use bf16 or fp32 on the CPU")
    if precision == "bf16" or cpu_bf16_ok():
        return torch.bfloat16
    return torch.float32


def autocast(device: torch.device, dtype: torch.dtype):
    """Autocast context for `dtype` on `device` (a no-op for fp32)."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def grad_scaler(device: torch.device, dtype: torch.dtype) -> torch.amp.GradScaler:
    """A scaler that is active only where fp16 needs one."""
    return torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)


def prepare_model(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Move to device in channels_last (faster convolutions on CPU oneDNN and CUDA)."""
    return model.to(device=device, memory_format=torch.channels_last)


def cpu_count() -> int:
    """The cores this process may use (its affinity, not the machine's total)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def set_cpu_threads(threads: int | None = None) -> int:
    """Use all cores for intra-op work unless told otherwise; returns the count.

    `threads` None: OMP_NUM_THREADS when set (Ray sets it to each worker's CPU
    share, and a user may), else every core this process may use.
    """
    if threads is None:
        env = os.environ.get("OMP_NUM_THREADS", "")
        threads = int(env) if env.isdigit() and int(env) > 0 else cpu_count()
    torch.set_num_threads(max(1, threads))
    return torch.get_num_threads()
