"""colour.py: the LAB encoding the Kaggle set uses, merging a/b with L, and luma/chroma planes."""
import cv2
import numpy as np
import pytest
import torch

from colourbatch import colour


def test_lab_encoding_matches_opencv_8bit_convention():
    rgb = np.array([[[255, 255, 255], [0, 0, 0], [128, 128, 128], [255, 0, 0]]], np.uint8)
    lab = colour.rgb_to_lab(rgb)
    assert lab[0, 0].tolist() == [255, 128, 128]          # white: L=100 -> 255, a=b=0 -> 128
    assert lab[0, 1].tolist() == [0, 128, 128]
    assert abs(int(lab[0, 2, 0]) - round(53.6 * 255 / 100)) <= 1  # mid-grey L* ~ 53.6
    assert lab[0, 3, 1] > 128 + 60 and lab[0, 3, 2] > 128 + 50   # red: a, b strongly positive
    back = colour.lab_to_rgb(lab)
    assert np.abs(back.astype(int) - rgb).max() <= 2
    assert colour.L8_MAX == 255 and colour.AB_OFFSET == 128


def test_merge_keeps_full_resolution_l():
    rng = np.random.default_rng(0)
    l8 = rng.integers(20, 235, (123, 77)).astype(np.uint8)
    ab = np.full((2, 56, 56), 128, np.uint8)
    ab[0] += 12
    ab[1] -= 9
    rgb = colour.merge_l_ab(l8, ab)
    assert rgb.shape == (123, 77, 3)
    assert np.abs(colour.rgb_to_l(rgb).astype(int) - l8).mean() < 0.6
    lab = colour.rgb_to_lab(rgb)
    assert abs(lab[..., 1].mean() - 140) < 3 and abs(lab[..., 2].mean() - 119) < 3


def test_out_of_gamut_colour_does_not_change_lightness():
    # A strong tint on white paper cannot be shown in sRGB; L must stay the paper's.
    l8 = np.full((32, 32), 250, np.uint8)
    l8[8:24, 8:24] = 10
    ab = np.stack([np.full((8, 8), 200, np.uint8), np.full((8, 8), 40, np.uint8)])
    rgb = colour.merge_l_ab(l8, ab)
    err = np.abs(colour.rgb_to_l(rgb).astype(int) - l8)
    assert err.max() <= 1
    plain = colour.lab_to_rgb(cv2.merge([l8, cv2.resize(ab[0], (32, 32)), cv2.resize(ab[1], (32, 32))]))
    assert np.abs(colour.rgb_to_l(plain).astype(int) - l8).max() > 5  # what clipping alone does


def test_tile_squeezes_any_aspect():
    l8 = np.zeros((1000, 300), np.uint8)
    l8[:500] = 200
    tile = colour.l_tile(l8)
    assert tile.shape == (224, 224)
    assert tile[:100].mean() > 190 and tile[130:].mean() < 10
    assert colour.l_tile(np.full((5, 9), 7, np.uint8)).shape == (224, 224)


def test_the_one_squeeze_takes_lab_images_plane_by_plane():
    rng = np.random.default_rng(4)
    for shape in ((90, 40), (20, 30), (224, 224)):
        lab = rng.integers(0, 256, shape + (3,)).astype(np.uint8)
        tile = colour.l_tile(lab)
        assert tile.shape == (224, 224, 3)
        for c in range(3):
            assert np.array_equal(tile[..., c], colour.l_tile(lab[..., c]))


def test_model_scalings_round_trip():
    l8 = torch.tensor([[0, 51, 255]], dtype=torch.uint8)
    assert torch.allclose(colour.l8_to_unit(l8), torch.tensor([[0.0, 0.2, 1.0]]))
    ab8 = torch.tensor([0.0, 128.0, 255.0])
    assert colour.ab8_to_units(ab8).tolist() == [-128.0, 0.0, 127.0]
    back = colour.units_to_ab8(torch.tensor([-500.0, -128.0, 0.4, 0.6, 127.0, 900.0]))
    assert back.dtype == torch.uint8 and back.tolist() == [0, 0, 128, 129, 255, 255]


