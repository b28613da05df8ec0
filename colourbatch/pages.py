"""`colourbatch pages`: finding pages, refusing what cannot be done, colouring, writing.

Owns the pages driver (`PagesConfig`, `colour_pages`, `PagesReport`) on top of
the shared engine (pipeline.Colouriser), and its rules: which inputs map to
which outputs (folders mirrored, archives to archives of the same name), what
is refused before any work (PlanError: nothing to do, an output that would
replace an input, two inputs onto one output), what one bad input answers
(PageError: corrupt, truncated, huge, animated, not a regular file, unsafe or
encrypted archive members), and how outputs appear only when complete
(files.py). Pages inside a .cbz/.zip are staged one by one in a hidden folder
next to the final archive, so an interrupted archive resumes page by page, and
zipped once all are done, with whatever failed listed. A multi-page TIFF is a
chapter: every page is coloured and written back as one multi-page TIFF.

Each grey page is coloured in its style (PagesConfig.style; 'auto' asks
flats.page_style): photo-like pages by the run's model, keeping their own L;
drawn pages by the page model, whose colour layer is laid under their ink
(PageEngines holds both; pipeline.tile_page/colour_page do the per-page work).

Folder walks take regular files only (a FIFO or device named .png is listed as
a failure, never read) and do not follow folder symlinks (each is named in the
report's notes). Hidden files and folders are skipped: they hold our own
staging and temporary files.
"""
from __future__ import annotations

import lzma
import os
import shutil
import struct
import time
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path, PurePosixPath

import cv2
import numpy as np
import torch

from . import colour, files, flats
from .config import ARCHIVE_EXTS, PAGE_EXTS, PAGE_FORMATS, STYLES, PagesConfig, RunConfig
from .data import make_loader, to_rgb8
from .errors import ColourbatchError, InputError, one_line
from .pipeline import Colouriser, colour_page, on_ray, tile_page
from .shard import Shard, resolve as resolve_shard

#: Pictures found in folders that are not coloured, and why (listed as failures, never dropped silently).
NOT_PAGES = {".gif": "GIF not coloured (animated or palette pictures are not pages; convert it to PNG)"}
#: Refuse pictures above this many pixels: a 100 MP page already needs ~1 GB to process.
MAX_PIXELS = 100_000_000
#: Refuse pictures narrower than this on either side: nothing to colour.
MIN_SIDE = 8
#: Refuse archives that would unpack to more than this, or hold more members.
MAX_ARCHIVE_BYTES = 8 << 30
MAX_ARCHIVE_MEMBERS = 50_000
#: Largest page (file or archive member) read; counted on the bytes actually read.
MAX_MEMBER_BYTES = 1 << 30
STAGE_TAG = ".colourbatch-parts"
#: What reading a hostile or damaged zip member can raise (bad CRC, lying sizes, encryption, codecs).
ZIP_ERRORS = (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError, EOFError, ValueError,
              zlib.error, lzma.LZMAError)

# OpenCV's [ WARN ] lines (libtiff, libpng) must not reach the user: every refusal leaves
# as a one-line reason instead. Set once, as media.py silences FFmpeg once.
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)

# OpenCV's own decoder limit, as a second line of defence for formats whose
# header we do not read ourselves (TIFF). Read by OpenCV at its first decode.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_PIXELS + 1))


class PageError(InputError):
    """One page (or archive) that cannot be coloured; the batch goes on (exit 1)."""


class PlanError(ColourbatchError):
    """The run as asked cannot start (nothing to do, or it would lose data): exit 2."""


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
    refused: dict[str, str] = field(default_factory=dict)  # member -> reason (left out)


@dataclass
class Plan:
    jobs: list[PageJob] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)   # outputs already there (resume)
    failed: list[tuple[str, str]] = field(default_factory=list)  # found while planning
    archives: list[ArchiveJob] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)     # what was not looked at, and why

    def units(self) -> list[tuple[str, "Plan"]]:
        """The plan cut into independent units, (name, plan): one per page file, one per archive.

        Each unit plan holds only work (jobs, and its archive to zip); what
        planning found (skipped, failed, notes) stays with this plan.
        """
        units: dict[object, Plan] = {}
        for i, arch in enumerate(self.archives):
            units[("archive", i)] = Plan(archives=[arch])  # also one whose pages all finished earlier
        for job in self.jobs:
            if job.archive is None:
                units[("file", job.source)] = Plan(jobs=[job])
            else:
                units[("archive", job.archive)].jobs.append(replace(job, archive=0))
        return [(str(u.archives[0].source) if u.archives else u.jobs[0].source, u) for u in units.values()]


