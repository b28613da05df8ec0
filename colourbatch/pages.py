"""Pages on disk: finding them, reading them safely, writing them atomically.

Owns the rules for `colourbatch pages`: which inputs map to which outputs
(folders mirrored, archives to archives of the same name), what is refused and
why (corrupt, truncated, huge, unsafe archive members), and how an output
appears only when complete (temporary name in the same folder, then rename).
Pages inside a .cbz/.zip are staged one by one next to the final archive, so an
interrupted archive resumes page by page, and zipped once all are done.
"""
from __future__ import annotations

import os
import shutil
import struct
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import cv2
import numpy as np

from . import colour
from .data import to_rgb8

#: Page formats read and written (OpenCV codecs).
PAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
ARCHIVE_EXTS = (".cbz", ".zip")
#: Refuse pictures above this many pixels: a 100 MP page already needs ~1 GB to process.
MAX_PIXELS = 100_000_000
#: Refuse pictures narrower than this on either side: nothing to colour.
MIN_SIDE = 8
#: Refuse archives that would unpack to more than this, or hold more members.
MAX_ARCHIVE_BYTES = 8 << 30
MAX_ARCHIVE_MEMBERS = 50_000
MAX_MEMBER_BYTES = 1 << 30
TMP_TAG = ".colourbatch-tmp"
STAGE_TAG = ".colourbatch-parts"

# OpenCV's own decoder limit, as a second line of defence for formats whose
# header we do not read ourselves (TIFF). Read by OpenCV at its first decode.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_PIXELS + 1))


class PageError(ValueError):
    """One page (or archive) that cannot be coloured; the message is the reason."""


class PlanError(ValueError):
    """The run as asked cannot start (missing input, output inside input, ...)."""


# ------------------------------------------------------------------ planning
@dataclass
class PageJob:
    source: str                # what the user calls it: a path, or "book.cbz:page01.png"
    path: Path                 # the file, or the archive holding the page
    member: str | None         # archive member name, None for a plain file
    dest: Path                 # where the output goes (a staged file for archive pages)
    out_ext: str               # output format, e.g. ".png"
    archive: int | None = None  # index into Plan.archives


@dataclass
class ArchiveJob:
    source: Path               # the input .cbz/.zip
    dest: Path                 # the output archive
    stage: Path                # folder of finished pages, zipped when all are done
    members: list[str]         # every member, in the archive's order
    pages: dict[str, Path]     # page member -> staged output file
    renames: dict[str, str]    # page member -> member name in the output (format change)
    refused: dict[str, str] = field(default_factory=dict)  # member -> reason


@dataclass
class Plan:
    jobs: list[PageJob] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)   # outputs already there (resume)
    failed: list[tuple[str, str]] = field(default_factory=list)  # found while planning
    archives: list[ArchiveJob] = field(default_factory=list)


def plan_pages(inputs: list[str | os.PathLike], out: str | os.PathLike, fmt: str | None = None,
               overwrite: bool = False) -> Plan:
    """Map INPUTs to outputs under `out`; raises PlanError before any work is done.

    A folder's pages keep their relative paths under `out`; a single image or
    archive lands in `out` under its own name. `fmt` (e.g. "png") changes the
    output format; None keeps each page's own.
    """
    out = Path(out).absolute()
    out_ext = _normal_ext(fmt) if fmt else None
    if not inputs:
        raise PlanError("no INPUT given")
    plan = Plan()
    seen_dest: dict[Path, str] = {}
    for raw in inputs:
        src = Path(raw).absolute()
        if not src.exists():
            raise PlanError(f"{raw}: no such file or folder")
        if src == out:
            raise PlanError(f"{raw}: the output folder is the input; choose another -o")
        if src.is_dir() and _inside(out, src):
            raise PlanError(f"{out} is inside the input folder {raw}; choose an -o outside it")
        if src.is_file() and src.suffix.lower() not in PAGE_EXTS + ARCHIVE_EXTS:
            raise PlanError(f"{raw}: not a page ({', '.join(PAGE_EXTS + ARCHIVE_EXTS)})")
        files = _find_pages(src) if src.is_dir() else [src]
        base = src if src.is_dir() else src.parent
        for f in files:
            rel = f.relative_to(base)
            dest = out / rel
            if dest in seen_dest:
                raise PlanError(f"{f} and {seen_dest[dest]} would both be written to {dest}")
            seen_dest[dest] = str(f)
            if f.suffix.lower() in ARCHIVE_EXTS:
                _plan_archive(plan, f, dest, out_ext, overwrite)
                continue
            if out_ext:
                dest = dest.with_suffix(out_ext)
            if dest.exists() and not overwrite:
                plan.skipped.append(str(f))
                continue
            plan.jobs.append(PageJob(str(f), f, None, dest, out_ext or _normal_ext(f.suffix)))
    return plan


