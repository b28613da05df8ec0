"""Model speed at 224x224 on this machine: images/s for each shipped model,
fp32 and bf16 autocast, batch 32, channels_last, inference only.

    python benchmarks/models.py [--batch 32] [--repeats 5] [--threads N]

Prints a table, then the cost of turning a bin-distribution model's logits
into a/b (its `decode`, each decoding policy, ms a tile); numbers are medians of `repeats` timed batches after one
warm-up, all measured in this one run so the ratios between rows hold even on
a noisy shared machine.
"""
import argparse
import statistics
import time

import torch

from colourbatch import checkpoint
from colourbatch.config import DECODES
from colourbatch.device import autocast, prepare_model, set_cpu_threads
from colourbatch.model import predict_ab8


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
    print(f"{'model':10} {'params':>9} {'GMAC/tile':>10} {'fp32 img/s':>11} {'bf16 img/s':>11}")
    for path in args.weights:
        model, _ = checkpoint.load(path)
        name = checkpoint.model_config(model)[0]
        gmacs = conv_gmacs(model)
        model = prepare_model(model, cpu).eval()
        row = []
        for dtype in (torch.float32, torch.bfloat16):
            times = []
            with torch.inference_mode(), autocast(cpu, dtype):
                predict_ab8(model, x)
                for _ in range(args.repeats):
                    t = time.perf_counter()
                    predict_ab8(model, x)
                    times.append(time.perf_counter() - t)
            row.append(args.batch / statistics.median(times))
        params = sum(p.numel() for p in model.parameters())
        print(f"{name:10} {params:>9,} {gmacs:10.2f} {row[0]:11.1f} {row[1]:11.1f}")
        if hasattr(model, "bins"):  # a distribution over a/b bins: time its decoding alone
            with torch.inference_mode():
                raw = model(x[:16].float().div(255).contiguous(memory_format=torch.channels_last))
                for policy in DECODES:
                    times = []
                    for _ in range(args.repeats + 1):
                        t = time.perf_counter()
                        model.decode(raw, policy=policy)
                        times.append(time.perf_counter() - t)
                    print(f"{'':10} decode {policy:10} {1000 * statistics.median(times[1:]) / 16:6.1f} ms a tile")


if __name__ == "__main__":
    main()
