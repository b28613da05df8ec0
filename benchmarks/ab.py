"""A/B of `colourbatch video` between two checkouts of this repository, on the same clips.

    python benchmarks/ab.py CHECKOUT_A CHECKOUT_B [--rounds 2] [--film ../shared/data/media/video/bikes.mp4]
                            [--cases 720:veryfast,720:medium,1080:veryfast] [--films 1]

Makes the real clip at each case's height (benchmarks/floor.real_clip), then colours
it with each checkout's own code, benchmarks/floor.py and shipped weights in a fresh process
(floor.pipeline_fps: a warm model, the steady state), alternating A and B
round by round so that both see the same machine. Prints frames/s and CPU ms a
frame per run and the best of each. `--films N` colours the clip N times in each
process and keeps the last: a folder's later films, which the first leaves its
memory to. For a code change's effect; the ratios to
the floor come from benchmarks/video.py.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import floor  # noqa: E402

CHILD = r'''
import json, sys
sys.path.insert(0, "benchmarks")
from pathlib import Path
import floor
eng = floor.engine("weights/default.pt")
for _ in range(int(sys.argv[3])):
    run = floor.pipeline_fps(Path(sys.argv[1]), eng, sys.argv[2])
print(json.dumps(run))
'''
CASES = "720:veryfast,720:medium,1080:veryfast"
#: Frame sizes by height: floor.SIZES and 576 lines (PAL's height, where old films often are).
SIZES = {**floor.SIZES, 576: (1024, 576)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkouts", nargs=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--film", default="../shared/data/media/video/bikes.mp4")
    ap.add_argument("--cases", default=CASES, help=f"HEIGHT:PRESET,... (heights {sorted(SIZES)})")
    ap.add_argument("--films", type=int, default=1, help="films coloured in each process; the last is kept")
    args = ap.parse_args()
    if args.films < 1:
        ap.error("--films must be 1 or more")
    cases = [(int(h), p) for h, p in (c.split(":") for c in args.cases.split(",") if c)]
    tmp = Path(tempfile.mkdtemp())
    clips = {s: floor.real_clip(tmp / f"real{s}.mp4", Path(args.film), *SIZES[s], 4) for s in {h for h, _ in cases}}
    runs: dict = {}
    for _ in range(args.rounds):
        for size, preset in cases:
            for d in args.checkouts:
                out = subprocess.run([sys.executable, "-c", CHILD, str(clips[size]), preset, str(args.films)], cwd=d,
                                     env=dict(os.environ, PYTHONPATH=str(Path(d).absolute())),
                                     capture_output=True, text=True, check=True)
                fps, ms = json.loads(out.stdout.strip().splitlines()[-1])
                runs.setdefault((size, preset, d), []).append((fps, ms))
                print(f"{size}p {preset} {d}: {fps:.2f} frames/s, {ms:.0f} CPU ms a frame", flush=True)
    shutil.rmtree(tmp)
    for (size, preset, d), v in runs.items():
        print(f"best {size}p {preset} {d}: {max(f for f, _ in v):.2f} frames/s, "
              f"{min(m for _, m in v):.0f} CPU ms a frame")


if __name__ == "__main__":
    main()
