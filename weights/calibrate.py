"""Calibrate 'confident' decoding on held-out photo collections: run from the repository root.

    python weights/calibrate.py [WEIGHTS] [DATA]   # default: weights/default.pt ../shared/data/photos

Scores the never-trained validation photos of each collection (sub-folder of
DATA; the weights' own path-hash split) with the annealed decoding and with
'confident' decoding over a grid of (sure_radius, sure_mass, temperature), at
fp32 and at bf16 (the two disagree for the shipped weights; docs/quality.md).
The logits are computed once per precision; each setting only re-decodes.

A setting is ranked by the issue's targets on the pooled pictures, met at both
precisions (PSNR >= grey, AuC >= grey, rebalanced AuC >= grey + 3,
colourfulness ratio 0.7-1.2), then by the margin over grey (PSNR dB plus a
third of the rebalanced AuC points). It prints the best settings, then a
leave-one-source-out table: each collection scored with the setting chosen on
the other collections only. The shipped weights saw every collection in
training (other pictures of it), so these numbers are optimistic.
"""
import sys

import numpy as np
import torch

from colourbatch.data import split_dataset
from colourbatch.device import autocast
from colourbatch.evaluate import Metrics, grey_baseline_lab, held_out_split, merged_lab
from colourbatch.model import model_input
from colourbatch.pipeline import load_weights

GRID = [(r, mass, t) for t in (0.5, 0.7) for r in (15, 20, 25, 30, 35) for mass in (0.6, 0.75, 0.9, 1.0)]
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}


def pooled(parts):
    """One Metrics result from several sources' accumulators."""
    total = Metrics()
    for m in parts:
        total.merge(m)
    return total.result()


def targets_met(r, g):
    return sum([r["psnr_rgb"] >= g["psnr_rgb"], r["auc"] >= g["auc"],
                r["auc_rebal"] >= g["auc_rebal"] + 3, 0.7 <= r["colourfulness_ratio"] <= 1.2])


def never_trained_on(weights: str, data: str):
    """(model, data set, val_fraction, L tiles, true LAB tiles) of the photos of `data` that
    `weights` never trained on (its own held-out collections or split, as evaluate picks them)."""
    model, meta, _ = load_weights(weights)
    val_fraction, holdout = held_out_split(meta)
    ds = split_dataset([data], "val", val_fraction, holdout=holdout)
    l8 = torch.stack([ds[i][0] for i in range(len(ds))])
    ab8 = torch.stack([ds[i][1] for i in range(len(ds))])
    truth = [np.dstack([l8[i, 0].numpy(), ab8[i, 0].numpy(), ab8[i, 1].numpy()]) for i in range(len(ds))]
    return model, ds, val_fraction, l8, truth


def main() -> None:
    weights = sys.argv[1] if len(sys.argv) > 1 else "weights/default.pt"
    data = sys.argv[2] if len(sys.argv) > 2 else "../shared/data/photos"
    model, ds, val_fraction, l8, truth = never_trained_on(weights, data)
    src = [ds.source(i) for i in range(len(ds))]
    sources = sorted(set(src))

    def by_source(pics):
        acc = {s: Metrics() for s in sources}
        for i, pic in enumerate(pics):
            acc[src[i]].update(pic, truth[i])
        return acc

    results = {"grey": by_source([grey_baseline_lab(l8[i, 0].numpy()) for i in range(len(ds))])}
    cpu = torch.device("cpu")
    for prec, dtype in PRECISIONS.items():
        with torch.inference_mode():
            raw = torch.cat([_logits(model, l8[i:i + 16], cpu, dtype) for i in range(0, len(ds), 16)])
        settings = [("annealed", None, None, None)] + [("confident", *g) for g in GRID]
        for policy, radius, mass, t in settings:
            if radius is not None:
                model.cfg.sure_radius, model.cfg.sure_mass = radius, mass
            pics = []
            for i in range(0, len(ds), 16):
                pics += merged_lab(l8[i:i + 16], model.decode(raw[i:i + 16], t, policy))
            results[(prec, policy, radius, mass, t)] = by_source(pics)
        print(f"{prec}: {len(settings)} decodings of {len(ds)} pictures", file=sys.stderr, flush=True)

    def score(key, srcs):
        g = pooled([results["grey"][s] for s in srcs])
        met, margin = 0, 0.0
        for prec in PRECISIONS:
            r = pooled([results[(prec,) + key][s] for s in srcs])
            met += targets_met(r, g)
            margin += (r["psnr_rgb"] - g["psnr_rgb"]) + (r["auc_rebal"] - g["auc_rebal"]) / 3
        return met, margin

    keys = [("confident", *g) for g in GRID]
    best = sorted(keys, key=lambda k: score(k, sources), reverse=True)
    print(f"{len(ds)} validation photos of {data} (val_fraction {val_fraction}), {weights}")
    print("best on all sources pooled (radius, mass, T): targets met at fp32+bf16 (of 8), margin")
    for k in best[:5]:
        print(f"  {k[1:]}  {score(k, sources)[0]}  {score(k, sources)[1]:.2f}")

    def cell(r):
        return f"{r['psnr_rgb']:.2f} / {r['auc']:.2f} / {r['auc_rebal']:.2f} / {r['colourfulness_ratio']:.2f}"
    print("\nleave-one-source-out: PSNR RGB / AuC / AuC rebalanced / colourfulness ratio")
    print("| source (photos) | chosen on the others | grey | annealed fp32 | annealed bf16 "
          "| confident fp32 | confident bf16 |\n|---|---|---|---|---|---|---|")
    chosen = {s: max(keys, key=lambda k: score(k, [o for o in sources if o != s])) for s in sources}
    for s in sources:
        cells = [cell(pooled([results["grey"][s]]))]
        cells += [cell(pooled([results[(p, "annealed", None, None, None)][s]])) for p in PRECISIONS]
        cells += [cell(pooled([results[(p,) + chosen[s]][s]])) for p in PRECISIONS]
        print(f"| {s} ({results['grey'][s].n}) | {chosen[s][1:]} | " + " | ".join(cells) + " |")
    cells = [cell(pooled(list(results["grey"].values())))]
    cells += [cell(pooled(list(results[(p, "annealed", None, None, None)].values()))) for p in PRECISIONS]
    cells += [cell(pooled([results[(p,) + chosen[s]][s] for s in sources])) for p in PRECISIONS]
    print(f"| **pooled** ({len(ds)}) | each its own | " + " | ".join(cells) + " |")


def _logits(model, l8, device, dtype):
    with autocast(device, dtype):
        return model(model_input(l8)).float()


if __name__ == "__main__":
    main()
