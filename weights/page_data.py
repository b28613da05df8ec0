"""The page model's training pictures: colour drawings from Open Clip Art, on white.

    python weights/page_data.py [SRC] [DST]

SRC (default /work/data-extra/oc/usr/share/openclipart/png) is the Debian
package openclipart-png (public-domain dedication), unpacked:

    apt-get download openclipart-png && dpkg -x openclipart-png_*.deb /work/data-extra/oc

DST (default /work/data-extra/drawn) gets RGB PNGs, DST/<category>/<name>.png:
one folder per Open Clip Art category, which is the picture's source (so
whole categories can be held out with --holdout), plus DST/cutouts/ from
../shared/data/cutouts. Kept: colour drawings only. Alpha is flattened onto
white (a drawing's background is paper); greyscale and nearly colourless
pictures, pictures under MIN_SIDE on their short side, icon-ish categories
(DROP) poster-size files (MAX_PIXELS) and near-duplicates (the same 16x16 thumbnail, e.g. one card face in
several colours' siblings) are passed over. Deterministic: the same SRC gives
the same files. DST/MANIFEST.tsv lists every file and its sha256 (the page
model's weights record the manifest's hash). Prints the count per category as JSON.
"""
import hashlib
import json
import struct
import sys
from pathlib import Path

import cv2
import numpy as np

from colourbatch import colour
from colourbatch.checkpoint import file_sha256
from colourbatch.data import ImageError, list_images, read_colour_image

SRC = Path("/work/data-extra/oc/usr/share/openclipart/png")
DST = Path("/work/data-extra/drawn")
CUTOUTS = Path("/work/shared/data/cutouts")  # the project's ../shared/data/cutouts (Tux Paint stamps)
#: Categories of icons, buttons, logos, geometric shapes, flags and signs: not drawings.
DROP = ("computer", "buttons", "logos", "shapes", "signs_and_symbols")
#: Pictures above this many pixels (poster-size renders, up to 21000 x 29700) are passed
#: over unread: decoding one takes tens of GB, and a 1024-px copy adds nothing.
MAX_PIXELS = 40_000_000
#: Short side (after flattening) below which a picture is an icon, not a drawing.
MIN_SIDE = 128
#: Share of pixels with chroma above colour.GREY_CHROMA that makes a drawing a colour one
#: (colour.is_greyscale's 1 % would keep black line art with one red dot).
MIN_COLOUR_SHARE = 0.05


def png_pixels(path: Path) -> int:
    """Width x height from a PNG's header (0 for anything else: read as usual)."""
    with open(path, "rb") as f:
        head = f.read(24)
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return 0
    w, h = struct.unpack(">II", head[16:24])
    return w * h


def thumb_key(rgb: np.ndarray) -> str:
    """Near-duplicate key: the 16x16 thumbnail, quantised to 32 levels."""
    t = cv2.resize(rgb, (16, 16), interpolation=cv2.INTER_AREA) // 32
    return hashlib.sha1(t.tobytes()).hexdigest()


def prepare(src: Path, dst: Path, cutouts: Path = CUTOUTS, seen: set[str] | None = None) -> dict:
    """Write the kept pictures of `src` then `cutouts` to `dst`; `seen`: thumbnail keys of
    pictures already written (a duplicate of one is passed over). Returns counts per category."""
    counts: dict[str, int] = {}
    seen = set() if seen is None else seen
    jobs = [(p, p.relative_to(src).parts[0]) for p in list_images(src)
            if p.relative_to(src).parts[0] not in DROP]
    if cutouts.is_dir():
        jobs += [(p, "cutouts") for p in list_images(cutouts)]
    for path, category in jobs:
        if png_pixels(path) > MAX_PIXELS:
            continue
        try:
            rgb = read_colour_image(path, max_side=1024)  # alpha onto white paper
        except ImageError:
            continue
        if min(rgb.shape[:2]) < MIN_SIDE or colour.chroma_share(rgb) < MIN_COLOUR_SHARE:
            continue
        key = thumb_key(rgb)
        if key in seen:
            continue
        seen.add(key)
        base = path.relative_to(src if category != "cutouts" else cutouts).with_suffix("")
        name = "_".join(base.parts[1:] if category != "cutouts" else base.parts) + ".png"
        out = dst / category / name
        out.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(out), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        counts[category] = counts.get(category, 0) + 1
    return dict(sorted(counts.items()))


def write_manifest(dst: Path) -> Path:
    """DST/MANIFEST.tsv: 'path<TAB>sha256' for every picture, sorted: what the weights record."""
    lines = [f"{p.relative_to(dst).as_posix()}\t{file_sha256(p)}" for p in list_images(dst)]
    out = dst / "MANIFEST.tsv"
    out.write_text("\n".join(lines) + "\n")
    return out


if __name__ == "__main__":
    args = sys.argv[1:]
    dst = Path(args[1]) if len(args) > 1 else DST
    counts = prepare(Path(args[0]) if args else SRC, dst)
    write_manifest(dst)
    print(json.dumps({"total": sum(counts.values()), **counts}))
