"""`colourbatch train` and `colourbatch evaluate` from the command line, and torchrun with 2 processes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from colourbatch import checkpoint
from colourbatch.cli import cli

TINY = ["--model", "seed", "--batch-size", "8", "--size", "32", "--workers", "0", "--threads", "1",
        "--device", "cpu", "--precision", "fp32", "--warmup", "0", "--val-fraction", "0.1",
        "--log-every", "1", "--lr", "0.03"]


def _run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_train_shows_progress_and_writes_files(kaggle_dir, tmp_path):
    out = tmp_path / "w" / "m.pt"
    r = _run("train", "--data", kaggle_dir, "--out", out, "--steps", 4, "--val-every", 2,
             "--ckpt-every", 2, *TINY)
    assert r.exit_code == 0, r.output
    text = r.output
    assert "training seed" in text and "27 training / 3 validation samples, 4 steps" in text
    for s in (1, 2, 3, 4):
        assert f"step {s}/4  loss " in text
    assert "img/s" in text and "ETA" in text
    assert text.count("validation (3 pictures): accuracy") == 2 and "AuC" in text
    assert text.count(f"checkpoint {out}.ckpt") == 2
    assert "trained 4/4 steps" in text and str(out) in text.splitlines()[-1]
    assert checkpoint.read(out)["metadata"]["steps"] == 4


def test_train_quiet_prints_only_the_final_line(kaggle_dir, tmp_path):
    r = _run("train", "--data", kaggle_dir, "--out", tmp_path / "q.pt", "--steps", 2, "-q", *TINY)
    assert r.exit_code == 0, r.output
    assert r.output.strip().splitlines() == [r.output.strip()]
    assert r.output.startswith("trained 2/2 steps")


def test_train_resume_takes_the_checkpoints_model(kaggle_dir, tmp_path):
    out = tmp_path / "r.pt"
    assert _run("train", "--data", kaggle_dir, "--out", out, "--steps", 2, *TINY).exit_code == 0
    args = [a for a in TINY if a not in ("--model", "seed")]
    r = _run("train", "--data", kaggle_dir, "--out", out, "--steps", 4, "--resume", f"{out}.ckpt", *args)
    assert r.exit_code == 0, r.output
    assert "resuming at step 2" in r.output and "step 3/4" in r.output and "step 1/4" not in r.output
    assert checkpoint.read(f"{out}.ckpt")["train"]["step"] == 4


def test_train_ema_writes_the_average_and_resume_must_keep_it(kaggle_dir, tmp_path):
    out = tmp_path / "e.pt"
    r = _run("train", "--data", kaggle_dir, "--out", out, "--steps", 2, "--ema", 0.9, *TINY)
    assert r.exit_code == 0, r.output
    blob = checkpoint.read(f"{out}.ckpt")
    assert "ema" in blob["train"] and checkpoint.read(out)["metadata"]["train_config"]["ema"] == 0.9
    r = _run("train", "--data", kaggle_dir, "--out", out, "--steps", 4, "--resume", f"{out}.ckpt", *TINY)
    assert r.exit_code == 2 and "trained with --ema" in r.stderr, r.output
    # A decay of 1 would never move from the first weights: refused by the option itself.
    r = _run("train", "--data", kaggle_dir, "--out", tmp_path / "f.pt", "--steps", 2, "--ema", 1, *TINY)
    assert r.exit_code == 2 and "Invalid value for '--ema'" in r.output


def test_train_rebalance_and_encoder_lr_reach_the_recipe_and_resume_must_keep_them(kaggle_dir, tmp_path):
    out = tmp_path / "z.pt"
    r = _run("train", "--data", kaggle_dir, "--out", out, "--steps", 1, "--rebalance", 0.25,
             "--encoder-lr", 0.5, *TINY)
    assert r.exit_code == 0, r.output
    recipe = checkpoint.read(out)["metadata"]["train_config"]
    assert recipe["rebalance"] == 0.25 and recipe["encoder_lr"] == 0.5
    # A resume that drops a setting would go on with the default: refused, naming the flag.
    r = _run("train", "--data", kaggle_dir, "--out", out, "--steps", 2, "--resume", f"{out}.ckpt",
             "--encoder-lr", 0.5, *TINY)
    assert r.exit_code == 2 and "was trained with rebalance 0.25" in r.stderr \
        and "--rebalance 0.25" in r.stderr, r.output
    # lambda 0 would weigh colours the data never shows infinitely (a NaN loss): refused.
    for bad in (0, 1.5):
        r = _run("train", "--data", kaggle_dir, "--out", out, "--steps", 1, "--rebalance", bad, *TINY)
        assert r.exit_code == 2 and "Invalid value for '--rebalance'" in r.output


def test_train_refuses_to_freeze_a_random_encoder(kaggle_dir, tmp_path):
    args = [a for a in TINY if a not in ("--model", "seed")]
    r = _run("train", "--data", kaggle_dir, "--out", tmp_path / "f.pt", "--steps", 1, "--model", "default",
             "--init-encoder", "none", "--encoder-lr", 0, *args)
    assert r.exit_code == 2 and "--encoder-lr 0 freezes the pretrained encoder" in r.stderr, r.output
    assert not (tmp_path / "f.pt").exists()


@pytest.mark.parametrize("case, message", [
    ("bad_kaggle", "do not pair"),
    ("missing", "no such file or folder"),
    ("other_model", "is a 'seed' checkpoint, not 'default'"),
    ("corrupt", "not a readable weights file"),
    ("both_lengths", "give --steps or --epochs, not both"),
    ("device", "CUDA was asked for"),
])
def test_train_bad_input_is_one_error_line(kaggle_dir, tmp_path, case, message):
    args = ["train", "--data", kaggle_dir, "--out", tmp_path / "x.pt", "--steps", 2, *TINY]
    if case == "bad_kaggle":
        np.save(kaggle_dir / "ab" / "ab" / "ab3.npy", np.zeros((2, 32, 32, 2), np.uint8))
    elif case == "missing":
        args[2] = tmp_path / "nowhere"
    elif case == "other_model":
        assert _run(*args).exit_code == 0
        args += ["--model", "default", "--resume", f"{tmp_path / 'x.pt'}.ckpt"]
    elif case == "corrupt":
        (tmp_path / "c.ckpt").write_bytes(b"broken")
        args += ["--resume", tmp_path / "c.ckpt"]
    elif case == "both_lengths":
        args += ["--epochs", 1]
    elif case == "device":
        import torch
        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
        args += ["--device", "cuda"]
    r = _run(*args)
    assert r.exit_code == 2  # refused before any training
    assert r.stderr.strip().splitlines() == [r.stderr.strip()]
    assert r.stderr.startswith("error: ") and message in r.stderr
    assert "Traceback" not in r.output


def test_torchrun_two_cpu_processes_with_gloo(kaggle_dir, tmp_path):
    out = tmp_path / "ddp.pt"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "colourbatch", "train", "--data", str(kaggle_dir), "--out", str(out), "--steps", "3",
           "--ckpt-every", "2", *[a if a != "8" else "4" for a in TINY]]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stdout + p.stderr
    # Only rank 0 reports: each line once.
    assert p.stdout.count("training seed") == 1 and "2 process(es)" in p.stdout
    assert p.stdout.count("step 3/3  loss") == 1
    assert p.stdout.count(f"checkpoint {out}.ckpt") == 2  # at step 2 and at the end
    assert p.stdout.count("trained 3/3 steps") == 1
    ck = checkpoint.read(f"{out}.ckpt")
    assert ck["train"]["world"] == 2 and ck["train"]["step"] == 3
    assert ck["train"]["seen"] >= 3 * 8  # 2 processes x batch 4 per step
    assert ck["metadata"]["batch_size"] == 8
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("ddp")] == ["ddp.pt", "ddp.pt.ckpt"] \
        or sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("ddp")) == ["ddp.pt", "ddp.pt.ckpt"]


def test_python_dash_m_entry_point(tmp_path):
    p = subprocess.run([sys.executable, "-m", "colourbatch", "train", "--help"], capture_output=True,
                       text=True, timeout=60, cwd=Path(__file__).resolve().parent.parent)
    assert p.returncode == 0 and "--resume" in p.stdout and "--init-encoder" in p.stdout


# ------------------------------------------------------------------ evaluate
@pytest.fixture
def trained(kaggle_dir, tmp_path):
    out = tmp_path / "t.pt"
    r = _run("train", "--data", kaggle_dir, "--out", out, "--steps", 3, "-q", *TINY)
    assert r.exit_code == 0, r.output
    return out


def test_evaluate_json(kaggle_dir, trained):
    r = _run("evaluate", "--data", kaggle_dir, "--weights", trained, "--json", "--size", 32,
             "--device", "cpu", "--precision", "fp32")
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    # The split follows the weights' own training (--val-fraction 0.1): the last 3 pictures.
    assert res["val_fraction"] == 0.1 and res["images"] == 3 and res["split"] == "val"
    assert [row["name"] for row in res["rows"]] == ["grey", "t"] and res["rows"][1]["model"] == "seed"
    for row in res["rows"]:
        assert set(("accuracy", "psnr_rgb", "psnr_ab", "ssim", "colourfulness_ratio", "auc",
                    "auc_rebal", "l_error")) <= set(row)
        assert 0 < row["auc"] <= 100


def test_evaluate_table_and_sheet(kaggle_dir, trained, tmp_path):
    sheet = tmp_path / "sheet.png"
    r = _run("evaluate", "--data", kaggle_dir, "--weights", trained, "--weights", trained, "--size", 32,
             "--device", "cpu", "--precision", "fp32", "--sheet", sheet, "--sheet-images", 2)
    assert r.exit_code == 0, r.output
    out = r.stdout
    for header in ("acc %", "PSNR", "PSNR ab", "SSIM", "colour", "AuC", "rebal", "L err"):
        assert header in out
    # The same file twice: folder-qualified and numbered so the rows stay distinguishable.
    assert "│ grey " in out and "sheet0/t#1 [seed]" in out and "sheet0/t#2 [seed]" in out
    assert sheet.is_file() and f"contact sheet: {sheet}" in out


def test_evaluate_pred_truth_folders(tmp_path):
    import cv2
    rgb = np.zeros((10, 12, 3), np.uint8)
    rgb[:, :6] = (200, 40, 40)
    rgb[:, 6:] = (40, 60, 220)
    for d in ("truth", "pred"):
        (tmp_path / d).mkdir()
        cv2.imwrite(str(tmp_path / d / "a.png"), rgb[..., ::-1])
    r = _run("evaluate", "--pred", tmp_path / "pred", "--truth", tmp_path / "truth", "--json")
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)["rows"]
    assert rows[1]["accuracy"] == 1.0 and rows[1]["psnr_rgb"] == 100.0 and rows[0]["auc"] < 80


@pytest.mark.parametrize("args, message", [
    (["--weights", "{tmp}/missing.pt"], "weights file not found"),
    (["--pred", "{tmp}"], "--pred and --truth go together"),
    ([], "nothing to evaluate"),
])
def test_evaluate_bad_input_is_one_error_line(tmp_path, kaggle_dir, args, message):
    args = [a.format(tmp=tmp_path) for a in args]
    if args and args[0] == "--weights":
        args = ["--data", str(kaggle_dir)] + args
    r = _run("evaluate", *args)
    assert r.exit_code == 2 and r.stderr.startswith("error: ") and message in r.stderr, r.output
    assert "Traceback" not in r.output


def test_evaluate_a_film_against_its_source(tmp_path, make_clip, tiny_tinted_weights):
    clip = make_clip("film.mkv", frames=12, codec="ffv1", pix_fmt="yuv444p")
    coloured = tmp_path / "film.colour.mkv"
    r = _run("video", clip, "-o", coloured, "--codec", "ffv1", "--weights", tiny_tinted_weights,
             "--workers", 0, "--quiet")
    assert r.exit_code == 0, r.output
    r = _run("evaluate", "--video", coloured, "--source", clip, "--json")
    assert r.exit_code == 0, r.output
    row = json.loads(r.stdout)["rows"][0]
    assert row["frames"] == 12 and row["pairs"] == 11 and row["cuts"] == 0
    assert row["warp_error"] > 0 and row["source_warp_error"] is None  # a grey source has no floor
    # The grey film against itself holds perfectly still: the wiring reaches the metric.
    still = json.loads(_run("evaluate", "--video", clip, "--source", clip, "--json").stdout)["rows"][0]
    assert still["warp_error"] == 0.0
    table = _run("evaluate", "--video", coloured, "--source", clip)
    assert table.exit_code == 0 and "warp error" in table.stdout and f"{row['warp_error']:.3f}" in table.stdout
    alone = _run("evaluate", "--source", clip)
    assert alone.exit_code == 2 and "--source needs --video" in alone.stderr

