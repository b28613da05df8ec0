"""data.make_loader: a DataLoader whose worker failures end the run in seconds, typed.

Each case is a way a worker was seen to fail: killed, losing a result
in its queue-feeder thread (an unpicklable item; shared memory that cannot
grow under `ulimit -f`), and outliving a killed parent. Every run sits inside
a deadline, so a regression fails the test instead of hanging the suite.
"""
import os
import resource
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from colourbatch import errors
from colourbatch.data import WorkerError, make_loader

ROOT = Path(__file__).resolve().parents[1]


class Failing(torch.utils.data.Dataset):
    """Eight small tensors; item 3 fails the way `how` says, inside the worker."""

    def __init__(self, how: str):
        self.how = how

    def __len__(self):
        return 8

    def __getitem__(self, i):
        if i == 3:
            if self.how == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if self.how == "unpicklable":
                return lambda: None  # the feeder thread cannot pickle it
            if self.how == "file-size":
                # As under `ulimit -f`: shared memory for the result cannot grow.
                resource.setrlimit(resource.RLIMIT_FSIZE, (1000, resource.RLIM_INFINITY))
                return torch.zeros(100_000)
        return torch.full((4,), i)


def drain(how: str, collate_fn=None):
    for _ in make_loader(Failing(how), 2, 1, collate_fn=collate_fn):
        time.sleep(0.05)


@pytest.mark.parametrize("how", ["kill", "file-size"])
def test_worker_failure_is_a_typed_error_not_a_hang(how, deadline):
    t0 = time.monotonic()
    with deadline(20), pytest.raises(WorkerError) as caught:
        drain(how)
    assert time.monotonic() - t0 < 10
    assert caught.value.exit_code == errors.EXIT_FAILED
    assert "\n" not in str(caught.value)


def test_result_lost_in_the_feeder_thread_kills_the_worker(deadline):
    # torch's queue feeder prints and drops what it cannot send; the parent waited forever.
    with deadline(20), pytest.raises(WorkerError):
        drain("unpicklable", collate_fn=lambda items: items)


def test_file_size_limit_names_its_reason(deadline):
    # A pass-through collate (as pages use) leaves the copy to shared memory to torch's
    # feeder thread; it must happen, and fail, in the worker's own thread instead.
    with deadline(20), pytest.raises(WorkerError, match="File too large"):
        drain("file-size", collate_fn=lambda items: items)


def test_no_exception_is_raised_from_a_signal_handler(monkeypatch):
    # torch's SIGCHLD handler raises wherever the main thread is (inside a finaliser the
    # error is printed with a traceback and lost); deaths are answered at the next wait.
    # torch installs it once per process: make it do so again, whatever ran before.
    monkeypatch.setattr(torch.utils.data._utils.signal_handling, "_SIGCHLD_handler_set", False)
    before = signal.getsignal(signal.SIGCHLD)
    assert [len(b) for b in make_loader(Failing("none"), 4, 1)] == [4, 4]
    assert signal.getsignal(signal.SIGCHLD) is before


def test_in_process_loading_is_unchanged():
    assert [b.tolist() for b in make_loader(Failing("none"), 4, 0)] == [
        [[0] * 4, [1] * 4, [2] * 4, [3] * 4], [[4] * 4, [5] * 4, [6] * 4, [7] * 4]]
    got = [b for b in make_loader(Failing("none"), 4, 1)]
    assert [b[:, 0].tolist() for b in got] == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_workers_die_with_a_killed_parent(tmp_path):
    pid_file = tmp_path / "worker.pid"
    script = textwrap.dedent(f"""
        import os, time, torch
        from colourbatch.data import make_loader
        class Slow(torch.utils.data.Dataset):
            def __len__(self): return 100
            def __getitem__(self, i):
                open({str(pid_file)!r}, "w").write(str(os.getpid()))
                time.sleep(60)
        for _ in make_loader(Slow(), 1, 1):
            pass
    """)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    parent = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        for _ in range(300):
            if pid_file.exists() and pid_file.read_text():
                break
            time.sleep(0.1)
        worker = int(pid_file.read_text())
        parent.kill()
        parent.wait(10)
        for _ in range(50):
            if not _running(worker):
                break
            time.sleep(0.1)
        assert not _running(worker), "the worker outlived its killed parent"
    finally:
        parent.kill()


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")  # a zombie is dead, waiting only to be reaped


def test_video_run_ends_when_its_decoder_dies(tmp_path, make_clip, tiny_tinted_weights, monkeypatch,
                                             deadline):
    # video.py builds its loader with make_loader too: the same guard ends a film's run.
    from colourbatch import video
    from colourbatch.pipeline import RunConfig

    clip = make_clip("a.mp4", frames=12)
    frames = video.FrameStream.__iter__

    def dies(self):
        it = frames(self)
        yield next(it)
        os.kill(os.getpid(), signal.SIGKILL)

    monkeypatch.setattr(video.FrameStream, "__iter__", dies)
    run = RunConfig(weights=str(tiny_tinted_weights), workers=1, batch_size=4, precision="fp32")
    with deadline(30), pytest.raises(WorkerError):
        video.colour_video(clip, tmp_path / "out.mp4", run)
    assert not list(tmp_path.glob("*out*"))  # no partial film left behind


def test_free_memory_goes_back_to_the_kernel_before_the_workers_fork(monkeypatch):
    # What the process holds at the fork is shared copy-on-write with the worker; its free
    # heap is handed back first (device.return_free_memory), while no worker is alive yet.
    import multiprocessing

    from colourbatch import data

    # Children an earlier test left to be reaped are not this loader's workers.
    before = set(multiprocessing.active_children())
    seen = []
    monkeypatch.setattr(data, "return_free_memory",
                        lambda: seen.append(len(set(multiprocessing.active_children()) - before)) or True)
    assert [len(b) for b in make_loader(Failing("none"), 4, 1)] == [4, 4]
    assert seen == [0]
    assert [len(b) for b in make_loader(Failing("none"), 4, 0)] == [4, 4]  # no fork: nothing to do
    assert seen == [0]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the guards are Linux's")
def test_workers_are_forked_whatever_python_defaults_to():
    # _worker_init checks that its parent is this process, and the free memory is handed back
    # before a fork: a forkserver (Python 3.14's default on Linux) would defeat both.
    loader = make_loader(Failing("none"), 4, 1)
    assert loader.multiprocessing_context.get_start_method() == "fork"
