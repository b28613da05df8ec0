"""The shipped weights: they load, match their recorded hashes and metadata, and
colour a real (held-out) photo measurably better than leaving it grey.

A regression test, not a timing: if retrained weights get worse than grey on
this photo, or lose their colour, this fails.
"""
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from colourbatch import checkpoint, colour
from colourbatch.evaluate import colourfulness, psnr
from colourbatch.pipeline import Colouriser, PipelineError, RunConfig, load_weights, open_device

WEIGHTS = checkpoint.shipped_weights().parent
PHOTO = Path(__file__).parent / "fixtures" / "kangaroo.png"  # public domain, in the held-out split


def recorded_hashes() -> dict:
    lines = (WEIGHTS / "SHA256SUMS").read_text().splitlines()
    return {name.strip(): digest for digest, name in (line.split(None, 1) for line in lines if line.strip())}


def test_hashes_match_the_record():
    hashes = recorded_hashes()
    assert set(hashes) == {"default.pt", "seed.pt", "page.pt"}
    for name, digest in hashes.items():
        assert checkpoint.file_sha256(WEIGHTS / name) == digest, name


@pytest.mark.parametrize("name", ["default", "seed", "page"])
def test_weights_describe_their_training(name):
    model, meta = checkpoint.load(WEIGHTS / f"{name}.pt")
    assert checkpoint.model_config(model)[0] == name
    assert meta["steps"] > 1000 and meta["images_seen"] >= meta["steps"] * 16
    assert len(meta["data_manifest_sha256"]) == 64
    assert {"psnr_rgb", "auc", "colourfulness_ratio"} <= set(meta["val_metrics"])
    assert (WEIGHTS / f"{name}.pt").stat().st_size < 10_000_000  # small enough for the repo


def test_default_is_the_shipped_recipes_run_with_its_chosen_decoding():
    # Since 27 Nov 2026 the default is the 'all' run of the recipe measured on collections held
    # out whole (no class rebalancing, fp32 training), shipped by `recipe.py ship` with the
    # decoding chosen on those collections; the file it came from is recorded by hash.
    model, meta = checkpoint.load(WEIGHTS / "default.pt")
    assert meta["recipe"] == "python weights/recipe.py loso all unbalanced"
    recipe = meta["train_config"]
    assert recipe["rebalance"] == 1.0 and recipe["precision"] == "fp32"
    assert meta["steps"] == recipe["steps"] == 4000  # a finished run, not a checkpoint of one
    assert "held out whole" in meta["decode_chosen_on"]
    assert len(meta["shipped_from"]["sha256"]) == 64
    assert model.cfg.decode in ("annealed", "confident") and 0 < model.cfg.temperature <= 1


def colour_photo(weights: Path) -> tuple[np.ndarray, np.ndarray]:
    truth = cv2.cvtColor(cv2.imread(str(PHOTO)), cv2.COLOR_BGR2RGB)
    l8 = colour.rgb_to_l(truth)
    engine = Colouriser(RunConfig(weights=str(weights), device="cpu", precision="fp32"))
    ab = engine.predict(torch.from_numpy(colour.l_tile(l8))[None])[0]
    return truth, colour.merge_l_ab(l8, ab)


def test_default_colours_a_real_photo_better_than_grey():
    truth, pred = colour_photo(WEIGHTS / "default.pt")
    l8 = colour.rgb_to_l(truth)
    grey = colour.lab_to_rgb(colour.grey_lab(l8))
    assert psnr(pred, truth) >= psnr(grey, truth)                       # faithful
    assert colourfulness(pred) > 0.5 * colourfulness(truth)             # and visibly coloured
    assert np.abs(colour.rgb_to_l(pred).astype(int) - l8).mean() < 1.0  # L untouched
    _, seed_pred = colour_photo(WEIGHTS / "seed.pt")
    assert colourfulness(pred) > colourfulness(seed_pred)


def test_the_engine_loader_is_shared_and_answers_in_one_line(tmp_path, monkeypatch):
    net, meta, path = load_weights(None)  # None: the shipped default weights
    assert path == WEIGHTS / "default.pt" and not net.training and meta["steps"] > 1000
    assert open_device("cpu", "fp32", threads=1) == (torch.device("cpu"), torch.float32)
    assert torch.get_num_threads() == 1
    monkeypatch.setattr(checkpoint, "shipped_weights", lambda name="default": tmp_path / "gone.pt")
    with pytest.raises(PipelineError, match="no shipped weights") as err:
        Colouriser(RunConfig(device="cpu"))
    assert err.value.exit_code == 2


def test_page_weights_are_a_page_model_that_colours_a_drawing_and_keeps_paper_white():
    from colourbatch.lineart import draw_page
    from colourbatch.model import predict_layer8

    model, meta = checkpoint.load(WEIGHTS / "page.pt")
    assert model.drawn and checkpoint.model_config(model)[0] == "page"
    assert meta["encoder_init"] == "weights:default.pt"
    assert set(meta["train_config"]["holdout"]) == {"food", "buildings"}
    # A drawing made here: a red ball with a green leaf on white paper, drawn as ink.
    rgb = np.full((448, 448, 3), 255, np.uint8)
    cv2.circle(rgb, (224, 250), 150, (210, 30, 30), -1)
    cv2.ellipse(rgb, (260, 80), (60, 25), 20, 0, 360, (40, 160, 40), -1)
    page = draw_page(rgb)
    with torch.inference_mode():
        lab = predict_layer8(model, torch.from_numpy(colour.l_tile(page))[None, None])[0].numpy()
    chroma = np.hypot(lab[1].astype(float) - 128, lab[2].astype(float) - 128)
    corners = np.concatenate([lab[:, :6, :6].reshape(3, -1), lab[:, -6:, -6:].reshape(3, -1)], 1)
    assert corners[0].min() >= 230 and chroma[:6, :6].max() < 8  # the paper around stays white
    assert (chroma > 10).mean() > 0.1  # and the drawing takes colour