def plan_pages(inputs: list[str | os.PathLike], out: str | os.PathLike, fmt: str | None = None,
               overwrite: bool = False, shard: Shard | None = None) -> Plan:
    """Map INPUTs to outputs under `out`; raises PlanError before any work is done.

    A folder's pages keep their relative paths under `out`; a single image or
    archive lands in `out` under its own name. `fmt` (e.g. "png") changes the
    output format; None keeps each page's own. Refused: nothing to colour, an
    output that is an input (or -o the folder an input file sits in), and two
    inputs that would be written to the same output. With `shard`, only the
    page files and archives that shard owns (by their path relative to the
    input they were found under) are planned; the checks above cover all.
    """
    out = Path(out).absolute()
    out_ext = _normal_ext(fmt) if fmt else None
    if not inputs:
        raise PlanError("no INPUT given")
    plan = Plan()
    sources: list[tuple[Path, Path]] = []  # (file, the folder its output path is relative to)
    for raw in inputs:
        src = Path(raw).absolute()
        if not src.exists():
            raise PlanError(f"{raw}: no such file or folder")
        if src == out:
            raise PlanError(f"{raw}: the output folder is the input; choose another -o")
        if src.is_dir():
            if _inside(out, src):
                raise PlanError(f"{out} is inside the input folder {raw}; choose an -o outside it")
            sources += [(f, src) for f in _find_pages(src, plan)]
            continue
        if src.suffix.lower() not in PAGE_EXTS + ARCHIVE_EXTS:
            raise PlanError(f"{raw}: not a page ({', '.join(PAGE_EXTS + ARCHIVE_EXTS)})")
        if os.path.realpath(out) == os.path.realpath(src.parent):
            raise PlanError(f"{raw}: -o is the folder this input is in; outputs there could "
                            "replace inputs; choose another -o")
        sources.append((src, src.parent))
    if not sources and not plan.failed:
        raise PlanError(f"no pages found in {', '.join(map(str, inputs))} "
                        f"({', '.join(PAGE_EXTS + ARCHIVE_EXTS)})")
    _check_outputs(sources, out, out_ext)
    sources = list(dict.fromkeys(sources))  # an input named twice is coloured once
    if shard is not None:
        total = len(sources)
        sources = [(f, base) for f, base in sources if shard.owns(f.relative_to(base).as_posix())]
        plan.notes.append(f"shard {shard}: {len(sources)} of {total} page files and archives are this shard's")
    for f, base in sources:
        try:
            files.check_regular(f)
        except InputError as exc:
            plan.failed.append((str(f), str(exc)))
            continue
        dest = out / f.relative_to(base)
        if f.suffix.lower() in ARCHIVE_EXTS:
            _plan_archive(plan, f, dest, out_ext, overwrite)
            continue
        dest = dest.with_suffix(out_ext) if out_ext else dest
        if dest.exists() and not overwrite:
            plan.skipped.append(str(f))
            continue
        plan.jobs.append(PageJob(str(f), f, None, dest, out_ext or _normal_ext(f.suffix)))
    return plan


def _check_outputs(sources: list[tuple[Path, Path]], out: Path, out_ext: str | None) -> None:
    """PlanError when an output would replace an input, or two inputs share an output."""
    inputs = {files.path_key(f) for f, _ in sources}
    seen: dict[Path, Path] = {}
    for f, base in sources:
        dest = out / f.relative_to(base)
        archive = f.suffix.lower() in ARCHIVE_EXTS
        for d in _output_names(dest, None if archive else out_ext):
            k = files.path_key(d)
            if k in inputs:
                raise PlanError(f"an output would replace the input {d}; choose another -o")
            if seen.setdefault(k, f) != f:
                raise PlanError(f"{f.name} and {seen[k].name} would both be written to {d}; "
                                "colour them in separate runs")


def _output_names(dest, out_ext: str | None) -> set:
    """Every name a page may be written under: the new format's, and its own (a colour
    page is copied through unchanged). Works on Paths and on archive member names."""
    return {dest, dest.with_suffix(out_ext)} if out_ext else {dest}


