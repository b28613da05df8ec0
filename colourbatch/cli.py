"""The command line: the only module that imports click or rich, prints, or exits.

Commands stay thin: each builds its config dataclasses (colourbatch.config,
whose fields hold every default the options show), calls one library
function, and shows its progress and results. Errors leave by one door: the
library raises a `ColourbatchError`, the group below prints its one line and
exits with the code the error carries (0 done, 1 some inputs failed, 2 could
not start, 130 interrupted). torch, OpenCV and PyAV are imported inside
command bodies so `colourbatch --help` answers instantly.
"""
from __future__ import annotations

import os
from pathlib import Path

import click

from . import __version__
from . import config as C
from .errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, ColourbatchError, UsageError

DEVICE_HELP = "auto (CUDA when present), cpu, cuda or cuda:N."


class _Commands(click.Group):
    """Every command's errors end here: one `error:` line on stderr and the error's exit code."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ColourbatchError as exc:
            _error(str(exc))
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            _error("interrupted; finished outputs are kept and unfinished ones removed, "
                   "so a re-run resumes")
            ctx.exit(EXIT_INTERRUPTED)


def _error(message: str) -> None:
    click.echo(f"error: {message}", err=True)


def option(cls, name: str, *decls: str, **kw):
    """A click option whose default (shown in --help) is field `name` of config `cls`."""
    value = C.default(cls, name)
    kw.setdefault("default", value)
    if value is not None and value != () and not kw.get("is_flag"):
        kw.setdefault("show_default", True)
    flag = "--" + name.replace("_", "-")
    return click.option(*(decls or (flag,)), name, **kw)


def run_options(f):
    """Options every colouring command shares (pages, video): the fields of RunConfig."""
    R = C.RunConfig
    options = [
        option(R, "weights", type=click.Path(dir_okay=False),
               help="Weights file [default: the trained weights shipped with colourbatch]."),
        option(R, "model", help="Model name for a bare state-dict file; self-describing weights say it themselves."),
        option(R, "device", help=DEVICE_HELP),
        option(R, "precision", type=click.Choice(C.PRECISIONS),
               help="Compute precision: auto = fp16/bf16 on CUDA, bf16 on CPUs that support it."),
        option(R, "batch_size", type=click.IntRange(1, 4096), help="Tiles per model call."),
        option(R, "workers", type=click.IntRange(0, 64),
               help="DataLoader processes that read and convert inputs ahead of the model."),
        option(R, "temperature", type=click.FloatRange(0.01, 10.0),
               help="Annealed-mean T of the default model: lower is livelier [default: the weights' own]."),
        option(R, "decode", type=click.Choice(C.DECODES),
               help="Decoding of the default model: annealed, or confident (unsure regions stay "
                    "near neutral) [default: the weights' own]."),
        option(R, "shard", metavar="I/N",
               help="Colour only shard I of N of the inputs (0-based, stable by path), for splitting a job "
                    "across machines [default: from COLOURBATCH_SHARD, SLURM array, torchrun or "
                    "Kubernetes indexed-Job variables when set, else everything].",
               callback=_check_shard),
        option(R, "ray", is_flag=True,
               help="Run each film or page file/archive as a task on Ray: a local Ray instance, or the "
                    'cluster --ray-address names. Needs pip install "colourbatch[ray]".'),
        option(R, "ray_address", metavar="ADDRESS",
               help="The Ray cluster to use (e.g. ray://head:10001, or auto from a node of it); implies --ray."),
        click.option("--quiet", "-q", is_flag=True, help="No progress bar; only errors and the final line."),
    ]
    for opt in reversed(options):
        f = opt(f)
    return f


def _check_shard(ctx, param, value):
    """A click callback: I/N checked at parse time (the scheduler's variables are read later)."""
    if value is not None:
        from .shard import ShardError, parse
        try:
            parse(value)
        except ShardError as exc:
            raise click.BadParameter(str(exc)) from None
    return value


def make_console(stderr: bool = False):
    from rich.console import Console
    return Console(stderr=stderr, highlight=False, soft_wrap=True)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="colourbatch")
