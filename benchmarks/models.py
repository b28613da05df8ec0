"""Model speed at 224x224 on this machine: images/s for each shipped model,
fp32 and bf16 autocast, batch 32, channels_last, inference only; and the
project's runtime against ONNX Runtime, the yardstick.

    python benchmarks/models.py [--batch 32] [--repeats 5] [--threads N] [--yardstick 1,2]

Prints a table of whole predictions (forward + decode, `predict_ab8`) with the
network as it loads ("eager") and in the inference form every command runs
(device.prepare_model: batch norm folded, and for fp32 on the CPU a frozen
graph), then the forward alone in each runtime, then the cost of turning a
bin-distribution model's logits into a/b (its `decode`, each decoding policy,
and the one-piece softmax it replaced), ms a tile. Numbers are medians of
`repeats` timed batches after one warm-up, all measured in this one run so
the ratios between rows hold even on a noisy shared machine.

The yardstick (`--yardstick 1,2`: thread counts, '' to skip; batch 16): the
first weights' network, batch norm folded, exported to ONNX in a temporary
folder and run by ONNX Runtime fp32 (CPU provider, all graph optimisations),
beside the forward every command runs (device.prepare_model) and the frozen
TorchScript graph it replaced, timed in alternating rounds in this one process;
median wall and CPU ms a tile, and the ratio to ONNX Runtime. ONNX Runtime is
not a dependency of colourbatch: `pip install onnxruntime onnx` for this
benchmark; without them the script says so and times the rest.
"""
import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable

import torch

from colourbatch import checkpoint
from colourbatch.config import DECODES
from colourbatch.device import autocast, fold_batchnorm, prepare_model, set_cpu_threads
from colourbatch.model import model_input, predict_ab8


def conv_gmacs(model, size: int = 224) -> float:
    """Multiply-accumulates of the model's convolutions for one size x size tile, in G."""
    total = [0]

    def hook(mod, inp, out):
        k = mod.kernel_size[0] * mod.kernel_size[1]
        total[0] += out.numel() * (mod.in_channels // mod.groups) * k

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.inference_mode():
        model(torch.rand(1, 1, size, size))
    for h in handles:
        h.remove()
    return total[0] / 1e9


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--yardstick", default="1,2", help="thread counts for the ONNX Runtime comparison")
    ap.add_argument("--weights", nargs="*", default=[str(checkpoint.shipped_weights("default")),
                                                     str(checkpoint.shipped_weights("seed"))])
    args = ap.parse_args()
    threads = set_cpu_threads(args.threads)
    cpu = torch.device("cpu")
    x = torch.randint(0, 256, (args.batch, 1, 224, 224), dtype=torch.uint8)
    print(f"CPU, {threads} threads, batch {args.batch}, 224x224, median of {args.repeats}")
    print(f"{'model':10} {'runtime':10} {'params':>9} {'GMAC/tile':>10} {'fp32 img/s':>11} {'bf16 img/s':>11}")
    for path in args.weights:
        eager, _ = checkpoint.load(path)
        name = checkpoint.model_config(eager)[0]
        gmacs = conv_gmacs(eager)
        eager = eager.to(memory_format=torch.channels_last)
        fast = prepare_model(eager, cpu)
        params = sum(p.numel() for p in eager.parameters())
        for label, model in (("eager", eager), ("inference", fast)):
            row = [args.batch / median_s(lambda: predict_ab8(model, x), args.repeats, dtype)
                   for dtype in (torch.float32, torch.bfloat16)]
            print(f"{name:10} {label:10} {params:>9,} {gmacs:10.2f} {row[0]:11.1f} {row[1]:11.1f}")
        xf = model_input(x)
        runtimes = [("eager fp32", eager, torch.float32), ("folded fp32", fast.net, torch.float32),
                    (f"{fast.runtime} fp32", fast, torch.float32), ("folded bf16", fast, torch.bfloat16)]
        for label, model, dtype in runtimes:
            print(f"{'':10} forward {label:12} {1000 * median_s(lambda: model(xf), args.repeats, dtype) / args.batch:6.1f} ms a tile")
        if hasattr(eager, "bins"):  # a distribution over a/b bins: time its decoding alone
            with torch.inference_mode():
                raw = fast(xf[:16])
            t = eager.cfg.temperature

            def one_piece():  # the decode before chunking: softmax and matmul over the whole batch
                return torch.softmax(raw.permute(0, 2, 3, 1) / t, -1) @ eager.bins
            decodes = [(p, lambda p=p: eager.decode(raw, policy=p)) for p in DECODES]
            for label, fn in decodes + [("one-piece", one_piece)]:
                print(f"{'':10} decode {label:13} {1000 * median_s(fn, args.repeats) / 16:6.1f} ms a tile")
    counts = [int(t) for t in args.yardstick.split(",") if t]
    if counts:
        net, _ = checkpoint.load(args.weights[0])
        print(f"\n{checkpoint.model_config(net)[0]} ({args.weights[0]}), forward, batch 16, 224x224, "
              f"median of {max(args.repeats, 5)} alternating rounds, ms a tile:")
        for threads in counts:
            for line in yardstick(net, threads, max(args.repeats, 5)):
                print(line)


def onnx_forward(net: torch.nn.Module, threads: int) -> Callable[[torch.Tensor], object] | str:
    """ONNX Runtime's fp32 forward of `net` (batch norm folded, exported to a temporary folder)
    on `threads` threads, as a function of the model's input tensor; or why there is none."""
    try:
        import onnxruntime as ort
    except ImportError:
        return "ONNX Runtime not installed (pip install onnxruntime onnx: for the benchmarks only)"
    folded = fold_batchnorm(net.eval()).to(memory_format=torch.channels_last)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        path = str(Path(tmp) / "net.onnx")
        try:
            torch.onnx.export(folded, torch.rand(1, 1, 224, 224), path, input_names=["l"],
                              output_names=["raw"], dynamic_axes={"l": {0: "batch"}}, dynamo=False)
        except (ImportError, RuntimeError) as exc:
            return f"ONNX export failed: {str(exc).splitlines()[0]}"
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"l": x.numpy()})[0]


