"""Quality metrics, shared by training's validation and `colourbatch evaluate`.

All metrics compare a predicted picture with the true one, both uint8 OpenCV
LAB of the same size, and accumulate over a set of pictures:

* ``accuracy``: ColourMePy's score, 1 - MSE/7500, MSE over L, a and b on 0..255.
* ``psnr_rgb``: PSNR of the RGB pictures (peak 255), mean over pictures.
* ``psnr_ab``: PSNR of the 8-bit a/b planes (peak 255), mean over pictures.
* ``ssim``: SSIM (Gaussian window, sigma 1.5) on R, G and B, averaged.
* ``colourfulness``: Hasler & Suesstrunk (2003) on RGB,
  rg = R - G, yb = (R + G)/2 - B,
  M = sqrt(sd(rg)^2 + sd(yb)^2) + 0.3 sqrt(mean(rg)^2 + mean(yb)^2),
  the mean over pictures; ``colourfulness_ratio`` divides it by the truth's.
* ``auc``: Zhang et al. (2016) raw accuracy: the share of pixels whose a/b
  error (L2, LAB units) is within t, averaged over t = 0..150, in percent.
* ``auc_rebal``: its class-rebalanced form: pixels grouped by their true a/b in
  10-unit bins centred on multiples of 10 (the model's own bins, as Zhang et
  al.'s), each bin's accuracy curve averaged, then bins averaged equally
  (each pixel weighted by the inverse frequency of its bin over the set).
* ``l_error``: mean |L_pred - L_true| on 0..255 (the pipeline must keep L).
* ``warp_error`` (films): Lai et al.'s warp error, temporal.WarpError: mean
  |delta a/b| in LAB units between each frame and the previous one moved onto
  it along the source's optical flow, occluded pixels and cut pairs left out.

Drawn pages (`--drawn`): each colour picture is drawn as a black-and-white
page (lineart.draw_page, its plain style) and coloured as `pages --style
drawn` colours it (pipeline.tile_page / colour_page), at its own size; the
rows compare with the uncoloured page, and add, pooled over pixels:

* ``ink_kept``: share of ink pixels (page L8 < flats.INK_L8) whose L stays
  within INK_TOLERANCE (5 L units) of the page's;
* ``white_kept``: where the truth is white (L > 95, chroma < 5), the share
  that stays white (chroma < 5): balloons and paper-white areas;
* ``coloured``: share of the non-ink area with chroma above 10 (visibly coloured).

`evaluate_set` scores models on a split from data.split_dataset (the very split
training held out), loading them through the engine's pipeline.load_weights
and pipeline.open_device, or scores folders of finished pictures;
`evaluate_video` scores a coloured film against its source.
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import torch

from . import colour, files, flats, media
from .config import DECODES, VAL_FRACTION, EvalConfig
from .data import (ImageError, list_images, make_loader, read_colour_image, source_of,
                   split_batch, split_dataset)
from .device import autocast, prepare_model
from .errors import ColourbatchError, one_line
from .lineart import draw_page, page_scale
from .model import model_config, model_input, predict_layer8
from .pipeline import colour_page, load_weights, open_device, tile_page
from .temporal import WarpError

AUC_MAX = 150   # Zhang et al. integrate the accuracy curve over thresholds 0..150
AUC_BIN = 10    # a/b bin size for the rebalanced AuC
# Bins are centred on multiples of AUC_BIN (as the model's and Zhang's): 8-bit a, b
# span -128..127 LAB units -> bin indices -13..13, 27 per axis.
_BIN_LO = -13
_NB = 27

def colourfulness(rgb: np.ndarray) -> float:
    """Hasler & Suesstrunk's M of a uint8 RGB picture."""
    x = rgb.reshape(-1, 3).astype(np.float64)
    rg = x[:, 0] - x[:, 1]
    yb = 0.5 * (x[:, 0] + x[:, 1]) - x[:, 2]
    return float(math.sqrt(rg.var() + yb.var()) + 0.3 * math.sqrt(rg.mean() ** 2 + yb.mean() ** 2))


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * math.log10(peak * peak / mse)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM (Wang et al. 2004, Gaussian 11x11 sigma 1.5) over all channels."""
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(x):
        return cv2.GaussianBlur(x, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)

    mu_a, mu_b = blur(a), blur(b)
    va = blur(a * a) - mu_a ** 2
    vb = blur(b * b) - mu_b ** 2
    cov = blur(a * b) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a ** 2 + mu_b ** 2 + c1) * (va + vb + c2)
    return float(np.mean(num / den))


class Metrics:
    """Accumulates every metric over pairs of uint8 LAB pictures (pred, truth)."""

    def __init__(self):
        self.n = 0
        self.sums = {k: 0.0 for k in ("accuracy", "psnr_rgb", "psnr_ab", "ssim",
                                      "colourfulness", "colourfulness_true", "l_error")}
        # hist[bin, t]: pixels of true a/b bin `bin` whose error rounds up to t (t > 150 -> 151).
        self.hist = np.zeros((_NB * _NB, AUC_MAX + 2), np.int64)

    def merge(self, other: "Metrics") -> "Metrics":
        """Add `other`'s pictures: the result is as if each had been updated here."""
        self.n += other.n
        self.hist += other.hist
        for k, v in other.sums.items():
            self.sums[k] += v
        return self

    def update(self, pred_lab: np.ndarray, true_lab: np.ndarray) -> None:
        if pred_lab.shape != true_lab.shape:
            raise ValueError(f"prediction {pred_lab.shape} and truth {true_lab.shape} differ in size")
        p = pred_lab.astype(np.float32)
        t = true_lab.astype(np.float32)
        mse = float(np.mean((p - t) ** 2))
        pred_rgb, true_rgb = colour.lab_to_rgb(pred_lab), colour.lab_to_rgb(true_lab)
        s = self.sums
        s["accuracy"] += 1.0 - mse / 7500.0
        s["psnr_rgb"] += min(psnr(pred_rgb, true_rgb), 100.0)  # cap: a perfect picture is not infinite on average
        s["psnr_ab"] += min(psnr(pred_lab[..., 1:], true_lab[..., 1:]), 100.0)
        s["ssim"] += ssim(pred_rgb, true_rgb)
        s["colourfulness"] += colourfulness(pred_rgb)
        s["colourfulness_true"] += colourfulness(true_rgb)
        s["l_error"] += float(np.mean(np.abs(p[..., 0] - t[..., 0])))
        err = np.hypot(p[..., 1] - t[..., 1], p[..., 2] - t[..., 2]).ravel()
        # ceil: a pixel with error e counts as correct for every integer t >= e;
        # the 1e-4 absorbs float noise so an exact error of 10 is not rounded to 11.
        tb = np.clip(np.ceil(err - 1e-4), 0, AUC_MAX + 1).astype(np.int64)
        ab_true = colour.ab8_to_units(t[..., 1:].reshape(-1, 2))
        bi = np.clip(np.floor(ab_true / AUC_BIN + 0.5) - _BIN_LO, 0, _NB - 1).astype(np.int64)
        # bincount, not np.add.at: the same sum, tens of times faster on megapixel pictures.
        flat = (bi[:, 0] * _NB + bi[:, 1]) * (AUC_MAX + 2) + tb
        self.hist += np.bincount(flat, minlength=self.hist.size).reshape(self.hist.shape)
        self.n += 1

    def result(self) -> dict[str, float]:
        if self.n == 0:
            raise ValueError("no pictures were evaluated")
        out = {k: v / self.n for k, v in self.sums.items() if k != "colourfulness_true"}
        true_m = self.sums["colourfulness_true"] / self.n
        out["colourfulness_ratio"] = out["colourfulness"] / true_m if true_m > 0 else float("nan")
        out["colourfulness_true"] = true_m
        # Accuracy curves: share of pixels with error <= t, t = 0..150.
        cum = np.cumsum(self.hist, 1)[:, :AUC_MAX + 1].astype(np.float64)
        per_bin = self.hist.sum(1).astype(np.float64)
        out["auc"] = 100.0 * float((cum.sum(0) / per_bin.sum()).mean())
        used = per_bin > 0
        out["auc_rebal"] = 100.0 * float((cum[used] / per_bin[used, None]).mean(1).mean())
        out["images"] = self.n
        return out


