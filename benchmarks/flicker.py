"""Benchmark of the colour stabiliser: flicker (warp error) with it on and off, and what it costs.

Colours a film with the shipped weights through the library (video.colour_video,
lossless FFV1 output so the encoder adds no chroma noise), once with
`--stability` on and once off, then measures each output's warp error
(evaluate.evaluate_video: temporal.WarpError, Lai et al., ECCV 2018; DIS flow
on the source's L at 320x180, occluded pixels and pairs across a cut left out;
mean |delta a/b| in LAB units) and colourfulness, and prints the ratio, with each run's frames/s and the stabiliser's
own cost per frame.

Without --input it makes its own clip: a textured grey picture panned and
zoomed by the camera for 48 frames, then a hard cut to another picture that
pans the other way for 24 frames (640x360, 25 frames/s).

A colour --input is coloured from its L; the source's own colour then gives
the floor (its warp error), the colourfulness ratio and the a/b PSNR.

    python benchmarks/flicker.py [--input examples/video/chaplin.mp4 --frames 100]
                                 [--weights weights/default.pt] [--stability 0.95] [--reach 16]
    python benchmarks/flicker.py --pipeline 720     # the stabiliser's share of the whole pipeline
    python benchmarks/flicker.py --flow-sides 128,96,80 FILM...   # the flow's plane side: cost, flicker
    python benchmarks/flicker.py --flow-sides 96,96:fast,160:fast FILM...   # and its DIS preset
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def texture(seed: int, width: int, height: int) -> np.ndarray:
    """A grey picture with structure at several scales (blobs, edges, fine grain), uint8."""
    import cv2

    rng = np.random.default_rng(seed)
    pic = np.zeros((height, width), np.float32)
    for sigma, weight in ((40, 1.0), (12, 0.6), (3, 0.3)):
        pic += weight * cv2.GaussianBlur(rng.normal(0, 1, (height, width)).astype(np.float32), (0, 0), sigma) \
            * sigma ** 0.5
    return cv2.normalize(pic, None, 15, 240, cv2.NORM_MINMAX).astype(np.uint8)


def make_clip(path: Path, width: int = 640, height: int = 360, fps: int = 25) -> Path:
    """Shot 1: a pan with a slow zoom (48 frames); a hard cut; shot 2: a pan back (24 frames)."""
    import av
    import cv2

    out = av.open(str(path), "w")
    vs = out.add_stream("ffv1", rate=fps)
    vs.width, vs.height, vs.pix_fmt = width, height, "yuv444p"
    shots = [(texture(1, 2 * width, 2 * height), 48, 1), (texture(2, 2 * width, 2 * height), 24, -1)]
    for pic, frames, direction in shots:
        for i in range(frames):
            zoom = 1.0 + 0.004 * i                   # the camera pushes in slowly
            cx = width + direction * (3.0 * i - 60)  # and pans 3 px a frame
            cy = height + 0.8 * i
            m = cv2.getRotationMatrix2D((cx, cy), 0.0, zoom)
            m[:, 2] += (width / 2 - cx, height / 2 - cy)
            grey = cv2.warpAffine(pic, m, (width, height), flags=cv2.INTER_LINEAR)
            out.mux(vs.encode(av.VideoFrame.from_ndarray(np.dstack([grey] * 3), format="rgb24")))
    out.mux(vs.encode())
    out.close()
    return path


def frames_of(path: Path, limit: int):
    import av

    with av.open(str(path)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i >= limit:
                return
            yield f.to_ndarray(format="rgb24")


def stage_ms(src: Path, frames: int, stability: float, reach: int, weights: str | None) -> tuple[float, float]:
    """(model ms, stabiliser ms) per frame on the film's real tiles, each stage alone: stable
    numbers where the pipeline's frames/s swing with other work on the machine."""
    import torch

    from colourbatch import colour
    from colourbatch.pipeline import Colouriser, RunConfig
    from colourbatch.temporal import Stabiliser

    tiles = np.stack([colour.l_tile(colour.rgb_to_l(rgb)) for rgb in frames_of(src, min(frames, 48))])
    engine = Colouriser(RunConfig(weights=weights))
    engine.predict(torch.from_numpy(tiles[:2]))  # warm-up
    t = time.perf_counter()
    ab = np.concatenate([engine.predict(torch.from_numpy(tiles[i:i + 16])) for i in range(0, len(tiles), 16)])
    model = time.perf_counter() - t
    stab = Stabiliser(stability, reach)
    t = time.perf_counter()
    stab.feed(tiles, ab)
    stab.finish()
    return model * 1000 / len(tiles), (time.perf_counter() - t) * 1000 / len(tiles)


