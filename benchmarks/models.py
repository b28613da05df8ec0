"""Model speed at 224x224 on this machine: images/s for each shipped model,
fp32 and bf16 autocast, batch 32, channels_last, inference only.

    python benchmarks/models.py [--batch 32] [--repeats 5] [--threads N]

Prints a table of whole predictions (forward + decode, `predict_ab8`) with the
network as it loads ("eager") and in the inference form every command runs
(device.prepare_model: batch norm folded, and for fp32 on the CPU a frozen
graph), then the forward alone in each runtime, then the cost of turning a
bin-distribution model's logits into a/b (its `decode`, each decoding policy,
and the one-piece softmax it replaced), ms a tile. Numbers are medians of
`repeats` timed batches after one warm-up, all measured in this one run so
the ratios between rows hold even on a noisy shared machine.
"""
import argparse
import statistics
import time

import torch

from colourbatch import checkpoint
from colourbatch.config import DECODES
from colourbatch.device import autocast, prepare_model, set_cpu_threads
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
                    ("frozen fp32", fast, torch.float32), ("folded bf16", fast, torch.bfloat16)]
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
