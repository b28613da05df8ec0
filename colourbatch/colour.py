"""The only RGB <-> LAB code in colourbatch, and the value ranges that go with it.

Everything outside this module speaks RGB (never BGR) and OpenCV 8-bit LAB, the
encoding the Kaggle "image-colorization" set uses:

    L8 = L * 255 / 100        (L in 0..100)
    a8 = a + 128, b8 = b + 128 (a, b in LAB units)

The model sees L as a float in [0, 1] (L8 / 255) and predicts a/b in LAB units
centred on zero; the helpers below convert between the three forms, and
`l_tile` is the one squeeze of a picture to the model's square tile.
"""
from __future__ import annotations

import cv2
import numpy as np

from .config import TILE  # noqa: F401  (the tile side, defined with the other settings)

#: Largest 8-bit L value: the model's L input is L8 / L8_MAX, in [0, 1].
L8_MAX = 255.0
#: 8-bit a/b value of a neutral grey (OpenCV stores a + 128, b + 128).
AB_OFFSET = 128.0
#: Chroma (LAB units) above which a pixel counts as coloured for grey detection.
GREY_CHROMA = 6.0
#: Share of pixels above GREY_CHROMA that makes a picture a colour picture.
GREY_SHARE = 0.01


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB (H, W, 3) -> uint8 OpenCV LAB (H, W, 3)."""
    return cv2.cvtColor(_c(rgb), cv2.COLOR_RGB2LAB)


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """uint8 OpenCV LAB (H, W, 3) -> uint8 RGB (H, W, 3)."""
    return cv2.cvtColor(_c(lab), cv2.COLOR_LAB2RGB)


def rgb_to_l(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB (H, W, 3) -> uint8 L8 plane (H, W)."""
    return rgb_to_lab(rgb)[..., 0]


def grey_to_rgb(grey: np.ndarray) -> np.ndarray:
    """uint8 grey (H, W) -> uint8 RGB with R = G = B."""
    return cv2.cvtColor(_c(grey), cv2.COLOR_GRAY2RGB)


def l8_to_grey(l8: np.ndarray) -> np.ndarray:
    """uint8 L8 plane (H, W) -> uint8 sRGB grey level (H, W) of that lightness (a = b = 0).

    L8 is not a grey level: L8 11 is sRGB 15, L8 128 is sRGB 119. A 256-entry
    table of the one LAB->RGB conversion, applied with cv2.LUT.
    """
    return cv2.LUT(_c(l8), _L8_GREY)


def l_tile(img: np.ndarray, size: int = TILE) -> np.ndarray:
    """Squeeze an L8 plane (H, W) or a LAB image (H, W, 3) of any shape to the square tile.

    The one squeeze: inference applies it to pages and frames, training to
    crops of random aspect ratio, so the model has seen stretched content.
    Squeezing (not padding) keeps every model pixel busy; INTER_AREA averages
    instead of aliasing on downscale.
    """
    h, w = img.shape[:2]
    if (h, w) == (size, size):
        return np.ascontiguousarray(img)
    interp = cv2.INTER_AREA if h >= size and w >= size else cv2.INTER_LINEAR
    return cv2.resize(_c(img), (size, size), interpolation=interp)


def merge_l_ab(l8: np.ndarray, ab8: np.ndarray) -> np.ndarray:
    """Full-resolution L8 (H, W) + low-resolution a8/b8 (2, h, w) uint8 -> RGB.

    a/b are upsampled bilinearly to (H, W); L is the source's own, untouched,
    so line art stays exactly as sharp as the input.
    """
    h, w = l8.shape[:2]
    planes = [_c(l8)]
    for plane in ab8:
        if plane.shape != (h, w):
            plane = cv2.resize(_c(plane), (w, h), interpolation=cv2.INTER_LINEAR)
        planes.append(plane)
    lab = cv2.merge(planes)
    rgb = lab_to_rgb(lab)
    _keep_lightness(lab, rgb)
    return rgb


#: Chroma factors tried, in order, for pixels whose colour sRGB cannot show at their L.
_CHROMA_STEPS = (0.7, 0.45, 0.2, 0.0)


