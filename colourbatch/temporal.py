"""Colour that holds still over time: scene cuts, motion-compensated a/b, and the warp error.

This module owns the temporal side of film colour, on the small L tiles and
a/b planes the engine already has (pure numpy/OpenCV, no torch, no PyAV):

* `CutDetector`: a streaming hard-cut detector on L. Its score is the mean
  absolute difference of a frame's 32x32 luma thumbnail against the previous
  one after both are normalised to zero mean and unit spread, so a flash or a
  fade (a change of brightness and contrast of the same picture) scores low
  while new content scores high. A cut is a score above an absolute floor that
  is also RATIO times the running average of the shot's recent scores, the
  adaptive test of PySceneDetect's AdaptiveDetector made causal (its window
  looks ahead; ours only back): a fast pan keeps its running average high, so
  its steady scores are no cut, and a candidate that the previous frame moved
  along the optical flow explains (a still camera starting to pan) is vetoed by
  the caller that has the flow. L, not HSV: a grey film has no hue to differ.
* `Stabiliser`: the video path's a/b after the model, frame by frame in
  display order: the previous frame's stabilised a/b warped onto the current
  frame along DIS optical flow between their L tiles, blended with the new
  prediction by `strength` times a trust weight (forward-backward flow
  consistency, the warped L's photometric error, inside the frame); reset at
  every cut and on flat frames (a fade through black), so no colour crosses a
  shot change. It holds only the previous tile and its a/b: memory is bounded,
  and batches of any size give the same output.
* `WarpError`: the warp error of Lai et al. (ECCV 2018), the metric that
  measures flicker (formula in its docstring).
"""
from __future__ import annotations

import functools
from collections import deque
from typing import Callable

import cv2
import numpy as np

#: Side of the luma thumbnail cut scores are computed on: coarse enough that noise and small
#: motion average out, fine enough that two different shots differ.
CUT_SIZE = 32
#: Lowest score (mean |difference| in units of the thumbnails' spread) a cut may have: two
#: unrelated pictures score about 1, the same shot moving a little well under 0.5.
CUT_MIN_SCORE = 0.6
#: A cut scores this many times the running average of the shot's recent scores.
CUT_RATIO = 3.0
#: Scores in the running average (frames): about a third of a second of film.
CUT_WINDOW = 8
#: Scores a shot needs before a cut can end it (PySceneDetect's minimum scene length, short).
CUT_MIN_HISTORY = 2
#: Thumbnail spread (8-bit L levels) under which a frame is flat (black, white, mid-fade):
#: normalising it would amplify noise, so it scores 0 and the stabiliser starts afresh on it.
FLAT_STD = 3.0


class CutDetector:
    """Feed L planes in display order with `update`; it says which ones start a new shot."""

    def __init__(self, min_score: float = CUT_MIN_SCORE, ratio: float = CUT_RATIO,
                 window: int = CUT_WINDOW, min_history: int = CUT_MIN_HISTORY):
        self.min_score, self.ratio, self.min_history = min_score, ratio, min_history
        self.history: deque[float] = deque(maxlen=window)
        self.prev: np.ndarray | None = None
        self.flat = False     # the last frame fed was flat (see FLAT_STD)
        self.score = 0.0      # the last frame's score
        self.cuts = 0         # cuts found so far

    def update(self, l8: np.ndarray, is_motion: Callable[[], bool] | None = None) -> bool:
        """True when `l8` (uint8 L plane of any size) starts a new shot.

        `is_motion`, when given, is asked about a frame that passes the score
        test: True (the previous frame, moved along the optical flow, explains
        this one) makes it no cut, as when a still camera starts a fast pan.
        """
        thumb = cv2.resize(np.ascontiguousarray(l8), (CUT_SIZE, CUT_SIZE),
                           interpolation=cv2.INTER_AREA).astype(np.float32)
        spread = float(thumb.std())
        self.flat = spread < FLAT_STD
        z = None if self.flat else (thumb - thumb.mean()) / spread
        prev, self.prev = self.prev, z
        if z is None or prev is None:
            self.score = 0.0
            return False
        self.score = float(np.abs(z - prev).mean())
        average = sum(self.history) / len(self.history) if self.history else 0.0
        cut = (len(self.history) >= self.min_history and self.score >= self.min_score
               and self.score >= self.ratio * average and not (is_motion is not None and is_motion()))
        if cut:
            self.history.clear()  # the new shot's motion owes nothing to the old one's
            self.cuts += 1
        else:
            self.history.append(self.score)
        return cut


