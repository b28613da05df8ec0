"""pages.py and pipeline.colour_pages on real page files made in the test."""
import hashlib
import os
import struct
import zipfile
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from colourbatch import colour, pages
from colourbatch.pipeline import PagesConfig, PipelineError, RunConfig, colour_pages

FIXTURES = Path(__file__).parent / "fixtures"


def line_art(h, w, seed=0):
    """A grey page: white paper, dark strokes and a few grey fills."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w), 245, np.uint8)
    for _ in range(12):
        p1 = tuple(int(v) for v in rng.integers(0, [w, h]))
        p2 = tuple(int(v) for v in rng.integers(0, [w, h]))
        cv2.line(img, p1, p2, int(rng.integers(0, 60)), int(rng.integers(1, 4)))
    cv2.circle(img, (w // 2, h // 2), min(h, w) // 4, 128, -1)
    return img


def write(path: Path, img) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)
    return path


def run(inputs, out, weights, **kw):
    pcfg = PagesConfig(out=str(out), **{k: v for k, v in kw.items() if k in ("fmt", "recolour", "overwrite")})
    rcfg = RunConfig(weights=str(weights), workers=kw.get("workers", 0), batch_size=4)
    return colour_pages([str(i) for i in inputs], pcfg, rcfg)


def read_rgb(path):
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def tree_hash(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_folder_mirrored_sizes_formats_and_l_kept(tmp_path, tinted_weights):
    src = tmp_path / "manga"
    sizes = {"a.png": (300, 200), "sub/b.jpg": (120, 333), "sub/deeper/c.webp": (97, 131),
             "d.bmp": (64, 64), "e.tif": (81, 50)}
    for name, (h, w) in sizes.items():
        write(src / name, line_art(h, w))
    before = tree_hash(src)
    report = run([src], tmp_path / "out", tinted_weights, workers=1)
    assert report.ok and sorted(report.done) == sorted(str(src / n) for n in sizes)
    for name, (h, w) in sizes.items():
        out = tmp_path / "out" / name
        assert out.exists(), name
        rgb = read_rgb(out)
        assert rgb.shape == (h, w, 3)
        # L of the output equals the input's L: exact up to rounding for lossless formats.
        l_in = colour.rgb_to_l(read_rgb(src / name))
        err = np.abs(colour.rgb_to_l(rgb).astype(int) - l_in.astype(int))
        limit = 1.0 if out.suffix in (".png", ".bmp", ".tif") else 3.0
        assert err.mean() < limit, (name, err.mean())
        # The tinted model's colour arrives in the page (mid-grey areas take colour).
        assert colour.chroma_share(rgb) > 0.2, name
    assert tree_hash(src) == before  # inputs never modified
    assert not list((tmp_path / "out").rglob(f"*{pages.TMP_TAG}*"))


def test_colour_pages_copied_through_unless_recolour(tmp_path, tinted_weights):
    src = tmp_path / "in"
    colour_page = np.zeros((40, 60, 3), np.uint8)
    colour_page[:, :30] = (0, 0, 255)
    colour_page[:, 30:] = (0, 200, 0)
    write(src / "colour.png", colour_page)
    write(src / "grey.png", line_art(40, 60))
    report = run([src], tmp_path / "out", tinted_weights)
    assert report.copied == [str(src / "colour.png")] and report.done == [str(src / "grey.png")]
    assert (tmp_path / "out" / "colour.png").read_bytes() == (src / "colour.png").read_bytes()
    report = run([src], tmp_path / "out2", tinted_weights, recolour=True)
    assert len(report.done) == 2 and not report.copied
    assert (tmp_path / "out2" / "colour.png").read_bytes() != (src / "colour.png").read_bytes()


def test_rerun_resumes_and_overwrite_redoes(tmp_path, seed_weights):
    src = tmp_path / "in"
    for i in range(3):
        write(src / f"p{i}.png", line_art(50, 40, i))
    out = tmp_path / "out"
    assert len(run([src], out, seed_weights).done) == 3
    (out / "p1.png").unlink()
    report = run([src], out, seed_weights)
    assert report.done == [str(src / "p1.png")]
    assert sorted(report.skipped) == [str(src / "p0.png"), str(src / "p2.png")]
    assert len(run([src], out, seed_weights, overwrite=True).done) == 3


def test_format_option_converts(tmp_path, seed_weights):
    src = write(tmp_path / "in" / "p.bmp", line_art(30, 40))
    report = run([src], tmp_path / "out", seed_weights, fmt="png")
    assert report.ok
    out = tmp_path / "out" / "p.png"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def make_cbz(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members:
            zf.writestr(name, data)
    return path


def png_bytes(img) -> bytes:
    return cv2.imencode(".png", img)[1].tobytes()


def test_archive_to_archive_same_order_sizes(tmp_path, tinted_weights):
    colour_page = np.zeros((30, 30, 3), np.uint8)
    colour_page[..., 2] = 255
    members = [("ComicInfo.xml", b"<ComicInfo/>"),
               ("ch1/p02.png", png_bytes(line_art(70, 50, 1))),
               ("ch1/p01.jpg", cv2.imencode(".jpg", line_art(90, 60, 2))[1].tobytes()),
               ("ch1/p03.png", png_bytes(colour_page))]
    src = make_cbz(tmp_path / "book.cbz", members)
    report = run([src], tmp_path / "out", tinted_weights)
    assert report.ok and len(report.done) == 2 and len(report.copied) == 1
    out = tmp_path / "out" / "book.cbz"
    with zipfile.ZipFile(out) as zf:
        assert zf.namelist() == [m for m, _ in members]
        assert zf.read("ComicInfo.xml") == b"<ComicInfo/>"
        assert zf.read("ch1/p03.png") == members[3][1]
        p2 = cv2.imdecode(np.frombuffer(zf.read("ch1/p02.png"), np.uint8), cv2.IMREAD_COLOR)
        assert p2.shape == (70, 50, 3) and colour.chroma_share(p2[..., ::-1].copy()) > 0.2
        p1 = cv2.imdecode(np.frombuffer(zf.read("ch1/p01.jpg"), np.uint8), cv2.IMREAD_COLOR)
        assert p1.shape == (90, 60, 3)
    assert not [p for p in (tmp_path / "out").iterdir() if p.name != "book.cbz"]  # staging removed
    # A second run skips the finished archive.
    assert run([src], tmp_path / "out", tinted_weights).skipped == [str(src)]


def test_interrupted_archive_resumes_page_by_page(tmp_path, seed_weights):
    src = make_cbz(tmp_path / "book.cbz", [(f"{i}.png", png_bytes(line_art(40, 40, i))) for i in range(3)])
    plan = pages.plan_pages([src], tmp_path / "out")
    assert len(plan.jobs) == 3
    # Pretend an earlier run finished page 0 before it was stopped.
    stage = plan.archives[0].pages["0.png"]
    pages.write_atomic(stage, png_bytes(line_art(40, 40, 0)))
    plan = pages.plan_pages([src], tmp_path / "out")
    assert [j.member for j in plan.jobs] == ["1.png", "2.png"]
    assert not (tmp_path / "out" / "book.cbz").exists()  # nothing at the final name yet
    assert run([src], tmp_path / "out", seed_weights).ok
    with zipfile.ZipFile(tmp_path / "out" / "book.cbz") as zf:
        assert zf.namelist() == ["0.png", "1.png", "2.png"]


def test_zip_slip_and_absolute_members_refused(tmp_path, seed_weights):
    good = png_bytes(line_art(40, 40))
    src = make_cbz(tmp_path / "evil.cbz", [("../escape.png", good), ("/abs.png", good),
                                             ("a/../../up.png", good), ("ok.png", good)])
    out = tmp_path / "deep" / "out"
    report = run([src], out, seed_weights)
    reasons = dict(report.failed)
    assert "refused" in reasons[f"{src}:../escape.png"]
    assert "absolute" in reasons[f"{src}:/abs.png"]
    assert "refused" in reasons[f"{src}:a/../../up.png"]
    assert report.done == [f"{src}:ok.png"]
    with zipfile.ZipFile(out / "evil.cbz") as zf:
        assert zf.namelist() == ["ok.png"]
    # Nothing was written anywhere but inside OUT.
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["evil.cbz", "evil.cbz"]
    assert not list(tmp_path.rglob("escape.png")) and not list(tmp_path.rglob("up.png"))


def test_not_a_zip_and_huge_archive(tmp_path, seed_weights, monkeypatch):
    bad = tmp_path / "in" / "fake.cbz"
    bad.parent.mkdir()
    bad.write_bytes(b"this is not a zip at all")
    write(tmp_path / "in" / "fine.png", line_art(30, 30))
    report = run([tmp_path / "in"], tmp_path / "out", seed_weights)
    assert dict(report.failed) == {str(bad): "not a zip archive (corrupt or another format)"}
    assert report.done == [str(tmp_path / "in" / "fine.png")]
    monkeypatch.setattr(pages, "MAX_ARCHIVE_BYTES", 100)
    big = make_cbz(tmp_path / "big.cbz", [("a.png", b"x" * 200)])
    report = run([big], tmp_path / "out2", seed_weights)
    assert "refused" in dict(report.failed)[str(big)]


def png_header_only(w: int, h: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk
            + struct.pack(">I", zlib.crc32(chunk)) + b"\x00\x00\x00\x00IEND\xaeB`\x82")


def test_bad_pages_each_get_a_reason_and_batch_goes_on(tmp_path, seed_weights):
    src = tmp_path / "in"
    src.mkdir()
    jpg = cv2.imencode(".jpg", line_art(64, 64))[1].tobytes()
    png = png_bytes(line_art(64, 64))
    (src / "cut.jpg").write_bytes(jpg[: len(jpg) // 2])
    (src / "cut.png").write_bytes(png[: len(png) // 2])
    (src / "empty.png").write_bytes(b"")
    (src / "text.png").write_bytes(b"hello, I am not an image\n" * 10)
    (src / "huge.png").write_bytes(png_header_only(20000, 20000))
    write(src / "thin.png", np.full((300, 1), 128, np.uint8))
    write(src / "good.png", line_art(64, 64))
    # Inputs that are unusual but fine: flattened, scaled, expanded.
    write(src / "deep16.png", (line_art(40, 50).astype(np.uint16) * 257))
    rgba = np.dstack([cv2.cvtColor(line_art(40, 40), cv2.COLOR_GRAY2BGR), np.full((40, 40), 100, np.uint8)])
    write(src / "alpha.png", rgba)
    for f in ("cmyk.jpg", "palette.png"):
        (src / f).write_bytes((FIXTURES / f).read_bytes())
    report = run([src], tmp_path / "out", seed_weights, workers=1)
    reasons = {Path(s).name: r for s, r in report.failed}
    assert set(reasons) == {"cut.jpg", "cut.png", "empty.png", "text.png", "huge.png", "thin.png"}
    assert "truncated" in reasons["cut.jpg"] and "truncated" in reasons["cut.png"]
    assert "empty" in reasons["empty.png"]
    assert "not a readable image" in reasons["text.png"]
    assert "400 MP" in reasons["huge.png"] and "refused" in reasons["huge.png"]
    assert "too small" in reasons["thin.png"]
    assert sorted(Path(s).name for s in report.done) == [
        "alpha.png", "cmyk.jpg", "deep16.png", "good.png", "palette.png"]
    assert read_rgb(tmp_path / "out" / "deep16.png").shape == (40, 50, 3)
    # Alpha 100/255 over white paper: the flattened page is lighter than the strokes alone.
    alpha_out = colour.rgb_to_l(read_rgb(tmp_path / "out" / "alpha.png"))
    expect = colour.rgb_to_l(pages.decode_page((src / "alpha.png").read_bytes()))
    assert np.abs(alpha_out.astype(int) - expect).mean() < 1.0
    assert not (tmp_path / "out" / "cut.jpg").exists()


def test_run_refused_before_any_work(tmp_path, seed_weights):
    src = tmp_path / "in"
    write(src / "p.png", line_art(20, 20))
    with pytest.raises(PipelineError, match="no such file"):
        run([tmp_path / "missing"], tmp_path / "out", seed_weights)
    with pytest.raises(PipelineError, match="inside the input"):
        run([src], src / "out", seed_weights)
    with pytest.raises(PipelineError, match="is the input"):
        run([src], src, seed_weights)
    assert sorted(p.name for p in src.rglob("*")) == ["p.png"]


def test_tall_page_coloured_in_windows_without_seams(tmp_path, tinted_weights):
    windows = pages.tile_windows(2000, 200)
    assert len(windows) > 1 and windows[0][0] == 0 and windows[-1][1] == 2000
    assert all(y1 - y0 <= 2 * 200 for y0, y1, _, _ in windows)
    assert pages.tile_windows(300, 200) == [(0, 300, 0, 200)]
    # Blending constant predictions gives the same constant: no seams at overlaps.
    ab = [np.full((2, 56, 56), 150, np.uint8) for _ in windows]
    assert (pages.blend_windows(2000, 200, windows, ab) == 150).all()
    src = write(tmp_path / "strip.png", line_art(1200, 100))
    assert run([src], tmp_path / "out", tinted_weights).ok
    assert read_rgb(tmp_path / "out" / "strip.png").shape == (1200, 100, 3)


def test_write_atomic_leaves_nothing_on_interrupt(tmp_path, monkeypatch):
    dest = tmp_path / "page.png"

    def boom(*a):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        pages.write_atomic(dest, b"data")
    assert list(tmp_path.iterdir()) == []


def test_header_size_reads_common_formats():
    img = line_art(37, 53)
    for ext in (".png", ".jpg", ".bmp", ".webp"):
        data = cv2.imencode(ext, img)[1].tobytes()
        assert pages.header_size(data) == (53, 37), ext
    assert pages.safe_member("a/b.png") is None
    assert pages.safe_member("C:/x.png") and pages.safe_member("..\\x.png")
