"""Drawn pages: telling them from photo-like pages, and flat colour under their ink.

A drawn page (ink and paper, with or without screentone) cannot be coloured
the way a photo is: most of it is paper at L = 100, where sRGB holds no
colour, so keeping the page's own L leaves it grey. Colourists lay a flat
colour layer *under* the ink ("multiply"): the ink stays ink, the paper takes
the colour of what it depicts. This module owns

* `page_style(l8)`: the documented rule that sorts pages into 'photo'
  (continuous tone: the kept-L merge of colour.merge_l_ab) and 'drawn';
* `drawn_tile(l8, window)`: the model's tile of a drawn page, descreened
  first so screentone dots do not alias into the tile;
* `flat_colour(l8, layer8)`: the page-resolution composite of the model's
  low-resolution colour layer (L, a, b) under the page's ink.

Everything here is numpy/OpenCV on one page; colour conversions go through
colour.py.
"""
from __future__ import annotations

import cv2
import numpy as np

from . import colour
from .config import TILE

#: L8 above which a pixel counts as paper (L > 75: white or off-white paper, yellowed scans).
PAPER_L8 = 190
#: L8 below which a pixel counts as ink (L < 35: black and dark grey lines, dots, lettering).
INK_L8 = 90
#: A drawn page is at least this share paper ...
DRAWN_PAPER = 0.35
#: ... and at most this share in between (anti-aliased line edges, scan noise, grey shading).
DRAWN_MID = 0.2
#: Pixels sampled for the style rule: a strided subsample, not a resize, so screentone dots
#: stay dots (an area-averaged thumbnail turns them into mid-grey and the page into a photo).
STYLE_SAMPLES = 250_000

#: For finding the regions lines close, a pixel is line if it is this much darker (L8) than the
#: page's paper: thin or pencil-grey lines (L8 150-200) close regions as black ones do.
LINE_CONTRAST = 48
#: Below this L8 a pixel is ink and keeps its own value exactly; above PAPER_L8 it takes the
#: full multiplied colour; in between (anti-aliased edges) the two blend linearly.
KEEP_L8 = 64
#: Paper regions closed by ink get one flat colour, the layer's mean over the region: no colour
#: crosses a line, as in a colourist's flats. A region touching the page's edge that is larger
#: than this share of the page (the open background around figures, a borderless panel) keeps
#: the smooth layer instead, averaged only over what lies inside it.
FLAT_MAX_SHARE = 0.08
#: The open background's colour comes from layer cells at least this many cells inside it.
MARGIN_CELLS = 2.0
#: Weight of the region's mean against the cells near a pixel (a blurred sum of weights is ~1
#: among core cells): it decides only where no core cell is near.
FALLBACK_WEIGHT = 0.02
#: A closed paper region holding at least this many glyph-sized ink marks, away from the page
#: edge, is a speech balloon or caption: it stays paper-white, its lettering black.
BALLOON_GLYPHS = 4
#: Glyph size, as a share of the page's short side: lettering is small and compact.
GLYPH_MIN, GLYPH_MAX = 0.004, 0.05


def page_style(l8: np.ndarray) -> str:
    """'drawn' for an ink-and-paper page, else 'photo' (the rule is the constants above).

    Drawn: at least DRAWN_PAPER of the page is paper (L8 > PAPER_L8) and at most
    DRAWN_MID is neither paper nor ink. Photos, paintings and desaturated colour
    comics have a broad histogram (mid-tones) and keep the kept-L merge.
    """
    sample = _sample(l8)
    paper = np.count_nonzero(sample > PAPER_L8) / sample.size
    ink = np.count_nonzero(sample < INK_L8) / sample.size
    return "drawn" if paper >= DRAWN_PAPER and 1.0 - paper - ink <= DRAWN_MID else "photo"


def _sample(l8: np.ndarray) -> np.ndarray:
    h, w = l8.shape[:2]
    step = max(1, int(np.sqrt(h * w / STYLE_SAMPLES)))
    return l8[::step, ::step]


def drawn_tile(l8: np.ndarray, size: int = TILE) -> np.ndarray:
    """The model's square tile of a drawn page (or window): blurred before the squeeze.

    INTER_AREA averages boxes, which still aliases a regular screentone into
    moiré stripes at most scales; a Gaussian of about half the squeeze factor
    first removes the dot frequency, so screentone reaches the model as the
    grey it stands for.
    """
    h, w = l8.shape[:2]
    sigma = 0.5 * min(h, w) / size
    if sigma > 0.7:
        l8 = cv2.GaussianBlur(l8, (0, 0), sigma)
    return colour.l_tile(l8, size)


#: Flats are worked out at no more than this many pixels (ink max-pooled down to it, so thin
#: lines stay closed); only the final multiply runs at the page's own resolution.
WORK_PIXELS = 1_000_000


