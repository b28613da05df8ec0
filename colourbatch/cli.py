"""The command line: the only module that imports click or rich, prints, or exits.

Commands stay thin: they build a config dataclass, call the library, and show
its progress and results. torch, OpenCV and PyAV are imported inside command
bodies so `colourbatch --help` answers instantly.
"""
from __future__ import annotations

import sys
from pathlib import Path

import click

from . import __version__

DEVICE_HELP = "auto (CUDA when present), cpu, cuda or cuda:N."


def run_options(f):
    """Options every colouring command shares (pages, video)."""
    options = [
        click.option("--weights", type=click.Path(dir_okay=False), default=None,
                     help="Weights file (default: the trained weights shipped in weights/default.pt)."),
        click.option("--model", default=None,
                     help="Model name for a bare state-dict file; self-describing weights say it themselves."),
        click.option("--device", default="auto", show_default=True, help=DEVICE_HELP),
        click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default="auto",
                     show_default=True, help="Compute precision: auto = fp16/bf16 on CUDA, bf16 on CPUs that support it."),
        click.option("--batch-size", type=click.IntRange(1, 4096), default=16, show_default=True,
                     help="Tiles per model call."),
        click.option("--workers", type=click.IntRange(0, 64), default=2, show_default=True,
                     help="DataLoader processes that read and convert inputs ahead of the model."),
        click.option("--temperature", type=click.FloatRange(0.01, 10.0), default=None,
                     help="Annealed-mean T of the default model: lower is livelier (default: the weights' own)."),
        click.option("--quiet", "-q", is_flag=True, help="No progress bar; only errors and the final line."),
    ]
    for opt in reversed(options):
        f = opt(f)
    return f


def make_console(quiet: bool = False, stderr: bool = False):
    from rich.console import Console
    return Console(stderr=stderr, quiet=False, highlight=False, soft_wrap=True)


def fail(message: str, code: int = 1) -> None:
    """One clear line on stderr and a non-zero exit: never a traceback."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="colourbatch")
def cli():
    """Colour black-and-white films, photos and manga pages in batches.

    \b
    colourbatch pages manga/ -o coloured/     folders, images, .cbz/.zip archives
    colourbatch video film.mp4                 a film, with its sound and timing
    colourbatch train --data DIR --out W.pt    train on the Kaggle set or photos
    colourbatch evaluate --data DIR            quality metrics against the truth
    """


def main():
    cli(prog_name="colourbatch")


# The commands below are filled in by their modules' owners.


# ===================================================================== pages
@cli.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False),
              help="Output folder; mirrors the input tree, archives become archives of the same name.")
@click.option("--format", "fmt", type=click.Choice(["png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff"]),
              default=None, help="Output format (default: each page keeps its own).")
@click.option("--recolour", is_flag=True,
              help="Also colour pages that are already in colour (default: copy them through untouched).")
@click.option("--overwrite", is_flag=True,
              help="Redo pages whose output exists (default: skip them, so a re-run resumes).")
@run_options
def pages(inputs, out, fmt, recolour, overwrite, weights, model, device, precision, batch_size,
          workers, temperature, quiet):
    """Colour folders of pages, single images and .cbz/.zip archives.

    INPUT is a folder (searched recursively), an image (PNG, JPEG, WebP, BMP,
    TIFF) or a .cbz/.zip archive. Pages keep their exact size: the model
    colours a 224x224 tile of the page's L, and the predicted colour is
    upsampled and merged with the page's own full-resolution L, so line art
    stays as sharp as the input. Pages more elongated than 1:2 are coloured
    in overlapping windows. Grey detection: pages already in colour are copied
    through unless --recolour. Exit code 0 when every page succeeded, 1 when
    any failed (listed at the end), 2 when the run could not start.
    """
    from .errors import ColourbatchError
    from .pages import PagesConfig, colour_pages
    from .pipeline import PipelineError, RunConfig

    run = RunConfig(weights=weights, model=model, device=device, precision=precision,
                    batch_size=batch_size, workers=workers, temperature=temperature)
    pcfg = PagesConfig(out=out, fmt=fmt, recolour=recolour, overwrite=overwrite)
    console = make_console()
    with _Progress(console, "pages", quiet) as bar:
        try:
            report = colour_pages(list(inputs), pcfg, run, on_progress=bar.event)
        except (PipelineError, ColourbatchError) as exc:
            bar.stop()
            fail(str(exc), getattr(exc, "exit_code", 2))
        except KeyboardInterrupt:
            bar.stop()
            fail("interrupted; finished pages are kept, a re-run resumes", 130)
    _pages_summary(console, report, out, quiet)
    sys.exit(0 if report.ok else 1)


class _Progress:
    """A rich progress bar fed by the library's on_progress(kind, info) events."""

    def __init__(self, console, unit: str, quiet: bool):
        self.console, self.unit, self.quiet = console, unit, quiet
        self.progress = None
        self.task = None

    def __enter__(self):
        if not self.quiet:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

            class _Rate(TextColumn):
                def __init__(self, unit):
                    super().__init__("")
                    self.unit = unit

                def render(self, task):
                    from rich.text import Text
                    # Whole-run average: rich's windowed speed jumps when pages finish in bursts.
                    speed = task.completed / task.elapsed if task.elapsed else 0.0
                    return Text(f"{speed:.1f} {self.unit}/s" if speed else f"- {self.unit}/s")

            self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                                     MofNCompleteColumn(), _Rate(self.unit), TimeElapsedColumn(),
                                     TextColumn("ETA"), TimeRemainingColumn(),
                                     console=self.console, transient=False)
            self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def stop(self):
        if self.progress is not None:
            self.progress.__exit__(None, None, None)
            self.progress = None

    def event(self, kind: str, info: dict) -> None:
        if self.progress is None:
            return
        if kind == "start":
            self.task = self.progress.add_task(f"colouring {self.unit}", total=info["total"])
        elif kind == "engine":
            state = "trained" if info["trained"] else "UNTRAINED"
            self.progress.console.print(f"model {info['model']} ({state}) from {info['weights']} "
                                        f"on {info['device']} {info['precision']}")
        elif kind == "page" and self.task is not None:
            self.progress.advance(self.task)
            if info["outcome"] == "error":
                self.progress.console.print(f"[red]failed[/red] {info['source']}: {info['reason']}")


