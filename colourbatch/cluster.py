"""Running independent work units (one film, one page file or archive) on a Ray cluster.

This module owns the scale-out engine and nothing about what a unit is: the
caller hands it `Unit`s and a factory that builds a `Worker` (anything with
``process(unit) -> result``). Each Ray actor calls the factory once, so a model
loads once per worker, not once per unit, and takes the next unit whenever it
finishes one (dynamic load balancing: a long film never holds up short ones).

Guarantees:

* one unit's failure is its own: an exception from ``process()`` is recorded as
  (key, one-line reason) and the others go on;
* a worker whose process dies (segfault, OOM kill) is restarted by Ray and the
  unit it held is retried, at most `retries` times, then listed as failed with
  the number of deaths; a unit is never silently lost, and one that finished is
  never handed out again (a unit whose worker died after finishing it but
  before reporting back is redone, which atomic outputs make harmless);
* nothing waits forever on a worker that cannot start: a factory that raises
  retires its worker at once, one that does not answer within `START_TIMEOUT`
  (or `RESTART_TIMEOUT` after a death) is given up; with no worker left, the
  run ends (WorkerStartError if none ever started);
* the runner never writes files (workers write their outputs themselves through
  `files.atomic_output`) and never prints: progress goes to `on_event`.

Ray is an optional extra (``pip install "colourbatch[ray]"``) and is imported
only inside functions, so this module imports without it.
"""
from __future__ import annotations

import collections
import contextlib
import logging
import os
import re
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

from .errors import EXIT_START, ColourbatchError, UsageError, one_line

#: CPUs Ray reserves for each worker: its decode and model threads.
CPUS_PER_WORKER = 1
#: Seconds a new worker may take to answer (placement, model load) before it is given up.
START_TIMEOUT = 600.0
#: Seconds to wait for a cluster's address to answer before refusing it.
CONNECT_TIMEOUT = 10.0
#: Seconds a restarting worker may take to answer again before it is given up.
RESTART_TIMEOUT = 300.0

log = logging.getLogger(__name__)

#: Colour codes Ray puts in its error texts.
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class ClusterError(ColourbatchError):
    """The cluster run could not start: no Ray, no cluster, no room or no worker (exit 2)."""

    exit_code = EXIT_START


class RayMissing(ClusterError):
    """Ray is not installed."""

    def __init__(self, message: str = 'Ray is not installed: pip install "colourbatch[ray]"'):
        super().__init__(message)


class WorkerStartError(ClusterError):
    """No worker could be started (the factory failed, or none was placed in time)."""


@dataclass(frozen=True)
class Unit:
    """One independent piece of work: `key` names it (display, sharding), `payload` is the worker's."""

    key: str
    payload: Any = None


class Worker(Protocol):
    """What a worker factory returns: built once per Ray actor, then handed units one by one."""

    def process(self, unit: Unit) -> Any: ...


@dataclass
class ClusterReport:
    """What a cluster run did: results and failures in the order the units were given."""

    done: list[tuple[str, Any]] = field(default_factory=list)     # (key, result of process())
    failed: list[tuple[str, str]] = field(default_factory=list)   # (key, one-line reason)
    seconds: float = 0.0                                           # wall time of the whole run
    workers: int = 0                                               # Ray actors started

    @property
    def ok(self) -> bool:
        return not self.failed


def _ray():
    """The ray module, or RayMissing."""
    try:
        import ray
    except ImportError:
        raise RayMissing() from None
    return ray


def _reason(exc: BaseException) -> str:
    """One line for a failed unit: our errors speak for themselves, others keep their type."""
    if isinstance(exc, ColourbatchError):
        return one_line(exc)
    text = one_line(str(exc)) if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _Host:
    """The body of each Ray actor: builds the worker once and runs units on it.

    Exceptions never leave `run()`: a unit's failure comes back as a value, so
    the only errors the driver sees from an actor are its process dying.
    """

    def __init__(self, factory: Callable[[], Worker]):
        self._worker, self._broken = None, None
        try:
            self._worker = factory()
        except Exception as exc:  # reported by ready(); the driver retires this worker
            self._broken = _reason(exc)

    def ready(self) -> str | None:
        """None when the worker is built, else why it could not be."""
        return self._broken

    def run(self, unit: Unit) -> tuple[str, Any]:
        try:
            return "done", self._worker.process(unit)
        except Exception as exc:
            return "failed", _reason(exc)


