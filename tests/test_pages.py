"""pages.py (planning, reading, the colour_pages driver) on real page files made in the test."""
import hashlib
import io
import os
import signal
import struct
import zipfile
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from colourbatch import colour, errors, files, pages
from colourbatch.pages import PagesConfig, PlanError, colour_pages
from colourbatch.pipeline import RunConfig

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
    """colour_pages as the CLI calls it. Style 'photo' unless asked: most tests here check the
    machinery (formats, archives, resume) on grey pages whose own L must come back."""
    keys = ("fmt", "recolour", "overwrite", "style", "page_weights")
    pcfg = PagesConfig(out=str(out), **{"style": "photo", **{k: v for k, v in kw.items() if k in keys}})
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
    assert not list((tmp_path / "out").rglob(f"*{files.TMP_TAG}*"))


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
    files.write_bytes(stage, png_bytes(line_art(40, 40, 0)))
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
    expect = colour.rgb_to_l(pages.decode_pages((src / "alpha.png").read_bytes())[0])
    assert np.abs(alpha_out.astype(int) - expect).mean() < 1.0
    assert not (tmp_path / "out" / "cut.jpg").exists()


def test_run_refused_before_any_work(tmp_path, seed_weights):
    src = tmp_path / "in"
    write(src / "p.png", line_art(20, 20))
    with pytest.raises(PlanError, match="no such file") as caught:
        run([tmp_path / "missing"], tmp_path / "out", seed_weights)
    assert caught.value.exit_code == errors.EXIT_START
    with pytest.raises(PlanError, match="inside the input"):
        run([src], src / "out", seed_weights)
    with pytest.raises(PlanError, match="is the input"):
        run([src], src, seed_weights)
    assert sorted(p.name for p in src.rglob("*")) == ["p.png"]


def test_tall_page_coloured_in_windows(tmp_path, tinted_weights):
    src = write(tmp_path / "strip.png", line_art(1200, 100))
    assert run([src], tmp_path / "out", tinted_weights).ok
    assert read_rgb(tmp_path / "out" / "strip.png").shape == (1200, 100, 3)


def test_header_size_reads_common_formats():
    img = line_art(37, 53)
    for ext in (".png", ".jpg", ".bmp", ".webp"):
        data = cv2.imencode(ext, img)[1].tobytes()
        assert pages.header_size(data) == (53, 37), ext
    assert pages.safe_member("a/b.png") is None
    assert pages.safe_member("C:/x.png") and pages.safe_member("..\\x.png")


# ------------------------------------------------------------ refused before any work
NO_WEIGHTS = "/nonexistent/weights.pt"  # loading these would fail: a refusal must come first


def refused(inputs, out, match, **kw):
    with pytest.raises(PlanError, match=match) as caught:
        run(inputs, out, NO_WEIGHTS, **kw)
    assert caught.value.exit_code == errors.EXIT_START and "\n" not in str(caught.value)


def test_nothing_to_colour_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    refused([tmp_path / "empty"], tmp_path / "out", "no pages found in")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("no pictures here")
    (tmp_path / "notes" / ".hidden.png").write_bytes(png_bytes(line_art(20, 20)))
    refused([tmp_path / "notes", tmp_path / "empty"], tmp_path / "out", "no pages found in")
    assert not (tmp_path / "out").exists()


def test_outputs_that_would_replace_inputs_are_refused(tmp_path):
    x = tmp_path / "x"
    page = write(x / "page.png", line_art(30, 30))
    sibling = write(x / "page.jpg", line_art(30, 30, 1))
    book = make_cbz(x / "book.cbz", [("p.png", png_bytes(line_art(30, 30)))])
    before = tree_hash(x)
    refused([page], x, "replace inputs", overwrite=True)
    refused([book], x, "replace inputs", overwrite=True)
    refused([page], x, "replace inputs", fmt="jpg", overwrite=True)
    os.symlink(x, tmp_path / "x-link")  # the same folder by another name
    refused([page], tmp_path / "x-link", "replace inputs", fmt="jpg", overwrite=True)
    # An output that is an input given in the same run, wherever -o is.
    write(tmp_path / "in" / "sub" / "page.png", line_art(30, 30))
    deep = write(x / "sub" / "page.png", line_art(30, 30))
    before = tree_hash(x)
    refused([tmp_path / "in", deep], x, "an output would replace the input .*page.png", overwrite=True)
    # With --format a colour page is still copied under its own name: that one too.
    refused([tmp_path / "in", deep], x, "an output would replace the input .*page.png", fmt="jpg")
    refused([tmp_path / "in", x], x.parent / "x", "is the input")
    refused([page, sibling], tmp_path / "y", "both be written", fmt="jpg")
    assert tree_hash(x) == before and not (tmp_path / "y").exists()


