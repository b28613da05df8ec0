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
