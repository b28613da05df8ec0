"""The only RGB <-> LAB code in colourbatch, and the value ranges that go with it.

Everything outside this module speaks RGB (never BGR) and OpenCV 8-bit LAB, the
encoding the Kaggle "image-colorization" set uses:

    L8 = L * 255 / 100        (L in 0..100)
    a8 = a + 128, b8 = b + 128 (a, b in LAB units)

The model sees L as a float in [0, 1] (L8 / 255) and predicts a/b in LAB units
centred on zero; the helpers below convert between the three forms, and
`l_tile` is the one squeeze of a picture to the model's square tile.

Films travel as Y'CbCr planes: `yuv_to_l` reads a luma plane as the grey it
shows, `lab_to_chroma` turns L + predicted a/b into the Cb/Cr planes that go
with an untouched luma plane, in the source's matrix (`YCBCR`) and range,
through a `ChromaTable` of the (luma, a, b) a film meets.
"""
from __future__ import annotations

import functools
import threading

import cv2
import numpy as np

from .config import TILE  # noqa: F401  (the tile side, defined with the other settings)

#: Largest 8-bit L value: the model's L input is L8 / L8_MAX, in [0, 1].
L8_MAX = 255.0
#: LAB lightness of white: L runs 0..100, and OpenCV's 8-bit L8 is L * L8_MAX / LAB_L_MAX.
LAB_L_MAX = 100.0
#: 8-bit a/b value of a neutral grey (OpenCV stores a + 128, b + 128).
AB_OFFSET = 128.0
#: Chroma (LAB units) above which a pixel counts as coloured for grey detection.
GREY_CHROMA = 6.0
#: Share of pixels above GREY_CHROMA that makes a picture a colour picture.
GREY_SHARE = 0.01
#: Y'CbCr matrices by FFmpeg's name: (Kr, Kb), the luma weights of R' and B' (Kg = 1 - Kr - Kb).
YCBCR = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722), "bt2020": (0.2627, 0.0593),
         "smpte240m": (0.212, 0.087), "fcc": (0.30, 0.11)}
#: Limited ("TV", MPEG) range: luma black and white, and the span of chroma around 128.
Y_BLACK, Y_SPAN, C_SPAN = 16.0, 219.0, 224.0


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB (H, W, 3) -> uint8 OpenCV LAB (H, W, 3)."""
    return cv2.cvtColor(_c(rgb), cv2.COLOR_RGB2LAB)


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """uint8 OpenCV LAB (H, W, 3) -> uint8 RGB (H, W, 3)."""
    return cv2.cvtColor(_c(lab), cv2.COLOR_LAB2RGB)


def rgb_to_l(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB (H, W, 3) -> uint8 L8 plane (H, W).

    A grey picture (R = G = B everywhere: a grey page, as data.to_rgb8 expands it)
    goes through the 256-entry table of the same conversion: one look-up instead of
    a full LAB conversion (a third of the cost at 24 MP, same codes)."""
    r, g, b = cv2.split(_c(rgb))
    if cv2.norm(r, g, cv2.NORM_INF) == 0 and cv2.norm(g, b, cv2.NORM_INF) == 0:
        return cv2.LUT(g, _GREY_L8)
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
    ab = cv2.merge([_c(p) for p in ab8])  # both planes in one resize: the same bilinear weights
    if ab.shape[:2] != (h, w):
        ab = cv2.resize(ab, (w, h), interpolation=cv2.INTER_LINEAR)
    lab = cv2.merge([_c(l8), ab])
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
    so the check runs on that subset (gathered by flat index with np.take: numpy's
    (row, col) fancy indexing costs 5x more on a many-megapixel page). Modifies `rgb`
    in place, writing back only the pixels it changed.
    """
    inside = cv2.inRange(rgb, (1, 1, 1), (254, 254, 254))  # numpy's max(-1) is 70x slower
    if cv2.countNonZero(inside) == inside.size:
        return
    lab_px, rgb_px = lab.reshape(-1, 3), rgb.reshape(-1, 3)
    flat = np.flatnonzero(inside.reshape(-1) == 0)
    sub_lab = np.take(lab_px, flat, axis=0)
    bad = np.flatnonzero(np.abs(_l_of(np.take(rgb_px, flat, axis=0)) - sub_lab[:, 0].astype(np.int16)) > 1)
    for s in _CHROMA_STEPS:
        if not len(bad):
            break
        fix = np.take(sub_lab, bad, axis=0).astype(np.float32)
        fix[:, 1:] = AB_OFFSET + (fix[:, 1:] - AB_OFFSET) * s
        fix = np.round(fix).astype(np.uint8)
        new = lab_to_rgb(fix[None])[0]  # one long row: OpenCV works per row
        ok = (np.abs(_l_of(new) - fix[:, 0].astype(np.int16)) <= 1) | (s == 0.0)
        rgb_px[flat[bad[ok]]] = new[ok]
        bad = bad[~ok]


def _l_of(rgb_rows: np.ndarray) -> np.ndarray:
    return rgb_to_lab(rgb_rows[None])[0, :, 0].astype(np.int16)


def grey_lab(l8: np.ndarray) -> np.ndarray:
    """The grey baseline: L8 with a = b = 128, as uint8 LAB (H, W, 3)."""
    lab = np.full(l8.shape[:2] + (3,), int(AB_OFFSET), np.uint8)
    lab[..., 0] = l8
    return lab


@functools.lru_cache(maxsize=None)
def _luma_to_grey(full_range: bool) -> np.ndarray:
    """The 256-entry table luma code -> the grey R' = G' = B' (0..255) it shows."""
    y = np.arange(256, dtype=np.float32)
    grey = y if full_range else (y - Y_BLACK) * (255.0 / Y_SPAN)
    return np.clip(np.round(grey), 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=None)