def cli():
    """Colour black-and-white films, photos and manga pages in batches.

    \b
    colourbatch pages manga/ -o coloured/     folders, images, .cbz/.zip archives
    colourbatch video film.mp4                 a film, with its sound and timing
    colourbatch train --data DIR --out W.pt    train on the Kaggle set or photos
    colourbatch evaluate --data DIR            quality metrics against the truth

    Exit codes, every command: 0 all done, 1 some inputs failed (listed),
    2 could not start (nothing was done), 130 interrupted.
    """


def main():
    cli(prog_name="colourbatch")


# ===================================================================== pages
@cli.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False),
              help="Output folder; mirrors the input tree, archives become archives of the same name.")
@option(C.PagesConfig, "fmt", "--format", type=click.Choice(C.PAGE_FORMATS),
        help="Output format [default: each page keeps its own].")
@option(C.PagesConfig, "recolour", is_flag=True,
        help="Also colour pages that are already in colour (default: copy them through untouched).")
@option(C.PagesConfig, "overwrite", is_flag=True,
        help="Redo pages whose output exists (default: skip them, so a re-run resumes).")
@option(C.PagesConfig, "style", type=click.Choice(C.STYLES),
        help="photo: keep each page's own L and add colour (photos, paintings, grey-shaded art); "
             "drawn: lay flat colour under the ink (line art, manga, screentone); auto: decide per page.")
@option(C.PagesConfig, "page_weights", type=click.Path(dir_okay=False),
        help="Weights for drawn pages [default: the shipped weights/page.pt].")
@run_options
@click.pass_context
def pages(ctx, inputs, quiet, **values):
    """Colour folders of pages, single images and .cbz/.zip archives.

    INPUT is a folder (searched recursively), an image (PNG, JPEG, WebP, BMP,
    TIFF) or a .cbz/.zip archive. Pages keep their exact size: the model
    colours a 224x224 tile of the page's L, and the predicted colour is
    upsampled and merged with the page's own full-resolution L, so line art
    stays as sharp as the input. Pages more elongated than 1:2 are coloured
    in overlapping windows. Drawn pages (mostly paper and ink, by a rule on
    the page's histogram; --style overrides it) get a flat colour layer laid
    under the ink instead: ink and lettering stay exactly as they were, paper
    takes colour, closed regions take one flat colour each and speech balloons
    stay white. Grey detection: pages already in colour are copied
    through unless --recolour. An output that would replace an input, or that
    two inputs would share, is refused before any work. Exit code: 0 every
    page done, 1 some failed (listed at the end), 2 the run could not start.
    """
    from .pages import colour_pages

    run, pcfg = C.build(C.RunConfig, values), C.build(C.PagesConfig, values)
    console = make_console()
    with _PagesView(console, quiet) as view:
        report = colour_pages(list(inputs), pcfg, run, on_progress=view.on_event)
    _pages_summary(console, report, pcfg.out, quiet)
    ctx.exit(EXIT_OK if report.ok else EXIT_FAILED)


# ===================================================================== train
T = C.TrainConfig


@cli.command()
@option(T, "data", multiple=True, required=True, type=click.Path(),
        help="A Kaggle image-colorization folder, or a folder of colour images (repeatable).")
@option(T, "out", required=True, type=click.Path(dir_okay=False),
        help="Weights file to write (fp16, for pages/video); the full state goes to OUT.ckpt.")
@option(T, "model", help="Network to train, a name from the model table [default: default; "
                         "on --resume, the checkpoint's own].")
@option(T, "epochs", type=click.FloatRange(0, min_open=True),
        help="Passes over the training split (default 1 when --steps is not given).")
@option(T, "steps", type=click.IntRange(1), help="Optimiser steps (instead of --epochs).")
@option(T, "batch_size", type=click.IntRange(1, 4096), help="Tiles per step and process.")
@option(T, "lr", type=click.FloatRange(0, min_open=True),
        help="Learning rate [default: the model's own recipe].")
@option(T, "warmup", type=click.IntRange(0), help="Linear warm-up steps before the cosine decay.")
@option(T, "device", help=DEVICE_HELP)
@option(T, "precision", type=click.Choice(C.PRECISIONS),
        help="Autocast precision: auto = fp16/bf16 on CUDA, bf16 on capable CPUs.")
@option(T, "resume", type=click.Path(dir_okay=False),
        help="Continue exactly from a .ckpt training wrote (optimizer, step, RNG, data position).")
