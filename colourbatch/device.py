"""Device choice, precision and the gradient scaler: the one copy.

`precision` is one of "auto", "fp32", "bf16", "fp16". "auto" means fp16 on CUDA
(bf16 where the card supports it), bf16 on CPUs with native bf16 arithmetic
(`cpu_bf16_ok`: about 2x faster for these conv nets), else fp32. The model's
fast inference form (`prepare_model`: batch norm folded, graph frozen) is made
here too, the threads each kind of run gives torch and OpenCV
(`threads_beside_encoder`, `lanes_beside_encoder`, `one_opencv_thread`), and
the free memory handed back before a worker forks (`return_free_memory`).
"""
from __future__ import annotations

import contextlib
import copy
import ctypes
import os
import warnings

import cv2
import torch
from torch.nn.utils.fusion import fuse_conv_bn_eval

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


#: Where Linux lists the CPU's instruction-set flags.
CPUINFO = "/proc/cpuinfo"
#: Flags of native bf16 arithmetic (AVX512-BF16 on Cooper Lake / Zen 4 and later, AMX on
#: Sapphire Rapids and later). oneDNN's own test (`_is_mkldnn_bf16_supported`) also says yes
#: on plain AVX-512 CPUs, where it emulates bf16 at 2-3x the cost of fp32.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def cpu_flags(path: str | None = None) -> frozenset[str] | None:
    """The CPU's flags from /proc/cpuinfo (`path`: another copy of it); None where there is none."""
    try:
        with open(path or CPUINFO, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):  # x86 / ARM spelling
                    return frozenset(value.split())
    except OSError:
        return None
    return frozenset()


def cpu_bf16_ok() -> bool:
    """Whether this CPU computes bf16 natively (so 'auto' picks it over fp32).

    Linux: a flag in NATIVE_BF16_FLAGS. Elsewhere (no /proc/cpuinfo: macOS,
    Windows) no: fp32 is never the slow choice, while emulated bf16 is 2-3x
    slower than fp32; ask for --precision bf16 where you know it pays.
    """
    flags = cpu_flags()
    return flags is not None and bool(flags & NATIVE_BF16_FLAGS)


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
    """Move to device in channels_last (faster convolutions on CPU oneDNN and CUDA); a model in
    eval mode (as weights load) also becomes its inference form (`inference_form`), a model
    in training mode (as train builds it) stays itself."""
    model = model.to(device=device, memory_format=torch.channels_last)
    return model if model.training else inference_form(model)


