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


def stabilise(tiles, ab, strength: float = 0.95, reach: int = 8, batch: int = 16, st=None):
    """The whole clip through one Stabiliser, fed in batches of `batch`: (a/b out, the stabiliser)."""
    st = st or temporal.Stabiliser(strength, reach)
    parts = [st.feed(tiles[i:i + batch], ab[i:i + batch]) for i in range(0, len(tiles), batch)]
    parts.append(st.finish())
    out = np.concatenate(parts)
    assert out.shape == ab.shape and out.dtype == np.uint8 and st.pending == 0
    return out, st


def test_stabiliser_lowers_the_warp_error_of_a_flickering_colouriser():
    l, ab = shot(1, 24, dx=4, dy=2)
    pred = jitter(to_model(ab))
    stable, _ = stabilise(l, pred)
    before, after = warp_error(l, pred), warp_error(l, stable)
    assert after < 0.3 * before
    # and it follows the true colour better than the per-frame prediction does, colour kept
    truth = to_model(ab).astype(np.float32)
    assert np.abs(stable - truth).mean() < 0.7 * np.abs(pred.astype(np.float32) - truth).mean()
    chroma = [np.hypot(*(a.astype(np.float32) - 128).transpose(1, 0, 2, 3)).mean() for a in (stable, pred)]
    assert chroma[0] > 0.9 * chroma[1]


def test_nothing_crosses_a_cut_either_way():
    la, aa = shot(1, 10)
    lb, ab_ = shot(2, 10)
    pred = jitter(to_model(np.concatenate([aa, ab_])))
    out, st = stabilise(np.concatenate([la, lb]), pred)
    assert st.cuts == 1
    alone_a, _ = stabilise(la, pred[:10])
    alone_b, _ = stabilise(lb, pred[10:])
    # each shot comes out exactly as when coloured on its own: no colour leaks back or forth
    assert np.array_equal(out[:10], alone_a) and np.array_equal(out[10:], alone_b)
    assert not np.array_equal(out[10], pred[10]) and not np.array_equal(out[9], pred[9])  # blending is on


def test_frames_become_final_reach_frames_later_or_at_a_cut():
    la, aa = shot(1, 12)
    lb, ab_ = shot(2, 6)
    tiles, pred = np.concatenate([la, lb]), jitter(to_model(np.concatenate([aa, ab_])))
    st = temporal.Stabiliser(0.9, reach=4)
    counts, held = [], []
    for i in range(len(tiles)):
        counts.append(len(st.feed(tiles[i:i + 1], pred[i:i + 1])))
        held.append(len(st.shot))
    # one out per frame in once 4 frames follow; the cut (frame 12) releases the first shot's last 4
    assert counts == [0] * 4 + [1] * 8 + [4] + [0] * 3 + [1] * 2
    assert max(held) <= 2 * 4 + 1 and st.pending == 4  # held: the reach behind and ahead, no more
    assert len(st.finish()) == 4 and st.pending == 0


def test_stabiliser_is_deterministic_in_any_batch_size():
    la, aa = shot(1, 15)
    lb, ab_ = shot(2, 7)
    tiles = np.concatenate([la, lb])
    pred = jitter(to_model(np.concatenate([aa, ab_])))
    whole, _ = stabilise(tiles, pred, batch=len(tiles))
    for size in (1, 5):
        assert np.array_equal(stabilise(tiles, pred, batch=size)[0], whole)


def linked(tiles, batch: int) -> list:
    """A Linker's Links of `tiles`, through the arrays a batch of `batch` travels in (as the
    decode worker hands them over)."""
    lk = temporal.Linker()
    links = [lk.add(t) for t in tiles]
    return [k for i in range(0, len(links), batch)
            for k in temporal.unpack_links(temporal.pack_links(links[i:i + batch]))]