def flat_colour(l8: np.ndarray, layer8: np.ndarray) -> np.ndarray:
    """Page L8 (H, W) + colour layer (3, h, w) uint8 OpenCV LAB -> RGB (H, W, 3).

    The layer is flattened per closed paper region (see `colour_layer`) and
    multiplied under the page: out = layer * page / 255 on paper, the page's
    own grey on ink (L8 < KEEP_L8, exactly), a linear blend between.
    """
    h, w = l8.shape
    layer = colour_layer(l8, layer8)
    if layer.shape[:2] != (h, w):
        layer = cv2.resize(layer, (w, h), interpolation=cv2.INTER_LINEAR)
    scaled = cv2.multiply(layer, colour.grey_to_rgb(cv2.LUT(l8, _LAYER_GAIN)), scale=1.0 / 255)
    return cv2.add(scaled, colour.grey_to_rgb(cv2.LUT(l8, _OWN_GREY)))


def _multiply_tables() -> tuple[np.ndarray, np.ndarray]:
    """out = grey * (1 - k) + k * layer * grey / 255, with grey the page's own sRGB grey and
    k = keep(L8), is per channel g(L8) + layer * s(L8) / 255: two lookup tables on the L8
    plane (made once), so the full-resolution work is a few uint8 OpenCV passes."""
    k = np.clip((np.arange(256, dtype=np.float32) - KEEP_L8) / float(PAPER_L8 - KEEP_L8), 0.0, 1.0)
    grey = colour.l8_to_grey(np.arange(256, dtype=np.uint8)[None])[0].astype(np.float32)
    return np.round(grey * (1 - k)).astype(np.uint8), np.round(k * grey).astype(np.uint8)


_OWN_GREY, _LAYER_GAIN = _multiply_tables()


def colour_layer(l8: np.ndarray, layer8: np.ndarray) -> np.ndarray:
    """The flattened colour layer, uint8 RGB at the working resolution (<= WORK_PIXELS).

    Closed paper regions take one flat colour (their mean); the open
    background (touching the page's edge, larger than FLAT_MAX_SHARE) takes
    the layer averaged over the layer cells that lie inside it (no colour
    from across a line); balloons are
    white; ink pixels take the colour of the nearest paper, so upsampling
    blends colours only inside lines, where the ink hides them.
    """
    ink = _ink_mask(l8)
    hw, ww = ink.shape
    lab = cv2.merge([cv2.resize(np.ascontiguousarray(p), (ww, hw), interpolation=cv2.INTER_LINEAR)
                     for p in layer8])
    paper = (ink == 0).astype(np.uint8)
    # 4-connected paper: a one-pixel diagonal gap in a line does not join two regions.
    n, labels, stats, _ = cv2.connectedComponentsWithStats(paper, connectivity=4)
    if n > 1 and ink.any():
        area = stats[:, cv2.CC_STAT_AREA]
        x, y = stats[:, cv2.CC_STAT_LEFT], stats[:, cv2.CC_STAT_TOP]
        edge = (x == 0) | (y == 0) | (x + stats[:, cv2.CC_STAT_WIDTH] == ww) | (y + stats[:, cv2.CC_STAT_HEIGHT] == hw)
        large = edge & (area >= FLAT_MAX_SHARE * hw * ww) & (np.arange(n) > 0)  # label 0 is the ink
        means = np.stack([np.bincount(labels.ravel(), weights=lab[..., c].ravel(), minlength=n)
                          for c in range(3)], 1) / np.maximum(area, 1)[:, None]
        white = _balloons(ink, labels, stats)
        means[white] = (colour.L8_MAX, colour.AB_OFFSET, colour.AB_OFFSET)
        large &= ~white
        table = np.round(means).clip(0, 255).astype(np.uint8)
        flat = ~large[labels] & (labels > 0)
        lab[flat] = table[labels[flat]]
        for region in np.nonzero(large)[0]:
            _inside_only(lab, labels == region, layer8)
        # Ink takes its nearest paper pixel's colour (labels count paper pixels in scan order).
        _, nearest = cv2.distanceTransformWithLabels(ink, cv2.DIST_L2, 3,
                                                     labelType=cv2.DIST_LABEL_PIXEL)
        on_ink = ink > 0
        lab[on_ink] = lab[paper > 0][nearest[on_ink] - 1]
    elif n > 1:
        _inside_only(lab, paper > 0, layer8)
    return colour.lab_to_rgb(lab)


