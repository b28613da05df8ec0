"""model.py: the seed baseline as ColourMePy built it, and the default network."""
import pytest
import torch
import torch.nn.functional as F

from colourbatch.model import (MODELS, PageNet, build_model, model_config, model_input, predict_ab8,
                               predict_layer8)


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
    # Raw seed outputs of -100 and 400 decode to a/b far outside 0..255: they must clamp, not wrap.
    m = _constant_seed_model((0.0, -100.0, 400.0))
    with torch.no_grad():
        ab = predict_ab8(m, torch.full((3, 1, 32, 32), 100, dtype=torch.uint8))
    assert ab.dtype == torch.uint8 and ab.shape == (3, 2, 32, 32)
    assert (ab[:, 0] == 0).all() and (ab[:, 1] == 255).all()
    # In range, it rounds: 128 + 12.6 -> 141 (and the seed model's L output is ignored).
    m = _constant_seed_model((0.0, 140.6, 115.4))
    with torch.no_grad():
        ab = predict_ab8(m, torch.zeros((1, 1, 8, 8), dtype=torch.uint8))
    assert (ab[:, 0] == 141).all() and (ab[:, 1] == 115).all()


def _constant_seed_model(bias):
    # The final ReLU would hide negative outputs: drop it so raw values out of range reach decode.
    m = build_model("seed").eval()
    with torch.no_grad():
        for p in m.parameters():
            p.zero_()
        m.net[-2].bias.copy_(torch.tensor(bias))
    m.net[-1] = torch.nn.Identity()
    return m


def test_every_model_carries_its_recipe():
    torch.manual_seed(0)
    for name, entry in MODELS.items():
        net = build_model(name)
        assert entry.lr > 0
        opt = net.configure_optimizers(entry.lr, 0.1)
        assert len(opt.param_groups) == 1 and opt.param_groups[0]["lr"] == entry.lr
        assert {id(p) for p in opt.param_groups[0]["params"]} == {id(p) for p in net.parameters()}
        loss_fn = net.make_loss(0.5, 5.0, 0.5)
        l8 = torch.randint(0, 256, (2, 1, 32, 32), dtype=torch.uint8)
        ab8 = torch.randint(100, 156, (2, 2, 32, 32), dtype=torch.uint8)
        loss = loss_fn(net(model_input(l8)), l8, ab8, l8)
        assert loss.ndim == 0 and torch.isfinite(loss)
        loss.backward()
    assert type(build_model("seed").configure_optimizers(1e-3, 0.1)) is torch.optim.Adam
    default_opt = build_model("default").configure_optimizers(1e-3, 0.1)
    assert type(default_opt) is torch.optim.AdamW and default_opt.param_groups[0]["weight_decay"] == 0.1


def test_seed_loss_is_colourmepys_mse_on_0_255_lab():
    net = build_model("seed")
    l8 = torch.full((1, 1, 4, 4), 10, dtype=torch.uint8)
    ab8 = torch.full((1, 2, 4, 4), 20, dtype=torch.uint8)
    raw = torch.zeros(1, 3, 4, 4)
    assert net.make_loss(0.5, 5.0, 0.5)(raw, l8, ab8).item() == pytest.approx((100 + 400 + 400) / 3)


class _Tiles:
    """A data set of one colour everywhere: a/b = (+40, -30) LAB units, at `size`."""

    def __init__(self, size):
        self.size = size

    def __len__(self):
        return 4

    def __getitem__(self, i):
        ab8 = torch.empty(2, self.size, self.size, dtype=torch.uint8)
        ab8[0], ab8[1] = 168, 98
        return torch.zeros(1, self.size, self.size, dtype=torch.uint8), ab8


