"""Standard and adversarial training (PGD-AT, Madry et al. 2018; FGSM-RS, Wong et al. 2020).

``fit(model, x, y, cfg, device=..., out_dir=...)`` trains with SGD + Nesterov momentum (or Adam),
a per-iteration one-cycle / step / constant learning-rate schedule and optional label
smoothing; the data stays on the device (:class:`empirical.data.Loader`) with on-device
augmentation. Forward passes run in ``precision`` (:mod:`empirical.precision`; ``auto`` = bf16
autocast on CUDA, fp32 on CPU) with ``channels_last`` (default: on CUDA only), optionally
compiled; each of the three can be switched on for a CPU, so CI runs the CUDA code path.

Adversarial training replaces each batch by adversarial examples made against the current
model (in eval mode, so the attack does not disturb BatchNorm statistics): PGD-``adv_steps`` with
step ``adv_step_size`` (default 2.5 eps / steps) from a random start, or one FGSM step of 1.25 eps
from a random start (FGSM-RS). FGSM-RS can overfit catastrophically (robustness to PGD collapses
within an epoch, Wong et al. sec. 5); the guard measures PGD accuracy on a fixed probe of
training images after each epoch and, when it drops by more than ``co_tolerance`` below the best
so far, restores the best epoch's weights and stops (their early stopping).

Crash safety: with ``out_dir`` the state after every epoch (model, optimizer, scheduler, RNG,
history, guard state) is written atomically to ``latest.pt``; ``fit(..., resume=True)`` continues
from it, and because every random stream derives from (seed, epoch), an interrupted and resumed
run ends with exactly the weights of an uninterrupted one (on CPU). A non-finite loss stops
training with :class:`NonFiniteLossError` before that epoch is saved, so ``latest.pt`` keeps the
last good state: a state with a NaN/inf weight or optimiser entry is never written to
``latest.pt``, and one found there (a file damaged or written by other code) is refused on
resume, never called good. On completion ``model.pt`` + ``model.json`` are written by
:func:`empirical.checkpoint.save_checkpoint`.

Timing over runs: ``latest.pt`` carries the seconds spent training so far, summed over every run
that trained this model (each run's time from its start to its last epoch's checkpoint), so a
resumed run reports both its own figures (:attr:`TrainResult.epochs_trained`,
:attr:`TrainResult.wall_seconds`) and the whole training's (:attr:`TrainResult.train_seconds`,
never below the sum of the per-epoch ``seconds`` of the history); a rerun of a finished
training trains nothing and reports the original figures unchanged.

Distributed (``torchrun --nproc_per_node=N``, see :mod:`empirical.distributed`): every rank
builds the same seeded loader and so draws the same global batch of ``batch_size`` examples;
rank r trains on its contiguous slice of it inside DistributedDataParallel, with the loss scaled
so that DDP's gradient average equals the gradient of the mean loss over the whole global batch.
One step therefore equals the single-process step on that batch (up to float summation order),
for any number of ranks, as long as the model has no batch-coupled layers (BatchNorm statistics
are per rank, as usual under DDP). Adversarial examples are made per rank against the local
replica (identical weights), from random starts drawn per rank. Metrics are summed over ranks;
only rank 0 writes ``latest.pt`` and ``model.pt``, and every rank resumes from rank 0's
``latest.pt``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from empirical.attacks import pgd
from empirical.data import Augment, Loader, _mix_seed, check_images
from empirical.distributed import DistInfo, barrier, init_distributed, reduce_sums, shard_range
from empirical.precision import autocast, check_precision
from empirical.threat import METHODS, Attack, ThreatModel
from foundation import checks as C
from foundation.records import atomic_write_bytes, to_jsonable

SCHEDULES: tuple[str, ...] = ("onecycle", "step", "constant")
OPTIMIZERS: tuple[str, ...] = ("sgd", "adam")
ADV_METHODS: tuple[str, ...] = METHODS  # the training attacks: empirical.threat.METHODS
# TrainConfig fields that only change how fast (or in which float format) the same run computes,
# not which run it is: left out of TrainConfig.fingerprint and of the CLI's rerun check, so an
# interrupted run may resume with another of them (e.g. --compile, or bf16 on a GPU)
BOOKKEEPING_FIELDS: tuple[str, ...] = ("precision", "channels_last", "compile")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (validated on construction).

    Schedules (per iteration): ``onecycle`` = linear warm-up from 0 over ``warmup_frac`` of the
    iterations, then linear decay to 0; ``step`` = x``step_gamma`` at the ``step_milestones``
    fractions of training; ``constant``. ``adv`` None = standard training.

    Bookkeeping that does not define the run (:data:`BOOKKEEPING_FIELDS`: ``precision``,
    ``channels_last``, ``compile``) is left out of :meth:`fingerprint`, so a run may resume with
    another of them.
    """

    epochs: int
    batch_size: int
    lr: float
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "onecycle"
    label_smoothing: float = 0.0
    augment: Augment | None = None
    adv: ThreatModel | None = None
    adv_method: str = "pgd"
    adv_steps: int = 7
    adv_step_size: float | None = None
    optimizer: str = "sgd"
    seed: int = 0
    precision: str = "auto"
    channels_last: bool | None = None   # None = on CUDA only
    compile: bool = False
    warmup_frac: float = 0.2
    step_milestones: tuple[float, ...] = (0.5, 0.75)
    step_gamma: float = 0.1
    co_guard: bool = True
    co_tolerance: float = 0.2
    co_probe_size: int = 512
    co_probe_steps: int = 10

    def __post_init__(self) -> None:
        for n in ("epochs", "batch_size", "adv_steps", "co_probe_size", "co_probe_steps"):
            C.positive_int(n, getattr(self, n))
        C.positive_float("lr", self.lr)
        C.in_range("momentum", self.momentum, 0.0, 1.0, hi_open=True)
        for n in ("nesterov", "compile", "co_guard"):
            C.boolean(n, getattr(self, n))
        C.non_negative_float("weight_decay", self.weight_decay)
        C.one_of("schedule", self.schedule, SCHEDULES, what="a schedule")
        C.one_of("optimizer", self.optimizer, OPTIMIZERS, what="an optimizer")
        C.one_of("adv_method", self.adv_method, ADV_METHODS, what="an adversarial training method")
        C.in_range("label_smoothing", self.label_smoothing, 0.0, 1.0, hi_open=True)
        if self.augment is not None and not isinstance(self.augment, Augment):
            raise ValueError(f"augment={self.augment!r} must be an empirical.data.Augment or None")
        if self.adv is not None and not isinstance(self.adv, ThreatModel):
            raise ValueError(f"adv={self.adv!r} must be a ThreatModel (e.g. ThreatModel.parse('l2:0.5')) or None")
        C.optional_positive_float("adv_step_size", self.adv_step_size, none=" (None = 2.5*eps/steps)")
        C.seed("seed", self.seed)
        C.in_range("warmup_frac", self.warmup_frac, 0.0, 1.0, hi_open=True)
        if not isinstance(self.step_milestones, (tuple, list)) or any(
                not C.is_number(m) or not 0 < m < 1 for m in self.step_milestones):
            raise ValueError(f"step_milestones={self.step_milestones!r} must be fractions in (0, 1)")
        C.in_range("step_gamma", self.step_gamma, 0.0, 1.0, lo_open=True)
        check_precision(self.precision)
        C.optional_boolean("channels_last", self.channels_last, none=" (None = on CUDA only)")
        C.in_range("co_tolerance", self.co_tolerance, 0.0, 1.0, lo_open=True)
        object.__setattr__(self, "step_milestones", tuple(float(m) for m in self.step_milestones))

    @property
    def attack(self) -> Attack | None:
        """The training attack (:class:`empirical.threat.Attack`; None = standard training)."""
        if self.adv is None:
            return None
        if self.adv_method == "fgsm":
            return Attack.fgsm(self.adv.norm, self.adv.eps, self.adv_step_size)
        return Attack(self.adv.norm, self.adv.eps, steps=self.adv_steps, step_size=self.adv_step_size,
                      random_start=True)

    @property
    def attack_step_size(self) -> float | None:
        return self.attack.step if self.attack is not None else None

    def use_channels_last(self, device: Any) -> bool:
        return bool(self.channels_last) if self.channels_last is not None else torch.device(device).type == "cuda"

    def fingerprint(self) -> str:
        """Hash (16 hex digits) of the fields that define the run: every field except
        :data:`BOOKKEEPING_FIELDS` (precision, channels_last, compile), so ``latest.pt`` written
        under one of those resumes under another; any other changed field is another run."""
        d = {k: v for k, v in to_jsonable(self).items() if k not in BOOKKEEPING_FIELDS}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class TrainResult:
    """The trained model (eval mode), per-epoch history, timing, and why training stopped early.

    ``wall_seconds``: this :func:`fit` call, start to end; ``epochs_trained``: the epochs this call
    trained; ``resumed`` / ``resumed_from_epoch``: whether it continued ``latest.pt`` and after
    which epoch; ``train_seconds``: every run that trained this model, summed (each from its start
    to its last epoch's checkpoint; not below the sum of ``history[*]["seconds"]``)."""

    model: nn.Module
    history: list[dict[str, float]]
    wall_seconds: float
    stopped_early: str | None = None
    resumed_from_epoch: int = 0
    epochs_trained: int = 0
    train_seconds: float = 0.0
    resumed: bool = False


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN/inf loss; the message names the epoch and the last good checkpoint."""


def lr_factor(cfg: TrainConfig, it: int, total: int) -> float:
    """Learning-rate multiplier at iteration ``it`` of ``total`` for ``cfg.schedule``."""
    t = it / max(total, 1)
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "step":
        return cfg.step_gamma ** sum(t >= m for m in cfg.step_milestones)
    w = cfg.warmup_frac
    if w > 0 and t < w:
        return t / w
    return max(0.0, (1 - t) / (1 - w))


def _adv_batch(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, cfg: TrainConfig,
               gen: torch.Generator) -> torch.Tensor:
    attack = cfg.attack
    assert attack is not None
    was = model.training
    model.eval()
    try:
        return pgd(model, xb, yb, attack, use_best=False, generator=gen, precision=cfg.precision)  # FGSM-RS too
    finally:
        model.train(was)


def _probe_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig,
                    dev: torch.device) -> float:
    """PGD accuracy on the fixed catastrophic-overfitting probe (fixed random start)."""
    assert cfg.adv is not None
    gen = torch.Generator(device=dev)
    gen.manual_seed(_mix_seed(cfg.seed, 99))
    model.eval()
    probe = Attack(cfg.adv.norm, cfg.adv.eps, steps=cfg.co_probe_steps, random_start=True)
    xa = pgd(model, x, y, probe, generator=gen, precision=cfg.precision, batch_size=512)
    with torch.no_grad(), autocast(dev, cfg.precision):
        return float((model(xa).argmax(1) == y).float().mean())


def _state_to_cpu(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in sd.items()}


@dataclass
class _Run:
    """What the steps of one :func:`fit` call share: the model (and the compiled / DDP forms the
    training step runs), the optimizer and schedule, the loader, and the state ``latest.pt``
    holds (history, why training stopped, the overfitting guard's best epoch)."""

    cfg: TrainConfig
    dev: torch.device
    info: DistInfo
    model: nn.Module
    step_model: nn.Module                  # the model, compiled with cfg.compile; the attacks run on it
    ddp_model: nn.Module | None            # the DDP wrapper of step_model (None = single process)
    channels_last: bool
    loader: Loader
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    latest: Path | None                    # out_dir/latest.pt (None without out_dir)
    history: list[dict[str, float]] = field(default_factory=list)
    start_epoch: int = 0
    stopped: str | None = None
    co_best: dict[str, Any] = field(default_factory=lambda: {"acc": -1.0, "epoch": 0, "state": None})
    probe: tuple[torch.Tensor, torch.Tensor] | None = None   # the guard's fixed probe (None = no guard)
    t_start: float = 0.0                   # perf_counter at the start of this fit call
    seconds_before: float = 0.0            # training seconds of the earlier runs (from latest.pt)
    train_seconds: float = 0.0             # training seconds of every run, up to the last finished epoch
    saved_epoch: int | None = None         # the epoch latest.pt holds, as this call knows it (None = none good)
    resumed: bool = False
    epochs_trained: int = 0


def _check_inputs(model: nn.Module, x_train: torch.Tensor, y_train: torch.Tensor,
                  out_dir: str | os.PathLike | None) -> None:
    check_images(x_train, "x_train")
    if y_train.ndim != 1 or y_train.shape[0] != x_train.shape[0]:
        raise ValueError(f"y_train must have shape ({x_train.shape[0]},); got {tuple(y_train.shape)}")
    if x_train.shape[0] == 0:
        raise ValueError("x_train is empty")
    if out_dir is not None and not getattr(model, "arch_config", None):
        raise ValueError("model has no arch_config (build it with empirical.models.build_model), so its "
                         "checkpoint could not be rebuilt by load_model; pass out_dir=None or use build_model")


def _prepare_model(model: nn.Module, cfg: TrainConfig, dev: torch.device,
                   info: DistInfo) -> tuple[nn.Module, nn.Module | None, bool]:
    """The model on ``dev`` (channels_last if asked), its compiled form and its DDP wrapper."""
    channels_last = cfg.use_channels_last(dev)
    model.to(dev)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    step_model = torch.compile(model) if cfg.compile else model
    ddp_model = None  # the DDP wrapper used for the training forward/backward; attacks use the replica
    if info.is_distributed:
        from torch.nn.parallel import DistributedDataParallel

        ddp_model = DistributedDataParallel(step_model, device_ids=[dev.index] if dev.type == "cuda" else None,
                                            broadcast_buffers=False)
    return step_model, ddp_model, channels_last


def _build_optimizer(model: nn.Module, cfg: TrainConfig,
                     total: int) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """SGD (Nesterov) or Adam over the trainable parameters, with the per-iteration schedule."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                                                     nesterov=cfg.nesterov and cfg.momentum > 0,
                                                     weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda it: lr_factor(cfg, it, total))


def _non_finite(tree: Any, prefix: str = "") -> list[str]:
    """The names of the floating-point tensors holding a NaN or inf anywhere in ``tree`` (a state
    dict, an optimiser state: nested dicts, lists and tensors)."""
    if isinstance(tree, torch.Tensor):
        return [prefix or "tensor"] if tree.is_floating_point() and not bool(torch.isfinite(tree).all()) else []
    if isinstance(tree, dict):
        return [n for k, v in tree.items() for n in _non_finite(v, f"{prefix}.{k}" if prefix else str(k))]
    if isinstance(tree, (list, tuple)):
        return [n for i, v in enumerate(tree) for n in _non_finite(v, f"{prefix}[{i}]")]
    return []


def _names(bad: list[str]) -> str:
    return ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")


def _resume_from(run: _Run, latest: Path) -> None:
    """Continue from ``latest.pt``: refused unless it was written by a run with this fingerprint
    and every weight and optimiser entry in it is finite."""
    from empirical.checkpoint import load_torch_file

    cfg = run.cfg
    ck = load_torch_file(latest, what="training state",   # a damaged file is never silently reused
                         advice="delete it or pass resume=False / --no-resume")
    if ck.get("fingerprint") != cfg.fingerprint():
        raise ValueError(f"{latest} was written by a different training config (fingerprint "
                         f"{ck.get('fingerprint')} vs {cfg.fingerprint()}); use another --out-dir or "
                         "resume=False / --no-resume to start over")
    bad = (_non_finite(ck.get("model"), "model") + _non_finite(ck.get("optimizer"), "optimizer")
           + _non_finite(ck.get("co_best_state"), "co_best_state"))
    if bad:
        raise ValueError(f"{latest} (epoch {ck.get('epoch')}) holds non-finite values ({_names(bad)}), so it is not "
                         "a good checkpoint to resume from; delete it or pass resume=False / --no-resume to start over")
    run.model.load_state_dict(ck["model"])
    run.opt.load_state_dict(ck["optimizer"])
    run.sched.load_state_dict(ck["scheduler"])
    torch.set_rng_state(ck["torch_rng"])
    run.history = list(ck["history"])
    run.start_epoch = int(ck["epoch"])
    run.stopped = ck.get("stopped_early") or None
    run.co_best = {"acc": float(ck["co_best_acc"]), "epoch": int(ck["co_best_epoch"]),
                   "state": ck.get("co_best_state")}
    # training seconds of the runs before (files written before they were kept: the epochs' own)
    run.seconds_before = float(ck.get("train_seconds", sum(float(h.get("seconds", 0.0)) for h in run.history)))
    run.train_seconds = run.seconds_before
    run.saved_epoch = run.start_epoch
    run.resumed = True


def _save_latest(run: _Run, epoch: int) -> None:
    """Rank 0 writes the state after ``epoch`` atomically to ``latest.pt`` (nothing without out_dir);
    a state with a NaN/inf weight or optimiser entry is refused (:class:`NonFiniteLossError`), so
    the file always holds the last good state."""
    if run.latest is None or not run.info.is_main:
        return
    co_best = run.co_best
    state = {"fingerprint": run.cfg.fingerprint(), "epoch": epoch, "model": _state_to_cpu(run.model.state_dict()),
             "optimizer": run.opt.state_dict(), "scheduler": run.sched.state_dict(),
             "torch_rng": torch.get_rng_state(), "history": run.history, "stopped_early": run.stopped or "",
             "co_best_acc": float(co_best["acc"]), "co_best_epoch": int(co_best["epoch"]),
             "train_seconds": float(run.train_seconds)}
    if co_best["state"] is not None:
        state["co_best_state"] = co_best["state"]
    bad = _non_finite(state["model"], "model") + _non_finite(state["optimizer"], "optimizer")
    if bad:
        raise NonFiniteLossError(f"non-finite values ({_names(bad)}) after epoch {epoch}; training stopped and this "
                                 f"epoch was not saved. Last good checkpoint: {_last_good(run)}. Lower the learning "
                                 "rate or check the data.")
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(run.latest, buf.getvalue())


def _last_good(run: _Run) -> str:
    """``latest.pt`` and the epoch it holds, as far as this call wrote or checked it."""
    if run.latest is not None and run.saved_epoch is not None and run.latest.is_file():
        return f"{run.latest} (epoch {run.saved_epoch})"
    return "none (no out_dir or no completed epoch)"


def _train_step(run: _Run, xb: torch.Tensor, yb: torch.Tensor,
                gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One optimizer step on this rank's slice of the global batch: (loss, logits, labels of the slice)."""
    cfg, info = run.cfg, run.info
    full = yb.shape[0]
    if info.is_distributed:
        lo, hi = shard_range(full, info.rank, info.world_size)
        xb, yb = xb[lo:hi], yb[lo:hi]
    if cfg.adv is not None:
        xb = _adv_batch(run.step_model, xb, yb, cfg, gen)
    if run.channels_last:
        xb = xb.contiguous(memory_format=torch.channels_last)
    with autocast(run.dev, cfg.precision):
        logits = (run.ddp_model or run.step_model)(xb)
    loss = F.cross_entropy(logits.float(), yb, label_smoothing=cfg.label_smoothing)
    run.opt.zero_grad(set_to_none=True)
    if run.ddp_model is not None:
        # DDP averages gradients over ranks; weight each rank's mean by its share of the
        # global batch so that the result is the gradient of the global-batch mean loss.
        (loss * (yb.shape[0] * info.world_size / full)).backward()
    else:
        loss.backward()
    run.opt.step()
    run.sched.step()
    return loss, logits, yb


def _train_epoch(run: _Run, epoch: int, bar: Any) -> dict[str, float]:
    """One epoch's batches (the loader and the attack's starts seeded by (seed, epoch)); the loss,
    correct and seen counts summed over ranks."""
    cfg, dev = run.cfg, run.dev
    run.loader.set_epoch(epoch)
    gen = torch.Generator(device=dev)
    gen.manual_seed(_mix_seed(cfg.seed, epoch, 2))
    run.model.train()
    loss_sum = torch.zeros((), device=dev)
    correct = torch.zeros((), device=dev, dtype=torch.long)
    seen = 0
    batches = run.loader
    if bar is not None:
        batches = bar(run.loader, desc=f"epoch {epoch}/{cfg.epochs}", leave=False, total=len(run.loader))
    for xb, yb in batches:
        loss, logits, yb = _train_step(run, xb, yb, gen)
        loss_sum += loss.detach() * yb.shape[0]
        correct += (logits.detach().argmax(1) == yb).sum()
        seen += yb.shape[0]
    return reduce_sums({"loss": float(loss_sum), "correct": float(correct), "seen": float(seen)}, run.info)


def _check_finite(run: _Run, epoch: int, mean_loss: float, lr: float) -> None:
    """Raise :class:`NonFiniteLossError` (naming the last good checkpoint) on a NaN/inf loss or weight."""
    bad_params = [k for k, v in run.model.state_dict().items()
                  if v.is_floating_point() and not torch.isfinite(v).all()]
    if math.isfinite(mean_loss) and not bad_params:
        return
    where = _last_good(run)
    what = f"training loss ({mean_loss})" if not math.isfinite(mean_loss) else \
        f"weights ({', '.join(bad_params[:3])})"
    raise NonFiniteLossError(
        f"non-finite {what} in epoch {epoch} (lr {lr:.4g}); training stopped and this epoch was not "
        f"saved. Last good checkpoint: {where}. Lower the learning rate or check the data.")


def _epoch_row(run: _Run, epoch: int, totals: dict[str, float], mean_loss: float,
               eval_data: tuple[torch.Tensor, torch.Tensor] | None) -> dict[str, float]:
    """The epoch's history line: lr at its end, train loss and accuracy, clean test accuracy."""
    row: dict[str, float] = {"epoch": epoch, "lr": run.opt.param_groups[0]["lr"], "train_loss": mean_loss,
                             "train_acc": totals["correct"] / max(totals["seen"], 1)}
    if eval_data is not None:
        from empirical.evaluate import accuracy

        row["test_acc"] = accuracy(run.model, eval_data[0], eval_data[1], device=run.dev)
    return row


def _guard_step(run: _Run, epoch: int, row: dict[str, float]) -> None:
    """The catastrophic-overfitting guard: probe PGD accuracy into ``row``; on a drop of more than
    ``co_tolerance`` below the best epoch restore that epoch's weights and stop, else keep the best."""
    assert run.probe is not None
    cfg, best = run.cfg, run.co_best
    acc = _probe_accuracy(run.model, run.probe[0], run.probe[1], cfg, run.dev)
    row["probe_pgd_acc"] = acc
    if acc < best["acc"] - cfg.co_tolerance and best["state"] is not None:
        run.stopped = (f"catastrophic overfitting guard: probe PGD-{cfg.co_probe_steps} accuracy fell to "
                       f"{acc:.3f} in epoch {epoch} from {best['acc']:.3f} (epoch {best['epoch']}), more "
                       f"than co_tolerance={cfg.co_tolerance}; restored the epoch-{best['epoch']} weights")
        run.model.load_state_dict(best["state"])
        row["co_triggered"] = 1.0
    elif acc >= best["acc"]:
        run.co_best = {"acc": acc, "epoch": epoch, "state": _state_to_cpu(run.model.state_dict())}


def _table_columns(has_test: bool, has_probe: bool) -> list[tuple[str, str, int, str]]:
    """(title, history key, width, format) of the per-epoch table: a column only where it has
    values (no test data: no test column; no catastrophic-overfitting probe: no probe column)."""
    cols = [("epoch", "epoch", 5, "d"), ("lr", "lr", 9, ".4g"), ("loss", "train_loss", 8, ".4f"),
            ("train", "train_acc", 7, ".4f")]
    if has_test:
        cols.append(("test", "test_acc", 7, ".4f"))
    if has_probe:
        cols.append(("probe", "probe_pgd_acc", 7, ".4f"))
    return [*cols, ("sec", "seconds", 7, ".2f")]


def _table_header(cols: list[tuple[str, str, int, str]]) -> str:
    return " ".join(f"{title:>{width}}" for title, _, width, _ in cols)


def _table_line(row: dict[str, float], cols: list[tuple[str, str, int, str]]) -> str:
    return " ".join(f"{row[key]:>{width}{spec}}" for _, key, width, spec in cols)


def _run_epoch(run: _Run, epoch: int, bar: Any, eval_data: tuple[torch.Tensor, torch.Tensor] | None,
               on_epoch_end: Callable[[int, nn.Module], None] | None) -> None:
    """Train one epoch, check it, add its history line (and table row), then checkpoint it."""
    t0 = time.perf_counter()
    lr_start = run.opt.param_groups[0]["lr"]
    totals = _train_epoch(run, epoch, bar)
    mean_loss = totals["loss"] / max(totals["seen"], 1)
    if on_epoch_end is not None:
        on_epoch_end(epoch, run.model)
    _check_finite(run, epoch, mean_loss, lr_start)
    row = _epoch_row(run, epoch, totals, mean_loss, eval_data)
    if run.probe is not None:
        _guard_step(run, epoch, row)
    now = time.perf_counter()
    row["seconds"] = now - t0
    run.history.append(row)
    run.epochs_trained += 1
    run.train_seconds = run.seconds_before + (now - run.t_start)
    if bar is not None:
        bar.write(_table_line(row, _table_columns(eval_data is not None, run.probe is not None)))
        if run.stopped:
            bar.write(run.stopped)
    _save_latest(run, epoch)
    if run.latest is not None:
        run.saved_epoch = epoch           # on every rank: rank 0 wrote it (or raised)
    barrier(run.info)


def _save_final_checkpoint(run: _Run, out: Path, dataset: str | None,
                           checkpoint_extra: dict[str, Any] | None) -> None:
    """``model.pt`` + ``model.json`` (:func:`empirical.checkpoint.save_checkpoint`) of the trained model."""
    from empirical.checkpoint import save_checkpoint

    cfg, history, ac = run.cfg, run.history, run.model.arch_config
    save_checkpoint(run.model, out / "model.pt", arch=ac["arch"], dataset=dataset or "unknown",
                    num_classes=ac["num_classes"], in_channels=ac["in_channels"], image_size=ac["image_size"],
                    mean=ac["mean"], std=ac["std"],
                    extra={"train_config": cfg, "epochs_completed": len(history), "seed": cfg.seed,
                           "threat_model": cfg.adv, "stopped_early": run.stopped,
                           "final": history[-1] if history else {}, **dict(checkpoint_extra or {})})


def fit(model: nn.Module, x_train: torch.Tensor, y_train: torch.Tensor, cfg: TrainConfig, *, device: Any,
        out_dir: str | os.PathLike | None = None, eval_data: tuple[torch.Tensor, torch.Tensor] | None = None,
        resume: bool = True, progress: bool = True, dataset: str | None = None,
        on_epoch_end: Callable[[int, nn.Module], None] | None = None,
        checkpoint_extra: dict[str, Any] | None = None, dist_info: DistInfo | None = None,
        on_start: Callable[[int], None] | None = None) -> TrainResult:
    """Train ``model`` on (x_train, y_train) with ``cfg``; see the module docstring.

    ``eval_data`` = (x_test, y_test) adds clean test accuracy to each epoch's history line.
    ``on_epoch_end(epoch, model)`` runs after each epoch's updates, before the epoch is
    checkpointed (used by tests to interrupt a run); ``checkpoint_extra`` is merged into the
    ``model.json`` sidecar (e.g. the data root and data seed). ``on_start(first_epoch)`` runs
    once the inputs and a resumed ``latest.pt`` have been checked, before the first epoch (the CLI
    writes its ``resolved_config.json`` there, so a refused rerun leaves it untouched). Returns a
    :class:`TrainResult`. ``dist_info`` defaults to the torchrun environment (single process when
    not launched by torchrun); under several ranks each global batch is split across them (module
    docstring).
    """
    t_start = time.perf_counter()
    _check_inputs(model, x_train, y_train, out_dir)
    dev = torch.device(device)
    info = dist_info if dist_info is not None else init_distributed(dev)
    if info.is_distributed and cfg.batch_size < info.world_size:
        raise ValueError(f"batch_size={cfg.batch_size} must be at least the world size {info.world_size} "
                         "(each rank trains on a slice of every global batch)")
    step_model, ddp_model, channels_last = _prepare_model(model, cfg, dev, info)
    y_train = y_train.to(torch.long)
    n = x_train.shape[0]
    loader = Loader(x_train, y_train, batch_size=cfg.batch_size, shuffle=True, device=dev, augment=cfg.augment,
                    seed=cfg.seed, drop_last=n > cfg.batch_size)
    opt, sched = _build_optimizer(model, cfg, cfg.epochs * len(loader))
    out = Path(out_dir) if out_dir is not None else None
    run = _Run(cfg=cfg, dev=dev, info=info, model=model, step_model=step_model, ddp_model=ddp_model,
               channels_last=channels_last, loader=loader, opt=opt, sched=sched,
               latest=out / "latest.pt" if out is not None else None, t_start=t_start)
    if run.latest is not None and run.latest.is_file() and resume:
        _resume_from(run, run.latest)
    resumed_from = run.start_epoch
    if on_start is not None:
        on_start(run.start_epoch)
    if cfg.adv is not None and cfg.adv_method == "fgsm" and cfg.co_guard:
        m = min(cfg.co_probe_size, n)
        run.probe = (x_train[:m].to(dev), y_train[:m].to(dev))

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm
        tqdm.write(_table_header(_table_columns(eval_data is not None, run.probe is not None)))
    for epoch in range(run.start_epoch + 1, cfg.epochs + 1):
        if run.stopped:
            break
        _run_epoch(run, epoch, bar, eval_data, on_epoch_end)

    model.eval()
    wall = time.perf_counter() - t_start
    if out is not None and info.is_main:
        _save_final_checkpoint(run, out, dataset, checkpoint_extra)
    return TrainResult(model=model, history=run.history, wall_seconds=wall, stopped_early=run.stopped,
                       resumed_from_epoch=resumed_from, epochs_trained=run.epochs_trained,
                       train_seconds=run.train_seconds, resumed=run.resumed)


def config_from_dict(d: dict[str, Any]) -> TrainConfig:
    """Rebuild a TrainConfig from its JSON form (``to_jsonable(cfg)``); unknown keys are rejected."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    d = dict(d)
    if "bf16" in d and "precision" not in d:     # records written before `precision` replaced `bf16`
        d["precision"] = "auto" if d.pop("bf16") else "fp32"
    bad = sorted(set(d) - names)
    if bad:
        raise ValueError(f"unknown TrainConfig key(s) {', '.join(bad)}; valid keys: {', '.join(sorted(names))}")
    d = dict(d)
    if d.get("augment") is not None and not isinstance(d["augment"], Augment):
        d["augment"] = Augment(**d["augment"])
    if d.get("adv") is not None and not isinstance(d["adv"], ThreatModel):
        d["adv"] = ThreatModel(**d["adv"])
    if "step_milestones" in d:
        d["step_milestones"] = tuple(d["step_milestones"])
    return TrainConfig(**d)


__all__ = ["ADV_METHODS", "BOOKKEEPING_FIELDS", "OPTIMIZERS", "SCHEDULES", "NonFiniteLossError", "TrainConfig",
           "TrainResult", "config_from_dict", "fit", "lr_factor"]