@option(T, "checkpoint", type=click.Path(dir_okay=False),
        help="Where to write the training state [default: OUT.ckpt].")
@option(T, "size", type=click.IntRange(32, 1024), help="Training tile side.")
@option(T, "crops", type=click.IntRange(1, 1000), help="Random crops per image per epoch (image folders).")
@option(T, "val_fraction", type=click.FloatRange(0, 0.9, min_open=True),
        help="Share held out for validation, never trained on.")
@option(T, "holdout", multiple=True, metavar="SOURCE",
        help="Hold out a whole source (a sub-folder of --data, or a --data folder) as the "
             "validation set, never trained on (repeatable).")
@option(T, "val_every", type=click.IntRange(1), help="Steps between validations.")
@option(T, "val_images", type=click.IntRange(1), help="Validation pictures per mid-run check (all of them at the end).")
@option(T, "ckpt_every", type=click.IntRange(1), help="Steps between checkpoints (one is always written at the end).")
@option(T, "log_every", type=click.IntRange(1), help="Steps between progress updates.")
@option(T, "workers", type=click.IntRange(0, 64), help="DataLoader processes preparing batches.")
@option(T, "threads", type=click.IntRange(1, 1024),
        help="CPU threads per process [default: the cores, shared among torchrun's local processes].")
@option(T, "max_minutes", type=click.FloatRange(0, min_open=True),
        help="Wall-clock budget: stop cleanly and save when it runs out.")
@option(T, "init_encoder", help="ImageNet encoder weights for models that have one: auto (installed "
                                "package), none, or a .pth path.")
@option(T, "encoder_lr", type=click.FloatRange(0, 1),
        help="The pretrained encoder's learning rate as a share of the peak; 0 freezes it "
             "(weights and BatchNorm statistics).")
@option(T, "rebalance", type=click.FloatRange(0, 1, min_open=True),
        help="Class rebalancing of bin models (Zhang's lambda): 1 trains on the data's own colour "
             "frequencies, lower values weight rare colours up.")
@option(T, "ema", type=click.FloatRange(0, 1, max_open=True),
        help="Decay of a moving average of the weights, which is validated and saved (0: off).")
@option(T, "seed", type=int, help="Data order, augmentation, initialisation.")
@click.option("--quiet", "-q", is_flag=True, help="No progress; only errors and the final line.")
def train(quiet, **values):
    """Train a model from the model table on the Kaggle set or folders of colour photos.

    \b
    colourbatch train --data kaggle/ --out weights/mine.pt --epochs 2
    colourbatch train --data photos/ --model seed --out seed.pt --steps 4000
    colourbatch train --data photos/ --out mine.pt --resume mine.pt.ckpt --steps 8000
    torchrun --nproc_per_node=2 -m colourbatch train --data photos/ --out mine.pt
    """
    if values["steps"] is not None and values["epochs"] is not None:
        raise UsageError("give --steps or --epochs, not both")
    from .train import train as run_training

    # Under torchrun only rank 0 reports; the others stay silent.
    main_rank = int(os.environ.get("RANK", "0")) == 0
    cfg = C.build(C.TrainConfig, dict(values, data=tuple(values["data"]), holdout=tuple(values["holdout"])))
    view = _TrainView(quiet or not main_rank)
    try:
        result = run_training(cfg, view.on_event)
    finally:
        view.close()
    if main_rank:
        view.final(result)


# ================================================================== evaluate
E = C.EvalConfig


@cli.command()
@option(E, "data", multiple=True, type=click.Path(),
        help="A Kaggle folder or folders of colour images (repeatable).")
@option(E, "split", type=click.Choice(C.SPLITS),
        help="val: the split training holds out (never trained on); train; all.")
@option(E, "val_fraction", type=click.FloatRange(0, 0.9, min_open=True),
        help="The held-out share [default: the one the first weights were trained with].")
@option(E, "holdout", multiple=True, metavar="SOURCE",
        help="Held-out sources as train takes them (repeatable) [default: the first weights' own].")
@option(E, "per_source", is_flag=True, help="A row per source as well as the pooled one.")
@option(E, "drawn", is_flag=True,
        help="Score page models on drawn pages: each picture under --data drawn as ink on paper, "
             "coloured as `pages --style drawn` does, against the picture [default weights: the "
             "shipped page model].")