def predict_lab(model, l8, device, temperature: float | None = None,
                decode: str | None = None) -> list[np.ndarray]:
    """uint8 L tiles (B, 1, S, S) -> the model's uint8 LAB pictures, merged as the pipeline merges.

    a/b is predicted from the tile, upsampled and merged with the tile's own L
    through RGB (colour.merge_l_ab), so L errors of the round trip are counted.
    Call under inference_mode and the caller's autocast.
    """
    raw = model(model_input(l8.to(device, non_blocking=True)))
    return merged_lab(l8, model.decode(raw, temperature, decode))


def grey_baseline_lab(l8: np.ndarray) -> np.ndarray:
    """The grey picture (a = b = 128) through RGB and back, as a real grey picture would be."""
    return colour.rgb_to_lab(colour.lab_to_rgb(colour.grey_lab(l8)))


def evaluate_model(model, loader, device, dtype, temperature: float | None = None,
                   max_images: int | None = None, grey: bool = False,
                   on_batch=None, decodes: tuple = (None,),
                   sources: list[str] | None = None) -> dict[str, Any]:
    """Metrics of `model` (and of the grey baseline if `grey`) over a loader of (l8, ab8),
    or of (x8, l8, ab8) from a drawn data set (the model is given x8).

    The model predicts from the L tile, a/b is upsampled to the tile's size and
    merged with the true L exactly as the pipeline merges pages and frames.
    Each entry of `decodes` (None: the weights' own decoding) is scored from
    the same forward pass: {"model": ...} for the first, {"model[D]": ...} for
    the others. `sources` (the source of each picture, in loader order) adds
    {"by_source": {source: {name: metrics}}}.
    """
    names = ["model"] + [f"model[{d}]" for d in decodes[1:]]
    pooled = {n: Metrics() for n in names + (["grey"] if grey else [])}
    split: dict[str, dict[str, Metrics]] = {}
    was_training = model.training
    model.eval()
    seen = 0
    with torch.inference_mode(), autocast(device, dtype):
        for batch in loader:
            x8, l8, ab8 = split_batch(batch)  # x8: the drawn page for a model of drawn pages, else l8
            raw = model(model_input(x8.to(device, non_blocking=True)))
            preds = {n: merged_lab(l8, model.decode(raw, temperature, d)) for n, d in zip(names, decodes)}
            l_np, ab_np = l8.numpy(), ab8.numpy()
            for i in range(len(l_np)):
                if max_images is not None and seen >= max_images:
                    break
                true_lab = np.dstack([l_np[i, 0], ab_np[i, 0], ab_np[i, 1]])
                pics = {n: p[i] for n, p in preds.items()}
                if grey:
                    pics["grey"] = grey_baseline_lab(l_np[i, 0])
                # Per source when asked (the pooled row is their merge): each picture is scored once.
                group = pooled if sources is None else split.setdefault(sources[seen],
                                                                        {n: Metrics() for n in pooled})
                for n, pic in pics.items():
                    group[n].update(pic, true_lab)
                seen += 1
            if on_batch:
                on_batch(seen)
            if max_images is not None and seen >= max_images:
                break
    model.train(was_training)
    for group in split.values():
        for n, m in group.items():
            pooled[n].merge(m)
    out: dict[str, Any] = {n: m.result() for n, m in pooled.items()}
    if sources is not None:
        out["by_source"] = {src: {n: m.result() for n, m in group.items()}
                            for src, group in sorted(split.items())}
    return out