def _luma_to_l8(full_range: bool) -> np.ndarray:
    """The 256-entry table luma code -> L8 of the grey it shows."""
    return cv2.LUT(_luma_to_grey(full_range), _GREY_L8)


def yuv_to_l(y: np.ndarray, full_range: bool) -> np.ndarray:
    """uint8 luma plane (H, W) -> uint8 L8 plane (H, W).

    A pixel with neutral chroma is the grey R' = G' = B' = Y' in every Y'CbCr
    matrix, so the matrix plays no part: only the range does (limited range
    maps 16..235 to 0..255, as FFmpeg's scaler does). A grey film therefore
    gets the L tile the RGB path gave it, within a level of rounding.
    """
    return cv2.LUT(_c(y), _luma_to_l8(bool(full_range)))


def _ycbcr_rows(matrix: str, full_range: bool) -> np.ndarray:
    """(3, 4) float32: R'G'B' (0..255) -> (Y' as 0..255 grey, Cb code, Cr code), offsets included."""
    kr, kb = YCBCR[matrix]
    kg = 1 - kr - kb
    span = (255.0 if full_range else C_SPAN) / 255.0
    fb, fr = span / (2 * (1 - kb)), span / (2 * (1 - kr))
    return np.array([[kr, kg, kb, 0.0],
                     [-kr * fb, -kg * fb, (1 - kb) * fb, AB_OFFSET],
                     [(1 - kr) * fr, -kg * fr, -kb * fr, AB_OFFSET]], np.float32)


