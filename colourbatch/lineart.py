"""The one synthesis of a drawn page (ink on paper) from a colour picture.

`draw_page` turns a colour picture into what a black-and-white print of it
would look like: dark ink lines where its lightness (or its colour) changes,
solid black where it is very dark, paper elsewhere. The page model trains on
(draw_page(picture), picture) pairs, and evaluation scores it on drawn pages
made the same way, so there is exactly one definition of "drawn".

Lines come from XDoG (Winnemoeller et al. 2012): a difference of Gaussians
sharpened and soft-thresholded, on L and, for edges between colours of equal
lightness, on a/b. Widths are in pixels times `scale`, so a picture drawn at
scale s and shrunk s times looks like one drawn at scale 1.

With a random generator the style varies as real pages do: line weight, how
dark a region must be to print solid black, screentone (halftone dots over
mid-dark regions, at a random angle and pitch), paper tint and texture, ink
density, scan blur, noise and JPEG artefacts. Without one it is a fixed plain
style (no tone, no noise): what evaluation uses, so its numbers never move.
numpy and OpenCV only; a few ms for a 224 tile.
"""
from __future__ import annotations

import cv2
import numpy as np

from . import colour

#: Plain style: the XDoG settings evaluation draws with (rng None), at scale 1.
SIGMA = 0.8          # inner Gaussian (px): about a 2 px line
K = 1.6              # outer/inner Gaussian ratio (the DoG's classic value)
SHARPEN = 20.0       # p: edge emphasis of (1 + p) G1 - p G2
THRESHOLD = 0.25     # eps on L in [0, 1]: below it prints black (solid fills of dark regions)
SOFTNESS = 60.0      # phi: slope of the tanh ramp from ink to paper (antialiasing)
CHROMA_EDGE = 0.25   # sharpened a/b DoG (p |G1 - G2|, a/b / 255) that starts inking an edge: ~30 a/b units
PAPER = 255          # paper in the plain style
INK = 20             # ink in the plain style


#: Long side at which scale 1 draws lines as the page model saw them in training (drawn at
#: data.DRAW_OVERSAMPLE x the tile, squeezed to it): a whole page is drawn at page_scale.
TRAINED_SIDE = 560


def page_scale(h: int, w: int) -> float:
    """The `scale` that draws an (h, w) page with lines as thick, relative to the page, as the
    page model's training pictures had (never below 1)."""
    return max(1.0, max(h, w) / TRAINED_SIDE)


