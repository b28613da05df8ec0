"""Overhead of the Ray runner: 8 units of a worker that sleeps, Ray against a plain loop.

    python benchmarks/cluster.py [--units 8] [--seconds 0.5]

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=0.5)
    args = parser.parse_args()
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
