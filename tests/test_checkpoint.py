"""checkpoint.py: self-describing, safely loaded, fully validated, atomically written weights."""
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from colourbatch import checkpoint
from colourbatch.errors import WriteError
from colourbatch.model import build_model, model_config


def test_round_trip_rebuilds_from_saved_config(tmp_path):
    torch.manual_seed(0)
    m = build_model("default", {"temperature": 0.5}).eval()
    path = checkpoint.save(tmp_path / "w.pt", m, {"steps": 7}, half=True)
    loaded, meta = checkpoint.load(path)
    assert meta == {"steps": 7} and loaded.cfg.temperature == 0.5
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        assert torch.allclose(m(x), loaded(x), atol=0.05)  # fp16 storage, fp32 compute
    assert (path.stat().st_mode & 0o777) == 0o644


@pytest.mark.parametrize("content,message", [
    (b"", "not a readable weights file"),
    (b"garbage" * 10, "not a readable weights file"),
])
def test_corrupt_files_give_clear_errors(tmp_path, content, message):
    p = tmp_path / "bad.pt"
    p.write_bytes(content)
    with pytest.raises(checkpoint.CheckpointError, match=message):
        checkpoint.load(p)


def test_wrong_files(tmp_path):
    with pytest.raises(checkpoint.CheckpointError, match="not found"):
        checkpoint.load(tmp_path / "missing.pt")
    torch.save({"hello": 1}, tmp_path / "other.pt")
    with pytest.raises(checkpoint.CheckpointError, match="not a colourbatch weights file"):
        checkpoint.load(tmp_path / "other.pt")
    seed = checkpoint.save(tmp_path / "seed.pt", build_model("seed"))
    with pytest.raises(checkpoint.CheckpointError, match="holds model 'seed', not 'default'"):
        checkpoint.load(seed, expect_model="default")


