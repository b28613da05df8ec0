"""The Ray runner: balanced units, isolated failures, dead workers redone, typed errors.

The Ray tests share one local Ray instance with 2 CPUs (started once for the
module: it takes seconds); the workers are trivial and write real files.
"""
import os
import signal
import socket
import sys
import threading
from pathlib import Path

import pytest

from colourbatch import cluster, files
from colourbatch.errors import EXIT_START, InputError, UsageError


class Copier:
    """A worker: writes '<payload text> by <pid>' to the unit's output, atomically.

    `tag` folder records each build (its pid, a line in `built`) and each start/end
    of a unit (a line in `log`), so the tests can count them across processes.
    """

    def __init__(self, tag: Path):
        self.tag = tag
        if (tag / "sick").exists():  # a worker that now crashes whenever it starts
            os.kill(os.getpid(), signal.SIGKILL)
        with open(tag / "built", "a") as f:
            f.write(f"{os.getpid()}\n")

    def process(self, unit):
        text, dst, mode = unit.payload
        self._note("start", unit.key)
        if mode == "broken":
            raise InputError(f"cannot decode {unit.key}")
        if mode == "kill" or (mode == "kill-once" and not (self.tag / f"killed-{unit.key}").exists()):
            (self.tag / f"killed-{unit.key}").write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        if mode == "sicken":
            (self.tag / "sick").touch()
            os.kill(os.getpid(), signal.SIGKILL)
        if mode == "unpicklable":
            return threading.Lock()
        files.write_bytes(dst, f"{text} by {os.getpid()}".encode())
        self._note("end", unit.key)
        return {"bytes": Path(dst).stat().st_size}

    def _note(self, what, key):
        with open(self.tag / "log", "a") as f:  # one short O_APPEND write: whole lines across processes
            f.write(f"{what} {key}\n")


class Factory:
    """Picklable worker factory (a lambda over a test's tmp_path would be too)."""

    def __init__(self, tag):
        self.tag = tag

    def __call__(self):
        return Copier(self.tag)


class BrokenFactory:
    def __call__(self):
        raise FileNotFoundError("weights.pt: no such file")


class MissingFactory:
    """Unpickles on a worker only where a module exists: as when colourbatch is not installed there."""

    def __reduce__(self):
        import importlib

        return importlib.import_module, ("colourbatch_not_on_this_node",)


def job(tmp_path, modes):
    """Units u0..uN-1 writing out/uI.txt, with the given modes, and the tag folder."""
    tag = tmp_path / "tag"
    tag.mkdir()
    units = [cluster.Unit(f"u{i}", (f"text {i}", str(tmp_path / "out" / f"u{i}.txt"), mode))
             for i, mode in enumerate(modes)]
    return units, Factory(tag), tag


def lines(tag, what):
    text = (tag / "log").read_text() if (tag / "log").exists() else ""
    return sorted(line.split()[1] for line in text.splitlines() if line.startswith(what + " "))


def builds(tag):
    """The pids of the processes that built a worker, one entry per build."""
    return (tag / "built").read_text().split()


def pid_of(out):
    return out.read_text().split(" by ")[1]


def test_local_instance_is_started_for_the_run_and_stopped(tmp_path):
    """First in the file: it runs before the module's shared instance exists."""
    ray = pytest.importorskip("ray", reason="Ray not installed (pip install -e '.[ray]')")
    was = ray.is_initialized()
    units, factory, _ = job(tmp_path, ["ok"])
    monkeypatched = pytest.MonkeyPatch()
    # The workers import this test module for Factory.
    monkeypatched.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (str(Path(__file__).resolve().parent), os.environ.get("PYTHONPATH")) if p))
    try:
        report = cluster.run_units(units, factory, workers=1)
    finally:
        monkeypatched.undo()
    assert [k for k, _ in report.done] == ["u0"] and report.workers == 1
    assert ray.is_initialized() == was  # stopped again only when the run started it


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray", reason="Ray not installed (pip install -e '.[ray]')")
    import logging

    # The workers (children of this Ray instance) import this test module, for Factory.
    here = str(Path(__file__).resolve().parent)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PYTHONPATH", os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p))
        with cluster._workers_import_this_code():
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.ERROR)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def batch(ray_local, tmp_path_factory):
    """8 units on 2 workers, u3 broken: run once, looked at by several tests."""
    tmp = tmp_path_factory.mktemp("batch")
    units, factory, tag = job(tmp, ["ok"] * 3 + ["broken"] + ["ok"] * 4)
    events = []
    report = cluster.run_units(units, factory, workers=2, gpus_per_worker=0,
                               on_event=lambda kind, data: events.append((kind, data)))
    return report, events, tmp, tag