def _pages_summary(console, report, out, quiet: bool) -> None:
    n_fail = len(report.failed)
    rate = len(report.done) / report.seconds if report.seconds > 0 else 0.0
    line = (f"{len(report.done)} coloured, {len(report.copied)} colour pages copied, "
            f"{len(report.skipped)} skipped (already done), {n_fail} failed"
            f" in {report.seconds:.1f} s ({rate:.1f} pages/s) -> {out}")
    if not quiet:
        from rich.table import Table
        table = Table(title="colourbatch pages", show_header=False, box=None)
        table.add_row("coloured", str(len(report.done)))
        table.add_row("copied (already colour)", str(len(report.copied)))
        table.add_row("skipped (output exists)", str(len(report.skipped)))
        table.add_row("archives written", str(len(report.archives)))
        table.add_row("failed", f"[red]{n_fail}[/red]" if n_fail else "0")
        table.add_row("time", f"{report.seconds:.1f} s ({rate:.1f} pages/s)")
        table.add_row("output", str(out))
        console.print(table)
    if n_fail:
        err = make_console(stderr=True)
        err.print(f"[red]{n_fail} failed:[/red]")
        for source, reason in report.failed:
            err.print(f"  {source}: {reason}", markup=False, highlight=False)
    if quiet:
        console.print(line, markup=False)


# ------------------------------------------------------------------ train
def _dist_rank() -> int:
    """This process's rank under torchrun (0 when run alone): only rank 0 prints."""
    import os
    return int(os.environ.get("RANK", "0"))


@cli.command()
@click.option("--data", "data", multiple=True, required=True, type=click.Path(),
              help="A Kaggle image-colorization folder, or a folder of colour images (repeatable).")
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="Weights file to write (fp16, for pages/video); the full state goes to OUT.ckpt.")
@click.option("--model", type=click.Choice(["default", "seed"]), default=None,
              help="Network to train [default: default; on --resume, the checkpoint's own].")
