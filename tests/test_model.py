"""model.py: the seed baseline as ColourMePy built it, and the default network."""
import pytest
import torch

from colourbatch.model import MODELS, build_model, model_config, predict_ab8


def test_seed_is_colourmepy():
    m = build_model("seed")
    convs = [l for l in m.net if isinstance(l, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size[0]) for c in convs] == [
        (3, 64, 3), (64, 64, 2), (64, 32, 2), (32, 32, 1), (32, 3, 1)]
    assert sum(isinstance(l, torch.nn.ReLU) for l in m.net) == 5
    out = m(torch.rand(2, 1, 224, 224))
    assert out.shape == (2, 3, 224, 224) and (out >= 0).all()  # LAB 0..255 after ReLU


def test_default_outputs_bin_logits_and_decodes_ab():
    torch.manual_seed(0)
    m = build_model("default").eval()
    with torch.no_grad():
        raw = m(torch.rand(2, 1, 224, 224))
        assert raw.shape == (2, len(m.bins), 56, 56)
        ab = m.decode(raw)
    assert ab.shape == (2, 2, 56, 56)
    # Annealed mean: a peaked distribution decodes to its peak bin.
    raw = torch.full((1, len(m.bins), 1, 1), -20.0)
    k = int(((m.bins - torch.tensor([40.0, -30.0])).abs().sum(1)).argmin())
    raw[0, k] = 20.0
    assert torch.allclose(m.decode(raw)[0, :, 0, 0], torch.tensor([40.0, -30.0]), atol=1e-3)
    # Lower temperature makes an uncertain prediction more saturated.
    raw = torch.randn(1, len(m.bins), 4, 4)
    assert m.decode(raw, 0.2).norm(dim=1).mean() > m.decode(raw, 1.0).norm(dim=1).mean()


def test_imagenet_encoder_keys_match_torchvision_names():
    m = build_model("default")
    state = {f"features.{k}": v.clone() + 1 for k, v in m.encoder.features.state_dict().items()}
    state["classifier.1.weight"] = torch.zeros(1000, 1280)
    assert m.load_imagenet_encoder(state) == len(state) - 1
    with pytest.raises(ValueError, match="not a torchvision mobilenet_v2"):
        m.load_imagenet_encoder({"features.0.0.weight": torch.zeros(32, 3, 3, 3)})


def test_table_round_trip_and_errors():
    for name in MODELS:
        m = build_model(name)
        n, cfg = model_config(m)
        assert n == name and type(build_model(n, cfg)) is type(m)
    with pytest.raises(ValueError, match="unknown model"):
        build_model("nope")
    with pytest.raises(ValueError, match="do not belong"):
        build_model("seed", {"bin_step": 3})


def test_predict_ab8_is_uint8_and_clamped():
    m = build_model("seed").eval()
    with torch.no_grad():
        ab = predict_ab8(m, torch.full((3, 1, 32, 32), 100, dtype=torch.uint8))
    assert ab.dtype == torch.uint8 and ab.shape == (3, 2, 32, 32)