def test_broken_unit_is_listed_and_the_others_finish(batch):
    report, events, tmp, _ = batch
    keys = [f"u{i}" for i in range(8) if i != 3]
    assert [k for k, _ in report.done] == keys  # in the order given
    assert report.failed == [("u3", "cannot decode u3")]
    assert report.workers == 2 and not report.ok
    outputs = sorted(p.name for p in (tmp / "out").iterdir())
    assert outputs == sorted(f"{k}.txt" for k in keys)  # no temporary file left, nothing for u3
    assert (tmp / "out" / "u5.txt").read_text().startswith("text 5 by ")
    assert dict(report.done)["u0"] == {"bytes": len((tmp / "out" / "u0.txt").read_bytes())}


def test_each_worker_builds_once_not_per_unit(batch):
    _, _, tmp, tag = batch
    built = builds(tag)
    assert 1 <= len(built) <= 2 and len(set(built)) == len(built)  # a build per worker process
    assert {pid_of(p) for p in (tmp / "out").iterdir()} <= set(built)
    assert lines(tag, "start") == sorted(f"u{i}" for i in range(8))  # each unit handed out once


def test_progress_events(batch):
    report, events, _, _ = batch
    kinds = [k for k, _ in events]
    assert kinds == ["start"] + ["unit"] * 8 + ["end"]
    assert events[0][1] == {"units": 8, "workers": 2}
    failed = [d for k, d in events if k == "unit" and d["outcome"] == "failed"]
    assert failed == [{"key": "u3", "outcome": "failed", "reason": "cannot decode u3", "result": None}]
    assert events[-1][1]["done"] == 7 and events[-1][1]["failed"] == 1


def test_killed_worker_is_restarted_and_its_unit_redone_once(ray_local, tmp_path, capfd):
    # One worker: the unit can only be redone if Ray restarts the worker and we use it again.
    units, factory, tag = job(tmp_path, ["ok", "kill-once", "ok", "ok"])
    events = []
    report = cluster.run_units(units, factory, workers=1, gpus_per_worker=0,
                               on_event=lambda kind, data: events.append((kind, data)))
    assert report.failed == [] and [k for k, _ in report.done] == ["u0", "u1", "u2", "u3"]
    assert lines(tag, "end") == ["u0", "u1", "u2", "u3"]  # each finished exactly once
    assert lines(tag, "start") == ["u0", "u1", "u1", "u2", "u3"]  # only the killed one twice
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"u{i}.txt" for i in range(4)]
    assert [(d["key"], d["attempt"]) for k, d in events if k == "retry"] == [("u1", 2)]
    killed = (tag / "killed-u1").read_text()
    built = builds(tag)
    assert len(built) == 2 and built[0] == killed  # built once, then once more after the kill
    assert pid_of(tmp_path / "out" / "u1.txt") == built[1]  # redone by the restarted worker
    out, err = capfd.readouterr()
    assert "worker died" not in out + err  # Ray's notice goes to our logger; only cli.py prints


