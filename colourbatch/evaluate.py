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
  10-unit bins, each bin's accuracy curve averaged, then bins averaged equally
  (each pixel weighted by the inverse frequency of its bin over the set).
* ``l_error``: mean |L_pred - L_true| on 0..255 (the pipeline must keep L).
"""
from __future__ import annotations

import math
from typing import Any, Iterable

import cv2
import numpy as np

from . import colour

AUC_MAX = 150   # Zhang et al. integrate the accuracy curve over thresholds 0..150
AUC_BIN = 10    # a/b bin size for the rebalanced AuC
_NB = 26        # a/b bins per axis: OpenCV 8-bit a, b span -128..127 -> 26 bins of 10

METRIC_NAMES = ("accuracy", "psnr_rgb", "psnr_ab", "ssim", "colourfulness",
                "colourfulness_ratio", "auc", "auc_rebal", "l_error")
#: Which way is better for each metric (the ratio is best near 1).
HIGHER_IS_BETTER = {"accuracy": True, "psnr_rgb": True, "psnr_ab": True, "ssim": True,
                    "colourfulness": True, "auc": True, "auc_rebal": True, "l_error": False}


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
        tb = np.clip(np.ceil(err - 1e-6), 0, AUC_MAX + 1).astype(np.int64)
        ab_true = t[..., 1:].reshape(-1, 2) - colour.AB_OFFSET
        bi = np.clip(np.floor((ab_true + 130.0) / AUC_BIN), 0, _NB - 1).astype(np.int64)
        np.add.at(self.hist, (bi[:, 0] * _NB + bi[:, 1], tb), 1)
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


def evaluate_pairs(pairs: Iterable[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """Metrics over (pred_lab, true_lab) pairs."""
    m = Metrics()
    for p, t in pairs:
        m.update(p, t)
    return m.result()


def evaluate_model(model, loader, device, dtype, temperature: float | None = None,
                   max_images: int | None = None, grey: bool = False,
                   on_batch=None) -> dict[str, Any]:
    """Metrics of `model` (and of the grey baseline if `grey`) over a loader of (l8, ab8).

    The model predicts from the L tile, a/b is upsampled to the tile's size and
    merged with the true L exactly as the pipeline merges pages and frames.
    """
    import torch

    from .device import autocast
    from .model import predict_ab8

    ours, base = Metrics(), Metrics() if grey else None
    was_training = model.training
    model.eval()
    seen = 0
    with torch.inference_mode(), autocast(device, dtype):
        for l8, ab8 in loader:
            ab_pred = predict_ab8(model, l8.to(device, non_blocking=True), temperature).cpu().numpy()
            l_np, ab_np = l8.numpy(), ab8.numpy()
            for i in range(len(l_np)):
                if max_images is not None and seen >= max_images:
                    break
                true_lab = np.dstack([l_np[i, 0], ab_np[i, 0], ab_np[i, 1]])
                pred_rgb = colour.merge_l_ab(l_np[i, 0], ab_pred[i])
                ours.update(colour.rgb_to_lab(pred_rgb), true_lab)
                if base is not None:
                    # Through RGB and back, as a real grey picture would be.
                    base.update(colour.rgb_to_lab(colour.lab_to_rgb(colour.grey_lab(l_np[i, 0]))), true_lab)
                seen += 1
            if on_batch:
                on_batch(seen)
            if max_images is not None and seen >= max_images:
                break
    model.train(was_training)
    out: dict[str, Any] = {"model": ours.result()}
    if base is not None:
        out["grey"] = base.result()
    return out
