"""`colourbatch video` against the floor of its work, not against its own stages.

    python benchmarks/floor.py [--size 720] [--seconds 3] [--preset medium] [--weights weights/default.pt]

The floor is what colouring a film cannot do without, each measured alone in
this run, in CPU milliseconds per frame on one thread:

* decode: PyAV decoding the film to its YUV planes (no RGB, no LAB);
* encode: libx264 at the run's CRF and preset, fed ready YUV 4:2:0 frames;
* network: the model's forward on one 224x224 tile, batch 16, in the fastest
  runtime tried here (eager fp32, eager bf16 autocast where the CPU has it,
  torch.jit.freeze fp32), without the decoding of its output distribution.

With C cores and the three stages overlapped perfectly, no pipeline can beat
min(1000 / slowest stage, C x 1000 / sum of stages) frames/s. The script then
times `colourbatch video` (the library's colour_films, default settings, this
preset, stability on) on the same clip and prints its frames/s and the ratio to
that floor. All numbers come from one run on one machine: compare ratios.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.video import SIZES, make_clip  # noqa: E402


def cpu_ms(fn, count: int) -> float:
    """CPU milliseconds per item of fn(), which processes `count` items (process CPU time)."""
    t0 = time.process_time()
    fn()
    return (time.process_time() - t0) * 1000 / count


def decode_ms(path: Path) -> tuple[float, int]:
    import av

    def run():
        with av.open(str(path)) as c:
            vs = c.streams.video[0]
            vs.thread_type = "AUTO"
            for frame in c.decode(vs):
                frame.to_ndarray(format="yuv420p")  # the planes, as a YUV-native path would take them
    with av.open(str(path)) as c:
        n = sum(1 for _ in c.decode(video=0))
    return cpu_ms(run, n), n


def encode_ms(path: Path, preset: str, crf: int) -> float:
    import av

    with av.open(str(path)) as c:
        planes = [f.to_ndarray(format="yuv420p") for f in c.decode(video=0)]
        w, h = c.streams.video[0].width, c.streams.video[0].height
    out_path = Path(tempfile.mkdtemp()) / "enc.mp4"

    def run():
        with av.open(str(out_path), "w") as out:
            vs = out.add_stream("libx264", rate=25)
            vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
            vs.options = {"crf": str(crf), "preset": preset, "threads": "1"}
            for i, p in enumerate(planes):
                f = av.VideoFrame.from_ndarray(p, format="yuv420p")
                f.pts = i
                out.mux(vs.encode(f))
            out.mux(vs.encode())
    return cpu_ms(run, len(planes))


def network_ms(weights: str | None) -> dict[str, float]:
    import torch

    from colourbatch.device import autocast, cpu_bf16_ok
    from colourbatch.model import model_input
    from colourbatch.pipeline import load_weights

    torch.set_num_threads(1)
    net, _, _ = load_weights(weights)
    net = net.eval().to(memory_format=torch.channels_last)
    x = model_input(torch.randint(0, 256, (16, 1, 224, 224), dtype=torch.uint8))
    runtimes = {"eager fp32": (net, torch.float32)}
    if cpu_bf16_ok():
        runtimes["eager bf16"] = (net, torch.bfloat16)
    with torch.inference_mode():
        runtimes["jit.freeze fp32"] = (torch.jit.freeze(torch.jit.trace(net, x[:1])), torch.float32)
    out = {}
    cpu = torch.device("cpu")
    for name, (model, dtype) in runtimes.items():
        with torch.inference_mode(), autocast(cpu, dtype):
            model(x)  # warm-up: oneDNN picks its kernels on the first call
            out[name] = min(cpu_ms(lambda: model(x), len(x)) for _ in range(2))
    return out


def pipeline_fps(path: Path, preset: str, weights: str | None) -> float:
    from colourbatch.config import RunConfig, VideoConfig
    from colourbatch.video import colour_films

    out = Path(tempfile.mkdtemp()) / "out.mp4"
    t0 = time.perf_counter()
    result = colour_films([path], out, VideoConfig(preset=preset), RunConfig(weights=weights, workers=1))
    seconds = time.perf_counter() - t0
    assert result.ok, result.failed
    return result.reports[0].frames_out / seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=720, choices=sorted(SIZES))
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--preset", default="medium")
    ap.add_argument("--crf", type=int, default=18)
    ap.add_argument("--weights", default=None)
    args = ap.parse_args()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    clip = make_clip(Path(tempfile.mkdtemp()) / "clip.mp4", *SIZES[args.size], args.seconds)

    dec, frames = decode_ms(clip)
    enc = encode_ms(clip, args.preset, args.crf)
    nets = network_ms(args.weights)
    net_name, net = min(nets.items(), key=lambda kv: kv[1])
    stages = {"decode to YUV": dec, f"x264 crf {args.crf} {args.preset}": enc, f"network ({net_name})": net}
    floor = min(1000 / max(stages.values()), cores * 1000 / sum(stages.values()))
    fps = pipeline_fps(clip, args.preset, args.weights)

    import platform
    print(f"{args.size}p clip, {frames} frames; {cores} cores; {platform.processor() or platform.machine()}")
    for name, ms in stages.items():
        print(f"  {name:28s} {ms:7.1f} ms a frame (one thread)")
    for name, ms in nets.items():
        print(f"    network, {name:17s} {ms:7.1f} ms a tile")
    print(f"  floor (perfect overlap)      {floor:7.2f} frames/s")
    print(f"  colourbatch video            {fps:7.2f} frames/s   = {fps / floor:.2f} of the floor")


if __name__ == "__main__":
    main()
