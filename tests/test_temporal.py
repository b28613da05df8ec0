"""temporal.py: scene cuts, a/b stabilisation along motion, and the warp error, on synthetic clips."""
import cv2
import numpy as np
import pytest

from colourbatch import temporal
from colourbatch.temporal import CutDetector


def scene(seed: int, n: int = 480, sigma: float = 10) -> np.ndarray:
    """A textured grey picture (blurred noise: blobs tens of pixels wide), uint8 (n, n)."""
    rng = np.random.default_rng(seed)
    x = cv2.GaussianBlur(rng.normal(0, 1, (n, n)).astype(np.float32), (0, 0), sigma)
    x = (x - x.min()) / (x.max() - x.min())
    return (30 + 190 * x).astype(np.uint8)


def crop(img: np.ndarray, x: int, y: int, s: int = 224) -> np.ndarray:
    return np.ascontiguousarray(img[y:y + s, x:x + s])


def cuts_in(frames) -> list[int]:
    det = CutDetector()
    found = [i for i, f in enumerate(frames) if det.update(f)]
    assert det.cuts == len(found)
    return found


def test_hard_cut_between_two_shots_is_found():
    a, b = scene(1), scene(2)
    frames = [crop(a, 2 * i, i) for i in range(10)] + [crop(b, 2 * i, i) for i in range(10)]
    assert cuts_in(frames) == [10]


def test_fast_pan_is_no_cut():
    a = scene(1)
    assert cuts_in([crop(a, 12 * i, 4 * i) for i in range(20)]) == []


def test_a_cut_during_a_slow_pan_is_found_again_after_it():
    a, b, c = scene(1), scene(2), scene(3)
    frames = ([crop(a, 3 * i, 0) for i in range(8)] + [crop(b, 3 * i, 0) for i in range(8)]
              + [crop(c, 0, 3 * i) for i in range(8)])
    assert cuts_in(frames) == [8, 16]


def test_flash_is_no_cut():
    frames = [crop(scene(1), 2 * i, 0) for i in range(20)]
    frames[8] = np.clip(frames[8].astype(np.float32) * 1.6 + 40, 0, 255).astype(np.uint8)
    assert cuts_in(frames) == []


def test_fade_through_black_is_no_cut_and_flat_frames_are_flagged():
    a = scene(1)
    frames = [(crop(a, 2 * i, 0) * (abs(i - 10) / 10)).astype(np.uint8) for i in range(21)]
    det = CutDetector()
    flags = [(det.update(f), det.flat) for f in frames]
    assert not any(cut for cut, _ in flags)
    assert flags[10][1] and not flags[0][1] and not flags[5][1]


# ------------------------------------------------------------- stabiliser and metric
def colour_field(seed: int, n: int = 480) -> np.ndarray:
    """A smooth a/b field (n, n, 2) uint8 around a per-scene tint: the scene's true colour."""
    rng = np.random.default_rng(seed + 100)
    tint = rng.uniform(-30, 30, 2)
    planes = [cv2.GaussianBlur(rng.normal(0, 1, (n, n)).astype(np.float32), (0, 0), 20) for _ in range(2)]
    field = np.dstack([p / (np.abs(p).max() + 1e-6) * 25 + t for p, t in zip(planes, tint)])
    return np.clip(128 + field, 0, 255).astype(np.uint8)


def shot(seed: int, frames: int, dx: int = 3, dy: int = 1, start: int = 0):
    """(L tiles (F, 224, 224), true a/b (F, 224, 224, 2)) of a camera panning over one scene."""
    l, ab = scene(seed), colour_field(seed)
    pos = [(start + dx * i, start + dy * i) for i in range(frames)]
    return (np.stack([crop(l, x, y) for x, y in pos]),
            np.stack([crop(ab, x, y) for x, y in pos]))


def to_model(ab_full: np.ndarray, side: int = 56) -> np.ndarray:
    """(F, S, S, 2) a/b -> the model's (F, 2, side, side) uint8, as Colouriser.predict returns."""
    return np.stack([cv2.resize(a, (side, side), interpolation=cv2.INTER_AREA).transpose(2, 0, 1)
                     for a in ab_full])


def jitter(ab: np.ndarray, seed: int = 7, amount: float = 12.0) -> np.ndarray:
    """A flickering colouriser: each frame's a/b shifted by its own random smooth field."""
    rng = np.random.default_rng(seed)
    out = []
    for frame in ab.astype(np.float32):
        noise = cv2.resize(rng.normal(0, amount, (4, 4, 2)).astype(np.float32), frame.shape[1:][::-1],
                           interpolation=cv2.INTER_CUBIC)
        out.append(frame + noise.transpose(2, 0, 1))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def warp_error(tiles, ab_model) -> float:
    metric = temporal.WarpError(size=(224, 224))
    for l, ab in zip(tiles, ab_model):
        metric.add(l, ab.transpose(1, 2, 0))
    return metric.value