class _Touch:
    """Unpickling this creates `path`: code a weights file must never get to run."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def _blob(**changes):
    """A valid seed checkpoint dict, as save() writes it, with `changes` applied."""
    model = build_model("seed")
    opt = model.configure_optimizers(1e-3, 0.0)
    blob = {"format": checkpoint.FORMAT, "version": checkpoint.VERSION, "model": "seed",
            "config": model_config(model)[1], "state": model.state_dict(), "metadata": {},
            "train": {"optimizer": opt.state_dict(), "step": 3, "seen": 24, "world": 1,
                      "rng": torch.get_rng_state(), "seconds": 1.5}}
    for key, value in changes.items():
        if key.startswith("train."):
            blob["train"][key[6:]] = value
            if value is _DROP:
                del blob["train"][key[6:]]
        else:
            blob[key] = value
    return {k: v for k, v in blob.items() if v is not _DROP}


_DROP = object()


def test_pickled_code_is_never_run(tmp_path):
    marker = tmp_path / "pwned"
    torch.save(_blob(metadata={"note": _Touch(marker)}), tmp_path / "evil.pt")
    with pytest.raises(checkpoint.CheckpointError) as err:
        checkpoint.load(tmp_path / "evil.pt")
    assert not marker.exists()
    text = str(err.value)
    assert "\n" not in text and "not a readable weights file" in text
    assert "weights_only" not in text and "will likely succeed" not in text  # torch's advice is not ours


@pytest.mark.parametrize("changes, message", [
    (dict(state=[1, 2]), "state is not a dict of named tensors"),
    (dict(state={"net.0.weight": "x"}), "state is not a dict of named tensors"),
    (dict(state={}), "state is not a dict of named tensors"),
    (dict(version="1"), "version is str"),
    (dict(version=True), "version is bool"),
    (dict(config=[1]), "config is list, not a dict"),
    (dict(metadata="m"), "metadata is str, not a dict"),
    (dict(model=3), "model is int, not a name"),
    (dict(model=_DROP), "lacks 'model'"),
    (dict(config={"widths": "abc", "kernels": 7}), "cannot build model 'seed'"),
    (dict(model="zhang"), "cannot build model 'zhang' (unknown model"),
    (dict(train=[1]), "training state is list"),
    (dict(**{"train.optimizer": _DROP}), "training state lacks 'optimizer'"),
    (dict(**{"train.optimizer": [1]}), "optimizer state is not an optimizer's state dict"),
    (dict(**{"train.rng": "abc"}), "'rng' is not a CPU random generator state"),
    (dict(**{"train.rng": torch.zeros(5000)}), "'rng' is not a CPU random generator state"),
    (dict(**{"train.step": "3"}), "'step' is not a count"),
    (dict(**{"train.world": 0}), "'world' is not a count"),
])
def test_malformed_bodies_are_one_line_refusals(tmp_path, changes, message):
    p = tmp_path / "bad.pt"
    torch.save(_blob(**changes), p)
    with pytest.raises(checkpoint.CheckpointError, match=re.escape(message)) as err:
        checkpoint.load(p)
    assert "\n" not in str(err.value) and err.value.exit_code == 2


def test_a_valid_training_checkpoint_passes_the_checks(tmp_path):
    torch.save(_blob(), tmp_path / "good.pt")
    blob = checkpoint.read(tmp_path / "good.pt")
    assert blob["train"]["step"] == 3 and checkpoint.load(tmp_path / "good.pt")[0] is not None


def test_optimizer_state_must_fit_the_model(tmp_path):
    model = build_model("seed")
    params = list(model.parameters())
    two_groups = torch.optim.Adam([{"params": params[:2]}, {"params": params[2:]}]).state_dict()
    with pytest.raises(checkpoint.CheckpointError, match="other parameter groups"):
        checkpoint.load_optimizer_state(model.configure_optimizers(1e-3, 0), _blob(**{"train.optimizer": two_groups}))
    shapes = _blob()
    shapes["train"]["optimizer"]["state"] = {0: {"step": torch.tensor(1.0), "exp_avg": torch.zeros(3),
                                                 "exp_avg_sq": torch.zeros(3)}}
    with pytest.raises(checkpoint.CheckpointError, match="does not fit"):
        checkpoint.load_optimizer_state(model.configure_optimizers(1e-3, 0), shapes)
    checkpoint.load_optimizer_state(model.configure_optimizers(1e-3, 0), _blob())  # the real thing fits


@pytest.mark.parametrize("kind", ["text", "pickle", "checkpoint"])
def test_read_tensors_takes_only_a_dict_of_tensors(tmp_path, kind):
    p = tmp_path / "enc.pth"
    if kind == "text":
        p.write_text("mobilenet weights, honest\n")
    elif kind == "pickle":
        p.write_bytes(pickle.dumps({"features.0.0.weight": [1.0, 2.0]}))
    else:
        torch.save({"format": "x", "state": {}}, p)
    with pytest.raises(checkpoint.CheckpointError) as err:
        checkpoint.read_tensors(p)
    assert "\n" not in str(err.value) and "weights_only" not in str(err.value)
    torch.save({"features.0.0.weight": torch.zeros(1)}, p)
    assert list(checkpoint.read_tensors(p)) == ["features.0.0.weight"]



def test_read_tensors_gives_a_weights_files_state(tmp_path):
    from colourbatch.model import build_model

    model = build_model("seed")
    checkpoint.save(tmp_path / "w.pt", model, half=True)
    state = checkpoint.read_tensors(tmp_path / "w.pt")  # e.g. to start a page model from default.pt
    assert state.keys() == model.state_dict().keys()


@pytest.mark.parametrize("kind", ["folder", "fifo", "device"])
def test_paths_that_are_not_files_are_refused_without_reading(tmp_path, kind, deadline):
    p = tmp_path / "w.pt"
    if kind == "folder":
        p.mkdir()
    elif kind == "fifo":
        os.mkfifo(p)  # torch.load would block on it forever
    else:
        p.symlink_to("/dev/zero")  # ... or read without end
    with deadline(10), pytest.raises(checkpoint.CheckpointError,
                                     match="not a regular file .* not a weights file"):
        checkpoint.load(p)  # a regression would block on it: the deadline fails the test instead


def test_bare_state_dict_needs_model_name(tmp_path):
    m = build_model("seed")
    torch.save(m.state_dict(), tmp_path / "bare.pt")
    with pytest.raises(checkpoint.CheckpointError, match="pass --model"):
        checkpoint.load(tmp_path / "bare.pt")
    loaded, _ = checkpoint.load(tmp_path / "bare.pt", expect_model="seed")
    assert type(loaded) is type(m)


def test_failed_write_keeps_previous_file(tmp_path, monkeypatch):
    path = checkpoint.save(tmp_path / "w.pt", build_model("seed"), {"v": 1})

    def full_disk(*a, **k):  # what torch's zip writer raises when the disk fills
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 0\nmore")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(WriteError, match="cannot write .*w.pt") as err:
        checkpoint.save(path, build_model("seed"), {"v": 2})
    assert "\n" not in str(err.value) and err.value.exit_code == 1
    assert checkpoint.load(path)[1] == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["w.pt"]


_FULL_DISK = """
import resource, signal, sys
from colourbatch import checkpoint
from colourbatch.errors import ColourbatchError
from colourbatch.model import build_model
model = build_model("seed")
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit then fail with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))
try:
    checkpoint.save(sys.argv[1], model, {"v": 2})
