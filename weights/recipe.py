"""The recipe that built the shipped weights: run from the repository root.

    python weights/recipe.py loso all unbalanced  # -> weights/loso/unbalanced-all.pt (fp32, 4000 steps)
    python weights/recipe.py ship unbalanced annealed 0.7  # -> weights/default.pt, its decoding; SHA256SUMS
    python weights/recipe.py seed      # -> weights/seed.pt
    The default shipped until 27 Nov 2026 (rebalanced, bf16; in git history before the commit
    that says "ship"), and what page.pt was fine-tuned from:
    python weights/recipe.py default   # -> weights/default.pt (+ .ckpt, not shipped)
    python weights/recipe.py finalize T  # set the default's temperature, write SHA256SUMS
    python weights/recipe.py decode confident  # set the default's own decoding, write SHA256SUMS
    python weights/recipe.py fp32 [SOURCE [OUT]]  # weights/default.pt that colours as well in fp32 as in bf16
    python weights/recipe.py plan        # print the held-out-source retrain (issue 12); runs nothing
    python weights/recipe.py loso SOURCE VARIANT [MINUTES]  # one run of that plan: photos/SOURCE held out whole
    python weights/recipe.py loso-all [OUT [PARALLEL [MINUTES]]]  # the whole plan, PARALLEL runs at a time (a GPU)
    python weights/page_data.py        # -> /work/data-extra/drawn (Open Clip Art colour drawings)
    python weights/recipe.py page [CKPT]  # -> weights/page.pt, from weights/page-init.pt (resume: CKPT)
    python weights/recipe.py finalize-page T  # set the page model's temperature, write SHA256SUMS

Equivalent CLI: colourbatch train --data ../shared/data/photos --data
../shared/data/cutouts --data ../shared/data/animation --model MODEL
--out weights/MODEL.pt --steps 4000 --batch-size 16 --size 176 --crops 8
--val-fraction 0.06 --val-every 250 --val-images 64 --ckpt-every 250 --threads 1 --workers 1 --max-minutes 85
--rebalance 0.5 (the rebalanced default and the seed, trained side by side, one core each, on a
2-core CPU); the shipped default since 27 Nov 2026 is the same with --model default --rebalance 1
--precision fp32 and no --max-minutes (`loso all unbalanced`).
Progress goes to stdout as JSON lines.
"""
import json
import os
import sys
import time
from pathlib import Path

from colourbatch.checkpoint import file_sha256
from colourbatch.train import TrainConfig, train

DATA = Path("../shared/data")
#: The photo collections (sub-folders of photos/): each is held out whole in turn by the
#: leave-one-source-out plan, so every decoding and recipe choice is measured on pictures
#: from a collection the weights never saw (a path-hash split shares photographers,
#: scanners and subjects between training and validation, and flatters).
SOURCES = ("gcompris-qt-data", "kalzium-data", "opencv-doc", "palapeli-data", "pexels-interiors",
           "scratch", "tuxpaint-data", "wallpapers")
#: The shipped recipe's schedule, shared by the shipped run and the held-out runs so they compare.
SCHEDULE = dict(steps=4000, batch_size=16, size=176, crops=8, val_every=250, val_images=64,
                ckpt_every=250, log_every=10, seed=0)
if os.environ.get("RECIPE_SMOKE"):  # a dry run of the plan's plumbing: a few steps each
    SCHEDULE = dict(SCHEDULE, steps=4, val_every=2, val_images=4, ckpt_every=2, log_every=1)


def show(kind, info):
    print(json.dumps({"t": round(time.time()), "event": kind, **info}, default=str), flush=True)


