"""Data sets: the Kaggle layout (both ab layouts, bad folders), image folders, the split, the sampler."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from colourbatch.data import (DataError, ImageFolderDataset, KaggleDataset, ResumableSampler,
                              split_dataset)


# ------------------------------------------------------------------ Kaggle
def test_kaggle_both_layouts_read_the_same_pairs(make_kaggle):
    nested = make_kaggle("nested", nested=True)
    flat = make_kaggle("flat", nested=False)
    a = KaggleDataset(nested, "train", 0.1, augment=False, size=32)
    b = KaggleDataset(flat, "train", 0.1, augment=False, size=32)
    assert len(a) == len(b) == 27  # 30 pictures, the last 3 (10 %) held out
    assert isinstance(a.grey, np.memmap)  # memory-mapped, never loaded whole
    for i in (0, 11, 12, 23, 24, 26):  # both sides of each ab1/ab2/ab3 boundary
        la, aba = a[i]
        lb, abb = b[i]
        assert la.shape == (1, 32, 32) and aba.shape == (2, 32, 32)
        assert la.dtype == torch.uint8 and aba.dtype == torch.uint8
        assert torch.equal(la, lb) and torch.equal(aba, abb)
    # Item 12 is ab2.npy's first picture: L and a/b must come from the same picture.
    grey = np.load(nested / "l" / "gray_scale.npy")
    ab2 = np.load(nested / "ab" / "ab" / "ab2.npy")
    l12, ab12 = a[12]
    assert np.array_equal(l12[0].numpy(), grey[12])
    assert np.array_equal(ab12.permute(1, 2, 0).numpy(), ab2[0])


def test_kaggle_split_is_the_fixed_tail(kaggle_dir):
    train = KaggleDataset(kaggle_dir, "train", 0.1, augment=False, size=32)
    val = KaggleDataset(kaggle_dir, "val", 0.1, augment=False, size=32)
    assert list(val.indices) == [27, 28, 29]
    assert set(train.indices).isdisjoint(val.indices)
    assert len(train) + len(val) == 30


def test_kaggle_any_picture_size_is_squeezed_to_the_tile(make_kaggle):
    root = make_kaggle("big", counts=(3, 2, 1), size=48)
    ds = split_dataset([root], "train", 0.2, size=32, augment=True)
    l8, ab8 = ds[0]
    assert l8.shape == (1, 32, 32) and ab8.shape == (2, 32, 32)


def test_kaggle_augment_flip_is_seeded_per_epoch_and_index(kaggle_dir):
    ds = KaggleDataset(kaggle_dir, "train", 0.1, augment=True, size=32, seed=3)
    plain = KaggleDataset(kaggle_dir, "train", 0.1, augment=False, size=32)
    flips = []
    for i in range(len(ds)):
        l_aug, _ = ds[i]
        assert torch.equal(l_aug, ds[i][0])  # the same (seed, epoch, index) -> the same sample
        l_plain, _ = plain[i]
        flips.append(torch.equal(l_aug, l_plain.flip(-1)) and not torch.equal(l_aug, l_plain))
    assert 3 <= sum(flips) <= len(ds) - 3  # about half are mirrored


def _npy(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, arr)


@pytest.mark.parametrize("damage, message", [
    ("missing_ab3", "needs ab/ab/ab1.npy"),
    ("counts", "do not pair"),
    ("grey_dtype", "expected uint8 (N, H, W)"),
    ("grey_ndim", "expected uint8 (N, H, W)"),
    ("ab_channels", "should be uint8 (N, 32, 32, 2)"),
    ("ab_size", "should be uint8 (N, 32, 32, 2)"),
    ("ab_dtype", "should be uint8"),
    ("not_npy", "not a readable .npy array"),
    ("truncated", "not a readable .npy array"),
    ("no_grey", "lacks l/gray_scale.npy"),
])
def test_bad_kaggle_folders_are_refused_clearly(make_kaggle, damage, message):
    root = make_kaggle("bad")
    ab = root / "ab" / "ab"
    if damage == "missing_ab3":
        (ab / "ab3.npy").unlink()
    elif damage == "counts":
        _npy(ab / "ab3.npy", np.zeros((5, 32, 32, 2), np.uint8))
    elif damage == "grey_dtype":
        _npy(root / "l" / "gray_scale.npy", np.zeros((30, 32, 32), np.float32))
    elif damage == "grey_ndim":
        _npy(root / "l" / "gray_scale.npy", np.zeros((30, 32 * 32), np.uint8))
    elif damage == "ab_channels":
        _npy(ab / "ab1.npy", np.zeros((12, 32, 32, 3), np.uint8))
    elif damage == "ab_size":
        _npy(ab / "ab2.npy", np.zeros((12, 16, 16, 2), np.uint8))
    elif damage == "ab_dtype":
        _npy(ab / "ab1.npy", np.zeros((12, 32, 32, 2), np.int16))
    elif damage == "not_npy":
        (ab / "ab2.npy").write_bytes(b"garbage, not numpy")
    elif damage == "truncated":
        data = (ab / "ab1.npy").read_bytes()
        (ab / "ab1.npy").write_bytes(data[:len(data) // 2])
    elif damage == "no_grey":
        (root / "l" / "gray_scale.npy").unlink()
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        split_dataset([root], "train", 0.1, 32)


def test_kaggle_all_split_and_refusals_exit_2(kaggle_dir):
    every = split_dataset([kaggle_dir], "all", 0.1, 32)
    assert list(every.indices) == list(range(30))
    with pytest.raises(DataError, match="unknown split 'test'") as err:
        split_dataset([kaggle_dir], "test", 0.1, 32)
    assert err.value.exit_code == 2


def test_kaggle_folder_must_train_alone(kaggle_dir, image_folder):
    with pytest.raises(DataError, match="trains on its own"):
        split_dataset([kaggle_dir, image_folder], "train", 0.1, 32)


# ------------------------------------------------------------ image folders
def test_image_folder_reads_png_jpeg_rgba_and_counts_the_unreadable(image_folder):
    skips = []
    ds = ImageFolderDataset([image_folder], "train", val_fraction=0.0, size=32, crops=2,
                            on_skip=lambda p, why: skips.append((p, why)))
    keys = sorted(it.key for it in ds.items)
    assert len(ds.items) == 11 and len(ds) == 22  # 10 photos + the cut-out, 2 crops each
    assert "photos/sub/img1.png" in keys and "photos/img0.jpg" in keys and "photos/cutout.png" in keys
    assert len(ds.skipped) == 1 and ds.skipped[0][0].endswith("broken.png")
    assert len(skips) == 1 and "not a readable image" in skips[0][1]
    cut = next(it for it in ds.items if it.key == "photos/cutout.png").lab
    corners = {tuple(cut[y, x]) for y, x in ((0, 0), (0, 39), (39, 0), (39, 39))}
    assert len(corners) == 1  # transparency became one flat background colour
    assert cut[20, 20, 1] > 170  # the opaque red square stays red (a8 = 128 + a)
    l8, ab8 = ds[3]
    assert l8.shape == (1, 32, 32) and ab8.shape == (2, 32, 32)


def test_image_folder_split_is_stable_and_disjoint(image_folder):
    train = ImageFolderDataset([image_folder], "train", 0.3, size=32)
    val = ImageFolderDataset([image_folder], "val", 0.3, size=32)
    tk, vk = {i.key for i in train.items}, {i.key for i in val.items}
    assert tk.isdisjoint(vk) and len(tk | vk) == 11 and vk
    # A new file never moves an old one across the split.
    extra = image_folder / "zz_new.png"
    extra.write_bytes((image_folder / "img2.png").read_bytes())
    val2 = ImageFolderDataset([image_folder], "val", 0.3, size=32)
    assert {i.key for i in val2.items} - {"photos/zz_new.png"} == vk


def test_empty_or_missing_image_folder_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no readable images"):
        split_dataset([tmp_path / "empty"], "train", 0.1, 32)
    with pytest.raises(DataError, match="no such file or folder"):
        split_dataset([tmp_path / "nope"], "train", 0.1, 32)


def test_unusable_pixels_are_one_input_error_not_a_data_set_error():
    from colourbatch.data import ImageError, to_rgb8
    from colourbatch.errors import InputError

    for img in (np.zeros((4, 4), np.int32), np.zeros((4, 4, 5), np.uint8)):
        with pytest.raises(ImageError, match="unsupported") as err:
            to_rgb8(img)
        assert isinstance(err.value, InputError) and err.value.exit_code == 1
        assert isinstance(err.value, ValueError)  # as the data errors it replaced


def test_training_crops_are_reproducible(image_folder):
    a = ImageFolderDataset([image_folder], "train", 0.0, size=32, crops=2, seed=5)
    b = ImageFolderDataset([image_folder], "train", 0.0, size=32, crops=2, seed=5)
    assert torch.equal(a[7][1], b[7][1])
    a.epoch = 1
    assert not torch.equal(a[7][1], b[7][1])  # a new epoch draws new crops


def test_drawn_samples_are_the_picture_as_ink_on_paper_with_its_truth(tmp_path, kaggle_dir):
    import cv2

    from colourbatch import colour, lineart
    from colourbatch.data import DRAW_OVERSAMPLE, split_batch

    root = tmp_path / "drawn"
    root.mkdir()
    rgb = np.full((300, 300, 3), 255, np.uint8)
    cv2.circle(rgb, (150, 150), 80, (40, 90, 200), -1)  # a blue disc on paper
    cv2.imwrite(str(root / "disc.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    val = ImageFolderDataset([root], "all", size=64, drawn=True)
    x8, l8, ab8 = val[0]
    plain_l8, plain_ab8 = ImageFolderDataset([root], "all", size=64)[0]
    assert torch.equal(l8, plain_l8) and torch.equal(ab8, plain_ab8)  # the truth is the picture's
    assert x8.shape == (1, 64, 64) and x8.dtype == torch.uint8
    # Plain style, drawn at DRAW_OVERSAMPLE x the tile then squeezed: exactly that, every time.
    side = round(DRAW_OVERSAMPLE * 64)
    small = cv2.resize(colour.rgb_to_lab(rgb), (side, side), interpolation=cv2.INTER_AREA)
    want = colour.l_tile(lineart.draw_page(colour.lab_to_rgb(small)), 64)
    assert np.array_equal(x8[0].numpy(), want) and torch.equal(val[0][0], x8)
    assert x8[0, 32, 32] >= 235 and x8[0, 5, 5] >= 235      # inside the disc and outside: paper
    assert x8[0, 32, 32] > l8[0, 32, 32] + 100              # where the truth is a dark blue
    assert x8[0, 32, 12:16].min() < 160                     # the disc's edge is a line
    train = ImageFolderDataset([root], "train", val_fraction=0.0, size=64, crops=3, drawn=True)
    samples = [train[i] for i in range(3)]
    assert all(len(s) == 3 for s in samples)
    assert len({s[0].numpy().tobytes() for s in samples}) == 3  # random styles and crops
    assert torch.equal(train[1][0], samples[1][0])             # ... reproducible per index
    batch = [torch.stack(t) for t in zip(*samples)]
    assert split_batch(batch) is not None and split_batch(batch)[0] is batch[0]
    assert [t is u for t, u in zip(split_batch(batch[1:]), [batch[1], batch[1], batch[2]])] == [True] * 3
    # The Kaggle set can be drawn too: its pictures are LAB like a folder's.
    k = split_dataset([kaggle_dir], "train", 0.1, 32, augment=True, drawn=True)
    assert [t.shape[0] for t in k[0]] == [1, 1, 2]


# ----------------------------------------------------------------- sampler
def test_sampler_resumes_mid_epoch_with_the_same_order():
    full = list(ResumableSampler(27, seed=4, epoch=2))
    assert sorted(full) == list(range(27))
    assert list(ResumableSampler(27, seed=4, epoch=2, offset=16)) == full[16:]
    assert list(ResumableSampler(27, seed=4, epoch=3)) != full


def test_sampler_shards_ranks_evenly_and_disjointly():
    r0 = list(ResumableSampler(27, seed=1, rank=0, world=2))
    r1 = list(ResumableSampler(27, seed=1, rank=1, world=2))
    assert len(r0) == len(r1) == 14  # padded to 28 as DistributedSampler does
    assert set(r0) | set(r1) == set(range(27))
    assert list(ResumableSampler(27, seed=1, rank=1, world=2, offset=8)) == r1[4:]


# ------------------------------------------------------ held-out sources
@pytest.fixture
def two_sources(tmp_path):
    """photos/beach (3 pictures, one nested deeper) and photos/forest (4), plus a loose file."""
    import cv2

    root = tmp_path / "photos"
    rng = np.random.default_rng(5)
    names = ["beach/a.png", "beach/b.jpg", "beach/deep/c.png",
             "forest/a.png", "forest/d.png", "forest/e.png", "forest/f.jpg", "loose.png"]
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
    return root


def test_holdout_validates_on_whole_sources_never_trained_on(two_sources):
    train = split_dataset([two_sources], "train", holdout=("beach",), size=16)
    val = split_dataset([two_sources], "val", holdout=("beach",), size=16)
    every = split_dataset([two_sources], "all", holdout=("beach",), size=16)
    assert sorted(i.key for i in val.items) == ["photos/beach/a.png", "photos/beach/b.jpg",
                                                "photos/beach/deep/c.png"]
    assert {val.source(i) for i in range(len(val))} == {"beach"}
    # Training holds every other picture (no path-hash share taken from it), none of the beach.
    assert sorted(i.key for i in train.items) == ["photos/forest/a.png", "photos/forest/d.png",
                                                  "photos/forest/e.png", "photos/forest/f.jpg",
                                                  "photos/loose.png"]
    assert {train.source(i) for i in range(len(train))} == {"forest", "photos"}
    assert len(every.items) == 8
    # Without holdout the path-hash split is unchanged and mixes sources.
    hashed = split_dataset([two_sources], "val", 0.5, size=16)
    assert {i.key for i in hashed.items} != {i.key for i in val.items}


def test_holdout_of_a_whole_data_folder_and_refusals(two_sources, tmp_path, kaggle_dir):
    import shutil

    other = tmp_path / "cutouts"
    shutil.copytree(two_sources / "forest", other)
    val = split_dataset([two_sources, other], "val", holdout=("cutouts",), size=16)
    assert sorted(i.key for i in val.items) == ["cutouts/a.png", "cutouts/d.png", "cutouts/e.png",
                                                "cutouts/f.jpg"]
    with pytest.raises(DataError, match=r"held-out source\(s\) desert are not .*beach, forest") as err:
        split_dataset([two_sources], "val", holdout=("beach", "desert"), size=16)
    assert err.value.exit_code == 2
    with pytest.raises(DataError, match="no sources to hold out"):
        split_dataset([kaggle_dir], "val", holdout=("beach",), size=16)