def _keep_lightness(lab: np.ndarray, rgb: np.ndarray) -> None:
    """Where a predicted colour is outside sRGB at its lightness, shrink its chroma.

    LAB->RGB clips such colours channel by channel, which changes lightness (a
    saturated tint on white paper comes out darker). The picture's L must stay
    the source's, so those pixels get the largest chroma (of a few steps) that
    keeps L within rounding. Only pixels touching 0 or 255 can have clipped,
    so the check runs on that subset. Modifies `rgb` in place.
    """
    inside = cv2.inRange(rgb, (1, 1, 1), (254, 254, 254))  # numpy's max(-1) is 70x slower
    if cv2.countNonZero(inside) == inside.size:
        return
    idx = np.nonzero(inside == 0)
    sub_lab, sub_rgb = lab[idx], rgb[idx]
    bad = np.abs(_l_of(sub_rgb) - sub_lab[:, 0].astype(np.int16)) > 1
    for s in _CHROMA_STEPS:
        if not bad.any():
            break
        rows = np.nonzero(bad)[0]
        fix = sub_lab[rows].astype(np.float32)
        fix[:, 1:] = AB_OFFSET + (fix[:, 1:] - AB_OFFSET) * s
        fix = np.round(fix).astype(np.uint8)
        new = lab_to_rgb(fix[None])[0]  # one long row: OpenCV works per row
        ok = (np.abs(_l_of(new) - fix[:, 0].astype(np.int16)) <= 1) | (s == 0.0)
        sub_rgb[rows[ok]] = new[ok]
        bad[rows[ok]] = False
    rgb[idx] = sub_rgb


def _l_of(rgb_rows: np.ndarray) -> np.ndarray:
    return rgb_to_lab(rgb_rows[None])[0, :, 0].astype(np.int16)


def grey_lab(l8: np.ndarray) -> np.ndarray:
    """The grey baseline: L8 with a = b = 128, as uint8 LAB (H, W, 3)."""
    lab = np.full(l8.shape[:2] + (3,), int(AB_OFFSET), np.uint8)
    lab[..., 0] = l8
    return lab


def l8_to_unit(l8):
    """uint8 L8 (a torch tensor) -> float32 L in [0, 1], the model's input."""
    return l8.float().div_(L8_MAX)


def ab8_to_units(ab8):
    """8-bit a/b (0..255, float numpy or torch) -> LAB units centred on 0."""
    return ab8 - AB_OFFSET


def units_to_ab8(ab):
    """LAB-unit a/b (a float torch tensor) -> uint8 8-bit a/b, rounded and clamped to 0..255."""
    return ab.float().add(AB_OFFSET).round_().clamp_(0, 255).byte()


def chroma_share(rgb: np.ndarray, threshold: float = GREY_CHROMA) -> float:
    """Share of pixels whose LAB chroma exceeds `threshold` (on a thumbnail)."""
    h, w = rgb.shape[:2]
    scale = min(1.0, 256.0 / max(h, w))
    if scale < 1.0:
        rgb = cv2.resize(_c(rgb), (max(1, int(w * scale)), max(1, int(h * scale))),
                         interpolation=cv2.INTER_AREA)
    lab = rgb_to_lab(rgb).astype(np.float32)
    chroma = np.hypot(lab[..., 1] - AB_OFFSET, lab[..., 2] - AB_OFFSET)
    return float((chroma > threshold).mean())


def is_greyscale(rgb: np.ndarray) -> bool:
    """True when a picture holds (almost) no colour: scans and JPEG noise pass."""
    return chroma_share(rgb) < GREY_SHARE


def _c(a: np.ndarray) -> np.ndarray:
    # OpenCV needs C-contiguous input; views from PyAV/torch may not be.
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


def ab_gamut_bins(step: int = 10) -> np.ndarray:
    """Centres (Q, 2), in LAB units, of the step-sized a/b bins that sRGB reaches.

    The grid has a centre on every multiple of `step`; a bin is kept when any
    8-bit sRGB colour (sampled every 4 levels, at every L) falls in it. With
    OpenCV's 8-bit LAB and step 10 that is 255 bins (Zhang et al. count 313 in
    float CIELAB).
    """
    g = np.arange(0, 256, 4, dtype=np.uint8)
    grid = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 1, 3)
    ab = rgb_to_lab(grid).reshape(-1, 3)[:, 1:].astype(np.float32) - AB_OFFSET
    idx = np.unique(np.floor(ab / step + 0.5).astype(np.int64), axis=0)
    return (idx * step).astype(np.float32)


#: sRGB grey of each L8 value (l8_to_grey's table), made once with the one conversion.
_L8_GREY = np.ascontiguousarray(lab_to_rgb(grey_lab(np.arange(256, dtype=np.uint8)[None]))[0, :, 0])