def test_greyscale_detection():
    grey = colour.grey_to_rgb(np.random.default_rng(1).integers(0, 255, (64, 64)).astype(np.uint8))
    assert colour.is_greyscale(grey)
    noisy = np.clip(grey.astype(int) + np.random.default_rng(2).integers(-2, 3, grey.shape), 0, 255)
    assert colour.is_greyscale(noisy.astype(np.uint8))  # scan / JPEG noise is not colour
    red = grey.copy()
    red[:10, :10] = (200, 30, 30)
    assert not colour.is_greyscale(red)


def test_gamut_bins():
    bins = colour.ab_gamut_bins(10)
    assert bins.shape == (255, 2)
    assert (bins % 10 == 0).all()
    assert [0, 0] in bins.tolist()
    # The model's output channels are these bins in this order (the shipped weights depend on
    # it): sorted by a, then b, each once.
    order = np.lexsort((bins[:, 1], bins[:, 0]))
    assert (order == np.arange(len(bins))).all()
    assert len({tuple(b) for b in bins.tolist()}) == len(bins)
    assert bins[:2].tolist() == [[-80, 50], [-80, 60]] and bins[-2:].tolist() == [[100, -60], [100, -50]]
    # Every sRGB colour's bin is there.
    rgb = np.random.default_rng(0).integers(0, 256, (1, 4096, 3), dtype=np.uint8)
    ab = colour.rgb_to_lab(rgb)[0, :, 1:].astype(np.float32) - colour.AB_OFFSET
    assert {tuple(b) for b in (np.floor(ab / 10 + 0.5) * 10).tolist()} <= {tuple(b) for b in bins.tolist()}


def test_l8_to_grey_is_the_grey_of_that_lightness():
    grey = np.arange(256, dtype=np.uint8)[None]
    l8 = colour.rgb_to_l(colour.grey_to_rgb(grey))
    # sRGB grey -> L8 -> grey comes back within rounding; L8 is not the grey level itself.
    assert np.abs(colour.l8_to_grey(l8).astype(int) - grey).max() <= 1
    assert colour.l8_to_grey(np.array([[128]], np.uint8))[0, 0] < 122


# ------------------------------------------------------------- Y'CbCr planes
_AV_MATRIX = {"bt601": 5, "bt709": 1, "bt2020": 9}  # FFmpeg's AVColorSpace codes


def _decode(y, cb, cr, matrix, full_range):
    """R'G'B' as FFmpeg's scaler (PyAV) shows planes tagged `matrix`/range: an independent decoder."""
    import av

    f = av.VideoFrame(y.shape[1], y.shape[0], "yuv444p")
    for plane, data in zip(f.planes, (y, cb, cr)):
        np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)[:, :plane.width] = data
    f.colorspace, f.color_range = _AV_MATRIX[matrix], 2 if full_range else 1
    return f.to_ndarray(format="rgb24")


@pytest.mark.parametrize("full_range", [False, True])
def test_luma_reads_as_the_grey_it_shows_and_gives_the_rgb_paths_tile(full_range):
    y = np.tile(np.arange(256, dtype=np.uint8), (4, 1))
    neutral = np.full_like(y, 128)
    shown = _decode(y, neutral, neutral, "bt601", full_range)
    assert np.abs(colour.yuv_to_l(y, full_range).astype(int) - colour.rgb_to_l(shown)).max() <= 1
    # a grey film's tile: from its luma as from the RGB the decoder made of it
    rng = np.random.default_rng(3)
    y = cv2.GaussianBlur(rng.integers(0, 256, (180, 320)).astype(np.uint8), (0, 0), 3)
    shown = _decode(y, np.full_like(y, 128), np.full_like(y, 128), "bt709", full_range)
    tile_yuv = colour.l_tile(colour.yuv_to_l(y, full_range)).astype(int)
    tile_rgb = colour.l_tile(colour.rgb_to_l(shown)).astype(int)
    assert np.abs(tile_yuv - tile_rgb).max() <= 1


