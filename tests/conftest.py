"""Shared fixtures: small weights files made in the test session (never ../shared)."""
import contextlib
import os
import signal

import pytest

# Tests run on 2 cores next to other work; one torch thread each keeps them predictable.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def seed_weights(tmp_path_factory):
    """An untrained `seed` model saved as a self-describing weights file (fast to run)."""
    import torch

    from colourbatch import checkpoint
    from colourbatch.model import build_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "seed.pt"
    checkpoint.save(path, build_model("seed"), {"note": "untrained test weights"})
    return path


@pytest.fixture(scope="session")
def tinted_weights(tmp_path_factory):
    """A `seed` model whose output is a fixed, clearly coloured a/b (a=168, b=88):
    lets tests check that colour really arrives in the output, untrained."""
    import torch

    from colourbatch import checkpoint
    from colourbatch.model import build_model

    model = build_model("seed")
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        last = model.net[-2]  # the final conv; its bias alone sets the output
        last.bias.copy_(torch.tensor([128.0, 168.0, 88.0]))
    path = tmp_path_factory.mktemp("weights") / "tinted.pt"
    checkpoint.save(path, model, {"note": "constant colour test weights"})
    return path


@pytest.fixture(scope="session")
def tinted_page_weights(tmp_path_factory):
    """A `page` model whose colour layer is fixed: L = 80 and a/b near (+40, -40) (a violet):
    lets tests see the layer laid under the ink, untrained."""
    import torch

    from colourbatch import checkpoint
    from colourbatch.model import build_model

    model = build_model("page")
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        target = torch.tensor([40.0, -40.0])
        nearest = int(((model.bins - target) ** 2).sum(1).argmin())
        model.head.bias[nearest] = 30.0  # every other bin stays at 0: the mean is this bin
        model.layer_head.bias.fill_(float(torch.logit(torch.tensor(0.8))))  # L = 80
    path = tmp_path_factory.mktemp("weights") / "tinted-page.pt"
    checkpoint.save(path, model, {"note": "constant layer test weights"})
    return path


# ------------------------------------------------- training / evaluation data sets
def _synthetic_rgb(rng, h: int = 32, w: int = 32):
    """A smooth picture whose colour follows its brightness (bright = warm, dark = blue),
    so even the 3-layer seed model has something to learn in a few steps."""
    import cv2
    import numpy as np

    base = rng.uniform(0, 1, (4, 4)).astype(np.float32)
    v = cv2.resize(base, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 1)
    rgb = np.stack([40 + 200 * v, 30 + 150 * v, 220 - 180 * v], -1)
    return rgb.round().clip(0, 255).astype(np.uint8)


def _write_kaggle(root, counts=(12, 12, 6), size: int = 32, nested: bool = True, seed: int = 0):
    """The Kaggle image-colorization layout: l/gray_scale.npy and ab/ab/ab1..3.npy (or the
    flattened ab/ab1..3.npy), uint8 OpenCV LAB, made from synthetic pictures."""
    import numpy as np

    from colourbatch import colour

    rng = np.random.default_rng(seed)
    labs = np.stack([colour.rgb_to_lab(_synthetic_rgb(rng, size, size)) for _ in range(sum(counts))])
    (root / "l").mkdir(parents=True)
    np.save(root / "l" / "gray_scale.npy", labs[..., 0])
    ab_dir = root / "ab" / "ab" if nested else root / "ab"
    ab_dir.mkdir(parents=True)
    start = 0
    for i, n in enumerate(counts, 1):
        np.save(ab_dir / f"ab{i}.npy", np.ascontiguousarray(labs[start:start + n, ..., 1:]))
        start += n
    return root


@pytest.fixture
def make_kaggle(tmp_path):
    """Factory: make_kaggle(name, counts=(12, 12, 6), size=32, nested=True) -> folder."""
    def make(name: str = "kaggle", **kw):
        return _write_kaggle(tmp_path / name, **kw)
    return make


@pytest.fixture
def kaggle_dir(make_kaggle):
    """30 pictures of 32x32 in the nested ab/ab/ layout (12 + 12 + 6)."""
    return make_kaggle("kaggle")


@pytest.fixture
def image_folder(tmp_path):
    """10 photos (PNG and JPEG, two folders, varied sizes), an RGBA cut-out and one
    unreadable file that loaders must skip and count."""
    import cv2
    import numpy as np

    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    rng = np.random.default_rng(1)
    for i in range(10):
        rgb = _synthetic_rgb(rng, 40 + 4 * i, 48)
        ext = "jpg" if i % 3 == 0 else "png"
        path = root / ("sub" if i % 2 else "") / f"img{i}.{ext}"
        cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[8:32, 8:32] = (0, 0, 255, 255)  # an opaque red square (BGRA) on full transparency
    cv2.imwrite(str(root / "cutout.png"), rgba)
    (root / "broken.png").write_bytes(b"this is not a PNG file at all")
    return root


