"""Splitting one job across machines: which inputs belong to shard I of N.

An input (a film, a page file, a whole archive) belongs to exactly one shard,
chosen by a hash of its path relative to the input root it was found under.
The choice depends on nothing else, so adding or removing files never moves
another file to a different shard, every shard can run on its own machine
under any scheduler, and the union of the shards is exactly the whole job.
Because finished outputs are skipped, a re-run of a shard finishes only what
is missing.

The shard comes from `--shard I/N`, else from the environment of the usual
schedulers: COLOURBATCH_SHARD ("I/N"), torchrun (RANK, WORLD_SIZE), SLURM job
arrays (SLURM_ARRAY_TASK_ID, SLURM_ARRAY_TASK_MIN, SLURM_ARRAY_TASK_STEP,
SLURM_ARRAY_TASK_COUNT)
and Kubernetes indexed Jobs (JOB_COMPLETION_INDEX with COLOURBATCH_SHARDS,
since Kubernetes does not export the completion count).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Mapping

from .errors import UsageError


class ShardError(UsageError):
    """A shard that cannot be (index outside 0..N-1, malformed I/N, half-set environment)."""


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count` (0-based)."""

    index: int
    count: int

    def __post_init__(self):
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ShardError(f"shard {self.index}/{self.count}: need 0 <= I < N")

    def owns(self, key: str) -> bool:
        """True when the input named `key` (its path relative to its input root) is ours."""
        return self.count == 1 or bucket(key, self.count) == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def bucket(key: str, count: int) -> int:
    """The shard (0..count-1) of an input key: a hash of the key alone, stable everywhere."""
    digest = hashlib.sha256(key.replace(os.sep, "/").encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") % count


def parse(text: str) -> Shard:
    """'I/N' -> Shard(I, N)."""
    try:
        i, n = (int(part) for part in text.strip().split("/"))
    except ValueError:
        raise ShardError(f"{text!r} is not a shard (use I/N, e.g. 0/4)") from None
    return Shard(i, n)


def from_env(env: Mapping[str, str] | None = None) -> Shard | None:
    """The shard the scheduler's environment describes, or None when it describes none."""
    env = os.environ if env is None else env
    try:
        return _from_env(env)
    except ValueError:
        raise ShardError("the scheduler's shard variables are not whole numbers") from None


def _from_env(env: Mapping[str, str]) -> Shard | None:
    if env.get("COLOURBATCH_SHARD"):
        return parse(env["COLOURBATCH_SHARD"])
    if env.get("SLURM_ARRAY_TASK_ID") and env.get("SLURM_ARRAY_TASK_COUNT"):
        # --array=MIN-MAX:STEP numbers its tasks MIN, MIN+STEP, ...: the shard is the position.
        first = int(env.get("SLURM_ARRAY_TASK_MIN", "0") or 0)
        step = int(env.get("SLURM_ARRAY_TASK_STEP", "1") or 1)
        offset = int(env["SLURM_ARRAY_TASK_ID"]) - first
        if step < 1 or offset % step:
            raise ShardError("SLURM_ARRAY_TASK_ID is not on its array's MIN:STEP grid (an array given as a "
                             "list?): pass --shard I/N or set COLOURBATCH_SHARD")
        return Shard(offset // step, int(env["SLURM_ARRAY_TASK_COUNT"]))
    if env.get("JOB_COMPLETION_INDEX"):
        if not env.get("COLOURBATCH_SHARDS"):
            raise ShardError("JOB_COMPLETION_INDEX is set but not COLOURBATCH_SHARDS "
                             "(the Job's completions): set it, or pass --shard I/N")
        return Shard(int(env["JOB_COMPLETION_INDEX"]), int(env["COLOURBATCH_SHARDS"]))
    if env.get("WORLD_SIZE") and int(env["WORLD_SIZE"]) > 1:
        return Shard(int(env.get("RANK", "0")), int(env["WORLD_SIZE"]))
    return None


def resolve(text: str | None, env: Mapping[str, str] | None = None) -> Shard | None:
    """`--shard` when given, else the environment's shard, else None (the whole job)."""
    return parse(text) if text else from_env(env)