def merged_lab(l8: torch.Tensor, ab_units: torch.Tensor) -> list[np.ndarray]:
    """Decoded a/b (LAB units) merged with the tiles' own L, as predict_lab merges."""
    ab_pred = colour.units_to_ab8(ab_units).cpu().numpy()
    l_np = l8.numpy()
    return [colour.rgb_to_lab(colour.merge_l_ab(l_np[i, 0], ab_pred[i])) for i in range(len(l_np))]


# ============================================================ evaluate command
class EvalError(ColourbatchError):
    """Evaluation cannot start (exit 2): nothing to evaluate, nothing to pair, no pictures."""


def evaluate_set(cfg: EvalConfig, on_event: Callable[[str, dict], None] | None = None) -> dict[str, Any]:
    """Score the grey baseline and each model (or a folder of predictions) on one set.

    Returns {"mode", "split", "images", "skipped", "rows": [{"name", "weights",
    "model", **metrics}], "notes", "sheet"}; the grey row comes first. Progress
    and notes leave through `on_event(kind, info)`.
    """
    emit = on_event or (lambda kind, info: None)
    if cfg.sheet and Path(cfg.sheet).is_dir():
        raise EvalError(f"{cfg.sheet}: is a folder; give the contact sheet a file name")
    if cfg.video or cfg.source:
        if not cfg.video:
            raise EvalError("--source needs --video (the coloured film to score against it)")
        if cfg.data or cfg.pred or cfg.truth or (cfg.source and cfg.weights):
            raise EvalError("--video/--source compare two films; they take no --data, --weights, --pred or --truth")
        if not cfg.source:
            return evaluate_colour_film(cfg, emit)
        score = evaluate_video(cfg.video, cfg.source, cfg.max_frames)
        return {"mode": "video", "video": str(cfg.video), "source": str(cfg.source), "split": None,
                "rows": [{"name": Path(cfg.video).name, "weights": None, "model": None, **asdict(score)}],
                "notes": [], "sheet": None}
    if cfg.pred or cfg.truth:
        if not (cfg.pred and cfg.truth):
            raise EvalError("--pred and --truth go together")
        if cfg.data or cfg.weights:
            raise EvalError("--pred/--truth compare finished pictures; they take no --data or --weights")
        return evaluate_folders(cfg, emit)
    if not cfg.data:
        raise EvalError("nothing to evaluate: give --data, or --pred with --truth")
    if cfg.drawn:
        return evaluate_drawn(cfg, emit)
    unknown = [d for d in cfg.decode if d not in DECODES]
    if unknown:
        raise EvalError(f"unknown decode {unknown[0]!r} (use {', '.join(DECODES)})")
    return _evaluate_models(cfg, emit)


def held_out_split(metadata: dict, val_fraction: float | None = None,
                   holdout: tuple = ()) -> tuple[float, tuple]:
    """(val_fraction, held-out sources) to score weights on: what is asked, else what their
    training held out (its train_config), else the shared default."""
    tc = metadata.get("train_config") or {}
    if val_fraction is None:
        val_fraction = float(tc.get("val_fraction") or VAL_FRACTION)
    return val_fraction, tuple(holdout or tc.get("holdout") or ())


