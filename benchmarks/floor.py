"""`colourbatch video` against the floor of its work, not against its own stages; the clips and
stage measurements benchmarks/video.py runs over its whole matrix.

    python benchmarks/floor.py [--size 720] [--seconds 3] [--preset medium] [--weights weights/default.pt]
                               [--precision auto] [--repeat 1]

The floor is what colouring a film cannot do without, each measured alone in
this run, in CPU milliseconds per frame on one thread:

* decode: PyAV decoding the film to its YUV planes (no RGB, no LAB);
* encode: libx264 at the run's CRF and preset, fed ready YUV 4:2:0 frames (the
  clip as the pipeline coloured it, decoded: coloured chroma costs x264 more);
* network: the model's forward on one 224x224 tile, batch 16, in the fastest
  of the runtime every command runs (device.prepare_model: batch norm folded,
  each convolution fused with its clamp), bf16 where the CPU has it natively,
  and ONNX Runtime fp32 where it is installed (the yardstick; not a
  dependency), without the decoding of its output distribution.

It also prints the CPU cost of the work between those stages (not part of the
floor): colourbatch's planes path (luma -> L tile, a/b -> Cb/Cr beside the
untouched luma) and the RGB path it replaced, on the same frames.

With C cores and the three stages overlapped perfectly (each splits over cores:
x264 frame threads, torch's intra-op threads), no pipeline can beat
C x 1000 / (sum of the stages' ms) frames/s. The script then times `colourbatch
video` (video.colour_video with the model loaded and warm, default settings,
this preset, stability on) on the same clip and prints its frames/s and the
ratio to that floor. All numbers come from one run on one machine: compare ratios.

Wall-clock frames/s fall when other work shares the machine, so the script
also prints the pipeline's CPU milliseconds per frame (this process, its
threads and the decode worker) against the sum of the floor's stages: that
ratio holds on a busy machine and shows the work the pipeline adds to the
floor's. `--repeat N` keeps the best of N pipeline runs.
"""
from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

SIZES = {360: (640, 360), 720: (1280, 720), 1080: (1920, 1080)}


def make_clip(path: Path, width: int, height: int, seconds: float, fps: int = 25) -> Path:
    """A synthetic greyscale clip with motion everywhere (so the encoder works as on film)."""
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


def real_clip(path: Path, source: Path, width: int, height: int, seconds: float) -> Path:
    """The first `seconds` of a real film `source`, as a grey film of width x height (scaled by
    FFmpeg's scaler, x264 CRF 12 ultrafast; 25 frames/s as the film gives them)."""
    import av

    with av.open(str(source)) as src, av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=25)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.options = {"preset": "ultrafast", "crf": "12"}
        for i, frame in enumerate(src.decode(video=0)):
            if i >= seconds * 25:
                break
            grey = frame.reformat(width, height, format="gray").to_ndarray()
            f = av.VideoFrame.from_ndarray(np.ascontiguousarray(grey), format="gray").reformat(format="yuv420p")
            f.pts, f.time_base = i, Fraction(1, 25)
            out.mux(vs.encode(f))
        out.mux(vs.encode())
    return path




def cpu_ms(fn, count: int) -> float:
    """CPU milliseconds per item of fn(), which processes `count` items (process CPU time)."""
    t0 = time.process_time()
    fn()
    return (time.process_time() - t0) * 1000 / count


def frame_count(path: Path) -> int:
    """The frames of `path`'s video stream, decoded and counted (any container)."""
    import av

    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def decode_ms(path: Path) -> tuple[float, int]:
    import av

    def run():
        with av.open(str(path)) as c:
            vs = c.streams.video[0]
            vs.thread_type = "AUTO"
            for frame in c.decode(vs):
                frame.to_ndarray(format="yuv420p")  # the planes, as a YUV-native path would take them
    n = frame_count(path)
    return cpu_ms(run, n), n