@option(E, "pred", type=click.Path(file_okay=False),
        help="Folder of finished predictions, compared with --truth by relative path.")
@option(E, "truth", type=click.Path(file_okay=False), help="Folder of the true colour pictures for --pred.")
@option(E, "video", type=click.Path(dir_okay=False),
        help="A coloured film to score for flicker (warp error) and colour against --source; "
             "alone, a colour film that is coloured from its own lightness (each --weights) and scored.")
@option(E, "source", type=click.Path(dir_okay=False), help="The film --video was coloured from.")
@option(E, "max_frames", type=click.IntRange(1), help="With --video: only the first N frames.")
@option(E, "weights", multiple=True, type=click.Path(dir_okay=False),
        help="Weights file to score (repeatable) [default: the shipped default weights].")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON (for scripts).")
@option(E, "max_images", type=click.IntRange(1), help="Score at most N pictures.")
@option(E, "temperature", type=click.FloatRange(0.01, 10.0),
        help="Annealed-mean T of default models [default: the weights' own].")
@option(E, "decode", multiple=True, type=click.Choice(C.DECODES),
        help="Score default models with this decoding, a row each (repeatable) [default: the weights' own].")
@option(E, "sheet", type=click.Path(dir_okay=False), help="Write a contact sheet PNG: grey | each model | truth.")
@option(E, "sheet_images", type=click.IntRange(1, 200), help="Pictures (rows) on the contact sheet.")
@option(E, "size", type=click.IntRange(32, 1024), help="Tile side the models see (training validates at this size).")
@option(E, "device", help=DEVICE_HELP)
@option(E, "precision", type=click.Choice(C.PRECISIONS), help="Compute precision.")
@option(E, "batch_size", type=click.IntRange(1, 4096), help="Tiles per model call.")
@option(E, "workers", type=click.IntRange(0, 64), help="DataLoader processes.")
@click.option("--quiet", "-q", is_flag=True, help="No progress; only the table (or JSON).")
def evaluate(as_json, quiet, **values):
    """Score models (or a folder of predictions) against the truth, beside the grey baseline.

    \b
    colourbatch evaluate --data kaggle/                       shipped weights, validation split
    colourbatch evaluate --data photos/ --weights a.pt --weights b.pt --sheet sheet.png
    colourbatch evaluate --pred coloured/ --truth originals/ --json
    colourbatch evaluate --video film.colour.mp4 --source film.mp4      flicker of a film
    colourbatch evaluate --video colour-film.mp4 --max-frames 100     colour it, then score it
    colourbatch evaluate --drawn --data held-out-art/ --sheet drawn.png  drawn pages

    \b
    Metrics: accuracy = 1 - MSE/7500 on 0..255 LAB (ColourMePy); PSNR on RGB and on
    the a/b planes; SSIM on RGB; colourfulness ratio = prediction / truth, with Hasler
    & Suesstrunk's M = sqrt(sd(rg)^2 + sd(yb)^2) + 0.3 sqrt(mean(rg)^2 + mean(yb)^2),
    rg = R - G, yb = (R + G)/2 - B; AuC = share of pixels with a/b error <= t averaged
    over t = 0..150 (Zhang et al. 2016), and its class-rebalanced form; L error =
    mean |L_pred - L_true| on 0..255. The grey row is a = b = 128.

    \b
    Films: warp error (Lai et al. 2018) = mean |a/b of frame t - a/b of frame t-1
    warped onto it| in LAB units, the motion being DIS optical flow on the source's L
    at 320x180, pixels failing the forward-backward check and pairs across a scene
    cut left out; against a colour source also its own warp error (the floor), the
    colourfulness ratio and PSNR of a/b.

    \b
    Drawn pages: the "uncoloured" row is the drawn page as it is; ink kept = share of ink pixels
    (L < 35) within 5 L of the page; white kept = share of the truth's white (L > 95,
    chroma < 5) left white; coloured = share of the non-ink area with chroma > 10.
    """
    from .evaluate import evaluate_set

    cfg = C.build(C.EvalConfig, dict(values, data=tuple(values["data"]), weights=tuple(values["weights"]),
                                     holdout=tuple(values["holdout"]), decode=tuple(values["decode"])))
    # With --json stdout carries only the JSON: progress goes to stderr.
    view = _EvalView(make_console(stderr=True), quiet)
    try:
        result = evaluate_set(cfg, view.on_event)
    finally:
        view.close()
    if as_json:
        import json
        click.echo(json.dumps(_json_safe(result), indent=2))
        return
    console = make_console()
    if not console.is_terminal:
        console.width = 140  # logs and pipes: one line per row, not rich's 80-column wrap
    _eval_table(console, result)