def cpu_seconds() -> float:
    """CPU time of this process (all its threads: the model, the stabiliser, the encoder) and of
    its finished children (the decode worker)."""
    import resource

    return sum(resource.getrusage(who).ru_utime + resource.getrusage(who).ru_stime
               for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))


def pipeline_cost(height: int, stability: float, reach: int, weights: str | None, repeat: int = 3) -> None:
    """The whole pipeline (decode, model, stabiliser, x264 at its defaults) on a synthetic clip
    of `height` lines, stabiliser off and on, alternating after a warm-up run: CPU ms a frame
    and wall-clock frames/s, each run's and the medians."""
    from colourbatch.config import VideoConfig
    from colourbatch.pipeline import Colouriser, RunConfig
    from colourbatch.video import colour_video

    with tempfile.TemporaryDirectory() as tmp:
        src = make_clip(Path(tmp) / "clip.mkv", width=height * 16 // 9, height=height)
        run = RunConfig(weights=weights, workers=1)
        engine = Colouriser(run)
        cpu: dict[float, list[float]] = {0.0: [], stability: []}
        fps: dict[float, list[float]] = {0.0: [], stability: []}
        for i in range(repeat):
            for s in (0.0, stability) if i else (0.0, 0.0, stability):  # the first run warms up
                t = cpu_seconds()
                rep = colour_video(src, Path(tmp) / "out.mp4", run,
                                   VideoConfig(stability=s, reach=reach, overwrite=True), colouriser=engine)
                cpu[s].append((cpu_seconds() - t) * 1000 / rep.frames_out)
                fps[s].append(rep.fps)
        cpu[0.0], fps[0.0] = cpu[0.0][1:], fps[0.0][1:]
        for s in (0.0, stability):
            print(f"{height}p pipeline, stability {s:.2f}: CPU ms a frame "
                  f"{' / '.join(f'{v:.0f}' for v in cpu[s])}, frames/s {' / '.join(f'{v:.1f}' for v in fps[s])}")
        off, on = float(np.median(cpu[0.0])), float(np.median(cpu[stability]))
        print(f"medians: CPU ms a frame {off:.0f} off, {on:.0f} on ({100 * (on - off) / off:+.0f} %); "
              f"frames/s {np.median(fps[0.0]):.1f} off, {np.median(fps[stability]):.1f} on")


#: DIS presets by name, for --flow-sides.
PRESETS = {"ultrafast": 0, "fast": 1, "medium": 2}


def flow_spec(spec: str) -> tuple[int, str]:
    """--flow-sides' "SIDE" or "SIDE:PRESET" -> (side, preset name or ''); ValueError if neither."""
    side, _, preset = spec.partition(":")
    if not side.isdigit() or int(side) < 8 or (preset and preset not in PRESETS):
        raise ValueError(f"{spec!r} is not SIDE or SIDE:PRESET (a side of 8 or more; presets {', '.join(PRESETS)})")
    return int(side), preset


def flow_sides(films: list[Path], sides: list[str], frames: int, stability: float, reach: int,
               weights: str | None) -> None:
    """The stabiliser at each flow-plane side (temporal.FLOW_SIDE; "SIDE:PRESET" also sets the
    DIS preset, temporal.FLOW_PRESET, default the shipped one) on the first `frames` frames
    of each colour film: its CPU ms a frame (one thread) and each film's warp error and a/b PSNR
    against the film's own colour. Offline: the model's a/b for the film's tiles (as
    `colourbatch video` makes both) are stabilised and measured at the metric's size, with no
    encode; the first side is the yardstick of the ratios."""
    import cv2

    from benchmarks.floor import film_tiles_ab, stabilised
    from colourbatch import colour, temporal
    from colourbatch.device import one_opencv_thread
    from colourbatch.evaluate import psnr
    from colourbatch.pipeline import Colouriser, RunConfig

    engine = Colouriser(RunConfig(weights=weights, workers=1))
    films_data = []
    for path in films:
        tiles, ab = film_tiles_ab(path, engine, frames)
        src = [colour.rgb_to_lab(cv2.resize(rgb, temporal.METRIC_SIZE, interpolation=cv2.INTER_AREA))
               for rgb in frames_of(path, len(tiles))]
        films_data.append((path.stem, tiles, ab, src))
    first: list[float] = []
    keep = temporal.FLOW_SIDE, temporal.FLOW_PRESET
    try:
        for spec in sides:
            side, preset = flow_spec(spec)
            temporal.FLOW_SIDE, temporal.FLOW_PRESET = side, PRESETS[preset] if preset else keep[1]
            cpu, row = 0.0, []
            for k, (name, tiles, ab, src) in enumerate(films_data):
                with one_opencv_thread():
                    t = time.process_time()
                    out = stabilised(tiles, ab, stability, reach)
                    cpu += time.process_time() - t
                metric = temporal.WarpError()
                ps = []
                for lab, ab8 in zip(src, out):
                    ab8 = ab8.transpose(1, 2, 0)
                    metric.add(lab[..., 0], ab8)
                    up = cv2.resize(ab8, temporal.METRIC_SIZE, interpolation=cv2.INTER_LINEAR)
                    ps.append(psnr(up, lab[..., 1:]))
                if len(first) <= k:
                    first.append(metric.value)
                row.append(f"{name} {metric.value:.3f} ({metric.value / first[k]:.2f}) {np.mean(ps):.2f} dB")
            n = sum(len(f[1]) for f in films_data)
            print(f"side {spec:>9}: stabiliser {1000 * cpu / n:.2f} ms a frame | " + " | ".join(row), flush=True)
    finally:
        temporal.FLOW_SIDE, temporal.FLOW_PRESET = keep


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--input", type=Path, help="a film to colour (default: a synthetic pan/zoom with a cut)")
    ap.add_argument("--frames", type=int, default=100, help="frames of --input to colour")
    ap.add_argument("--weights", default=None, help="weights file (default: the shipped weights)")
    ap.add_argument("--stability", type=float, default=None, help="stability on (default: VideoConfig's)")
    ap.add_argument("--reach", type=int, default=None, help="stabiliser's reach (default: VideoConfig's)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--pipeline", type=int, metavar="HEIGHT",
                    help="instead: the whole pipeline's cost (x264) with the stabiliser off and on, "
                         "on a synthetic clip of this height (720)")
    ap.add_argument("--flow-sides", metavar="SIDES",
                    help="instead: the stabiliser offline at each flow-plane side, SIDE or SIDE:PRESET "
                         f"({', '.join(PRESETS)}), comma-separated, on FILMS")
    ap.add_argument("films", nargs="*", type=Path, help="colour films for --flow-sides")
    args = ap.parse_args()

    from colourbatch import media
    from colourbatch.config import VideoConfig
    from colourbatch.evaluate import evaluate_video
    from colourbatch.pipeline import Colouriser, RunConfig
    from colourbatch.video import colour_video

    on = VideoConfig().stability if args.stability is None else args.stability
    reach = VideoConfig().reach if args.reach is None else args.reach
    if args.pipeline:
        pipeline_cost(args.pipeline, on, reach, args.weights)
        return
    if args.flow_sides:
        if not args.films:
            ap.error("--flow-sides needs FILMS")
        for spec in args.flow_sides.split(","):
            try:
                flow_spec(spec)  # every spec checked before any film is decoded
            except ValueError as exc:
                ap.error(f"--flow-sides: {exc}")
        flow_sides(args.films, args.flow_sides.split(","), args.frames, on, reach, args.weights)
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = args.input or make_clip(tmp / "pan-zoom-cut.mkv")
        info = media.probe(src)
        frames = args.frames if args.input else info.frames or 72
        duration = float(frames / info.fps) - 1e-3 if args.input else None
        run = RunConfig(weights=args.weights, batch_size=args.batch, workers=1)
        engine = Colouriser(run)  # loaded once: both runs' frames/s are the pipeline's alone
        print(f"{src} ({info.width}x{info.height}, {frames} frames), weights {args.weights or 'shipped'}")
        print(f"{'stability':>9} {'warp error':>10} {'vs off':>7} {'colourful':>9} {'frames/s':>9} {'pairs':>6} "
              f"{'cuts':>5}   against a colour source: its warp error, colourfulness ratio, a/b PSNR")
        rows = {}
        for stability in (0.0, on):
            dst = tmp / f"out-{stability}.mkv"
            rep = colour_video(src, dst, run, VideoConfig(codec="ffv1", stability=stability, reach=reach,
                                                                duration=duration),
                               colouriser=engine)
            score = evaluate_video(dst, src, limit=rep.frames_out)
            rows[stability] = error = score.warp_error
            print(f"{stability:>9.2f} {error:>10.3f} {error / rows[0.0]:>7.2f} {score.colourfulness:>9.2f} "
                  f"{rep.fps:>9.1f} {score.pairs:>6} {rep.cuts:>5}"
                  + (f"   {score.source_warp_error:.3f} ({error / score.source_warp_error:.2f}x), "
                     f"{score.colourfulness_ratio:.2f}, {score.psnr_ab:.2f} dB"
                     if score.source_warp_error is not None else ""))
        model, stab = stage_ms(Path(src), frames, on, reach, args.weights)
        print(f"alone, ms a frame: model {model:.1f} ({engine.describe()['precision']}), "
              f"stabiliser {stab:.2f} (+{100 * stab / model:.0f} % of the model's time)")


if __name__ == "__main__":
    main()