@contextlib.contextmanager
def _connected(ray, address: str | None):
    """Ray connected for the block: an existing connection, `address`, or a local instance.

    Only a connection made here is shut down at the end.
    """
    if ray.is_initialized():
        yield
        return
    quiet = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    try:
        if address is None:
            with _workers_import_this_code():
                ray.init(num_cpus=_local_cpus(), **quiet)
        else:
            _reachable(address)
            ray.init(address=address, **quiet)
    except ClusterError:
        raise
    except Exception as exc:  # ConnectionError, RuntimeError, ValueError: all mean "no cluster"
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise ClusterError(f"cannot start {where}: {one_line(exc)}") from None
    try:
        yield
    finally:
        ray.shutdown()


@contextlib.contextmanager
def _workers_import_this_code():
    """PYTHONPATH led by this colourbatch's folder while a local Ray instance starts.

    Its processes inherit the environment, so its workers import the very code
    the driver runs, even from a source tree. A runtime_env would do the same
    but costs seconds per run (no pre-started workers can serve it).
    """
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (root, before) if p)
    try:
        yield
    finally:
        if before is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = before


def _reachable(address: str) -> None:
    """Refuse at once a host:port nobody answers on; Ray itself retries for minutes."""
    host, sep, port = address.rpartition("://")[2].rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto", or a form Ray resolves itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT).close()
    except OSError as exc:
        raise ClusterError(f"no Ray cluster answers at {address} ({exc.strerror or exc})") from None


def _local_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def _raylet_lines_to_log(ray):
    """Send the raylet's notices ("A worker died...") to our logger instead of stdout.

    Ray's driver prints them from a background thread whatever log_to_driver says;
    only cli.py may print, and worker deaths already reach on_event as retries.
    The hook is private to Ray, so when it is not there we leave Ray as it is.
    """
    module = getattr(getattr(ray, "_private", None), "worker", None)
    original = getattr(module, "print_to_stdstream", None)
    if original is None:
        yield
        return

    def route(data, *args, **kwargs):
        if data.get("pid") == "raylet":
            for line in data.get("lines", []):
                log.info("ray: %s", line)
        else:
            original(data, *args, **kwargs)

    module.print_to_stdstream = route
    try:
        yield
    finally:
        module.print_to_stdstream = original