# ------------------------------------------------------------- video clips
def _write_clip(path, frames=6, size=(64, 48), fps=25, codec="libx264", pix_fmt="yuv420p",
                audio=None, rate=44100, channels=2, vfr_pts=None, colour=False, rotation=0,
                language="fra", title=None, faststart=False, fill=None):
    """A tiny clip made with PyAV: moving grey (or colour) gradient, optional audio track.

    `vfr_pts` gives each frame's pts in milliseconds (variable frame rate);
    otherwise frames are 1/fps apart. `fill` (an RGB triple) makes every frame that one colour.
    """
    from fractions import Fraction

    import av
    import numpy as np

    w, h = size
    opts = {"movflags": "+faststart"} if faststart else {}
    out = av.open(str(path), "w", options=opts)
    if title:
        out.metadata["title"] = title
    vs = out.add_stream(codec, rate=fps)
    vs.width, vs.height, vs.pix_fmt = w, h, pix_fmt
    tb = Fraction(1, 1000) if vfr_pts else Fraction(1, fps)
    vs.codec_context.time_base = tb
    if rotation:
        vs.set_display_rotation(rotation)
    aus = None
    if audio:
        aus = out.add_stream(audio, rate=rate)
        aus.layout = "stereo" if channels == 2 else "mono"
        aus.metadata["language"] = language
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(frames):
        grey = ((xx * 3 + yy * 2 + i * 17) % 256).astype(np.uint8)
        rgb = np.stack([grey] * 3, -1)
        if colour:
            rgb[..., 0] = 255 - grey
            rgb[..., 2] = (grey // 2 + 60)
        if fill is not None:
            rgb[:] = fill
        f = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        f.pts = vfr_pts[i] if vfr_pts else i
        f.time_base = tb
        for p in vs.encode(f):
            out.mux(p)
    for p in vs.encode():
        out.mux(p)
    if aus is not None:
        seconds = (vfr_pts[-1] / 1000 + 0.04) if vfr_pts else frames / fps
        total = int(seconds * rate)
        fmt = aus.codec_context.format
        n = aus.codec_context.frame_size or 1024
        t = 0
        while t < total:
            k = min(n, total - t) if not aus.codec_context.frame_size else n
            tone = (0.2 * np.sin(2 * np.pi * 440 * (np.arange(t, t + k) / rate))).astype(np.float32)
            af = av.AudioFrame.from_ndarray(np.tile(tone, (channels, 1)), format="fltp",
                                            layout=aus.layout.name)
            af.sample_rate, af.pts = rate, t
            if fmt.name != "fltp":
                af = av.AudioResampler(format=fmt.name, layout=aus.layout.name, rate=rate).resample(af)[0]
            for p in aus.encode(af):
                out.mux(p)
            t += k
        for p in aus.encode():
            out.mux(p)
    out.close()
    return path


def _write_audio_only(path):
    """A film-named file holding one short AAC track and no video stream."""
    import av
    import numpy as np

    out = av.open(str(path), "w")
    a = out.add_stream("aac", rate=44100)
    frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
    frame.sample_rate, frame.pts = 44100, 0
    for p in list(a.encode(frame)) + list(a.encode()):
        out.mux(p)
    out.close()
    return path


@pytest.fixture
def make_clip(tmp_path):
    """Factory: make_clip("name.mp4", frames=6, size=(64, 48), audio="aac", ...) -> path."""
    def make(name="clip.mp4", **kw):
        return _write_clip(tmp_path / name, **kw)
    return make


@pytest.fixture(scope="session")
def tiny_tinted_weights(tmp_path_factory):
    """Like tinted_weights (constant a=168, b=88) but 4 channels wide: video tests push
    hundreds of frames through it, and the full-width seed net costs ~50 ms a tile."""
    import torch

    from colourbatch import checkpoint
    from colourbatch.model import build_model

    model = build_model("seed", {"widths": [4, 4, 4, 4]})
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.net[-2].bias.copy_(torch.tensor([128.0, 168.0, 88.0]))
    path = tmp_path_factory.mktemp("weights") / "tiny_tinted.pt"
    checkpoint.save(path, model, {"note": "constant colour, tiny, for video tests"})
    return path


@contextlib.contextmanager
def within(seconds: int):
    """A context in which a hang fails the test (SIGALRM in the main thread) instead of
    stalling the suite; blocking reads and queue waits are interrupted."""
    def expire(signum, frame):
        raise TimeoutError(f"still running after {seconds} s: it hangs")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def deadline():
    """deadline(seconds): see `within`."""
    return within
