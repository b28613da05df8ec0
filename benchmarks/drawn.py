"""Drawn pages as users see them: real black-and-white pages through `colourbatch pages`' own
per-page path, with what the issue asks of them and what a drawn page costs beside a photo page.

    python benchmarks/drawn.py PAGES... [--sheet docs/sheet-drawn.png] [--limit N] [--page-weights F]

For each page (every picture under each folder given, and each file, read as grey): the style the
auto rule gives it; coloured = share of its non-ink area with chroma > 10;
ink kept = share of ink pixels (L < 35) within 5 L of the page (evaluate's
DrawnMetrics); and the milliseconds of the whole per-page work (tiles, model,
merge) coloured as a drawn page and, on the same page in the same run, as a
photo page: the ratio is what a drawn page costs against a photo page of the
same size. Decoding and writing the file are the same for both and left out.
The sheet shows input | output for up to 12 pages.
"""
import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from colourbatch import colour, flats
from colourbatch.config import RunConfig
from colourbatch.data import list_images, read_colour_image
from colourbatch.evaluate import DrawnMetrics, contact_sheet, write_png
from colourbatch.pipeline import Colouriser, colour_page, tile_page


def timed(engine: Colouriser, l8: np.ndarray, style: str, repeats: int = 3):
    """(RGB, best ms of the page's work) coloured as `style`."""
    best, rgb = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        windows, tiles = tile_page(l8, style)
        x = torch.from_numpy(np.stack(tiles))
        small = engine.predict_layer(x) if style == "drawn" else engine.predict(x)
        rgb = colour_page(l8, style, windows, list(small))
        best = min(best, (time.perf_counter() - t) * 1e3)
    return rgb, best


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pages", nargs="+", help="folders of pages and page files")
    ap.add_argument("--sheet", help="contact sheet PNG: input | output")
    ap.add_argument("--limit", type=int, default=0, help="only the first N pages")
    ap.add_argument("--precision", default="fp32", help="fp32: this CPU has no native bf16")
    ap.add_argument("--page-weights", help="page model [default: the shipped weights/page.pt]")
    args = ap.parse_args()
    run = RunConfig(device="cpu", precision=args.precision)
    from dataclasses import replace
    drawn_engine = Colouriser(replace(run, weights=args.page_weights), shipped="page")
    photo_engine = Colouriser(run)
    pages = [p for arg in args.pages for p in (list_images(arg) if Path(arg).is_dir() else [Path(arg)])]
    pages = pages[:args.limit or None]
    print(f"{'page':28s} {'size':>10s} {'style':>6s} {'coloured':>9s} {'ink kept':>9s} "
          f"{'drawn ms':>9s} {'photo ms':>9s} {'ratio':>6s}")
    ratios, coloured, rows = [], [], []
    total = DrawnMetrics()
    for path in pages:
        l8 = colour.rgb_to_l(read_colour_image(path))
        style = flats.page_style(l8)
        drawn, t_drawn = timed(drawn_engine, l8, "drawn")
        _, t_photo = timed(photo_engine, l8, "photo")
        one = DrawnMetrics()
        one.update(l8, colour.rgb_to_lab(drawn))
        total.merge(one)
        r = one.result()
        ratios.append(t_drawn / t_photo)
        coloured.append(r["coloured"])
        h, w = l8.shape
        print(f"{Path(path).name[:28]:28s} {w:>4d}x{h:<5d} {style:>6s} {100 * r['coloured']:8.1f}% "
              f"{100 * r['ink_kept']:8.2f}% {t_drawn:9.0f} {t_photo:9.0f} {t_drawn / t_photo:6.2f}")
        if args.sheet and len(rows) < 12:
            rows.append([colour.grey_to_rgb(colour.l8_to_grey(l8)), drawn])
    r = total.result()
    print(f"\n{len(pages)} pages: coloured (non-ink area, chroma > 10) median "
          f"{100 * statistics.median(coloured):.1f}%, min {100 * min(coloured):.1f}%; ink kept "
          f"{100 * r['ink_kept']:.2f}% of ink pixels; drawn / photo time median "
          f"{statistics.median(ratios):.2f}, max {max(ratios):.2f}")
    if args.sheet:
        # Two pages a row: page | coloured | page | coloured.
        pairs = [rows[i] + (rows[i + 1] if i + 1 < len(rows) else [np.full_like(rows[i][0], 255)] * 2)
                 for i in range(0, len(rows), 2)]
        sheet = contact_sheet(["page", "coloured", "page", "coloured"], pairs, 320)
        print("sheet:", write_png(args.sheet, sheet))


if __name__ == "__main__":
    main()
