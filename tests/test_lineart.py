"""lineart.draw_page: ink on a picture's edges and its dark regions, paper elsewhere; the plain
style is fixed, the random one varies (screentone among it)."""
import numpy as np
import pytest

from colourbatch import lineart


def picture(h=160, w=200) -> np.ndarray:
    """White paper with a red disc, a dark-blue square and a green bar as light as the paper's
    neighbour (an edge only colour shows)."""
    rgb = np.full((h, w, 3), 255, np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    rgb[(yy - 50) ** 2 + (xx - 60) ** 2 < 30 ** 2] = (220, 40, 40)
    rgb[90:140, 20:70] = (20, 20, 90)  # dark: prints solid black
    rgb[90:140, 120:180] = (200, 120, 120)  # a light pink block...
    rgb[90:140, 150:180] = (120, 170, 120)  # ... beside a green about as light
    return rgb


def test_plain_style_inks_edges_and_dark_regions_and_leaves_paper():
    rgb = picture()
    page = lineart.draw_page(rgb)
    assert page.shape == rgb.shape[:2] and page.dtype == np.uint8
    assert page[5:30, 120:190].min() >= 235          # open paper stays paper
    assert page[50, 60] >= 235                        # inside the disc: flat colour, no line
    ring = page[50, 28:34]                            # the disc's left edge (x = 30)
    assert ring.min() <= 60                           # ... is inked
    assert np.median(page[100:130, 30:60]) <= 60      # the dark square prints black
    assert page[100:130, 148:153].min() <= 100        # the pink/green boundary gets a line
    assert np.array_equal(page, lineart.draw_page(rgb))  # fixed: evaluation's numbers never move


def test_line_width_follows_scale():
    rgb = picture()
    thin = (lineart.draw_page(rgb) < 128).mean()
    wide = (lineart.draw_page(rgb, scale=2.5) < 128).mean()
    assert wide > 1.3 * thin


def test_random_styles_vary_and_some_carry_screentone():
    rgb = picture(240, 240)
    rgb[:, :] = (255, 255, 255)
    rgb[40:200, 40:200] = (90, 150, 210)  # a mid-tone block: where tone goes
    pages = [lineart.draw_page(rgb, np.random.default_rng(i)) for i in range(12)]
    assert len({p.tobytes() for p in pages}) == 12
    inside = [p[80:160, 80:160] for p in pages]
    # Halftone: a regular mix of ink and paper inside the flat block.
    toned = [p for p in inside if (p < 100).mean() > 0.1 and (p > 200).mean() > 0.1]
    plain = [p for p in inside if (p > 200).mean() > 0.95]
    assert toned and plain
    assert all(p[:30, :30].min() >= 170 for p in pages)  # paper stays light in every style
    again = lineart.draw_page(rgb, np.random.default_rng(3))
    assert np.array_equal(again, pages[3])  # a seeded style is reproducible


def test_refuses_what_is_not_rgb8():
    with pytest.raises(ValueError, match="uint8 RGB"):
        lineart.draw_page(np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="scale"):
        lineart.draw_page(picture(), scale=0)