def lab_to_chroma(y: np.ndarray, ab8: np.ndarray, matrix: str, full_range: bool,
                  size: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The source's luma + 8-bit a/b (2, h', w') -> uint8 (Cb, Cr) planes of `size` (w, h).

    `y` is averaged down to `size` (the chroma planes' size; None: y's own),
    a/b are upsampled once (bilinear) to it; L comes from that luma (yuv_to_l);
    LAB -> R'G'B' -> the chroma of `matrix` (a key of YCBCR) in its range. The
    player adds that chroma to the source's own luma, untouched: so the colour
    keeps the source's luma exactly (not the L of the LAB colour, which for a
    saturated hue differs a little). Where luma + chroma would leave R'G'B'
    (the player would clip a channel and shift the hue and the lightness) the
    pixel's chroma is scaled down until it fits, the counterpart of
    merge_l_ab's lightness guard. Each pixel's (Cb, Cr) is a function of its
    (luma, a, b) alone, looked up in a `ChromaTable` (computed once per a/b pair).
    """
    if size is not None and (y.shape[1], y.shape[0]) != tuple(size):
        y = cv2.resize(_c(y), tuple(size), interpolation=cv2.INTER_AREA)
    h, w = y.shape
    a, b = (cv2.resize(_c(p), (w, h), interpolation=cv2.INTER_LINEAR) if p.shape != (h, w) else _c(p)
            for p in ab8)
    return chroma_table(matrix, bool(full_range)).look(_c(y), a, b)


def _chroma_of(y: np.ndarray, a: np.ndarray, b: np.ndarray, matrix: str, full_range: bool
               ) -> tuple[np.ndarray, np.ndarray]:
    """lab_to_chroma's conversion, pixel by pixel, of uint8 planes of one size."""
    rgb = lab_to_rgb(cv2.merge([yuv_to_l(y, full_range), a, b]))
    rows = _ycbcr_rows(matrix, full_range)
    # One 8-bit transform gives the chroma codes (rounded, saturated) and the colour's own luma.
    luma, cb, cr = cv2.split(cv2.transform(rgb, rows))
    _fit_gamut(cv2.LUT(y, _luma_to_grey(full_range)), luma, rgb, cb, cr, rows)
    return cb, cr


