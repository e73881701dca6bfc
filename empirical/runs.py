"""The runs behind ``robust-features train``, ``eval`` and ``attack``: one function each.

Each takes the command's resolved options (:mod:`empirical.options`; any object with those
fields), does the work, writes its JSON record (``train.json`` / ``eval.json`` / ``attack.json``)
through :func:`foundation.records.write_record` and returns it; the command line
(:mod:`robust_features.cli_core`) only parses, calls one of these and prints from the record.

* :func:`run_train` - standard or adversarial training of one model (resumable, DDP under
  ``torchrun``), then its clean and PGD robust accuracy;
* :func:`run_eval` - clean and PGD robust accuracy of a checkpoint, or (``attack``/``suite``
  options) its worst case per threat model through :func:`empirical.worst_case.worst_case`, the
  same function ``reproduce`` uses for Figure 2's worst-case column;
* :func:`run_attack` - PGD adversarial examples of a checkpoint (untargeted, or toward
  :func:`empirical.threat.next_label` / a random other class), saved beside the record.

What each writes (:data:`TRAIN_FILES`, :data:`ATTACK_FILES`, :func:`eval_record_path`) never
replaces what it reads (the checkpoint and its sidecar): :func:`check_outputs_apart` refuses it
before any work (the command line adds its ``--config`` file to the inputs).
"""

from __future__ import annotations

import contextlib
import io
import sys
import json
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from empirical.options import (AttackOptions, EvalOptions, TrainOptions, parse_eps_list, parse_threats, train_presets,
                               with_presets)


# the files each run writes into its folder (eval writes one record: eval_record_path)
TRAIN_FILES: tuple[str, ...] = ("latest.pt", "model.pt", "model.json", "train.json", "resolved_config.json")
ATTACK_FILES: tuple[str, ...] = ("adversarial.pt", "attack.json")


def eval_record_path(checkpoint: str | Path, out: str | Path | None) -> Path:
    """Where ``eval`` writes its record: ``out``, else ``eval.json`` beside the checkpoint."""
    return Path(out) if out is not None else Path(checkpoint).with_name("eval.json")


def checkpoint_inputs(checkpoint: str | Path) -> list[tuple[str, Path]]:
    """The files ``eval`` / ``attack`` read: the checkpoint and its JSON sidecar."""
    from empirical.checkpoint import sidecar_path

    return [("the checkpoint", Path(checkpoint)), ("the checkpoint's sidecar", sidecar_path(checkpoint))]


def eval_outputs(checkpoint: str | Path, out: str | Path | None) -> list[tuple[str, Path]]:
    """(how the command line names it, path) of the record ``eval`` writes."""
    path = eval_record_path(checkpoint, out)
    return [(f"--out {out}" if out is not None else f"the default --out {path} (eval.json beside the checkpoint)",
             path)]


def folder_outputs(out_dir: str | Path, names: tuple[str, ...]) -> list[tuple[str, Path]]:
    """(how the command line names it, path) of the files ``names`` a run writes into ``--out-dir``."""
    return [(f"{name} in --out-dir {out_dir}", Path(out_dir) / name) for name in names]


def check_outputs_apart(command: str, flag: str, writes: list[tuple[str, Path]],
                        reads: list[tuple[str, Path]]) -> None:
    """Refuse (``ValueError``, one line naming both and ``flag``) a write that would replace a read."""
    from foundation.runtime import check_apart

    check_apart(writes, reads, command=command, flag=flag)


def device_name(dev: Any) -> str:
    """``cpu``, or ``cuda:0 (NVIDIA H100 ...)``: the device as records name it."""
    import torch

    if dev.type == "cuda":
        return f"{dev} ({torch.cuda.get_device_name(dev)})"
    return str(dev)


def _default(value: Any, default: Any) -> Any:
    """``default`` only when the option is absent (None): ``0``, ``""`` and ``False`` are values."""
    return default if value is None else value