@pytest.mark.parametrize("size", [176, 224, 70])
def test_default_prior_is_counted_at_the_networks_own_output_size(size, monkeypatch):
    net = build_model("default").eval()
    with torch.no_grad():
        assert net(torch.rand(1, 1, size, size)).shape[-1] == net.output_size(size)
    seen = []
    real = F.adaptive_avg_pool2d
    monkeypatch.setattr(F, "adaptive_avg_pool2d", lambda x, s: seen.append(s) or real(x, s))
    net.estimate_prior(_Tiles(size))
    assert set(seen) == {net.output_size(size)}
    k = int(((net.bins - torch.tensor([40.0, -30.0])).abs().sum(1)).argmin())
    assert net.prior[k].item() == pytest.approx(1.0)  # all mass on the one true bin


def test_init_encoder_specs(tmp_path):
    net = build_model("default")
    assert net.init_encoder("none", None) == "random"
    assert build_model("seed").init_encoder("auto", None) is None  # no encoder to initialise
    state = {f"features.{k}": v + 1 for k, v in net.encoder.features.state_dict().items()
             if v.is_floating_point()}
    assert net.init_encoder(str(tmp_path / "mnv2.pth"), lambda p: state) == "imagenet:mnv2.pth"
    first = next(iter(state))
    assert torch.equal(net.encoder.features.state_dict()[first[len("features."):]], state[first])
    with pytest.raises(ValueError, match="mnv2.pth: not a torchvision mobilenet_v2"):
        net.init_encoder(str(tmp_path / "mnv2.pth"), lambda p: {"features.0.0.weight": torch.zeros(1)})


# ------------------------------------------------------------ confident decoding
def _mixture(m, colours, weights=None):
    """Logits (1, Q, 1, 1) whose T = 1 distribution puts `weights` on the bins nearest `colours`."""
    raw = torch.full((1, len(m.bins), 1, 1), -60.0)
    weights = weights or [1.0] * len(colours)
    for c, w in zip(colours, weights):
        k = int(((m.bins - torch.tensor(c, dtype=torch.float32)) ** 2).sum(1).argmin())
        raw[0, k] = torch.log(torch.tensor(w))
    return raw


def test_weights_saved_before_decode_policies_decode_as_they_did(tmp_path):
    from colourbatch import checkpoint

    torch.manual_seed(0)
    m = build_model("default")
    path = checkpoint.save(tmp_path / "old.pt", m)
    blob = torch.load(path, weights_only=True)
    for key in ("decode", "sure_radius", "sure_mass"):  # what a file saved before them lacks
        blob["config"].pop(key)
    old = checkpoint.model_from_blob(blob)
    assert old.cfg.decode == "annealed"
    raw = torch.randn(2, len(m.bins), 3, 3) * 3
    annealed = torch.einsum("bqhw,qc->bchw", torch.softmax(raw / old.cfg.temperature, 1), old.bins)
    assert torch.allclose(old.decode(raw), annealed, atol=1e-4)
    # A file that says 'confident' decodes confidently unless told otherwise.
    m.cfg.decode = "confident"
    sure = checkpoint.model_from_blob(torch.load(checkpoint.save(tmp_path / "new.pt", m), weights_only=True))
    assert sure.cfg.decode == "confident"
    assert torch.equal(sure.decode(raw), sure.decode(raw, policy="confident"))
    assert torch.allclose(sure.decode(raw, policy="annealed"), annealed, atol=1e-4)
    with pytest.raises(ValueError, match="unknown decode 'vivid'"):
        sure.decode(raw, policy="vivid")