def plan() -> list[str]:
    """The retrain with held-out sources, as commands (`loso-all` runs them all).

    1. For each photo collection and each variant (VARIANTS: the shipped recipe
       'unbalanced', the rebalanced one shipped before, the latter with a slower
       encoder and a weight average, or a frozen encoder, and the seed), train with
       the collection held out whole (`loso`), in fp32. On a 2-core CPU one run is
       about 60-90 min (default model) / 49 min (seed): 45 runs, about 55 h on one
       core each.
    2. Score each run on its own held-out collection, with both decodings and at
       both precisions: grey, seed, each default variant annealed and confident.
    3. Pool the per-collection rows (weight each collection by its pictures), pick
       the recipe and the decode setting by the issue's targets on the pooled
       held-out rows only, then ship that variant's 'all' run (every collection,
       the shipped path-hash split) and the seed's, and `ship` it with the chosen
       decoding and temperature.
    Levers not yet tried (each needs code first): stronger photometric
    augmentation, crops of the full-size wallpapers.
    """
    cmds = []
    for source in SOURCES + ("all",):
        for variant in VARIANTS:
            cmds.append(f"python weights/recipe.py loso {source} {variant}")
        if source == "all":
            break
        weights = " ".join(f"--weights weights/loso/{v}-{source}.pt" for v in VARIANTS)
        cmds.append(f"colourbatch evaluate --data {DATA / 'photos'} {weights} --decode annealed "
                    f"--decode confident --precision fp32 --json > weights/loso/{source}-fp32.json")
        cmds.append(cmds[-1].replace("fp32", "bf16"))
    return cmds


#: The recipes the held-out runs compare: the shipped schedule plus these settings.
#: 'ema' keeps more of what ImageNet taught (the encoder at a tenth of the peak lr) and
#: validates and ships a moving average of the weights (the issue's generalisation levers).
VARIANTS = {
    # No class rebalancing: the softmax is then the data's posterior, which is what
    # 'confident' decoding reads its certainty from. The shipped default since 27 Nov 2026.
    "unbalanced": dict(model="default", rebalance=1.0),
    # Zhang's rebalancing (lambda 0.5): the recipe of the default shipped until 27 Nov 2026.
    "rebalanced": dict(model="default", rebalance=0.5),
    "ema": dict(model="default", rebalance=0.5, ema=0.999, encoder_lr=0.1),
    # The encoder as ImageNet left it (weights and BatchNorm statistics); the decoder learns.
    "frozen": dict(model="default", rebalance=0.5, encoder_lr=0.0),
    "seed": dict(model="seed"),
}


def loso_config(source: str, variant: str, max_minutes: float | None = None) -> TrainConfig:
    """One run of the plan: the shipped schedule in fp32 with photos/SOURCE held out whole, or
    with SOURCE 'all' on every collection with the shipped path-hash split (the weights to ship).

    The data folder is $COLOURBATCH_DATA (default ../shared/data); fp32 training, so the
    weights colour alike in fp32 and in bf16 (the shipped bf16-trained run did not)."""
    if source not in SOURCES + ("all",):
        raise SystemExit(f"unknown source {source!r}; one of: all, {', '.join(SOURCES)}")
    if variant not in VARIANTS:
        raise SystemExit(f"unknown variant {variant!r}; one of: {', '.join(VARIANTS)}")
    data = Path(os.environ.get("COLOURBATCH_DATA", DATA))
    split = dict(val_fraction=0.06) if source == "all" else dict(holdout=(source,))
    return TrainConfig(
        data=(str(data / "photos"), str(data / "cutouts"), str(data / "animation")),
        out=f"weights/loso/{variant}-{source}.pt", checkpoint=f"weights/loso/{variant}-{source}.pt.ckpt",
        **VARIANTS[variant], **split, **SCHEDULE, precision="fp32", threads=1, workers=1,
        max_minutes=max_minutes,
        metadata={"recipe": f"python weights/recipe.py loso {source} {variant}",
                  "data_manifest_sha256": file_sha256(data / "MANIFEST.tsv")})