def test_unit_that_always_kills_its_worker_fails_after_retries(ray_local, tmp_path):
    units, factory, tag = job(tmp_path, ["kill", "ok", "ok"])
    report = cluster.run_units(units, factory, workers=2, gpus_per_worker=0, retries=1)
    assert [k for k, _ in report.done] == ["u1", "u2"]
    [(key, reason)] = report.failed
    assert key == "u0" and reason.startswith("worker died 2 times")
    assert lines(tag, "start").count("u0") == 2
    assert not (tmp_path / "out" / "u0.txt").exists()


def test_worker_that_cannot_come_back_ends_the_run(ray_local, tmp_path, monkeypatch):
    monkeypatch.setattr(cluster, "RESTART_TIMEOUT", 3.0)
    units, factory, _ = job(tmp_path, ["ok", "sicken", "ok"])
    report = cluster.run_units(units, factory, workers=1, gpus_per_worker=0)
    assert [k for k, _ in report.done] == ["u0"]
    assert [k for k, _ in report.failed] == ["u1", "u2"]
    if hasattr(ray_local.exceptions, "ActorUnavailableError"):  # Ray >= 2.22 keeps restarting it
        reasons = {"no worker left (worker did not come back within 3 s)"}
    else:  # older Rays give up on it themselves
        reasons = {"no worker left (worker died (The actor died unexpectedly before finishing this task.))"}
    assert {reason for _, reason in report.failed} == reasons


def test_factory_that_fails_ends_the_run_before_any_unit(ray_local, tmp_path):
    with pytest.raises(cluster.WorkerStartError) as exc:
        cluster.run_units([cluster.Unit("a")], BrokenFactory(), workers=1, gpus_per_worker=0)
    assert exc.value.exit_code == EXIT_START
    assert "weights.pt: no such file" in str(exc.value)


def test_worker_that_cannot_load_our_code_ends_the_run(ray_local):
    with pytest.raises(cluster.WorkerStartError) as exc:
        cluster.run_units([cluster.Unit("a")], MissingFactory(), workers=1, gpus_per_worker=0)
    assert "No module named 'colourbatch_not_on_this_node'" in str(exc.value)
    assert "\n" not in str(exc.value) and "\x1b" not in str(exc.value)


def test_result_that_cannot_come_back_fails_only_its_unit(ray_local, tmp_path):
    units, factory, _ = job(tmp_path, ["unpicklable", "ok"])
    report = cluster.run_units(units, factory, workers=1, gpus_per_worker=0)
    assert [k for k, _ in report.done] == ["u1"]
    [(key, reason)] = report.failed
    assert key == "u0" and "lock" in reason and "\n" not in reason