def test_links_made_elsewhere_give_the_same_output_bit_for_bit():
    # The video path computes the flows in the decode worker; the stabiliser must not tell.
    la, aa = shot(1, 13, dx=5, dy=-2, start=40)
    lb, ab_ = shot(2, 9, dx=-3, dy=4, start=60)
    pan = scene(3)  # a still camera starting a pan: a cut candidate the Link's motion vetoes
    lc = np.stack([crop(pan, 0, 0)] * 4 + [crop(pan, 12 * i, 3 * i) for i in range(1, 7)])
    tiles = np.concatenate([la, lb, lc])
    pred = jitter(to_model(np.concatenate([aa, ab_, np.repeat(aa[:1], len(lc), axis=0)])))
    assert cuts_in(tiles) == [13, 22, 26]  # luma alone takes the pan's start for a cut too
    own, st = stabilise(tiles, pred, reach=6)
    assert st.cuts == 2
    for batch in (1, 5, 16):
        links = linked(tiles, batch)
        assert links[0] is None and all(k is not None for k in links[1:])
        st = temporal.Stabiliser(0.95, 6)
        with pytest.MonkeyPatch.context() as mp:  # given the Links, it computes no flow of its own
            mp.setattr(temporal, "flow", lambda *a: pytest.fail("the stabiliser computed a flow"))
            parts = [st.feed(tiles[i:i + batch], pred[i:i + batch], links[i:i + batch])
                     for i in range(0, len(tiles), batch)]
        assert np.array_equal(np.concatenate(parts + [st.finish()]), own) and st.cuts == 2


def test_links_of_another_length_are_refused_before_anything_changes():
    l, ab = shot(1, 6)
    pred = to_model(ab)
    st = temporal.Stabiliser(0.95, 2)
    with pytest.raises(ValueError):
        st.feed(l, pred, linked(l, 6)[:5])
    assert st.pending == 0 and st.prev_tile is None


def test_a_stabiliser_fed_wrong_links_goes_wrong():
    # The check above can fail: the Links are what moves the colour (one frame off: other output).
    l, ab = shot(1, 12, dx=6, dy=3)
    pred = jitter(to_model(ab))
    own, _ = stabilise(l, pred, reach=4, batch=12)
    links = linked(l, 12)
    st = temporal.Stabiliser(0.95, 4)
    shifted = [None, None] + links[1:-1]
    assert not np.array_equal(np.concatenate([st.feed(l, pred, shifted), st.finish()]), own)


def test_stability_zero_is_the_prediction_with_no_lag_and_still_counts_cuts():
    la, aa = shot(1, 6)
    lb, ab_ = shot(2, 6)
    pred = jitter(to_model(np.concatenate([aa, ab_])))
    st = temporal.Stabiliser(0.0, reach=8)
    assert np.array_equal(st.feed(np.concatenate([la, lb]), pred), pred) and st.cuts == 1
    # Reach 0 (--reach 0) has no neighbours to average, whatever the strength: the same.
    st = temporal.Stabiliser(0.9, reach=0)
    assert np.array_equal(st.feed(np.concatenate([la, lb]), pred), pred) and st.cuts == 1
    for bad in ((1.0, 8), (0.5, -1)):
        with pytest.raises(ValueError):
            temporal.Stabiliser(*bad)


def test_colour_that_really_changes_is_followed_without_lag():
    """A still shot whose true colour drifts 1.5 units a frame: the average, centred on each
    frame, stays on it (a causal one would trail by several frames' worth)."""
    l, ab = shot(1, 1, 0, 0)
    frames = 40
    truth = np.stack([to_model(ab)[0].astype(np.float32) + 1.5 * i - 30 for i in range(frames)])
    pred = jitter(np.clip(np.rint(truth), 0, 255).astype(np.uint8), amount=6)
    out, _ = stabilise(np.repeat(l, frames, axis=0), pred, reach=8)
    middle = slice(10, 30)  # full reach both sides
    bias = (out[middle].astype(np.float32) - truth[middle]).mean()
    assert abs(bias) < 1.0
    assert np.abs(out[middle] - truth[middle]).mean() < 0.6 * np.abs(pred[middle] - truth[middle]).mean()