# ------------------------------------------------------------------ stabiliser
#: DIS preset for the stabiliser's flow between 224 tiles: FAST costs 1.0 ms a flow on one core
#: here (ULTRAFAST 0.5 ms) and tracks fast motion better: warp error vs off 0.46 against 0.51 on
#: bikes.mp4, 0.44 against 0.46 on chaplin.mp4 (benchmarks/RESULTS-flicker.md). Two flows a frame.
FLOW_PRESET = cv2.DISOPTICAL_FLOW_PRESET_FAST
#: Forward-backward consistency (Sundaram et al. 2010): a pixel is visible in both frames when
#: |f + b|^2 < FB_RELATIVE (|f|^2 + |b|^2) + FB_ABSOLUTE (pixels^2).
FB_RELATIVE = 0.01
FB_ABSOLUTE = 0.5
#: Photometric error of the warped L (8-bit levels) at which the trust falls to 1/e: a lighting
#: change or a mis-tracked edge lets the new prediction through.
PHOTO_SIGMA = 12.0
#: Mean trust (0..1) above which the previous frame, moved along the flow, explains the current
#: one: a cut candidate that is really motion (a pan starting) is then no cut.
MOTION_TRUST = 0.5


def flow(dis, frm: np.ndarray, to: np.ndarray) -> np.ndarray:
    """Dense flow (H, W, 2) float32 with frm(x) ~ to(x + flow(x)) (OpenCV's convention)."""
    return dis.calc(np.ascontiguousarray(frm), np.ascontiguousarray(to), None)


@functools.lru_cache(maxsize=8)
def _grid(h: int, w: int) -> np.ndarray:
    """Each pixel's own (x, y), float32 (H, W, 2); cached (one film has one or two sizes)."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    grid = np.dstack([xs, ys])
    grid.flags.writeable = False
    return grid


def _norm2(v: np.ndarray) -> np.ndarray:
    # Per channel: numpy reduces a last axis of length 2 ten times slower than this.
    return v[..., 0] * v[..., 0] + v[..., 1] * v[..., 1]


def warp(img: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """`img` (H, W) or (H, W, C) sampled at `coords` (H, W, 2: x, y), bilinear, edges repeated."""
    return cv2.remap(img, coords[..., 0], coords[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def visibility(fwd: np.ndarray, bwd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(coords, visible): where each pixel of frame t lies in frame t-1, and a float mask of the
    pixels whose flow is consistent forward and backward and lands inside the frame.

    `fwd` maps t -> t-1 (flow(t, t-1)), `bwd` maps t-1 -> t.
    """
    h, w = fwd.shape[:2]
    coords = _grid(h, w) + fwd
    back = warp(bwd, coords)
    gap = _norm2(fwd + back)
    size = _norm2(fwd) + _norm2(back)
    inside = ((coords[..., 0] >= 0) & (coords[..., 0] <= w - 1)
              & (coords[..., 1] >= 0) & (coords[..., 1] <= h - 1))
    return coords, ((gap < FB_RELATIVE * size + FB_ABSOLUTE) & inside).astype(np.float32)


