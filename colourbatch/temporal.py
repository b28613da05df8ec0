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
* `Stabiliser`: the video path's a/b after the model, in display order: each
  frame's a/b is a weighted average of the predictions of the frames of its
  shot up to `reach` frames behind and ahead, each moved onto it along DIS
  optical flow between their L planes, weighted by distance, by a trust in
  the warp (forward-backward flow consistency, the warped L's photometric
  error) and by colour agreement (so a moving object's colour does not trail
  over the background it uncovers). The window is centred, so colour that
  really changes is followed without lag; it looks ahead, so a frame's a/b
  leave `reach` frames after its prediction came in. A cut or a flat frame (a
  fade through black) ends a shot: no colour crosses it either way. It holds
  the current shot's last 2 reach + 1 frames (small planes): memory is
  bounded, and batches of any size give the same output.
* `Linker`: the stabiliser's optical flow between consecutive frames (a
  `Link`: both pulls and the motion test), for computing it apart from the
  stabiliser (where, video.flows_in_decoder decides). Fed the Links, the
  stabiliser's output is the same bit for bit.
* `WarpError`: the warp error of Lai et al. (ECCV 2018), the metric that
  measures flicker (formula in its docstring).
"""
from __future__ import annotations

import functools
from collections import deque
from typing import Callable, NamedTuple, Sequence

import cv2
import numpy as np

from .config import VideoConfig

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
#: DIS preset and plane side of the stabiliser's flow (two flows a frame, between the L tiles
#: averaged down to FLOW_SIDE). MEDIUM tracks better than FAST: bikes.mp4's warp error 0.40
#: against FAST at the full 224's 0.46 (offline, reach 12, earlier code and weights). At 96
#: rather than 128 the whole stabiliser costs 5.2 rather than 7.0 ms a frame, and the warp
#: error of bikes, vtest, carphone and tree rises 2-4 % (0.262 -> 0.271, 0.077 -> 0.080,
#: 0.173 -> 0.176, 0.210 -> 0.217; a/b PSNR the same to 0.03 dB); at 80 it rises 4-13 %.
#: Offline, first 100 frames, the shipped default, reach 16:
#: `python benchmarks/flicker.py --flow-sides 128,96,80 FILMS`. FAST at any side from 96 to 224
#: costs 3.53-7.25 ms a frame against MEDIUM at 96's 5.08, and bikes' warp error rises 9-28 %,
#: tree's 6-15 % (`--flow-sides 96,96:fast,128:fast,160:fast,192:fast,224:fast`, 27 Nov 2026).
FLOW_PRESET = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM
FLOW_SIDE = 96
#: Forward-backward consistency (Sundaram et al. 2010): a pixel is visible in both frames when
#: |f + b|^2 < FB_RELATIVE (|f|^2 + |b|^2) + FB_ABSOLUTE (pixels^2). The metric's test, and the
#: one that decides whether motion explains a cut candidate.
FB_RELATIVE = 0.01
FB_ABSOLUTE = 0.5
#: Photometric error of the warped L (8-bit levels) at which the metric's trust falls to 1/e.
PHOTO_SIGMA = 12.0
#: Mean trust (0..1, the metric's) above which the previous frame, moved along the flow,
#: explains the current one: a cut candidate that is really motion (a pan starting) is no cut.
MOTION_TRUST = 0.5
#: The stabiliser's own, looser consistency test and photometric scale: its coarser flow fails
#: the strict test where the metric's finer one holds (motion blur, bokeh), and such pixels
#: carried 39 % of bikes.mp4's warp error; the photometric term and the colour agreement below
#: still stop a wrong warp. Offline at 0.95, reach 12: bikes.mp4 0.52 (strict) -> 0.40, vtest
#: 0.102 -> 0.095, colourfulness and a/b PSNR unchanged.
TRUST_FB = (0.05, 2.0)
TRUST_SIGMA = 25.0
#: Colour agreement: a neighbour's colour, moved onto a frame, whose a/b differ from the frame's
#: prediction by more than GATE_FREE (|da| + |db|, LAB units) loses weight as
#: exp(-((gap - GATE_FREE) / GATE_SCALE)^2). DIS smooths the flow across a moving object's edge,
#: so the band it uncovers passes both tests above and would trail the object's colour (a
#: textured square of a far colour crossing a background: error there 8.2 against the per-frame
#: 2.3, tests/test_temporal.py); the model's own flicker mostly differs by less (bikes.mp4's
#: warp error, offline: 0.364 without, 0.372 with this, 0.40 at 30/16, 0.47 at 20/16).
GATE_FREE = 40.0
GATE_SCALE = 20.0


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
    # One two-channel map: the same samples as separate x and y planes, without copying them out.
    return cv2.remap(img, np.ascontiguousarray(coords, np.float32), None, cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)


class Pull:
    """Where each pixel of frame `cur` lies in frame `prev`, and how far to trust what is found
    there, from the flows both ways (`fwd` = flow(cur, prev), `bwd` = flow(prev, cur))."""

    def __init__(self, cur: np.ndarray, prev: np.ndarray, fwd: np.ndarray, bwd: np.ndarray):
        self.fwd, self.bwd = fwd, bwd
        h, w = fwd.shape[:2]
        self.coords = _grid(h, w) + fwd
        back = warp(bwd, self.coords)
        self.gap = _norm2(fwd + back)
        self.size = _norm2(fwd) + _norm2(back)
        c = self.coords
        self.inside = (c[..., 0] >= 0) & (c[..., 0] <= w - 1) & (c[..., 1] >= 0) & (c[..., 1] <= h - 1)
        self.photo = np.abs(cur.astype(np.float32) - warp(prev, c).astype(np.float32))

    @classmethod
    def of(cls, dis, cur: np.ndarray, prev: np.ndarray) -> "Pull":
        """`cur`'s pull into `prev` (uint8 L planes of one size), from DIS flows both ways."""
        return cls(cur, prev, flow(dis, cur, prev), flow(dis, prev, cur))

    def reverse(self, cur: np.ndarray, prev: np.ndarray) -> "Pull":
        """`prev`'s pull into `cur`, from the same two flows (none computed again)."""
        return Pull(prev, cur, self.bwd, self.fwd)

    def visible(self, relative: float = FB_RELATIVE, absolute: float = FB_ABSOLUTE) -> np.ndarray:
        """Float mask of the pixels whose flow is consistent both ways and lands inside `prev`."""
        return ((self.gap < relative * self.size + absolute) & self.inside).astype(np.float32)

    def trust(self, fb: tuple[float, float] = (FB_RELATIVE, FB_ABSOLUTE), sigma: float = PHOTO_SIGMA) -> np.ndarray:
        """visible * exp(-(|cur - warp(prev)| / sigma)^2), 0..1."""
        return self.visible(*fb) * np.exp(-(self.photo / sigma) ** 2)

    def weights(self) -> tuple[np.ndarray, np.ndarray]:
        """(coords, the stabiliser's trust): its looser test and photometric scale."""
        return self.coords, self.trust(TRUST_FB, TRUST_SIGMA)