@pytest.mark.parametrize("matrix", ["bt601", "bt709", "bt2020"])
@pytest.mark.parametrize("full_range", [False, True])
def test_chroma_carries_the_predicted_colour_beside_the_source_luma(matrix, full_range):
    rng = np.random.default_rng(0)
    y = rng.integers(60, 190, (48, 64)).astype(np.uint8)
    ab = np.stack([np.full((7, 7), 128 + 20, np.uint8), np.full((7, 7), 128 - 25, np.uint8)])
    cb, cr = colour.lab_to_chroma(y, ab, matrix, full_range)
    assert cb.shape == cr.shape == (48, 64) and cb.dtype == np.uint8
    lab = colour.rgb_to_lab(_decode(y, cb, cr, matrix, full_range)).astype(float)
    assert abs(lab[..., 1].mean() - 148) < 1 and abs(lab[..., 2].mean() - 103) < 1
    # the wrong matrix shows another colour: the matrix matters, and is honoured
    other = "bt601" if matrix != "bt601" else "bt709"
    lab = colour.rgb_to_lab(_decode(y, cb, cr, other, full_range)).astype(float)
    assert abs(lab[..., 1].mean() - 148) + abs(lab[..., 2].mean() - 103) > 2


def test_chroma_is_computed_at_the_size_asked_from_averaged_luma():
    y = np.zeros((48, 64), np.uint8)
    y[:, 32:] = 200
    ab = np.full((2, 7, 7), 128, np.uint8)
    ab[0] += 30
    cb, cr = colour.lab_to_chroma(y, ab, "bt709", False, size=(32, 24))
    assert cb.shape == cr.shape == (24, 32)
    assert int(cr[:, 20:].mean()) > 128 + 5  # red-ish a on the bright half


@pytest.mark.parametrize("level,a,b", [(250, 200, 40), (12, 200, 200)])
def test_chroma_that_would_leave_the_gamut_is_shrunk_so_the_luma_holds(level, a, b):
    # A saturated purple on near-white (a red on near-black) luma: luma + chroma would clip a
    # channel, which shifts the lightness the source's luma fixes.
    y = np.full((16, 16), level, np.uint8)
    ab = np.stack([np.full((4, 4), a, np.uint8), np.full((4, 4), b, np.uint8)])
    cb, cr = colour.lab_to_chroma(y, ab, "bt709", True)
    rgb = _decode(y, cb, cr, "bt709", True).astype(float)
    shown = rgb @ np.array([0.2126, 0.7152, 0.0722])
    assert np.abs(shown - level).max() <= 2
    assert np.abs(cr.astype(int) - 128).max() > 0  # some colour is left where there is room


@pytest.mark.parametrize("matrix,full_range", [("bt709", False), ("bt601", True)])
def test_chroma_table_gives_the_conversion_pixel_by_pixel_and_fills_only_the_pairs_met(matrix, full_range):
    rng = np.random.default_rng(3)
    table = colour.ChromaTable(matrix, full_range)
    pairs = set()
    # The model's usual a/b, then any (extremes leave the gamut), then planes of odd layouts.
    for lo, hi, shape in ((100, 160, (60, 90)), (0, 256, (60, 90)), (0, 256, (1, 1)), (90, 170, (7, 1))):
        y = rng.integers(0, 256, shape).astype(np.uint8)
        a, b = (rng.integers(lo, hi, shape).astype(np.uint8) for _ in range(2))
        want = colour._chroma_of(y, a, b, matrix, full_range)
        assert all(np.array_equal(g, w) for g, w in zip(table.look(y, a, b), want))
        pairs |= set((a.astype(int) << 8 | b).ravel().tolist())
    assert table.known.sum() == len(pairs)  # the rows of the pairs met, no others
    # Views that are not contiguous (a plane's every other column) are read as they are.
    y, a, b = (rng.integers(0, 256, (20, 40)).astype(np.uint8)[:, ::2] for _ in range(3))
    want = colour._chroma_of(*(np.ascontiguousarray(p) for p in (y, a, b)), matrix, full_range)
    assert all(np.array_equal(g, w) for g, w in zip(table.look(y, a, b), want))
    with pytest.raises(TypeError, match="uint8"):
        table.look(y.astype(np.uint16), a, b)  # 10-bit luma would spill into the a/b bits
    assert colour.chroma_table(matrix, full_range) is colour.chroma_table(matrix, full_range)


