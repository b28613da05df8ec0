"""Colour against fidelity, per decoding: run from the repository root.

    python weights/frontier.py WEIGHTS [WEIGHTS ...] [--data ../shared/data/photos]

For each weights file, scores the photos it never trained on (its own held-out
collections or split, as `evaluate` picks them) pooled, at fp32, with the
annealed decoding and 'confident' decoding (radius 30 and 20, mass 1.0) at
temperatures 0.2-0.7: PSNR RGB / AuC / AuC rebalanced / colourfulness ratio.
Two recipes compare fairly only at the same colourfulness ratio: a decoding
that paints less always gains PSNR, so read the rows side by side where the
ratios match. The logits are computed once per file (weights/calibrate.py).
"""
import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from calibrate import _logits, never_trained_on  # noqa: E402

from colourbatch.evaluate import Metrics, grey_baseline_lab, merged_lab  # noqa: E402

TEMPERATURES = (0.2, 0.25, 0.3, 0.38, 0.5, 0.7)
DECODINGS = (("annealed", None), ("confident", 30.0), ("confident", 20.0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("weights", nargs="+")
    ap.add_argument("--data", default="../shared/data/photos")
    args = ap.parse_args()
    for weights in args.weights:
        model, ds, _, l8, truth = never_trained_on(weights, args.data)
        with torch.inference_mode():
            raw = torch.cat([_logits(model, l8[i:i + 16], torch.device("cpu"), torch.float32)
                             for i in range(0, len(ds), 16)])

        def row(name: str, pics) -> None:
            m = Metrics()
            for pic, true in zip(pics, truth):
                m.update(pic, true)
            r = m.result()
            print(f"{weights} {name}: {r['psnr_rgb']:.2f} / {r['auc']:.2f} / {r['auc_rebal']:.2f} / "
                  f"{r['colourfulness_ratio']:.2f}", flush=True)

        print(f"{weights}: {len(ds)} pictures never trained on")
        row("grey", [grey_baseline_lab(l8[i, 0].numpy()) for i in range(len(ds))])
        for policy, radius in DECODINGS:
            if radius is not None:
                model.cfg.sure_radius, model.cfg.sure_mass = radius, 1.0
            for t in TEMPERATURES:
                pics = []
                for i in range(0, len(ds), 16):
                    pics += merged_lab(l8[i:i + 16], model.decode(raw[i:i + 16], t, policy))
                row(f"{policy}{'' if radius is None else f' r{radius:g}'} T{t}", pics)


if __name__ == "__main__":
    main()