def encode_ms(path: Path, preset: str, crf: int, threaded: bool = False) -> float:
    """CPU ms a frame of libx264 alone (one thread, `preset`, `crf`) on the frames of `path`, decoded
    first. Give it a coloured film (`coloured`): x264 spends more on chroma that carries colour
    than on a grey film's flat chroma (720p, bikes.mp4 scaled: 55.5 against 49.4 ms a frame at
    preset medium, 20.6 against 18.7 at veryfast). `threaded`: with x264's own frame threads
    instead, as media.Encoder runs it (what spreading one film's encode over the cores costs)."""
    import av

    with av.open(str(path)) as c:
        planes = [f.to_ndarray(format="yuv420p") for f in c.decode(video=0)]
        w, h = c.streams.video[0].width, c.streams.video[0].height
    out_path = Path(tempfile.mkdtemp()) / "enc.mp4"

    def run():
        with av.open(str(out_path), "w") as out:
            vs = out.add_stream("libx264", rate=25)
            vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
            vs.options = {"crf": str(crf), "preset": preset, **({} if threaded else {"threads": "1"})}
            if threaded:
                vs.thread_type = "AUTO"
            for i, p in enumerate(planes):
                f = av.VideoFrame.from_ndarray(p, format="yuv420p")
                f.pts = i
                out.mux(vs.encode(f))
            out.mux(vs.encode())
    return cpu_ms(run, len(planes))


