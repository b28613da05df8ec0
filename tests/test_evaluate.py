"""Metrics against hand-computed values, evaluate_model, evaluate_set, pair folders, the sheet."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from colourbatch import checkpoint, colour
from colourbatch.checkpoint import CheckpointError
from colourbatch.data import DataError, make_loader, split_dataset
from colourbatch.errors import WriteError
from colourbatch.evaluate import (EvalConfig, EvalError, Metrics, colourfulness, contact_sheet,
                                  evaluate_model, evaluate_set, psnr, ssim, write_png)
from colourbatch.model import build_model


def _lab(l, a, b, shape=(8, 8)):
    """uint8 OpenCV LAB with L8 = l and a, b in LAB units (arrays or scalars)."""
    out = np.empty(shape + (3,), np.uint8)
    out[..., 0] = l
    out[..., 1] = np.asarray(a) + 128
    out[..., 2] = np.asarray(b) + 128
    return out


def _truth():
    """8x8: rows 0-5 a = +10, rows 6-7 a = +50 (b = 0), L varying."""
    a = np.full((8, 8), 10)
    a[6:] = 50
    return _lab(np.arange(64).reshape(8, 8) + 60, a, 0)


# ------------------------------------------------------ hand-computed values
def test_perfect_prediction():
    m = Metrics()
    m.update(_truth(), _truth())
    r = m.result()
    assert r["accuracy"] == 1.0 and r["auc"] == 100.0 and r["auc_rebal"] == 100.0
    assert r["psnr_rgb"] == 100.0 and r["psnr_ab"] == 100.0  # capped: no infinite mean
    assert r["ssim"] == pytest.approx(1.0) and r["l_error"] == 0.0
    assert r["colourfulness_ratio"] == pytest.approx(1.0) and r["images"] == 1


def test_grey_baseline_by_hand():
    truth = _truth()
    grey = _lab(truth[..., 0], 0, 0)
    m = Metrics()
    m.update(grey, truth)
    r = m.result()
    # Errors: 48 pixels of 10, 16 of 50. MSE over L, a, b: (0.75*100 + 0.25*2500) / 3.
    assert r["accuracy"] == pytest.approx(1 - (0.75 * 100 + 0.25 * 2500) / 3 / 7500)
    assert r["psnr_ab"] == pytest.approx(10 * math.log10(255 ** 2 / ((0.75 * 100 + 0.25 * 2500) / 2)))
    # Error 10 is within t for t = 10..150 (141 of 151 thresholds), error 50 for 101 of them.
    assert r["auc"] == pytest.approx(100 * (0.75 * 141 + 0.25 * 101) / 151)
    # Rebalanced: the two true-colour bins count equally, whatever their pixel counts.
    assert r["auc_rebal"] == pytest.approx(100 * (0.5 * 141 + 0.5 * 101) / 151)
    assert r["l_error"] == 0.0
    assert r["colourfulness"] == pytest.approx(colourfulness(colour.lab_to_rgb(grey)))
    assert r["colourfulness"] < 1.0 < r["colourfulness_true"]


def test_constant_a_offset_of_10():
    truth = _truth()
    pred = truth.copy()
    pred[..., 1] += 10
    m = Metrics()
    m.update(pred, truth)
    r = m.result()
    assert r["auc"] == pytest.approx(100 * 141 / 151)  # = 93.377...
    assert r["auc_rebal"] == pytest.approx(100 * 141 / 151)
    assert r["accuracy"] == pytest.approx(1 - (100 / 3) / 7500)
    assert r["psnr_ab"] == pytest.approx(10 * math.log10(255 ** 2 / 50))
    assert r["l_error"] == 0.0


def test_rebalancing_bins_are_centred_on_multiples_of_ten():
    # a = +4 and a = -1 are both in the bin centred on 0 (Zhang's and the model's bins),
    # so rebalancing must not split them: the rebalanced AuC equals the plain one.
    a = np.full((8, 8), 4)
    a[6:] = -1
    truth = _lab(100, a, 0)
    m = Metrics()
    m.update(_lab(100, 0, 0), truth)
    r = m.result()
    expected = 100 * (0.75 * 147 + 0.25 * 150) / 151
    assert r["auc"] == pytest.approx(expected)
    assert r["auc_rebal"] == pytest.approx(expected)


def test_metrics_average_over_pictures_and_share_auc_over_pixels():
    truth = _truth()
    m = Metrics()
    m.update(truth, truth)              # perfect
    off = truth.copy()
    off[..., 1] += 10
    m.update(off, truth)                # every pixel off by 10
    r = m.result()
    assert r["images"] == 2
    assert r["accuracy"] == pytest.approx((1 + 1 - (100 / 3) / 7500) / 2)
    assert r["auc"] == pytest.approx(100 * (1 + 141 / 151) / 2)


def test_colourfulness_by_hand():
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0] = (255, 0, 0)
    rgb[1] = (0, 0, 255)
    # rg = 255 | 0, yb = 127.5 | -255: sd 127.5 and 191.25, means 127.5 and -63.75.
    expected = math.hypot(127.5, 191.25) + 0.3 * math.hypot(127.5, 63.75)
    assert colourfulness(rgb) == pytest.approx(expected)  # about 272.6
    assert colourfulness(np.full((4, 4, 3), 77, np.uint8)) == 0.0


def test_psnr_and_ssim_by_hand():
    a = np.zeros((8, 8, 3), np.uint8)
    b = np.full((8, 8, 3), 10, np.uint8)
    assert psnr(a, b) == pytest.approx(10 * math.log10(255 ** 2 / 100))
    assert psnr(a, a) == math.inf
    x = np.random.default_rng(0).integers(0, 256, (16, 16, 3)).astype(np.uint8)
    assert ssim(x, x) == pytest.approx(1.0)
    assert ssim(x, 255 - x) < 0


def test_mismatched_sizes_are_refused():
    with pytest.raises(ValueError, match="differ in size"):
        Metrics().update(_lab(1, 0, 0, (4, 4)), _lab(1, 0, 0, (4, 5)))
    with pytest.raises(ValueError, match="no pictures"):
        Metrics().result()


# ------------------------------------------------------------ evaluate_model
def _constant_seed_model(a8: float, b8: float):
    model = build_model("seed")
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.net[-2].bias.copy_(torch.tensor([128.0, a8, b8]))
    return model


def test_a_model_predicting_grey_scores_exactly_as_the_grey_baseline(kaggle_dir):
    ds = split_dataset([kaggle_dir], "val", 0.2, 32)
    loader = make_loader(ds, 4, 0)
    seen = []
    res = evaluate_model(_constant_seed_model(128, 128), loader, torch.device("cpu"), torch.float32,
                         grey=True, on_batch=seen.append)
    assert res["model"]["images"] == res["grey"]["images"] == 6 and seen == [4, 6]
    for k in ("accuracy", "psnr_rgb", "psnr_ab", "ssim", "auc", "auc_rebal", "l_error"):
        assert res["model"][k] == pytest.approx(res["grey"][k]), k
    # The synthetic pictures are coloured: grey is far from perfect on them.
    assert res["grey"]["auc"] < 99 and res["grey"]["colourfulness_ratio"] < 0.05


def test_evaluate_model_stops_at_max_images_and_sees_colour(kaggle_dir):
    ds = split_dataset([kaggle_dir], "val", 0.2, 32)
    res = evaluate_model(_constant_seed_model(168, 88), make_loader(ds, 4, 0), torch.device("cpu"),
                         torch.float32, max_images=5)
    assert res["model"]["images"] == 5 and "grey" not in res
    assert res["model"]["colourfulness"] > 20  # a = +40, b = -40 is clearly coloured


# -------------------------------------------------------------- evaluate_set
def _weights(tmp_path, name, model="seed", val_fraction=None):
    meta = {"train_config": {"val_fraction": val_fraction}} if val_fraction else {}
    path = tmp_path / name
    torch.manual_seed(0)
    checkpoint.save(path, build_model(model), meta)
    return path


def test_evaluate_set_scores_grey_then_each_model(kaggle_dir, tmp_path):
    w1 = _weights(tmp_path / "a", "m.pt", val_fraction=0.1)
    w2 = _weights(tmp_path / "b", "m.pt")
    events = []
    res = evaluate_set(EvalConfig(data=(str(kaggle_dir),), weights=(str(w1), str(w2)), size=32,
                                  device="cpu", precision="fp32"), lambda k, i: events.append(k))
    # The split is the one w1 was trained with: 10 % of 30 = the last 3 pictures.
    assert res["val_fraction"] == 0.1 and res["images"] == 3
    assert [r["name"] for r in res["rows"]] == ["grey", "a/m", "b/m"]
    assert res["rows"][1]["model"] == "seed" and res["rows"][1]["weights"] == str(w1)
    assert all(r["images"] == 3 for r in res["rows"])
    assert res["rows"][1]["accuracy"] == pytest.approx(res["rows"][2]["accuracy"])  # same seed init
    assert events[0] == "start" and events.count("row") == 3


def test_evaluate_set_splits(kaggle_dir, image_folder, tmp_path):
    w = str(_weights(tmp_path, "s.pt"))

    def n(data, split):
        cfg = EvalConfig(data=(str(data),), weights=(w,), split=split, val_fraction=0.1, size=32,
                         device="cpu", precision="fp32", max_images=None)
        return evaluate_set(cfg)["images"]
    assert (n(kaggle_dir, "val"), n(kaggle_dir, "train"), n(kaggle_dir, "all")) == (3, 27, 30)
    skips = []
    val = split_dataset([image_folder], "val", 0.3, 32, on_skip=lambda p, why: skips.append(p))
    train = split_dataset([image_folder], "train", 0.3, 32)
    every = split_dataset([image_folder], "all", 0.3, 32)
    assert len(val) + len(train) == len(every) == 11  # the unreadable file is left out
    assert len(every[0]) == 2 and every[0][0].shape == (1, 32, 32)
    with pytest.raises(DataError, match="unknown split"):
        split_dataset([image_folder], "test", 0.1, 32)


def test_evaluate_uses_the_split_and_fraction_training_uses(image_folder, tmp_path):
    from colourbatch.data import VAL_FRACTION
    from colourbatch.train import TrainConfig

    assert TrainConfig().val_fraction == VAL_FRACTION  # one default for both commands
    w = _weights(tmp_path, "s.pt")  # no train_config: the shared default applies
    cfg = EvalConfig(data=(str(image_folder),), weights=(str(w),), size=32, device="cpu", precision="fp32")
    res = evaluate_set(cfg)
    trained_on = split_dataset([image_folder], "train", VAL_FRACTION, 32, crops=3, augment=True)
    held_out = split_dataset([image_folder], "val", VAL_FRACTION, 32)
    assert res["val_fraction"] == VAL_FRACTION and res["images"] == len(held_out) >= 1
    assert len(trained_on) == 3 * (11 - len(held_out))
    # Unaugmented, every picture is squeezed whole: no crop, no flip.
    from colourbatch import colour
    whole = colour.l_tile(held_out.items[0].lab, 32)
    assert torch.equal(held_out[0][0], torch.from_numpy(np.ascontiguousarray(whole[..., 0]))[None])
    assert torch.equal(held_out[0][1], torch.from_numpy(np.ascontiguousarray(whole[..., 1:])).permute(2, 0, 1))


def test_evaluate_without_shipped_weights_says_so(kaggle_dir, tmp_path, monkeypatch):
    from colourbatch.pipeline import PipelineError

    monkeypatch.setattr(checkpoint, "shipped_weights", lambda name="default": tmp_path / "gone.pt")
    with pytest.raises(PipelineError, match="no shipped weights at .*gone.pt; pass --weights FILE"):
        evaluate_set(EvalConfig(data=(str(kaggle_dir),)))


def test_evaluate_set_refuses_bad_input_before_work(kaggle_dir, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="not a readable weights file"):
        evaluate_set(EvalConfig(data=(str(kaggle_dir),), weights=(str(bad),)))
    with pytest.raises(EvalError, match="nothing to evaluate") as err:
        evaluate_set(EvalConfig(weights=(str(bad),)))
    assert err.value.exit_code == 2
    with pytest.raises(EvalError, match="is a folder; give the contact sheet a file name"):
        evaluate_set(EvalConfig(data=(str(kaggle_dir),), sheet=str(tmp_path)))
    with pytest.raises(EvalError, match="go together"):
        evaluate_set(EvalConfig(pred=str(tmp_path)))
    with pytest.raises(EvalError, match="unknown decode 'vivid'"):  # before the weights are read
        evaluate_set(EvalConfig(data=(str(kaggle_dir),), weights=(str(bad),), decode=("vivid",)))
    w = _weights(tmp_path, "s.pt")
    with pytest.raises(DataError, match="no such file or folder"):
        evaluate_set(EvalConfig(data=(str(tmp_path / "none"),), weights=(str(w),)))


def test_evaluate_set_writes_a_contact_sheet(kaggle_dir, tmp_path):
    w = _weights(tmp_path, "s.pt")
    sheet = tmp_path / "out" / "sheet.png"
    res = evaluate_set(EvalConfig(data=(str(kaggle_dir),), weights=(str(w),), split="all", size=32,
                                  device="cpu", precision="fp32", sheet=str(sheet), sheet_images=4,
                                  sheet_cell=48, max_images=6))
    img = cv2.imread(str(sheet))
    assert res["sheet"] == str(sheet) and res["images"] == 6
    # grey | s | truth, 4 rows: 28 px header, cells of 48 with 4 px gaps.
    assert img.shape == (28 + 4 * (48 + 4) + 4, 3 * 48 + 4 * 4, 3)
    # The truth column holds the first picture, in colour; the grey column has none.
    truth_cell = img[28:28 + 48, 4 + 2 * 52:4 + 2 * 52 + 48]
    grey_cell = img[28:28 + 48, 4:4 + 48].astype(int)
    assert np.ptp(grey_cell, axis=2).max() <= 2
    assert np.ptp(truth_cell.astype(int), axis=2).mean() > 20
    assert (img[:28] < 100).any()  # labels are drawn


# ------------------------------------------------------------- pair folders
def _png(path, rgb):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def _pictures(n=3):
    rng = np.random.default_rng(3)
    out = []
    for _ in range(n):
        v = cv2.resize(rng.uniform(0, 1, (3, 3)).astype(np.float32), (24, 20))
        out.append(np.stack([200 * v + 20, 120 * v + 40, 230 - 200 * v], -1).astype(np.uint8))
    return out


def test_pair_folders_identical_predictions_are_perfect(tmp_path):
    for i, rgb in enumerate(_pictures()):
        _png(tmp_path / "truth" / "d" / f"p{i}.png", rgb)
        _png(tmp_path / "pred" / "d" / f"p{i}.png", rgb)
    res = evaluate_set(EvalConfig(pred=str(tmp_path / "pred"), truth=str(tmp_path / "truth")))
    grey, pred = res["rows"]
    assert grey["name"] == "grey" and pred["name"] == "pred" and res["images"] == 3
    assert pred["accuracy"] == 1.0 and pred["auc"] == 100.0 and pred["l_error"] == 0.0
    assert grey["auc"] < 95 and grey["colourfulness_ratio"] < 0.05
    assert res["notes"] == []


def test_pair_folders_resize_match_by_stem_and_report_missing(tmp_path):
    pics = _pictures(4)
    for i, rgb in enumerate(pics):
        _png(tmp_path / "truth" / f"p{i}.png", rgb)
    _png(tmp_path / "pred" / "p0.png", pics[0])
    _png(tmp_path / "pred" / "p1.png", cv2.resize(pics[1], (48, 40)))   # twice the size
    cv2.imwrite(str(tmp_path / "pred" / "p2.jpg"), cv2.cvtColor(pics[2], cv2.COLOR_RGB2BGR),
                [cv2.IMWRITE_JPEG_QUALITY, 100])                          # another format
    notes = []
    res = evaluate_set(EvalConfig(pred=str(tmp_path / "pred"), truth=str(tmp_path / "truth"),
                                  sheet=str(tmp_path / "s.png"), sheet_cell=32),
                       lambda k, i: notes.append(i["text"]) if k == "note" else None)
    assert res["images"] == 3 and res["missing"] == 1 and res["resized"] == 1
    assert any("resized" in n and "p1.png" in n for n in notes)
    assert any("no prediction" in n and "p3.png" in n for n in notes)
    assert 0.97 < res["rows"][1]["accuracy"] < 1.0  # resampling and JPEG cost a little
    assert cv2.imread(str(tmp_path / "s.png")).shape == (28 + 3 * 36 + 4, 3 * 32 + 16, 3)


def test_pair_folders_with_nothing_in_common_is_an_error(tmp_path):
    _png(tmp_path / "truth" / "a.png", _pictures(1)[0])
    _png(tmp_path / "pred" / "b.png", _pictures(1)[0])
    with pytest.raises(EvalError, match="no prediction matches"):
        evaluate_set(EvalConfig(pred=str(tmp_path / "pred"), truth=str(tmp_path / "truth")))
    with pytest.raises(EvalError, match="must be a folder"):
        evaluate_set(EvalConfig(pred=str(tmp_path / "nope"), truth=str(tmp_path / "truth")))


# ------------------------------------------------------------ sheet helpers
def test_contact_sheet_layout_and_atomic_png(tmp_path):
    red = np.zeros((16, 32, 3), np.uint8)
    red[...] = (255, 0, 0)
    sheet = contact_sheet(["a", "a very long label that cannot fit"], [[red, red]], cell=40)
    assert sheet.shape == (28 + 44 + 4, 2 * 40 + 12, 3)
    # A 32x16 picture fitted into a 40 cell: 40x20, centred vertically (rows 38..57).
    assert tuple(sheet[28 + 20, 4 + 20]) == (255, 0, 0)
    assert tuple(sheet[28 + 2, 4 + 20]) == (255, 255, 255)
    path = write_png(tmp_path / "s.png", sheet)
    back = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    assert np.array_equal(back, sheet)
    assert [p.name for p in tmp_path.iterdir()] == ["s.png"]  # no temporary left behind
    (tmp_path / "file").write_text("x")
    with pytest.raises(WriteError, match="cannot"):
        write_png(tmp_path / "file" / "s.png", sheet)


# ------------------------------------------------------------------- films
def _film(path, frames, tint=None, grey=False):
    """An FFV1 .mkv of a coloured texture panning 3 px a frame; `tint(i)` adds a per-frame a/b
    shift (a flickering colouriser); `grey` keeps L only."""
    import av
    import cv2

    from colourbatch import colour

    rng = np.random.default_rng(5)
    big = [cv2.GaussianBlur(rng.normal(0, 1, (120, 200)).astype(np.float32), (0, 0), s) for s in (6, 15, 15)]
    lab = np.dstack([cv2.normalize(big[0], None, 40, 220, cv2.NORM_MINMAX)]
                    + [cv2.normalize(b, None, 100, 156, cv2.NORM_MINMAX) for b in big[1:]])
    out = av.open(str(path), "w")
    vs = out.add_stream("ffv1", rate=25)
    vs.width, vs.height, vs.pix_fmt = 96, 64, "yuv444p"
    for i in range(frames):
        f = lab[i:i + 64, 3 * i:3 * i + 96].copy()
        if tint is not None:
            f[..., 1:] += tint(i)
        if grey:
            f[..., 1:] = 128
        rgb = colour.lab_to_rgb(np.clip(np.rint(f), 0, 255).astype(np.uint8))
        out.mux(vs.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
    out.mux(vs.encode())
    out.close()
    return path


def test_evaluate_video_scores_flicker_against_the_source(tmp_path):
    from colourbatch.evaluate import evaluate_video

    src = _film(tmp_path / "src.mkv", 12)
    same = evaluate_video(src, src)
    assert same.frames == 12 and same.pairs == 11 and same.cuts == 0
    assert same.warp_error == pytest.approx(same.source_warp_error) and same.warp_error < 1.0
    assert same.colourfulness_ratio == pytest.approx(1.0) and same.psnr_ab == float("inf")
    rng = np.random.default_rng(0)
    shifts = rng.uniform(-15, 15, (12, 2))
    flicker = evaluate_video(_film(tmp_path / "flicker.mkv", 12, tint=lambda i: shifts[i]), src)
    assert flicker.warp_error > 5 * same.warp_error and flicker.psnr_ab < 40
    grey = evaluate_video(src, _film(tmp_path / "grey.mkv", 12, grey=True), limit=6)
    assert grey.frames == 6 and grey.source_warp_error is None and grey.psnr_ab is None
    assert grey.warp_error == pytest.approx(same.warp_error, rel=0.2)


def test_evaluate_colours_a_colour_film_itself_and_scores_it(tmp_path, tinted_weights):
    from click.testing import CliRunner
    import json

    from colourbatch.cli import cli
    src = _film(tmp_path / "src.mkv", 12)
    out = CliRunner().invoke(cli, ["evaluate", "--video", str(src), "--weights", str(tinted_weights),
                                   "--max-frames", "8", "--json", "--quiet", "--precision", "fp32"])
    assert out.exit_code == 0, out.output
    res = json.loads(out.output)
    (row,) = res["rows"]
    assert res["mode"] == "video" and row["name"] == "tinted" and row["frames"] == 8
    # The source is in colour: its own warp error is the floor; the tinted model's constant
    # colour holds perfectly still but is not the source's colour.
    assert row["source_warp_error"] is not None and row["warp_error"] < row["source_warp_error"] + 0.5
    assert row["psnr_ab"] < 40
    assert not list(tmp_path.glob("*colour*")) and sorted(p.name for p in tmp_path.iterdir()) == ["src.mkv"]
    bad = CliRunner().invoke(cli, ["evaluate", "--source", str(src)])
    assert bad.exit_code == 2 and "--source needs --video" in bad.output


# ------------------------------------------------ held-out sources, decodings
@pytest.fixture
def sourced(tmp_path):
    """photos/beach (2 pictures) and photos/forest (3): two sources."""
    root = tmp_path / "photos"
    rng = np.random.default_rng(9)
    for name in ("beach/a.png", "beach/b.png", "forest/c.png", "forest/d.png", "forest/e.png"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / name), rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
    return root


def test_evaluate_per_held_out_source_and_pooled(sourced, tmp_path):
    w = _weights(tmp_path, "s.pt")
    res = evaluate_set(EvalConfig(data=(str(sourced),), weights=(str(w),), holdout=("beach", "forest"),
                                  per_source=True, size=32, device="cpu", precision="fp32"))
    assert res["holdout"] == ["beach", "forest"] and res["images"] == 5
    names = [r["name"] for r in res["rows"]]
    assert names == ["grey", "s", "grey @ beach", "s @ beach", "grey @ forest", "s @ forest"]
    by = {r["name"]: r for r in res["rows"]}
    assert by["s @ beach"]["images"] == 2 and by["s @ forest"]["images"] == 3
    assert by["s @ beach"]["source"] == "beach"
    # The pooled row is the pictures of both sources together.
    pooled = (2 * by["s @ beach"]["psnr_rgb"] + 3 * by["s @ forest"]["psnr_rgb"]) / 5
    assert by["s"]["psnr_rgb"] == pytest.approx(pooled)
    # One source held out: only it is scored.
    one = evaluate_set(EvalConfig(data=(str(sourced),), weights=(str(w),), holdout=("beach",),
                                  size=32, device="cpu", precision="fp32"))
    assert one["images"] == 2 and [r["name"] for r in one["rows"]] == ["grey", "s"]


def test_evaluate_holds_out_what_the_weights_held_out(sourced, tmp_path):
    path = tmp_path / "h.pt"
    checkpoint.save(path, build_model("seed"), {"train_config": {"holdout": ["forest"]}})
    res = evaluate_set(EvalConfig(data=(str(sourced),), weights=(str(path),), size=32,
                                  device="cpu", precision="fp32"))
    assert res["holdout"] == ["forest"] and res["images"] == 3


def test_evaluate_scores_each_decoding_from_one_model(sourced, tmp_path):
    seed, default = _weights(tmp_path, "seed.pt"), _weights(tmp_path, "default.pt", model="default")
    sheet = tmp_path / "sheet.png"
    res = evaluate_set(EvalConfig(data=(str(sourced),), weights=(str(default), str(seed)), split="all",
                                  decode=("annealed", "confident"), size=32, device="cpu",
                                  precision="fp32", sheet=str(sheet), sheet_images=2, sheet_cell=32))
    names = [r["name"] for r in res["rows"]]
    assert names == ["grey", "default[annealed]", "default[confident]", "seed"]  # the seed has one decoding
    by = {r["name"]: r for r in res["rows"]}
    # An untrained network is unsure everywhere (a near-uniform distribution): the annealed
    # mean tints every picture, confident decoding keeps them nearly grey.
    tint = by["default[annealed]"]["colourfulness"] - by["grey"]["colourfulness"]
    assert tint > 1
    assert by["default[confident]"]["colourfulness"] - by["grey"]["colourfulness"] < 0.2 * tint
    img = cv2.imread(str(sheet))
    assert img.shape[1] == 5 * 32 + 6 * 4  # grey | default x2 | seed | truth
    # Its pictures are spread over the set, so both sources show.
    assert res["sheet_pictures"] == ["photos/beach/a.png", "photos/forest/e.png"]


def test_evaluate_command_passes_sources_and_decodings(sourced, tmp_path):
    import json

    from click.testing import CliRunner

    from colourbatch.cli import cli

    w = _weights(tmp_path, "d.pt", model="default")
    out = CliRunner().invoke(cli, ["evaluate", "--data", str(sourced), "--weights", str(w), "--holdout", "beach",
                                   "--holdout", "forest", "--per-source", "--decode", "annealed",
                                   "--decode", "confident", "--size", "32", "--precision", "fp32",
                                   "--json", "-q"])
    assert out.exit_code == 0, out.output
    res = json.loads(out.stdout)
    assert res["holdout"] == ["beach", "forest"] and res["images"] == 5
    assert [r["name"] for r in res["rows"]][:3] == ["grey", "d[annealed]", "d[confident]"]
    assert {r.get("source") for r in res["rows"]} == {None, "beach", "forest"}
    bad = CliRunner().invoke(cli, ["evaluate", "--data", str(sourced), "--weights", str(w),
                                   "--holdout", "desert", "-q"])
    assert bad.exit_code == 2 and "held-out source(s) desert" in bad.output


def test_merged_accumulators_equal_one_over_all_pictures():
    rng = np.random.default_rng(3)
    pairs = [(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8), rng.integers(0, 256, (12, 10, 3), dtype=np.uint8))
             for _ in range(5)]
    whole, a, b = Metrics(), Metrics(), Metrics()
    for k, (p, t) in enumerate(pairs):
        whole.update(p, t)
        (a if k < 2 else b).update(p, t)
    assert a.merge(b).result() == pytest.approx(whole.result())


# ------------------------------------------------------------------ drawn pages
def _flat_art(path, seed):
    """A colour drawing: flat fills with dark outlines on white."""
    rng = np.random.default_rng(seed)
    img = np.full((160, 200, 3), 255, np.uint8)
    for _ in range(3):
        c = tuple(int(v) for v in rng.integers(30, 220, 3))
        centre = (int(rng.integers(50, 150)), int(rng.integers(50, 110)))
        cv2.circle(img, centre, int(rng.integers(20, 40)), c, -1)
        cv2.circle(img, centre, int(rng.integers(20, 40)), (10, 10, 10), 2)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)


def test_evaluate_drawn_scores_the_page_model_against_the_uncoloured_page(tmp_path, tinted_page_weights):
    from click.testing import CliRunner
    import json

    from colourbatch.cli import cli
    for i in range(3):
        _flat_art(tmp_path / "art" / "shapes" / f"{i}.png", i)
    _flat_art(tmp_path / "art" / "more" / "x.png", 9)
    # Named as the shipped file is: its row must not be mixed up with the uncoloured page's.
    weights = tmp_path / "page.pt"
    weights.write_bytes(tinted_page_weights.read_bytes())
    out = CliRunner().invoke(cli, ["evaluate", "--drawn", "--data", str(tmp_path / "art"),
                                   "--weights", str(weights), "--per-source", "--json",
                                   "--sheet", str(tmp_path / "sheet.png"), "--quiet"])
    assert out.exit_code == 0, out.output
    res = json.loads(out.output)
    rows = {r["name"]: r for r in res["rows"]}
    assert res["mode"] == "drawn" and res["images"] == 4
    page, tinted = rows["uncoloured"], rows["page"]
    assert page["images"] == tinted["images"] == 4
    # The uncoloured page has no colour; the tinted model colours the paper everywhere.
    assert page["coloured"] == 0 and page["colourfulness_ratio"] < 0.05
    # The page is drawn (ink on paper: the fills are gone), not the picture's own lightness.
    assert page["l_error"] > 10
    assert tinted["coloured"] > 0.9
    # Ink is kept by both; the truth's white is white on the page, violet under the tint.
    assert page["ink_kept"] == 1.0 and tinted["ink_kept"] == 1.0
    assert page["white_kept"] == 1.0 and tinted["white_kept"] < 0.1
    assert {r["source"] for r in res["rows"] if "source" in r} == {"shapes", "more"}
    assert cv2.imread(str(tmp_path / "sheet.png")) is not None
    # Without --drawn the page model would be given photos' L: refused, in one line.
    out = CliRunner().invoke(cli, ["evaluate", "--data", str(tmp_path / "art"), "--weights", str(weights)])
    assert out.exit_code == 2 and "score it with --drawn" in out.output and "Traceback" not in out.output
    bad = CliRunner().invoke(cli, ["evaluate", "--drawn", "--data", str(tmp_path / "nowhere")])
    assert bad.exit_code == 2 and "no such folder" in bad.output