def _merge_as_before(l8, ab8):
    """merge_l_ab as it was before the page-speed work: each plane resized alone, the
    lightness guard on (row, col) fancy indexing, every candidate written back."""
    h, w = l8.shape
    planes = [l8] + [cv2.resize(np.ascontiguousarray(p), (w, h), interpolation=cv2.INTER_LINEAR) for p in ab8]
    lab = cv2.merge(planes)
    rgb = colour.lab_to_rgb(lab)
    inside = cv2.inRange(rgb, (1, 1, 1), (254, 254, 254))
    idx = np.nonzero(inside == 0)
    sub_lab, sub_rgb = lab[idx], rgb[idx]
    bad = np.abs(colour._l_of(sub_rgb) - sub_lab[:, 0].astype(np.int16)) > 1
    for s in (0.7, 0.45, 0.2, 0.0):
        rows = np.nonzero(bad)[0]
        fix = sub_lab[rows].astype(np.float32)
        fix[:, 1:] = 128 + (fix[:, 1:] - 128) * s
        fix = np.round(fix).astype(np.uint8)
        new = colour.lab_to_rgb(fix[None])[0]
        ok = (np.abs(colour._l_of(new) - fix[:, 0].astype(np.int16)) <= 1) | (s == 0.0)
        sub_rgb[rows[ok]] = new[ok]
        bad[rows[ok]] = False
    rgb[idx] = sub_rgb
    return rgb


def test_the_page_merge_gives_what_it_gave_before_on_a_page_with_paper_ink_and_strong_colour():
    rng = np.random.default_rng(5)
    h, w = 300, 410
    l8 = cv2.GaussianBlur(rng.integers(0, 256, (h, w)).astype(np.uint8), (0, 0), 3)
    l8 = cv2.normalize(l8, None, 0, 255, cv2.NORM_MINMAX)
    l8[:40] = 255  # paper margin: white with a tint predicted on it
    l8[-30:, :50] = 0  # ink
    ab = rng.integers(60, 200, (2, 56, 56)).astype(np.uint8)  # strong colours: many leave the gamut
    got = colour.merge_l_ab(l8, ab)
    want = _merge_as_before(l8, ab)
    inside = cv2.inRange(want, (1, 1, 1), (254, 254, 254))
    assert (inside == 0).mean() > 0.1  # the lightness guard had work on this page
    assert np.array_equal(got, want)


def test_a_grey_picture_reads_its_lightness_from_the_table_and_a_colour_one_as_before():
    rng = np.random.default_rng(6)
    grey = colour.grey_to_rgb(rng.integers(0, 256, (64, 80)).astype(np.uint8))
    assert np.array_equal(colour.rgb_to_l(grey), colour.rgb_to_lab(grey)[..., 0])
    tinted = grey.copy()
    tinted[10, 20, 2] ^= 7  # one channel of one pixel off grey: the full conversion
    assert np.array_equal(colour.rgb_to_l(tinted), colour.rgb_to_lab(tinted)[..., 0])
    every_level = colour.grey_to_rgb(np.arange(256, dtype=np.uint8)[None])
    assert np.array_equal(colour.rgb_to_l(every_level), colour.rgb_to_lab(every_level)[..., 0])