class ChromaTable:
    """(Cb, Cr) of every (luma, a, b) of one matrix and range, filled as a film meets its a/b.

    A film's chroma planes are a few hundred thousand pixels a frame, but its
    a/b are the model's, upsampled: a few thousand (a, b) pairs in a whole
    film. Converting (LAB -> R'G'B' -> Y'CbCr, the gamut fit) once per pair,
    for all 256 lumas, and looking pixels up is exact (the same function) and
    takes a quarter of the time at 1080p (benchmarks/floor.py's "chroma"
    lines). 16 M entries of 2 bytes: 32 MiB of address space, of which memory
    is given only to the blocks (pages, or 2 MiB huge pages) holding the rows a
    film touches. Shared by a process's films and threads (the colour stage's
    chroma threads on a GPU host): a lock guards the filling, and readers also
    check which rows are known under it, so that a row another thread marked
    known is seen whole on any CPU (the lock orders the writes before it for
    the reader after it); the lookups themselves run unlocked, side by side.
    """

    def __init__(self, matrix: str, full_range: bool):
        self.matrix, self.full_range = matrix, full_range
        self.table = np.zeros((1 << 16, 256, 2), np.uint8)  # [a << 8 | b, luma] -> (Cb, Cr)
        self.known = np.zeros(1 << 16, bool)                 # rows filled
        self.lock = threading.Lock()

    def look(self, y: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 planes of one size -> (Cb, Cr) uint8 planes."""
        if not y.dtype == a.dtype == b.dtype == np.uint8:
            raise TypeError(f"ChromaTable takes uint8 planes, not {y.dtype}, {a.dtype}, {b.dtype}")
        key = a.astype(np.uint16)
        key <<= 8
        key |= b
        with self.lock:
            complete = np.take(self.known, key).all()
        if not complete:
            self._fill(key)
        index = key.astype(np.uint32)
        index <<= 8
        index |= y
        packed = np.take(self.table.view(np.uint16).reshape(-1), index)
        return cv2.split(packed.view(np.uint8).reshape(*y.shape, 2))

    def _fill(self, key: np.ndarray) -> None:
        with self.lock:
            rows = np.unique(key[~np.take(self.known, key)])
            if not len(rows):
                return
            for i in range(0, len(rows), 4096):  # 1 M pixels at a time: bounded scratch memory
                part = rows[i:i + 4096]
                y = np.broadcast_to(np.arange(256, dtype=np.uint8), (len(part), 256)).copy()
                a, b = (np.repeat(v.astype(np.uint8)[:, None], 256, axis=1) for v in (part >> 8, part & 255))
                cb, cr = _chroma_of(y, a, b, self.matrix, self.full_range)
                self.table[part] = np.dstack([cb, cr])
                self.known[part] = True  # under the lock, after the rows: see the class docstring


@functools.lru_cache(maxsize=None)
def _chroma_table(matrix: str, full_range: bool) -> ChromaTable:
    return ChromaTable(matrix, full_range)


_TABLES = threading.Lock()


def chroma_table(matrix: str, full_range: bool) -> ChromaTable:
    """The process's table of `matrix` and range (see ChromaTable); one, whichever thread asks
    first (the colour stage's chroma threads may all ask at a film's start)."""
    with _TABLES:
        return _chroma_table(matrix, full_range)


def _fit_gamut(grey: np.ndarray, luma: np.ndarray, rgb: np.ndarray, cb: np.ndarray, cr: np.ndarray,
               rows: np.ndarray) -> None:
    """Shrink (cb, cr) in place where the source's grey + the colour's differences from its own
    luma (what the player shows) leaves 0..255 in any channel.

    Found on 8-bit planes (cheap: most pixels fit), then the few that do not are
    scaled in float by the largest factor that keeps every channel inside.
    """
    r, g, b = cv2.split(rgb)
    off = cv2.subtract(grey, luma, dtype=cv2.CV_16S)  # what the player adds to each channel
    high = cv2.add(cv2.max(cv2.max(r, g), b), off, dtype=cv2.CV_16S)
    low = cv2.add(cv2.min(cv2.min(r, g), b), off, dtype=cv2.CV_16S)
    idx = np.nonzero((high > 255) | (low < 0))
    if not len(idx[0]):
        return
    sub = rgb[idx].astype(np.float32)
    # (Row sums, not `@`: numpy's matmul on (N, 3) arrays is slow here.)
    d = sub - (sub * rows[0, :3]).sum(axis=1, keepdims=True)  # R' - Y', G' - Y', B' - Y' of the colour
    grey_f = grey[idx].astype(np.float32)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        room = np.where(d > 0, (255.0 - grey_f) / d, np.where(d < 0, grey_f / -d, np.inf))
    s = np.clip(room.min(axis=1), 0.0, 1.0)[:, None]
    # Chroma is linear in the differences (the luma row gives none): scale and re-code them.
    d *= s
    for plane, row in ((cb, rows[1]), (cr, rows[2])):
        plane[idx] = np.clip(np.round((d * row[:3]).sum(axis=1) + AB_OFFSET), 0, 255).astype(np.uint8)


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
    idx = np.floor(ab / step + 0.5).astype(np.int64)
    # Each (a, b) bin as one integer, ordered as the pairs are: numpy's unique of rows sorts a
    # structured view, over 10x slower (0.22 s of a model's 0.63 s build, at every command's start).
    span = int(np.ceil(256 / step)) + 2  # every bin index lies within (-span, span)
    keys = np.unique((idx[:, 0] + span) * (2 * span) + idx[:, 1] + span)
    return ((np.stack([keys // (2 * span), keys % (2 * span)], 1) - span) * step).astype(np.float32)


#: L8 of each sRGB grey level (rgb_to_l's table for grey pictures), made once with the one conversion.
_GREY_L8 = np.ascontiguousarray(rgb_to_lab(grey_to_rgb(np.arange(256, dtype=np.uint8)[None]))[0, :, 0])
#: sRGB grey of each L8 value (l8_to_grey's table), made once with the one conversion.
_L8_GREY = np.ascontiguousarray(lab_to_rgb(grey_lab(np.arange(256, dtype=np.uint8)[None]))[0, :, 0])
