"""train(): loss goes down, files come out, resume is exact, bad resumes are refused."""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from colourbatch import checkpoint, files, model as model_table
from colourbatch.checkpoint import CheckpointError
from colourbatch.data import DataError
from colourbatch.errors import WriteError
from colourbatch.train import TrainConfig, TrainError, train
from conftest import within  # the suite's one hang guard


def _cfg(data, out, **kw) -> TrainConfig:
    """A tiny, deterministic CPU run: fp32, one thread, no workers, no warm-up."""
    base = dict(data=tuple(str(d) for d in data), out=str(out), model="seed", steps=20, batch_size=8,
                lr=3e-2, warmup=0, size=32, crops=2, val_fraction=0.1, val_every=1000, val_images=8,
                ckpt_every=1000, log_every=1, workers=0, device="cpu", precision="fp32", threads=1,
                init_encoder="none")
    base.update(kw)
    return TrainConfig(**base)


class _Events:
    def __init__(self, stop_at_checkpoint: int | None = None):
        self.events: list[tuple[str, dict]] = []
        self.stop_at = stop_at_checkpoint

    def __call__(self, kind, info):
        self.events.append((kind, info))
        if kind == "checkpoint" and info["step"] == self.stop_at:
            raise _Stop()

    def of(self, kind):
        return [info for k, info in self.events if k == kind]

    def losses(self) -> dict[int, float]:
        return {i["step"]: i["loss"] for i in self.of("step")}


class _Stop(Exception):
    """Stands in for Ctrl-C right after a checkpoint."""


def _mean(xs):
    return sum(xs) / len(xs)


def test_seed_training_lowers_the_loss_and_writes_both_files(kaggle_dir, tmp_path):
    ev = _Events()
    out = tmp_path / "w" / "seed.pt"
    with within(120):
        result = train(_cfg([kaggle_dir], out), ev)
    losses = [ev.losses()[s] for s in range(1, 21)]
    assert _mean(losses[-3:]) < 0.3 * _mean(losses[:2]), losses
    start = ev.of("start")[0]
    assert start["train_images"] == 27 and start["val_images"] == 3 and start["start_step"] == 0
    assert result["step"] == 20 and not result["stopped_early"]
    # The weights file: fp16 storage, no training state, describes itself.
    blob = checkpoint.read(out)
    assert blob["model"] == "seed" and "train" not in blob
    assert all(v.dtype == torch.float16 for v in blob["state"].values() if v.is_floating_point())
    model, meta = checkpoint.load(out, expect_model="seed")
    assert meta["steps"] == 20 and meta["images_seen"] >= 20 * 8
    assert meta["train_config"]["val_fraction"] == 0.1
    # The final validation ran on all 3 held-out pictures and was recorded.
    final = ev.of("eval")[-1]
    assert final["images"] == 3 and meta["val_metrics"]["auc"] == pytest.approx(final["auc"])
    ck = checkpoint.read(str(out) + ".ckpt")
    assert ck["train"]["step"] == 20 and "optimizer" in ck["train"]


def test_flat_kaggle_layout_trains_too(make_kaggle, tmp_path):
    flat = make_kaggle("flat", nested=False)
    ev = _Events()
    with within(120):
        train(_cfg([flat], tmp_path / "f.pt", steps=6), ev)
    assert len(ev.of("step")) == 6 and (tmp_path / "f.pt").is_file()


def test_training_runs_across_epochs_whose_tail_is_smaller_than_a_batch(kaggle_dir, tmp_path):
    # 27 training samples, batch 8: each epoch leaves 3 unused; 10 steps span 4 epochs.
    ev = _Events()
    with within(60):
        result = train(_cfg([kaggle_dir], tmp_path / "e.pt", steps=10), ev)
    assert result["step"] == 10 and [i["step"] for i in ev.of("step")] == list(range(1, 11))


def test_default_model_short_run_lowers_the_loss(kaggle_dir, tmp_path):
    ev = _Events()
    out = tmp_path / "default.pt"
    with within(180):
        train(_cfg([kaggle_dir], out, model="default", steps=12, lr=3e-3), ev)
    losses = [ev.losses()[s] for s in range(1, 13)]
    assert _mean(losses[-3:]) < 0.85 * _mean(losses[:2]), losses
    model, meta = checkpoint.load(out, expect_model="default")
    assert meta["encoder_init"] == "random"
    # The bin prior was estimated from the data: no longer uniform, still a distribution.
    assert model.prior.sum().item() == pytest.approx(1.0, abs=1e-3)
    assert model.prior.max().item() > 5.0 / len(model.prior)


