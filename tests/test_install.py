"""A real install: build the wheel, install it into a fresh virtual environment
outside the repository, and colour a page with the weights the wheel carries."""
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(python of a fresh venv with the wheel installed, a folder outside the repo)."""
    root = tmp_path_factory.mktemp("install")
    wheels = root / "wheels"
    # Build from a clean copy: an in-tree build/ folder left by an earlier build would hide
    # files that packaging no longer includes.
    src = root / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "__pycache__", "tests", "out", "*.ckpt"))
    # No build isolation: the build needs only setuptools, already here (CI is offline but
    # for package registries, and this keeps the test to seconds).
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(wheels), str(src)], check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("colourbatch-*.whl")
    env_dir = root / "venv"
    # The dependencies (torch, OpenCV, PyAV...) come from this interpreter's site-packages:
    # what is under test is colourbatch's own packaging, not a second 1 GB torch install.
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True, timeout=300)
    work = root / "elsewhere"
    work.mkdir()
    return python, work, env_dir


def test_wheel_carries_the_weights_and_colours_a_page(installed):
    python, work, env_dir = installed
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    probe = subprocess.run(
        [str(python), "-c", "import colourbatch, colourbatch.checkpoint as c; "
                            "print(colourbatch.__file__); print(c.shipped_weights())"],
        cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr
    module, weights = probe.stdout.split()
    # Imported from the venv, not the source tree (an editable install would point into REPO).
    assert Path(module).is_relative_to(env_dir) and Path(weights).is_relative_to(env_dir)
    assert Path(weights).stat().st_size > 1_000_000

    page = np.full((96, 64), 235, np.uint8)
    cv2.circle(page, (32, 48), 20, 40, 3)
    assert cv2.imwrite(str(work / "page.png"), page)
    exe = python.parent / "colourbatch"
    run = subprocess.run([str(exe), "pages", "page.png", "-o", "out", "--workers", "0", "--quiet"],
                         cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 coloured" in run.stdout
    out = cv2.imread(str(work / "out" / "page.png"))
    assert out is not None and out.shape[:2] == (96, 64)
