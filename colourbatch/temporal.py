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
  its steady scores are no cut. L, not HSV: a grey film has no hue to differ.
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

from collections import deque

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

    def update(self, l8: np.ndarray) -> bool:
        """True when `l8` (uint8 L plane of any size) starts a new shot."""
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
               and self.score >= self.ratio * average)
        if cut:
            self.history.clear()  # the new shot's motion owes nothing to the old one's
            self.cuts += 1
        else:
            self.history.append(self.score)
        return cut
