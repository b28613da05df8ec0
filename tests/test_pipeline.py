"""pipeline.Colouriser: the decoding a run asks for, refused before the model loads when unknown."""
import pytest
import torch

from colourbatch import checkpoint
from colourbatch.config import RunConfig
from colourbatch.model import build_model
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


def test_unknown_decode_is_refused_before_the_weights_load(tmp_path):
    with pytest.raises(PipelineError, match="unknown decode 'vivid'") as err:
        Colouriser(RunConfig(weights=str(tmp_path / "missing.pt"), decode="vivid"))
    assert err.value.exit_code == 2
