"""Training: TrainConfig and train(), the one loop every model trains in.

The model table owns each model's recipe (learning rate, optimiser, loss,
class prior, encoder initialisation; see model.py), so nothing here asks which
model it is training.

`train(cfg, on_event)` runs on one process, or under torchrun as
DistributedDataParallel (gloo on CPU, nccl on CUDA); only rank 0 evaluates,
writes files and reports. Progress goes out through `on_event(kind, info)`,
never to the terminal: the CLI decides how to show it.

Two files come out: `cfg.out`, the weights pages/video load (fp16, no training
state, a few MB), and `cfg.checkpoint` (default `<out>.ckpt`), everything
`--resume` needs to continue exactly: weights, optimizer, step, RNG and data
position. Both are written atomically, so Ctrl-C or a full disk during a save
leaves the previous file whole (and a full disk ends the run with a WriteError).
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable

import torch

from . import __version__, checkpoint as ckpt, colour
from .config import TrainConfig
from .data import ResumableSampler, make_loader, set_epoch, split_batch, split_dataset
from .device import autocast, cpu_count, grad_scaler, one_opencv_thread, prepare_model
from .errors import EXIT_FAILED, ColourbatchError, one_line
from .evaluate import evaluate_model
from .model import DEFAULT_MODEL, MODELS, build_model, model_input
from .pipeline import open_device


class TrainError(ColourbatchError):
    """Training cannot start (exit 2): a bad resume file, too little data, unwritable outputs."""


class TrainFailed(TrainError):
    """Training started and then failed (exit 1): the loss diverged."""

    exit_code = EXIT_FAILED


# ---------------------------------------------------------------- the loop
def train(cfg: TrainConfig, on_event: Callable[[str, dict], None] | None = None) -> dict[str, Any]:
    """Train per `cfg`; returns the final validation metrics and file paths.

    `cfg.model` None means DEFAULT_MODEL, or on --resume the checkpoint's own model;
    `cfg.threads` None under torchrun shares this machine's cores among its local processes.
    """
    emit = on_event or (lambda kind, info: None)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    resume_blob = ckpt.read(cfg.resume) if cfg.resume else None  # read once, checked in _train
    if cfg.model is None:
        # Resuming continues the checkpoint's own model unless told otherwise.
        cfg = replace(cfg, model=resume_blob["model"] if resume_blob else DEFAULT_MODEL)
    if cfg.threads is None and world > 1:
        # torchrun's processes on one machine share its cores: don't oversubscribe them.
        local = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
        cfg = replace(cfg, threads=max(1, cpu_count() // max(1, local)))
    if cfg.model not in MODELS:
        raise TrainError(f"unknown model {cfg.model!r}; known: {', '.join(MODELS)}")
    device, dtype = open_device(cfg.device, cfg.precision, cfg.threads)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    main = rank == 0
    if not main:
        emit = lambda kind, info: None  # noqa: E731 - only rank 0 reports
    try:
        with one_opencv_thread():
            return _train(cfg, emit, device, dtype, rank, world, main, resume_blob)
    finally:
        if world > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _train(cfg, emit, device, dtype, rank, world, main, resume_blob):
    out = Path(cfg.out)
    ck_path = Path(cfg.checkpoint) if cfg.checkpoint else out.with_name(out.name + ".ckpt")
    for p in (out, ck_path):
        if p.is_dir():
            raise TrainError(f"{p}: is a folder; give a file name to write")
        if p.parent.exists() and not os.access(p.parent, os.W_OK):
            raise TrainError(f"{p.parent}: not writable")

    # Everything a file can get wrong (resume state, encoder weights) is refused before
    # the data is read: the model and its optimiser come first.
    torch.manual_seed(cfg.seed)
    notes: dict[str, Any] = {}
    if resume_blob is not None:
        _check_resume(cfg, resume_blob)
        net = ckpt.model_from_blob(resume_blob, cfg.resume).train()
        # Facts about how the run began stay true after a resume.
        notes.update({k: v for k, v in resume_blob["metadata"].items() if k == "encoder_init"})
    else:
        net = build_model(cfg.model)
        try:
            how = net.init_encoder(cfg.init_encoder, ckpt.read_tensors)
        except (ckpt.CheckpointError, ValueError) as exc:
            raise TrainError(f"cannot initialise the encoder: {one_line(exc)}") from None
        if how is not None:
            notes["encoder_init"] = how
        if cfg.encoder_lr == 0 and (how is None or how.startswith("random")):
            raise TrainError("--encoder-lr 0 freezes the pretrained encoder, but this one starts "
                             f"random ({how or 'the model has none'}); install or give ImageNet weights")
    net = prepare_model(net, device)
    lr = cfg.lr if cfg.lr is not None else MODELS[cfg.model].lr
    opt = net.configure_optimizers(lr, cfg.weight_decay, cfg.encoder_lr)
    # The moving average of the weights (when asked): what is validated and saved, while
    # the optimiser steps the raw network. Buffers are averaged too (BatchNorm statistics).
    ema = None
    if cfg.ema > 0:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
        ema = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True)
    if resume_blob is not None:
        ckpt.load_optimizer_state(opt, resume_blob, cfg.resume)
        if resume_blob["train"].get("world", 1) != world:
            raise TrainError(f"{cfg.resume}: was trained on {resume_blob['train']['world']} "
                             f"processes, not {world}")
        if ema is None and "ema" in resume_blob["train"]:
            raise TrainError(f"{cfg.resume}: was trained with --ema; resume it with the same decay")
        if ema is not None:
            if "ema" not in resume_blob["train"]:
                raise TrainError(f"{cfg.resume}: was trained without --ema; resume it without")
            try:
                ema.load_state_dict(resume_blob["train"]["ema"])
            except RuntimeError as exc:
                raise TrainError(f"{cfg.resume}: its weight average does not fit ({one_line(exc)})") from None

    train_set = split_dataset(cfg.data, "train", cfg.val_fraction, cfg.size, cfg.crops, cfg.seed,
                              augment=True, on_skip=lambda p, why: emit("skip", {"path": p, "reason": why}),
                              holdout=cfg.holdout, drawn=net.drawn)
    val_set = split_dataset(cfg.data, "val", cfg.val_fraction, colour.TILE, seed=cfg.seed,
                            holdout=cfg.holdout, drawn=net.drawn)
    global_batch = cfg.batch_size * world
    if len(train_set) < global_batch:
        # drop_last would yield no batch at all and the loop below would never end.
        raise TrainError(f"the training split has {len(train_set)} samples, fewer than one batch "
                         f"of {global_batch}; lower --batch-size or add data")
    if resume_blob is None:
        net.estimate_prior(train_set)
    loss_fn = net.make_loss(cfg.rebalance, cfg.sigma, cfg.reg_weight)
    model = net
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None)
    scaler = grad_scaler(device, dtype)
    if cfg.steps:
        total = int(cfg.steps)
    else:
        total = max(1, int(math.ceil((cfg.epochs or 1.0) * len(train_set) / global_batch)))
    step, seen, elapsed_before = 0, 0, 0.0
    if resume_blob is not None:
        st = resume_blob["train"]
        step, seen = st["step"], st["seen"]
        elapsed_before = float(st.get("seconds", 0.0))
        torch.set_rng_state(st["rng"])

    def lr_at(s: int) -> float:
        if s < cfg.warmup:
            return lr * (s + 1) / cfg.warmup
        frac = (s - cfg.warmup) / max(1, total - cfg.warmup)
        return lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))

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
        for batch in loader:
            x8, l8, ab8 = (t.to(device, non_blocking=True) for t in split_batch(batch))
            for g in opt.param_groups:
                g["lr"] = lr_at(step) * g.get("lr_scale", 1.0)
            with autocast(device, dtype):
                # Forward through the (possibly DDP) wrapper so gradients are synchronised.
                loss = loss_fn(model(model_input(x8)), l8, ab8, x8)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            if ema is not None:
                ema.update_parameters(net)
            loss_acc += loss.detach()
            acc_n += 1
            step += 1
            seen += global_batch
            # The clock is read on log steps only: under DDP the check is a collective (ranks'
            # clocks differ, and all must stop on the same step or the others hang) and a host
            # sync, which the loop allows itself only every log_every steps.
            over_time = False
            if cfg.max_minutes is not None and step % cfg.log_every == 0:
                over_time = (time.monotonic() - t0) / 60.0 >= cfg.max_minutes
                if world > 1:
                    flag = torch.tensor([float(over_time)], device=device)
                    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
                    over_time = bool(flag.item())
            last = step >= total or over_time
            if step % cfg.log_every == 0 or last:
                now = time.monotonic()
                mean_loss = float(loss_acc) / acc_n  # the one host sync, every log_every steps
                if not math.isfinite(mean_loss):
                    raise TrainFailed(f"loss became {mean_loss} at step {step}; lower --lr")
                emit("step", {"step": step, "total": total, "loss": mean_loss, "lr": lr_at(step - 1),
                              "images_per_s": (seen - last_log_seen) / max(now - last_log_t, 1e-9),
                              "elapsed": elapsed_before + now - t0})
                loss_acc.zero_()
                acc_n = 0
                last_log_t, last_log_seen = now, seen
            if main and (step % cfg.val_every == 0 or last):
                metrics = evaluate_model(ema.module if ema is not None else net, val_loader, device, dtype,
                                         max_images=None if last else cfg.val_images)["model"]
                emit("eval", {"step": step, **metrics})
            if main and (step % cfg.ckpt_every == 0 or last):
                _save(cfg, net, opt, step, seen, world, elapsed_before + time.monotonic() - t0,
                      metrics, out, ck_path, notes, len(train_set), len(val_set), ema)
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


def _save(cfg, net, opt, step, seen, world, seconds, metrics, out, ck_path, notes, n_train, n_val, ema=None):
    meta = {"colourbatch": __version__, "data": [str(p) for p in cfg.data], "steps": step,
            "images_seen": seen, "train_images": n_train, "val_images": n_val,
            "batch_size": cfg.batch_size * world, "seconds": round(seconds, 1),
            "val_metrics": {k: float(v) for k, v in metrics.items()}, **notes, **cfg.metadata,
            "train_config": {k: (list(v) if isinstance(v, tuple) else v)
                             for k, v in asdict(cfg).items() if k != "metadata"}}
    state = {"optimizer": opt.state_dict(), "step": step, "seen": seen, "world": world,
             "rng": torch.get_rng_state(), "seconds": seconds}
    if ema is not None:
        state["ema"] = ema.state_dict()
    ckpt.save(ck_path, net, meta, train_state=state)
    # The weights file holds the average: what was validated is what pages and video use.
    ckpt.save(out, ema.module if ema is not None else net, meta, half=True)


#: Loss and optimiser settings a resumed run keeps: changed, the run would not continue the same
#: training (and a changed default would change it silently), so a resume must repeat them.
RESUME_KEEPS = ("rebalance", "sigma", "reg_weight", "encoder_lr")


def _check_resume(cfg: TrainConfig, blob: dict[str, Any]) -> None:
    """The --resume file must be a training checkpoint of the model asked for, trained with the
    same loss and optimiser settings."""
    if "train" not in blob:
        raise TrainError(f"{cfg.resume}: holds weights only, no training state to resume "
                         f"(use the .ckpt file training wrote)")
    if blob["model"] != cfg.model:
        raise TrainError(f"{cfg.resume}: is a '{blob['model']}' checkpoint, not '{cfg.model}'")
    saved = blob.get("metadata", {}).get("train_config", {})
    for name in RESUME_KEEPS:
        if name in saved and saved[name] != getattr(cfg, name):
            raise TrainError(f"{cfg.resume}: was trained with {name} {saved[name]}, not "
                             f"{getattr(cfg, name)}; resume it with --{name.replace('_', '-')} {saved[name]}")