except ColourbatchError as exc:
    print(type(exc).__name__, exc.exit_code, exc)
"""


def test_a_really_full_disk_is_a_write_error(tmp_path):
    path = checkpoint.save(tmp_path / "w.pt", build_model("seed"), {"v": 1})
    p = subprocess.run([sys.executable, "-c", _FULL_DISK, str(path)], capture_output=True, text=True,
                       timeout=120, env=dict(os.environ, PYTHONPATH=str(Path(__file__).parent.parent)))
    assert p.stdout.startswith("WriteError 1 cannot write"), p.stdout + p.stderr
    assert len(p.stdout.strip().splitlines()) == 1 and "Traceback" not in p.stderr
    assert checkpoint.load(path)[1] == {"v": 1}
    assert [q.name for q in tmp_path.iterdir()] == ["w.pt"]


@pytest.mark.parametrize("field, value, message", [
    ("temperature", "hot", "temperature='hot' is not a value like"),
    ("temperature", float("nan"), "temperature=nan is not a value like"),
    ("temperature", 0.0, "temperature must be above 0"),
    ("bin_step", 0, "bin_step must be 1 or more"),
    ("bin_step", 2.5, "bin_step=2.5 is not a value like"),
    ("decoder", [256, 192], "decoder needs 4 widths"),
    ("decoder", [256, "x", 128, 96], "is not a value like"),
])
def test_config_values_are_checked_when_the_model_is_built(tmp_path, field, value, message):
    # A value that would only fail at decode time (a traceback mid-run, or NaN colour)
    # is refused when the file is loaded, before any work.
    from colourbatch.model import build_model

    p = tmp_path / "w.pt"
    checkpoint.save(p, build_model("default"))
    blob = torch.load(p, weights_only=True)
    blob["config"][field] = value
    torch.save(blob, p)
    with pytest.raises(checkpoint.CheckpointError, match=re.escape(message)) as err:
        checkpoint.load(p)
    assert "\n" not in str(err.value) and err.value.exit_code == 2



def test_shipped_weights_found_from_an_uninstalled_checkout(tmp_path):
    # The package imported from the repository's root (benchmarks/, a GPU machine's copy of the
    # tree): colourbatch.weights is not a package there, so the weights/ folder beside it serves.
    # An editable install's import hook would map colourbatch.weights: it is taken out first.
    repo = Path(checkpoint.__file__).resolve().parent.parent
    code = ("import sys; sys.meta_path[:] = [f for f in sys.meta_path "
            "if 'editable' not in (getattr(f, '__module__', '') or '')]; "
            f"sys.path.insert(0, {str(repo)!r}); import colourbatch.checkpoint as c; "
            "print(c.__file__); print(c.shipped_weights())")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    module, weights = out.stdout.split()
    assert Path(module).parent.parent == repo
    assert Path(weights) == repo / "weights" / "default.pt" and Path(weights).stat().st_size > 1_000_000
