"""Benchmark of `colourbatch video`: each stage alone, the overlapped pipeline, and peak memory.

Makes its own synthetic clips (moving gradients and shapes, greyscale) at
360p/720p/1080p, then measures on this machine, in one run:

* decode  - media.Decoder to the luma plane + colour.yuv_to_l + colour.l_tile (the DataLoader worker's work)
* model   - pipeline.Colouriser.predict on batches of tiles (the main process's work)
* encode  - colour.lab_to_chroma + media.Encoder.write_planes, libx264 (the writer thread's work)
* pipeline - video.colour_video, all three overlapped

and the ratio of the pipeline's frames/s to the best the overlap could give:
min(slowest stage alone, cores x 1000 / summed CPU ms per frame of the stages). Wall-clock rates swing when other
work shares the machine, so CPU ms per frame is printed too: the pipeline's CPU
cost against the sum of its stages' shows what overlapping costs. Peak RSS is measured in a fresh
subprocess per clip (10 s and 60 s at 720p): it must not grow with length.

    python benchmarks/video.py [--weights weights/default.pt] [--sizes 360,720,1080]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SIZES = {360: (640, 360), 720: (1280, 720), 1080: (1920, 1080)}


def make_clip(path: Path, width: int, height: int, seconds: float, fps: int = 25) -> Path:
    """A greyscale clip with motion everywhere (so the encoder works as on film)."""
    import av
    import cv2

    out = av.open(str(path), "w")
    vs = out.add_stream("libx264", rate=fps)
    vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
    vs.options = {"preset": "ultrafast", "crf": "20"}
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 24, (height, width), dtype=np.uint8)
    for i in range(int(seconds * fps)):
        g = (127 + 60 * np.sin(xx / 37.0 + i / 5.0) + 40 * np.cos(yy / 23.0 - i / 7.0)).astype(np.uint8)
        cx, cy = int(width * (0.5 + 0.35 * np.sin(i / 15))), int(height * (0.5 + 0.3 * np.cos(i / 11)))
        cv2.circle(g, (cx, cy), height // 6, 240, -1)
        cv2.rectangle(g, (width // 4 + i * 3 % (width // 2), height // 5), (width // 4 + i * 3 % (width // 2) + 80, height // 5 + 60), 20, -1)
        g = cv2.add(g, np.roll(noise, i * 7, axis=1))
        f = av.VideoFrame.from_ndarray(np.ascontiguousarray(np.stack([g] * 3, -1)), format="rgb24")
        f.pts = i
        f.time_base = Fraction(1, fps)
        for p in vs.encode(f):
            out.mux(p)
    for p in vs.encode():
        out.mux(p)
    out.close()
    return path


def cpu_seconds() -> float:
    """CPU time of this process (all threads) and its finished children (the decode worker)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


class Meter:
    """Wall-clock frames/s and CPU ms per frame of a block. CPU time barely moves when other
    work shares the machine, so it is the stable measure of each stage's cost."""

    def __enter__(self):
        self.t, self.c = time.perf_counter(), cpu_seconds()
        return self

    def done(self, frames: int) -> tuple[float, float]:
        wall, cpu = time.perf_counter() - self.t, cpu_seconds() - self.c
        return frames / wall, 1000 * cpu / frames

    def __exit__(self, *exc):
        return False


def bench_decode(clip: Path) -> tuple[float, float]:
    from colourbatch import colour, media
    tags = media.probe(clip).colour
    n = 0
    with Meter() as m:
        for pic, _ in media.Decoder(clip, tags=tags):
            colour.l_tile(colour.yuv_to_l(pic.y, tags.full_range))
            n += 1
        return m.done(n)


def bench_model(engine, frames: int, batch: int) -> float:
    import torch
    tiles = torch.randint(0, 256, (batch, 1, 224, 224), dtype=torch.uint8)
    for _ in range(3):
        engine.predict(tiles)  # warm-up (oneDNN builds its kernels on the first calls)
    done = 0
    with Meter() as m:
        while done < frames:
            engine.predict(tiles)
            done += batch
        return m.done(done)


def bench_encode(clip: Path, engine, frames: int) -> float:
    from colourbatch import colour, media
    info = media.probe(clip)
    tags = info.colour
    held = []
    for pic, pts in media.Decoder(clip, tags=tags):
        held.append(pic.y)
        if len(held) == 16:
            break
    import torch
    tiles = np.stack([colour.l_tile(colour.yuv_to_l(y, tags.full_range)) for y in held])
    ab = engine.predict(torch.from_numpy(tiles)[:, None])
    with tempfile.TemporaryDirectory() as d:
        enc = media.Encoder(Path(d) / "e.mp4", info, info.width, info.height, media.EncodeSettings())
        step = int(round(1 / (info.fps * info.time_base)))
        with Meter() as m:
            for i in range(frames):
                y = held[i % len(held)]
                cb, cr = colour.lab_to_chroma(y, ab[i % len(held)], tags.matrix, tags.full_range,
                                              enc.chroma_size)
                enc.write_planes(y, cb, cr, i * step)
            enc.close()
            return m.done(frames)