def fold_batchnorm(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of `model` in eval mode, each BatchNorm2d that follows a Conv2d in a Sequential
    folded into that convolution's weights and bias (and replaced by an Identity, so the
    other layers keep their names). Equal to `model` in eval mode within float rounding."""
    model = copy.deepcopy(model).eval().requires_grad_(False)
    for seq in model.modules():
        if isinstance(seq, torch.nn.Sequential):
            for i in range(len(seq) - 1):
                conv, bn = seq[i], seq[i + 1]
                if isinstance(conv, torch.nn.Conv2d) and isinstance(bn, torch.nn.BatchNorm2d):
                    seq[i] = fuse_conv_bn_eval(conv, bn).requires_grad_(False)
                    seq[i + 1] = torch.nn.Identity()
    return model


class FusedConv(torch.nn.Module):
    """A convolution, and the clamp after it (ReLU6, ReLU) if any, as one oneDNN call: the clamp
    is the convolution's post-op, applied while its output is in cache, instead of a second pass
    over memory (the clamps were 8 % of the forward on one thread, more on two). Without a
    clamp (MobileNetV2's linear 1x1 projections, the heads) it is still oneDNN's kernel: torch's
    own path for a 1x1 convolution is im2col and a GEMM, about 1.5 ms a 224x224 tile slower on
    this network, 4 tiles a call on one thread (docs/speed.md). Same fp32 arithmetic."""

    def __init__(self, conv: torch.nn.Conv2d, low: float | None = None, high: float | None = None):
        super().__init__()
        self.weight, self.bias = conv.weight, conv.bias
        self.args = (list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups)
        if low is None:
            self.post: tuple[str, list] = ("none", [])
        else:
            self.post = ("hardtanh", [low, high]) if high is not None else ("relu", [])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._convolution_pointwise(x, self.weight, self.bias, *self.args,
                                                       self.post[0], self.post[1], "")


#: The activations a FusedConv takes in: (low, high) of their clamp (None: no upper bound).
_CLAMPS = {torch.nn.ReLU6: (0.0, 6.0), torch.nn.ReLU: (0.0, None)}


def fuse_convolutions(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of a folded network (`fold_batchnorm`) in which every zero-padded Conv2d is a
    FusedConv: with the ReLU6 or ReLU that follows it in a Sequential (past the Identity left
    by a folded batch norm) as its post-op, that activation becoming an Identity; alone
    otherwise."""
    model = copy.deepcopy(model)
    for seq in model.modules():
        if not isinstance(seq, torch.nn.Sequential):
            continue
        for i, conv in enumerate(seq):
            if type(conv) is not torch.nn.Conv2d or conv.padding_mode != "zeros":
                continue
            j = i + 1
            while j < len(seq) and isinstance(seq[j], torch.nn.Identity):
                j += 1
            if j < len(seq) and type(seq[j]) in _CLAMPS:
                seq[i], seq[j] = FusedConv(conv, *_CLAMPS[type(seq[j])]), torch.nn.Identity()
    for parent in list(model.modules()):  # the convolutions no clamp follows
        for name, conv in list(parent.named_children()):
            if type(conv) is torch.nn.Conv2d and conv.padding_mode == "zeros":
                setattr(parent, name, FusedConv(conv))
    return model


class InferenceForm(torch.nn.Module):
    """A network for inference only: its batch norms folded (`fold_batchnorm`), and on the CPU in
    fp32 its forward `fast`: each convolution (and its clamp) one oneDNN call (`fuse_convolutions`,
    runtime "fused"), or where this torch lacks that call, a frozen TorchScript graph
    (`torch.jit.freeze` of a trace, runtime "frozen"). Every other attribute (decode, cfg,
    bins, ...) is the folded network's, so it stands wherever the network does.

    Under autocast (bf16, fp16) the folded network runs eagerly (runtime "folded"): autocast
    reaches neither into a frozen graph nor into the fused calls. 224x224 tiles, batch 16, one
    thread, 2-vCPU Xeon, CPU ms a tile (two runs of `benchmarks/models.py --yardstick`): fused
    24.3-24.7, frozen 26.6-26.8, ONNX Runtime 23.6-24.0 (docs/speed.md).
    """

    def __init__(self, net: torch.nn.Module, fast: torch.nn.Module | None, runtime: str):
        super().__init__()
        self.net, self.fast, self.runtime = net, fast, runtime

    def forward(self, l: torch.Tensor) -> torch.Tensor:
        if self.fast is None or torch.is_autocast_enabled(l.device.type):
            return self.net(l)
        return self.fast(l)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["net"], name)


def inference_form(model: torch.nn.Module, size: int = 224) -> InferenceForm:
    """`model` (on its device, channels_last) as an InferenceForm. On the CPU its fused form is
    checked against the folded network on one `size` tile, and used only where it matches
    (else the frozen graph, traced on that tile: it serves any batch and tile size)."""
    net = fold_batchnorm(model)
    param = next(net.parameters(), None)
    if param is None or param.device.type != "cpu":
        return InferenceForm(net, None, "folded")  # CUDA: folded, eager (cuDNN picks its own kernels)
    example = torch.rand(1, 1, size, size).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        want = net(example)
        try:
            fused = fuse_convolutions(net)
            if torch.allclose(fused(example), want, rtol=1e-4, atol=1e-4 * float(want.abs().max())):
                return InferenceForm(net, fused, "fused")
        except (AttributeError, RuntimeError):  # a torch built without oneDNN's fused call
            pass
        try:
            with warnings.catch_warnings():
                # torch 2.13 marks TorchScript deprecated (for torch.compile, which needs a C++
                # toolchain and a minute of compiling per shape on a CPU); it still runs.
                warnings.simplefilter("ignore", DeprecationWarning)
                frozen = torch.jit.freeze(torch.jit.trace(net, example, check_trace=False))
        except (AttributeError, RuntimeError):  # a torch without TorchScript: the folded net as it is
            return InferenceForm(net, None, "folded")
    return InferenceForm(net, frozen, "frozen")


