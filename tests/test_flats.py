"""flats.py: the page-style rule, the descreened tile, and flat colour laid under the ink."""
import cv2
import numpy as np
import pytest

from colourbatch import colour, flats


def drawn_page(h=900, w=700, seed=0, text="HELLO THERE"):
    """(truth RGB, page L8): flat-coloured ellipses outlined in ink, a balloon with lettering."""
    rng = np.random.default_rng(seed)
    truth = np.full((h, w, 3), 255, np.uint8)
    ink = np.zeros((h, w), np.uint8)
    for _ in range(6):
        c = tuple(int(v) for v in rng.integers(40, 230, 3))
        centre = (int(rng.integers(100, w - 100)), int(rng.integers(250, h - 100)))
        axes = (int(rng.integers(40, 110)), int(rng.integers(40, 110)))
        cv2.ellipse(truth, centre, axes, 0, 0, 360, c, -1)
        cv2.ellipse(ink, centre, axes, 0, 0, 360, 255, 4)
    cv2.ellipse(ink, (w // 2, 110), (220, 70), 0, 0, 360, 255, 4)
    cv2.putText(ink, text, (w // 2 - 170, 125), cv2.FONT_HERSHEY_SIMPLEX, 1.3, 255, 4)
    page = np.where(ink > 0, 20, 250).astype(np.uint8)
    truth[ink > 0] = 20
    return truth, page


def layer_of(rgb, side=56):
    """A colour layer as the page model gives it: the picture's LAB at the model's output size."""
    lab = colour.rgb_to_lab(rgb)
    return np.stack([cv2.resize(lab[..., c], (side, side), interpolation=cv2.INTER_AREA) for c in range(3)])


def psnr(a, b):
    return 10 * np.log10(255.0 ** 2 / np.mean((a.astype(float) - b.astype(float)) ** 2))


def test_style_rule_sorts_drawn_pages_from_photos():
    _, page = drawn_page()
    assert flats.page_style(page) == "drawn"
    rng = np.random.default_rng(1)
    photo = cv2.GaussianBlur(rng.integers(0, 256, (600, 800)).astype(np.uint8), (0, 0), 6)
    photo = cv2.normalize(photo, None, 0, 255, cv2.NORM_MINMAX)
    assert flats.page_style(photo) == "photo"
    # Screentone: a page of halftone dots is still ink on paper (sampled, not averaged).
    tone = page.copy()
    yy, xx = np.mgrid[:900, :700]
    dots = ((yy % 6 - 3) ** 2 + (xx % 6 - 3) ** 2) < 4
    tone[400:800][dots[400:800]] = 20
    assert flats.page_style(tone) == "drawn"


def test_flat_colour_puts_colour_on_paper_keeps_ink_and_balloons():
    truth, page = drawn_page()
    out = flats.flat_colour(page, layer_of(truth))
    assert out.shape == truth.shape and out.dtype == np.uint8
    # Colour reaches the paper: far closer to the truth than the uncoloured page.
    assert psnr(out, truth) > psnr(colour.grey_to_rgb(page), truth) + 10
    # Ink is kept exactly: the page's own grey (the sRGB grey of its L, not its L8 value).
    ink = page < flats.KEEP_L8
    assert np.array_equal(out[ink], colour.grey_to_rgb(colour.l8_to_grey(page))[ink])
    # The balloon stays paper-white (no chroma) even where the layer under it is blue sky.
    sky = truth.copy()
    sky[:250] = (90, 150, 230)
    out = flats.flat_colour(page, layer_of(sky))
    balloon = np.zeros(page.shape, np.uint8)
    cv2.ellipse(balloon, (350, 110), (214, 64), 0, 0, 360, 1, -1)
    inside = (balloon > 0) & (page > flats.PAPER_L8)
    lab = colour.rgb_to_lab(out).astype(int)
    assert np.abs(lab[..., 1:] - 128)[inside].max() <= 1
    # ... while the sky around it is blue.
    assert colour.rgb_to_lab(out)[20, 20, 2] < 128 - 15


def test_regions_are_flat_and_colour_stops_at_lines():
    truth, page = drawn_page()
    out = flats.flat_colour(page, layer_of(truth)).astype(int)
    # Inside one ellipse (a closed paper region) the colour is one flat value.
    n, labels = cv2.connectedComponents((page > flats.INK_L8).astype(np.uint8), connectivity=4)
    sizes = np.bincount(labels.ravel())
    region = int(np.argsort(sizes)[-3])  # a mid-sized closed region, not the background
    assert np.ptp(out[labels == region], axis=0).max() <= 2
    # The background a pixel outside the shapes shows stays near the paper's white.
    bg = labels == int(np.argmax(sizes))
    assert np.median(colour.rgb_to_lab(out.astype(np.uint8))[..., 0][bg]) > 240


def test_lettering_rule_needs_rows_of_marks():
    # Scattered filled spots in a closed region are a figure's markings, not a balloon.
    page = np.full((600, 600), 250, np.uint8)
    cv2.circle(page, (300, 300), 150, 20, 4)
    rng = np.random.default_rng(3)
    for _ in range(8):
        cv2.circle(page, (int(rng.integers(200, 400)), int(rng.integers(200, 400))), 6, 20, -1)
    red = np.zeros((600, 600, 3), np.uint8)
    red[:] = (200, 40, 40)
    out = flats.flat_colour(page, layer_of(red))
    inside = colour.rgb_to_lab(out)[250:350, 250:350]
    assert np.abs(inside[..., 1:].astype(int) - 128).max() > 20  # coloured, not whitened


def test_drawn_tile_descreens_screentone():
    yy, xx = np.mgrid[:1800, :1800]
    tone = np.where(((yy % 7 - 3) ** 2 + (xx % 7 - 3) ** 2) < 5, 20, 250).astype(np.uint8)
    plain = colour.l_tile(tone)
    tile = flats.drawn_tile(tone)
    assert tile.shape == (flats.TILE, flats.TILE)
    # A uniform screentone is a uniform grey to the model: moire stripes are gone.
    assert tile.std() < 0.5 * plain.std() and tile.std() < 3


def test_flat_colour_of_a_large_page_costs_less_than_twice_the_photo_merge():
    import time
    _, page = drawn_page()
    big = cv2.resize(page, (1654, 2339), interpolation=cv2.INTER_NEAREST)
    layer = layer_of(cv2.resize(drawn_page()[0], (1654, 2339)))

    # CPU time (other work on the machine stretches the wall clock, not this), alternating the
    # two so that both see the same machine, the best of 5 each.
    times: dict[str, list[float]] = {"drawn": [], "photo": []}
    for _ in range(5):
        for name, f in (("drawn", lambda: flats.flat_colour(big, layer)),
                        ("photo", lambda: colour.merge_l_ab(big, layer[1:]))):
            t = time.process_time()
            f()
            times[name].append(time.process_time() - t)
    drawn, photo = min(times["drawn"]), min(times["photo"])
    assert drawn < 2.5 * photo, (drawn, photo)


@pytest.mark.parametrize("shape", [(1, 1), (5, 300), (300, 5)])
def test_tiny_and_thin_pages(shape):
    page = np.full(shape, 250, np.uint8)
    out = flats.flat_colour(page, np.full((3, 56, 56), 128, np.uint8))
    assert out.shape == shape + (3,)


def test_a_large_closed_region_is_one_flat_colour_and_the_open_background_is_not():
    page = np.full((600, 600), 250, np.uint8)
    cv2.circle(page, (300, 300), 200, 20, 4)  # a third of the page, closed
    ramp = np.zeros((600, 600, 3), np.uint8)
    ramp[..., 0] = np.linspace(40, 220, 600)[None].astype(np.uint8)  # red grows left to right
    ramp[..., 2] = 90
    out = flats.flat_colour(page, layer_of(ramp)).astype(int)
    inside = np.zeros(page.shape, np.uint8)
    cv2.circle(inside, (300, 300), 190, 1, -1)
    assert np.ptp(out[inside > 0], axis=0).max() <= 2
    # The background around it follows the layer: darker red on the left than on the right.
    assert out[20, 20, 0] + 40 < out[20, 580, 0]


def test_light_pencil_lines_close_regions_too():
    page = np.full((600, 600), 250, np.uint8)
    cv2.circle(page, (300, 300), 120, 170, 3)  # a thin grey line, far lighter than ink
    ramp = np.zeros((600, 600, 3), np.uint8)
    ramp[..., 0] = np.linspace(40, 220, 600)[None].astype(np.uint8)
    ramp[..., 2] = 90
    out = flats.flat_colour(page, layer_of(ramp)).astype(int)
    inside = np.zeros(page.shape, np.uint8)
    cv2.circle(inside, (300, 300), 110, 1, -1)
    assert np.ptp(out[inside > 0], axis=0).max() <= 2