# ===================================================================== video
V = C.VideoConfig


def _time(ctx, param, value):
    """A click callback: seconds from '90', '1:30' or '01:02:03.5' (NaN, infinity, negatives refused)."""
    try:
        return None if value is None else C.parse_time(value)
    except C.BadTime as exc:
        raise click.BadParameter(str(exc)) from None


@cli.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--output", type=click.Path(), default=None,
              help="Output file (its extension picks the container: .mp4, .mkv, .mov), or a folder. "
                   "Default: <name>.colour.mp4 beside each input. With several inputs: a folder.")
@option(V, "overwrite", is_flag=True, help="Replace an existing output file.")
@option(V, "codec", help="Video encoder: libx264 plays everywhere; libx265 is smaller; ffv1 (in .mkv) is lossless.")
@option(V, "crf", type=click.IntRange(0, 63),
        help="Constant quality for x264/x265/VP9: lower is better and bigger; 18 is visually lossless.")
@option(V, "preset", help="Encoder speed preset for x264/x265 (ultrafast ... veryslow) [default: medium].")
@option(V, "start", callback=_time, metavar="TIME",
        help="Colour from this time (seconds, MM:SS or HH:MM:SS): previews of a part.")
@option(V, "end", callback=_time, metavar="TIME", help="Stop at this time.")
@option(V, "duration", callback=_time, metavar="TIME", help="Colour this long from --start (instead of --end).")
@option(V, "compare", is_flag=True, help="Write grey | colour side by side (default name <name>.compare.mp4).")
@option(V, "stability", type=click.FloatRange(0, 1, max_open=True),
        help="Hold colour still along the motion: each frame's colour is averaged with its neighbours' "
             "moved onto it, a neighbour's weight falling by this factor a frame (and to nothing where "
             "the motion is not tracked or at a scene cut); 0 = each frame on its own.")
@option(V, "reach", type=click.IntRange(0, C.MAX_REACH), metavar="FRAMES",
        help="Frames either side of each frame (before and ahead) whose colour the stabiliser averages "
             "in: centred, so colour that really changes is followed without lag; 0 = off.")
@run_options
@click.pass_context
def video(ctx, inputs, output, quiet, **values):
    """Colour films: every frame, its timing, sound, subtitles and rotation kept.

    INPUT is a video file (MP4, MKV, MOV, AVI...) or a folder of them. Frames
    stream through memory: each frame's L goes to the model as a 224x224 tile,
    the predicted colour is upsampled and merged with the frame's own
    full-resolution L. Audio is copied (or re-encoded to AAC when the output
    container cannot hold it), as are subtitles where the container allows.
    A film already in colour has its colour discarded and re-predicted from
    its lightness; the summary says whether each input was greyscale. Every
    input and output is checked before the model loads: a still image, an
    output that is an input or that two inputs share, bad times or encoder
    settings are refused at once. Decoding uses at most one worker (--workers
    0 decodes in this process). Exit code: 0 every film came out whole, 1 some
    failed or were truncated (what decoded is kept), 2 the run could not start.
    """
    from .video import colour_films

    run, vcfg = C.build(C.RunConfig, values), C.build(C.VideoConfig, values)
    console, err = make_console(), make_console(stderr=True)
    with _VideoView(console, quiet, err) as view:
        result = colour_films(list(inputs), output, vcfg, run, view.on_event)
    if result.reports:
        _video_summary(console, result.reports, quiet)
    if result.skipped:
        console.print(f"{len(result.skipped)} film(s) skipped: their output exists, done in an earlier "
                      f"run (--overwrite redoes them), e.g. {result.skipped[0][1]}", markup=False)
    for note in result.notes:
        console.print(f"note: {note}", markup=False)
    for _, why in result.failed:
        err.print(f"error: {why}", markup=False)
    bad = len(result.refused) + len(result.failed)
    if bad and result.films > 1:
        err.print(f"{bad} of {result.films} film(s) failed", markup=False)
    ctx.exit(EXIT_OK if result.ok else EXIT_FAILED)