def test_image_folder_training_counts_the_unreadable_file(image_folder, tmp_path):
    ev = _Events()
    with within(120):
        train(_cfg([image_folder], tmp_path / "img.pt", steps=4, batch_size=4), ev)
    skips = ev.of("skip")
    assert [s["path"].endswith("broken.png") for s in skips] == [True]
    start = ev.of("start")[0]
    assert start["train_images"] + 0 == 2 * (11 - start["val_images"])  # 2 crops per training picture


def test_resume_continues_with_the_same_step_and_batches(kaggle_dir, tmp_path):
    # 27 samples, batch 8 -> 3 steps per epoch: the stop at step 4 is mid-epoch 1.
    kw = dict(steps=8, ckpt_every=4, lr=1e-2)
    whole = _Events()
    with within(120):
        train(_cfg([kaggle_dir], tmp_path / "a.pt", **kw), whole)

    first = _Events(stop_at_checkpoint=4)
    with within(120), pytest.raises(_Stop):
        train(_cfg([kaggle_dir], tmp_path / "b.pt", **kw), first)
    ck = tmp_path / "b.pt.ckpt"
    assert checkpoint.read(ck)["train"]["step"] == 4

    second = _Events()
    with within(120):
        train(_cfg([kaggle_dir], tmp_path / "b.pt", resume=str(ck), **kw), second)
    assert second.of("start")[0]["start_step"] == 4
    assert [i["step"] for i in second.of("step")] == [5, 6, 7, 8]
    # Same weights, same optimizer state and the same next batches -> the very same losses.
    a, b = whole.losses(), second.losses()
    for s in (5, 6, 7, 8):
        assert b[s] == pytest.approx(a[s], rel=1e-5), (s, a, b)
    # And they are not trivially equal: the loss moved over those steps.
    assert len({round(a[s], 3) for s in (5, 6, 7, 8)}) == 4
    wa = checkpoint.read(tmp_path / "a.pt.ckpt")["state"]
    wb = checkpoint.read(ck)["state"]
    for k in wa:
        assert torch.allclose(wa[k], wb[k], atol=1e-5), k


def test_resume_with_a_different_model_is_refused(kaggle_dir, tmp_path):
    with within(60):
        train(_cfg([kaggle_dir], tmp_path / "s.pt", steps=2), None)
    with pytest.raises(TrainError, match="is a 'seed' checkpoint, not 'default'"):
        train(_cfg([kaggle_dir], tmp_path / "d.pt", model="default", resume=str(tmp_path / "s.pt.ckpt")))
    # The weights-only file has no training state to continue.
    with pytest.raises(TrainError, match="holds weights only"):
        train(_cfg([kaggle_dir], tmp_path / "s2.pt", resume=str(tmp_path / "s.pt")))
    # Loading the seed file as a default model is refused by the checkpoint layer too.
    with pytest.raises(checkpoint.CheckpointError, match="holds model 'seed', not 'default'"):
        checkpoint.load(tmp_path / "s.pt", expect_model="default")


def test_corrupt_or_missing_resume_file_is_a_clear_error(kaggle_dir, tmp_path):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"\x00not a torch file" * 10)
    with pytest.raises(CheckpointError, match="not a readable weights file"):
        train(_cfg([kaggle_dir], tmp_path / "x.pt", resume=str(bad)))
    with pytest.raises(CheckpointError, match="weights file not found"):
        train(_cfg([kaggle_dir], tmp_path / "x.pt", resume=str(tmp_path / "missing.ckpt")))
    torch.save({"format": "something-else"}, tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match="not a colourbatch weights file"):
        train(_cfg([kaggle_dir], tmp_path / "x.pt", resume=str(tmp_path / "other.ckpt")))
    assert not (tmp_path / "x.pt").exists()  # refused before any training


def test_bad_runs_are_refused_before_training(kaggle_dir, tmp_path):
    with pytest.raises(TrainError, match="unknown model 'zhang'"):
        train(_cfg([kaggle_dir], tmp_path / "x.pt", model="zhang"))
    with pytest.raises(TrainError, match="fewer than one batch of 64"):
        train(_cfg([kaggle_dir], tmp_path / "x.pt", batch_size=64))
    with pytest.raises(TrainError, match="cannot initialise the encoder"):
        train(_cfg([kaggle_dir], tmp_path / "x.pt", model="default",
                   init_encoder=str(tmp_path / "no-such.pth")))
    (tmp_path / "dir.pt").mkdir()
    with pytest.raises(TrainError, match="dir.pt: is a folder"):
        train(_cfg([kaggle_dir], tmp_path / "dir.pt"))
    (tmp_path / "k2" / "l").mkdir(parents=True)
    with pytest.raises(DataError, match="lacks l/gray_scale.npy"):
        train(_cfg([tmp_path / "k2"], tmp_path / "x.pt"))