def _plan_archive(plan: Plan, src: Path, dest: Path, out_ext: str | None, overwrite: bool) -> None:
    if dest.exists() and not overwrite:
        plan.skipped.append(str(src))
        return
    try:
        members = archive_members(src)
    except PageError as exc:
        plan.failed.append((str(src), str(exc)))
        return
    stage = dest.with_name(f".{dest.name}{STAGE_TAG}")
    if overwrite and stage.exists():
        shutil.rmtree(stage, ignore_errors=True)
    job = ArchiveJob(src, dest, stage, [m for m, _ in members], {}, {})
    index = len(plan.archives)
    plan.archives.append(job)
    for n, (name, reason) in enumerate(members):
        if reason:
            job.refused[name] = reason
            plan.failed.append((f"{src}:{name}", reason))
            continue
        ext = PurePosixPath(name).suffix.lower()
        if ext not in PAGE_EXTS:
            continue  # metadata (ComicInfo.xml) and other files are copied through
        new_ext = out_ext or _normal_ext(ext)
        staged = stage / f"{n:06d}{new_ext}"  # staged by index: member names never touch the disk
        job.pages[name] = staged
        job.renames[name] = str(PurePosixPath(name).with_suffix(new_ext)) if out_ext else name
        if staged.exists() or (staged.with_suffix(".copy")).exists():
            continue  # finished in an earlier, interrupted run
        plan.jobs.append(PageJob(f"{src}:{name}", src, name, staged, new_ext, index))


def _find_pages(folder: Path) -> list[Path]:
    found = []
    for root, dirs, files in os.walk(folder):
        # Skip hidden folders, which hold our own staging and temporary files.
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            p = Path(root) / name
            if not name.startswith(".") and p.suffix.lower() in PAGE_EXTS + ARCHIVE_EXTS:
                found.append(p)
    return found


def _inside(child: Path, parent: Path) -> bool:
    try:
        child.resolve().relative_to(parent.resolve())
        return True
    except ValueError:
        return False


def _normal_ext(ext: str) -> str:
    ext = ext.lower()
    ext = ext if ext.startswith(".") else "." + ext
    if ext not in PAGE_EXTS:
        raise PlanError(f"unknown page format {ext!r} (use {', '.join(e[1:] for e in PAGE_EXTS)})")
    return ext


# ------------------------------------------------------------------ archives
def safe_member(name: str) -> str | None:
    """Why an archive member name is unsafe to honour, or None when it is safe."""
    if not name or "\x00" in name:
        return "empty or invalid member name"
    norm = name.replace("\\", "/")
    if norm.startswith("/") or (len(norm) > 1 and norm[1] == ":"):
        return "absolute path in archive refused"
    if any(part == ".." for part in norm.split("/")):
        return "path escaping the archive ('..') refused"
    return None


def archive_members(path: Path) -> list[tuple[str, str | None]]:
    """(member name, reason it is refused or None) in archive order; raises PageError."""
    try:
        with zipfile.ZipFile(path) as zf:
            infos = [i for i in zf.infolist() if not i.is_dir()]
    except zipfile.BadZipFile:
        raise PageError("not a zip archive (corrupt or another format)") from None
    except OSError as exc:
        raise PageError(f"cannot read archive ({exc.strerror or exc})") from None
    if len(infos) > MAX_ARCHIVE_MEMBERS:
        raise PageError(f"archive has {len(infos)} members; more than {MAX_ARCHIVE_MEMBERS} refused")
    total = sum(i.file_size for i in infos)
    if total > MAX_ARCHIVE_BYTES:
        raise PageError(f"archive unpacks to {total >> 20} MB; more than {MAX_ARCHIVE_BYTES >> 20} MB refused")
    out = []
    for i in infos:
        reason = safe_member(i.filename)
        if reason is None and i.file_size > MAX_MEMBER_BYTES:
            reason = f"member of {i.file_size >> 20} MB refused (limit {MAX_MEMBER_BYTES >> 20} MB)"
        out.append((i.filename, reason))
    return out