def cpu_count() -> int:
    """The cores this process may use (its affinity, not the machine's total)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def threads_beside_encoder() -> int:
    """Torch's intra-op threads for a run that also encodes video on these cores: half of them,
    at least 1 (OMP_NUM_THREADS, when set, wins).

    x264 keeps about 1.5 frame threads a core busy and the decoder runs in its own
    process; torch's OpenMP threads spin while they wait for work, so torch on every
    core takes CPU from the encoder. 720p, preset medium, 2 cores (docs/speed.md):
    CPU a frame 270 ms with torch on 2 threads, 202 on 1.
    """
    return omp_threads() or max(1, cpu_count() // 2)


def lanes_beside_encoder(threads: int) -> int:
    """How many chunks of a batch torch runs at once, each in a thread of its own on one
    intra-op thread, in a run that also encodes video with torch on `threads` intra-op threads.

    On one intra-op thread, one lane a core: the lanes take the cores that x264, the colour
    stage, the writer and the decoder leave idle (a small film leaves one idle most of the
    time; the network is then the slowest stage) and give them back when the encoder needs
    them, with none of OpenMP's spinning at every layer's end (`threads_beside_encoder`).
    Each chunk computes what it computes alone. Measured in benchmarks/RESULTS-video.md
    ("Lanes, and a film's rate"): more frames/s where the network was the slowest stage
    (small films, fast presets), about the same where x264 fills both cores.
    One lane when torch has several intra-op threads or OMP_NUM_THREADS is set (Ray's CPU share
    for a worker, or a user's choice: more threads would overrun it).
    """
    if threads > 1 or omp_threads() is not None:
        return 1
    return cpu_count()


@contextlib.contextmanager
def one_opencv_thread():
    """OpenCV on one thread within the block, as it was after. Training's data workers run
    beside the training threads, and OpenCV's own pool of a thread per core in each would
    oversubscribe the cores (drawn samples ran 10x slower); a film's encoder, decoder and
    torch lanes take the cores, and the pool's threads spin between the stabiliser's small
    calls for no gain (video.colour_job). Set in the parent, before the workers fork: a
    forked worker that reconfigures OpenCV's pool hangs on its lock."""
    before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


def omp_threads() -> int | None:
    """OMP_NUM_THREADS when set to a count (Ray sets it to each worker's CPU share; a user may)."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    return int(env) if env.isdigit() and int(env) > 0 else None


def set_cpu_threads(threads: int | None = None) -> int:
    """Use all cores for intra-op work unless told otherwise; returns the count.

    `threads` None: OMP_NUM_THREADS when set (Ray sets it to each worker's CPU
    share, and a user may), else every core this process may use.
    """
    if threads is None:
        threads = omp_threads() or cpu_count()
    torch.set_num_threads(max(1, threads))
    return torch.get_num_threads()


def return_free_memory() -> bool:
    """Hand the C allocator's free memory back to the kernel (glibc's malloc_trim); False where
    the C library has none (musl, macOS, Windows).

    Called just before a data worker forks. Pages this process holds at the fork are
    shared with the child copy-on-write, and the allocator reuses its free ones for each
    batch's tensors: every first write to one copied it, and in a process with threads
    each copy also flushed the other cores' TLBs (a tenth of a 1080p film's CPU samples
    were in the kernel, most in those faults). Handed back, those pages come fresh when
    reused: no copy, no flush. A process's later films gain most, as the earlier ones
    leave their memory free (`python benchmarks/ab.py OLD NEW --films 3`, the third film,
    2-vCPU Xeon: 720p veryfast 25.7 -> 27.8 frames/s, 1080p veryfast 16.9 -> 18.6, 720p
    medium 16.3 -> 18.0); a first film, with little to hand back, is within the noise.
    """
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError, TypeError):  # TypeError: Windows has no CDLL(None)
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim(0)
    return True