def test_a_failed_save_keeps_the_previous_checkpoint(kaggle_dir, tmp_path, monkeypatch):
    out = tmp_path / "keep.pt"
    with within(60):
        train(_cfg([kaggle_dir], out, steps=2), None)
    before = (tmp_path / "keep.pt.ckpt").read_bytes()

    def full_disk(obj, f, *a, **k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(torch, "save", full_disk)
    with within(60), pytest.raises(WriteError, match="No space left") as err:
        train(_cfg([kaggle_dir], out, steps=4, resume=str(tmp_path / "keep.pt.ckpt")), None)
    assert err.value.exit_code == 1 and "\n" not in str(err.value)
    assert (tmp_path / "keep.pt.ckpt").read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if files.temp_target(p)]


def test_train_out_on_a_full_disk_is_one_line(kaggle_dir, tmp_path):
    # A real write failure (EFBIG past RLIMIT_FSIZE) in a `colourbatch train` process.
    out = tmp_path / "w" / "full.pt"
    with within(60):
        train(_cfg([kaggle_dir], out, steps=2), None)
    before = {p.name: p.read_bytes() for p in out.parent.iterdir()}
    code = ("import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
            "resource.setrlimit(resource.RLIMIT_FSIZE, (40000, 40000)); "
            "from colourbatch.cli import cli; cli()")
    args = ["train", "--data", str(kaggle_dir), "--out", str(out), "--steps", "4", "--resume",
            f"{out}.ckpt", "--batch-size", "8", "--size", "32", "--workers", "0", "--threads", "1",
            "--device", "cpu", "--precision", "fp32", "--warmup", "0", "--val-fraction", "0.1", "-q"]
    p = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=240,
                       env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent)))
    assert p.returncode == 1, p.stdout + p.stderr
    assert p.stderr.strip().splitlines() == [p.stderr.strip()] and "cannot write" in p.stderr, p.stderr
    assert {q.name: q.read_bytes() for q in out.parent.iterdir()} == before  # intact, no temp left


@pytest.mark.parametrize("damage, message", [
    ("no_optimizer", "training state lacks 'optimizer'"),
    ("rng_string", "'rng' is not a CPU random generator state"),
    ("rng_dtype", "'rng' is not a CPU random generator state"),
    ("groups", "other parameter groups"),
    ("a_list", "training state is list"),
])
def test_malformed_resume_states_are_refused_before_training(kaggle_dir, tmp_path, damage, message):
    with within(60):
        train(_cfg([kaggle_dir], tmp_path / "s.pt", steps=2), None)
    blob = torch.load(tmp_path / "s.pt.ckpt", weights_only=True)
    st = blob["train"]
    if damage == "no_optimizer":
        del st["optimizer"]
    elif damage == "rng_string":
        st["rng"] = "seed 0"
    elif damage == "rng_dtype":
        st["rng"] = st["rng"].float()
    elif damage == "groups":
        groups = st["optimizer"]["param_groups"]
        groups.append(dict(groups[0], params=groups[0]["params"][4:]))
        groups[0]["params"] = groups[0]["params"][:4]
    else:
        blob["train"] = [st]
    torch.save(blob, tmp_path / "bad.ckpt")
    events = []
    with pytest.raises(CheckpointError, match=message) as err:
        train(_cfg([kaggle_dir], tmp_path / "x.pt", resume=str(tmp_path / "bad.ckpt")),
              lambda k, i: events.append(k))
    assert "\n" not in str(err.value) and err.value.exit_code == 2
    assert events == [] and not (tmp_path / "x.pt").exists()


@pytest.mark.parametrize("kind", ["text", "pickle"])
def test_init_encoder_file_that_is_not_tensors_is_one_line(kaggle_dir, tmp_path, kind):
    import pickle
    enc = tmp_path / "enc.pth"
    if kind == "text":
        enc.write_text("not weights\n")
    else:
        enc.write_bytes(pickle.dumps({"features.0.0.weight": [0.0]}))
    with pytest.raises(TrainError, match="cannot initialise the encoder: .*enc.pth") as err:
        train(_cfg([kaggle_dir], tmp_path / "x.pt", model="default", init_encoder=str(enc)))
    assert "\n" not in str(err.value) and "weights_only" not in str(err.value)


class _TinyNet(model_table.SeedNet):
    """A model training has never heard of: the table alone must make it trainable."""