def test_confident_decoding_keeps_sure_colour_and_neutralises_doubt():
    m = build_model("default").eval()
    m.cfg.sure_radius, m.cfg.sure_mass = 15.0, 0.75
    # One colour: all the mass on the colour shown, full chroma (the annealed mean itself).
    one = _mixture(m, [(40.0, -30.0)])
    assert torch.allclose(m.decode(one, policy="confident"), m.decode(one, policy="annealed"))
    assert m.certainty(one).item() == pytest.approx(1.0)
    # Even odds between two colours 80 apart: the mean shown lies 40 from both, no mass near
    # it, so the colour is neutral however lively the mean would be.
    far = _mixture(m, [(60.0, 10.0), (-20.0, 10.0)])
    assert m.decode(far, policy="annealed").norm() > 15
    assert m.decode(far, policy="confident").abs().max() < 1e-6
    # 60 % on one colour: a cold decoding shows (nearly) that colour, with 60 % of the mass
    # near it: 0.6 / 0.75 = 0.8 of its chroma.
    mix = _mixture(m, [(40.0, 0.0), (-40.0, 0.0)], [0.6, 0.4])
    assert m.certainty(mix, 0.1).item() == pytest.approx(0.8, abs=1e-4)
    assert torch.allclose(m.decode(mix, 0.1, "confident"), m.decode(mix, 0.1, "annealed") * 0.8, atol=1e-4)
    # A warm decoding shows a colour between the two, near neither: less certain.
    assert m.certainty(mix, 1.0).item() < 0.1


@pytest.mark.parametrize("channels_last", [True, False])
def test_annealed_mean_is_the_softmax_weighted_mean_of_the_bins(channels_last):
    # Decoded in chunks of DECODE_CHUNK pixels on the CPU: 2 x 37 x 29 = 2146 pixels is 4 full
    # chunks and a partial one; logits as wide as a trained model's (sd 2.6, peaks near 9).
    torch.manual_seed(2)
    m = build_model("default").eval()
    raw = torch.randn(2, len(m.bins), 37, 29) * 3
    raw[:, 40] += 9
    if channels_last:
        raw = raw.contiguous(memory_format=torch.channels_last)
    for t in (0.38, 1.0):
        want = (torch.softmax(raw.double().permute(0, 2, 3, 1) / t, -1) @ m.bins.double()).permute(0, 3, 1, 2)
        got = m.decode(raw, t)
        assert got.shape == want.shape and got.is_contiguous()
        assert (got.double() - want).abs().max() < 1e-3  # LAB units: a thousandth of an 8-bit step


def test_decoding_is_fp32_under_autocast():
    torch.manual_seed(1)
    m = build_model("default").eval()
    raw = torch.randn(1, len(m.bins), 8, 8) * 4
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = {p: m.decode(raw.bfloat16(), policy=p) for p in ("annealed", "confident")}
    for policy, ab in inside.items():
        assert ab.dtype == torch.float32
        assert torch.equal(ab, m.decode(raw.bfloat16(), policy=policy))


# --------------------------------------------------------------------- page model
def test_page_model_decodes_ab_like_default_and_a_layer_in_lab_units():
    torch.manual_seed(0)
    m = build_model("page").eval()
    assert m.drawn and not build_model("default").drawn and not build_model("seed").drawn
    with torch.no_grad():
        raw = m(torch.rand(2, 1, 224, 224))
    assert raw.shape == (2, len(m.bins) + 1, 56, 56)
    ab = m.decode(raw)
    assert ab.shape == (2, 2, 56, 56)
    # a/b come from the bin logits alone: the layer channel changes nothing of them.
    other = raw.clone()
    other[:, -1] = 50.0
    assert torch.equal(m.decode(other), ab) and torch.equal(m.certainty(other), m.certainty(raw))
    layer = m.decode_layer(raw)
    assert layer.shape == (2, 3, 56, 56) and layer.dtype == torch.float32
    assert torch.equal(layer[:, 1:], ab)
    assert 0 <= layer[:, 0].min() and layer[:, 0].max() <= 100
    other[:, -1] = -50.0
    assert m.decode_layer(other)[:, 0].max() < 1e-3  # the layer's L spans 0 (black) ...
    other[:, -1] = 50.0
    assert m.decode_layer(other)[:, 0].min() > 99.99  # ... to 100 (white)