def test_without_ray_a_typed_error_with_the_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` raise ImportError
    with pytest.raises(cluster.RayMissing) as exc:
        cluster.run_units([cluster.Unit("a")], Factory(None))
    assert exc.value.exit_code == EXIT_START
    assert str(exc.value) == 'Ray is not installed: pip install "colourbatch[ray]"'


def test_an_address_nobody_answers_on_is_refused_at_once():
    """Ray's own connect retries for minutes; run_units asks this before ray.init."""
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        with pytest.raises(cluster.ClusterError) as exc:
            cluster._reachable(address)
        assert exc.value.exit_code == EXIT_START and f"127.0.0.1:{port}" in str(exc.value)
    with socket.create_server(("127.0.0.1", 0)) as server:
        cluster._reachable(f"127.0.0.1:{server.getsockname()[1]}")  # one that answers passes
    cluster._reachable("auto")  # Ray finds that one itself


def test_no_units_start_nothing():
    ray = pytest.importorskip("ray", reason="Ray not installed (pip install -e '.[ray]')")
    was, events = ray.is_initialized(), []
    report = cluster.run_units([], Factory(None), on_event=lambda kind, data: events.append(kind))
    assert (report.done, report.failed, report.workers) == ([], [], 0)
    assert events == ["start", "end"] and ray.is_initialized() == was


def test_duplicate_keys_are_refused():
    with pytest.raises(UsageError):
        cluster.run_units([cluster.Unit("a"), cluster.Unit("a")], Factory(None))


class FakeRay:
    def __init__(self, **have):
        self.have = have

    def cluster_resources(self):
        return self.have


def test_workers_and_gpus_fit_the_cluster():
    plan = cluster._plan_workers
    assert plan(FakeRay(CPU=16), 100, None, None) == (16, 0)
    assert plan(FakeRay(CPU=16, GPU=4), 100, None, None) == (4, 1)  # one GPU each by default
    assert plan(FakeRay(CPU=16, GPU=4), 100, None, 0.5) == (8, 0.5)
    assert plan(FakeRay(CPU=16, GPU=4), 3, None, None) == (3, 1)  # never more workers than units
    assert plan(FakeRay(CPU=2), 8, 6, 0) == (6, 0)  # asked for: the extra wait for an autoscaler
    with pytest.raises(cluster.ClusterError):
        plan(FakeRay(CPU=16), 8, None, 1)  # a GPU asked of a cluster without one would never place
    with pytest.raises(UsageError):
        plan(FakeRay(CPU=16), 8, 0, None)


def test_reasons_are_one_line_and_keep_the_type():
    assert cluster._reason(InputError("bad header\nmore")) == "bad header"
    assert cluster._reason(ValueError("x\ny")) == "ValueError: x"
    assert cluster._reason(KeyError()) == "KeyError"


# ------------------------------------------------------- the commands on Ray
def test_video_folder_on_ray_lists_the_broken_film_and_finishes_the_rest(ray_local, tmp_path,
                                                                         make_clip, tiny_tinted_weights):
    from click.testing import CliRunner

    from colourbatch.cli import cli

    films = tmp_path / "films"
    films.mkdir()
    for i in range(3):
        make_clip(f"films/f{i}.mp4", frames=4)
    whole = make_clip("whole.mp4", frames=30, faststart=True).read_bytes()
    (films / "cut.mp4").write_bytes(whole[: len(whole) * 4 // 5])  # fails on its worker: truncated
    (films / "notes.mp4").write_text("not a film")                  # refused while planning
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["video", str(films), "-o", str(out), "--ray", "--quiet", "--workers", "0",
                                   "--weights", str(tiny_tinted_weights)])
    assert res.exit_code == 1, res.output
    assert sorted(p.name for p in out.iterdir()) == ["cut.colour.mp4", "f0.colour.mp4", "f1.colour.mp4",
                                                     "f2.colour.mp4"]
    assert "notes.mp4" in res.stderr and "cut.mp4: input truncated" in res.stderr
    assert "2 of 5 film(s) failed" in res.stderr
    assert res.stdout.count(": 4 frames, ") == 3


def test_pages_folder_on_ray(ray_local, tmp_path, seed_weights):
    import zipfile

    import cv2
    import numpy as np
    from click.testing import CliRunner

    from colourbatch.cli import cli

    page = cv2.imencode(".png", np.full((40, 30), 220, np.uint8))[1].tobytes()
    (tmp_path / "in" / "vol").mkdir(parents=True)
    for name in ("a.png", "vol/b.png"):
        (tmp_path / "in" / name).write_bytes(page)
    (tmp_path / "in" / "bad.png").write_bytes(page[:60])  # truncated
    with zipfile.ZipFile(tmp_path / "in" / "book.cbz", "w") as zf:
        zf.writestr("01.png", page)
        zf.writestr("02.png", page)
    res = CliRunner().invoke(cli, ["pages", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--ray",
                                   "--quiet", "--workers", "0", "--weights", str(seed_weights)])
    assert res.exit_code == 1, res.output
    assert "4 coloured" in res.stdout and "1 failed" in res.stdout and "bad.png: truncated PNG" in res.stderr
    with zipfile.ZipFile(tmp_path / "out" / "book.cbz") as zf:
        assert zf.namelist() == ["01.png", "02.png"]
    assert (tmp_path / "out" / "vol" / "b.png").exists() and (tmp_path / "out" / "a.png").exists()