def _plan_workers(ray, units: int, workers: int | None, gpus_per_worker: float | None):
    """(workers, gpus per worker) for this cluster, refusing what it can never place."""
    if workers is not None and workers < 1:
        raise UsageError(f"workers must be at least 1 (got {workers})")
    if gpus_per_worker is not None and gpus_per_worker < 0:
        raise UsageError(f"gpus per worker cannot be negative (got {gpus_per_worker})")
    have = ray.cluster_resources()
    cpus, gpus = have.get("CPU", 0), have.get("GPU", 0)
    if gpus_per_worker is None:
        gpus_per_worker = 1 if gpus >= 1 else 0
    if gpus_per_worker > gpus:
        raise ClusterError(f"a worker asks for {gpus_per_worker:g} GPU but the cluster has {gpus:g}")
    if cpus < CPUS_PER_WORKER:
        raise ClusterError(f"the cluster has {cpus:g} CPUs; a worker needs {CPUS_PER_WORKER}")
    if workers is None:
        # As many as fit now; more could wait for an autoscaler, which the caller can ask for.
        workers = int(cpus // CPUS_PER_WORKER)
        if gpus_per_worker:
            workers = min(workers, int(gpus // gpus_per_worker))
    return max(1, min(workers, units)), gpus_per_worker


def run_units(
    units: Sequence[Unit],
    worker_factory: Callable[[], Worker],
    *,
    address: str | None = None,
    workers: int | None = None,
    gpus_per_worker: float | None = None,
    retries: int = 2,
    on_event: Callable[[str, dict], None] | None = None,
) -> ClusterReport:
    """Run every unit on a Ray cluster, each on the next free worker; see the module doc.

    address: a Ray cluster ("auto", "ray://host:10001", "host:6379"), whose nodes have
        colourbatch installed; None starts a local instance sized to this machine
        and stops it at the end. A connection this process already has is used
        as it is, whatever `address` says.
    workers: Ray actors to start; None = as many as the cluster's CPUs (or GPUs) hold,
        never more than there are units.
    gpus_per_worker: None = 1 when the cluster has GPUs, else 0. Ray then sets
        CUDA_VISIBLE_DEVICES in each actor, so the factory's "cuda" is its own GPU.
    retries: how many times a unit whose worker died is tried again.
    on_event: called as on_event("start", {"units", "workers"}), on_event("retry",
        {"key", "reason", "attempt"}) when a unit's worker died and it goes back
        in the queue, on_event("unit", {"key", "outcome": "done"|"failed",
        "reason", "result"}) once per unit, and on_event("end", {"done",
        "failed", "seconds", "workers"}).

    Raises UsageError, RayMissing, ClusterError or WorkerStartError (all exit 2)
    when nothing could start; per-unit failures are in the report, never raised
    (if every worker is lost part-way, the units left fail as "no worker left").
    """
    if retries < 0:
        raise UsageError(f"retries cannot be negative (got {retries})")
    keys = [u.key for u in units]
    if len(set(keys)) != len(keys):
        raise UsageError("two units share a key; keys name outputs and must be unique")
    ray = _ray()
    emit = on_event or (lambda kind, data: None)
    start = time.monotonic()
    count, outcomes = 0, {}
    if not units:  # nothing to do: no cluster to start or join
        emit("start", {"units": 0, "workers": 0})
    else:
        with _connected(ray, address), _raylet_lines_to_log(ray):
            count, gpus = _plan_workers(ray, len(units), workers, gpus_per_worker)
            emit("start", {"units": len(units), "workers": count})
            outcomes = _Pool(ray, units, worker_factory, count, gpus, retries, emit).run()
    report = ClusterReport(workers=count)
    for unit in units:
        outcome, value = outcomes[unit.key]
        (report.done if outcome == "done" else report.failed).append((unit.key, value))
    report.seconds = time.monotonic() - start
    emit("end", {"done": len(report.done), "failed": len(report.failed),
                 "seconds": report.seconds, "workers": report.workers})
    return report


class _Pool:
    """The dispatch loop: one call in flight per actor, answered with ray.wait.

    An actor is in one of three states: starting or restarting (a ready() call
    in flight), busy (a run() in flight), or idle; a retired actor is dropped.
    """

    def __init__(self, ray, units, factory, count, gpus, retries, emit):
        self.ray, self.retries, self.emit = ray, retries, emit
        self.queue = collections.deque(units)
        self.total = len(units)
        self.deaths: dict[str, int] = collections.Counter()
        self.outcomes: dict[str, tuple[str, Any]] = {}
        # max_restarts=-1: deaths are bounded by the units' retries and RESTART_TIMEOUT,
        # not by a per-actor count that one bad film could use up for all the others.
        # max_task_retries=0: we retry units ourselves, on any worker, and count deaths.
        remote = ray.remote(num_cpus=CPUS_PER_WORKER, num_gpus=gpus, max_restarts=-1,
                            max_task_retries=0)(_Host)
        self.actors = [remote.remote(factory) for _ in range(count)]
        self.idle: list[Any] = []
        self.inflight: dict[Any, tuple[Any, str, Unit | None]] = {}
        self.deadlines: dict[Any, tuple[float, str]] = {}  # actor -> (answer by, why if not)
        self.started_any = False
        self.last_loss = ""

    def run(self) -> dict[str, tuple[str, Any]]:
        try:
            self._loop()
        finally:
            for actor in self.actors:
                with contextlib.suppress(Exception):
                    self.ray.kill(actor, no_restart=True)
        return self.outcomes

    def _loop(self) -> None:
        for actor in self.actors:
            self._ping(actor, START_TIMEOUT, "did not start")
        while len(self.outcomes) < self.total:
            while self.idle and self.queue:
                unit = self.queue.popleft()
                actor = self.idle.pop()
                self.inflight[actor.run.remote(unit)] = (actor, "run", unit)
            if not self.inflight:  # units wait in the queue, and every worker is retired
                if not self.started_any:
                    raise WorkerStartError(f"no worker could start: {self.last_loss}")
                while self.queue:
                    self._finish(self.queue.popleft(), "failed", f"no worker left ({self.last_loss})")
                return
            # Wait for the next answer, but not past the time a (re)starting worker has to answer.
            first = min((when for when, _ in self.deadlines.values()), default=None)
            timeout = None if first is None else max(0.0, first - time.monotonic())
            ready, _ = self.ray.wait(list(self.inflight), num_returns=1, timeout=timeout)
            if not ready:
                self._retire_late()
                continue
            actor, call, unit = self.inflight.pop(ready[0])
            if call == "ready":
                self._answered_ready(ready[0], actor)
            else:
                self._answered_run(ready[0], actor, unit)

    def _ping(self, actor, limit: float, late: str) -> None:
        """Ask `actor` whether it is ready; it is retired if it has not said so in `limit` s."""
        self.deadlines.setdefault(actor, (time.monotonic() + limit, f"worker {late} within {limit:g} s"))
        self.inflight[actor.ready.remote()] = (actor, "ready", None)

    def _retire_late(self) -> None:
        now = time.monotonic()
        for actor, (when, why) in list(self.deadlines.items()):
            if when <= now:
                self._retire(actor, why)
                for ref in [r for r, (a, _, _) in self.inflight.items() if a == actor]:
                    del self.inflight[ref]  # only ready() calls: a busy worker has no deadline

    def _retire(self, actor, reason: str) -> None:
        self.last_loss = reason
        self.actors.remove(actor)
        self.deadlines.pop(actor, None)
        with contextlib.suppress(Exception):
            self.ray.kill(actor, no_restart=True)

    def _answered_ready(self, ref, actor) -> None:
        try:
            broken = self.ray.get(ref)
        except _unavailable(self.ray):  # restarting: ask again until its deadline
            time.sleep(0.1)  # Ray answers at once while it restarts; do not spin
            self._ping(actor, RESTART_TIMEOUT, "did not come back")
            return
        except self.ray.exceptions.RayError as err:
            self._retire(actor, f"worker died ({_ray_reason(self.ray, err)})")
            return
        if broken is not None:
            self._retire(actor, f"worker could not start: {broken}")
            return
        self.started_any = True
        self.deadlines.pop(actor, None)
        self.idle.append(actor)

    def _answered_run(self, ref, actor, unit: Unit) -> None:
        exc = self.ray.exceptions
        try:
            outcome, value = self.ray.get(ref)
        except exc.RayActorError as err:
            # The worker's process died holding this unit (maybe because of it).
            self.deaths[unit.key] += 1
            died, why = self.deaths[unit.key], _ray_reason(self.ray, err)
            if died > self.retries:
                self._finish(unit, "failed", f"worker died {died} times ({why})")
            else:
                self.emit("retry", {"key": unit.key, "reason": why, "attempt": died + 1})
                self.queue.append(unit)
            # Restarting: used again once it answers; dead: retired then.
            self._ping(actor, RESTART_TIMEOUT, "did not come back")
            return
        except exc.RayError as err:  # the result could not come back (e.g. unpicklable)
            outcome, value = "failed", _ray_reason(self.ray, err)
        self._finish(unit, outcome, value)
        self.idle.append(actor)

    def _finish(self, unit: Unit, outcome: str, value: Any) -> None:
        self.outcomes[unit.key] = (outcome, value)
        self.emit("unit", {"key": unit.key, "outcome": outcome,
                           "reason": value if outcome == "failed" else None,
                           "result": value if outcome == "done" else None})


def _unavailable(ray) -> tuple:
    """Ray's "restarting, ask again later" error (Ray >= 2.22); older Rays queue the call instead."""
    cls = getattr(ray.exceptions, "ActorUnavailableError", None)
    return (cls,) if cls else ()


def _ray_reason(ray, err: BaseException) -> str:
    """Why Ray says a call failed, in one plain line."""
    lines = [line.strip() for line in _ANSI.sub("", str(err)).splitlines() if line.strip()]
    if isinstance(err, _unavailable(ray)):
        return "its process was lost: a crash, a kill or out of memory"
    if lines and (getattr(err, "actor_init_failed", False) or isinstance(err, ray.exceptions.RayTaskError)):
        return one_line(lines[-1])  # the cause ends the traceback Ray carries
    return one_line(lines[0]) if lines else type(err).__name__