def track(dis, cur: np.ndarray, prev: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(coords, visible, trust) of uint8 L planes `cur` and `prev` (same size): where each pixel
    of `cur` lies in `prev` (DIS flow), the forward-backward visibility mask, and the trust
    (0..1) in `prev` moved there: visible * exp(-(|cur - warp(prev)| / PHOTO_SIGMA)^2)."""
    coords, visible = visibility(flow(dis, cur, prev), flow(dis, prev, cur))
    photo = np.abs(cur.astype(np.float32) - warp(prev, coords).astype(np.float32))
    return coords, visible, visible * np.exp(-(photo / PHOTO_SIGMA) ** 2)


class Stabiliser:
    """a/b that holds still along motion: feed each film's frames in display order.

    `__call__(tiles, ab)` takes a batch of uint8 L tiles (B, S, S) and the
    model's uint8 a/b (B, 2, h, w) and returns the stabilised a/b, same shape.
    For each frame after the first of a shot:

        trust = visible * exp(-(|L_t - warp(L_t-1)| / PHOTO_SIGMA)^2)   (at tile size,
                then averaged down to the a/b size)
        ab_t  = strength * trust * warp(ab_t-1) + (1 - strength * trust) * prediction_t

    where warp follows DIS flow from tile t to tile t-1 and ab_t-1 is the
    previous frame's stabilised a/b (kept in float, so no rounding drifts).
    A cut (its own CutDetector, candidates vetoed where the mean trust is
    MOTION_TRUST or more) or a flat frame starts afresh: ab_t is the
    prediction, exactly. strength 0 turns the blending off (cuts still
    counted, alike). Deterministic; state is the previous tile and a/b only.
    """

    def __init__(self, strength: float, detector: CutDetector | None = None):
        if not 0.0 <= strength < 1.0:
            raise ValueError(f"stability must be in [0, 1), not {strength!r}")
        self.strength = float(strength)
        self.detector = detector or CutDetector()
        # Also with strength 0: the flow tells a pan that starts from a cut (see CutDetector.update).
        self.dis = cv2.DISOpticalFlow_create(FLOW_PRESET)
        self.prev_tile: np.ndarray | None = None
        self.prev_ab: np.ndarray | None = None  # (h, w, 2) float32, the last output
        self._motion: tuple | None = None  # this frame's track() against the previous one

    @property
    def cuts(self) -> int:
        return self.detector.cuts

    def __call__(self, tiles: np.ndarray, ab: np.ndarray) -> np.ndarray:
        out = np.empty_like(ab)
        for i in range(len(tiles)):
            out[i] = self.step(tiles[i], ab[i])
        return out

    def step(self, tile: np.ndarray, ab: np.ndarray) -> np.ndarray:
        """One frame: uint8 L tile (S, S) and predicted uint8 a/b (2, h, w) -> stabilised (2, h, w)."""
        tile = np.ascontiguousarray(tile)
        self._motion = None
        first = self.prev_tile is None
        cut = self.detector.update(tile, None if first else lambda: self._explained(tile))
        restart = first or cut or self.detector.flat
        if self.strength == 0:
            self.prev_tile = tile
            return ab
        pred = np.ascontiguousarray(ab.transpose(1, 2, 0), dtype=np.float32)
        new = pred if restart else self._blend(tile, pred)
        self.prev_tile, self.prev_ab = tile, new
        return np.clip(np.rint(new), 0, 255).astype(np.uint8).transpose(2, 0, 1)

    def _track(self, tile: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._motion is None:  # once per frame: the cut check and the blend share it
            self._motion = track(self.dis, tile, self.prev_tile)
        return self._motion

    def _explained(self, tile: np.ndarray) -> bool:
        return float(self._track(tile)[2].mean()) >= MOTION_TRUST

    def _blend(self, tile: np.ndarray, pred: np.ndarray) -> np.ndarray:
        coords, _, trust = self._track(tile)
        h, w = pred.shape[:2]
        if (h, w) != tile.shape:
            trust = cv2.resize(trust, (w, h), interpolation=cv2.INTER_AREA)
            scale = np.array([w / tile.shape[1], h / tile.shape[0]], np.float32)
            fwd = coords - _grid(*tile.shape)
            coords = _grid(h, w) + cv2.resize(fwd, (w, h), interpolation=cv2.INTER_AREA) * scale
        carried = warp(self.prev_ab, coords)
        weight = (self.strength * trust)[..., None]
        return weight * carried + (1.0 - weight) * pred


# ------------------------------------------------------------------ the metric
#: Frame size (width, height) the warp error's flow is computed at: cheap, and fine enough for
#: the low-resolution chroma it judges.
METRIC_SIZE = (320, 180)
#: DIS preset of the metric: a measurement, so the more careful flow.
METRIC_PRESET = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM


class WarpError:
    """The warp error of Lai et al. (ECCV 2018) of a coloured film, fed frame by frame.

    For each pair of consecutive frames (t-1, t) of the same shot:

        f     = DIS flow of the source's L from t to t-1, both at METRIC_SIZE
        M     = pixels visible in both (forward-backward check, as the Stabiliser's)
        E_t   = sum_x M(x) (|a_t(x) - a_t-1(x + f(x))| + |b_t(x) - b_t-1(x + f(x))|) / 2 / sum_x M(x)

    and the film's warp error is the mean of E_t over its pairs, in LAB units
    (8-bit a/b differ by the same amounts). Pairs across a cut (a CutDetector
    on the source's L) are left out, as are pairs with no visible pixel.
    Lai et al. square the RGB difference; the mean absolute a/b difference
    reads directly as "how many LAB units the colour crawls per frame" and
    ignores L, which the pipeline never changes.
    """

    def __init__(self, size: tuple[int, int] = METRIC_SIZE):
        self.size = size
        self.dis = cv2.DISOpticalFlow_create(METRIC_PRESET)
        self.detector = CutDetector()
        self.stream_errors: list[list[float]] = []  # every a/b's error (add's order), pair by pair
        self.prev: tuple[np.ndarray, list[np.ndarray]] | None = None

    def add(self, l8: np.ndarray, ab8: np.ndarray, *more: np.ndarray) -> float | None:
        """Feed the next frame: the source's uint8 L (H, W) and the output's uint8 a/b (H', W', 2)
        (any sizes; both are resized to `size`); `more` a/b (another output, the source's own
        colour) are measured along the same flow. Returns this pair's error of `ab8`, None
        when the pair is left out."""
        l_small = cv2.resize(np.ascontiguousarray(l8), self.size, interpolation=cv2.INTER_AREA)
        abs_ = [cv2.resize(np.ascontiguousarray(a), self.size, interpolation=cv2.INTER_AREA).astype(np.float32)
                for a in (ab8,) + more]
        tracked: list = []

        def is_motion() -> bool:  # the pair's flow, computed once for the cut check and the error
            tracked.append(track(self.dis, l_small, prev[0]))
            return float(tracked[0][2].mean()) >= MOTION_TRUST

        prev, self.prev = self.prev, (l_small, abs_)
        cut = self.detector.update(l_small, None if prev is None else is_motion)
        if prev is None or cut:
            return None
        coords, visible, _ = tracked[0] if tracked else track(self.dis, l_small, prev[0])
        seen = float(visible.sum())
        if seen == 0:
            return None
        if not self.stream_errors:
            self.stream_errors = [[] for _ in abs_]
        for ab, before, errors in zip(abs_, prev[1], self.stream_errors):
            delta = np.abs(ab - warp(before, coords))
            errors.append(float((0.5 * (delta[..., 0] + delta[..., 1]) * visible).sum() / seen))
        return self.errors[-1]

    @property
    def errors(self) -> list[float]:
        """The first a/b's error, pair by pair."""
        return self.stream_errors[0] if self.stream_errors else []

    @property
    def value(self) -> float:
        """Mean over the pairs measured of the first a/b's error (NaN before any)."""
        return float(np.mean(self.errors)) if self.errors else float("nan")

    @property
    def values(self) -> list[float]:
        """Each a/b's mean error, in add's order."""
        return [float(np.mean(e)) for e in self.stream_errors]

    @property
    def cuts(self) -> int:
        return self.detector.cuts