def test_two_inputs_onto_one_output_are_refused(tmp_path):
    src = tmp_path / "in"
    write(src / "a.png", line_art(30, 30))
    write(src / "a.tif", line_art(30, 30, 1))
    refused([src], tmp_path / "out", "a.tif and a.png would both be written to .*a.png", fmt="png")
    # Without --format the two keep their own names: nothing is lost, nothing refused.
    assert len(pages.plan_pages([src], tmp_path / "out").jobs) == 2
    # A colour page is copied under its own name even with --format: a.jpg + a.png collide there too.
    write(tmp_path / "in2" / "b.jpg", line_art(30, 30))
    write(tmp_path / "in2" / "b.png", line_art(30, 30))
    refused([tmp_path / "in2"], tmp_path / "out", "both be written", fmt="png")


def test_archive_members_onto_one_name_refuse_that_archive_only(tmp_path, seed_weights):
    page = png_bytes(line_art(30, 30))
    jpg = cv2.imencode(".jpg", line_art(30, 30))[1].tobytes()
    src = tmp_path / "in"
    src.mkdir()
    with pytest.warns(UserWarning, match="Duplicate name"):
        make_cbz(src / "twice.cbz", [("p01.png", page), ("p01.png", png_bytes(line_art(30, 30, 5)))])
    make_cbz(src / "formats.cbz", [("p01.png", page), ("p01.jpg", jpg)])
    write(src / "fine.png", line_art(30, 30))
    # Without --format p01.png and p01.jpg keep their names: that book is coloured.
    report = run([src], tmp_path / "out", seed_weights)
    assert dict(report.failed) == {str(src / "twice.cbz"): "two members named 'p01.png' in the output; "
                                                           "archive not coloured"}
    with zipfile.ZipFile(tmp_path / "out" / "formats.cbz") as zf:
        assert zf.namelist() == ["p01.png", "p01.jpg"]
    report = run([src], tmp_path / "out2", seed_weights, fmt="png")
    reasons = dict(report.failed)
    assert "'p01.png' and 'p01.jpg' would both be 'p01.png'" in reasons[str(src / "formats.cbz")]
    assert set(reasons) == {str(src / "twice.cbz"), str(src / "formats.cbz")}
    assert report.done == [str(src / "fine.png")]
    assert sorted(p.name for p in (tmp_path / "out2").iterdir()) == ["fine.png"]