def yardstick(net: torch.nn.Module, threads: int, rounds: int, batch: int = 16) -> list[str]:
    """Lines: the forward every command runs, the frozen graph and ONNX Runtime, on `threads`
    threads, timed in alternating rounds (median wall and CPU ms a tile, ratio to ONNX Runtime)."""
    fast = prepare_model(net.eval(), torch.device("cpu"))
    x = model_input(torch.randint(0, 256, (batch, 1, 224, 224), dtype=torch.uint8))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        frozen = torch.jit.freeze(torch.jit.trace(fast.net, x[:1], check_trace=False))
    runs = {f"prepare_model ({fast.runtime})": fast, "frozen TorchScript": frozen}
    ort_run = onnx_forward(net, threads)
    if callable(ort_run):
        runs["ONNX Runtime"] = ort_run
        with torch.inference_mode():
            diff = float(abs(torch.from_numpy(ort_run(x)) - fast(x)).max())
    wall: dict[str, list[float]] = {k: [] for k in runs}
    cpu: dict[str, list[float]] = {k: [] for k in runs}
    with torch.inference_mode():
        for fn in runs.values():
            fn(x)  # warm-up: kernels chosen, weights reordered
        for _ in range(rounds):
            for name, fn in runs.items():
                t, c = time.perf_counter(), time.process_time()
                fn(x)
                wall[name].append(1000 * (time.perf_counter() - t) / batch)
                cpu[name].append(1000 * (time.process_time() - c) / batch)
    med = {k: (statistics.median(wall[k]), statistics.median(cpu[k])) for k in runs}
    base = med.get("ONNX Runtime")
    lines = [f"  {threads} thread(s):"]
    for name, (w, c) in med.items():
        ratio = f"  = {w / base[0]:.2f} x ONNX Runtime (CPU {c / base[1]:.2f} x)" if base else ""
        lines.append(f"    {name:28s} {w:6.1f} ms wall {c:6.1f} ms CPU{ratio}")
    lines.append(f"    largest difference from ONNX Runtime's logits: {diff:.2g}" if base
                 else f"    {ort_run}")
    return lines


def median_s(fn, repeats: int, dtype=torch.float32) -> float:
    """Median seconds of `repeats` calls of `fn` under `dtype` autocast, after one warm-up."""
    cpu = torch.device("cpu")
    times = []
    with torch.inference_mode(), autocast(cpu, dtype):
        fn()  # warm-up: oneDNN picks its kernels on the first call
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return statistics.median(times)

if __name__ == "__main__":
    main()
