"""The per-page work of `colourbatch pages` between decoding and encoding, on large photo pages.

    python benchmarks/pages.py [--mp 2,8,24] [--photo FILE] [--repeat 3] [--threads 1]

For a grey photo page of each size (megapixels, 4:3; made from `--photo`, any
picture, scaled up, else from a synthetic scene; the top eighth left white as a
paper margin, which a tint predicted on it pushes out of the gamut), CPU ms of
each step the page takes besides the model (pages.py's worker and writer):

* L      - colour.rgb_to_l of the decoded RGB page
* tile   - pipeline.tile_page (the window and its 224 tile)
* merge  - pipeline.colour_page: a/b of one tile upsampled to the page and merged with
           its own L (colour.merge_l_ab: LAB -> RGB, the lightness guard)
* BGR    - the RGB -> BGR swap before cv2.imencode

Best of `--repeat`, OpenCV on `--threads` threads (1: the CPU cost; the pages
command leaves OpenCV its default). The a/b are smooth random colours of the
model's output size.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from colourbatch import colour  # noqa: E402
from colourbatch.pipeline import colour_page, tile_page  # noqa: E402


def photo_page(mp: float, source: np.ndarray) -> np.ndarray:
    """A grey RGB page of `mp` megapixels (4:3) from `source` (grey), a white margin on top."""
    h = int((mp * 1e6 * 3 / 4) ** 0.5)
    w = h * 4 // 3
    grey = cv2.resize(source, (w, h), interpolation=cv2.INTER_CUBIC)
    grey[: h // 8] = 255
    return colour.grey_to_rgb(grey)


def synthetic_scene(h: int = 480, w: int = 640) -> np.ndarray:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    g = 120 + 70 * np.sin(xx / 41) * np.cos(yy / 29) + rng.normal(0, 12, (h, w))
    g[h // 3: h // 2, w // 5: w // 2] = 15  # dark shapes, as a photo has
    return np.clip(g, 0, 255).astype(np.uint8)


def best_ms(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        c = time.process_time()
        fn()
        best = min(best, time.process_time() - c)
    return 1000 * best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mp", default="2,8,24")
    ap.add_argument("--photo", default=None, help="a picture to make the pages from")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="OpenCV threads")
    args = ap.parse_args()
    cv2.setNumThreads(args.threads)
    source = synthetic_scene() if not args.photo else cv2.imread(args.photo, cv2.IMREAD_GRAYSCALE)
    rng = np.random.default_rng(1)
    ab = cv2.GaussianBlur(rng.integers(90, 170, (56, 56, 2)).astype(np.uint8), (0, 0), 2)
    ab = np.ascontiguousarray(ab.transpose(2, 0, 1))
    print(f"OpenCV {cv2.__version__}, {args.threads} thread(s); CPU ms a page, best of {args.repeat}")
    print("| page | L | tile | merge | BGR | total |")
    print("|---|---:|---:|---:|---:|---:|")
    for mp in [float(m) for m in args.mp.split(",") if m]:
        rgb = photo_page(mp, source)
        l8 = colour.rgb_to_l(rgb)
        windows, _ = tile_page(l8, "photo")
        out = colour_page(l8, "photo", windows, [ab] * len(windows))
        steps = [best_ms(lambda: colour.rgb_to_l(rgb), args.repeat),
                 best_ms(lambda: tile_page(l8, "photo"), args.repeat),
                 best_ms(lambda: colour_page(l8, "photo", windows, [ab] * len(windows)), args.repeat),
                 best_ms(lambda: cv2.cvtColor(out, cv2.COLOR_RGB2BGR), args.repeat)]
        h, w = l8.shape
        print(f"| {mp:g} MP ({w}x{h}) | " + " | ".join(f"{s:.0f}" for s in steps) + f" | {sum(steps):.0f} |",
              flush=True)


if __name__ == "__main__":
    main()