# ------------------------------------------------------------------ damaged archives
def patch_member(data: bytes, name: str, flags: int = 0, size_delta: int = 0,
                 flip_data: bool = False) -> bytes:
    """A zip's bytes with one member changed by hand, in both its local and central
    headers: general-purpose flag bits set (bit 0 = encrypted), its uncompressed size
    made to lie, or one byte of its data flipped (the CRC no longer matches)."""
    buf = bytearray(data)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        info = zf.getinfo(name)
    lo = info.header_offset
    n, m = struct.unpack("<HH", buf[lo + 26:lo + 30])
    if flip_data:
        buf[lo + 30 + n + m + info.compress_size // 2] ^= 0xFF
    struct.pack_into("<H", buf, lo + 6, info.flag_bits | flags)
    struct.pack_into("<I", buf, lo + 22, info.file_size + size_delta)
    i = buf.find(b"PK\x01\x02")
    while i >= 0:
        n, m, k = struct.unpack("<HHH", buf[i + 28:i + 34])
        if bytes(buf[i + 46:i + 46 + n]) == name.encode():
            struct.pack_into("<H", buf, i + 8, info.flag_bits | flags)
            struct.pack_into("<I", buf, i + 24, info.file_size + size_delta)
        i = buf.find(b"PK\x01\x02", i + 46 + n + m + k)
    return bytes(buf)


def damaged_cbz(path: Path, damage: dict) -> Path:
    """Three pages and a ComicInfo.xml; `damage` maps member -> patch_member arguments."""
    members = [("ComicInfo.xml", b"<ComicInfo/>")] + [
        (f"p{i}.png", png_bytes(line_art(40, 40, i))) for i in range(3)]
    data = make_cbz(io.BytesIO(), members).getvalue()
    for name, kw in damage.items():
        data = patch_member(data, name, **kw)
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("damage, left_out", [
    ({"p1.png": {"flags": 1}}, ["p1.png"]),                                 # one encrypted page
    ({"p1.png": {"flags": 1}, "ComicInfo.xml": {"flags": 1}}, ["ComicInfo.xml", "p1.png"]),
    ({"p1.png": {"flip_data": True}}, ["p1.png"]),                          # CRC-corrupt
    ({"p1.png": {"size_delta": -100}}, ["p1.png"]),                         # header lies
    ({"ComicInfo.xml": {"flip_data": True}}, ["ComicInfo.xml"]),            # not a page, unreadable
])
def test_damaged_archive_written_with_what_worked(tmp_path, seed_weights, damage, left_out):
    src = damaged_cbz(tmp_path / "book.cbz", damage)
    out = tmp_path / "out"
    report = run([src], out, seed_weights)
    assert sorted(s.split(":", 2)[-1] for s, _ in report.failed) == left_out
    assert all(r and "\n" not in r for _, r in report.failed)
    assert report.archives == [str(out / "book.cbz")]
    with zipfile.ZipFile(out / "book.cbz") as zf:
        assert zf.testzip() is None
        names = zf.namelist()
        assert names == [m for m in ["ComicInfo.xml", "p0.png", "p1.png", "p2.png"] if m not in left_out]
        for name in names[-2:]:
            assert cv2.imdecode(np.frombuffer(zf.read(name), np.uint8), cv2.IMREAD_COLOR).shape == (40, 40, 3)
    assert [p.name for p in out.iterdir()] == ["book.cbz"]  # no staging folder left to repeat from
    again = run([src], out, seed_weights)
    assert again.skipped == [str(src)] and not again.failed


def test_fully_encrypted_archive_is_listed_not_a_traceback(tmp_path, seed_weights):
    src = damaged_cbz(tmp_path / "locked.cbz", {n: {"flags": 1} for n in
                                                ["ComicInfo.xml", "p0.png", "p1.png", "p2.png"]})
    report = run([src], tmp_path / "out", seed_weights)
    assert len(report.failed) == 4 and all("encrypted" in r for _, r in report.failed)
    assert not report.done


# ------------------------------------------------------------------ files that are not files
def test_fifo_and_device_named_png_are_listed_and_never_read(tmp_path, seed_weights, deadline):
    src = tmp_path / "in"
    write(src / "good.png", line_art(30, 30))
    os.mkfifo(src / "fifo.png")
    os.mkfifo(src / "fifo.cbz")  # zipfile would block opening it
    os.symlink("/dev/zero", src / "zero.png")
    with deadline(30):
        report = run([src], tmp_path / "out", seed_weights, workers=1)
        direct = run([src / "fifo.png", src / "zero.png"], tmp_path / "out2", seed_weights)
    reasons = {Path(s).name: r for s, r in report.failed}
    assert reasons == {"fifo.png": "not a regular file (a FIFO)", "fifo.cbz": "not a regular file (a FIFO)",
                       "zero.png": "not a regular file (a device)"}
    assert report.done == [str(src / "good.png")]
    del reasons["fifo.cbz"]
    assert {Path(s).name: r for s, r in direct.failed} == reasons


def test_page_read_refuses_a_device_without_reading_it(tmp_path, deadline):
    # Checked on the open file, not on the name planned earlier: a page swapped for a link
    # to /dev/zero after planning (st_size 0, endless) is refused, not read until memory ends.
    os.symlink("/dev/zero", tmp_path / "zero.png")
    job = pages.PageJob("zero.png", tmp_path / "zero.png", None, tmp_path / "o.png", ".png")
    with deadline(10), pytest.raises(errors.InputError, match="not a regular file"):
        pages.page_bytes(job)


def test_unreadable_folder_is_listed(tmp_path, seed_weights, monkeypatch):
    src = tmp_path / "in"
    write(src / "a.png", line_art(30, 30))
    write(src / "locked" / "b.png", line_art(30, 30))
    real_scandir = os.scandir

    def scandir(path):
        if Path(path).name == "locked":  # tests run as root: chmod 000 would not stop them
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    report = run([src], tmp_path / "out", seed_weights)
    assert report.failed == [(str(src / "locked"), "cannot read folder (Permission denied)")]
    assert report.done == [str(src / "a.png")]


def test_folder_symlinks_are_not_followed_and_say_so(tmp_path, seed_weights):
    src = tmp_path / "in"
    write(src / "a.png", line_art(30, 30))
    write(tmp_path / "elsewhere" / "b.png", line_art(30, 30))
    os.symlink(tmp_path / "elsewhere", src / "link")
    os.symlink(src, src / "loop")  # would recurse forever if followed
    os.symlink(src / "a.png", src / "alias.png")  # a link to a regular file is a page
    report = run([src], tmp_path / "out", seed_weights)
    assert report.notes == [f"{src / 'link'}: folder symlink not followed",
                            f"{src / 'loop'}: folder symlink not followed"]
    assert sorted(Path(s).name for s in report.done) == ["a.png", "alias.png"] and report.ok


# ------------------------------------------------------------------ said, not dropped
def test_animated_pictures_are_listed_not_dropped(tmp_path, seed_weights):
    src = tmp_path / "in"
    src.mkdir()
    anim = cv2.Animation()
    anim.frames = [cv2.cvtColor(line_art(40, 40, i), cv2.COLOR_GRAY2BGR) for i in range(3)]
    anim.durations = [100] * 3
    for ext in (".webp", ".gif"):
        ok, buf = cv2.imencodeanimation(ext, anim)
        assert ok
        (src / f"anim{ext}").write_bytes(buf.tobytes())
    write(src / "still.webp", line_art(40, 40))
    report = run([src], tmp_path / "out", seed_weights)
    assert {Path(s).name: r for s, r in report.failed} == {
        "anim.gif": pages.NOT_PAGES[".gif"],
        "anim.webp": "animated WebP (3 frames) not coloured: only still pages are"}
    assert report.done == [str(src / "still.webp")]


def test_a_cut_off_webp_header_is_a_listed_failure():
    # 20 bytes that start like an extended WebP: too short to hold the animation flag.
    with pytest.raises(pages.PageError):
        pages.decode_pages(b"RIFF\x00\x00\x00\x00WEBPVP8X\x00\x00\x00\x00")


def test_gif_in_an_archive_is_kept_and_said(tmp_path, seed_weights):
    ok, gif = cv2.imencode(".gif", cv2.cvtColor(line_art(30, 30), cv2.COLOR_GRAY2BGR))
    assert ok
    src = make_cbz(tmp_path / "book.cbz", [("cover.gif", gif.tobytes()), ("p1.png", png_bytes(line_art(30, 30)))])
    report = run([src], tmp_path / "out", seed_weights)
    assert report.notes == [f"{src}:cover.gif: {pages.NOT_PAGES['.gif']}; kept unchanged in the archive"]
    with zipfile.ZipFile(tmp_path / "out" / "book.cbz") as zf:
        assert zf.read("cover.gif") == gif.tobytes() and zf.namelist() == ["cover.gif", "p1.png"]


def test_multi_page_tiff_is_coloured_as_a_chapter(tmp_path, tinted_weights, monkeypatch):
    grey = [line_art(60, 40, 1), line_art(30, 50, 2)]
    colour_page = np.zeros((20, 20, 3), np.uint8)
    colour_page[:, :, 2] = 200
    ok, buf = cv2.imencodemulti(".tiff", [cv2.cvtColor(grey[0], cv2.COLOR_GRAY2BGR), colour_page,
                                           cv2.cvtColor(grey[1], cv2.COLOR_GRAY2BGR)])
    assert ok
    src = tmp_path / "chapter.tiff"
    src.write_bytes(buf.tobytes())
    report = run([src], tmp_path / "out", tinted_weights)
    assert report.done == [str(src)] and report.ok
    ok, out = cv2.imreadmulti(str(tmp_path / "out" / "chapter.tiff"), flags=cv2.IMREAD_COLOR)
    assert ok and [p.shape for p in out] == [(60, 40, 3), (20, 20, 3), (30, 50, 3)]
    assert (out[1] == colour_page).all()  # a colour page in the chapter is kept as it was
    for page, g in zip([out[0], out[2]], grey):
        rgb, l_in = page[..., ::-1].copy(), colour.rgb_to_l(cv2.cvtColor(g, cv2.COLOR_GRAY2RGB))
        assert np.abs(colour.rgb_to_l(rgb).astype(int) - l_in).mean() < 1.0
        assert colour.chroma_share(rgb) > 0.2
    # A chapter cannot become one PNG: said, not cut to its first page.
    report = run([src], tmp_path / "png", tinted_weights, fmt="png")
    assert report.failed == [(str(src), "multi-page TIFF (3 pages) can only be written as TIFF; "
                                        "not coloured as .png")]
    # The pixel limit holds for the pages together: one TIFF is not a way around it.
    monkeypatch.setattr(pages, "MAX_PIXELS", 4000)  # each page is under it, the three are not
    with pytest.raises(pages.PageError, match="a chapter of 3 pages is .* refused"):
        pages.decode_pages(src.read_bytes())


def test_opencv_warnings_do_not_reach_the_user(tmp_path, seed_weights, capfd):
    # A TIFF with a private tag: libtiff warns through OpenCV's log ("[ WARN:0@...]").
    tif = cv2.imencode(".tif", line_art(30, 30))[1].tobytes()
    off = struct.unpack("<I", tif[4:8])[0]
    n = struct.unpack("<H", tif[off:off + 2])[0]
    entries = sorted([tif[off + 2 + 12 * i:off + 14 + 12 * i] for i in range(n)]
                     + [struct.pack("<HHII", 65000, 3, 1, 7)], key=lambda e: struct.unpack("<H", e[:2]))
    tail = tif[off + 2 + 12 * n:off + 6 + 12 * n]
    src = tmp_path / "tagged.tif"
    src.write_bytes(tif[:off] + struct.pack("<H", n + 1) + b"".join(entries) + tail)
    report = run([src], tmp_path / "out", seed_weights)
    assert report.done == [str(src)]
    assert "WARN" not in capfd.readouterr().err


# ------------------------------------------------------------------ workers
def test_dead_worker_ends_the_run_with_one_line(tmp_path, seed_weights, monkeypatch, deadline):
    from colourbatch.data import WorkerError

    src = tmp_path / "in"
    for i in range(6):
        write(src / f"p{i}.png", line_art(30, 30, i))
    read = pages.PageDataset.__getitem__

    def dies(self, i):
        if i == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        return read(self, i)

    monkeypatch.setattr(pages.PageDataset, "__getitem__", dies)
    with deadline(30), pytest.raises(WorkerError) as caught:
        run([src], tmp_path / "out", seed_weights, workers=1)
    assert caught.value.exit_code == errors.EXIT_FAILED and "\n" not in str(caught.value)


# ------------------------------------------------------------------ drawn pages
def drawn_page(h=480, w=360):
    """Ink on paper: closed shapes, a speech balloon with lettering."""
    page = np.full((h, w), 250, np.uint8)
    cv2.rectangle(page, (30, 200), (160, 440), 15, 3)
    cv2.circle(page, (250, 320), 70, 15, 3)
    cv2.ellipse(page, (180, 80), (150, 50), 0, 0, 360, 15, 3)
    cv2.putText(page, "WHAT A DAY", (70, 92), cv2.FONT_HERSHEY_SIMPLEX, 0.9, 15, 3)
    return page


def photo_page(h=300, w=400, seed=0):
    """Continuous tone: a blurred noise field over the whole grey range."""
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.integers(0, 256, (h, w)).astype(np.uint8), (0, 0), 8)
    return cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX)