def test_no_smear_where_a_moving_object_uncovers_the_background():
    """A textured square of another colour crosses a still textured background: the background
    it uncovers gets its own colour back at once, not a trail of the object's."""
    size, frames, side, step = 224, 16, 64, 8
    bg_l, bg_ab = crop(scene(1), 0, 0), crop(colour_field(1), 0, 0)
    obj_l = crop(scene(2), 0, 0, side)
    obj_ab = np.zeros((side, side, 2), np.uint8) + np.array([200, 60], np.uint8)  # far from the background
    tiles, abs_, cover = [], [], []
    for i in range(frames):
        x = 20 + step * i
        l, a = bg_l.copy(), bg_ab.copy()
        l[80:80 + side, x:x + side], a[80:80 + side, x:x + side] = obj_l, obj_ab
        mask = np.zeros((size, size), bool)
        mask[80:80 + side, x:x + side] = True
        tiles.append(l), abs_.append(a), cover.append(mask)
    tiles = np.stack(tiles)
    truth = to_model(np.stack(abs_)).astype(np.float32)
    pred = jitter(to_model(np.stack(abs_)), amount=4)
    out, _ = stabilise(tiles, pred)
    # background pixels (at the a/b size) the object covered within the last two frames or will
    # cover within the next two: where a smear (behind) or a pre-echo (ahead) would show
    near = np.zeros((frames, 56, 56), bool)
    for i in range(2, frames - 2):
        was = np.any([cover[j] for j in range(i - 2, i + 3) if j != i], axis=0) & ~cover[i]
        near[i] = cv2.resize(was.astype(np.float32), (56, 56), interpolation=cv2.INTER_AREA) > 0.99
    assert near.sum() > 100
    err_out = np.abs(out.transpose(0, 2, 3, 1)[near] - truth.transpose(0, 2, 3, 1)[near]).mean()
    err_pred = np.abs(pred.transpose(0, 2, 3, 1)[near] - truth.transpose(0, 2, 3, 1)[near]).mean()
    assert err_out < err_pred + 1.0


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
    for strength in (0.95, 0.0):  # the same decision with the blending off
        assert stabilise(np.stack(frames), ab, strength)[1].cuts == 0
    metric = temporal.WarpError(size=(224, 224))
    for f in frames:
        metric.add(f, ab[0].transpose(1, 2, 0))
    assert metric.cuts == 0 and len(metric.errors) == len(frames) - 1


def _carry_as_before(acc, pull, here):
    """temporal._carry as it was in numpy, before its OpenCV form."""
    coords, trust = pull
    moved = temporal.warp(acc, coords)
    mean = moved[..., :2] / np.maximum(moved[..., 2:], 1e-6)
    gap = np.abs(mean[..., 0] - here[..., 0]) + np.abs(mean[..., 1] - here[..., 1])
    trust = trust * np.exp(-(np.maximum(gap - temporal.GATE_FREE, 0) / temporal.GATE_SCALE) ** 2)
    return trust[..., None] * moved


@pytest.mark.parametrize("side", [1, 7, 56])
def test_carry_computes_what_its_numpy_form_did(side):
    rng = np.random.default_rng(side)
    here = np.dstack([rng.uniform(60, 200, (side, side, 2)), np.ones((side, side))]).astype(np.float32)
    weight = rng.uniform(0, 6, (side, side, 1)).astype(np.float32)
    weight[0, 0] = 0  # nothing carried there yet
    # Colour a neighbour carries: near the frame's own, around the gate's edge, and far off.
    off = rng.choice([0.0, 19.5, 20.0, 20.5, 45.0], (side, side, 2)) * rng.choice([-1, 1], (side, side, 2))
    acc = np.concatenate([(here[..., :2] + off) * weight, weight], axis=2).astype(np.float32)
    coords = (temporal._grid(side, side) + rng.normal(0, 0.7, (side, side, 2))).astype(np.float32)
    trust = rng.uniform(0, 1, (side, side)).astype(np.float32)
    trust_before = trust.copy()
    got = temporal._carry(acc, (coords, trust), here)
    np.testing.assert_array_equal(got, _carry_as_before(acc, (coords, trust), here))
    np.testing.assert_array_equal(trust, trust_before)  # a pull's trust serves every frame it reaches
