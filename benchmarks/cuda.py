"""`colourbatch video` on a CUDA GPU: frames/s at 1080p and where the time goes.

    python benchmarks/cuda.py [--size 1080] [--seconds 4] [--batch 64] [--json OUT]

All in one run on one machine, against the floor of the work:

* decode: PyAV decoding the clip to YUV planes, one thread (the pipeline decodes
  in a DataLoader worker);
* encode: libx264 at CRF 18, presets medium and veryfast, fed ready planes
  (x264's own threads, as the pipeline runs it);
* network: the model's forward on 224x224 tiles at `--batch`, on the GPU, fp16
  and bf16 autocast and fp32, timed with a device synchronise, without the
  decoding of its output distribution; then `Colouriser.predict` (uint8 tiles
  in, uint8 a/b out: upload, forward, annealed-mean decode, download);
* the pipeline: `colour_video` on the same clip (`floor.pipeline_fps`), each
  precision and preset, stabiliser on (default) and off.

The floor of a pipeline that overlaps decode, model and encode is the slowest
of them; the ratio printed is the pipeline's frames/s over that. The clip is
synthetic (floor.make_clip: grey, motion everywhere), so the script needs nothing
but the repository.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

SIZES = {360: (640, 360), 720: (1280, 720), 1080: (1920, 1080)}


def timed(fn, repeat: int = 1) -> float:
    t = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t) / repeat


def main() -> None:
    import numpy as np
    import torch

    from colourbatch import colour, media
    from colourbatch.config import RunConfig, VideoConfig
    from colourbatch.model import model_input
    from colourbatch.pipeline import Colouriser
    from floor import make_clip, pipeline_fps  # benchmarks/floor.py: the same clip, the same pipeline run

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=1080, choices=sorted(SIZES))
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--device", default="cuda", help="cpu: a quick dry run of the script itself")
    args = ap.parse_args()
    dev = args.device
    if dev == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device: this benchmark measures the GPU path")
    res: dict = {"gpu": torch.cuda.get_device_name(0) if dev == "cuda" else "none", "torch": torch.__version__,
                 "size": args.size, "batch": args.batch}
    print(json.dumps(res), flush=True)
    w, h = SIZES[args.size]
    with tempfile.TemporaryDirectory() as d:
        clip = make_clip(Path(d) / "clip.mp4", w, h, args.seconds)
        info = media.probe(clip)
        tags = info.colour

        # -- decode alone
        t = time.perf_counter()
        ys = [pic.y for pic, _ in media.Decoder(clip, tags=tags)]
        n = len(ys)
        res["decode_ms"] = 1000 * (time.perf_counter() - t) / n
        # -- the model
        tiles = np.stack([colour.l_tile(colour.yuv_to_l(y, tags.full_range)) for y in ys[:args.batch]])
        while len(tiles) < args.batch:
            tiles = np.concatenate([tiles, tiles])[:args.batch]
        x_cpu = torch.from_numpy(tiles)[:, None]
        for prec in ("fp16", "bf16", "fp32") if dev == "cuda" else ("fp32",):
            eng = Colouriser(RunConfig(device=dev, precision=prec, batch_size=args.batch))
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
            res[f"forward_ms_per_tile_{prec}"] = 1000 * timed(fwd, 20) / args.batch
            for _ in range(3):
                eng.predict(x_cpu)
            res[f"predict_ms_per_tile_{prec}"] = 1000 * timed(lambda: eng.predict(x_cpu), 20) / args.batch
            print(json.dumps({k: v for k, v in res.items() if prec in k}), flush=True)
        # -- encode alone
        ab = Colouriser(RunConfig(device=dev, precision="fp16" if dev == "cuda" else "fp32")).predict(x_cpu[:16])
        for preset in ("medium", "veryfast"):
            enc = media.Encoder(Path(d) / f"e-{preset}.mp4", info, w, h, media.EncodeSettings(preset=preset))
            step = int(round(1 / (info.fps * info.time_base)))
            planes = [colour.lab_to_chroma(ys[i], ab[i % len(ab)], tags.matrix, tags.full_range, enc.chroma_size)
                      for i in range(min(n, 16))]
            t = time.perf_counter()
            for i in range(n):
                cb, cr = planes[i % len(planes)]
                enc.write_planes(ys[i], cb, cr, i * step)
            enc.close()
            res[f"encode_ms_{preset}"] = 1000 * (time.perf_counter() - t) / n
        print(json.dumps({k: v for k, v in res.items() if k.startswith(("decode", "encode"))}), flush=True)
        # -- the pipeline
        for prec in ("fp16", "bf16") if dev == "cuda" else ("fp32",):
            eng = Colouriser(RunConfig(device=dev, precision=prec, batch_size=args.batch))
            pipeline_fps(clip, eng, "veryfast")  # warm-up: cuDNN picks its kernels
            for preset in ("medium", "veryfast"):
                for stab in (VideoConfig().stability, 0.0):  # the default, and off
                    fps, _ = pipeline_fps(clip, eng, preset, stab)
                    floor = 1000 / max(res["decode_ms"], res[f"encode_ms_{preset}"],
                                       res[f"predict_ms_per_tile_{prec}"])
                    key = f"pipeline_{prec}_{preset}_stab{stab}"
                    res[key] = {"fps": fps, "floor_fps": floor, "ratio": fps / floor}
                    print(json.dumps({key: res[key]}), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