def run_plan(out_dir: str, parallel: int = 2, max_minutes: float | None = None, sheet_images: int = 4) -> None:
    """The whole plan at once: every (source, variant) run plus the 'all' runs, `parallel`
    processes at a time (each one data worker and one CPU thread), then each source scored
    with its own held-out weights at fp32 and bf16, both decodings, with a contact sheet.
    Logs and JSON go to `out_dir`; weights to weights/loso/. `max_minutes` bounds each run.

    On one GPU keep `parallel` low (1-2): processes time-slice the GPU, and this network's
    steps are launch-bound. Measured on an H200 (16 cores, gVisor), 26 Nov 2026, with 14 at
    once: the seed ran 3.5 steps/s (770 of 4000 steps in 3.3 min) and no default run had
    finished loading after 7.5 min."""
    import subprocess
    from concurrent.futures import ThreadPoolExecutor

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, NVIDIA_TF32_OVERRIDE="0")  # fp32 means fp32 on the GPU too
    data = Path(os.environ.get("COLOURBATCH_DATA", DATA))

    def run(args: list[str], log: Path) -> int:
        t = time.time()
        with open(log, "w") as f:
            rc = subprocess.run(args, stdout=f, stderr=subprocess.STDOUT, env=env).returncode
        show("job", {"log": log.name, "rc": rc, "seconds": round(time.time() - t, 1)})
        return rc

    jobs = [("all", v) for v in VARIANTS] + [(s, v) for s in SOURCES for v in VARIANTS]
    with ThreadPoolExecutor(parallel) as pool:
        minutes = [str(max_minutes)] if max_minutes else []
        list(pool.map(lambda j: run([sys.executable, __file__, "loso", j[0], j[1], *minutes],
                                    out / f"train-{j[1]}-{j[0]}.jsonl"), jobs))
        evals = []
        for s in SOURCES:
            w = [a for v in VARIANTS for a in ("--weights", f"weights/loso/{v}-{s}.pt")]
            for prec in ("fp32", "bf16"):
                sheet = ["--sheet", str(out / f"sheet-{s}.jpg"), "--sheet-images", str(sheet_images)]
                evals.append(([sys.executable, "-m", "colourbatch", "evaluate", "--data", str(data / "photos"),
                               *w, "--decode", "annealed", "--decode", "confident", "--precision", prec,
                               "--json", "--quiet", *(sheet if prec == "fp32" else [])],
                              out / f"eval-{s}-{prec}.json"))
        list(pool.map(lambda e: run(*e), evals))


#: The page model's data (weights/page_data.py writes it) and the whole categories held out.
DRAWN = Path("/work/data-extra/drawn")
PAGE_HOLDOUT = ("food", "buildings")


#: The file page.pt was fine-tuned from: the rebalanced default as its bf16 run left it (before the
#: fp32 step), weights/default.pt at commit aaf2cb7.
PAGE_INIT_SHA256 = "4442845efa2b6a726f8f669f6d72dbeb1b96c811c06a72cd7e921acd889f371f"


def page_config(resume: str | None = None, init: str = "weights/page-init.pt") -> TrainConfig:
    """The page model: drawn pages from Open Clip Art, fine-tuned from the rebalanced default's
    trained file (`git show aaf2cb7:weights/default.pt > weights/page-init.pt`), not from
    whatever default ships now."""
    if resume is None and (not Path(init).exists() or file_sha256(init) != PAGE_INIT_SHA256):
        raise SystemExit(f"{init}: not the file page.pt starts from; run "
                         f"git show aaf2cb7:weights/default.pt > {init}")
    return TrainConfig(
        data=(str(DRAWN),), out="weights/page.pt", checkpoint="weights/page.pt.ckpt", model="page",
        holdout=PAGE_HOLDOUT, init_encoder=init, rebalance=0.5, steps=2000, batch_size=16, size=176,
        crops=4, warmup=100, val_every=250, val_images=96, ckpt_every=100, log_every=10, seed=0,
        threads=1, workers=1, precision="fp32", max_minutes=72, resume=resume,
        metadata={"recipe": "python weights/recipe.py page",
                  "data_manifest_sha256": file_sha256(DRAWN / "MANIFEST.tsv")})


#: The fp32 step's schedule: steps, peak lr, warm-up, batch and tile size, seed.
FP32_SCHEDULE = dict(steps=500, lr=1e-4, warmup=20, batch_size=16, size=176, seed=0)


