"""Benchmark of `colourbatch video` against the floor of its work, over clips, sizes and presets; peak memory.

    python benchmarks/video.py [--quick] [--sizes 360,720,1080] [--presets medium,veryfast]
                               [--seconds 4] [--long 10] [--real FILM] [--rss 10,60,240]
                               [--weights weights/default.pt]

For each clip (a synthetic grey film made here, and a real film, by default
bikes.mp4 of the shared media, turned grey and scaled by FFmpeg to each size:
the shared films are at most 768x576, so at 720p and 1080p it is upscaled) at
each size and x264 preset, measured in this one run:

* the floor: CPU ms a frame, on one thread each, of decoding to YUV planes
  alone, x264 alone at the preset (CRF 18) on ready frames (the clip coloured
  by the pipeline, decoded: x264 costs more on coloured chroma than on a grey
  film's flat chroma), and the network's
  forward (batch 16) in the fastest runtime measured: the one every command
  runs (device.prepare_model), bf16 where the CPU has it natively, ONNX Runtime
  fp32 where installed (printed beside it; not a dependency). Perfect overlap
  on C cores: C x 1000 / (their sum) frames/s (benchmarks/floor.py);
* `colourbatch video` (video.colour_video, the model loaded and warm, torch
  beside the encoder as the command runs it): frames/s and CPU ms a frame with
  the colour stabiliser on (the default) and off (stability 0), its ratio to
  the floor, and what the stabiliser costs (1 - frames/s on / frames/s off);
* a film's rate: the same run on a clip of --long seconds, and from the two,
  the rate at which frames go through once a film is under way and the fixed
  cost each film pays once (`film_rate`: the decode worker's start, the
  stabiliser's look-ahead filling, the writer and x264's look-ahead draining
  with the network done; about a second on 2 cores). A clip of seconds
  pays that cost in full, an hour of film once. That rate is compared with
  the floor of the same frames: decode and x264 alone on the long clip too,
  and of each the cost a frame of the frames it has beyond the short clip
  (`floor.per_extra_frame`; a real film's content, and so x264's cost,
  changes along it);
* the work colourbatch does besides the floor's stages, each alone on one
  thread (floor.product_ms: the glue between the stages, the stabiliser, the
  decoding of the network's output distribution), what x264's own frame
  threads cost beyond its one-thread floor (x264 alone both ways: one film's
  encode can only use both cores that way), and what is left of the
  pipeline's CPU a frame once under way beyond them and the floor (torch's
  forward against the fastest runtime's, threads, the decode process,
  copies). These explain the distance to the floor; they are not a yardstick.

Then the memory of fresh processes colouring 720p clips of each --rss length
(`rss_child`): it must not grow with the film's length, and within a long
film its second half must not climb above its first by more than the
allocator's swing (a few tens of MiB). Wall-clock rates swing when other work
shares the machine; CPU ms a frame much less, so both are printed. --quick
(under 5 minutes on 2 cores): 360p and 720p, 2 and 5 s clips, RSS at 5 and 20 s.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.floor import (SIZES, coloured, decode_ms, encode_ms, engine, film_rate,  # noqa: E402
                              floor_fps, frame_count, make_clip, network_ms, per_extra_frame, pipeline_fps,
                              product_ms, real_clip)

#: Where the shared media may sit: beside the main checkout, or beside a worktree's folder.
REAL = [ROOT.parent / "shared/data/media/video/bikes.mp4",
        ROOT.parent.parent / "shared/data/media/video/bikes.mp4"]


def rss_child(clip: Path, weights: str | None) -> dict:
    """Memory (MiB) of a fresh process colouring `clip` as the command does: the main process's
    peak RSS, and its highest RSS in the first and in the second half of the film's run (read
    from this process every 0.2 s, so that the child holds no thread of its own when it forks
    the decode worker: a leak lifts the second half above the first, while flat memory swings
    by some tens of MiB; a process's RSS climbs for its first 100 s or so as the chroma table and
    the allocator's pools fill, so a short film's peak under a long one's is no leak), and the
    decode worker's peak RSS (which counts the pages it shares with the main process, forked
    from it).

    The main process's peak is its own memory's high-water mark (VmHWM), not getrusage's
    ru_maxrss: Linux carries that across exec from the process that started it, so a child of
    this benchmark reported this benchmark's own peak (2 GB after the 1080p clips) whatever it
    coloured."""
    code = (
        "import json, resource, sys, tempfile, pathlib, time\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from colourbatch.config import RunConfig\n"
        "from colourbatch.video import colour_video\n"
        "d = tempfile.mkdtemp()\n"
        "t0 = time.monotonic()\n"
        f"r = colour_video({str(clip)!r}, pathlib.Path(d) / 'o.mp4', RunConfig(weights={weights!r}, workers=1))\n"
        "t1 = time.monotonic()\n"
        "hwm = next(int(l.split()[1]) / 1024 for l in open('/proc/self/status') if l.startswith('VmHWM'))\n"
        "c = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024\n"
        "print(json.dumps({'main': hwm, 'worker': c, 'frames': r.frames_out, 't0': t0, 't1': t1}))\n")
    samples: list[tuple[float, float]] = []  # (time.monotonic(), the child's RSS): one clock for both
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as child:
        while child.poll() is None:
            try:
                with open(f"/proc/{child.pid}/status") as f:
                    rss = next((int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS")), None)
            except OSError:  # it ended between the poll and the read
                rss = None
            if rss is not None:
                samples.append((time.monotonic(), rss))
            time.sleep(0.2)
        out, err = child.communicate()
    if child.returncode:
        sys.exit(f"the RSS run of {clip} failed:\n{err}")
    r = json.loads(out.strip().splitlines()[-1])
    mid = (r["t0"] + r["t1"]) / 2
    film = [(t, v) for t, v in samples if r["t0"] <= t <= r["t1"]]
    r["first"], r["second"] = (max([v for t, v in film if (t < mid) == first] or [0.0]) for first in (True, False))
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="360p and 720p, 2 s clips, RSS at 5 and 20 s")
    ap.add_argument("--weights", default=None, help="weights file (default: the shipped default)")
    ap.add_argument("--sizes", default=None, help="default 360,720,1080 (--quick: 360,720)")
    ap.add_argument("--presets", default="medium,veryfast")
    ap.add_argument("--seconds", type=float, default=None, help="clip length (default 4; --quick: 2)")
    ap.add_argument("--long", type=float, default=None, help="the longer clip a film's rate is measured "
                    "against (default 10 s, at most the real film's length; --quick: 5)")
    ap.add_argument("--real", default=None, help="a real film to scale to each size ('' to skip)")
    ap.add_argument("--rss", default=None, help="720p clip lengths (s) for the peak-RSS runs "
                    "(default 10,60,240; --quick: 5,20; '' to skip)")
    ap.add_argument("--rss-fps", type=int, default=5, help="frame rate of the RSS clips (keeps a long one quick)")
    args = ap.parse_args()
    sizes = args.sizes if args.sizes is not None else ("360,720" if args.quick else "360,720,1080")
    seconds = args.seconds or (2.0 if args.quick else 4.0)
    rss_lengths = args.rss if args.rss is not None else ("5,20" if args.quick else "10,60,240")
    long_s = args.long or (5.0 if args.quick else 10.0)
    real = Path(args.real) if args.real else next((p for p in REAL if p.exists()), None)
    if args.real == "":
        real = None

    from colourbatch.device import cpu_count
    cores = cpu_count()
    nets = network_ms(args.weights)
    net_name, net = min(nets.items(), key=lambda kv: kv[1])
    colouriser = engine(args.weights)
    d = colouriser.describe()
    print(f"machine: {cpu_model()}, {cores} cores; pipeline {d['device']} "
          f"{d['precision']}, model {d['model']}, torch on {colouriser_threads()} thread(s) in "
          f"{colouriser.lanes} lane(s) beside x264")
    print("network forward, CPU ms a 224x224 tile (batch 16, one thread): "
          + ", ".join(f"{k} {v:.1f}" for k, v in nets.items()))
    print(f"{seconds:g} s clips at 25 frames/s, and {long_s:g} s ones for a film's rate; real film: "
          f"{real or 'none'}\n", flush=True)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in [int(s) for s in sizes.split(",") if s]:
            w, h = SIZES[size]
            clips = {"synthetic": (make_clip(Path(tmp) / f"s{size}.mp4", w, h, seconds),
                                   make_clip(Path(tmp) / f"sl{size}.mp4", w, h, long_s))}
            if real is not None:
                clips["real"] = (real_clip(Path(tmp) / f"r{size}.mp4", real, w, h, seconds),
                                 real_clip(Path(tmp) / f"rl{size}.mp4", real, w, h, long_s))
            for kind, (clip, long_clip) in clips.items():
                dec, frames = decode_ms(clip)
                dec_long, long_frames = decode_ms(long_clip)
                if long_frames <= frames:  # a real film no longer than --seconds: no rate to take
                    sys.exit(f"{kind} {size}p: the --long clip has {long_frames} frames, the short one "
                             f"{frames}; give a --long above --seconds and a film at least that long")
                product = product_ms(clip, colouriser)
                colour_clip = coloured(clip, colouriser, Path(tmp) / f"c{size}{kind}.mp4")
                colour_long = coloured(long_clip, colouriser, Path(tmp) / f"cl{size}{kind}.mp4")
                # x264's ms a frame are per coloured frame, the totals below per source frame.
                if (frame_count(colour_clip), frame_count(colour_long)) != (frames, long_frames):
                    sys.exit(f"{kind} {size}p: the coloured clips lost frames; x264's floor would not be "
                             "that of the source's frames")

                def extra(short_ms: float, long_ms: float) -> float:  # ms a frame of the long clip's extra frames
                    return per_extra_frame(short_ms * frames, frames, long_ms * long_frames, long_frames)
                for preset in [p for p in args.presets.split(",") if p]:
                    enc = encode_ms(colour_clip, preset, 18)
                    threads_extra = encode_ms(colour_clip, preset, 18, threaded=True) - enc
                    stages = {"decode": dec, "encode": enc, "network": net}
                    floor = floor_fps(stages, cores)
                    # A film's rate is that of the long clip's extra frames: so is its floor.
                    enc_long = encode_ms(colour_long, preset, 18)
                    film_stages = {"decode": extra(dec, dec_long), "encode": extra(enc, enc_long), "network": net}
                    film_threads_extra = extra(threads_extra + enc,
                                               encode_ms(colour_long, preset, 18, threaded=True)) \
                        - film_stages["encode"]
                    on = pipeline_fps(clip, colouriser, preset)
                    off = pipeline_fps(clip, colouriser, preset, stability=0.0)
                    film = film_rate(on, frames, pipeline_fps(long_clip, colouriser, preset), long_frames)
                    film_floor = floor_fps(film_stages, cores)
                    rows.append(dict(clip=f"{size}p {kind}", preset=preset, work=sum(stages.values()),
                                     floor=floor, product=product, on=on, off=off, film=film,
                                     film_floor=film_floor, film_work=sum(film_stages.values()),
                                     film_encode=film_stages["encode"], threads_extra=film_threads_extra,
                                     **stages))
                    print(f"{size}p {kind} {preset}: decode {dec:.1f} + x264 {enc:.1f} + network {net:.1f} ms "
                          f"-> floor {floor:.2f} f/s; pipeline {on.fps:.2f} f/s ({on.fps / floor:.2f}); "
                          f"the long clip's extra frames: x264 {film_stages['encode']:.1f} ms -> floor "
                          f"{film_floor:.2f} f/s, a film's rate {film.fps:.2f} ({film.fps / film_floor:.2f}) "
                          f"+ {film.fixed_s:.2f} s a film, "
                          f"stabiliser off {off.fps:.2f} "
                          f"({off.fps / floor:.2f}); CPU ms a frame {on.cpu_ms:.0f} / {off.cpu_ms:.0f}; "
                          + ", ".join(f"{k} {v:.1f}" for k, v in product.items()), flush=True)
        rss = []
        for secs in [float(s) for s in rss_lengths.split(",") if s]:
            clip = make_clip(Path(tmp) / f"rss{secs:g}.mp4", 1280, 720, secs, fps=args.rss_fps)
            r = rss_child(clip, args.weights)
            rss.append((secs, r))
            print(f"720p {secs:g} s ({r['frames']} frames): peak RSS main {r['main']:.0f} MiB (first half "
                  f"{r['first']:.0f}, second {r['second']:.0f}), decode worker {r['worker']:.0f} MiB", flush=True)

    print(f"\nThe floor's stages, CPU ms a frame on one thread (network: {net_name}), the perfect overlap of "
          f"them on {cores} cores, and `colourbatch video` (frames/s, ratio to the floor):\n")
    print("| clip | preset | decode | x264 | network | floor (f/s) | pipeline (f/s) | / floor | "
          "stabiliser off (f/s) | / floor | stabiliser's cost | under way: x264 | floor (f/s) | "
          "a film's rate (f/s) | / floor | fixed cost a film (s) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        on, off, film = r["on"], r["off"], r["film"]
        print(f"| {r['clip']} | {r['preset']} | {r['decode']:.1f} | {r['encode']:.1f} | {r['network']:.1f} | "
              f"{r['floor']:.2f} | {on.fps:.2f} | {on.fps / r['floor']:.2f} | {off.fps:.2f} | "
              f"{off.fps / r['floor']:.2f} | {100 * (1 - on.fps / off.fps):.0f} % | {r['film_encode']:.1f} | "
              f"{r['film_floor']:.2f} | {film.fps:.2f} | {film.fps / r['film_floor']:.2f} | {film.fixed_s:.2f} |")
    print("\nWhere a film's CPU goes, ms a frame once under way (stable when the machine is shared): the "
          "floor's stages (on the long clip's extra frames); the work colourbatch does besides them, each measured "
          "alone on the short clip (glue: L tile + chroma; "
          "the stabiliser; the distribution decode); what x264's frame threads cost beyond its one thread "
          "(x264 alone both ways); the pipeline's own (this process, its threads, the decode "
          "worker, from the short and the long clip); what is left (threads, processes, copies); the floor's "
          "share of the pipeline's work; the CPU each film pays once; and the perfect overlap of the floor's "
          "stages and colourbatch's work together:\n")
    print("| clip | preset | floor's stages | glue | stabiliser | distribution decode | x264's threads | "
          "pipeline | left | floor's work / pipeline's | cores the pipeline got | fixed CPU a film (s) | "
          "floor + that work (f/s) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        p, film = r["product"], r["film"]
        left = film.cpu_ms - r["film_work"] - sum(p.values()) - r["threads_extra"]
        # CPU seconds per wall second: below the core count when other work shares the machine
        # (or the overlap leaves a core idle); the wall ratio to the floor cannot beat got / cores.
        print(f"| {r['clip']} | {r['preset']} | {r['film_work']:.0f} | {p['glue']:.1f} | {p['stabiliser']:.1f} | "
              f"{p['distribution decode']:.1f} | {r['threads_extra']:.1f} | {film.cpu_ms:.0f} | {left:.0f} | "
              f"{r['film_work'] / film.cpu_ms:.2f} | "
              f"{film.cpu_ms * film.fps / 1000:.2f} | {film.fixed_cpu_s:.2f} | "
              f"{cores * 1000 / (r['film_work'] + sum(p.values())):.2f} |")
    if rss:
        print("\n| 720p clip | frames | peak RSS main (MiB) | its first half | its second half | "
              "peak RSS decode worker (MiB) |")
        print("|---|---:|---:|---:|---:|---:|")
        for secs, r in rss:
            print(f"| {secs:g} s | {r['frames']} | {r['main']:.0f} | {r['first']:.0f} | {r['second']:.0f} | "
                  f"{r['worker']:.0f} |")


def cpu_model() -> str:
    """The CPU's name as Linux lists it (platform.processor() is empty there)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def colouriser_threads() -> int:
    import torch
    return torch.get_num_threads()


if __name__ == "__main__":
    main()