def _evaluate_models(cfg: EvalConfig, emit) -> dict[str, Any]:
    # Every weights file is loaded before any long work, so a bad one fails at once.
    models = []
    for w in cfg.weights or (None,):
        model, meta, path = load_weights(w)
        models.append((path, model_config(model)[0], model, meta))
    drawn = [str(p) for p, _, model, _ in models if model.drawn]
    if drawn:
        # A page model takes drawn pages, not a photo's L: scored on photos its numbers mean nothing.
        raise EvalError(f"{', '.join(drawn)}: a model of drawn pages; score it with --drawn")
    names = _row_names([p for p, *_ in models])
    # Score on the split the (first) model was held out from, not a different one.
    val_fraction, holdout = held_out_split(models[0][3], cfg.val_fraction, cfg.holdout)
    device, dtype = open_device(cfg.device, cfg.precision)

    skipped: list[str] = []

    def on_skip(path, why):
        skipped.append(path)
        emit("skip", {"path": path, "reason": why})

    ds = split_dataset(cfg.data, cfg.split, val_fraction, cfg.size, on_skip=on_skip, holdout=holdout)
    n = len(ds) if cfg.max_images is None else min(len(ds), cfg.max_images)
    sources = [ds.source(i) for i in range(n)] if cfg.per_source else None
    emit("start", {"mode": "data", "split": cfg.split, "val_fraction": val_fraction, "images": n,
                   "holdout": list(holdout), "models": names, "device": str(device),
                   "dtype": str(dtype).replace("torch.", "")})
    loader = make_loader(ds, cfg.batch_size, cfg.workers, pin_memory=device.type == "cuda")
    rows: list[dict[str, Any]] = []
    by_source: dict[str, list[dict[str, Any]]] = {}
    columns: list[tuple[str, Any, str | None]] = []  # (label, model, decode) of each sheet column
    for k, ((path, model_name, model, meta), name) in enumerate(zip(models, names)):
        model = prepare_model(model, device).eval()
        # A model without a distribution (the seed) decodes one way: one row.
        decodes = tuple(cfg.decode) if cfg.decode and hasattr(model.cfg, "decode") else (None,)
        labels = [name if d is None else f"{name}[{d}]" for d in decodes]
        emit("model", {"name": name, "index": k, "images": n})
        res = evaluate_model(model, loader, device, dtype, cfg.temperature, cfg.max_images,
                             grey=k == 0, on_batch=lambda seen, name=name: emit(
                                 "progress", {"name": name, "done": seen, "images": n}),
                             decodes=decodes, sources=sources)
        keys = ["model"] + [f"model[{d}]" for d in decodes[1:]]
        entries = ([("grey", "grey", None, None)] if k == 0 else []) + [
            (key, label, str(path), model_name) for key, label in zip(keys, labels)]
        for key, label, weights, mname in entries:
            rows.append({"name": label, "weights": weights, "model": mname, **res[key]})
            emit("row", rows[-1])
            for src, group in res.get("by_source", {}).items():
                by_source.setdefault(src, []).append(
                    {"name": f"{label} @ {src}", "source": src, "weights": weights, "model": mname,
                     **group[key]})
        columns += [(label, model, d) for label, d in zip(labels, decodes)]
    # Per-source rows follow the pooled ones, source by source, so any table lists them.
    rows += [row for src in sorted(by_source) for row in by_source[src]]
    result = {"mode": "data", "data": [str(p) for p in cfg.data], "split": cfg.split,
              "val_fraction": val_fraction, "holdout": list(holdout), "images": n,
              "skipped": len(skipped), "rows": rows, "notes": [], "sheet": None}
    if cfg.sheet:
        # Spread over the set (which is sorted by source), so every source shows, not the first's.
        picks = np.linspace(0, n - 1, min(cfg.sheet_images, n)).round().astype(int).tolist()
        count = len(picks)
        l8 = torch.stack([ds[i][0] for i in picks])
        ab8 = torch.stack([ds[i][1] for i in picks])
        result["sheet_pictures"] = [ds.name(i) for i in picks]
        pics = [[grey_baseline_lab(t[0].numpy()) for t in l8]]
        with torch.inference_mode(), autocast(device, dtype):
            for _, model, d in columns:
                pics.append(predict_lab(model, l8, device, cfg.temperature, d))
        pics.append([np.dstack([l[0].numpy(), a[0].numpy(), a[1].numpy()]) for l, a in zip(l8, ab8)])
        rgb_rows = [[colour.lab_to_rgb(col[i]) for col in pics] for i in range(count)]
        sheet = contact_sheet(["grey"] + [c[0] for c in columns] + ["truth"], rgb_rows, cfg.sheet_cell)
        result["sheet"] = str(write_png(cfg.sheet, sheet))
        emit("sheet", {"path": result["sheet"], "images": count})
    return result