def draw_page(rgb: np.ndarray, rng: np.random.Generator | None = None, scale: float = 1.0) -> np.ndarray:
    """uint8 RGB (H, W, 3) -> uint8 L8 (H, W): the picture as ink on paper.

    `rng` None: the plain, deterministic style. `scale`: line widths and tone
    pitch in pixels are multiplied by it (use about long side / 1000 for a
    full page, 1 for a small picture). Paper is L8 >= 235, ink L8 <= 60.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"draw_page needs uint8 RGB (H, W, 3), got {rgb.dtype} {rgb.shape}")
    if scale <= 0:
        raise ValueError("scale must be above 0")
    lab = colour.rgb_to_lab(rgb).astype(np.float32)
    plain = rng is None
    sigma = SIGMA * scale * (1.0 if plain else rng.uniform(0.6, 1.8))
    eps = THRESHOLD if plain else rng.uniform(0.1, 0.4)
    phi = SOFTNESS if plain else rng.uniform(30.0, 120.0)

    # One blur per scale of all three planes (OpenCV blurs interleaved channels at once);
    # planes are then taken out contiguous: numpy on strided channel views is 10x slower.
    g1 = _blur(lab, sigma)
    g2 = _blur(lab, sigma * K)
    lum = cv2.extractChannel(g1, 0) * np.float32(1.0 / 255.0)
    d = cv2.addWeighted(lum, 1.0 + SHARPEN, cv2.extractChannel(g2, 0), -SHARPEN / 255.0, 0.0)
    # XDoG: 1 where d >= eps (paper), a ramp into ink below it (tanh's shape, cheaper).
    paper = _ramp(d, eps, phi)
    # Edges between colours of the same lightness: the a/b DoG's magnitude, inked on both sides.
    dab = cv2.transform(cv2.absdiff(g1, g2), np.array([[0.0, -SHARPEN, -SHARPEN]], np.float32) / 255.0)
    paper = np.minimum(paper, _ramp(dab, -CHROMA_EDGE, phi * 0.25))

    if plain:
        return cv2.convertScaleAbs(paper, alpha=PAPER - INK, beta=INK)  # rounds and saturates

    # Screentone: mid-dark regions that the lines left as paper get halftone dots.
    if rng.random() < 0.5:
        tone_from, tone_to = eps, rng.uniform(eps + 0.2, 0.85)
        region = (lum >= tone_from) & (lum < tone_to)  # below tone_from it is solid black already
        pitch = rng.uniform(3.0, 7.0) * scale
        dots = _halftone(paper.shape, pitch, rng.uniform(0, np.pi / 2), rng.uniform(0.25, 0.6))
        paper = np.minimum(paper, 1.0 - region * dots)
    ink = rng.uniform(0, 55)
    page = cv2.addWeighted(paper, rng.uniform(238, 255) - ink, paper, 0.0, ink)
    if rng.random() < 0.5:  # paper texture: blotches on the paper, not on the ink
        page += _blur(_noise(paper.shape, rng), 2.0 * scale) * np.float32(rng.uniform(0, 4)) * paper
    if rng.random() < 0.4:  # scan blur
        page = _blur(page, rng.uniform(0.3, 0.8) * scale)
    if rng.random() < 0.5:  # sensor noise
        page += _noise(paper.shape, rng) * np.float32(rng.uniform(0.5, 3.0))
    out = cv2.convertScaleAbs(page)  # rounds and saturates
    if rng.random() < 0.5:
        _, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(40, 95))])
        out = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
    return out


def _ramp(x: np.ndarray, at: float, slope: float) -> np.ndarray:
    """clip(1 + slope (x - at), 0, 1) in place of a fresh array: 0 well below `at`, 1 from `at` up."""
    y = cv2.addWeighted(x, slope, x, 0.0, 1.0 - slope * at)
    return np.clip(y, 0.0, 1.0, out=y)


def _noise(shape: tuple, rng: np.random.Generator) -> np.ndarray:
    """Unit Gaussian noise (float32), seeded from `rng` (OpenCV's generator: 10x numpy's speed)."""
    out = np.empty(shape, np.float32)
    cv2.setRNGSeed(int(rng.integers(0, 2**31)))
    return cv2.randn(out, 0.0, 1.0)


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(x, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)


def _halftone(shape: tuple, pitch: float, angle: float, coverage: float) -> np.ndarray:
    """A dot screen: 1 inside the dots, 0 between them (antialiased), `coverage` of the area."""
    h, w = shape
    c, s = np.cos(angle), np.sin(angle)
    f = np.float32(2 * np.pi / pitch)
    x, y = np.arange(w, dtype=np.float32) * f, np.arange(h, dtype=np.float32)[:, None] * f
    # cos(u) + cos(v), u = x c + y s, v = -x s + y c, as sums of outer products: no (H, W) grid
    # of coordinates and no (H, W) cosines (a 2 MP screen costs a few ms).
    field = (np.cos(x * c) * np.cos(y * s) - np.sin(x * c) * np.sin(y * s)
             + np.cos(x * s) * np.cos(y * c) + np.sin(x * s) * np.sin(y * c))
    cut = 2.0 - 4.0 * coverage  # field is in [-2, 2]; its top `coverage` are the dots
    return np.clip((field - cut) * 2.0, 0.0, 1.0)