@click.option("--epochs", type=click.FloatRange(0, min_open=True), default=None,
              help="Passes over the training split (default 1 when --steps is not given).")
@click.option("--steps", type=click.IntRange(1), default=None, help="Optimiser steps (instead of --epochs).")
@click.option("--batch-size", type=click.IntRange(1, 4096), default=16, show_default=True,
              help="Tiles per step and process.")
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=None,
              help="Learning rate [default: the model's recipe: seed 1e-3, default 5e-4].")
@click.option("--warmup", type=click.IntRange(0), default=200, show_default=True,
              help="Linear warm-up steps before the cosine decay.")
@click.option("--device", default="auto", show_default=True, help=DEVICE_HELP)
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default="auto",
              show_default=True, help="Autocast precision: auto = fp16/bf16 on CUDA, bf16 on capable CPUs.")
@click.option("--resume", type=click.Path(dir_okay=False), default=None,
              help="Continue exactly from a .ckpt training wrote (optimizer, step, RNG, data position).")
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None,
              help="Where to write the training state [default: OUT.ckpt].")
@click.option("--size", type=click.IntRange(32, 1024), default=224, show_default=True,
              help="Training tile side.")
@click.option("--crops", type=click.IntRange(1, 1000), default=8, show_default=True,
              help="Random crops per image per epoch (image folders).")
@click.option("--val-fraction", type=click.FloatRange(0, 0.9, min_open=True), default=0.05,
              show_default=True, help="Share held out for validation, never trained on.")
@click.option("--val-every", type=click.IntRange(1), default=500, show_default=True,
              help="Steps between validations.")
@click.option("--val-images", type=click.IntRange(1), default=128, show_default=True,
              help="Validation pictures per mid-run check (all of them at the end).")
@click.option("--ckpt-every", type=click.IntRange(1), default=500, show_default=True,
              help="Steps between checkpoints (one is always written at the end).")
@click.option("--log-every", type=click.IntRange(1), default=10, show_default=True,
              help="Steps between progress updates.")
@click.option("--workers", type=click.IntRange(0, 64), default=2, show_default=True,
              help="DataLoader processes preparing batches.")
@click.option("--threads", type=click.IntRange(1, 1024), default=None,
              help="CPU threads per process [default: the cores, shared among torchrun's local processes].")
@click.option("--max-minutes", type=click.FloatRange(0, min_open=True), default=None,
              help="Wall-clock budget: stop cleanly and save when it runs out.")
@click.option("--init-encoder", default="auto", show_default=True,
              help="default model: ImageNet MobileNetV2 weights: auto (installed package), none, or a .pth path.")
@click.option("--seed", type=int, default=0, show_default=True, help="Data order, augmentation, initialisation.")
@click.option("--quiet", "-q", is_flag=True, help="No progress; only errors and the final line.")
def train(data, out, model, epochs, steps, batch_size, lr, warmup, device, precision, resume,
          checkpoint, size, crops, val_fraction, val_every, val_images, ckpt_every, log_every,
          workers, threads, max_minutes, init_encoder, seed, quiet):
    """Train the default or seed model on the Kaggle set or folders of colour photos.

    \b
    colourbatch train --data kaggle/ --out weights/mine.pt --epochs 2
    colourbatch train --data photos/ --model seed --out seed.pt --steps 4000
    colourbatch train --data photos/ --out mine.pt --resume mine.pt.ckpt --steps 8000
    torchrun --nproc_per_node=2 -m colourbatch train --data photos/ --out mine.pt
    """
    import os

    rank = _dist_rank()
    quiet = quiet or rank != 0
    if steps is not None and epochs is not None:
        fail("give --steps or --epochs, not both")
    from .checkpoint import CheckpointError
    from .data import DataError
    from .device import DeviceError
    from .train import TrainConfig, TrainError
    from .train import train as run_training

    try:
        if resume and model is None:
            # Resuming continues the checkpoint's own model unless told otherwise.
            from .checkpoint import read
            model = read(resume)["model"]
        if threads is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            # torchrun's processes on one machine share its cores: don't oversubscribe them.
            local = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
            threads = max(1, cores // max(1, local))
        cfg = TrainConfig(data=tuple(data), out=out, checkpoint=checkpoint, model=model or "default",
                          steps=steps, epochs=epochs, max_minutes=max_minutes, batch_size=batch_size,
                          lr=lr, warmup=warmup, size=size, crops=crops, val_fraction=val_fraction,
                          val_every=val_every, val_images=val_images, ckpt_every=ckpt_every,
                          log_every=log_every, workers=workers, device=device, precision=precision,
                          threads=threads, seed=seed, resume=resume, init_encoder=init_encoder)
        view = _TrainView(quiet)
        try:
            result = run_training(cfg, view.on_event)
        finally:
            view.close()
    except (TrainError, DataError, CheckpointError, DeviceError) as exc:
        fail(str(exc) if rank == 0 else "see rank 0")
    except KeyboardInterrupt:
        fail("interrupted; the last checkpoint written is intact", 130)
    if rank == 0:
        view.final(result)


def _fmt_duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}"


