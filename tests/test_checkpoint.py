"""checkpoint.py: self-describing, safely loaded, atomically written weights."""
import pytest
import torch

from colourbatch import checkpoint
from colourbatch.model import build_model


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


def test_pickled_code_is_never_run(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"format": checkpoint.FORMAT, "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(checkpoint.CheckpointError):
        checkpoint.load(tmp_path / "evil.pt")


def test_bare_state_dict_needs_model_name(tmp_path):
    m = build_model("seed")
    torch.save(m.state_dict(), tmp_path / "bare.pt")
    with pytest.raises(checkpoint.CheckpointError, match="pass --model"):
        checkpoint.load(tmp_path / "bare.pt")
    loaded, _ = checkpoint.load(tmp_path / "bare.pt", expect_model="seed")
    assert type(loaded) is type(m)


def test_failed_write_keeps_previous_file(tmp_path, monkeypatch):
    path = checkpoint.save(tmp_path / "w.pt", build_model("seed"), {"v": 1})

    def full_disk(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError):
        checkpoint.save(path, build_model("seed"), {"v": 2})
    assert checkpoint.load(path)[1] == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["w.pt"]
