"""files.py: atomic writes, stale temporaries, bounded reads of regular files only."""
import os

import pytest

from colourbatch import files
from colourbatch.errors import InputError, WriteError


def test_write_is_atomic_and_leaves_no_temp(tmp_path):
    dest = tmp_path / "page.png"
    dest.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with files.atomic_output(dest) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed mid-write")
    assert dest.read_bytes() == b"old" and os.listdir(tmp_path) == ["page.png"]
    files.write_bytes(dest, b"new")
    assert dest.read_bytes() == b"new" and os.listdir(tmp_path) == ["page.png"]


def test_a_failed_finish_is_a_write_error(tmp_path):
    with pytest.raises(WriteError, match="cannot write"):
        with files.atomic_output(tmp_path / "missing" / "x.png"):
            pass  # the body wrote nothing: fsync of the temporary fails


def test_stale_temps_of_these_outputs_only_are_removed(tmp_path):
    film = tmp_path / "a.colour.mp4"
    mine = files.temp_path(film)
    other = files.temp_path(tmp_path / "b.colour.mp4")  # another shard's film in the same folder
    for p in (mine, other):
        p.write_bytes(b"partial")
    (tmp_path / ".a.colour.notes").write_bytes(b"not ours")
    assert files.temp_target(mine) == film and files.temp_target(tmp_path / "a.mp4") is None
    assert files.remove_stale_temps([film, tmp_path / "nowhere" / "c.mp4"]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([other.name, ".a.colour.notes"])


def test_reads_refuse_what_is_not_a_regular_file(tmp_path):
    fifo = tmp_path / "p.png"
    os.mkfifo(fifo)
    with pytest.raises(files.NotAFile, match="FIFO"):
        files.read_limited(fifo, 100)
    (tmp_path / "z.png").symlink_to("/dev/zero")
    with pytest.raises(files.NotAFile, match="device"):
        files.read_limited(tmp_path / "z.png", 100)
    (tmp_path / "big.png").write_bytes(b"x" * 101)
    with pytest.raises(files.TooLarge) as err:
        files.read_limited(tmp_path / "big.png", 100)
    assert isinstance(err.value, InputError) and err.value.exit_code == 1
    assert files.read_limited(tmp_path / "big.png", 101) == b"x" * 101