def read_member(path: Path, member: str, cache: dict | None = None) -> bytes:
    """The bytes of one member (size-checked as it is read: a zip may lie about sizes)."""
    zf = cache.get(path) if cache is not None else None
    if zf is None:
        zf = zipfile.ZipFile(path)
        if cache is not None:
            cache[path] = zf
    try:
        with zf.open(member) as f:
            data = f.read(MAX_MEMBER_BYTES + 1)
    except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError) as exc:
        raise PageError(f"cannot unpack member ({exc})") from None
    if len(data) > MAX_MEMBER_BYTES:
        raise PageError("member larger than its header said; refused")
    return data


def finish_archive(job: ArchiveJob, failed_members: set[str]) -> Path:
    """Zip the staged pages (and every other member, copied) into the output archive.

    Members keep their order. A page that failed keeps its original bytes, so
    the book stays complete; refused members are left out. Written to a
    temporary name and renamed, then the staging folder is removed.
    """
    job.dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{job.dest.name}.", suffix=TMP_TAG, dir=job.dest.parent)
    os.close(fd)
    try:
        with zipfile.ZipFile(job.source) as src, \
                zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
            for name in job.members:
                if name in job.refused:
                    continue
                staged = job.pages.get(name)
                if staged is not None and staged.exists() and name not in failed_members:
                    # Pages compress poorly; storing them saves time and nothing else.
                    dst.write(staged, job.renames[name], compress_type=zipfile.ZIP_STORED)
                else:
                    info = src.getinfo(name)
                    with src.open(info) as f:
                        dst.writestr(info, f.read(MAX_MEMBER_BYTES + 1))
        os.chmod(tmp, 0o644)
        os.replace(tmp, job.dest)
    except BaseException:
        _unlink(tmp)
        raise
    shutil.rmtree(job.stage, ignore_errors=True)
    return job.dest


# ------------------------------------------------------------------ reading
def page_bytes(job: PageJob, cache: dict | None = None) -> bytes:
    if job.member is not None:
        return read_member(job.path, job.member, cache)
    try:
        size = job.path.stat().st_size
        if size > MAX_MEMBER_BYTES:
            raise PageError(f"file of {size >> 20} MB refused (limit {MAX_MEMBER_BYTES >> 20} MB)")
        return job.path.read_bytes()
    except OSError as exc:
        raise PageError(f"cannot read ({exc.strerror or exc})") from None


def decode_page(data: bytes) -> np.ndarray:
    """Bytes of a page -> uint8 RGB; raises PageError with the reason it is refused.

    16-bit pages are scaled to 8 bits, alpha is flattened onto white (paper),
    palette and CMYK pages are expanded by OpenCV.
    """
    if not data:
        raise PageError("empty file (0 bytes)")
    size = header_size(data)
    if size is not None:
        w, h = size
        if w * h > MAX_PIXELS:
            raise PageError(f"{w}x{h} is {w * h / 1e6:.0f} MP; more than {MAX_PIXELS // 1_000_000} MP refused")
    why = truncated(data)
    if why:
        raise PageError(why)
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise PageError("not a readable image (corrupt, or not an image despite its name)")
    h, w = img.shape[:2]
    if h * w > MAX_PIXELS:
        raise PageError(f"{w}x{h} is {w * h / 1e6:.0f} MP; more than {MAX_PIXELS // 1_000_000} MP refused")
    if min(h, w) < MIN_SIDE:
        raise PageError(f"{w}x{h} is too small to colour (under {MIN_SIDE} px on a side)")
    try:
        return to_rgb8(img, (255, 255, 255))
    except ValueError as exc:
        raise PageError(str(exc)) from None


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG/JPEG/WebP/BMP/GIF header, without decoding; None if unknown."""
    try:
        if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
            return struct.unpack(">II", data[16:24])
        if data[:2] == b"\xff\xd8":
            i = 2
            while i + 9 < len(data):
                if data[i] != 0xFF:
                    return None
                marker = data[i + 1]
                if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
                    i += 2
                    continue
                seg = struct.unpack(">H", data[i + 2:i + 4])[0]
                if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                    h, w = struct.unpack(">HH", data[i + 5:i + 9])
                    return w, h
                i += 2 + seg
            return None
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            kind = data[12:16]
            if kind == b"VP8X":
                w = 1 + int.from_bytes(data[24:27], "little")
                h = 1 + int.from_bytes(data[27:30], "little")
                return w, h
            if kind == b"VP8L":
                b = int.from_bytes(data[21:25], "little")
                return 1 + (b & 0x3FFF), 1 + ((b >> 14) & 0x3FFF)
            if kind == b"VP8 ":
                w, h = struct.unpack("<HH", data[26:30])
                return w & 0x3FFF, h & 0x3FFF
        if data[:2] == b"BM":
            w, h = struct.unpack("<ii", data[18:26])
            return abs(w), abs(h)
    except struct.error:
        return None
    return None


def truncated(data: bytes) -> str | None:
    """Why a PNG or JPEG is cut short, or None. OpenCV would decode the part that
    is there and fill the rest with grey, silently; we refuse instead."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and b"IEND" not in data[-64:]:
        return "truncated PNG (no IEND chunk): the file is cut short"
    if data[:2] == b"\xff\xd8" and b"\xff\xd9" not in data[-65536:]:
        return "truncated JPEG (no end-of-image marker): the file is cut short"
    return None