# ===================================================================== views
def _bar(console, unit: str):
    """The one progress-bar layout: name, bar, done/total, whole-run rate, elapsed, ETA."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)
    from rich.text import Text

    class Rate(TextColumn):
        def __init__(self):
            super().__init__("")

        def render(self, task):
            # Whole-run average: rich's windowed speed jumps when pages finish in bursts.
            speed = task.completed / task.elapsed if task.elapsed else 0.0
            return Text(f"{speed:.1f} {unit}/s" if speed else f"- {unit}/s")

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), Rate(),
                    TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console)


def _engine_line(info: dict) -> str:
    state = "trained" if info["trained"] else "UNTRAINED"
    used = f" for {info['style']} pages" if "style" in info else ""
    return (f"model {info['model']} ({state}){used} from {info['weights']} on {info['device']} "
            f"{info['precision']}")


class _BarView:
    """A view that shows one rich progress bar at a time and always takes it down."""

    def __init__(self, console, quiet: bool):
        self.console, self.quiet = console, quiet
        self.bar = self.task = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def open(self, unit: str, name: str, total: int | None) -> None:
        self.close()
        self.bar = _bar(self.console, unit)
        self.bar.start()
        self.task = self.bar.add_task(name, total=total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None

    def print(self, text: str) -> None:
        (self.bar.console if self.bar else self.console).print(text, markup=False, highlight=False)


class _PagesView(_BarView):
    """colour_pages()'s events: the model line and one bar over every page."""

    def on_event(self, kind: str, info: dict) -> None:
        if self.quiet:
            return
        if kind == "start":
            self.open("pages", "colouring pages", info["total"])
        elif kind == "engine":
            self.print(_engine_line(info))
        elif kind == "page" and self.bar is not None:
            self.bar.advance(self.task)
            if info["outcome"] == "error":
                self.print(f"failed {info['source']}: {info['reason']}")


def _pages_summary(console, report, out, quiet: bool) -> None:
    n_fail = len(report.failed)
    rate = len(report.done) / report.seconds if report.seconds > 0 else 0.0
    by_style = "".join(f", {n} {s}" for s, n in sorted(report.styles.items()))
    line = (f"{len(report.done)} coloured{by_style}, {len(report.copied)} colour pages copied, "
            f"{len(report.skipped)} skipped (already done), {n_fail} failed"
            f" in {report.seconds:.1f} s ({rate:.1f} pages/s) -> {out}")
    if not quiet:
        from rich.table import Table
        table = Table(title="colourbatch pages", show_header=False, box=None)
        table.add_row("coloured", str(len(report.done)))
        styles = ", ".join(f"{n} {s}" for s, n in sorted(report.styles.items()))
        if styles:
            table.add_row("pictures by style", styles)
        table.add_row("copied (already colour)", str(len(report.copied)))
        table.add_row("skipped (output exists)", str(len(report.skipped)))
        table.add_row("archives written", str(len(report.archives)))
        table.add_row("failed", f"[red]{n_fail}[/red]" if n_fail else "0")
        table.add_row("time", f"{report.seconds:.1f} s ({rate:.1f} pages/s)")
        table.add_row("output", str(out))
        console.print(table)
    for note in report.notes:
        console.print(f"note: {note}", markup=False)
    if n_fail:
        err = make_console(stderr=True)
        err.print(f"[red]{n_fail} failed:[/red]")
        for source, reason in report.failed:
            err.print(f"  {source}: {reason}", markup=False, highlight=False)
    if quiet:
        console.print(line, markup=False)


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


#: Table columns: (metric key, header, format); accuracy is shown in percent.
_EVAL_COLUMNS = (("accuracy", "acc %", lambda v: f"{100 * v:.2f}"),
                 ("psnr_rgb", "PSNR", "{:.2f}".format), ("psnr_ab", "PSNR ab", "{:.2f}".format),
                 ("ssim", "SSIM", "{:.3f}".format), ("colourfulness_ratio", "colour ratio", "{:.2f}".format),
                 ("auc", "AuC", "{:.2f}".format), ("auc_rebal", "AuC rebal", "{:.2f}".format),
                 ("l_error", "L err", "{:.2f}".format))
