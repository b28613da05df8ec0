"""`colourbatch video` on a CUDA GPU: frames/s at 1080p and where the time goes.

    python benchmarks/cuda.py [--size 1080] [--seconds 4] [--long 10] [--batch 64] [--film FILM] [--json OUT]
                              [--repeat N] [--code CHECKOUT --pipeline-only]

All in one run on one machine, against the floor of the work:

* decode: PyAV decoding the clip to YUV planes, one thread (the pipeline decodes
  in a DataLoader worker);
* encode: libx264 at CRF 18, presets medium and veryfast, fed ready planes
  (x264's own threads, as the pipeline runs it): the frames the pipeline made
  of the clip, decoded first (x264's cost depends on the chroma it is given);
* network: the model's forward on 224x224 tiles at `--batch`, on the GPU, fp16
  and bf16 autocast and fp32, timed with a device synchronise, without the
  decoding of its output distribution; then `Colouriser.predict` (uint8 tiles
  in, uint8 a/b out: upload, forward, annealed-mean decode, download);
* the pipeline: `colour_video` (`floor.pipeline_fps`, fp16, a warm model) at
  each preset, stabiliser on (default) and off, on a clip of --seconds and one
  of --long seconds; from the two (`floor.film_rate`) the rate once a film is
  under way and the fixed cost each film pays once (filling the first batch of
  --batch frames, draining the stabiliser, the writer and x264 at the end);
  `--repeat N` runs each clip N times and keeps the median run of each (one
  run of each swings the rate by 15 % at these speeds).

The floor of a pipeline that overlaps decode, model and encode is the slowest
of them; the ratio printed is the pipeline's frames/s under way over that,
with decode and encode measured alone on the same clip, also under way (from
its short and long clips: x264's look-ahead and frame threads fill and drain
once a film). The first lines time them over the short synthetic clip whole.

Where the time goes: the CPU work between the stages, each alone on one
thread (`floor.glue_ms`: luma -> L tile and a/b -> Cb/Cr; the stabiliser), and
one pipeline run of the long clip per preset with wall-clock timers around its
parts: in the main thread the model and the wait for room in the colour stage's
queue (the colour stage is then the slower); in the colour stage's thread the
stabiliser, the chroma and the wait for the writer; in the writer's thread the
call into the encoder (which blocks while x264's frame threads are all busy).

`--code DIR --pipeline-only` times another checkout's colourbatch package in
the same way (the pipeline rows alone, stabiliser on; the synthetic clip and
--film): an A/B on one machine.

The clip is synthetic (floor.make_clip: grey, motion everywhere), so the script
needs nothing but the repository; `--film` also runs a real film, scaled to the
same size (floor.real_clip).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# --code DIR: that checkout's colourbatch instead of this one's (read before anything imports it)
CODE = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--code=")),
            next((sys.argv[i + 1] for i, a in enumerate(sys.argv[:-1]) if a == "--code"), str(ROOT)))
sys.path.insert(0, CODE)
sys.path.insert(0, str(ROOT / "benchmarks"))

SIZES = {360: (640, 360), 720: (1280, 720), 1080: (1920, 1080)}


def timed(fn, repeat: int = 1) -> float:
    t = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t) / repeat


def time_parts(clip: Path, eng, preset: str) -> dict[str, float]:
    """Wall ms a frame of one pipeline run (floor.pipeline_fps) and of its parts, from timers
    wrapped around them for the run (see the module's docstring). The parts do not add up to
    the whole: the stabiliser's finish, --compare's stacking and the threads' hand-offs are
    not timed."""
    from colourbatch import colour, media, temporal, video
    from colourbatch.pipeline import Colouriser
    from floor import pipeline_fps

    spent: dict[str, float] = defaultdict(float)
    parts = {"main: model": (Colouriser, "predict"),
             "main: waiting on the colour stage": (video._Colour, "put"),
             "colour thread: stabiliser": (temporal.Stabiliser, "feed"),
             "colour thread: chroma": (colour, "lab_to_chroma"),
             "colour thread: waiting on the writer": (video._Writer, "put"),
             "writer thread: encoder call": (media.Encoder, "write_planes")}
    own = {key: owner.__dict__.get(name) for key, (owner, name) in parts.items()}
    for key, (owner, name) in parts.items():
        def wrapped(*a, _orig=getattr(owner, name), _key=key, **k):
            t = time.perf_counter()
            try:
                return _orig(*a, **k)
            finally:
                spent[_key] += time.perf_counter() - t
        setattr(owner, name, wrapped)
    try:
        t = time.perf_counter()
        pipeline_fps(clip, eng, preset)
        wall = time.perf_counter() - t
    finally:
        for key, (owner, name) in parts.items():
            if own[key] is None:
                delattr(owner, name)  # inherited: the base class's serves again
            else:
                setattr(owner, name, own[key])
    frames = media.probe(clip).frames  # the run's own count: pipeline_fps asserts the film came out whole
    return {"wall": 1000 * wall / frames, **{k: 1000 * v / frames for k, v in spent.items()}}


def under_way(short: Path, long: Path, eng, preset: str, stab: float, repeat: int = 1) -> dict[str, float]:
    """The pipeline on a short and a long clip, and from the two the rate once under way; with
    `repeat`, each clip that many times, short and long in turn, and the median run of each (a
    rate from two runs of one clip each swings by 15 % at these speeds)."""
    import statistics

    from colourbatch import media
    from floor import film_rate, pipeline_fps

    tries: dict[Path, list] = {short: [], long: []}
    for _ in range(max(1, repeat)):
        for p in (short, long):
            tries[p].append(pipeline_fps(p, eng, preset, stab))
    runs = [(statistics.median_low(sorted(tries[p], key=lambda r: r.fps)), media.probe(p).frames)
            for p in (short, long)]
    rate = film_rate(runs[0][0], runs[0][1], runs[1][0], runs[1][1])
    out = {"fps_short": runs[0][0].fps, "fps_long": runs[1][0].fps, "fps": rate.fps, "fixed_s": rate.fixed_s}
    if repeat > 1:
        out.update(fps_short_all=[r.fps for r in tries[short]], fps_long_all=[r.fps for r in tries[long]])
    return out


def alone(path: Path, coloured: Path, presets, folder: Path) -> dict[str, float]:
    """Wall seconds of the floor's stages alone on one clip: decoding it to planes (one thread,
    as the decode worker runs), and x264 at each preset (its own threads, as the pipeline runs
    it) fed the frames the pipeline made of it (`coloured`, decoded first): x264's cost depends
    on the chroma it is given."""
    import av

    from colourbatch import media

    info = media.probe(path)
    t = time.perf_counter()
    frames = sum(1 for _ in media.Decoder(path, tags=info.colour))
    out = {"frames": frames, "decode_s": time.perf_counter() - t}
    w, h = info.width, info.height
    with av.open(str(coloured)) as c:  # yuv420p at an even size: Y, then Cb, then Cr, stacked
        planes = [(p[:h], p[h:h + h // 4].reshape(h // 2, w // 2), p[h + h // 4:].reshape(h // 2, w // 2))
                  for p in (f.to_ndarray(format="yuv420p") for f in c.decode(video=0))]
    step = int(round(1 / (info.fps * info.time_base)))
    for preset in presets:
        enc = media.Encoder(folder / f"alone-{preset}.mp4", info, w, h, media.EncodeSettings(preset=preset))
        t = time.perf_counter()
        for i, (y, cb, cr) in enumerate(planes):
            enc.write_planes(y, cb, cr, i * step)
        enc.close()
        out[f"encode_s_{preset}"] = time.perf_counter() - t
    return out


def floor_under_way(short: dict, long: dict) -> dict[str, float]:
    """ms a frame of each stage once under way: the long clip's extra frames over its extra time
    (x264's look-ahead filling and its frame threads draining are paid once a film)."""
    from floor import per_extra_frame

    return {k.replace("_s", "_ms", 1): 1000 * per_extra_frame(short[k], short["frames"], long[k], long["frames"])
            for k in short if k != "frames"}


def main() -> None:
    import numpy as np
    import torch

    from colourbatch.config import RunConfig, VideoConfig
    from colourbatch.device import one_opencv_thread
    from colourbatch.model import model_input
    from colourbatch.pipeline import Colouriser
    # benchmarks/floor.py: the same clips, stage timings and pipeline run as the CPU benchmarks.
    # Imported after colourbatch: floor puts this checkout first on sys.path, and --code's
    # package must be the one already imported.
    from floor import cpu_ms, film_tiles_ab, glue_ms, make_clip, pipeline_fps, real_clip, stabilised

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=1080, choices=sorted(SIZES))
    ap.add_argument("--seconds", type=float, default=4.0, help="the short clip's length")
    ap.add_argument("--long", type=float, default=10.0, help="the long clip's length")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--film", default=None, help="also run this real film, scaled to --size")
    ap.add_argument("--weights", default=str(ROOT / "weights" / "default.pt"))
    ap.add_argument("--code", default=str(ROOT), help="the checkout whose colourbatch is timed")
    ap.add_argument("--pipeline-only", action="store_true", help="only the pipeline rows, stabiliser on")
    ap.add_argument("--repeat", type=int, default=1, help="run each pipeline clip this many times: the median")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--device", default="cuda", help="cpu: a quick dry run of the script itself")
    args = ap.parse_args()
    dev = args.device
    if dev == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device: this benchmark measures the GPU path")
    import colourbatch
    if Path(colourbatch.__file__).resolve().parent.parent != Path(CODE).resolve():
        sys.exit(f"colourbatch was imported from {Path(colourbatch.__file__).parent}, not from --code {CODE}")
    res: dict = {"gpu": torch.cuda.get_device_name(0) if dev == "cuda" else "none", "torch": torch.__version__,
                 "size": args.size, "batch": args.batch, "code": str(Path(colourbatch.__file__).parent.parent),
                 "cpus": os.cpu_count()}
    print(json.dumps(res), flush=True)

    def report(key, value):
        res[key] = value
        print(json.dumps({key: value}), flush=True)

    w, h = SIZES[args.size]
    precisions = ("fp16", "bf16", "fp32") if dev == "cuda" else ("fp32",)
    with tempfile.TemporaryDirectory() as d:
        clips = {"synthetic": [make_clip(Path(d) / f"clip{s}.mp4", w, h, s) for s in (args.seconds, args.long)]}
        if args.film:
            clips[Path(args.film).stem] = [real_clip(Path(d) / f"film{s}.mp4", Path(args.film), w, h, s)
                                           for s in (args.seconds, args.long)]
        clip = clips["synthetic"][0]
        if args.pipeline_only:
            eng = Colouriser(RunConfig(device=dev, precision=precisions[0], batch_size=args.batch,
                                       weights=args.weights))
            pipeline_fps(clip, eng, "veryfast")  # warm-up: cuDNN picks its kernels
            for name, pair in clips.items():
                for preset in ("medium", "veryfast"):
                    report(f"pipeline_{name}_{precisions[0]}_{preset}",
                           under_way(*pair, eng, preset, VideoConfig().stability, args.repeat))
            if args.json:
                Path(args.json).write_text(json.dumps(res, indent=1))
            return
        # -- the model
        engines = {prec: Colouriser(RunConfig(device=dev, precision=prec, batch_size=args.batch,
                                              weights=args.weights)) for prec in precisions}
        tiles, _ = film_tiles_ab(clip, engines[precisions[0]], args.batch)  # as the pipeline makes them
        while len(tiles) < args.batch:
            tiles = np.concatenate([tiles, tiles])[:args.batch]
        x_cpu = torch.from_numpy(tiles)[:, None]
        for prec, eng in engines.items():
            x = x_cpu.to(dev)
            net = eng.model

            def fwd():
                with torch.inference_mode(), torch.autocast(dev, dtype=eng.dtype,
                                                            enabled=eng.dtype != torch.float32):
                    net(model_input(x))
                if dev == "cuda":
                    torch.cuda.synchronize()

            for _ in range(5):
                fwd()
            report(f"forward_ms_per_tile_{prec}", 1000 * timed(fwd, 20) / args.batch)
            for _ in range(3):
                eng.predict(x_cpu)
            report(f"predict_ms_per_tile_{prec}", 1000 * timed(lambda: eng.predict(x_cpu), 20) / args.batch)
        # -- decode and encode alone on each clip, short and long (x264 fed the frames the pipeline
        # made of it; making them is also the pipeline's warm-up: cuDNN picks its kernels)
        eng = engines[precisions[0]]
        presets = ("medium", "veryfast")
        stages = {}
        for name, pair in clips.items():
            stages[name] = []
            for p in pair:
                made = Path(d) / f"coloured-{p.name}"
                pipeline_fps(p, eng, "veryfast", keep=made)
                stages[name].append(alone(p, made, presets, Path(d)))
        short = stages["synthetic"][0]  # the short synthetic clip whole, fill and drain included
        report("decode_ms", 1000 * short["decode_s"] / short["frames"])
        for preset in presets:
            report(f"encode_ms_{preset}", 1000 * short[f"encode_s_{preset}"] / short["frames"])
        # -- the work between the stages, each alone on one thread (CPU ms a frame)
        eng = engines[precisions[0]]
        with one_opencv_thread():
            report("glue_ms", glue_ms(clip, before=False)["planes (colourbatch)"])
            film_tiles, film_ab = film_tiles_ab(clip, eng)
            vcfg = VideoConfig()
            report("stabiliser_ms", cpu_ms(lambda: stabilised(film_tiles, film_ab, vcfg.stability, vcfg.reach),
                                           len(film_tiles)))
            # Its flows alone (the decode worker's part of it on a GPU: video.flows_in_decoder;
            # a checkout from before the Linker has no such part).
            from colourbatch import temporal

            def flows():
                linker = temporal.Linker()
                return [linker.add(t) for t in film_tiles]

            if hasattr(temporal, "Linker"):
                report("stabiliser_flows_ms", cpu_ms(flows, len(film_tiles)))
        # -- the pipeline (fp16: the network's cost is a rounding error beside the CPU's work)
        for name, (short, long) in clips.items():
            floor_ms = floor_under_way(*stages[name])
            report(f"floor_ms_under_way_{name}", floor_ms)
            for preset in presets:
                floor = 1000 / max(floor_ms["decode_ms"], floor_ms[f"encode_ms_{preset}"],
                                   res[f"predict_ms_per_tile_{precisions[0]}"])
                for stab in (VideoConfig().stability, 0.0):  # the default, and off
                    row = under_way(short, long, eng, preset, stab, args.repeat)
                    report(f"pipeline_{name}_{precisions[0]}_{preset}_stab{stab}",
                           {**row, "floor_fps": floor, "ratio": row["fps"] / floor})
        # -- where the time goes (the long synthetic clip, the default stabiliser)
        for preset in presets:
            report(f"parts_ms_{preset}", time_parts(clips["synthetic"][1], eng, preset))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