def visibility(fwd: np.ndarray, bwd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(coords, visible): where each pixel of frame t lies in frame t-1, and a float mask of the
    pixels whose flow is consistent forward and backward and lands inside the frame.

    `fwd` maps t -> t-1 (flow(t, t-1)), `bwd` maps t-1 -> t.
    """
    h, w = fwd.shape[:2]
    flat = np.zeros((h, w), np.uint8)  # no pictures: only the flows' consistency counts
    pull = Pull(flat, flat, fwd, bwd)
    return pull.coords, pull.visible()


def track(dis, cur: np.ndarray, prev: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(coords, visible, trust) of uint8 L planes `cur` and `prev` (same size): where each pixel
    of `cur` lies in `prev` (DIS flow), the forward-backward visibility mask, and the trust
    (0..1) in `prev` moved there: visible * exp(-(|cur - warp(prev)| / PHOTO_SIGMA)^2)."""
    pull = Pull.of(dis, cur, prev)
    return pull.coords, pull.visible(), pull.trust()


def _at(pull: tuple[np.ndarray, np.ndarray], shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A flow-plane pull's (coords, the stabiliser's trust) (Pull.weights), at the a/b size `shape`."""
    coords, trust = pull
    plane = trust.shape
    h, w = shape
    if (h, w) != plane:
        trust = cv2.resize(trust, (w, h), interpolation=cv2.INTER_AREA)
        scale = np.array([w / plane[1], h / plane[0]], np.float32)
        moved = cv2.resize(coords - _grid(*plane), (w, h), interpolation=cv2.INTER_AREA)
        coords = _grid(h, w) + moved * scale
    return coords, trust


def _flow_plane(tile: np.ndarray) -> np.ndarray:
    """The L tile averaged down to FLOW_SIDE (smaller tiles as they are), contiguous."""
    if min(tile.shape) > FLOW_SIDE:
        return cv2.resize(np.ascontiguousarray(tile), (FLOW_SIDE, FLOW_SIDE), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(tile)


class Link(NamedTuple):
    """What the stabiliser needs of the optical flow between a frame and the one before it, at
    the flow plane's size (`link`)."""
    motion: float                         # the metric's mean trust in the previous frame moved onto this one (MOTION_TRUST)
    back: tuple[np.ndarray, np.ndarray]   # this frame's pull into the previous one: (coords, trust) (Pull.weights)
    ahead: tuple[np.ndarray, np.ndarray]  # the previous frame's pull into this one, from the same two flows


def link(dis, plane: np.ndarray, prev: np.ndarray) -> Link:
    """The Link of flow plane `plane` to `prev` (the frame before it): two DIS flows and both pulls."""
    into_prev = Pull.of(dis, plane, prev)
    return Link(float(into_prev.trust().mean()), into_prev.weights(), into_prev.reverse(plane, prev).weights())


class Linker:
    """The Links of a film's frames, fed its L tiles in display order (`add`): the stabiliser's
    optical flow (half its cost), computed where the tiles are made instead of in the thread
    that stabilises. The Stabiliser fed these Links gives what it gives computing them itself,
    bit for bit."""

    def __init__(self):
        self.dis = cv2.DISOpticalFlow_create(FLOW_PRESET)
        self.prev: np.ndarray | None = None

    def add(self, tile: np.ndarray) -> Link | None:
        """The Link of `tile` to the tile added before it (None for the first)."""
        plane = _flow_plane(tile)
        prev, self.prev = self.prev, plane
        return None if prev is None else link(self.dis, plane, prev)


#: Links of a batch of frames as arrays (`pack_links`): (B, P, P, 2) coords, (B, P, P) trusts,
#: (B,) motion, and (B,) whether the frame has a Link at all (a stream's first has none).
LINK_ARRAYS = ("link_back_coords", "link_back_trust", "link_ahead_coords", "link_ahead_trust",
               "link_motion", "linked")


def pack_links(links: Sequence[Link | None]) -> dict[str, np.ndarray]:
    """A batch's Links as the arrays LINK_ARRAYS names (one transfer from the decode worker)."""
    some = next((k for k in links if k is not None), None)
    if some is None:  # no frame of this batch has one (a stream of one frame)
        side = (0, 0)
    else:
        side = some.back[1].shape
    n = len(links)
    out = {"link_back_coords": np.zeros((n, *side, 2), np.float32), "link_back_trust": np.zeros((n, *side), np.float32),
           "link_ahead_coords": np.zeros((n, *side, 2), np.float32), "link_ahead_trust": np.zeros((n, *side), np.float32),
           "link_motion": np.zeros(n, np.float64), "linked": np.zeros(n, bool)}  # motion: a Python float, whole
    for i, k in enumerate(links):
        if k is None:
            continue
        out["link_back_coords"][i], out["link_back_trust"][i] = k.back
        out["link_ahead_coords"][i], out["link_ahead_trust"][i] = k.ahead
        out["link_motion"][i], out["linked"][i] = k.motion, True
    return out


def unpack_links(arrays: dict[str, np.ndarray]) -> list[Link | None]:
    """`pack_links` undone (the arrays' rows are views, not copies)."""
    return [Link(float(arrays["link_motion"][i]),
                 (arrays["link_back_coords"][i], arrays["link_back_trust"][i]),
                 (arrays["link_ahead_coords"][i], arrays["link_ahead_trust"][i]))
            if arrays["linked"][i] else None for i in range(len(arrays["linked"]))]


class _Frame:
    """A frame of the current shot the stabiliser holds: its prediction and weight as 3 planes
    (a, b, 1), and its pulls (coords, trust at the a/b size) into the frame before (None for a
    shot's first) and the frame after (None until that one arrives)."""

    __slots__ = ("here", "planes", "back", "ahead")

    def __init__(self, here: np.ndarray, back: tuple[np.ndarray, np.ndarray] | None):
        self.here, self.back = here, back
        self.planes = cv2.split(here)[:2]  # its a and b, apart: every carry onto it compares with them
        self.ahead: tuple[np.ndarray, np.ndarray] | None = None


def _carry(acc: np.ndarray, pull: tuple[np.ndarray, np.ndarray], here: np.ndarray,
           planes: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """`acc` (sums of a, b, weight) moved one frame along `pull` (coords, trust) onto the frame
    whose prediction is `here` (its a and b planes apart: `planes`, when at hand), weighted by
    the trust and by how well its colour agrees."""
    coords, trust = pull
    here_a, here_b = planes or cv2.split(here)[:2]
    moved = warp(acc, coords)
    a, b, weight = cv2.split(moved)
    np.maximum(weight, np.float32(1e-6), out=weight)
    # |mean a - here a| + |mean b - here b|, in OpenCV on whole planes: numpy's expressions on
    # the channels of interleaved planes this small cost more (the same values, tested).
    gap = cv2.add(cv2.absdiff(cv2.divide(a, weight), here_a), cv2.absdiff(cv2.divide(b, weight), here_b))
    far = np.flatnonzero(gap > GATE_FREE)  # the gate is 1 elsewhere: most colour agrees
    if len(far):
        trust = trust.copy()
        trust.flat[far] *= np.exp(-((gap.flat[far] - GATE_FREE) / GATE_SCALE) ** 2)
    return cv2.multiply(moved, cv2.merge([trust, trust, trust]))  # numpy's broadcast costs 5x more here


def _fold(frames, link: str, weights: np.ndarray) -> np.ndarray:
    """Sum of `frames` (farthest from the target first), frame i weighted by weights[i] and moved
    along the chain of `link` pulls one frame nearer at each step (`_carry`)."""
    acc = None
    for frame, weight in zip(frames, weights):
        if acc is None:
            acc = weight * frame.here
        else:
            acc = weight * frame.here + _carry(acc, getattr(frame, link), frame.here, frame.planes)
    return acc


class Stabiliser:
    """a/b that holds still along motion: feed each film's frames in display order.

    `feed(tiles, ab)` takes a batch of uint8 L tiles (B, S, S) and the model's
    uint8 a/b (B, 2, h, w) and returns the stabilised a/b of the frames that
    are final (M, 2, h, w), oldest first: a frame is final once `reach`
    frames of its shot follow it, or its shot has ended (a cut). `finish()`
    returns the rest at the film's end. Output t is a weighted average of the
    predictions p_k of its shot within `reach` frames either side, each
    moved onto frame t along the DIS flow between their L tiles:

        ab_t = sum_k w_tk warp_k->t(p_k) / sum_k w_tk,   |k - t| <= reach,
        w_tt = 1,  w_tk = strength^|k - t| * prod over the frame pairs between k and t of
                          (trust * agreement)

    trust = the pair's forward-backward visibility (TRUST_FB) times
    exp(-(|L - warp(L)| / TRUST_SIGMA)^2), on FLOW_SIDE planes averaged down to
    the a/b size; agreement = 1 while the colour carried so far is within
    GATE_FREE of the frame's own prediction, falling off beyond. The chain of
    warps is folded pair by pair, afresh for each frame returned (up to reach
    remaps a side: the cost grows with reach). Where the camera
    and the scene hold still every weight is near strength^|k - t| and the
    average spans 2 reach + 1 frames; where the warp fails (new content, an
    occluder, a change of light) the weights vanish and the prediction shows
    through. The window is centred, so colour that really changes along the
    motion (the model's colour growing as a figure rides in) is followed
    without lag, as a causal average cannot, and it is twice as wide for the
    same reach back: on bikes.mp4 (offline, FAST flow) a causal average at
    0.95 leaves a warp error of 0.80, this window 12 a side 0.46.

    A cut (its own CutDetector, candidates vetoed where the metric's mean
    trust is MOTION_TRUST or more) or a flat frame (a fade through black) ends
    a shot: no colour crosses it either way, and the frames before it are
    final at once. strength 0 or reach 0 returns the prediction exactly, with
    no lag (cuts still counted, alike). Deterministic: batches of any size give the
    same output. Holds at most 2 reach + 1 frames (tiles' pulls and a/b
    planes at the model's size).
    """

    def __init__(self, strength: float, reach: int = VideoConfig.reach, detector: CutDetector | None = None):
        if not 0.0 <= strength < 1.0:
            raise ValueError(f"stability must be in [0, 1), not {strength!r}")
        if reach < 0:
            raise ValueError(f"reach must be 0 or more, not {reach!r}")
        self.strength = float(strength)
        self.reach = int(reach) if strength > 0 else 0
        self.weights = self.strength ** np.arange(self.reach + 1, dtype=np.float32)  # by distance
        self.detector = detector or CutDetector()
        # Also with strength 0: the flow tells a pan that starts from a cut (see CutDetector.update).
        self.dis = cv2.DISOpticalFlow_create(FLOW_PRESET)
        self.prev_tile: np.ndarray | None = None
        self.shot: deque[_Frame] = deque()  # the current shot's frames within reach, oldest first
        self.done = 0  # how many of them (the oldest) were returned already
        self.ab_shape: tuple[int, ...] = (2, 0, 0)  # the a/b planes' shape, for empty results

    @property
    def cuts(self) -> int:
        return self.detector.cuts

    @property
    def pending(self) -> int:
        """Frames fed and not yet returned."""
        return len(self.shot) - self.done

    @property
    def smooths(self) -> bool:
        """Whether frames are averaged with their neighbours (every frame's Link is used); when
        not, only a cut candidate's is, and the stabiliser computes that one itself."""
        return self.reach > 0

    def feed(self, tiles: np.ndarray, ab: np.ndarray, links: Sequence[Link | None] | None = None) -> np.ndarray:
        """Feed a batch (tiles (B, S, S), a/b (B, 2, h, w) uint8); the a/b of the frames now final.

        `links`: each frame's Link to the frame fed before it, from a Linker fed the same tiles
        from the film's first on (None: computed here, as needed)."""
        if links is not None and len(links) != len(tiles):
            raise ValueError(f"{len(links)} links for {len(tiles)} frames")  # before any state changes
        out: list[np.ndarray] = []
        self.ab_shape = ab.shape[1:]
        for i in range(len(tiles)):
            self._step(_flow_plane(tiles[i]), ab[i], out, None if links is None else links[i])
        return self._stack(out)

    def finish(self) -> np.ndarray:
        """The a/b of every frame still held (the film ended): (M, 2, h, w), M = `pending`."""
        out: list[np.ndarray] = []
        self._end_shot(out)
        return self._stack(out)

    def _stack(self, out: list[np.ndarray]) -> np.ndarray:
        return np.stack(out) if out else np.empty((0, *self.ab_shape), np.uint8)

    def _step(self, tile: np.ndarray, ab: np.ndarray, out: list[np.ndarray], given: Link | None) -> None:
        got = [] if given is None else [given]  # this frame's Link, computed at most once

        def explained() -> bool:
            if not got:
                got.append(link(self.dis, tile, self.prev_tile))
            return got[0].motion >= MOTION_TRUST

        first = self.prev_tile is None
        cut = self.detector.update(tile, None if first else explained)
        restart = first or cut or self.detector.flat
        self.prev_tile, prev = tile, self.prev_tile
        if self.reach == 0:  # no neighbours (strength 0 or --reach 0): the prediction as it is
            out.append(ab)
            return
        here = np.concatenate([ab.transpose(1, 2, 0).astype(np.float32),
                               np.ones((*ab.shape[1:], 1), np.float32)], axis=2)  # a, b, weight
        back = None
        if restart:
            self._end_shot(out)
        else:
            lk = got[0] if got else link(self.dis, tile, prev)
            back = _at(lk.back, ab.shape[1:])
            self.shot[-1].ahead = _at(lk.ahead, ab.shape[1:])
        self.shot.append(_Frame(here, back))
        while self.pending > self.reach:
            out.append(self._emit())

    def _end_shot(self, out: list[np.ndarray]) -> None:
        while self.pending:
            out.append(self._emit())
        self.shot.clear()
        self.done = 0

    def _emit(self) -> np.ndarray:
        """The oldest frame not yet returned, final: its own prediction plus the frames within
        reach behind and ahead of it, each folded onto it."""
        shot, t = self.shot, self.done
        frame, c = shot[t], self.weights
        total = frame.here
        if t > 0:  # behind, farthest first: frame t - n has weight c[n]
            n = min(t, self.reach)
            acc = _fold([shot[t - m] for m in range(n, 0, -1)], "back", c[n:0:-1])
            total = total + _carry(acc, frame.back, frame.here, frame.planes)
        if t + 1 < len(shot):  # ahead, farthest first
            n = len(shot) - 1 - t
            acc = _fold([shot[t + m] for m in range(n, 0, -1)], "ahead", c[n:0:-1])
            total = total + _carry(acc, frame.ahead, frame.here, frame.planes)
        self.done += 1
        if self.done > self.reach:  # the oldest is out of every later frame's reach
            shot.popleft()
            self.done -= 1
        ab = total[..., :2] / total[..., 2:]
        return np.clip(np.rint(ab), 0, 255).astype(np.uint8).transpose(2, 0, 1)


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
