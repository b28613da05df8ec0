"""`colourbatch video` against the floor of its work, not against its own stages.

    python benchmarks/floor.py [--size 720] [--seconds 3] [--preset medium] [--weights weights/default.pt]
                               [--precision auto] [--repeat 1]

The floor is what colouring a film cannot do without, each measured alone in
this run, in CPU milliseconds per frame on one thread:

* decode: PyAV decoding the film to its YUV planes (no RGB, no LAB);
* encode: libx264 at the run's CRF and preset, fed ready YUV 4:2:0 frames;
* network: the model's forward on one 224x224 tile, batch 16, in the fastest
  runtime tried here (eager fp32, eager bf16 autocast where the CPU has it,
  torch.jit.freeze fp32, and the inference form the pipeline runs:
  device.prepare_model, batch norm folded, frozen for fp32), without the
  decoding of its output distribution.

It also prints the CPU cost of the work between those stages (not part of the
floor): colourbatch's planes path (luma -> L tile, a/b -> Cb/Cr beside the
untouched luma) and the RGB path it replaced, on the same frames.

With C cores and the three stages overlapped perfectly, no pipeline can beat
min(1000 / slowest stage, C x 1000 / sum of stages) frames/s. The script then
times `colourbatch video` (the library's colour_films, default settings, this
preset, stability on) on the same clip and prints its frames/s and the ratio to
that floor. All numbers come from one run on one machine: compare ratios.

Wall-clock frames/s fall when other work shares the machine, so the script
also prints the pipeline's CPU milliseconds per frame (this process, its
threads and the decode worker) against the sum of the floor's stages: that
ratio holds on a busy machine and shows the work the pipeline adds to the
floor's. `--repeat N` keeps the best of N pipeline runs.
"""
from __future__ import annotations

import argparse
import os
import resource
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


def glue_ms(path: Path) -> dict[str, float]:
    """CPU ms a frame of the work between decode, network and encode, on this clip's frames:
    the planes path colourbatch takes (luma -> L tile; luma + a/b -> Cb/Cr at 4:2:0 size), and
    for reference the RGB path it replaced (RGB decode -> L -> tile; merge_l_ab at full size ->
    RGB -> yuv420p)."""
    import av
    import numpy as np

    from colourbatch import colour, media

    tags = media.probe(path).colour
    with av.open(str(path)) as c:
        frames = list(c.decode(video=0))[:25]
    ab = np.random.default_rng(0).integers(110, 150, (2, 56, 56)).astype(np.uint8)
    w, h = frames[0].width, frames[0].height

    def planes():
        for f in frames:
            y = media.luma_plane(f, tags, w, h)
            colour.l_tile(colour.yuv_to_l(y, tags.full_range))
            colour.lab_to_chroma(y, ab, tags.matrix, tags.full_range, ((w + 1) // 2, (h + 1) // 2))

    def rgb_path():
        for f in frames:
            l8 = colour.rgb_to_l(f.to_ndarray(format="rgb24"))
            colour.l_tile(l8)
            av.VideoFrame.from_ndarray(colour.merge_l_ab(l8, ab), format="rgb24").reformat(format="yuv420p")
    return {"planes (colourbatch)": cpu_ms(planes, len(frames)), "RGB (before)": cpu_ms(rgb_path, len(frames))}


def network_ms(weights: str | None) -> dict[str, float]:
    import torch

    from colourbatch.device import autocast, cpu_bf16_ok, prepare_model
    from colourbatch.model import model_input
    from colourbatch.pipeline import load_weights

    torch.set_num_threads(1)
    net, _, _ = load_weights(weights)
    net = net.eval().to(memory_format=torch.channels_last)
    x = model_input(torch.randint(0, 256, (16, 1, 224, 224), dtype=torch.uint8))
    fast = prepare_model(net, torch.device("cpu"))
    runtimes = {"eager fp32": (net, torch.float32), "prepare_model fp32": (fast, torch.float32)}
    if cpu_bf16_ok():
        runtimes["eager bf16"] = (net, torch.bfloat16)
        runtimes["prepare_model bf16"] = (fast, torch.bfloat16)
    with torch.inference_mode():
        runtimes["jit.freeze fp32"] = (torch.jit.freeze(torch.jit.trace(net, x[:1])), torch.float32)
    out = {}
    cpu = torch.device("cpu")
    for name, (model, dtype) in runtimes.items():
        with torch.inference_mode(), autocast(cpu, dtype):
            model(x)  # warm-up: oneDNN picks its kernels on the first call
            out[name] = min(cpu_ms(lambda: model(x), len(x)) for _ in range(2))
    return out


def all_cpu_seconds() -> float:
    """CPU seconds of this process (every thread) and of its finished children (the decode worker)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def pipeline_fps(path: Path, preset: str, weights: str | None, precision: str) -> tuple[float, float]:
    """(frames/s, CPU ms a frame) of one `colourbatch video` run."""
    from colourbatch.config import RunConfig, VideoConfig
    from colourbatch.video import colour_films

    out = Path(tempfile.mkdtemp()) / "out.mp4"
    t0, c0 = time.perf_counter(), all_cpu_seconds()
    result = colour_films([path], out, VideoConfig(preset=preset),
                          RunConfig(weights=weights, workers=1, precision=precision))
    seconds, cpu = time.perf_counter() - t0, all_cpu_seconds() - c0
    assert result.ok, result.failed
    frames = result.reports[0].frames_out
    return frames / seconds, 1000 * cpu / frames


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=720, choices=sorted(SIZES))
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--preset", default="medium")
    ap.add_argument("--crf", type=int, default=18)
    ap.add_argument("--weights", default=None)
    ap.add_argument("--repeat", type=int, default=1, help="pipeline runs; the best is kept")
    ap.add_argument("--precision", default="auto", help="the pipeline's (auto: bf16 where the CPU has "
                    "it natively, else fp32)")
    args = ap.parse_args()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    clip = make_clip(Path(tempfile.mkdtemp()) / "clip.mp4", *SIZES[args.size], args.seconds)

    dec, frames = decode_ms(clip)
    enc = encode_ms(clip, args.preset, args.crf)
    nets = network_ms(args.weights)
    glue = glue_ms(clip)
    net_name, net = min(nets.items(), key=lambda kv: kv[1])
    stages = {"decode to YUV": dec, f"x264 crf {args.crf} {args.preset}": enc, f"network ({net_name})": net}
    floor = min(1000 / max(stages.values()), cores * 1000 / sum(stages.values()))
    runs = [pipeline_fps(clip, args.preset, args.weights, args.precision) for _ in range(max(1, args.repeat))]
    fps, cpu = max(r[0] for r in runs), min(r[1] for r in runs)
    work = sum(stages.values())

    import platform
    print(f"{args.size}p clip, {frames} frames; {cores} cores; {platform.processor() or platform.machine()}; "
          f"pipeline precision {args.precision}, preset {args.preset}")
    for name, ms in stages.items():
        print(f"  {name:28s} {ms:7.1f} ms a frame (one thread)")
    for name, ms in nets.items():
        print(f"    network, {name:17s} {ms:7.1f} ms a tile")
    for name, ms in glue.items():
        print(f"  between the stages, {name:20s} {ms:5.1f} ms a frame")
    print(f"  floor (perfect overlap)      {floor:7.2f} frames/s")
    print(f"  colourbatch video            {fps:7.2f} frames/s   = {fps / floor:.2f} of the floor")
    print(f"  CPU a frame: floor's stages {work:7.1f} ms, colourbatch video {cpu:.1f} ms "
          f"= {work / cpu:.2f} of the floor's work")


if __name__ == "__main__":
    main()