# ------------------------------------------------------------ drawn pages
#: |L out - L page| (LAB units) within which an ink pixel counts as kept.
INK_TOLERANCE = 5.0
#: Chroma (LAB units) under which a pixel is white/neutral, and over which it is visibly coloured.
WHITE_CHROMA, COLOURED_CHROMA = 5.0, 10.0
#: Truth L above which a neutral pixel counts as white paper.
WHITE_L = 95.0
#: Pictures are drawn at no more than this side: a page's size, and a bounded cost per picture.
DRAWN_SIDE = 1024


class DrawnMetrics:
    """Pixel counts behind ink_kept, white_kept and coloured (pooled over pictures)."""

    def __init__(self):
        self.counts = np.zeros(6, np.int64)  # ink, ink kept, white, white kept, paper, coloured

    def merge(self, other: "DrawnMetrics") -> "DrawnMetrics":
        self.counts += other.counts
        return self

    def update(self, page_l8: np.ndarray, pred_lab: np.ndarray, true_lab: np.ndarray | None = None) -> None:
        """One coloured page (its uint8 LAB) of the page `page_l8`; without a truth, white_kept
        is not counted (real pages have none)."""
        to_l = colour.LAB_L_MAX / colour.L8_MAX
        ink = page_l8 < flats.INK_L8
        kept = np.abs(pred_lab[..., 0].astype(np.float32) - page_l8) * to_l <= INK_TOLERANCE
        chroma = _chroma(pred_lab)
        white = np.zeros_like(ink) if true_lab is None else (
            (true_lab[..., 0] * to_l > WHITE_L) & (_chroma(true_lab) < WHITE_CHROMA))
        self.counts += [ink.sum(), (ink & kept).sum(), white.sum(),
                        (white & (chroma < WHITE_CHROMA)).sum(), (~ink).sum(),
                        (~ink & (chroma > COLOURED_CHROMA)).sum()]

    def result(self) -> dict[str, float]:
        c = self.counts.astype(np.float64)

        def share(a, b):
            return float(c[a] / c[b]) if c[b] else float("nan")
        return {"ink_kept": share(1, 0), "white_kept": share(3, 2), "coloured": share(5, 4)}


def _chroma(lab: np.ndarray) -> np.ndarray:
    ab = lab[..., 1:].astype(np.float32) - colour.AB_OFFSET
    return np.hypot(ab[..., 0], ab[..., 1])


def evaluate_drawn(cfg: EvalConfig, emit=None) -> dict[str, Any]:
    """Score page models on drawn pages made from every colour picture under `cfg.data`.

    Give the folders of sources the weights never trained on (each --data is
    taken whole; a picture's source is its first sub-folder, as in training).
    Rows: "uncoloured" (the drawn page as it is) and each weights file (default:
    the shipped page model), with per-source rows when `cfg.per_source`.
    """
    emit = emit or (lambda kind, info: None)
    pictures = []
    for root in cfg.data:
        root = Path(root)
        if not root.exists():
            raise EvalError(f"{root}: no such folder")
        base = root if root.is_dir() else root.parent
        pictures += [(p, source_of(f"{base.name}/{p.relative_to(base).as_posix()}"))
                     for p in list_images(root)]
    if cfg.max_images is not None:
        pictures = pictures[:cfg.max_images]
    if not pictures:
        raise EvalError(f"{', '.join(map(str, cfg.data))}: no pictures")
    models = []
    for w in cfg.weights or (None,):
        model, meta, path = load_weights(w, shipped="page")
        models.append((path, model_config(model)[0], model))
    names = _row_names([p for p, *_ in models])
    device, dtype = open_device(cfg.device, cfg.precision)
    models = [(p, m, prepare_model(net, device).eval()) for p, m, net in models]
    emit("start", {"mode": "drawn", "images": len(pictures), "models": names, "device": str(device),
                   "dtype": str(dtype).replace("torch.", "")})
    labels = ["uncoloured"] + names
    scores: dict[str, list[tuple[Metrics, DrawnMetrics]]] = {}
    sheet_rows, skipped = [], []
    picks = set(np.linspace(0, len(pictures) - 1, min(cfg.sheet_images, len(pictures))).round().astype(int))
    for i, (path, source) in enumerate(pictures):
        try:
            truth = read_colour_image(path, DRAWN_SIDE)  # transparency onto white paper
        except (ImageError, cv2.error) as exc:
            skipped.append(str(path))
            emit("skip", {"path": str(path), "reason": one_line(exc)})
            continue
        page = draw_page(truth, scale=page_scale(*truth.shape[:2]))
        windows, tiles = tile_page(page, "drawn")
        x = torch.from_numpy(np.stack(tiles))[:, None].to(device)
        outs = [colour.grey_to_rgb(colour.l8_to_grey(page))]  # the page as it looks (L8 is not a grey level)
        with torch.inference_mode(), autocast(device, dtype):
            for _, _, model in models:
                layers = predict_layer8(model, x, cfg.temperature).cpu().numpy()
                outs.append(colour_page(page, "drawn", windows, list(layers)))
        true_lab = colour.rgb_to_lab(truth)
        # By column, not by label: a weights file may be called anything, "uncoloured" too.
        group = scores.setdefault(source if cfg.per_source else "",
                                  [(Metrics(), DrawnMetrics()) for _ in labels])
        for (m, d), rgb in zip(group, outs):
            lab = colour.rgb_to_lab(rgb)
            m.update(lab, true_lab)
            d.update(page, lab, true_lab)
        if cfg.sheet and i in picks:
            sheet_rows.append(outs + [truth])
        emit("progress", {"name": "drawn", "done": i + 1, "images": len(pictures)})
    if not scores:
        raise EvalError(f"none of the {len(pictures)} pictures could be read")
    pooled = [(Metrics(), DrawnMetrics()) for _ in labels]
    for group in scores.values():
        for (pm, pd), (m, d) in zip(pooled, group):
            pm.merge(m)
            pd.merge(d)

    def row(k, m, d, source=None):
        weights, mname = (None, None) if k == 0 else (str(models[k - 1][0]), models[k - 1][1])
        name = labels[k] if source is None else f"{labels[k]} @ {source}"
        extra = {} if source is None else {"source": source}
        return {"name": name, **extra, "weights": weights, "model": mname, **m.result(), **d.result()}
    rows = [row(k, *pooled[k]) for k in range(len(labels))]
    if cfg.per_source:
        rows += [row(k, *scores[src][k], source=src) for src in sorted(scores) for k in range(len(labels))]
    for r in rows:
        emit("row", r)
    notes = [f"{len(skipped)} unreadable picture(s) skipped (first: {skipped[0]})"] if skipped else []
    result = {"mode": "drawn", "data": [str(p) for p in cfg.data], "split": None,
              "images": pooled[0][0].n, "skipped": len(skipped), "rows": rows, "notes": notes,
              "sheet": None}
    if cfg.sheet:
        sheet = contact_sheet(labels + ["truth"], sheet_rows, cfg.sheet_cell)
        result["sheet"] = str(write_png(cfg.sheet, sheet))
        emit("sheet", {"path": result["sheet"], "images": len(sheet_rows)})
    return result


