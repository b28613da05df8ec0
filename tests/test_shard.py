"""Shards: disjoint, complete, stable when files are added, and read from schedulers' variables."""
import pytest

from colourbatch import shard
from colourbatch.errors import EXIT_START


def keys(n):
    return [f"vol{i // 10}/page{i:03d}.png" for i in range(n)]


def test_shards_are_disjoint_and_complete():
    names = keys(200)
    owned = [{k for k in names if shard.Shard(i, 3).owns(k)} for i in range(3)]
    assert set().union(*owned) == set(names)
    assert sum(len(o) for o in owned) == len(names)
    assert all(40 < len(o) < 95 for o in owned)  # a hash spreads them, not one shard taking all


def test_assignment_is_the_documented_hash_of_the_path_alone():
    # SHA-256 of the relative path, first 8 bytes big-endian, modulo N: the same on every
    # machine and version, whatever else is in the folder, so adding files moves no other
    # file and shards started on different machines agree.
    import hashlib
    for key in ("vol1/page001.png", "films/a.mp4", "b.cbz"):
        want = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % 7
        assert shard.bucket(key, 7) == want
    assert [shard.bucket(k, 4) for k in ("a.mp4", "b.mp4", "c.mp4", "d/e.png")] == [0, 0, 1, 1]


def test_parse_and_bad_shards():
    assert shard.parse("1/4") == shard.Shard(1, 4) and str(shard.parse(" 0/2 ")) == "0/2"
    for bad in ("4/4", "-1/2", "1", "a/b", "1/0"):
        with pytest.raises(shard.ShardError) as exc:
            shard.parse(bad)
        assert exc.value.exit_code == EXIT_START


@pytest.mark.parametrize("env, expected", [
    ({}, None),
    ({"COLOURBATCH_SHARD": "2/5", "RANK": "0", "WORLD_SIZE": "2"}, shard.Shard(2, 5)),
    ({"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "8"}, shard.Shard(3, 8)),
    # --array=0-8:2 runs tasks 0, 2, 4, 6, 8: five shards, none skipped.
    ({"SLURM_ARRAY_TASK_ID": "8", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_STEP": "2",
      "SLURM_ARRAY_TASK_COUNT": "5"}, shard.Shard(4, 5)),
    ({"JOB_COMPLETION_INDEX": "3", "COLOURBATCH_SHARDS": "10"}, shard.Shard(3, 10)),
    ({"RANK": "1", "WORLD_SIZE": "2"}, shard.Shard(1, 2)),
    ({"RANK": "0", "WORLD_SIZE": "1"}, None),
])
def test_shard_from_scheduler_environment(env, expected):
    assert shard.from_env(env) == expected


def test_slurm_task_off_its_grid_is_refused():
    with pytest.raises(shard.ShardError, match="grid"):
        shard.from_env({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_STEP": "2",
                        "SLURM_ARRAY_TASK_COUNT": "5"})


def test_half_set_environment_is_refused():
    with pytest.raises(shard.ShardError, match="COLOURBATCH_SHARDS"):
        shard.from_env({"JOB_COMPLETION_INDEX": "0"})
    with pytest.raises(shard.ShardError, match="whole numbers"):
        shard.from_env({"RANK": "x", "WORLD_SIZE": "2"})


def test_flag_wins_over_environment():
    assert shard.resolve("0/3", {"RANK": "1", "WORLD_SIZE": "2"}) == shard.Shard(0, 3)
    assert shard.resolve(None, {"RANK": "1", "WORLD_SIZE": "2"}) == shard.Shard(1, 2)