def test_auto_style_lays_flat_colour_under_ink_and_keeps_photos_l(tmp_path, tinted_weights,
                                                                   tinted_page_weights):
    src = tmp_path / "chapter"
    write(src / "01.png", drawn_page())
    write(src / "02.png", photo_page())
    report = run([src], tmp_path / "out", tinted_weights, style="auto",
                 page_weights=str(tinted_page_weights))
    assert report.ok and report.styles == {"drawn": 1, "photo": 1}
    page = drawn_page()
    out = colour.rgb_to_lab(read_rgb(tmp_path / "out" / "01.png")).astype(int)
    ink = page < 64
    # The ink comes back as it went in (the page's grey, through its L and back: within 1).
    diff = read_rgb(tmp_path / "out" / "01.png")[ink].astype(int) - page[ink][:, None]
    assert np.abs(diff).max() <= 1
    chroma = np.hypot(out[..., 1] - 128, out[..., 2] - 128)
    paper = page > 200
    balloon = np.zeros(page.shape, bool)
    cv2.ellipse(balloon.view(np.uint8), (180, 80), (145, 45), 0, 0, 360, 1, -1)
    # The paper outside the balloon takes the layer's violet at about its lightness ...
    assert np.median(chroma[paper & ~balloon]) > 30
    assert abs(np.median(out[..., 0][paper & ~balloon]) * 100 / 255 - 80) < 6
    # ... the balloon stays white, its lettering black.
    assert chroma[paper & balloon].max() <= 2
    # The photo page keeps its own L (and takes the photo model's tint).
    photo = colour.rgb_to_lab(read_rgb(tmp_path / "out" / "02.png")).astype(int)
    assert np.abs(photo[..., 0] - colour.rgb_to_l(colour.grey_to_rgb(photo_page()))).max() <= 3