def _ink_mask(l8: np.ndarray) -> np.ndarray:
    """uint8, 1 where line (LINE_CONTRAST darker than the paper, the page's 90th percentile,
    and never lighter than PAPER_L8), at the working resolution: a cell is line if any of
    its pixels is."""
    h, w = l8.shape
    f = max(1, int(np.ceil(np.sqrt(h * w / WORK_PIXELS))))
    paper = float(np.percentile(_sample(l8), 90))
    ink = (l8 < min(max(paper - LINE_CONTRAST, INK_L8), PAPER_L8)).astype(np.uint8)
    if f == 1:
        return ink
    ink = np.pad(ink, ((0, -h % f), (0, -w % f)))
    return np.ascontiguousarray(ink.reshape(ink.shape[0] // f, f, ink.shape[1] // f, f).max(axis=(1, 3)))


def _inside_only(lab: np.ndarray, region: np.ndarray, layer8: np.ndarray) -> None:
    """In place, on one large region: the layer averaged (a normalised convolution about
    two cells wide) over the layer cells that lie inside it, so a shape's colour does not
    halo into the background around it."""
    lh, lw = layer8.shape[1:]
    hw, ww = region.shape
    # The layer itself spills a cell or two past a figure's outline (it is predicted at a
    # quarter of the tile): only cells at least MARGIN_CELLS from the region's edge count.
    margin = int(round(MARGIN_CELLS * max(hw / lh, ww / lw)))
    core = cv2.erode(region.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=max(1, margin))
    whole = cv2.resize(region.astype(np.float32), (lw, lh), interpolation=cv2.INTER_AREA)
    cover = cv2.resize(core.astype(np.float32), (lw, lh), interpolation=cv2.INTER_AREA)
    weight = cover ** 4  # a cell half outside counts 1/16: the cells inside decide
    den = cv2.GaussianBlur(weight, (0, 0), 3.0)
    planes = []
    for p in layer8:
        p = p.astype(np.float32)
        # Far from any core cell the colour falls back to the region's own mean (no division
        # of two vanishing sums: that would paint L = 0, a = b = -128, a dark blue).
        mean = float((p * whole).sum() / max(whole.sum(), 1e-6))
        num = cv2.GaussianBlur(p * weight, (0, 0), 3.0)
        planes.append((num + FALLBACK_WEIGHT * mean) / (den + FALLBACK_WEIGHT))
    smooth = cv2.resize(cv2.merge(planes), (ww, hw), interpolation=cv2.INTER_LINEAR)
    lab[region] = np.clip(smooth[region] + 0.5, 0, 255).astype(np.uint8)


def _balloons(ink: np.ndarray, labels: np.ndarray, stats: np.ndarray) -> np.ndarray:
    """Boolean per paper label: a closed region away from the edge that holds lettering.

    A glyph is a compact ink mark of lettering size; the region holding it is
    read at the paper pixels just left and right of its box (both must agree).
    """
    h, w = ink.shape
    n = len(stats)
    _, _, istats, _ = cv2.connectedComponentsWithStats(ink, connectivity=8)
    side = min(h, w)
    x, y = istats[1:, cv2.CC_STAT_LEFT], istats[1:, cv2.CC_STAT_TOP]
    bw, bh = istats[1:, cv2.CC_STAT_WIDTH], istats[1:, cv2.CC_STAT_HEIGHT]
    glyph = ((bh >= max(3, GLYPH_MIN * side)) & (bh <= GLYPH_MAX * side)
             & (bw <= GLYPH_MAX * side) & (x > 0) & (x + bw < w - 1))
    if not glyph.any():
        return np.zeros(n, bool)
    x, y, bw, bh = x[glyph], y[glyph], bw[glyph], bh[glyph]
    cy = y + bh // 2
    left, right = labels[cy, x - 1], labels[cy, x + bw]
    host = np.where(left == right, left, 0)
    counts = np.bincount(host, minlength=n)
    counts[0] = 0
    sx, sy = stats[:, cv2.CC_STAT_LEFT], stats[:, cv2.CC_STAT_TOP]
    sw, sh = stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT]
    inside = (sx > 0) & (sy > 0) & (sx + sw < w) & (sy + sh < h)
    found = (counts >= BALLOON_GLYPHS) & inside & (stats[:, cv2.CC_STAT_AREA] < 0.3 * h * w)
    for region in np.nonzero(found)[0]:
        found[region] = _lettered(cy[host == region], bh[host == region])
    # The counters of letters (inside O, A, R) are paper regions of their own: white too.
    for region in np.nonzero(found)[0]:
        found |= ((sx >= sx[region]) & (sy >= sy[region]) & (sx + sw <= sx[region] + sw[region])
                  & (sy + sh <= sy[region] + sh[region]) & (sh <= GLYPH_MAX * side))
    return found


def _lettered(cy: np.ndarray, heights: np.ndarray) -> bool:
    """Marks of one region read as lettering: of similar height, three or more on one line.

    Filled eyes, spots and buttons inside a drawn figure are glyph-sized too,
    but they do not sit in rows of like-sized marks.
    """
    m = float(np.median(heights))
    like = (heights >= 0.5 * m) & (heights <= 2.0 * m)
    if np.count_nonzero(like) < BALLOON_GLYPHS:
        return False
    lines = np.bincount(np.round(cy[like] / m).astype(int))
    return int(lines.max()) >= 3
