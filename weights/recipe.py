"""The recipe that built the shipped weights: run from the repository root.

    python weights/recipe.py default   # -> weights/default.pt (+ .ckpt, not shipped)
    python weights/recipe.py seed      # -> weights/seed.pt

Equivalent CLI: colourbatch train --data ../shared/data/photos --data
../shared/data/cutouts --data ../shared/data/animation --model MODEL
--out weights/MODEL.pt --steps 4000 --batch-size 16 --size 176 --crops 8
--val-fraction 0.06 --threads 1 --workers 1 --max-minutes 85
(the two models were trained side by side, one core each, on a 2-core CPU).
Progress goes to stdout as JSON lines.
"""
import json
import sys
import time
from pathlib import Path

from colourbatch.checkpoint import file_sha256
from colourbatch.train import TrainConfig, train

DATA = Path("../shared/data")
name = sys.argv[1] if len(sys.argv) > 1 else "default"
cfg = TrainConfig(
    data=(str(DATA / "photos"), str(DATA / "cutouts"), str(DATA / "animation")),
    out=f"weights/{name}.pt", checkpoint=f"weights/{name}.pt.ckpt", model=name,
    steps=4000, batch_size=16, size=176, crops=8, val_fraction=0.06,
    val_every=250, val_images=64, ckpt_every=250, log_every=10,
    threads=1, workers=1, max_minutes=85, seed=0,
    resume=sys.argv[2] if len(sys.argv) > 2 else None,
    metadata={"recipe": f"python weights/recipe.py {name}",
              "data_manifest_sha256": file_sha256(DATA / "MANIFEST.tsv")},
)


def show(kind, info):
    print(json.dumps({"t": round(time.time()), "event": kind, **info}, default=str), flush=True)


train(cfg, show)