def test_a_new_table_entry_trains_without_touching_train_py(kaggle_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(model_table.MODELS, "tiny",
                        model_table.ModelEntry(model_table.SeedConfig, _TinyNet, lr=2e-2))
    ev = _Events()
    with within(60):
        train(_cfg([kaggle_dir], tmp_path / "t.pt", model="tiny", steps=2, lr=None), ev)
    assert ev.of("start")[0]["lr"] == 2e-2 and "encoder_init" not in ev.of("start")[0]
    assert checkpoint.read(tmp_path / "t.pt")["model"] == "tiny"


class _DivergingNet(model_table.SeedNet):
    def make_loss(self, rebalance, sigma, reg_weight):
        mse = super().make_loss(rebalance, sigma, reg_weight)
        return lambda raw, l8, ab8, x8: mse(raw, l8, ab8, x8) * float("nan")


def test_a_diverging_loss_fails_part_way_with_exit_1(kaggle_dir, tmp_path, monkeypatch):
    from colourbatch.train import TrainFailed

    monkeypatch.setitem(model_table.MODELS, "nan",
                        model_table.ModelEntry(model_table.SeedConfig, _DivergingNet, lr=1e-3))
    with within(60), pytest.raises(TrainFailed, match="loss became nan at step 1; lower --lr") as err:
        train(_cfg([kaggle_dir], tmp_path / "n.pt", model="nan", steps=3))
    assert err.value.exit_code == 1 and isinstance(err.value, TrainError)
    assert TrainError("x").exit_code == 2  # refusals before work


def test_holdout_trains_without_a_source_and_validates_on_it(image_folder, tmp_path):
    ev = _Events()
    with within(120):
        train(_cfg([image_folder], tmp_path / "h.pt", steps=3, batch_size=4, holdout=("sub",)), ev)
    start = ev.of("start")[0]
    # photos/sub holds the 5 odd pictures: all of them validate, none trains; the 5 even
    # pictures and the cut-out (2 crops each) train.
    assert start["val_images"] == 5 and start["train_images"] == 2 * 6
    _, meta = checkpoint.load(tmp_path / "h.pt")
    assert meta["train_config"]["holdout"] == ["sub"]  # evaluate holds out the same source


def test_train_command_holds_out_sources(image_folder, tmp_path):
    from click.testing import CliRunner

    from colourbatch.cli import cli

    out = tmp_path / "c.pt"
    args = ["train", "--data", str(image_folder), "--out", str(out), "--steps", "2", "--holdout", "sub",
            "--model", "seed", "--batch-size", "4", "--size", "32", "--crops", "2", "--device", "cpu",
            "--precision", "fp32", "--workers", "0", "--threads", "1", "--warmup", "0", "-q"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    assert checkpoint.read(out)["metadata"]["train_config"]["holdout"] == ["sub"]
    r = CliRunner().invoke(cli, args[:8] + ["nowhere"] + args[9:])
    assert r.exit_code == 2 and "held-out source(s) nowhere" in r.output


def test_a_page_model_trains_on_drawn_pictures_through_the_one_loop(tmp_path, monkeypatch):
    import cv2
    import numpy as np

    from colourbatch import data, lineart

    root = tmp_path / "art"
    rng = np.random.default_rng(0)
    for src in ("a", "b"):
        (root / src).mkdir(parents=True)
        for i in range(4):
            rgb = np.full((96, 96, 3), 255, np.uint8)
            c = tuple(int(v) for v in rng.integers(0, 256, 3))
            cv2.rectangle(rgb, (10 + 5 * i, 20), (70, 80 - 4 * i), c, -1)
            cv2.imwrite(str(root / src / f"{i}.png"), rgb)
    drawn = []
    real = lineart.draw_page
    monkeypatch.setattr(data.lineart, "draw_page", lambda rgb, rng=None, scale=1.0:
                        drawn.append(rng is None) or real(rgb, rng, scale))
    ev = _Events()
    out = tmp_path / "page.pt"
    with within(120):
        train(_cfg([root], out, model="page", steps=3, batch_size=4, size=64, holdout=("b",),
                   lr=1e-3), ev)
    # Training drew random styles; validation (source b: 4 pictures) the plain one.
    assert False in drawn and drawn.count(True) >= 4
    assert ev.of("eval") and all(map(math.isfinite, [i["loss"] for i in ev.of("step")]))
    model, meta = checkpoint.load(out)
    assert isinstance(model, model_table.PageNet) and model.drawn
    assert checkpoint.read(out)["model"] == "page" and meta["train_config"]["model"] == "page"


def test_ema_saves_the_average_and_resumes_to_the_same_weights(kaggle_dir, tmp_path):
    kw = dict(steps=8, ckpt_every=4, lr=1e-2, ema=0.5)
    with within(120):
        train(_cfg([kaggle_dir], tmp_path / "a.pt", **kw), _Events())
    with within(120), pytest.raises(_Stop):
        train(_cfg([kaggle_dir], tmp_path / "b.pt", **kw), _Events(stop_at_checkpoint=4))
    ck = tmp_path / "b.pt.ckpt"
    assert "ema" in checkpoint.read(ck)["train"]
    with within(120):
        train(_cfg([kaggle_dir], tmp_path / "b.pt", resume=str(ck), **kw), _Events())
    raw = checkpoint.read(tmp_path / "a.pt.ckpt")["state"]
    avg_a = checkpoint.read(tmp_path / "a.pt")["state"]
    avg_b = checkpoint.read(tmp_path / "b.pt")["state"]
    moved = 0
    for k, v in raw.items():
        if not v.is_floating_point():
            continue
        # The weights file is the average, not the raw network the optimiser stepped ...
        moved += not torch.allclose(avg_a[k].float(), v, atol=1e-3)
        # ... and a resumed run averages on from where it stopped, to the same weights.
        assert torch.allclose(avg_a[k].float(), avg_b[k].float(), atol=1e-3), k
    ema_a = checkpoint.read(tmp_path / "a.pt.ckpt")["train"]["ema"]
    ema_b = checkpoint.read(ck)["train"]["ema"]
    for k, v in ema_a.items():  # exactly, in fp32: the average's history came through the resume
        assert torch.allclose(v.float(), ema_b[k].float(), rtol=1e-5, atol=1e-7), k
    assert moved > 0
    # Nor is it the network it started from: it follows the training.
    torch.manual_seed(0)  # the run's own seed, so the same initial weights
    first = model_table.build_model("seed").state_dict()
    assert any(not torch.allclose(avg_a[k].float(), first[k].float(), atol=1e-3)
               for k in first if first[k].is_floating_point())
    # A run without --ema cannot resume an averaged one (its weights file would change meaning).
    with pytest.raises(TrainError, match="ema"):
        train(_cfg([kaggle_dir], tmp_path / "c.pt", resume=str(ck), steps=8))


def test_encoder_lr_zero_freezes_the_encoder_weights_and_batchnorm(kaggle_dir, tmp_path):
    # A first run gives an encoder to start from; the second freezes it and trains on.
    with within(180):
        train(_cfg([kaggle_dir], tmp_path / "a.pt", model="default", steps=2, size=32, lr=1e-2), _Events())
        train(_cfg([kaggle_dir], tmp_path / "b.pt", model="default", steps=3, size=32, lr=1e-2,
                   encoder_lr=0.0, init_encoder=str(tmp_path / "a.pt"), val_every=2), _Events())
    a, b = (checkpoint.read(tmp_path / f"{n}.pt")["state"] for n in "ab")
    enc = [k for k in a if k.startswith("encoder.")]
    assert any(k.endswith("running_mean") for k in enc) and any(k.endswith(".weight") for k in enc)
    # Weights and BatchNorm statistics alike, through a mid-run validation (eval, then train).
    assert all(torch.equal(a[k], b[k]) for k in enc)
    assert not torch.equal(a["head.weight"], b["head.weight"])  # the decoder did learn
    assert not torch.equal(a["up4.1.running_mean"], b["up4.1.running_mean"])
    # Only the decoder is in the optimiser: the encoder costs no gradient and no state.
    groups = checkpoint.read(tmp_path / "b.pt.ckpt")["train"]["optimizer"]["param_groups"]
    net = model_table.build_model("default")
    assert sum(len(g["params"]) for g in groups) == \
        len(list(net.parameters())) - len(list(net.encoder.parameters()))


def test_encoder_lr_gives_the_encoder_its_share_of_the_peak(kaggle_dir, tmp_path):
    with within(120):
        train(_cfg([kaggle_dir], tmp_path / "d.pt", model="default", steps=2, size=32, lr=1e-3,
                   encoder_lr=0.1), _Events())
    groups = checkpoint.read(tmp_path / "d.pt.ckpt")["train"]["optimizer"]["param_groups"]
    enc, rest = groups
    assert [g["lr_scale"] for g in groups] == [0.1, 1.0]
    assert enc["lr"] == pytest.approx(0.1 * rest["lr"]) and rest["lr"] > 0
    net = model_table.build_model("default")
    assert len(enc["params"]) == len(list(net.encoder.parameters()))
