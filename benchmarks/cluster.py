"""Overhead of the Ray runner: 8 units of a worker that sleeps, Ray against a plain loop;
and with --films, `colourbatch video films/` on 8 real small clips, plain against --ray.

    python benchmarks/cluster.py [--units 8] [--seconds 0.5]
    python benchmarks/cluster.py --films 8 [--film-seconds 3] [--weights weights/default.pt]

With --films: the plain run is the library's colour_videos in this process with
torch on every core; the Ray runs start a local instance with 1 or 2 CPUs
(one worker per CPU, each loading the model once, torch on one thread each),
cold (the run's own ray.init and shutdown are inside the time).

Each unit sleeps `seconds` (a stand-in for colouring a film, so the numbers
measure the engine, not the model). Prints wall times and their ratio to the
plain sequential loop in this process:

* ray cold: run_units starting and stopping its own local Ray instance (what
  `--ray` without an address does);
* ray warm: Ray already running (a long-lived cluster); the run still starts
  its actors, which is where each worker would load the model.

All rows are measured in this one run, so their ratios hold on a noisy machine.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from colourbatch import cluster  # noqa: E402


class Sleeper:
    def __init__(self, seconds: float):
        self.seconds = seconds

    def process(self, unit):
        time.sleep(self.seconds)
        return unit.key


class Factory:
    def __init__(self, seconds: float):
        self.seconds = seconds

    def __call__(self):
        return Sleeper(self.seconds)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def films(count: int, seconds: float, weights: str | None) -> None:
    """Real clips: colour_videos in this process against the same plan on a local Ray instance."""
    import logging
    import shutil
    import tempfile
    from pathlib import Path

    import ray

    from benchmarks.video import make_clip
    from colourbatch.config import RunConfig, VideoConfig
    from colourbatch.video import colour_videos, plan_videos

    root = Path(tempfile.mkdtemp(prefix="cb-cluster-"))
    try:
        src = root / "films"
        src.mkdir()
        for i in range(count):
            make_clip(src / f"f{i}.mp4", 320, 240, seconds)
        vcfg = VideoConfig(preset="veryfast")
        rows = []
        for name, ray_cpus in (("sequential, in process", None), ("ray cold, 1 worker", 1),
                               ("ray cold, 2 workers", 2)):
            out = root / f"out-{ray_cpus}"
            out.mkdir()
            plan = plan_videos([src], out, vcfg)
            run = RunConfig(weights=weights, workers=1, batch_size=16,
                            ray=bool(ray_cpus))
            start = time.perf_counter()
            if ray_cpus:
                os.environ["OMP_NUM_THREADS"] = "1"  # one torch thread per worker: no oversubscription
                with cluster._workers_import_this_code():
                    ray.init(num_cpus=ray_cpus, include_dashboard=False, log_to_driver=False,
                             logging_level=logging.ERROR)
            try:
                result = colour_videos(plan, run, vcfg)
            finally:
                if ray_cpus:
                    ray.shutdown()
                    os.environ.pop("OMP_NUM_THREADS", None)
            rows.append((name, time.perf_counter() - start))
            assert result.ok and len(result.reports) == count, result.failed
        frames = sum(r.frames_out for r in result.reports)
        print(f"{count} films of {seconds:g} s at 320x240 ({frames} frames), x264 veryfast, "
              f"{cluster._local_cpus()} CPUs, ray {ray.__version__}")
        for name, secs in rows:
            print(f"{name:28s} {secs:7.2f} s   x{secs / rows[0][1]:.2f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=0.5)
    parser.add_argument("--films", type=int, default=0, help="colour this many real clips instead")
    parser.add_argument("--film-seconds", type=float, default=3.0)
    parser.add_argument("--weights", default=None, help="weights file (default: the shipped default)")
    args = parser.parse_args()
    if args.films:
        films(args.films, args.film_seconds, args.weights)
        return
    units = [cluster.Unit(f"u{i}") for i in range(args.units)]
    factory = Factory(args.seconds)

    def sequential():
        worker = factory()
        for unit in units:
            worker.process(unit)

    def on_ray(workers):
        report = cluster.run_units(units, factory, workers=workers, gpus_per_worker=0)
        assert len(report.done) == len(units), report.failed

    import logging

    import ray

    rows = [("sequential, in process", timed(sequential))]
    for workers in (1, 2):
        rows.append((f"ray cold, {workers} worker(s)", timed(lambda: on_ray(workers))))
    start = time.perf_counter()
    with cluster._workers_import_this_code():
        ray.init(num_cpus=cluster._local_cpus(), include_dashboard=False, log_to_driver=False,
                 logging_level=logging.ERROR)
    rows.append(("ray.init alone (local)", time.perf_counter() - start))
    try:
        for workers in (1, 2):
            rows.append((f"ray warm, {workers} worker(s)", timed(lambda: on_ray(workers))))
    finally:
        ray.shutdown()
    base = rows[0][1]
    print(f"{args.units} units x {args.seconds:g} s, {cluster._local_cpus()} CPUs, ray {ray.__version__}")
    for name, seconds in rows:
        print(f"{name:28s} {seconds:7.2f} s   x{seconds / base:.2f}")


if __name__ == "__main__":
    main()
