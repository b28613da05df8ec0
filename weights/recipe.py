"""The recipe that built the shipped weights: run from the repository root.

    python weights/recipe.py default   # -> weights/default.pt (+ .ckpt, not shipped)
    python weights/recipe.py seed      # -> weights/seed.pt
    python weights/recipe.py finalize T  # set the default's temperature, write SHA256SUMS

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


def show(kind, info):
    print(json.dumps({"t": round(time.time()), "event": kind, **info}, default=str), flush=True)


def main() -> None:
    name = sys.argv[1] if len(sys.argv) > 1 else "default"
    if name == "finalize":
        # python weights/recipe.py finalize T: set the default model's decoding temperature
        # (chosen on the cutouts/animation validation images, see weights/README.md), then
        # record every shipped file's hash in weights/SHA256SUMS.
        from colourbatch import checkpoint

        blob = checkpoint.read("weights/default.pt")
        blob["config"]["temperature"] = float(sys.argv[2])
        # The run was resumed twice (see weights/README.md); resumes before this was carried
        # over dropped this fact from the metadata, so it is restored here.
        blob["metadata"].setdefault("encoder_init", "imagenet:mobilenet_v2-b0353104.pth")
        blob["metadata"]["temperature_chosen_on"] = "val split of cutouts/ and animation/ (not photos/)"
        model = checkpoint.model_from_blob(blob, "weights/default.pt")
        checkpoint.save("weights/default.pt", model, blob["metadata"], half=True)
        lines = [f"{file_sha256(f'weights/{n}.pt')}  {n}.pt" for n in ("default", "seed")]
        Path("weights/SHA256SUMS").write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
        return
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
    train(cfg, show)


if __name__ == "__main__":
    main()