def _plan_archive(plan: Plan, src: Path, dest: Path, out_ext: str | None, overwrite: bool) -> None:
    if dest.exists() and not overwrite:
        plan.skipped.append(str(src))
        return
    try:
        members = archive_members(src)
        _check_member_names(members, out_ext)
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
        if ext in NOT_PAGES:
            plan.notes.append(f"{src}:{name}: {NOT_PAGES[ext]}; kept unchanged in the archive")
        if ext not in PAGE_EXTS:
            continue  # metadata (ComicInfo.xml) and other files are copied through
        new_ext = out_ext or _normal_ext(ext)
        staged = stage / f"{n:06d}{new_ext}"  # staged by index: member names never touch the disk
        job.pages[name] = staged
        job.renames[name] = str(PurePosixPath(name).with_suffix(new_ext)) if out_ext else name
        if staged.exists() or (staged.with_suffix(".copy")).exists():
            continue  # finished in an earlier, interrupted run
        plan.jobs.append(PageJob(f"{src}:{name}", src, name, staged, new_ext, index))


def _check_member_names(members: list[tuple[str, str | None]], out_ext: str | None) -> None:
    """PageError (the archive is refused) when two members would have one name in the output:
    a zip holding one name twice, or p01.png and p01.jpg with --format png. Renaming
    would change a book's page names behind its reader's back; losing a page is worse."""
    seen: dict[str, tuple[int, str]] = {}
    for n, (name, reason) in enumerate(members):
        if reason:
            continue  # refused members are left out of the output
        page = PurePosixPath(name).suffix.lower() in PAGE_EXTS
        for out_name in _output_names(PurePosixPath(name), out_ext if page else None):
            first, other = seen.setdefault(str(out_name), (n, name))
            if first != n:
                what = (f"two members named {name!r}" if other == name
                        else f"members {other!r} and {name!r} would both be {str(out_name)!r}")
                raise PageError(f"{what} in the output; archive not coloured")


def _find_pages(folder: Path, plan: Plan) -> list[Path]:
    """Page and archive files under `folder` (files.walk: sorted, depth-first).

    Unreadable folders become failures and folder symlinks notes. Other
    pictures that are not pages (NOT_PAGES) become failures with their reason.
    """
    found = files.walk(folder)
    plan.failed += [(str(d), why) for d, why in found.unreadable]
    plan.notes += [f"{d}: folder symlink not followed" for d in found.linked_folders]
    pages = []
    for p in found.files:
        ext = p.suffix.lower()
        if ext in NOT_PAGES:
            plan.failed.append((str(p), NOT_PAGES[ext]))
        elif ext in PAGE_EXTS + ARCHIVE_EXTS:
            pages.append(p)
    return pages


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
        raise PlanError(f"unknown page format {ext!r} (use {', '.join(PAGE_FORMATS)})")
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
    except ZIP_ERRORS as exc:
        raise PageError(f"cannot read archive ({one_line(exc)})") from None
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
    """The bytes of one member; PageError when the archive or the member cannot be read."""
    zf = cache.get(path) if cache is not None else None
    if zf is None:
        try:
            zf = zipfile.ZipFile(path)
        except ZIP_ERRORS as exc:
            raise PageError(f"cannot read archive ({one_line(exc)})") from None
        if cache is not None:
            cache[path] = zf
    return _member_bytes(zf, member)


def _member_bytes(zf: zipfile.ZipFile, member: str) -> bytes:
    """Size-checked as it is read (a zip may lie about sizes); every zip failure is a PageError."""
    try:
        with zf.open(member) as f:
            data = f.read(MAX_MEMBER_BYTES + 1)
    except ZIP_ERRORS as exc:
        raise PageError(f"cannot unpack member ({one_line(exc)})") from None
    if len(data) > MAX_MEMBER_BYTES:
        raise PageError("member larger than its header said; refused")
    return data