def test_warp_error_is_near_zero_for_a_static_clip_and_a_consistent_pan():
    l, ab = shot(1, 1, 0, 0)
    static = temporal.WarpError()
    for _ in range(5):
        static.add(l[0], ab[0])
    assert static.value < 0.05 and len(static.errors) == 4
    l, ab = shot(1, 8, dx=6, dy=2)
    assert warp_error(l, ab.transpose(0, 3, 1, 2)) < 0.5


def test_warp_error_is_large_for_random_colour_per_frame_and_skips_cuts():
    l, ab = shot(1, 8)
    rng = np.random.default_rng(3)
    noisy = rng.integers(88, 168, (8, 2, 8, 8)).astype(np.uint8)
    assert warp_error(l, noisy) > 10
    la, aa = shot(1, 5)
    lb, ab_ = shot(2, 5)
    metric = temporal.WarpError(size=(224, 224))
    for l8, a in zip(np.concatenate([la, lb]), np.concatenate([aa, ab_])):
        metric.add(l8, a)
    assert metric.cuts == 1 and len(metric.errors) == 8 and metric.value < 0.5  # the cut pair left out


def test_stabiliser_lowers_the_warp_error_of_a_flickering_colouriser():
    l, ab = shot(1, 16, dx=4, dy=2)
    pred = jitter(to_model(ab))
    stable = temporal.Stabiliser(0.8)(l, pred)
    before, after = warp_error(l, pred), warp_error(l, stable)
    assert after < 0.5 * before
    # and it follows the true colour no worse than the per-frame prediction does
    truth = to_model(ab).astype(np.float32)
    assert np.abs(stable[4:] - truth[4:]).mean() <= np.abs(pred[4:].astype(np.float32) - truth[4:]).mean()


def test_stabiliser_resets_at_a_cut():
    la, aa = shot(1, 8)
    lb, ab_ = shot(2, 8)
    tiles = np.concatenate([la, lb])
    pred = jitter(to_model(np.concatenate([aa, ab_])))
    st = temporal.Stabiliser(0.8)
    out = st(tiles, pred)
    assert st.cuts == 1
    assert np.array_equal(out[8], pred[8])  # the new shot's first frame is the prediction alone
    assert not np.array_equal(out[7], pred[7]) and not np.array_equal(out[9], pred[9])  # blending is on


def test_stabiliser_is_deterministic_in_any_batch_size():
    la, aa = shot(1, 9)
    lb, ab_ = shot(2, 5)
    tiles = np.concatenate([la, lb])
    pred = jitter(to_model(np.concatenate([aa, ab_])))
    whole = temporal.Stabiliser(0.8)(tiles, pred)
    for size in (1, 7):
        st = temporal.Stabiliser(0.8)
        parts = [st(tiles[i:i + size], pred[i:i + size]) for i in range(0, len(tiles), size)]
        assert np.array_equal(np.concatenate(parts), whole)


def test_stability_zero_is_the_prediction_and_still_counts_cuts():
    la, aa = shot(1, 6)
    lb, ab_ = shot(2, 6)
    pred = jitter(to_model(np.concatenate([aa, ab_])))
    st = temporal.Stabiliser(0.0)
    assert np.array_equal(st(np.concatenate([la, lb]), pred), pred) and st.cuts == 1
    with pytest.raises(ValueError):
        temporal.Stabiliser(1.0)


def test_visibility_leaves_out_inconsistent_flow_and_pixels_from_outside():
    h, w = 40, 60
    fwd = np.zeros((h, w, 2), np.float32)
    fwd[..., 0] = 5                      # every pixel of t lies 5 px further right in t-1
    bwd = -fwd.copy()
    bwd[10:20, 20:30] = (0, 8)           # an occluder: t-1's flow there disagrees
    coords, visible = temporal.visibility(fwd, bwd)
    assert coords[0, 0].tolist() == [5, 0]
    assert visible[:, w - 5:].sum() == 0          # lands outside the previous frame
    assert visible[12:18, 17:23].sum() == 0       # lands on the inconsistent patch
    assert visible[30:, :w - 6].min() == 1 and visible[:8, :w - 6].min() == 1


def test_a_still_camera_starting_a_fast_pan_is_no_cut_where_the_flow_explains_it():
    a = scene(1)
    frames = [crop(a, 0, 0)] * 6 + [crop(a, 12 * i, 3 * i) for i in range(1, 9)]
    assert cuts_in(frames) == [6]  # the luma score alone takes the pan's start for a cut
    ab = np.full((len(frames), 2, 56, 56), 128, np.uint8)
    for strength in (0.8, 0.0):  # the same decision with the blending off
        st = temporal.Stabiliser(strength)
        st(np.stack(frames), ab)
        assert st.cuts == 0
    metric = temporal.WarpError(size=(224, 224))
    for f in frames:
        metric.add(f, ab[0].transpose(1, 2, 0))
    assert metric.cuts == 0 and len(metric.errors) == len(frames) - 1
