"""pipeline: the Colouriser's decoding (refused before the model loads when unknown), and a
page's windows, tiles and colouring for each style."""
import numpy as np
import pytest
import torch

from colourbatch import checkpoint, colour
from colourbatch.config import RunConfig
from colourbatch.model import build_model
from colourbatch import pipeline
from colourbatch.pipeline import Colouriser, PipelineError


def test_colouriser_decodes_as_asked(tmp_path):
    torch.manual_seed(0)
    path = checkpoint.save(tmp_path / "d.pt", build_model("default"))
    tiles = torch.full((2, 1, 32, 32), 120, dtype=torch.uint8)
    run = dict(weights=str(path), device="cpu", precision="fp32")
    own = Colouriser(RunConfig(**run)).predict(tiles)
    annealed = Colouriser(RunConfig(**run, decode="annealed")).predict(tiles)
    confident = Colouriser(RunConfig(**run, decode="confident")).predict(tiles)
    assert (own == annealed).all()  # the file's own decoding is the annealed mean
    # An untrained network is unsure everywhere: the annealed mean tints, confident stays near grey.
    tint = abs(annealed.astype(int) - 128).mean()
    assert tint > 2 and abs(confident.astype(int) - 128).mean() < 0.3 * tint


@pytest.fixture
def torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_on_one_cpu_thread_a_batch_runs_in_chunks_and_colours_as_in_one_piece(tmp_path, monkeypatch,
                                                                                torch_threads):
    from colourbatch.model import predict_ab8, predict_layer8

    torch.manual_seed(0)
    path = checkpoint.save(tmp_path / "p.pt", build_model("page"))
    run = RunConfig(weights=str(path), device="cpu", precision="fp32")
    tiles = torch.randint(0, 256, (pipeline.CPU_CHUNK * 2 + 1, 1, 64, 64), dtype=torch.uint8)
    sizes = []
    engine = Colouriser(run, threads=2)
    forward = engine.model.forward
    monkeypatch.setattr(engine.model, "forward", lambda x: sizes.append(len(x)) or forward(x))
    engine.predict(tiles)
    assert sizes == [len(tiles)]  # several threads: the whole batch at once
    sizes.clear()
    torch.set_num_threads(1)  # as video runs it beside x264 on 2 cores
    got, layer = engine.predict(tiles), engine.predict_layer(tiles)
    assert sizes == [pipeline.CPU_CHUNK, pipeline.CPU_CHUNK, 1] * 2  # the heap reused, not remapped
    with torch.inference_mode():
        want, want_layer = predict_ab8(engine.model, tiles).numpy(), predict_layer8(engine.model, tiles).numpy()
    for a, b in ((got, want), (layer, want_layer)):
        assert a.shape == b.shape and np.abs(a.astype(int) - b).max() <= 1  # a rounding edge at most
        assert (a != b).mean() < 1e-3


def test_lanes_run_a_batch_s_chunks_in_threads_of_their_own_and_colour_as_one_lane(tmp_path, monkeypatch,
                                                                                    torch_threads):
    """Beside x264 on 2 cores the film engine runs the chunks in two lanes: each chunk in a lane
    thread, under inference mode and the run's autocast, torch on one intra-op thread there,
    and the output is one lane's exactly. No lane thread outlives its batch (a film's decode
    worker forks between batches)."""
    import threading

    torch.manual_seed(0)
    path = checkpoint.save(tmp_path / "d.pt", build_model("default"))
    tiles = torch.randint(0, 256, (pipeline.CPU_CHUNK * 3 + 2, 1, 64, 64), dtype=torch.uint8)
    for precision in ("fp32", "bf16"):
        engine = Colouriser(RunConfig(weights=str(path), device="cpu", precision=precision), threads=1, lanes=2)
        seen = []
        forward = engine.model.forward

        def spy(x):
            seen.append((threading.current_thread().name, torch.is_inference_mode_enabled(),
                         torch.is_autocast_enabled("cpu"), torch.get_num_threads()))
            return forward(x)
        monkeypatch.setattr(engine.model, "forward", spy)
        got = engine.predict(tiles)
        assert not [t for t in threading.enumerate() if t.name.startswith("colourbatch-lane")]
        assert len(seen) == 4 and all(name.startswith("colourbatch-lane") and inference and threads == 1
                                      and autocast == (precision == "bf16")
                                      for name, inference, autocast, threads in seen)
        assert len({name for name, *_ in seen}) == 2  # both lanes took chunks
        seen.clear()
        engine.lanes = 1
        want = engine.predict(tiles)
        assert [name for name, *_ in seen] == [threading.current_thread().name] * 4
        assert np.array_equal(got, want)


def test_unknown_decode_is_refused_before_the_weights_load(tmp_path):
    with pytest.raises(PipelineError, match="unknown decode 'vivid'") as err:
        Colouriser(RunConfig(weights=str(tmp_path / "missing.pt"), decode="vivid"))
    assert err.value.exit_code == 2


@pytest.mark.parametrize("planes", [2, 3])  # a/b for photo pages, a colour layer for drawn ones
def test_tall_page_windows_blend_without_seams(planes):
    windows = pipeline.tile_windows(2000, 200)
    assert len(windows) > 1 and windows[0][0] == 0 and windows[-1][1] == 2000
    assert all(y1 - y0 <= 2 * 200 for y0, y1, _, _ in windows)
    assert pipeline.tile_windows(300, 200) == [(0, 300, 0, 200)]
    # Blending constant predictions gives the same constant: no seams at overlaps.
    small = [np.full((planes, 56, 56), 150, np.uint8) for _ in windows]
    out = pipeline.blend_windows(2000, 200, windows, small)
    assert out.shape == (planes, 2000, 200) and (out == 150).all()


def test_page_tiles_and_colour_by_style():
    l8 = np.full((300, 200), 250, np.uint8)
    l8[100:104] = 20  # an ink line
    for style in ("photo", "drawn"):
        windows, tiles = pipeline.tile_page(l8, style)
        assert windows == [(0, 300, 0, 200)] and tiles[0].shape == (224, 224)
    ab = [np.full((2, 56, 56), 128 + 40, np.uint8)]
    layer = [np.stack([np.full((56, 56), 200, np.uint8), ab[0][0], ab[0][1]])]
    photo = pipeline.colour_page(l8, "photo", windows, ab)
    drawn = pipeline.colour_page(l8, "drawn", windows, layer)
    lab_p, lab_d = colour.rgb_to_lab(photo).astype(int), colour.rgb_to_lab(drawn).astype(int)
    # photo keeps the page's L (paper near white holds little colour); drawn lays the layer's
    # own lightness and colour on the paper and keeps the ink.
    assert np.abs(lab_p[..., 0] - l8).max() <= 2
    assert 180 <= lab_d[10, 10, 0] <= 200 and lab_d[10, 10, 1] > 128 + 25
    assert (drawn[100:104] == colour.l8_to_grey(l8[100:104])[..., None]).all()  # ink kept