def finish_archive(job: ArchiveJob, failed_members: set[str]) -> list[tuple[str, str]]:
    """Zip the staged pages (and every other member, copied) into the output archive.

    Members keep their order. A page that failed keeps its original bytes, so
    the book stays complete; a member whose bytes cannot be read (bad CRC, a
    lying header) and the refused ones are left out. Returns the (member,
    reason) left out while zipping. Written through files.atomic_output, then
    the staging folder is removed, so a re-run finds the archive done.
    """
    left_out = []
    with files.atomic_output(job.dest, make_parents=True) as tmp:
        with zipfile.ZipFile(job.source) as src, \
                zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
            for name in job.members:
                if name in job.refused:
                    continue
                staged = job.pages.get(name)
                if staged is not None and staged.exists() and name not in failed_members:
                    # Pages compress poorly; storing them saves time and nothing else.
                    dst.write(staged, job.renames[name], compress_type=zipfile.ZIP_STORED)
                    continue
                try:
                    data = _member_bytes(src, name)
                except PageError as exc:
                    left_out.append((name, f"{exc}; left out"))
                    continue
                dst.writestr(src.getinfo(name), data)
    shutil.rmtree(job.stage, ignore_errors=True)
    return left_out


# ------------------------------------------------------------------ reading
def page_bytes(job: PageJob, cache: dict | None = None) -> bytes:
    """The bytes of a page: a regular file read with a bound, or an archive member."""
    if job.member is not None:
        return read_member(job.path, job.member, cache)
    return files.read_limited(job.path, MAX_MEMBER_BYTES)


def decode_pages(data: bytes, pages: int | None = None) -> list[np.ndarray]:
    """Bytes of a page file -> its pictures as uint8 RGB; raises PageError with the reason.

    One picture, or every page of a multi-page TIFF (a chapter; its pixels
    together count against MAX_PIXELS). 16-bit pages are scaled to 8 bits,
    alpha is flattened onto white (paper), palette and CMYK pages are expanded
    by OpenCV. Animated WebP is refused by name: OpenCV would decode its first
    frame only.

    `pages` is the TIFF page count when the caller has read it already.
    """
    if not data:
        raise PageError("empty file (0 bytes)")
    size = header_size(data)
    if size is not None:
        _check_pixels(size[0] * size[1], f"{size[0]}x{size[1]}")
    why = truncated(data) or animated(data)
    if why:
        raise PageError(why)
    buf = np.frombuffer(data, np.uint8)
    if (tiff_pages(data) if pages is None else pages) > 1:
        ok, imgs = cv2.imdecodemulti(buf, cv2.IMREAD_UNCHANGED)
        imgs = list(imgs) if ok else []
    else:
        img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
        imgs = [] if img is None else [img]
    if not imgs:
        raise PageError("not a readable image (corrupt, or not an image despite its name)")
    h, w = imgs[0].shape[:2]
    _check_pixels(sum(i.shape[0] * i.shape[1] for i in imgs),
                  f"{w}x{h}" if len(imgs) == 1 else f"a chapter of {len(imgs)} pages")
    for img in imgs:
        h, w = img.shape[:2]
        if min(h, w) < MIN_SIDE:
            raise PageError(f"{w}x{h} is too small to colour (under {MIN_SIDE} px on a side)")
    return [to_rgb8(img, (255, 255, 255)) for img in imgs]  # data.ImageError: an InputError too


def _check_pixels(pixels: int, what: str) -> None:
    if pixels > MAX_PIXELS:
        raise PageError(f"{what} is {pixels / 1e6:.0f} MP; more than {MAX_PIXELS // 1_000_000} MP refused")