def bench_pipeline(clip: Path, engine, batch: int) -> float:
    """Steady-state frames/s: the model is loaded and warm, as for the 2nd film of a batch run."""
    from colourbatch.video import VideoConfig, colour_video
    with tempfile.TemporaryDirectory() as d, Meter() as m:
        rep = colour_video(clip, Path(d) / "out.mp4", engine.cfg, VideoConfig(), colouriser=engine)
        return m.done(rep.frames_out)


def rss_child(clip: Path, weights: str, batch: int) -> dict:
    """Peak RSS (MiB) of a fresh process colouring `clip`: main process and decode worker."""
    code = (
        "import json, resource, sys, tempfile, pathlib\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from colourbatch.pipeline import RunConfig\n"
        "from colourbatch.video import colour_video\n"
        "d = tempfile.mkdtemp()\n"
        f"r = colour_video({str(clip)!r}, pathlib.Path(d) / 'o.mp4', RunConfig(weights={weights!r}, workers=1, batch_size={batch}))\n"
        "s = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
        "c = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024\n"
        "print(json.dumps({'main': s, 'worker': c, 'frames': r.frames_out, 'fps': r.fps}))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default=str(ROOT / "weights" / "default.pt"))
    ap.add_argument("--sizes", default="360,720,1080")
    ap.add_argument("--seconds", type=float, default=3.0, help="length of the speed clips")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--rss", default="10,60", help="720p clip lengths (s) for the peak-RSS runs; '' to skip")
    ap.add_argument("--rss-fps", type=int, default=5,
                    help="frame rate of the RSS clips (low keeps a 60 s clip quick on small machines)")
    args = ap.parse_args()

    from colourbatch.pipeline import Colouriser, RunConfig
    engine = Colouriser(RunConfig(weights=args.weights, batch_size=args.batch_size, workers=1))
    cores = len(os.sched_getaffinity(0))
    d = engine.describe()
    print(f"machine: {cores} CPU cores, device {d['device']} {d['precision']}; model {d['model']} "
          f"({d['weights']}); batch {args.batch_size}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in [int(s) for s in args.sizes.split(",") if s]:
            w, h = SIZES[size]
            clip = make_clip(Path(tmp) / f"c{size}.mp4", w, h, args.seconds)
            frames = int(args.seconds * 25)
            (dec, dec_c), (mod, mod_c) = bench_decode(clip), bench_model(engine, frames, args.batch_size)
            (enc, enc_c), (pipe, pipe_c) = bench_encode(clip, engine, frames), bench_pipeline(clip, engine, args.batch_size)
            stage_c = dec_c + mod_c + enc_c
            # The overlap can beat neither its slowest stage run alone (each stage alone may
            # already use every core) nor the cores' capacity for the stages' summed CPU time.
            best = min(dec, mod, enc, cores * 1000.0 / stage_c)
            rows.append((f"{size}p", dec, mod, enc, pipe, best, pipe / best, dec_c, mod_c, enc_c, pipe_c,
                         stage_c / pipe_c))
            print(f"{size}p: decode {dec:.1f}  model {mod:.1f}  encode {enc:.1f}  pipeline {pipe:.1f} "
                  f"frames/s; best overlap {best:.1f}; ratio {pipe / best:.2f}; CPU ms/frame "
                  f"{dec_c:.0f} + {mod_c:.0f} + {enc_c:.0f} = {stage_c:.0f} vs pipeline {pipe_c:.0f}", flush=True)
        rss = []
        for secs in [float(s) for s in args.rss.split(",") if s]:
            clip = make_clip(Path(tmp) / f"rss{secs:g}.mp4", 1280, 720, secs, fps=args.rss_fps)
            r = rss_child(clip, args.weights, args.batch_size)
            rss.append((secs, r))
            print(f"720p {secs:g} s ({r['frames']} frames): peak RSS main {r['main']:.0f} MiB, "
                  f"decode worker {r['worker']:.0f} MiB", flush=True)

    print("\n| clip | decode+L (f/s) | model (f/s) | chroma+encode (f/s) | pipeline (f/s) | best overlap (f/s) | pipeline / best |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, dec, mod, enc, pipe, best, ratio, *_ in rows:
        print(f"| {name} | {dec:.1f} | {mod:.1f} | {enc:.1f} | {pipe:.1f} | {best:.1f} | {ratio:.2f} |")
    print("\nCPU ms per frame (all threads and the decode worker; stable when the machine is shared):\n")
    print("| clip | decode+L | model | chroma+encode | sum of stages | pipeline | stages / pipeline |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, *_, dec_c, mod_c, enc_c, pipe_c, eff in rows:
        print(f"| {name} | {dec_c:.0f} | {mod_c:.0f} | {enc_c:.0f} | {dec_c + mod_c + enc_c:.0f} | "
              f"{pipe_c:.0f} | {eff:.2f} |")
    if rss:
        print("\n| 720p clip | frames | peak RSS main (MiB) | peak RSS decode worker (MiB) |")
        print("|---|---:|---:|---:|")
        for secs, r in rss:
            print(f"| {secs:g} s | {r['frames']} | {r['main']:.0f} | {r['worker']:.0f} |")


if __name__ == "__main__":
    main()