_DRAWN_COLUMNS = tuple((k, h, lambda v: f"{100 * v:.1f}") for k, h in
                       (("ink_kept", "ink kept %"), ("white_kept", "white kept %"), ("coloured", "coloured %")))


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
            base = "the uncoloured page" if info.get("mode") == "drawn" else "grey"
            self._print(f"evaluating {', '.join(info['models'])} and {base} on {info['images']} "
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

    if result["mode"] == "video":
        table = Table(title=f"{result['video']} against {result['source']}",
                      caption="warp error in LAB units: lower holds stiller; the source's own is the floor")
        for name in ("film", "frames", "pairs", "cuts", "warp error", "source's own", "colourfulness",
                     "colour ratio", "PSNR ab"):
            table.add_column(name, justify="right")

        def num(v, f="{:.3f}"):
            return "-" if v is None else f.format(v)
        for r in result["rows"]:
            table.add_row(escape(r["name"]), str(r["frames"]), str(r["pairs"]), str(r["cuts"]),
                          num(r["warp_error"]), num(r["source_warp_error"]), num(r["colourfulness"], "{:.2f}"),
                          num(r["colourfulness_ratio"], "{:.2f}"), num(r["psnr_ab"], "{:.2f}"))
        console.print(table)
        return
    columns = _EVAL_COLUMNS
    if result["mode"] == "data":
        title = (f"{result['images']} pictures, {result['split']} split of "
                 f"{', '.join(result['data'])}")
    elif result["mode"] == "drawn":
        title = f"{result['images']} pictures drawn as pages from {', '.join(result['data'])}"
        columns = _EVAL_COLUMNS + _DRAWN_COLUMNS
    else:
        title = f"{result['images']} pictures: {result['pred']} vs {result['truth']}"
    table = Table(title=title, caption="PSNR on RGB; colour ratio = colourfulness / truth's")
    table.add_column("model", no_wrap=True)
    for _, header, _ in columns:
        table.add_column(header, justify="right")
    for row in result["rows"]:
        name = row["name"] if row["model"] in (None, row["name"]) else f"{row['name']} [{row['model']}]"
        table.add_row(escape(name), *[fmt(row[key]) for key, _, fmt in columns])
    console.print(table)
    for note in result["notes"]:
        console.print(f"note: {note}", markup=False)
    if result.get("sheet"):
        console.print(f"contact sheet: {result['sheet']}", markup=False)


def _human_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


class _VideoView(_BarView):
    """colour_videos()'s events: the model line, then a bar per film (frames, frames/s, ETA);
    on a Ray cluster, one bar over the films."""

    films = False  # counting films (Ray) rather than one film's frames

    def __init__(self, console, quiet: bool, err):
        super().__init__(console, quiet)
        self.err = err

    def on_event(self, kind: str, info) -> None:
        if kind == "refused":  # shown even with --quiet: these are errors, before any work
            self.err.print(f"error: {info['reason']}", markup=False, highlight=False)
            return
        if self.quiet:
            return
        if kind == "films":
            self.films = True
            self.open("films", "colouring films", info["total"])
        elif self.films and kind in ("film_done", "film_failed"):
            self.bar.advance(self.task)
        elif kind == "engine":
            self.print(_engine_line(info))
        elif kind == "film":
            self.open("frames", Path(info["job"].src).name, None)
        elif kind == "progress" and self.bar is not None:
            done, total = info["done"], info["total"]
            self.bar.update(self.task, completed=done, total=max(total, done) if total else None)
        elif kind == "film_done" and self.bar is not None:
            frames = info["report"].frames_out
            self.bar.update(self.task, completed=frames, total=frames)
            self.close()
        elif kind == "film_failed":
            self.close()


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
    notes.append(f"{r.cuts} scene cut(s)")
    if r.frames_dropped:
        notes.append(f"{r.frames_dropped} frame(s) with a repeated or out-of-order timestamp dropped")
    if r.truncated:
        notes.append(f"TRUNCATED input: {r.frames_lost} frame(s) lost")
    return notes + list(r.warnings)
