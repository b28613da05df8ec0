"""Measure a page model on the held-out drawings, as a page would be coloured.

    python weights/page_eval.py [WEIGHTS] [SHEET.png] [T ...]

For every picture of the held-out categories (weights/recipe.py PAGE_HOLDOUT,
never trained on), at up to EVAL_SIDE px: draw it (lineart.draw_page, plain style: what evaluation
uses), give the model the drawn page squeezed to its tile, upsample the flat
colour layer it predicts to the picture's size and multiply it under the ink
(RGB multiply: out = layer * page / 255; the pages pipeline's own compositing,
colourbatch/flats.py, is scored by `colourbatch evaluate`). Prints JSON, means
over pictures: PSNR RGB of that composite and of the uncoloured drawn page
against the colour picture, the colourfulness ratio, and the share of non-ink
pixels (input L8 >= 128) with chroma above 10. SHEET gets a contact sheet of
the first pictures: drawn input | composite | truth. T: decoding temperatures
to score, a row each (default: the weights' own; the sheet shows the first).
"""
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

from colourbatch import checkpoint, colour
from colourbatch.data import list_images, read_colour_image
from colourbatch.evaluate import colourfulness, contact_sheet, psnr, write_png
from colourbatch.lineart import draw_page
from colourbatch.model import predict_layer8

sys.path.insert(0, str(Path(__file__).parent))
from recipe import DRAWN, PAGE_HOLDOUT  # noqa: E402

INK_L8 = 128  # input L8 below which a pixel is ink
SHEET_ROWS = 12
#: Pictures are scored at up to this long side (a quarter of the pixels of the 1024-px files:
#: the layer is a 56x56 prediction either way, and PSNR is a per-pixel mean).
EVAL_SIDE = 512


def composite(model, page: np.ndarray, temperature: float | None = None) -> np.ndarray:
    """Drawn page L8 (H, W) -> RGB: the model's layer, upsampled, multiplied under the ink."""
    h, w = page.shape
    with torch.inference_mode():
        tile = torch.from_numpy(colour.l_tile(page))[None, None]
        lab = predict_layer8(model, tile, temperature)[0]
    layer = cv2.resize(lab.permute(1, 2, 0).numpy(), (w, h), interpolation=cv2.INTER_LINEAR)
    rgb = colour.lab_to_rgb(layer).astype(np.float32) * (page.astype(np.float32)[..., None] / 255.0)
    return (rgb + 0.5).astype(np.uint8)


def main() -> None:
    weights = sys.argv[1] if len(sys.argv) > 1 else "weights/page.pt"
    temps = [float(t) for t in sys.argv[3:]] or [None]
    torch.set_num_threads(1)
    model, _ = checkpoint.load(weights)
    keys = ("psnr_rgb", "psnr_drawn", "colourfulness", "colourfulness_true", "coloured", "paper")
    sums = {t: dict.fromkeys(keys, 0.0) for t in temps}
    rows, n = [], 0
    for cat in PAGE_HOLDOUT:
        for path in list_images(DRAWN / cat):
            truth = read_colour_image(path, max_side=EVAL_SIDE)
            page = draw_page(truth)
            drawn = colour.grey_to_rgb(page)
            ink = page < INK_L8
            base = {"psnr_drawn": psnr(drawn, truth), "colourfulness_true": colourfulness(truth),
                    "paper": float((~ink).sum())}
            for t in temps:
                out = composite(model, page, t)
                lab = colour.rgb_to_lab(out).astype(np.int16)
                chroma = np.hypot(lab[..., 1] - 128, lab[..., 2] - 128)
                one = dict(base, psnr_rgb=psnr(out, truth), colourfulness=colourfulness(out),
                           coloured=float((chroma[~ink] > 10).sum()))
                for k, v in one.items():
                    sums[t][k] += v
                if t == temps[0] and len(rows) < SHEET_ROWS:
                    rows.append([drawn, out, truth])
            n += 1
    for t, s in sums.items():
        res = {k: s[k] / n for k in ("psnr_rgb", "psnr_drawn", "colourfulness")}
        res.update(colourfulness_ratio=s["colourfulness"] / s["colourfulness_true"],
                   coloured_share=s["coloured"] / max(s["paper"], 1.0), pictures=n, weights=weights,
                   temperature=t if t is not None else model.cfg.temperature)
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in res.items()}))
    if len(sys.argv) > 2:
        write_png(sys.argv[2], contact_sheet(["drawn input", "layer x ink", "truth"], rows))


if __name__ == "__main__":
    main()