def glue_ms(path: Path, before: bool = True) -> dict[str, float]:
    """CPU ms a frame of the work between decode, network and encode, on this clip's frames:
    the planes path colourbatch takes (luma -> L tile; luma + a/b -> Cb/Cr at 4:2:0 size), and
    for reference the RGB path it replaced (RGB decode -> L -> tile; merge_l_ab at full size ->
    RGB -> yuv420p; `before` False leaves it out, and the chroma step alone, looked up in
    colour.ChromaTable and converted pixel by pixel as before the table)."""
    import av
    import cv2
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

    size = ((w + 1) // 2, (h + 1) // 2)
    ys = [media.luma_plane(f, tags, w, h) for f in frames]

    def chroma_per_pixel():  # lab_to_chroma before its table: every pixel converted
        for y in ys:
            y = cv2.resize(y, size, interpolation=cv2.INTER_AREA)
            a, b = (cv2.resize(p, size, interpolation=cv2.INTER_LINEAR) for p in ab)
            colour._chroma_of(y, a, b, tags.matrix, tags.full_range)

    def chroma_table():
        for y in ys:
            colour.lab_to_chroma(y, ab, tags.matrix, tags.full_range, size)

    chroma_table()  # the film's a/b pairs into the chroma table: a film pays that once
    out = {"planes (colourbatch)": cpu_ms(planes, len(frames))}
    if before:
        out["RGB (before)"] = cpu_ms(rgb_path, len(frames))
        out["chroma, table"] = cpu_ms(chroma_table, len(frames))
        out["chroma, per pixel"] = cpu_ms(chroma_per_pixel, len(frames))
    return out


def film_tiles_ab(path: Path, colouriser, frames: int | None = None):
    """(L tiles (N, S, S) uint8, the model's a/b (N, 2, h, w) uint8) of the first `frames` frames
    of `path` (None: all), as `colourbatch video` makes them (video.FrameStream, Colouriser)."""
    import itertools

    from colourbatch import media
    from colourbatch.video import FrameStream

    info = media.probe(path)
    stream = FrameStream(str(path), 16, size=(info.width, info.height), origin=info.start_time, tags=info.colour)
    batches = list(itertools.islice((b for b in stream if "end" not in b),
                                    None if frames is None else (frames + 15) // 16))
    tiles = np.concatenate([b["tiles"][:, 0].numpy() for b in batches])[:frames]
    ab = np.concatenate([colouriser.predict(b["tiles"]) for b in batches])[:frames]
    return tiles, ab


def stabilised(tiles, ab, stability: float, reach: int):
    """The stabiliser's a/b of a film's tiles and predictions, fed in batches of 16 as the
    writer feeds it."""
    from colourbatch.temporal import Stabiliser

    st = Stabiliser(stability, reach)
    return np.concatenate([st.feed(tiles[i:i + 16], ab[i:i + 16]) for i in range(0, len(tiles), 16)]
                          + [st.finish()])


def product_ms(path: Path, colouriser) -> dict[str, float]:
    """CPU ms a frame of the per-frame work colourbatch does besides the floor's stages, each
    alone on one thread (OpenCV too: the CPU each costs, as the floor's stages are measured): the planes path
    (`glue_ms`: luma -> L tile, a/b -> Cb/Cr), the colour stabiliser at its defaults
    (temporal.Stabiliser on this clip's tiles and the model's a/b for them) and the decoding
    of the network's output distribution into a/b (the model's `decode`, which the floor's
    forward leaves out). Not part of the floor: what they explain is the distance between it
    and the pipeline; what is left beyond them is the pipeline's overhead (threads,
    processes, copies)."""
    import torch

    from colourbatch.config import VideoConfig
    from colourbatch.device import one_opencv_thread
    from colourbatch.model import model_input

    with one_opencv_thread():
        out = {"glue": glue_ms(path, before=False)["planes (colourbatch)"]}
        tiles, ab = film_tiles_ab(path, colouriser)
        vcfg = VideoConfig()
        out["stabiliser"] = cpu_ms(lambda: stabilised(tiles, ab, vcfg.stability, vcfg.reach), len(tiles))
    net = colouriser.model
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            raw = net(model_input(torch.from_numpy(tiles[:16])[:, None]))
            net.decode(raw)  # warm-up
            out["distribution decode"] = statistics.median(
                cpu_ms(lambda: net.decode(raw, colouriser.cfg.temperature, colouriser.cfg.decode), len(raw))
                for _ in range(5))
    finally:
        torch.set_num_threads(threads)
    return out


def network_ms(weights: str | None) -> dict[str, float]:
    """CPU ms a tile of the network's forward (batch 16, 224x224, one thread) in the runtime every
    command runs (device.prepare_model), whole and in pipeline.CPU_CHUNK tiles at a time (as
    Colouriser runs it on one thread), in bf16 where the CPU has it natively, and in ONNX
    Runtime where it is installed (benchmarks.models.onnx_forward)."""
    import torch

    from benchmarks.models import onnx_forward
    from colourbatch.device import autocast, cpu_bf16_ok, prepare_model
    from colourbatch.model import model_input
    from colourbatch.pipeline import load_weights

    torch.set_num_threads(1)
    net, _, _ = load_weights(weights)
    x = model_input(torch.randint(0, 256, (16, 1, 224, 224), dtype=torch.uint8))
    fast = prepare_model(net, torch.device("cpu"))
    from colourbatch.pipeline import CPU_CHUNK

    def in_chunks(x):  # the chunks Colouriser cuts a batch into on one intra-op thread, one after another
        return [fast(x[i:i + CPU_CHUNK]) for i in range(0, len(x), CPU_CHUNK)]
    runtimes = {f"torch, {fast.runtime}": (fast, torch.float32),
                f"torch, {fast.runtime}, {CPU_CHUNK} at a time": (in_chunks, torch.float32)}
    if cpu_bf16_ok():
        runtimes["torch bf16"] = (fast, torch.bfloat16)
    ort = onnx_forward(net, 1)
    if callable(ort):
        runtimes["ONNX Runtime"] = (ort, torch.float32)
    else:
        print(f"  ({ort})")
    times: dict[str, list[float]] = {name: [] for name in runtimes}
    cpu = torch.device("cpu")
    with torch.inference_mode():
        for model, dtype in runtimes.values():
            with autocast(cpu, dtype):
                for _ in range(3):  # warm-up: kernels chosen, weights reordered, the allocator grown
                    model(x)
        for _ in range(5):  # alternating rounds, the median of each: the machine may be shared
            for name, (model, dtype) in runtimes.items():
                with autocast(cpu, dtype):
                    times[name].append(cpu_ms(lambda: model(x), len(x)))
    return {name: statistics.median(ms) for name, ms in times.items()}


def all_cpu_seconds() -> float:
    """CPU seconds of this process (every thread) and of its finished children (the decode worker)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def engine(weights: str | None, precision: str = "auto"):
    """The Colouriser `colourbatch video` builds (torch beside the encoder), warmed up."""
    import torch

    from colourbatch.config import RunConfig
    from colourbatch.video import film_engine

    colouriser = film_engine(RunConfig(weights=weights, workers=1, precision=precision))
    colouriser.predict(torch.zeros(16, 1, 224, 224, dtype=torch.uint8))
    return colouriser


class PipelineRun(NamedTuple):
    fps: float       # frames/s of the whole run
    cpu_ms: float    # CPU ms a frame: this process, its threads and the decode worker


def pipeline_fps(path: Path, colouriser, preset: str, stability: float | None = None,
                 keep: Path | None = None) -> PipelineRun:
    """(frames/s, CPU ms a frame) of one `colourbatch video` run of `path` (video.colour_video with
    a loaded, warm model: the steady state of a batch of films), at `preset`, the stabiliser at
    `stability` (None: the default); the coloured film is written to `keep` when given."""
    from colourbatch.config import VideoConfig
    from colourbatch.video import colour_video

    vcfg = VideoConfig(preset=preset, overwrite=True)
    if stability is not None:
        vcfg = VideoConfig(preset=preset, overwrite=True, stability=stability)
    with tempfile.TemporaryDirectory() as tmp:
        t0, c0 = time.perf_counter(), all_cpu_seconds()
        report = colour_video(path, keep or Path(tmp) / "out.mp4", colouriser.cfg, vcfg, colouriser=colouriser)
        seconds, cpu = time.perf_counter() - t0, all_cpu_seconds() - c0
    assert report.ok, report
    return PipelineRun(report.frames_out / seconds, 1000 * cpu / report.frames_out)


class FilmRate(NamedTuple):
    fps: float         # frames/s once a film is under way
    fixed_s: float     # wall seconds each film pays once
    cpu_ms: float      # CPU ms a frame once under way (this process, its threads, the decode worker)
    fixed_cpu_s: float  # CPU seconds each film pays once


def per_extra_frame(short: float, short_frames: int, long: float, long_frames: int) -> float:
    """What each frame a long clip has beyond a short one costs, from what each clip cost in all
    (the short clip being the long one's start): a film's cost a frame once under way, what a
    film pays once cancelling out. Every stage a film's rate is compared with must be taken
    this way too: a real film's frames differ in what they cost x264, either way (bikes.mp4 at
    720p, veryfast, one thread: 20-21 ms a frame over its first 100 frames, 17-18 over the next
    150; 18.7 over its first 50, 21.5 over the next 75)."""
    return (long - short) / (long_frames - short_frames)


def film_rate(short, short_frames: int, long, long_frames: int) -> FilmRate:
    """A film's rate and its fixed cost, from the runs (floor.pipeline_fps) of a short and a long
    clip: the extra frames over the extra time (and CPU), and what the short run took beyond its
    frames at that rate (the decode worker's start, the stabiliser's look-ahead filling, the
    writer and x264's look-ahead draining with the network done). An hour of film pays the fixed
    cost once."""
    t_short, t_long = short_frames / short.fps, long_frames / long.fps
    c_short, c_long = short.cpu_ms * short_frames / 1000, long.cpu_ms * long_frames / 1000
    per_frame = per_extra_frame(t_short, short_frames, t_long, long_frames)
    cpu_frame = per_extra_frame(c_short, short_frames, c_long, long_frames)
    return FilmRate(1 / per_frame, t_short - short_frames * per_frame, 1000 * cpu_frame,
                    c_short - short_frames * cpu_frame)


def coloured(path: Path, colouriser, out: Path) -> Path:
    """`path` coloured by `colourbatch video` (CRF 18, preset veryfast) into `out`: frames like the
    ones the pipeline hands x264, for the encoder's floor."""
    pipeline_fps(path, colouriser, "veryfast", keep=out)
    return out


def floor_fps(stages: dict[str, float], cores: int) -> float:
    """Frames/s of the stages (CPU ms a frame on one thread) overlapped perfectly on `cores` cores:
    every stage splits over cores (x264 frame threads, torch's intra-op threads), so the bound is
    the cores' capacity for their summed CPU time."""
    return cores * 1000 / sum(stages.values())


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
    from colourbatch.device import cpu_count
    cores = cpu_count()
    clip = make_clip(Path(tempfile.mkdtemp()) / "clip.mp4", *SIZES[args.size], args.seconds)

    dec, frames = decode_ms(clip)
    nets = network_ms(args.weights)
    colouriser = engine(args.weights, args.precision)
    enc = encode_ms(coloured(clip, colouriser, clip.with_name("coloured.mp4")), args.preset, args.crf)
    glue = glue_ms(clip)
    net_name, net = min(nets.items(), key=lambda kv: kv[1])
    stages = {"decode to YUV": dec, f"x264 crf {args.crf} {args.preset}": enc, f"network ({net_name})": net}
    floor = floor_fps(stages, cores)
    runs = [pipeline_fps(clip, colouriser, args.preset) for _ in range(max(1, args.repeat))]
    fps, cpu = max(r.fps for r in runs), min(r.cpu_ms for r in runs)
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
