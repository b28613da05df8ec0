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
