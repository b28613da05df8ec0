"""`colourbatch pages` through click's CliRunner: exit codes with their output."""
import zipfile

import cv2
import numpy as np
from click.testing import CliRunner

from colourbatch.cli import cli


def grey_page(path, h=48, w=40):
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.full((h, w), 230, np.uint8)
    cv2.rectangle(img, (5, 5), (w - 6, h - 6), 30, 2)
    assert cv2.imwrite(str(path), img)


def invoke(*args):
    return CliRunner().invoke(cli, list(map(str, args)), catch_exceptions=False)


def test_help_is_useful():
    result = invoke("pages", "--help")
    assert result.exit_code == 0
    for word in ("--recolour", "--overwrite", "--format", "--weights", "--batch-size", "archive"):
        assert word in result.output


def test_all_good_exits_zero_with_summary(tmp_path, seed_weights):
    grey_page(tmp_path / "in" / "a.png")
    grey_page(tmp_path / "in" / "b" / "c.jpg")
    result = invoke("pages", tmp_path / "in", "-o", tmp_path / "out", "--weights", seed_weights,
                    "--workers", 0)
    assert result.exit_code == 0, result.output
    rows = {tuple(line.split()[:-1]): line.split()[-1] for line in result.output.splitlines()
            if line.strip().startswith(("coloured", "failed", "skipped"))}
    assert rows[("coloured",)] == "2" and rows[("failed",)] == "0", result.output
    assert rows[("skipped", "(output", "exists)")] == "0", result.output
    assert (tmp_path / "out" / "a.png").exists() and (tmp_path / "out" / "b" / "c.jpg").exists()
    again = invoke("pages", tmp_path / "in", "-o", tmp_path / "out", "--weights", seed_weights,
                   "--workers", 0, "--quiet")
    assert again.exit_code == 0
    assert "0 coloured" in again.output and "2 skipped" in again.output


def test_failures_listed_and_exit_non_zero(tmp_path, seed_weights):
    grey_page(tmp_path / "in" / "good.png")
    (tmp_path / "in" / "bad.png").write_bytes(b"")
    (tmp_path / "in" / "book.cbz").write_bytes(b"not a zip")
    result = invoke("pages", tmp_path / "in", "-o", tmp_path / "out", "--weights", seed_weights,
                    "--workers", 0, "--quiet")
    assert result.exit_code == 1
    assert "1 coloured" in result.output and "2 failed" in result.output
    assert "bad.png: empty file (0 bytes)" in result.stderr
    assert "book.cbz: not a zip archive" in result.stderr
    assert "Traceback" not in result.output


def test_refusals_are_one_line_errors(tmp_path, seed_weights):
    grey_page(tmp_path / "in" / "a.png")
    cases = [
        (("pages", tmp_path / "nope", "-o", tmp_path / "out"), "no such file"),
        (("pages", tmp_path / "in", "-o", tmp_path / "in" / "sub"), "inside the input"),
        (("pages", tmp_path / "in", "-o", tmp_path / "in"), "is the input"),
        (("pages", tmp_path / "in", "-o", tmp_path / "out", "--weights", tmp_path / "in" / "a.png"),
         "not a readable weights file"),
        (("pages", tmp_path / "in", "-o", tmp_path / "out", "--weights", tmp_path / "none.pt"),
         "weights file not found"),
    ]
    for args, message in cases:
        extra = () if "--weights" in args else ("--weights", seed_weights)
        result = invoke(*args, *extra, "--workers", 0)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.stderr and result.stderr.count("\n") == 1
        assert "Traceback" not in result.output
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == ["a.png"]


def test_cbz_in_cbz_out(tmp_path, seed_weights):
    buf = cv2.imencode(".png", np.full((30, 20), 200, np.uint8))[1].tobytes()
    with zipfile.ZipFile(tmp_path / "vol.cbz", "w") as zf:
        zf.writestr("01.png", buf)
        zf.writestr("02.png", buf)
    result = invoke("pages", tmp_path / "vol.cbz", "-o", tmp_path / "out", "--weights", seed_weights,
                    "--workers", 0)
    assert result.exit_code == 0, result.output
    with zipfile.ZipFile(tmp_path / "out" / "vol.cbz") as zf:
        assert zf.namelist() == ["01.png", "02.png"]


def test_shards_split_a_folder_and_rerun_finishes_what_is_missing(tmp_path, seed_weights):
    for i in range(6):
        grey_page(tmp_path / "in" / f"v{i % 2}" / f"p{i}.png")

    def shard(k, out):
        result = invoke("pages", tmp_path / "in", "-o", out, "--weights", seed_weights, "--workers", 0,
                        "--shard", f"{k}/3", "--quiet")
        assert result.exit_code == 0 and f"shard {k}/3: " in result.output, result.output
        return result

    # Each shard into its own folder: what each wrote is exactly its share.
    parts = []
    for k in range(3):
        shard(k, tmp_path / f"out{k}")
        out = tmp_path / f"out{k}"
        parts.append({p.relative_to(out).as_posix() for p in out.rglob("*.png")} if out.exists() else set())
    assert sum(len(p) for p in parts) == 6 and set().union(*parts) == {f"v{i % 2}/p{i}.png" for i in range(6)}
    # A re-run of one shard after a kill finishes only its missing page.
    k = next(k for k, p in enumerate(parts) if p)
    missing = sorted(parts[k])[0]
    (tmp_path / f"out{k}" / missing).unlink()
    again = shard(k, tmp_path / f"out{k}")
    assert "1 coloured" in again.output and f"{len(parts[k]) - 1} skipped" in again.output


def test_style_options_and_summary_count_each_style(tmp_path, tinted_weights, tinted_page_weights):
    page = np.full((200, 160), 250, np.uint8)
    cv2.circle(page, (80, 100), 50, 15, 3)
    (tmp_path / "in").mkdir()
    assert cv2.imwrite(str(tmp_path / "in" / "drawn.png"), page)
    rng = np.random.default_rng(0)
    photo = cv2.GaussianBlur(rng.integers(0, 256, (120, 160)).astype(np.uint8), (0, 0), 6)
    assert cv2.imwrite(str(tmp_path / "in" / "photo.png"), cv2.normalize(photo, None, 0, 255, cv2.NORM_MINMAX))
    result = invoke("pages", tmp_path / "in", "-o", tmp_path / "out", "--weights", tinted_weights,
                    "--page-weights", tinted_page_weights, "--workers", 0, "--quiet")
    assert result.exit_code == 0, result.output
    assert "2 coloured, 1 drawn, 1 photo," in result.output
    result = invoke("pages", tmp_path / "in", "-o", tmp_path / "all-drawn", "--weights", tinted_weights,
                    "--page-weights", tinted_page_weights, "--style", "drawn", "--workers", 0, "--quiet")
    assert result.exit_code == 0 and "2 coloured, 2 drawn," in result.output, result.output
    bad = invoke("pages", tmp_path / "in", "-o", tmp_path / "x", "--style", "comic")
    assert bad.exit_code == 2 and "comic" in bad.output
    # Page weights that no page would use are refused, before any page is written.
    bad = invoke("pages", tmp_path / "in", "-o", tmp_path / "y", "--style", "photo",
                 "--page-weights", tinted_page_weights)
    assert bad.exit_code == 2 and "--style photo" in bad.output and not (tmp_path / "y").exists()