# ------------------------------------------------------------------ writing
ENCODE_PARAMS = {
    ".jpg": [cv2.IMWRITE_JPEG_QUALITY, 95],
    ".jpeg": [cv2.IMWRITE_JPEG_QUALITY, 95],
    ".webp": [cv2.IMWRITE_WEBP_QUALITY, 95],
    ".png": [cv2.IMWRITE_PNG_COMPRESSION, 3],
}


def encode_page(rgb: np.ndarray, ext: str) -> bytes:
    """uint8 RGB -> file bytes in the format of `ext` (BGR only at the cv2 call)."""
    ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), ENCODE_PARAMS.get(ext, []))
    if not ok:
        raise PageError(f"OpenCV could not encode {ext}")
    return buf.tobytes()


def write_atomic(dest: Path, data: bytes) -> None:
    """Write to a temporary name in the same folder, then rename: all or nothing."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=TMP_TAG, dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        _unlink(tmp)
        raise


def _unlink(path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


# ------------------------------------------------------------------ tall pages
def tile_windows(h: int, w: int, max_aspect: float = 2.0) -> list[tuple[int, int, int, int]]:
    """Windows (y0, y1, x0, x1) covering a page, each no more elongated than `max_aspect`.

    The model sees each window squeezed to a square tile, as it saw crops of
    aspect 1:2..2:1 in training. A webtoon strip 10x taller than wide becomes
    overlapping windows, so its colour is not smeared along the strip.
    """
    long_side, short = max(h, w), min(h, w)
    if long_side <= short * max_aspect:
        return [(0, h, 0, w)]
    win = int(short * max_aspect)
    n = 1 + int(np.ceil((long_side - win) / (0.75 * win)))
    starts = np.round(np.linspace(0, long_side - win, n)).astype(int)
    if h >= w:
        return [(int(s), int(s) + win, 0, w) for s in starts]
    return [(0, h, int(s), int(s) + win) for s in starts]


def blend_windows(h: int, w: int, windows, ab_small: list[np.ndarray]) -> np.ndarray:
    """Low-resolution a/b of each window -> one (2, h, w) uint8 a/b plane.

    Overlaps are cross-faded with weights that fall linearly towards each
    window's inner edges, so there is no seam where windows meet.
    """
    if len(windows) == 1:
        return ab_small[0]
    acc = np.zeros((2, h, w), np.float32)
    wsum = np.zeros((h, w), np.float32)
    for (y0, y1, x0, x1), ab in zip(windows, ab_small):
        wh, ww = y1 - y0, x1 - x0
        up = np.stack([cv2.resize(np.ascontiguousarray(p), (ww, wh), interpolation=cv2.INTER_LINEAR)
                       for p in ab]).astype(np.float32)
        # Windows only overlap along the long side, so only that side ramps.
        ramp_y = np.minimum(np.arange(wh) + 1, wh - np.arange(wh)).astype(np.float32)
        ramp_x = np.minimum(np.arange(ww) + 1, ww - np.arange(ww)).astype(np.float32)
        wt = np.outer(ramp_y, np.ones(ww, np.float32)) if h >= w else np.outer(np.ones(wh, np.float32), ramp_x)
        acc[:, y0:y1, x0:x1] += up * wt
        wsum[y0:y1, x0:x1] += wt
    return np.clip(acc / np.maximum(wsum, 1e-6) + 0.5, 0, 255).astype(np.uint8)