def _row_names(paths: list[Path]) -> list[str]:
    """Short row labels: the file stems, with the folder added where stems collide."""
    stems = [p.name[:-3] if p.name.endswith(".pt") else p.name for p in paths]
    names = []
    for p, s in zip(paths, stems):
        names.append(f"{p.parent.name}/{s}" if stems.count(s) > 1 else s)
    base = list(names)
    for i, s in enumerate(base):  # the same file twice: number the repeats
        if base.count(s) > 1:
            names[i] = f"{s}#{base[:i].count(s) + 1}"
    return names


# ------------------------------------------------------- pairs of folders
def pair_folders(pred: str | os.PathLike, truth: str | os.PathLike) -> tuple[list[tuple[Path, Path]], list[str]]:
    """(pred file, truth file) pairs matched by path relative to each folder.

    A prediction saved in another format (truth a.jpg, prediction a.png) still
    pairs by its path without extension when that is unambiguous. Returns the
    pairs in truth order and the truth files without a prediction.
    """
    pred, truth = Path(pred), Path(truth)
    for p, what in ((pred, "--pred"), (truth, "--truth")):
        if not p.is_dir():
            raise EvalError(f"{p}: {what} must be a folder")
    preds = {p.relative_to(pred).as_posix(): p for p in list_images(pred)}
    by_stem: dict[str, list[Path]] = {}
    for rel, p in preds.items():
        by_stem.setdefault(rel.rsplit(".", 1)[0], []).append(p)
    pairs, missing = [], []
    for t in list_images(truth):
        rel = t.relative_to(truth).as_posix()
        if rel in preds:
            pairs.append((preds[rel], t))
        elif len(by_stem.get(rel.rsplit(".", 1)[0], [])) == 1:
            pairs.append((by_stem[rel.rsplit(".", 1)[0]][0], t))
        else:
            missing.append(rel)
    if not pairs:
        raise EvalError(f"{pred} and {truth}: no prediction matches a truth picture by path")
    return pairs, missing