def _metrics_line(m: dict) -> str:
    """The validation numbers a trainer watches, in one line."""
    return (f"accuracy {100 * m['accuracy']:.2f}%  PSNR {m['psnr_rgb']:.2f} dB  "
            f"ab {m['psnr_ab']:.2f} dB  SSIM {m['ssim']:.3f}  colourfulness {m['colourfulness_ratio']:.2f}x  "
            f"AuC {m['auc']:.1f}  rebal {m['auc_rebal']:.1f}  L err {m['l_error']:.2f}")


class _TrainView:
    """Shows train()'s events: a live bar on a terminal, plain lines in logs and pipes."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.console = make_console()
        self.progress = None
        self.task = None
        self.skipped = 0
        self.start_step = 0
        self.t0 = None

    def print(self, text: str, **kw) -> None:
        if self.quiet:
            return
        (self.progress.console if self.progress else self.console).print(text, **kw)

    def on_event(self, kind: str, info: dict) -> None:
        import time
        if kind == "skip":
            self.skipped += 1
            if self.skipped <= 5:
                self.print(f"skipped {info['path']}: {info['reason']}", markup=False)
            return
        if self.quiet:
            return
        if kind == "start":
            self.start_step, self.t0 = info["start_step"], time.monotonic()
            self.print(f"training [bold]{info['model']}[/bold] ({info['params'] / 1e6:.2f} M parameters) on "
                       f"{info['device']} ({info['dtype']}, {info['world']} process(es)): "
                       f"{info['train_images']} training / {info['val_images']} validation samples, "
                       f"{info['steps']} steps, lr {info['lr']:g}")
            if "encoder_init" in info:
                self.print(f"encoder: {info['encoder_init']}")
            if self.skipped > 5:
                self.print(f"skipped {self.skipped} unreadable files in all")
            if info["start_step"]:
                self.print(f"resuming at step {info['start_step']}")
            if self.console.is_terminal:
                from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                           TimeElapsedColumn, TimeRemainingColumn)
                self.progress = Progress(
                    TextColumn("step"), MofNCompleteColumn(), BarColumn(),
                    TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[ips]} img/s"),
                    TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                    console=self.console, transient=False)
                self.progress.start()
                self.task = self.progress.add_task("train", total=info["steps"],
                                                   completed=info["start_step"], loss="-", ips="-")
        elif kind == "step":
            if self.progress is not None:
                self.progress.update(self.task, completed=info["step"], loss=f"{info['loss']:.4g}",
                                     ips=f"{info['images_per_s']:.1f}")
            else:
                done = info["step"] - self.start_step
                spent = time.monotonic() - self.t0
                eta = spent / done * (info["total"] - info["step"]) if done else 0.0
                self.print(f"step {info['step']}/{info['total']}  loss {info['loss']:.4g}  "
                           f"{info['images_per_s']:.1f} img/s  lr {info['lr']:.3g}  "
                           f"ETA {_fmt_duration(eta)}", markup=False)
        elif kind == "eval":
            self.print(f"step {info['step']}  validation ({info['images']} pictures): " + _metrics_line(info),
                       markup=False)
        elif kind == "checkpoint":
            self.print(f"step {info['step']}  checkpoint {info['path']}  weights {info['weights']}",
                       markup=False)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def final(self, result: dict) -> None:
        how = " (stopped at --max-minutes)" if result["stopped_early"] else ""
        self.console.print(f"trained {result['step']}/{result['total']} steps in "
                           f"{_fmt_duration(result['seconds'])}{how} -> {result['weights']} "
                           f"(resume with --resume {result['checkpoint']})", markup=False)


# --------------------------------------------------------------- evaluate
#: Table columns: (metric key, header, format); accuracy is shown in percent.
_EVAL_COLUMNS = (("accuracy", "acc %", lambda v: f"{100 * v:.2f}"),
                 ("psnr_rgb", "PSNR", "{:.2f}".format), ("psnr_ab", "PSNR ab", "{:.2f}".format),
                 ("ssim", "SSIM", "{:.3f}".format), ("colourfulness_ratio", "colour ratio", "{:.2f}".format),
                 ("auc", "AuC", "{:.2f}".format), ("auc_rebal", "AuC rebal", "{:.2f}".format),
                 ("l_error", "L err", "{:.2f}".format))


@cli.command()
@click.option("--data", "data", multiple=True, type=click.Path(),
              help="A Kaggle folder or folders of colour images (repeatable).")
@click.option("--split", type=click.Choice(["val", "train", "all"]), default="val", show_default=True,
              help="val: the split training holds out (never trained on); train; all.")
@click.option("--val-fraction", type=click.FloatRange(0, 0.9, min_open=True), default=None,
              help="The held-out share [default: the one the first weights were trained with].")
@click.option("--pred", type=click.Path(file_okay=False), default=None,
              help="Folder of finished predictions, compared with --truth by relative path.")
@click.option("--truth", type=click.Path(file_okay=False), default=None,
              help="Folder of the true colour pictures for --pred.")
@click.option("--weights", multiple=True, type=click.Path(dir_okay=False),
              help="Weights file to score (repeatable) [default: the shipped weights/default.pt].")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON (for scripts).")
@click.option("--max-images", type=click.IntRange(1), default=None, help="Score at most N pictures.")
@click.option("--temperature", type=click.FloatRange(0.01, 10.0), default=None,
              help="Annealed-mean T of default models [default: the weights' own].")
@click.option("--sheet", type=click.Path(dir_okay=False), default=None,
              help="Write a contact sheet PNG: grey | each model | truth.")
@click.option("--sheet-images", type=click.IntRange(1, 200), default=12, show_default=True,
              help="Pictures (rows) on the contact sheet.")
@click.option("--size", type=click.IntRange(32, 1024), default=224, show_default=True,
              help="Tile side the models see (training validates at 224).")
@click.option("--device", default="auto", show_default=True, help=DEVICE_HELP)
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default="auto",
              show_default=True, help="Compute precision.")
@click.option("--batch-size", type=click.IntRange(1, 4096), default=16, show_default=True)
@click.option("--workers", type=click.IntRange(0, 64), default=0, show_default=True,
              help="DataLoader processes.")
@click.option("--quiet", "-q", is_flag=True, help="No progress; only the table (or JSON).")
def evaluate(data, split, val_fraction, pred, truth, weights, as_json, max_images, temperature, sheet,
             sheet_images, size, device, precision, batch_size, workers, quiet):
    """Score models (or a folder of predictions) against the truth, beside the grey baseline.

    \b
    colourbatch evaluate --data kaggle/                       shipped weights, validation split
    colourbatch evaluate --data photos/ --weights a.pt --weights b.pt --sheet sheet.png
    colourbatch evaluate --pred coloured/ --truth originals/ --json

    \b
    Metrics: accuracy = 1 - MSE/7500 on 0..255 LAB (ColourMePy); PSNR on RGB and on
    the a/b planes; SSIM on RGB; colourfulness ratio = prediction / truth, with Hasler
    & Suesstrunk's M = sqrt(sd(rg)^2 + sd(yb)^2) + 0.3 sqrt(mean(rg)^2 + mean(yb)^2),
    rg = R - G, yb = (R + G)/2 - B; AuC = share of pixels with a/b error <= t averaged
    over t = 0..150 (Zhang et al. 2016), and its class-rebalanced form; L error =
    mean |L_pred - L_true| on 0..255. The grey row is a = b = 128.
    """
    from .evaluate import EvalConfig, EvalError, evaluate_set

    cfg = EvalConfig(data=tuple(data), split=split, val_fraction=val_fraction, weights=tuple(weights),
                     pred=pred, truth=truth, max_images=max_images, temperature=temperature,
                     size=size, device=device, precision=precision, batch_size=batch_size,
                     workers=workers, sheet=sheet, sheet_images=sheet_images)
    # With --json stdout carries only the JSON: progress goes to stderr.
    err = make_console(stderr=True)
    view = _EvalView(err, quiet)
    try:
        try:
            result = evaluate_set(cfg, view.on_event)
        finally:
            view.close()
    except EvalError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted", 130)
    if as_json:
        import json
        click.echo(json.dumps(_json_safe(result), indent=2))
        return
    console = make_console()
    if not console.is_terminal:
        console.width = 140  # logs and pipes: one line per row, not rich's 80-column wrap
    _eval_table(console, result)


def _json_safe(x):
    """NaN and infinity are not JSON: they become null."""
    import math
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


class _EvalView:
    """Progress of evaluate_set on stderr: a bar per model on a terminal, else nothing but notes."""

    def __init__(self, console, quiet: bool):
        self.console, self.quiet = console, quiet
        self.progress, self.task, self.skipped = None, None, 0

    def on_event(self, kind: str, info: dict) -> None:
        if kind == "skip":
            self.skipped += 1
            if not self.quiet and self.skipped <= 5:
                self._print(f"skipped {info['path']}: {info['reason']}")
            return
        if self.quiet:
            return
        if kind == "start":
            where = f" on {info['device']} ({info['dtype']})" if "device" in info else ""
            split = f", {info['split']} split" if info.get("split") else ""
            self._print(f"evaluating {', '.join(info['models'])} and grey on {info['images']} "
                        f"picture(s){split}{where}")
            if self.console.is_terminal:
                from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
                self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                         MofNCompleteColumn(), console=self.console)
                self.progress.start()
        elif kind in ("model", "progress") and self.progress is not None:
            if kind == "model" or self.task is None:
                self.task = self.progress.add_task(info["name"], total=info["images"])
            if kind == "progress":
                self.progress.update(self.task, completed=info["done"])
        elif kind == "note":
            self._print(f"note: {info['text']}")
        elif kind == "sheet":
            self._print(f"contact sheet ({info['images']} pictures) -> {info['path']}")

    def _print(self, text: str) -> None:
        (self.progress.console if self.progress else self.console).print(text, markup=False)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def _eval_table(console, result: dict) -> None:
    from rich.markup import escape
    from rich.table import Table

    if result["mode"] == "data":
        title = (f"{result['images']} pictures, {result['split']} split of "
                 f"{', '.join(result['data'])}")
    else:
        title = f"{result['images']} pictures: {result['pred']} vs {result['truth']}"
    table = Table(title=title, caption="PSNR on RGB; colour ratio = colourfulness / truth's")
    table.add_column("model", no_wrap=True)
    for _, header, _ in _EVAL_COLUMNS:
        table.add_column(header, justify="right")
    for row in result["rows"]:
        name = row["name"] if row["model"] in (None, row["name"]) else f"{row['name']} [{row['model']}]"
        table.add_row(escape(name), *[fmt(row[key]) for key, _, fmt in _EVAL_COLUMNS])
    console.print(table)
    for note in result["notes"]:
        console.print(f"note: {note}", markup=False)
    if result.get("sheet"):
        console.print(f"contact sheet: {result['sheet']}", markup=False)


# ===================================================================== video
def _parse_time(ctx, param, value):
    """Seconds from '90', '90.5', '1:30' or '01:02:03.5' (click callback)."""
    if value is None:
        return None
    try:
        parts = [float(p) for p in value.strip().rstrip("s").split(":")]
        if not 1 <= len(parts) <= 3 or any(p < 0 for p in parts):
            raise ValueError
        seconds = 0.0
        for p in parts:
            seconds = seconds * 60 + p
        return seconds
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a time (use seconds, MM:SS or HH:MM:SS)") from None


def _human_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def _video_jobs(inputs, output, compare):
    """(source, destination or None, error or None) per film; folders expand to their videos."""
    from .media import find_videos
    from .video import default_output

    sources: list[tuple[Path, str | None]] = []
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            found = find_videos(p)
            if not found:
                sources.append((p, f"{p}: folder holds no video files"))
            sources.extend((f, None) for f in found)
        else:
            sources.append((p, None))  # a missing or bad file is reported by the library
    out = Path(output) if output else None
    many = len(sources) > 1 or any(Path(r).is_dir() for r in inputs)
    if out is not None and many:
        if out.exists() and not out.is_dir():
            fail(f"{out}: with several inputs, -o must be a folder")
        if not out.exists():
            if not out.parent.is_dir():
                fail(f"{out.parent}: output folder does not exist")
            out.mkdir()
    jobs = []
    for src, err in sources:
        if err:
            jobs.append((src, None, err))
        elif out is None:
            jobs.append((src, default_output(src, compare=compare), None))
        elif many or out.is_dir() or str(output).endswith(("/", "\\")):
            jobs.append((src, default_output(src, out, compare), None))
        else:
            jobs.append((src, out, None))
    return jobs


@cli.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--output", type=click.Path(), default=None,
              help="Output file (its extension picks the container: .mp4, .mkv, .mov), or a folder. "
                   "Default: <name>.colour.mp4 beside each input. With several inputs: a folder.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
@click.option("--codec", default="libx264", show_default=True,
              help="Video encoder: libx264 plays everywhere; libx265 is smaller; ffv1 (in .mkv) is lossless.")
@click.option("--crf", type=click.IntRange(0, 63), default=18, show_default=True,
              help="Constant quality for x264/x265/VP9: lower is better and bigger; 18 is visually lossless.")
@click.option("--preset", default=None,
              help="Encoder speed preset for x264/x265 (ultrafast ... veryslow; default: medium).")
@click.option("--start", callback=_parse_time, default=None, metavar="TIME",
              help="Colour from this time (seconds, MM:SS or HH:MM:SS): previews of a part.")
@click.option("--end", callback=_parse_time, default=None, metavar="TIME", help="Stop at this time.")
@click.option("--duration", callback=_parse_time, default=None, metavar="TIME",
              help="Colour this long from --start (instead of --end).")
@click.option("--compare", is_flag=True,
              help="Write grey | colour side by side (default name <name>.compare.mp4).")
@run_options
def video(inputs, output, overwrite, codec, crf, preset, start, end, duration, compare, weights, model,
          device, precision, batch_size, workers, temperature, quiet):
    """Colour films: every frame, its timing, sound, subtitles and rotation kept.

    INPUT is a video file (MP4, MKV, MOV, AVI...) or a folder of them. Frames
    stream through memory: each frame's L goes to the model as a 224x224 tile,
    the predicted colour is upsampled and merged with the frame's own
    full-resolution L. Audio is copied (or re-encoded to AAC when the output
    container cannot hold it), as are subtitles where the container allows.
    A film already in colour has its colour discarded and re-predicted from
    its lightness; the summary says whether each input was greyscale.
    Decoding uses at most one worker (--workers 0 decodes in this process).
    Exit code 0 when every film came out whole, 1 when any failed or its
    input was truncated (what decoded is kept), 2 when the run could not start.
    """
    if duration is not None and end is not None:
        fail("give --end or --duration, not both", 2)
    if duration is not None:
        end = (start or 0.0) + duration
    if end is not None and end <= (start or 0.0):
        fail("--end must be after --start", 2)

    import av

    from .media import MediaError
    from .pipeline import Colouriser, PipelineError, RunConfig
    from .video import VideoConfig, VideoError, colour_video

    run = RunConfig(weights=weights, model=model, device=device, precision=precision,
                    batch_size=batch_size, workers=workers, temperature=temperature)
    vcfg = VideoConfig(start=start, end=end, codec=codec, crf=crf, preset=preset, compare=compare,
                       overwrite=overwrite)
    console = make_console()
    err = make_console(stderr=True)
    jobs = _video_jobs(inputs, output, compare)
    engine = None
    reports, failures = [], []
    for src, dst, problem in jobs:
        if problem is None:
            try:
                if engine is None:
                    engine = Colouriser(run)
                    if not quiet:
                        d = engine.describe()
                        console.print(f"model {d['model']} ({'trained' if d['trained'] else 'UNTRAINED'}) "
                                      f"from {d['weights']} on {d['device']} {d['precision']}", markup=False)
                report = _video_one(src, dst, run, vcfg, engine, console, quiet, colour_video)
                reports.append(report)
                if report.truncated:
                    failures.append((src, f"input truncated: {report.frames_lost} frame(s) lost"
                                          + (f" ({report.decode_error})" if report.decode_error else "")
                                          + f"; the {report.frames_out} that decoded are in {report.dst}"))
                continue
            except PipelineError as exc:
                fail(str(exc), 2)
            except KeyboardInterrupt:
                fail("interrupted; the unfinished output was removed", 130)
            except (MediaError, VideoError, av.FFmpegError, OSError) as exc:
                problem = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        failures.append((src, problem))
        err.print(f"error: {problem}", markup=False, highlight=False)
    if reports:
        _video_summary(console, reports, quiet)
    for src, why in failures:
        if "truncated" in why:
            err.print(f"error: {src}: {why}", markup=False, highlight=False)
    if len(jobs) > 1 and failures:
        err.print(f"{len(failures)} of {len(jobs)} film(s) failed", markup=False)
    sys.exit(1 if failures else 0)


def _video_one(src, dst, run, vcfg, engine, console, quiet, colour_video):
    """One film with its own progress bar (frames, frames/s, ETA)."""
    if quiet:
        return colour_video(src, dst, run, vcfg, colouriser=engine)
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[fps]} frames/s"), TimeElapsedColumn(), TextColumn("ETA"),
                  TimeRemainingColumn(), console=console, transient=False) as bar:
        task = bar.add_task(Path(src).name, total=None, fps="-")

        def on_progress(done: int, total) -> None:
            elapsed = bar.tasks[0].elapsed or 0.0
            bar.update(task, completed=done, total=max(total, done) if total else None,
                       fps=f"{done / elapsed:.1f}" if elapsed else "-")

        report = colour_video(src, dst, run, vcfg, on_progress=on_progress, colouriser=engine)
        bar.update(task, completed=report.frames_out, total=report.frames_out)
    return report


def _video_summary(console, reports, quiet: bool) -> None:
    if quiet:
        for r in reports:
            console.print(f"{r.src} -> {r.dst}: {r.frames_out} frames, {r.duration:.2f} s, "
                          f"{r.fps:.1f} frames/s, {_human_bytes(r.output_bytes)}; "
                          + "; ".join(_video_notes(r)), markup=False)
        return
    from rich.table import Table

    table = Table(title="colourbatch video")
    table.add_column("input", overflow="fold")
    for name in ("frames", "duration", "frames/s", "size"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("output", overflow="fold")
    notes = []
    for r in reports:
        table.add_row(Path(r.src).name, f"{r.frames_out}/{r.frames_in}", f"{r.duration:.2f} s",
                      f"{r.fps:.1f}", _human_bytes(r.output_bytes), r.dst)
        notes.append(f"{Path(r.src).name}: " + "; ".join(_video_notes(r)))
    console.print(table)
    for line in notes:
        console.print(line, markup=False)


def _video_notes(r) -> list[str]:
    notes = []
    if r.was_greyscale is False:
        notes.append("input was in colour: its colour was re-predicted from L")
    elif r.was_greyscale:
        notes.append("greyscale input")
    audio = r.audio_copied + r.audio_encoded
    if audio:
        notes.append(f"{audio} audio stream(s)"
                     + (f", {r.audio_encoded} re-encoded to AAC" if r.audio_encoded else " copied"))
    else:
        notes.append("silent")
    if r.subtitles:
        notes.append(f"{r.subtitles} subtitle stream(s)")
    if r.truncated:
        notes.append(f"TRUNCATED input: {r.frames_lost} frame(s) lost")
    return notes + list(r.warnings)