def check_rerun(out_dir: Path, resolved: dict[str, Any], *, resume: bool) -> None:
    """Refuse to resume in ``out_dir`` a run with other settings: the data, its subset, the
    architecture or the training config (bookkeeping such as precision aside) of the stored
    ``resolved_config.json`` differ from this command's. Changed evaluation options are fine
    (they only change the record). Nothing to refuse with ``--no-resume`` or without ``latest.pt``."""
    from empirical.train import BOOKKEEPING_FIELDS as _BOOKKEEPING_KEYS   # may change on a resume
    from foundation.records import to_jsonable

    old_path = out_dir / "resolved_config.json"
    if not resume or not (out_dir / "latest.pt").is_file() or not old_path.is_file():
        return
    try:
        old = json.loads(old_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return                                   # fit's checkpoint fingerprint check still applies
    new = to_jsonable(resolved)
    keys = ["data", "data_seed", "n_train", "arch"]
    if old.get("n_train") is not None or new.get("n_train") is not None:
        keys.append("subset_seed")               # it draws the training subset
    diffs = [f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]
    old_tc, new_tc = old.get("train_config") or {}, new.get("train_config") or {}
    diffs += [f"{k} {old_tc.get(k)!r} -> {new_tc.get(k)!r}" for k in new_tc
              if k not in _BOOKKEEPING_KEYS and old_tc.get(k) != new_tc.get(k)]
    if diffs:
        raise ValueError(f"{out_dir} holds a run with other settings ({'; '.join(diffs)}); use another --out-dir, "
                         "or --no-resume to start it over")


# ---------------------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------------------
@dataclass
class _TrainRun:
    """What the steps of `train` share (filled in step by step)."""

    o: TrainOptions                  # the presets applied once the data is loaded
    out_dir: Path
    adv: Any                         # the --adv ThreatModel, None = standard training
    arch: str
    dev: Any = None
    info: Any = None                 # empirical.distributed's DistInfo
    data: Any = None
    train_sub: Any = None
    x_train: Any = None
    y_train: Any = None
    cfg: Any = None                  # empirical.train.TrainConfig
    attacks: list[Any] = field(default_factory=list)
    resolved: dict[str, Any] = field(default_factory=dict)


def _load_train_data(run: _TrainRun) -> None:
    """Step 2: the data (rank 0 downloads once), the training subset, and the presets for this
    dataset and its image size filling the options still absent."""
    from empirical.data import load_dataset, stratified_subset

    o, info = run.o, run.info
    if info.is_distributed and info.is_main and o.download:
        load_dataset(o.data, root=o.data_root, download=True, seed=o.data_seed)
    if info.is_distributed:
        import torch.distributed as tdist

        tdist.barrier()  # rank 0 downloads once; the others read what it fetched
    d = load_dataset(o.data, root=o.data_root, download=o.download and info.is_main, seed=o.data_seed)
    run.train_sub = stratified_subset(d.x_train, d.y_train, o.n_train, seed=o.subset_seed, name="n_train")
    run.x_train, run.y_train = d.x_train[run.train_sub.indices], d.y_train[run.train_sub.indices]
    run.data = d
    # an absent option takes the preset's value; an explicit 0 is refused (TrainOptions, TrainConfig), never replaced
    run.o = with_presets(o, train_presets(o.data, d.image_size))


def _train_plan(run: _TrainRun) -> None:
    """Step 3: the TrainConfig, the evaluation attacks and the resolved config (the same on every
    rank; a rerun with other settings in the folder is refused before anything is written)."""
    from empirical.data import Augment
    from empirical.distributed import check_same_config
    from empirical.threat import Attack
    from empirical.train import TrainConfig

    o, adv, info = run.o, run.adv, run.info
    crop, flip = o.crop_padding, o.flip
    run.cfg = cfg = TrainConfig(
        epochs=o.epochs, batch_size=o.batch_size, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay,
        schedule=o.schedule, label_smoothing=o.label_smoothing,
        augment=Augment(crop_padding=crop, flip=flip) if (crop or flip) else None, adv=adv,
        adv_method=o.adv_method, adv_steps=o.adv_steps, adv_step_size=o.adv_step_size,
        optimizer=o.optimizer, seed=o.seed, precision=o.precision, channels_last=o.channels_last,
        compile=o.compile,
    )
    eval_norm = _default(o.eval_norm, adv.norm if adv else "l2")
    eval_eps = parse_eps_list(o.eval_eps) if o.eval_eps is not None else [adv.eps if adv else 0.25]
    run.attacks = [Attack(eval_norm, e, steps=o.eval_steps, restarts=o.eval_restarts,
                              random_start=o.eval_restarts > 1) for e in eval_eps]
    resolved = {**{f.name: getattr(o, f.name) for f in fields(o)}, "arch": run.arch, "epochs": cfg.epochs,
                "batch_size": cfg.batch_size, "lr": cfg.lr, "crop_padding": crop, "flip": flip,
                "eval_norm": eval_norm, "eval_eps": eval_eps, "device": str(run.dev), "out_dir": str(run.out_dir),
                "train_config": cfg}
    # every rank must run the same command (the device differs per rank, so it is left out)
    check_same_config({k: v for k, v in resolved.items() if k != "device"}, info)
    if info.is_distributed:
        resolved["world_size"] = info.world_size
    run.resolved = resolved
    check_rerun(run.out_dir, resolved, resume=o.resume)


def _fit(run: _TrainRun) -> Any:
    """Step 4: build the model and train it (resuming from latest.pt); a non-finite loss raises
    :class:`empirical.train.NonFiniteLossError`."""
    import torch

    from empirical.models import build_model
    from empirical.train import NonFiniteLossError, fit
    from foundation.records import atomic_write_json

    o, d, info, cfg, adv = run.o, run.data, run.info, run.cfg, run.adv

    def write_resolved(first_epoch: int) -> None:    # called by fit once latest.pt is checked
        if info.is_main:
            atomic_write_json(run.out_dir / "resolved_config.json", run.resolved)

    torch.manual_seed(o.seed)
    model = build_model(run.arch, num_classes=d.num_classes, in_channels=d.in_channels, image_size=d.image_size,
                        mean=d.mean, std=d.std)
    if o.progress and info.is_main:
        kind = adv.describe() + " " + cfg.adv_method.upper() + "-AT" if adv else "standard"
        print(f"train {run.arch} on {d.describe()} | {kind} | {cfg.epochs} epochs, batch {cfg.batch_size}, "
              f"lr {cfg.lr} ({cfg.schedule}) | device {device_name(run.dev)}")
    try:
        return fit(model, run.x_train, run.y_train, cfg, device=run.dev, out_dir=run.out_dir,
                   eval_data=(d.x_test, d.y_test), resume=o.resume, progress=o.progress and info.is_main,
                   dataset=d.name, checkpoint_extra={"data_root": o.data_root, "data_seed": o.data_seed,
                                                     "world_size": info.world_size},
                   dist_info=info, on_start=write_resolved)
    except NonFiniteLossError:
        raise


def train_timing(res: Any, n_images: int) -> dict[str, Any]:
    """The timing metrics of ``train.json`` from a :class:`empirical.train.TrainResult` on
    ``n_images`` training images, one meaning each:

    * ``*_all_runs`` (and, for the readers of earlier records, ``train_seconds`` /
      ``train_images_per_second``, the same numbers): the whole training of this model, summed
      over every run that trained it (each from its start to its last epoch's checkpoint; never
      below the sum of the history's per-epoch ``seconds``); ``epochs_completed`` epochs of it;
    * ``*_this_run``: this command alone: the epochs it trained, the seconds it spent in training
      (loading a finished run included) and its images/s (epochs trained here x images / seconds
      here; None when it trained no epoch);
    * ``resumed`` / ``resumed_from_epoch``: whether it continued ``latest.pt``, after which epoch.

    A rerun of a finished training trains nothing: its ``*_all_runs`` figures are the original ones."""
    epochs, seconds = len(res.history), float(res.train_seconds)
    all_rate = epochs * n_images / seconds if epochs and seconds > 0 else None
    here, here_s = int(res.epochs_trained), float(res.wall_seconds)
    return {"epochs_completed": epochs, "train_seconds": seconds, "train_images_per_second": all_rate,
            "train_seconds_all_runs": seconds, "train_images_per_second_all_runs": all_rate,
            "epochs_trained_this_run": here, "train_seconds_this_run": here_s,
            "train_images_per_second_this_run": here * n_images / max(here_s, 1e-9) if here else None,
            "resumed": bool(res.resumed), "resumed_from_epoch": int(res.resumed_from_epoch)}


def describe_training_runs(res: Any, *, cfg_epochs: int) -> str:
    """One sentence on how this command's run relates to the training (fresh, resumed, a rerun)."""
    if not res.resumed:
        return f"trained from scratch: {res.epochs_trained} epoch(s) in this run"
    if res.epochs_trained == 0:
        return (f"rerun of a finished training (latest.pt at epoch {res.resumed_from_epoch} of {cfg_epochs}): "
                "nothing was trained; the *_all_runs figures and the history are the original training's, "
                "the *_this_run figures this rerun's")
    return (f"resumed after epoch {res.resumed_from_epoch}: {res.epochs_trained} epoch(s) trained in this run; "
            "*_all_runs sums every run that trained this model")


def _write_train_record(run: _TrainRun, res: Any, started_at: str, t0: float) -> dict[str, Any]:
    """Step 5 (rank 0): clean accuracy on the whole test set, robust accuracy on its sample, the record."""
    from empirical.data import stratified_subset
    from empirical.evaluate import accuracy, evaluate
    from foundation.records import file_sha256, write_record

    o, d, out_dir = run.o, run.data, run.out_dir
    eval_sub = stratified_subset(d.x_test, d.y_test, o.n_eval, seed=o.subset_seed, name="n_eval")
    n = eval_sub.n
    ev = evaluate(res.model, d.x_test[eval_sub.indices], d.y_test[eval_sub.indices], attacks=run.attacks,
                  device=run.dev, seed=o.seed)
    clean_all = accuracy(res.model, d.x_test, d.y_test, device=run.dev)
    metrics = {"clean_accuracy": clean_all, "robust_accuracy": ev["robust"], "n_robust_eval": n,
               "n_test": int(d.x_test.shape[0]),
               "final_train_loss": res.history[-1]["train_loss"] if res.history else None,
               **train_timing(res, int(run.x_train.shape[0]))}
    return write_record(out_dir / "train.json", experiment="empirical.train", config=run.resolved, metrics=metrics,
                        seeds={"seed": o.seed, "data_seed": o.data_seed}, device=device_name(run.dev),
                        started_at=started_at, start_time=t0,
                        extra={"attacks": ev["attacks"], "history": res.history, "stopped_early": res.stopped_early,
                               "training_runs": describe_training_runs(res, cfg_epochs=run.cfg.epochs),
                               "data": d.describe(),
                               "subsets": {"train": run.train_sub.describe(), "eval": eval_sub.describe()},
                               "checkpoint": {"path": "model.pt", "sha256": file_sha256(out_dir / "model.pt")}})


def run_train(o: TrainOptions, out_dir: str | Path, *, started_at: str, start_time: float) -> dict[str, Any] | None:
    """Train one model with options ``o`` into ``out_dir`` (``latest.pt`` while training, then
    ``model.pt`` + ``model.json``, ``resolved_config.json``), resuming a run with the same settings;
    evaluate it and write ``train.json``. Returns the record on rank 0 (None on the other ranks of
    a ``torchrun``). A non-finite loss raises :class:`empirical.train.NonFiniteLossError` after
    the last good checkpoint was kept."""
    from empirical.devices import resolve_device
    from empirical.distributed import init_distributed, local_device, shutdown
    from empirical.models import canonical_arch, default_arch
    from empirical.threat import ThreatModel
    from foundation.locks import rank0_lock

    adv = ThreatModel.parse(o.adv) if o.adv is not None else None
    arch = canonical_arch(o.arch if o.arch is not None else default_arch(o.data))
    run = _TrainRun(o=o, out_dir=Path(out_dir), adv=adv, arch=arch)
    dev = resolve_device(o.device)
    run.info = init_distributed(dev)  # single process unless launched by torchrun
    # the process group is torn down on every exit path (an error on one rank included), so no
    # rank aborts in gloo's destructor at interpreter exit
    stack = contextlib.ExitStack()
    try:
        run.dev = local_device(dev, run.info)
        # one writer per run folder: rank 0 holds OUT_DIR/.lock until the record is written
        stack.enter_context(rank0_lock(run.out_dir, run.info, purpose="train"))
        _load_train_data(run)
        _train_plan(run)
        res = _fit(run)
        if run.info.is_main:  # rank 0 evaluates and writes the record
            return _write_train_record(run, res, started_at, start_time)
        return None
    finally:
        stack.close()
        shutdown()


# ---------------------------------------------------------------------------------------------
# eval / attack
# ---------------------------------------------------------------------------------------------
def load_for_checkpoint(checkpoint: str, o: Any, dev: Any = None):
    """The data, the model, the device, the sidecar and the data settings of ``checkpoint``
    (``o``'s --data / --data-root / --data-seed, else the ones recorded at training)."""
    from empirical.checkpoint import load_model, read_sidecar
    from empirical.data import load_dataset
    from empirical.devices import resolve_device
    from empirical.models import in_memory_format

    meta = read_sidecar(checkpoint)
    extra = meta.get("extra") or {}
    data = o.data if o.data is not None else meta.get("dataset")
    if not data or data == "unknown":
        raise ValueError(f"checkpoint {checkpoint} does not name its dataset; pass --data")
    root = o.data_root if o.data_root is not None else extra.get("data_root")
    seed = o.data_seed if o.data_seed is not None else int(extra.get("data_seed") or 0)
    d = load_dataset(data, root=root, seed=seed)
    dev = resolve_device(o.device) if dev is None else dev
    model = in_memory_format(load_model(checkpoint, device=dev, verify=o.verify), o.channels_last, dev)
    if (d.in_channels, d.image_size, d.num_classes) != (meta["in_channels"], meta["image_size"], meta["num_classes"]):
        raise ValueError(f"dataset {d.name} ({d.in_channels}x{d.image_size}, {d.num_classes} classes) does not match "
                         f"the checkpoint ({meta['in_channels']}x{meta['image_size']}, {meta['num_classes']} classes)")
    return d, model, dev, meta, {"data": data, "data_root": root, "data_seed": seed}



def split(d: Any, which: str, n: int | None, seed: int = 0, *, n_test: int | None = None) -> tuple[Any, Any, Any, Any]:
    """The examples of ``which`` (``test`` or ``train``): all, or a seeded class-stratified sample of
    ``n``; with ``n_test`` the sample of ``n`` is drawn from the sample of ``n_test`` (how a
    reproduction's evaluation subset sits in its ``n_test`` sample). Returns (x, y, the subset's
    description source, the pool's or None)."""
    from empirical.data import stratified_subset

    x, y = (d.x_test, d.y_test) if which == "test" else (d.x_train, d.y_train)
    pool = None
    if n_test is not None:
        pool = stratified_subset(x, y, n_test, seed=seed, name="n_test")
        x, y = x[pool.indices], y[pool.indices]
    sub = stratified_subset(x, y, n, seed=seed, name="n")
    return x[sub.indices], y[sub.indices], sub, pool


def eval_attacks(o: EvalOptions) -> tuple[str, ...]:
    """The attacks of ``eval`` in run order: ``pgd`` (the PGD of the steps / restarts options) first,
    then the registered attacks (:mod:`empirical.suite`) of ``suite`` and ``attack`` in the order
    given; () = PGD alone (the default, which runs batch by batch and under torchrun)."""
    from empirical import suite

    names: list[str] = []
    for s in o.suite:
        if s not in suite.SUITES:
            raise ValueError(f"--suite {s!r} is not a suite; valid: {', '.join(suite.SUITES)}")
        names += suite.SUITES[s]
    for a in o.attack:
        if a != "pgd" and a not in suite.names():
            raise ValueError(f"--attack {a!r} is not an attack; valid: pgd, {', '.join(suite.names())}")
        names.append(a)
    if not names:
        return ()
    return tuple(dict.fromkeys(["pgd", *names]))


def _worst_case_metrics(model: Any, x: Any, y: Any, specs: list[Any], attacks: tuple[str, ...], o: EvalOptions,
                        dev: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Per threat model, :func:`empirical.worst_case.worst_case` with the options' PGD (when
    ``pgd`` is among the attacks) and suite; its numbers go to the metrics, its seeds, budgets,
    mask hashes and sanity explanations to the record."""
    from empirical.worst_case import SEMANTICS, sanity_flags, worst_case

    rest = tuple(a for a in attacks if a != "pgd")
    metrics: dict[str, Any] = {"clean_accuracy": None, "n": int(x.shape[0]), "robust_accuracy": {}, "n_attacked": {},
                               "n_broken": {}, "seconds": {}, "sanity_flags": {}}
    extra: dict[str, Any] = {"semantics": SEMANTICS, "threats": {}, "mask_sha256": {}, "attack_seeds": {},
                             "budgets_run": {}, "sanity_explanations": {}, "sanity_raised": {}}
    worst_by_norm: dict[str, dict[float, float]] = {}
    for spec in specs:
        key = spec.threat.key()
        wc = worst_case(model, x, y, spec.threat, pgd=spec if "pgd" in attacks else None, attacks=rest,
                        options=o.budgets, seed=o.seed, precision=o.precision, batch_size=o.batch_size, device=dev,
                        progress=sys.stderr.isatty() if o.progress is None else o.progress)
        s = wc.summary()
        metrics["clean_accuracy"] = s["clean_accuracy"]
        metrics["robust_accuracy"][key] = s["robust_accuracy"]
        for k in ("n_attacked", "n_broken", "seconds"):
            metrics[k][key] = s[k]
        extra["mask_sha256"][key] = s["mask_sha256"]
        extra["attack_seeds"][key] = s["seeds"]
        extra["budgets_run"][key] = s["budgets"]
        extra["threats"][key] = wc.describe()
        if s["sanity_flags"]:
            metrics["sanity_flags"][key] = s["sanity_flags"]
            extra["sanity_explanations"][key] = s["sanity_explanations"]
            extra["sanity_raised"].update({f"{key} {k}": s["sanity_explanations"][k]
                                           for k, v in s["sanity_flags"].items() if v})
        worst_by_norm.setdefault(spec.norm, {})[spec.eps] = s["robust_accuracy"]["worst_case"]
    for norm, by_eps in worst_by_norm.items():      # a worst case that rises with eps: the attacks are failing
        if len(by_eps) > 1:
            f = sanity_flags(robust_accuracy_by_eps=by_eps)
            metrics["sanity_flags"][f"{norm}_monotone"] = {"non_monotone_in_eps": f["flags"]["non_monotone_in_eps"]}
            extra["sanity_explanations"][f"{norm}_monotone"] = {
                "non_monotone_in_eps": f["explanations"]["non_monotone_in_eps"]}
            if f["flags"]["non_monotone_in_eps"]:
                extra["sanity_raised"][f"{norm} non_monotone_in_eps"] = f["explanations"]["non_monotone_in_eps"]
    extra["attack_order"] = list(attacks)
    return metrics, extra


def _requested_budgets(o: EvalOptions, attacks: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    from empirical import suite

    return {a: suite.get(a).requested(o.budgets) for a in attacks if a != "pgd"}


def run_eval(o: EvalOptions, checkpoint: str | Path, out: str | Path | None, *, started_at: str,
             start_time: float) -> dict[str, Any] | None:
    """Evaluate ``checkpoint`` with options ``o``: clean accuracy and, per threat model, PGD robust
    accuracy (batch by batch, split across the ranks of a ``torchrun``), or with ``attack`` /
    ``suite`` the worst case (one process). Writes the record to ``out`` (default ``eval.json``
    beside the checkpoint) and returns it (None on the ranks other than 0)."""
    from empirical.devices import resolve_device
    from empirical.distributed import check_same_config, init_distributed, local_device, shutdown
    from empirical.evaluate import evaluate
    from empirical.threat import Attack
    from empirical.worst_case import SEMANTICS
    from foundation.records import file_sha256, write_record

    threats = parse_threats("threat", o.threat)
    check_outputs_apart("eval", "--out", eval_outputs(checkpoint, out), checkpoint_inputs(checkpoint))
    attacks = eval_attacks(o)
    dev = resolve_device(o.device)
    info = init_distributed(dev)  # single process unless launched by torchrun
    try:
        if attacks and info.is_distributed:
            raise ValueError("--attack/--suite (the worst-case ensemble) runs in one process; run it without torchrun")
        dev = local_device(dev, info)
        d, model, dev, meta, data_cfg = load_for_checkpoint(str(checkpoint), o, dev)
        x, y, sub, pool = split(d, o.split, o.n, o.subset_seed, n_test=o.n_test)
        specs = [Attack(t.norm, t.eps, steps=o.steps, step_size=o.step_size, restarts=o.restarts,
                        random_start=o.random_start or o.restarts > 1) for t in threats]
        out = eval_record_path(checkpoint, out)
        config = {"checkpoint": str(checkpoint), "checkpoint_sha256": file_sha256(checkpoint), "verified": o.verify,
                  "arch": meta["arch"], **data_cfg, "split": o.split, "n": int(x.shape[0]),
                  "attacks": [s.__dict__ for s in specs], "batch_size": o.batch_size, "subset": sub.describe()}
        if pool is not None:
            config["test_pool"] = pool.describe()
        if attacks:
            config["worst_case"] = {"attacks": list(attacks), "budgets": _requested_budgets(o, attacks),
                                    "seed": o.seed, "precision": o.precision, "semantics": SEMANTICS}
        # every rank must evaluate the same checkpoint on the same examples with the same attacks
        check_same_config({**config, "seed": o.seed, "out": str(out)}, info)
        if attacks:
            metrics, extra = _worst_case_metrics(model, x, y, specs, attacks, o, dev)
            extra["budgets"] = _requested_budgets(o, attacks)
        else:
            # each rank attacks its run of whole batches; the counts are summed (exactly the 1-process numbers)
            ev = evaluate(model, x, y, attacks=specs, device=dev, batch_size=o.batch_size, seed=o.seed,
                          dist_info=info)
            metrics = {"clean_accuracy": ev["clean"], "robust_accuracy": ev["robust"], "n": ev["n"]}
            extra = {"attacks": ev["attacks"]}
        if not info.is_main:
            return None
        if info.is_distributed:
            config["world_size"] = info.world_size
        return write_record(out, experiment="empirical.eval", config=config, metrics=metrics, seeds={"seed": o.seed},
                            device=device_name(dev), started_at=started_at, start_time=start_time, extra=extra)
    finally:
        shutdown()


def run_attack(o: AttackOptions, checkpoint: str | Path, out_dir: str | Path, *, started_at: str,
               start_time: float) -> dict[str, Any]:
    """PGD adversarial examples of ``checkpoint`` on a split: untargeted, toward ``next_label(y)``
    (``targeted="next"``) or toward a random other class (``"random"``). Writes
    ``out_dir/adversarial.pt`` (the examples, labels and targets) and ``attack.json`` (success,
    accuracies, distances, throughput), and returns the record."""
    import torch

    from empirical.attacks import pgd
    from empirical.devices import resolve_device
    from empirical.evaluate import predict
    from empirical.threat import Attack, next_label
    from foundation.records import atomic_write_bytes, file_sha256, write_record

    (threat,) = parse_threats("threat", (o.threat,))
    check_outputs_apart("attack", "--out-dir", folder_outputs(out_dir, ATTACK_FILES), checkpoint_inputs(checkpoint))
    d, model, dev, meta, data_cfg = load_for_checkpoint(str(checkpoint), o, resolve_device(o.device))
    x, y, sub, _ = split(d, o.split, o.n, o.subset_seed)
    gen = torch.Generator(device=dev)
    gen.manual_seed(o.seed)
    if o.targeted == "none":
        labels = y
    elif o.targeted == "next":
        labels = next_label(y, d.num_classes)
    else:
        g = torch.Generator().manual_seed(o.seed)
        labels = (y + torch.randint(1, d.num_classes, y.shape, generator=g)) % d.num_classes
    attack = Attack(threat.norm, threat.eps, steps=o.steps, step_size=o.step_size, restarts=o.restarts,
                    random_start=o.random_start, targeted=o.targeted != "none")
    t_att = time.perf_counter()
    x_adv = pgd(model, x.to(dev), labels.to(dev), attack, generator=gen, batch_size=o.batch_size).cpu()
    attack_seconds = time.perf_counter() - t_att
    pred_clean, pred_adv = predict(model, x, device=dev), predict(model, x_adv, device=dev)
    success = (pred_adv == labels) if o.targeted != "none" else (pred_adv != y)
    delta = (x_adv - x).flatten(1)
    out_dir = Path(out_dir)
    buf = io.BytesIO()
    torch.save({"x_adv": x_adv.contiguous(), "y": y.clone(), "attack_labels": labels.clone()}, buf)
    atomic_write_bytes(out_dir / "adversarial.pt", buf.getvalue())
    config = {"checkpoint": str(checkpoint), "checkpoint_sha256": file_sha256(checkpoint), "verified": o.verify,
              "arch": meta["arch"], **data_cfg, "split": o.split, "n": int(x.shape[0]), "norm": threat.norm,
              "eps": threat.eps, "steps": o.steps, "step_size": attack.step, "restarts": o.restarts,
              "random_start": o.random_start, "targeted": o.targeted, "subset": sub.describe()}
    metrics = {"success_rate": float(success.float().mean()), "clean_accuracy": float((pred_clean == y).float().mean()),
               "adversarial_accuracy": float((pred_adv == y).float().mean()),
               "mean_l2": float(delta.norm(dim=1).mean()), "max_l2": float(delta.norm(dim=1).max()),
               "max_linf": float(delta.abs().max()), "attack_seconds": attack_seconds,
               "images_per_second": x.shape[0] / max(attack_seconds, 1e-9)}
    desc = attack.describe() + (f" ({o.targeted} target)" if o.targeted != "none" else "")
    return write_record(out_dir / "attack.json", experiment="empirical.attack", config=config, metrics=metrics,
                        seeds={"seed": o.seed}, device=device_name(dev), started_at=started_at, start_time=start_time,
                        extra={"tensors": {"path": "adversarial.pt", "sha256": file_sha256(out_dir / "adversarial.pt")},
                               "attack": desc})


__all__ = ["ATTACK_FILES", "TRAIN_FILES", "check_outputs_apart", "check_rerun", "checkpoint_inputs",
           "describe_training_runs", "device_name", "eval_attacks", "eval_outputs", "eval_record_path",
           "folder_outputs", "load_for_checkpoint", "parse_eps_list", "run_attack", "run_eval", "run_train",
           "split", "train_timing"]