def test_predict_layer8_for_every_model():
    torch.manual_seed(0)
    l8 = torch.randint(0, 256, (2, 1, 64, 64), dtype=torch.uint8)
    for name in MODELS:
        m = build_model(name).eval()
        with torch.no_grad():
            lab8 = predict_layer8(m, l8)
            ab8 = predict_ab8(m, l8)
        assert lab8.dtype == torch.uint8 and lab8.shape[:2] == (2, 3), name
        assert torch.equal(lab8[:, 1:], ab8), name  # its a/b are the model's own
        if name == "page":
            with torch.no_grad():
                lab = m.decode_layer(m(model_input(l8)))
            want = (lab[:, 0] * 2.55).round().clamp(0, 255)
            assert torch.equal(lab8[:, 0].float(), want)
        else:
            assert (lab8[:, 0] == 255).all(), name  # no layer: white paper with their colour
    m = _constant_seed_model((0.0, 168.0, 88.0))
    with torch.no_grad():
        assert predict_layer8(m, l8)[0, :, 0, 0].tolist() == [255, 168, 88]


def test_page_loss_learns_the_layer_off_the_ink_only():
    torch.manual_seed(0)
    m = build_model("page").eval()
    loss_fn = m.make_loss(0.5, 5.0, 0.5)
    l8 = torch.full((1, 1, 64, 64), 200, dtype=torch.uint8)
    ab8 = torch.full((1, 2, 64, 64), 128, dtype=torch.uint8)
    with torch.no_grad():
        raw = m(model_input(l8))
    raw[:, -1] = 0.0  # the layer says L = 50
    paper = torch.full_like(l8, 250)
    ink = torch.full_like(l8, 10)
    half = paper.clone()
    half[..., :32] = 10  # the left half is ink
    base = loss_fn(raw, l8, ab8, ink)  # all ink: the layer's L costs nothing
    # Off the ink the layer's L error (|50 - 78.4| L units / bin size 10) is counted in full.
    assert (loss_fn(raw, l8, ab8, paper) - base).item() == pytest.approx(2.84, abs=0.05)
    assert (loss_fn(raw, l8, ab8, half) - base).item() == pytest.approx(2.84, abs=0.05)  # a mean off ink
    better = raw.clone()
    better[:, -1] = torch.logit(torch.tensor(200 / 255))
    assert loss_fn(better, l8, ab8, paper).item() == pytest.approx(base.item(), abs=1e-3)


def test_page_model_starts_from_default_weights_file(tmp_path):
    torch.manual_seed(0)
    default = build_model("default")
    state = {k: v + 0.5 if v.is_floating_point() else v for k, v in default.state_dict().items()}
    page = build_model("page")
    assert isinstance(page, PageNet)
    fresh_head = page.layer_head.weight.clone()
    assert page.init_encoder(str(tmp_path / "default.pt"), lambda p: state) == "weights:default.pt"
    assert torch.equal(page.head.weight, state["head.weight"])          # the colour decoder as trained
    assert torch.equal(page.encoder.features[0][0].weight, state["encoder.features.0.0.weight"])
    assert torch.equal(page.layer_head.weight, fresh_head)             # its own head stays fresh
    assert not torch.equal(page.prior, state["prior"])                  # the prior is its data's own
    wrong = dict(state)
    wrong["head.weight"] = torch.zeros(3, 96, 1, 1)
    with pytest.raises(ValueError, match="other.pt: not weights of this network: 0 tensors missing, 1 of"):
        page.init_encoder(str(tmp_path / "other.pt"), lambda p: wrong)
    partial = {k: v for k, v in state.items() if not k.startswith("up8.")}
    with pytest.raises(ValueError, match="tensors missing"):
        page.init_encoder("p.pt", lambda p: partial)
    # A default model can start from a page model's file too (all it needs is there).
    assert default.init_encoder("page.pt", lambda p: page.state_dict()) == "weights:page.pt"