def fp32_step(source: str = "weights/default.pt", out: str = "weights/default.pt") -> None:
    """Distil the default weights' bf16 behaviour into weights that give it in fp32.

    The shipped run trained under bf16 autocast; its network amplifies rounding
    (near-dead BatchNorm channels with gains up to 94), so fp32 inference, the
    fast choice on a CPU without native bf16, coloured worse than bf16 did
    (docs/quality.md). Here a copy of the network, in fp32 and training mode
    (its BatchNorm statistics re-estimated in fp32), learns the bf16 network's
    bin distribution (KL divergence, T = 1) on augmented training crops of the
    shipped recipe's data and split. Deterministic on one CPU thread.
    """
    import copy
    import math

    import torch
    import torch.nn.functional as F

    from colourbatch import checkpoint
    from colourbatch.data import make_loader, split_dataset
    from colourbatch.model import model_input

    sched = FP32_SCHEDULE
    teacher, meta = checkpoint.load(source)
    if "fp32_step" in meta:
        raise SystemExit(f"{source}: already the fp32 step's output; start from the trained weights")
    torch.manual_seed(sched["seed"])
    torch.set_num_threads(1)
    teacher = teacher.eval().to(memory_format=torch.channels_last)
    student = copy.deepcopy(teacher).train()
    data = tuple(str(DATA / d) for d in ("photos", "cutouts", "animation"))
    ds = split_dataset(data, "train", 0.06, sched["size"], 8, sched["seed"],  # the shipped run's split
                       augment=True)
    loader = make_loader(ds, sched["batch_size"], 1, shuffle=True, drop_last=True)
    opt = torch.optim.AdamW(student.parameters(), lr=sched["lr"], weight_decay=1e-4)
    steps, warm = sched["steps"], sched["warmup"]
    lr_at = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    step = 0
    while step < steps:
        for l8, _ in loader:
            x = model_input(l8)
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                target = F.log_softmax(teacher(x).float(), 1)
            loss = F.kl_div(F.log_softmax(student(x), 1), target, log_target=True,
                            reduction="none").sum(1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            lr_at.step()
            step += 1
            if step % 10 == 0:
                show("step", {"step": step, "total": steps, "kl": round(loss.item(), 4)})
            if step == steps:
                break
    meta["fp32_step"] = {"recipe": "python weights/recipe.py fp32", "source_sha256": file_sha256(source),
                         **sched}
    checkpoint.save(out, student.eval(), meta, half=True)
    show("done", {"weights": out})


#: The shipped weights files, recorded in weights/SHA256SUMS.
SHIPPED = ("default", "seed", "page")


def write_sums() -> None:
    # Those present: a branch without one (page.pt is made by its own run) records the rest.
    lines = [f"{file_sha256(f'weights/{n}.pt')}  {n}.pt" for n in SHIPPED if Path(f"weights/{n}.pt").exists()]
    Path("weights/SHA256SUMS").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    name = sys.argv[1]
    if name == "plan":
        print("\n".join(plan()))
        return
    if name == "page":
        train(page_config(sys.argv[2] if len(sys.argv) > 2 else None), show)
        return
    if name == "loso":
        minutes = float(sys.argv[4]) if len(sys.argv) > 4 else None
        train(loso_config(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "unbalanced", minutes), show)
        return
    if name == "loso-all":
        run_plan(sys.argv[2] if len(sys.argv) > 2 else "weights/loso/results",
                 int(sys.argv[3]) if len(sys.argv) > 3 else 2,
                 float(sys.argv[4]) if len(sys.argv) > 4 else None)
        return
    if name in ("finalize", "decode", "fp32"):
        # These rewrite facts about the rebalanced bf16 run (the default shipped until 27 Nov 2026)
        # into weights/default.pt: refused on any other file, so they cannot mislabel the default.
        from colourbatch import checkpoint

        made_by = checkpoint.read("weights/default.pt")["metadata"].get("recipe")
        if made_by != "python weights/recipe.py default":
            raise SystemExit(f"weights/default.pt was made by '{made_by}', not 'python weights/recipe.py "
                             f"default': '{name}' applies to that run only (use 'ship' for this one)")
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
        write_sums()
        return
    if name == "fp32":
        fp32_step(*sys.argv[2:4])
        if len(sys.argv) < 4:
            write_sums()
        return
    if name == "decode":
        # python weights/recipe.py decode confident: the shipped default's own decoding
        # (chosen on collections held out whole, docs/quality.md), then SHA256SUMS.
        from colourbatch import checkpoint

        blob = checkpoint.read("weights/default.pt")
        blob["config"]["decode"] = sys.argv[2]
        blob["metadata"]["decode_chosen_on"] = (
            "held-out collections: a 1500-step run of the shipped recipe without pexels-interiors, "
            "wallpapers, kalzium-data, tuxpaint-data, palapeli-data (143 photos, docs/quality.md)")
        model = checkpoint.model_from_blob(blob, "weights/default.pt")
        checkpoint.save("weights/default.pt", model, blob["metadata"], half=True)
        write_sums()
        return
    if name == "ship":
        # python weights/recipe.py ship VARIANT DECODE T: weights/loso/VARIANT-all.pt becomes
        # weights/default.pt with its decoding and temperature (chosen on collections held out
        # whole, docs/quality.md), then SHA256SUMS.
        from colourbatch import checkpoint

        from colourbatch.config import DECODES

        variant, decode, t = sys.argv[2], sys.argv[3], float(sys.argv[4])
        if decode not in DECODES:
            raise SystemExit(f"unknown decode {decode!r}; one of: {', '.join(DECODES)}")
        src = f"weights/loso/{variant}-all.pt"
        blob = checkpoint.read(src)
        meta = blob["metadata"]
        if meta["steps"] < meta["train_config"]["steps"]:
            raise SystemExit(f"{src}: stopped at step {meta['steps']} of {meta['train_config']['steps']}; "
                             f"finish it first (resume its .ckpt)")
        blob["config"]["decode"], blob["config"]["temperature"] = decode, t
        blob["metadata"]["decode_chosen_on"] = (
            f"collections held out whole: 1500-step runs of the '{variant}' recipe without "
            "gcompris-qt-data (263 photos) and without pexels-interiors, wallpapers, kalzium-data, "
            "tuxpaint-data, palapeli-data (143 photos); docs/quality.md")
        blob["metadata"]["shipped_from"] = {"file": src, "sha256": file_sha256(src)}
        model = checkpoint.model_from_blob(blob, src)
        checkpoint.save("weights/default.pt", model, blob["metadata"], half=True)
        write_sums()
        return
    if name == "finalize-page":
        # python weights/recipe.py finalize-page T: the page model's decoding temperature
        # (chosen with `colourbatch evaluate --drawn` on its held-out categories), then SHA256SUMS.
        from colourbatch import checkpoint

        blob = checkpoint.read("weights/page.pt")
        blob["config"]["temperature"] = float(sys.argv[2])
        blob["metadata"]["temperature_chosen_on"] = f"held-out categories {', '.join(PAGE_HOLDOUT)}"
        model = checkpoint.model_from_blob(blob, "weights/page.pt")
        checkpoint.save("weights/page.pt", model, blob["metadata"], half=True)
        write_sums()
        return
    # The run that built the default shipped until 27 Nov 2026 (bf16, rebalanced), and the seed.
    cfg = TrainConfig(
        data=(str(DATA / "photos"), str(DATA / "cutouts"), str(DATA / "animation")),
        out=f"weights/{name}.pt", checkpoint=f"weights/{name}.pt.ckpt", model=name, rebalance=0.5,
        val_fraction=0.06, threads=1, workers=1, max_minutes=85, **SCHEDULE,
        resume=sys.argv[2] if len(sys.argv) > 2 else None,
        metadata={"recipe": f"python weights/recipe.py {name}",
                  "data_manifest_sha256": file_sha256(DATA / "MANIFEST.tsv")},
    )
    train(cfg, show)


if __name__ == "__main__":
    main()