def evaluate_folders(cfg: EvalConfig, emit=None) -> dict[str, Any]:
    """Metrics of a folder of predictions against a folder of truths (and of grey)."""
    emit = emit or (lambda kind, info: None)
    pairs, missing = pair_folders(cfg.pred, cfg.truth)
    notes = []
    if missing:
        notes.append(f"{len(missing)} truth picture(s) have no prediction and were left out "
                     f"(first: {missing[0]})")
    if cfg.max_images is not None:
        pairs = pairs[:cfg.max_images]
    name = Path(cfg.pred).name or "pred"
    emit("start", {"mode": "pairs", "images": len(pairs), "models": [name]})
    ours, base = Metrics(), Metrics()
    resized, skipped, sheet_rows = [], [], []
    for p, t in pairs:
        try:
            # White background: what a viewer shows under a transparent PNG.
            pred_rgb, true_rgb = read_colour_image(p), read_colour_image(t)
        except (ImageError, cv2.error) as exc:
            skipped.append(str(p))
            emit("skip", {"path": str(p), "reason": one_line(exc)})
            continue
        if pred_rgb.shape != true_rgb.shape:
            resized.append(p.name)
            h, w = true_rgb.shape[:2]
            interp = cv2.INTER_AREA if pred_rgb.shape[0] > h else cv2.INTER_LINEAR
            pred_rgb = cv2.resize(pred_rgb, (w, h), interpolation=interp)
        pred_lab, true_lab = colour.rgb_to_lab(pred_rgb), colour.rgb_to_lab(true_rgb)
        grey = grey_baseline_lab(true_lab[..., 0])
        ours.update(pred_lab, true_lab)
        base.update(grey, true_lab)
        if cfg.sheet and len(sheet_rows) < cfg.sheet_images:
            sheet_rows.append([colour.lab_to_rgb(grey), pred_rgb, true_rgb])
        emit("progress", {"name": name, "done": ours.n, "images": len(pairs)})
    if ours.n == 0:
        raise EvalError(f"{cfg.pred}: none of the {len(pairs)} paired pictures could be read")
    if resized:
        notes.append(f"{len(resized)} prediction(s) differ in size from their truth and were "
                     f"resized to it (first: {resized[0]})")
    if skipped:
        notes.append(f"{len(skipped)} unreadable picture pair(s) skipped (first: {skipped[0]})")
    for note in notes:
        emit("note", {"text": note})
    rows = [{"name": "grey", "weights": None, "model": None, **base.result()},
            {"name": name, "weights": str(cfg.pred), "model": None, **ours.result()}]
    result = {"mode": "pairs", "pred": str(cfg.pred), "truth": str(cfg.truth), "split": None,
              "images": ours.n, "skipped": len(skipped), "resized": len(resized),
              "missing": len(missing), "rows": rows, "notes": notes, "sheet": None}
    if cfg.sheet:
        sheet = contact_sheet(["grey", name, "truth"], sheet_rows, cfg.sheet_cell)
        result["sheet"] = str(write_png(cfg.sheet, sheet))
        emit("sheet", {"path": result["sheet"], "images": len(sheet_rows)})
    return result


# ---------------------------------------------------------- contact sheet
SHEET_BG = (255, 255, 255)     # page colour around cells and behind labels
SHEET_PAD = 4                  # pixels between cells


