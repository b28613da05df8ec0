"""Files on disk: the one atomic-write helper and bounded reads of regular files.

Every output colourbatch writes (pages, archives, films, weights, contact
sheets) appears only when complete: it is written under a hidden temporary
name beside its destination, with the destination's extension (so a muxer or
encoder picks the same format), flushed to disk, then renamed over the
destination. A failure or Ctrl-C removes the temporary file and leaves any
previous destination untouched.

Reads of user files refuse anything that is not a regular file (a FIFO would
block forever, /dev/zero never ends) and stop at a byte limit counted on the
bytes actually read, not on what `stat` claims.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from .errors import InputError, WriteError

#: Marks our temporary files; they are hidden (leading dot), so folder scans skip them.
TMP_TAG = ".colourbatch-tmp"


def temp_path(dest: str | os.PathLike) -> Path:
    """A unique hidden name beside `dest` that keeps its extension."""
    dest = Path(dest)
    return dest.with_name(f".{dest.stem}.{secrets.token_hex(4)}{TMP_TAG}{dest.suffix}")


def path_key(path: str | os.PathLike) -> Path:
    """A path as the file system sees it (its folder's links resolved; the file itself need not
    exist): the key that tells an output from an input, or two outputs apart."""
    path = Path(path)
    return Path(os.path.realpath(path.absolute().parent)) / path.name


def temp_target(path: str | os.PathLike) -> Path | None:
    """The destination a temporary file of temp_path() was for, or None for any other file."""
    path = Path(path)
    name = path.name
    cut = name.rfind(TMP_TAG)
    if not name.startswith(".") or cut < 0 or "." not in name[1:cut]:
        return None
    stem = name[1:cut].rsplit(".", 1)[0]  # drop the random token
    return path.with_name(stem + name[cut + len(TMP_TAG):])


def remove_stale_temps(dests) -> int:
    """Remove the temporary files a killed run left for these destinations; returns how many.

    Only temporaries of these destinations go (each folder is listed once):
    another process writing other outputs into the same folder, as shards
    do, keeps its own. A SIGKILLed run cannot clean up after itself, and a
    film's temporary file can be gigabytes.
    """
    by_folder: dict[Path, set[str]] = {}
    for d in dests:
        d = Path(d)
        by_folder.setdefault(d.parent, set()).add(d.name)
    removed = 0
    for folder, names in by_folder.items():
        try:
            with os.scandir(folder) as it:
                stale = [e.path for e in it if TMP_TAG in e.name and e.is_file(follow_symlinks=False)]
        except OSError:
            continue  # not there yet: nothing was left in it
        for p in stale:
            target = temp_target(p)
            if target is not None and target.name in names:
                with contextlib.suppress(OSError):
                    os.unlink(p)
                    removed += 1
    return removed


@contextlib.contextmanager
def atomic_output(dest: str | os.PathLike, make_parents: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write `dest` through; on success fsync and rename it.

    The body creates the file at the yielded path (any writer: open, torch.save,
    PyAV, zipfile). On any exception the temporary file is removed and `dest`
    is left as it was. An OSError while finishing becomes a WriteError.
    """
    dest = Path(dest)
    if make_parents:
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise WriteError(f"cannot create folder {dest.parent} ({exc.strerror or exc})") from None
    tmp = temp_path(dest)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, dest)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise WriteError(f"cannot write {dest} ({exc.strerror or exc})") from None
        raise


def write_bytes(dest: str | os.PathLike, data: bytes, make_parents: bool = True) -> Path:
    """Write `data` to `dest` atomically."""
    dest = Path(dest)
    with atomic_output(dest, make_parents) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    return dest


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class Walk:
    """What walk() found under a folder."""

    files: list[Path] = field(default_factory=list)     # everything that is not a folder, in order
    unreadable: list[tuple[Path, str]] = field(default_factory=list)  # folders that could not be listed
    linked_folders: list[Path] = field(default_factory=list)          # folder symlinks, not followed


def walk(folder: str | os.PathLike) -> Walk:
    """Every non-folder entry under `folder`, depth-first in sorted order.

    Hidden files and folders (our temporaries and staging) are passed over;
    folder symlinks are not followed (one may point back up the tree, or out
    of it) but reported; so are folders that cannot be listed. Entries are not
    checked to be regular files: callers refuse the others with their reason.
    """
    out, stack = Walk(), [Path(folder)]
    while stack:
        d = stack.pop()
        try:
            with os.scandir(d) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            out.unreadable.append((d, f"cannot read folder ({exc.strerror or exc})"))
            continue
        subdirs = []
        for e in entries:
            if e.name.startswith("."):
                continue
            p = Path(e.path)
            try:
                if e.is_dir(follow_symlinks=False):
                    subdirs.append(p)
                    continue
                if e.is_symlink() and e.is_dir():
                    out.linked_folders.append(p)
                    continue
            except OSError:
                pass  # a broken link or a race: the caller's file checks answer for it
            out.files.append(p)
        stack.extend(reversed(subdirs))
    return out


class NotAFile(InputError):
    """A path that is not a regular file (folder, FIFO, device, socket)."""


class TooLarge(InputError):
    """A file above the size a reader accepts."""


def check_regular(path: str | os.PathLike) -> os.stat_result:
    """stat() of `path` (links followed); NotAFile unless it is a regular file."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise InputError(f"cannot read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        raise NotAFile(f"not a regular file ({_kind(st.st_mode)})")
    return st


def read_limited(path: str | os.PathLike, limit: int) -> bytes:
    """The bytes of a regular file, refusing more than `limit` bytes as they are read.

    Opened non-blocking and checked with fstat before reading, so a FIFO or a
    device (even behind a symlink) is refused without blocking or reading it.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise InputError(f"cannot read ({exc.strerror or exc})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotAFile(f"not a regular file ({_kind(st.st_mode)})")
        if st.st_size > limit:
            raise TooLarge(f"file of {st.st_size >> 20} MB refused (limit {limit >> 20} MB)")
        os.set_blocking(fd, True)
        chunks, got = [], 0
        while True:
            chunk = os.read(fd, min(1 << 20, limit + 1 - got))
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
            if got > limit:
                raise TooLarge(f"file grew past the {limit >> 20} MB limit while read; refused")
        return b"".join(chunks)
    except OSError as exc:
        raise InputError(f"cannot read ({exc.strerror or exc})") from None
    finally:
        os.close(fd)


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a plain file"