def test_style_override_and_archives_for_drawn_pages(tmp_path, tinted_weights, tinted_page_weights):
    src = tmp_path / "in"
    write(src / "p.png", drawn_page())
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("001.png", cv2.imencode(".png", drawn_page())[1].tobytes())
    (src / "book.cbz").write_bytes(buf.getvalue())
    # Forced photo: a drawn page keeps its L (paper stays paper).
    report = run([src / "p.png"], tmp_path / "photo", tinted_weights, style="photo")
    assert report.styles == {"photo": 1}
    kept = colour.rgb_to_lab(read_rgb(tmp_path / "photo" / "p.png"))[..., 0].astype(int)
    assert np.abs(kept - colour.rgb_to_l(colour.grey_to_rgb(drawn_page()))).max() <= 3
    # Forced drawn, through an archive too.
    report = run([src], tmp_path / "drawn", tinted_weights, style="drawn",
                 page_weights=str(tinted_page_weights))
    assert report.ok and report.styles == {"drawn": 2} and len(report.archives) == 1
    with zipfile.ZipFile(tmp_path / "drawn" / "book.cbz") as zf:
        member = cv2.imdecode(np.frombuffer(zf.read("001.png"), np.uint8), cv2.IMREAD_COLOR)
    assert np.array_equal(member, cv2.imread(str(tmp_path / "drawn" / "p.png")))


def test_bad_page_weights_end_the_run_before_any_page(tmp_path, tinted_weights):
    from colourbatch.checkpoint import CheckpointError
    src = write(tmp_path / "in" / "p.png", drawn_page())
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not weights")
    with pytest.raises(CheckpointError) as info:
        run([src], tmp_path / "out", tinted_weights, style="auto", page_weights=str(bad))
    assert info.value.exit_code == 2 and not (tmp_path / "out" / "p.png").exists()