def contact_sheet(labels: list[str], rows: list[list[np.ndarray]], cell: int = 192) -> np.ndarray:
    """A grid of uint8 RGB pictures with a labelled header: one row per picture.

    Each picture is fitted into a `cell` x `cell` square (aspect kept, centred)
    so pages, frames and tiles of any size line up in columns.
    """
    if not rows:
        raise EvalError("no pictures for the contact sheet")
    cols = len(labels)
    if any(len(r) != cols for r in rows):
        raise ValueError("every sheet row needs one picture per label")
    head = 28
    width = cols * cell + (cols + 1) * SHEET_PAD
    height = head + len(rows) * (cell + SHEET_PAD) + SHEET_PAD
    sheet = np.full((height, width, 3), SHEET_BG, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    for c, label in enumerate(labels):
        x0 = SHEET_PAD + c * (cell + SHEET_PAD)
        # Shrink long labels until they fit their column instead of overlapping the next.
        scale, text = 0.6, label
        while cv2.getTextSize(text, font, scale, 1)[0][0] > cell - 4 and scale > 0.3:
            scale -= 0.05
        while cv2.getTextSize(text, font, scale, 1)[0][0] > cell - 4 and len(text) > 4:
            text = text[:-2] + "~"
        (tw, th), _ = cv2.getTextSize(text, font, scale, 1)
        cv2.putText(sheet, text, (x0 + (cell - tw) // 2, (head + th) // 2), font, scale,
                    (0, 0, 0), 1, cv2.LINE_AA)
    for r, pics in enumerate(rows):
        y0 = head + r * (cell + SHEET_PAD)
        for c, pic in enumerate(pics):
            x0 = SHEET_PAD + c * (cell + SHEET_PAD)
            h, w = pic.shape[:2]
            s = cell / max(h, w)
            nw, nh = max(1, round(w * s)), max(1, round(h * s))
            interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
            fit = cv2.resize(np.ascontiguousarray(pic), (nw, nh), interpolation=interp)
            oy, ox = y0 + (cell - nh) // 2, x0 + (cell - nw) // 2
            sheet[oy:oy + nh, ox:ox + nw] = fit
    return sheet


def write_png(path: str | os.PathLike, rgb: np.ndarray) -> Path:
    """Encode RGB as PNG and write it atomically (files.write_bytes: WriteError on failure)."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
    if not ok:
        raise EvalError(f"{path}: could not encode the contact sheet")
    return files.write_bytes(path, buf.tobytes())


# ------------------------------------------------------------------- films
@dataclass
class VideoScore:
    """How a coloured film holds still and how colourful it is, against its source."""

    frames: int                      # frame pairs (output, source) compared
    pairs: int                       # consecutive pairs the warp error measured (cut pairs left out)
    cuts: int                        # scene cuts found in the source
    warp_error: float                # the output's warp error (temporal.WarpError), LAB units
    source_warp_error: float | None  # the source's own colour's: the floor (None: a grey source)
    colourfulness: float             # mean Hasler & Suesstrunk M of the output's frames
    colourfulness_ratio: float | None  # ... divided by the source's (None: a grey source)
    psnr_ab: float | None            # PSNR of the output's 8-bit a/b against the source's (None: grey)


def evaluate_colour_film(cfg: EvalConfig, emit=None) -> dict[str, Any]:
    """`--video FILM` alone: FILM is in colour; colour its lightness as `colourbatch video`
    does (each weights file, default the shipped; the film's first `cfg.max_frames` frames
    when given), losslessly (ffv1) into a temporary folder, and score each against FILM,
    whose own warp error is the floor. Nothing is left on disk."""
    import tempfile

    from .config import RunConfig, VideoConfig
    from .video import colour_films  # a sibling command: video never imports evaluate

    emit = emit or (lambda kind, info: None)
    info = media.probe(cfg.video)  # MediaError (exit 1) for a film that does not decode
    # A frame more than asked: the last one's duration is the next one's start.
    duration = None if cfg.max_frames is None else float((cfg.max_frames + 1) / info.fps)
    rows = []
    for weights in cfg.weights or (None,):
        run = RunConfig(weights=weights, device=cfg.device, precision=cfg.precision,
                        batch_size=cfg.batch_size, workers=max(cfg.workers, 1))
        with tempfile.TemporaryDirectory(prefix=".colourbatch-evaluate-") as tmp:
            out = Path(tmp) / "film.mkv"
            report = colour_films([cfg.video], out, VideoConfig(codec="ffv1", duration=duration), run)
            trouble = report.refused + report.failed
            if trouble or not out.exists():
                why = trouble[0][1] if trouble else "nothing was written"
                raise EvalError(f"{cfg.video}: could not be coloured ({why})")
            score = evaluate_video(out, cfg.video, cfg.max_frames)
        name = "default" if weights is None else _row_names([Path(weights)])[0]
        rows.append({"name": name, "weights": weights, "model": None, **asdict(score)})
        emit("row", rows[-1])
    return {"mode": "video", "video": str(cfg.video), "source": str(cfg.video), "split": None,
            "rows": rows, "notes": [], "sheet": None}


def evaluate_video(coloured: str | os.PathLike, source: str | os.PathLike,
                   limit: int | None = None) -> VideoScore:
    """Score a coloured film against its source, frame i against frame i in presentation order
    (the first `limit` frames; the output must cover the source from its start).

    The warp error follows the motion of the source's L (temporal.WarpError);
    when the source is in colour (every sampled frame has colour), its own a/b
    get the same measurement, which is the floor an output can reach, and the
    output's colourfulness ratio and a/b PSNR are computed against it.
    MediaError (exit 1) when either film cannot be read.
    """
    metric = WarpError()
    colourful, src_colourful, psnrs, grey = [], [], [], []
    frames = 0
    for (out_rgb, _), (src_rgb, _) in zip(media.Decoder(coloured), media.Decoder(source)):
        if limit is not None and frames >= limit:
            break
        src_lab = colour.rgb_to_lab(src_rgb)
        out_lab = colour.rgb_to_lab(out_rgb)
        if src_lab.shape != out_lab.shape:
            src_lab = cv2.resize(src_lab, out_lab.shape[1::-1], interpolation=cv2.INTER_AREA)
        metric.add(src_lab[..., 0], out_lab[..., 1:], src_lab[..., 1:])  # one flow for both
        colourful.append(colourfulness(out_rgb))
        src_colourful.append(colourfulness(src_rgb))
        psnrs.append(psnr(out_lab[..., 1:], src_lab[..., 1:]))
        if frames % 25 == 0:  # a sample, as the video path's grey detection
            grey.append(colour.is_greyscale(src_rgb))
        frames += 1
    if not frames:
        raise EvalError(f"{coloured}: no frame to compare with {source}")
    in_colour = not all(grey)
    return VideoScore(frames, len(metric.errors), metric.cuts, metric.value,
                      metric.values[1] if in_colour and metric.errors else None, float(np.mean(colourful)),
                      float(np.mean(colourful) / max(np.mean(src_colourful), 1e-9)) if in_colour else None,
                      float(np.mean(psnrs)) if in_colour else None)