def animated(data: bytes) -> str | None:
    """Why an animated WebP is not coloured, or None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and data[12:16] == b"VP8X" and len(data) > 20 \
            and data[20] & 0x02:
        return f"animated WebP ({_webp_frames(data)} frames) not coloured: only still pages are"
    return None


def _webp_frames(data: bytes) -> int:
    n, i = 0, 12
    while i + 8 <= len(data):
        kind, size = data[i:i + 4], struct.unpack("<I", data[i + 4:i + 8])[0]
        n += kind == b"ANMF"
        i += 8 + size + (size & 1)
    return n


def tiff_pages(data: bytes, limit: int = 10_000) -> int:
    """How many pictures (IFDs) a classic TIFF holds; 0 when it is not one."""
    order = {b"II*\x00": "<", b"MM\x00*": ">"}.get(data[:4])
    if order is None:
        return 0
    n, seen = 0, set()
    try:
        off = struct.unpack(order + "I", data[4:8])[0]
        while off and off not in seen and n < limit:
            seen.add(off)  # a loop of IFDs must not loop here
            entries = struct.unpack(order + "H", data[off:off + 2])[0]
            n += 1
            end = off + 2 + 12 * entries
            off = struct.unpack(order + "I", data[end:end + 4])[0]
    except struct.error:
        pass  # cut short: count what was there; OpenCV answers for the rest
    return n


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


def encode_pages(rgbs: list[np.ndarray], ext: str) -> bytes:
    """uint8 RGB pictures -> file bytes in the format of `ext` (BGR only at the cv2 call);
    several pictures only as a multi-page TIFF."""
    bgr = [cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) for rgb in rgbs]
    if len(bgr) == 1:
        ok, buf = cv2.imencode(ext, bgr[0], ENCODE_PARAMS.get(ext, []))
    else:
        ok, buf = cv2.imencodemulti(ext, bgr)
    if not ok:
        raise PageError(f"OpenCV could not encode {ext}")
    return buf.tobytes()


# ------------------------------------------------------------------ the run
@dataclass
class PagesReport:
    done: list[str]                # pages coloured
    copied: list[str]              # colour pages passed through untouched
    skipped: list[str]             # outputs that already existed
    failed: list[tuple[str, str]]  # (page, archive member or folder; one-line reason)
    archives: list[str]            # archives written
    seconds: float
    notes: list[str] = field(default_factory=list)  # not looked at, and why (folder symlinks, ...)
    styles: dict[str, int] = field(default_factory=dict)  # pictures coloured per style (photo, drawn)

    @property
    def ok(self) -> bool:
        return not self.failed


class PageDataset:
    """Reads, decodes and converts one page file per item, in DataLoader workers.

    An item is a dict: kind "colour" with "pages", one per picture in the file
    (a multi-page TIFF has several), each either {"l8", "windows", "style"}
    (the full-resolution L plane, its windows (see tile_windows) and how it is
    coloured: `style`, or flats.page_style's rule when 'auto') or {"rgb"} (a
    colour page inside a chapter, kept), and "tiles": for each style, the
    tiles of its pages' windows in order (None when it has none); kind "copy"
    for a colour file passed through; kind "error" with the reason. Errors are
    values, not exceptions, so one bad page never stops the batch.
    """

    def __init__(self, jobs: list[PageJob], recolour: bool, style: str = "auto"):
        self.jobs, self.recolour, self.style = jobs, recolour, style
        self._zips: dict = {}  # per worker: open archives, reused across pages

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, i: int) -> dict:
        job = self.jobs[i]
        try:
            data = page_bytes(job, self._zips)
            n = tiff_pages(data)
            if n > 1 and job.out_ext not in (".tif", ".tiff"):
                raise PageError(f"multi-page TIFF ({n} pages) can only be written as TIFF; "
                                f"not coloured as {job.out_ext}")
            pics = decode_pages(data, n)  # the TIFF's page count, read once
            grey = [self.recolour or colour.is_greyscale(rgb) for rgb in pics]
            if not any(grey):
                return {"i": i, "kind": "copy", "data": data}
            out, tiles = [], {"photo": [], "drawn": []}
            for rgb, colour_it in zip(pics, grey):
                if not colour_it:
                    out.append({"rgb": rgb})
                    continue
                l8 = colour.rgb_to_l(rgb)
                style = flats.page_style(l8) if self.style == "auto" else self.style
                windows, page_tiles = tile_page(l8, style)
                tiles[style] += page_tiles
                out.append({"l8": l8, "windows": windows, "style": style})
            return {"i": i, "kind": "colour", "pages": out,
                    "tiles": {k: torch.from_numpy(np.stack(v)) if v else None for k, v in tiles.items()}}
        except InputError as exc:  # PageError, and files.read_limited's refusals
            return {"i": i, "kind": "error", "reason": str(exc)}
        except (cv2.error, MemoryError, ValueError) as exc:
            return {"i": i, "kind": "error", "reason": f"cannot decode ({one_line(exc)})"}


def _windows(item: dict, style: str) -> int:
    return sum(len(p["windows"]) for p in item["pages"] if p.get("style") == style)


def _collate_pages(items: list[dict]) -> list[dict]:
    return items  # pages differ in size: the model batches their tiles, not the pages


class PageEngines:
    """The models a pages run uses: the run's weights for photo-like pages (a/b kept with the
    page's own L), the page weights (`pcfg.page_weights`, else the shipped page.pt) for drawn
    ones (a colour layer laid under the ink).

    An engine the style asks for by name, or whose weights were named, is loaded at once,
    so bad weights end the run before any page is read (exit 2); under 'auto' the shipped
    page model is loaded when the first drawn page arrives.
    """

    def __init__(self, pcfg: PagesConfig, run: RunConfig, on_load=None):
        self.pcfg, self.run, self.on_load = pcfg, run, on_load
        self._engines: dict[str, Colouriser] = {}
        if pcfg.style != "drawn":
            self.get("photo")
        if pcfg.style == "drawn" or (pcfg.style == "auto" and pcfg.page_weights):
            self.get("drawn")

    def get(self, style: str) -> Colouriser:
        if style not in self._engines:
            if style == "drawn":
                engine = Colouriser(replace(self.run, weights=self.pcfg.page_weights, model=None),
                                    shipped="page")
            else:
                engine = Colouriser(self.run)
            self._engines[style] = engine
            if self.on_load:
                self.on_load(dict(engine.describe(), style=style))
        return self._engines[style]

    def predict(self, style: str, tiles: torch.Tensor) -> np.ndarray:
        engine = self.get(style)
        return engine.predict_layer(tiles) if style == "drawn" else engine.predict(tiles)

    @property
    def pin(self) -> bool:
        return any(e.pin for e in self._engines.values())


def colour_pages(inputs: list[str], pcfg: PagesConfig, run: RunConfig,
                 on_progress=None) -> PagesReport:
    """Colour every page under `inputs` into `pcfg.out`; returns what happened to each.

    Raises PlanError (exit 2) before any work when the run cannot start,
    CheckpointError/DeviceError/PipelineError (exit 2) when the model cannot be loaded, data.WorkerError
    (exit 1) when a reading worker dies; finished pages are kept and a re-run
    resumes. `run.shard` (or the scheduler's environment) restricts the run to
    one shard of the inputs; `run.ray` (or `run.ray_address`) runs each page file or archive as a
    task on a Ray cluster instead of in this process.
    """
    t0 = time.monotonic()
    emit = on_progress or (lambda kind, info: None)
    if pcfg.style not in STYLES:
        raise PlanError(f"unknown style {pcfg.style!r} (use {', '.join(STYLES)})")
    if pcfg.style == "photo" and pcfg.page_weights:
        # No page would use them: say so rather than ignore the option.
        raise PlanError("--page-weights colour drawn pages; --style photo has none")
    plan = plan_pages(inputs, pcfg.out, pcfg.fmt, pcfg.overwrite, resolve_shard(run.shard))
    emit("start", {"total": len(plan.jobs), "skipped": len(plan.skipped)})
    if run.ray or run.ray_address:
        report = _run_on_ray(plan, pcfg, run, emit)
    else:
        report = run_plan(plan, pcfg, run, emit)
    report.skipped[:0], report.failed[:0], report.notes[:0] = plan.skipped, plan.failed, plan.notes
    report.seconds = time.monotonic() - t0
    emit("end", {"seconds": report.seconds})
    return report


def run_plan(plan: Plan, pcfg: PagesConfig, run: RunConfig, emit=None,
             engine: PageEngines | None = None) -> PagesReport:
    """Do the work of a plan (its jobs and archives) in this process; returns what happened.

    Reading/decoding runs in `run.workers` DataLoader processes; the model sees
    up to `run.batch_size` tiles per call; merging, encoding and writing run in
    a small thread pool while the next batch is predicted. What planning found
    (skipped, failed, notes) is the caller's to report.
    """
    emit = emit or (lambda kind, info: None)
    report = PagesReport([], [], [], [], [], 0.0)
    # What a killed earlier run left for these outputs (pages, staged pages, archives).
    files.remove_stale_temps([job.dest for job in plan.jobs] + [a.dest for a in plan.archives])
    if engine is None and plan.jobs:
        engine = PageEngines(pcfg, run, on_load=partial(emit, "engine"))
    failed_members: dict[int, set[str]] = {}

    def finish(job, result, small):
        """Runs in a writer thread: merge (or lay flat colour under the ink), encode, write."""
        try:
            if result["kind"] == "copy":
                if job.member is not None:
                    files.write_bytes(job.dest.with_suffix(".copy"), b"")  # marker: keep original
                else:
                    files.write_bytes(job.dest.with_suffix(job.path.suffix), result["data"])
                return "copy", None, ()
            rgbs, k = [], {"photo": 0, "drawn": 0}
            for page in result["pages"]:
                if "rgb" in page:
                    rgbs.append(page["rgb"])
                    continue
                n, style = len(page["windows"]), page["style"]
                rgbs.append(colour_page(page["l8"], style, page["windows"],
                                        small[style][k[style]:k[style] + n]))
                k[style] += n
            files.write_bytes(job.dest, encode_pages(rgbs, job.out_ext))
            return "done", None, [p["style"] for p in result["pages"] if "style" in p]
        except ColourbatchError as exc:  # PageError, files.WriteError
            return "error", str(exc), ()

    def record(job, outcome, reason, styles=()):
        for style in styles:
            report.styles[style] = report.styles.get(style, 0) + 1
        if outcome == "done":
            report.done.append(job.source)
        elif outcome == "copy":
            report.copied.append(job.source)
        else:
            report.failed.append((job.source, reason))
            if job.archive is not None:
                failed_members.setdefault(job.archive, set()).add(job.member)
        emit("page", {"source": job.source, "outcome": outcome, "reason": reason})

    if plan.jobs:
        loader = make_loader(PageDataset(plan.jobs, pcfg.recolour, pcfg.style),
                             batch_size=run.batch_size, workers=run.workers,
                             collate_fn=_collate_pages, pin_memory=engine.pin)
        pending = []
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="colourbatch-write") as pool:
            for items in loader:
                colour_items = [r for r in items if r["kind"] == "colour"]
                # Each style's tiles of the whole batch go through its model together.
                small: dict[str, list[np.ndarray]] = {}
                for style in ("photo", "drawn"):
                    found = [r["tiles"][style] for r in colour_items if r["tiles"][style] is not None]
                    small[style] = []
                    if found:
                        tiles = torch.cat(found)
                        for s in range(0, len(tiles), run.batch_size):
                            small[style].extend(engine.predict(style, tiles[s:s + run.batch_size]))
                k = {"photo": 0, "drawn": 0}
                for r in items:
                    job = plan.jobs[r["i"]]
                    if r["kind"] == "error":
                        record(job, "error", r["reason"])
                        continue
                    mine = {}
                    for style in k:
                        n = _windows(r, style) if r["kind"] == "colour" else 0
                        mine[style] = small[style][k[style]:k[style] + n]
                        k[style] += n
                    pending.append((job, pool.submit(finish, job, r, mine)))
                # Bound the write queue: memory stays flat however many pages there are.
                while len(pending) > 4 * run.batch_size:
                    job, fut = pending.pop(0)
                    record(job, *fut.result())
            for job, fut in pending:
                record(job, *fut.result())

    for idx, arch in enumerate(plan.archives):
        try:
            left_out = finish_archive(arch, failed_members.get(idx, set()))
        except (ColourbatchError, zipfile.BadZipFile, OSError) as exc:
            report.failed.append((str(arch.source), f"cannot write archive ({one_line(exc)})"))
            continue
        listed = {s for s, _ in report.failed}
        report.failed += [(f"{arch.source}:{m}", why) for m, why in left_out
                          if f"{arch.source}:{m}" not in listed]  # failed pages are listed once
        report.archives.append(str(arch.dest))
        emit("archive", {"path": str(arch.dest)})
    return report


def _colour_unit(pcfg: PagesConfig, run: RunConfig, plan: Plan, engine: PageEngines) -> PagesReport:
    return run_plan(plan, pcfg, run, engine=engine)


def _run_on_ray(plan: Plan, pcfg: PagesConfig, run: RunConfig, emit) -> PagesReport:
    """Each page file or archive of `plan` as a task on a Ray cluster (pipeline.on_ray)."""
    report = PagesReport([], [], [], [], [], 0.0)

    def on_result(key: str, part: PagesReport) -> None:
        for name in ("done", "copied", "failed", "archives"):
            getattr(report, name).extend(getattr(part, name))
        for style, n in part.styles.items():
            report.styles[style] = report.styles.get(style, 0) + n
        for source in part.done + part.copied:
            emit("page", {"source": source, "outcome": "done", "reason": None})
        for source, reason in part.failed:
            emit("page", {"source": source, "outcome": "error", "reason": reason})

    def on_failure(key: str, reason: str) -> None:  # the worker itself failed on this file or archive
        report.failed.append((key, reason))
        emit("page", {"source": key, "outcome": "error", "reason": reason})

    on_ray(plan.units(), run, partial(_colour_unit, pcfg, run), on_result, on_failure,
           build=partial(PageEngines, pcfg, run))
    return report
