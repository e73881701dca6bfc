"""Subcommands of `robust-features` owned by the empirical core: ``train``, ``eval``, ``attack``.

    robust-features train --data digits --out-dir runs/digits-std
    robust-features train --data synthetic --adv l2:1.0 --epochs 15 --out-dir runs/syn-adv
    robust-features train --config train.toml --set lr=0.1 --out-dir runs/x    # flags win, then --set
    robust-features eval --checkpoint runs/digits-std/model.pt --threat l2:0.25 --threat l2:0.5
    robust-features attack --checkpoint runs/digits-std/model.pt --threat l2:1.0 --targeted next --out-dir runs/adv

Every option is a field of :class:`robust_features.options.TrainOptions`, ``EvalOptions`` or
``AttackOptions`` and comes, through the one config grammar of :mod:`foundation.config`, from
the defaults < ``--config FILE.toml`` < ``--set KEY=VALUE`` < explicit flags; ``train``'s
per-dataset defaults are presets (``robust_features.options.TRAIN_PRESETS``) filling what is still
absent. Torch is imported only when a command runs. Every command writes one JSON record
(``train.json`` / ``eval.json`` / ``attack.json``) through ``foundation.records.write_record``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from robust_features.options import (
    AttackOptions,
    EvalOptions,
    TrainOptions,
    train_presets,
    with_presets,
)
from foundation.runtime import CACHE_DIR_HELP

TRAIN_KEYS: tuple[str, ...] = tuple(f.name for f in fields(TrainOptions))   # the --set / TOML keys of `train`
_SET_EXAMPLES = {TrainOptions: "epochs=3", EvalOptions: "threat=l2:0.5,linf:8/255", AttackOptions: "threat=linf:8/255"}
_SECTIONS = {TrainOptions: "train", EvalOptions: "eval", AttackOptions: "attack"}


def _resolve(cls: type, args: argparse.Namespace) -> Any:
    """The options of ``cls``: defaults < TOML file (--config, optionally under [train] / [eval] /
    [attack]) < --set < explicit flags, checked once."""
    from foundation import config as grammar

    layers = grammar.command_layers(config=args.config, sets=args.overrides, flags=grammar.given_flags(args, cls),
                                    section=_SECTIONS[cls], example=_SET_EXAMPLES[cls])
    return grammar.resolve(cls(), layers)


def resolve_train_options(args: argparse.Namespace) -> TrainOptions:
    """defaults < TOML file (--config) < --set < explicit flags. The options the per-dataset presets
    fill (epochs, batch_size, lr, crop_padding, flip) stay absent (None) until the data is loaded
    (:func:`robust_features.options.with_presets`)."""
    return _resolve(TrainOptions, args)


def resolve_eval_options(args: argparse.Namespace) -> EvalOptions:
    return _resolve(EvalOptions, args)


def resolve_attack_options(args: argparse.Namespace) -> AttackOptions:
    return _resolve(AttackOptions, args)


def load_toml_config(path: str | Path) -> dict[str, Any]:
    """The `train` options of a TOML file (kebab- or snake-case keys, optionally under [train]),
    typed; unknown keys raise ``ValueError`` listing the valid ones."""
    from foundation import config as grammar

    return grammar.typed(TrainOptions, grammar.load_toml(path, section="train"), source=str(path))


def _device(name: str) -> Any:
    from empirical.devices import resolve_device

    return resolve_device(name)


def _device_name(dev: Any) -> str:
    import torch

    if dev.type == "cuda":
        return f"{dev} ({torch.cuda.get_device_name(dev)})"
    return str(dev)


def _parse_eps_list(text: str) -> list[float]:
    from empirical.threat import parse_fraction

    vals = [parse_fraction(t, "eval_eps") for t in str(text).split(",") if t.strip()]
    if not vals:
        raise ValueError(f"eval_eps={text!r} holds no numbers; use e.g. 0.25,0.5")
    for v in vals:
        if v < 0:
            raise ValueError(f"eval_eps value {v} must be >= 0")
    return vals


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


def _train_options(args: argparse.Namespace) -> _TrainRun:
    """Step 1: the options, the --adv threat and the architecture, all checked before anything is
    loaded or written."""
    from empirical.models import canonical_arch, default_arch
    from empirical.threat import ThreatModel

    o = resolve_train_options(args)
    adv = ThreatModel.parse(o.adv) if o.adv is not None else None
    arch = canonical_arch(o.arch if o.arch is not None else default_arch(o.data))
    return _TrainRun(o=o, out_dir=Path(args.out_dir), adv=adv, arch=arch)


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
    from empirical.evaluate import AttackSpec
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
    eval_eps = _parse_eps_list(o.eval_eps) if o.eval_eps is not None else [adv.eps if adv else 0.25]
    run.attacks = [AttackSpec(eval_norm, e, steps=o.eval_steps, restarts=o.eval_restarts,
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
    """Step 4: build the model and train it (resuming from latest.pt); None after a non-finite loss."""
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
              f"lr {cfg.lr} ({cfg.schedule}) | device {_device_name(run.dev)}")
    try:
        return fit(model, run.x_train, run.y_train, cfg, device=run.dev, out_dir=run.out_dir,
                   eval_data=(d.x_test, d.y_test), resume=o.resume, progress=o.progress and info.is_main,
                   dataset=d.name, checkpoint_extra={"data_root": o.data_root, "data_seed": o.data_seed,
                                                     "world_size": info.world_size},
                   dist_info=info, on_start=write_resolved)
    except NonFiniteLossError as exc:
        print(f"robust-features train: error: {exc}")
        return None


def _write_train_record(run: _TrainRun, res: Any, started_at: str, t0: float) -> None:
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
               "n_test": int(d.x_test.shape[0]), "epochs_completed": len(res.history),
               "final_train_loss": res.history[-1]["train_loss"] if res.history else None,
               "train_seconds": res.wall_seconds,
               "train_images_per_second": len(res.history) * run.x_train.shape[0] / max(res.wall_seconds, 1e-9)}
    write_record(out_dir / "train.json", experiment="empirical.train", config=run.resolved, metrics=metrics,
                 seeds={"seed": o.seed, "data_seed": o.data_seed}, device=_device_name(run.dev),
                 started_at=started_at, start_time=t0,
                 extra={"attacks": ev["attacks"], "history": res.history, "stopped_early": res.stopped_early,
                        "data": d.describe(),
                        "subsets": {"train": run.train_sub.describe(), "eval": eval_sub.describe()},
                        "checkpoint": {"path": "model.pt", "sha256": file_sha256(out_dir / "model.pt")}})
    rob = ", ".join(f"{ev['attacks'][k]}: {100 * v:.1f}%" for k, v in ev["robust"].items())
    print(f"clean {100 * clean_all:.1f}% (n={d.x_test.shape[0]}) / robust {rob} (n={n}); "
          f"record {out_dir / 'train.json'}")
    if res.stopped_early:
        print(res.stopped_early)


def _cmd_train(args: argparse.Namespace) -> int:
    from empirical.distributed import init_distributed, local_device, shutdown
    from foundation.locks import rank0_lock
    from foundation.records import utc_now

    started_at, t0 = utc_now(), time.perf_counter()
    run = _train_options(args)
    dev = _device(run.o.device)
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
        if res is None:
            return 3
        if run.info.is_main:  # rank 0 evaluates and writes the record
            _write_train_record(run, res, started_at, t0)
        return 0
    finally:
        stack.close()
        shutdown()


# ---------------------------------------------------------------------------------------------
# eval / attack
# ---------------------------------------------------------------------------------------------
def _load_for_checkpoint(checkpoint: str, o: Any, dev: Any = None):
    """The data, the model, the device, the sidecar and the data settings of ``checkpoint``
    (``o``'s --data / --data-root / --data-seed, else the ones recorded at training)."""
    from empirical.checkpoint import load_model, read_sidecar
    from empirical.data import load_dataset

    meta = read_sidecar(checkpoint)
    extra = meta.get("extra") or {}
    data = o.data if o.data is not None else meta.get("dataset")
    if not data or data == "unknown":
        raise ValueError(f"checkpoint {checkpoint} does not name its dataset; pass --data")
    root = o.data_root if o.data_root is not None else extra.get("data_root")
    seed = o.data_seed if o.data_seed is not None else int(extra.get("data_seed") or 0)
    d = load_dataset(data, root=root, seed=seed)
    dev = _device(o.device) if dev is None else dev
    model = load_model(checkpoint, device=dev)
    if (d.in_channels, d.image_size, d.num_classes) != (meta["in_channels"], meta["image_size"], meta["num_classes"]):
        raise ValueError(f"dataset {d.name} ({d.in_channels}x{d.image_size}, {d.num_classes} classes) does not match "
                         f"the checkpoint ({meta['in_channels']}x{meta['image_size']}, {meta['num_classes']} classes)")
    return d, model, dev, meta, {"data": data, "data_root": root, "data_seed": seed}


def _split(d, split: str, n: int | None, seed: int = 0):
    """The examples of ``split``: all, or a seeded class-stratified sample of ``n`` (and its description)."""
    from empirical.data import stratified_subset

    x, y = (d.x_test, d.y_test) if split == "test" else (d.x_train, d.y_train)
    sub = stratified_subset(x, y, n, seed=seed, name="n")
    return x[sub.indices], y[sub.indices], sub


def _eval_attacks(o: EvalOptions) -> tuple[str, ...]:
    """The attacks of ``eval`` in run order: ``pgd`` (the PGD of --steps/--restarts) first, then the
    AutoAttack-style ones, from --attack (repeatable) and --suite; () = PGD alone (the default)."""
    from empirical.autoattack import ATTACKS, SUITES

    names: list[str] = []
    for s in o.suite:
        if s not in SUITES:
            raise ValueError(f"--suite {s!r} is not a suite; valid: {', '.join(SUITES)}")
        names += SUITES[s]
    for a in o.attack:
        if a != "pgd" and a not in ATTACKS:
            raise ValueError(f"--attack {a!r} is not an attack; valid: pgd, {', '.join(ATTACKS)}")
        names.append(a)
    ordered = tuple(dict.fromkeys(["pgd", *names] if names and "pgd" not in names else names))
    return tuple(a for a in (("pgd",) + ATTACKS) if a in ordered)


def _cmd_eval(args: argparse.Namespace) -> int:
    from empirical.distributed import (
        check_same_config,
        init_distributed,
        local_device,
        shutdown,
    )
    from empirical.evaluate import AttackSpec, evaluate
    from empirical.threat import ThreatModel
    from foundation.records import file_sha256, utc_now, write_record

    started_at, t0 = utc_now(), time.perf_counter()
    o = resolve_eval_options(args)
    threats = [ThreatModel.parse(t) for t in o.threat]
    attacks = _eval_attacks(o)
    dev = _device(o.device)
    info = init_distributed(dev)  # single process unless launched by torchrun
    try:
        if attacks and info.is_distributed:
            raise ValueError("--attack/--suite (the worst-case ensemble) runs in one process; run it without torchrun")
        dev = local_device(dev, info)
        d, model, dev, meta, data_cfg = _load_for_checkpoint(args.checkpoint, o, dev)
        x, y, sub = _split(d, o.split, o.n, o.subset_seed)
        specs = [AttackSpec(t.norm, t.eps, steps=o.steps, step_size=o.step_size, restarts=o.restarts,
                            random_start=o.random_start or o.restarts > 1) for t in threats]
        out = Path(args.out) if args.out is not None else Path(args.checkpoint).with_name("eval.json")
        config = {"checkpoint": str(args.checkpoint), "checkpoint_sha256": file_sha256(args.checkpoint),
                  "arch": meta["arch"], **data_cfg, "split": o.split, "n": int(x.shape[0]),
                  "attacks": [s.__dict__ for s in specs], "batch_size": o.batch_size, "subset": sub.describe()}
        if attacks:
            config["worst_case"] = {"attacks": list(attacks), "budgets": _ensemble_budgets(o, attacks)}
        # every rank must evaluate the same checkpoint on the same examples with the same attacks
        check_same_config({**config, "seed": o.seed, "out": str(out)}, info)
        if attacks:
            metrics, extra = _worst_case_eval(model, x, y, specs, attacks, o, dev)
        else:
            # each rank attacks its run of whole batches; the counts are summed (exactly the 1-process numbers)
            ev = evaluate(model, x, y, attacks=specs, device=dev, batch_size=o.batch_size, seed=o.seed,
                          dist_info=info)
            metrics = {"clean_accuracy": ev["clean"], "robust_accuracy": ev["robust"], "n": ev["n"]}
            extra = {"attacks": ev["attacks"]}
        if not info.is_main:
            return 0
        if info.is_distributed:
            config["world_size"] = info.world_size
        write_record(out, experiment="empirical.eval", config=config, metrics=metrics, seeds={"seed": o.seed},
                     device=_device_name(dev), started_at=started_at, start_time=t0, extra=extra)
    finally:
        shutdown()
    _print_eval(metrics, extra, attacks, out)
    return 0


def _print_eval(metrics: dict, extra: dict, attacks: tuple[str, ...], out: Path) -> None:
    print(f"clean {100 * metrics['clean_accuracy']:.2f}% (n={metrics['n']})")
    if attacks:
        for key, per in metrics["robust_accuracy"].items():
            steps = ", ".join(f"{a} {100 * v:.2f}%" for a, v in per.items() if a != "worst_case")
            print(f"{extra['threats'][key]}: robust after {steps}; worst case {100 * per['worst_case']:.2f}%")
        for flag, text in extra["sanity_raised"].items():
            print(f"sanity flag {flag}: {text}")
    else:
        for k, v in metrics["robust_accuracy"].items():
            print(f"robust {100 * v:.2f}% at {extra['attacks'][k]}, n={metrics['n']}")
    print(f"record {out}")


def _ensemble_budgets(o: EvalOptions, attacks: tuple[str, ...]) -> dict[str, dict[str, int]]:
    b = {"apgd-ce": {"steps": o.apgd_steps}, "apgd-t": {"steps": o.apgd_steps, "n_target_classes": o.apgd_targets},
         "square": {"queries": o.square_queries}}
    return {a: b[a] for a in attacks if a in b}


def _worst_case_eval(model, x, y, specs, attacks, o: EvalOptions, dev) -> tuple[dict, dict]:
    """Per threat: PGD on every example, then each AutoAttack-style attack on those still robust;
    an example is robust only if every attack failed. Masks are recorded by their sha256."""
    import hashlib

    import numpy as np
    import torch

    from empirical.autoattack import ensemble, sanity_flags
    from empirical.evaluate import predict, robust_mask
    from foundation.records import pack_bits

    xd, yd = x.to(dev), y.to(dev)
    clean = (predict(model, x, batch_size=o.batch_size, device=dev, precision=o.precision) == y.cpu()).numpy()
    metrics: dict = {"clean_accuracy": float(clean.mean()), "n": int(x.shape[0]), "robust_accuracy": {},
                     "seconds": {}, "sanity_flags": {}}
    extra: dict = {"threats": {}, "mask_sha256": {}, "sanity_explanations": {}, "sanity_raised": {}}
    worst_by_norm: dict[str, dict[float, float]] = {}
    sha = lambda m: hashlib.sha256(bytes.fromhex(pack_bits(m))).hexdigest()
    for spec in specs:
        key = spec.threat.key()
        per: dict[str, float] = {}
        secs: dict[str, float] = {}
        masks: dict[str, str] = {}
        robust = clean.copy()
        pgd_acc = None
        if "pgd" in attacks:
            t = time.perf_counter()
            gen = torch.Generator(device=dev)
            gen.manual_seed(o.seed)
            m = robust_mask(model, x, y, threat=spec.threat, steps=spec.steps, step_size=spec.step,
                            restarts=spec.restarts, random_start=spec.random_start, batch_size=o.batch_size,
                            device=dev, generator=gen, precision=o.precision).numpy()
            secs["pgd"] = time.perf_counter() - t
            robust &= m
            per["pgd"] = pgd_acc = float(robust.mean())
            masks["pgd"] = sha(m)
        rest = tuple(a for a in attacks if a != "pgd")
        res = None
        if rest:
            idx = np.flatnonzero(robust)
            if idx.size:
                res = ensemble(model, xd[idx], yd[idx], norm=spec.norm, eps=spec.eps, attacks=rest,
                               budgets=_ensemble_budgets(o, rest), seed=o.seed, precision=o.precision,
                               batch_size=o.batch_size)
                for a in rest:
                    broke = np.zeros_like(robust)
                    broke[idx] = res["success"][a].cpu().numpy()
                    robust &= ~broke
                    per[a] = float(robust.mean())
                    secs[a] = float(res["seconds"][a])
                    masks[a] = sha(~broke)
            else:
                for a in rest:
                    per[a], secs[a] = float(robust.mean()), 0.0
        per["worst_case"] = float(robust.mean())
        masks["worst_case"] = sha(robust)
        worst_by_norm.setdefault(spec.norm, {})[spec.eps] = per["worst_case"]
        if res is not None:
            # ensemble's result covers the PGD survivors; pgd_gap compares PGD with the full worst case
            full = dict(res, worst_case_robust_accuracy=per["worst_case"])
            f = sanity_flags(pgd_robust_accuracy=pgd_acc, result=full, model=model, x=xd[:512], y=yd[:512],
                             precision=o.precision)
            metrics["sanity_flags"][key] = f["flags"]
            extra["sanity_explanations"][key] = f["explanations"]
            extra["sanity_raised"].update({f"{key} {k}": f["explanations"][k] for k, v in f["flags"].items() if v})
        metrics["robust_accuracy"][key] = per
        metrics["seconds"][key] = secs
        extra["mask_sha256"][key] = masks
        extra["threats"][key] = spec.describe() if "pgd" in attacks else f"{spec.norm} eps={spec.eps:g}"
    _monotone_flags(worst_by_norm, metrics, extra)
    extra["budgets"] = _ensemble_budgets(o, attacks)
    extra["attack_order"] = list(attacks)
    return metrics, extra


def _monotone_flags(worst_by_norm: dict[str, dict[float, float]], metrics: dict, extra: dict) -> None:
    """Per norm with several eps: the sanity flag of a worst case that is not monotone in eps."""
    from empirical.autoattack import sanity_flags

    for norm, by_eps in worst_by_norm.items():
        if len(by_eps) > 1:
            f = sanity_flags(robust_accuracy_by_eps=by_eps)
            metrics["sanity_flags"][f"{norm}_monotone"] = {"non_monotone_in_eps": f["flags"]["non_monotone_in_eps"]}
            extra["sanity_explanations"][f"{norm}_monotone"] = {"non_monotone_in_eps": f["explanations"]["non_monotone_in_eps"]}
            if f["flags"]["non_monotone_in_eps"]:
                extra["sanity_raised"][f"{norm} non_monotone_in_eps"] = f["explanations"]["non_monotone_in_eps"]


def _cmd_attack(args: argparse.Namespace) -> int:
    import io

    import torch

    from empirical.attacks import pgd
    from empirical.evaluate import predict
    from empirical.threat import Attack, ThreatModel
    from foundation.records import (
        atomic_write_bytes,
        file_sha256,
        utc_now,
        write_record,
    )

    started_at, t0 = utc_now(), time.perf_counter()
    o = resolve_attack_options(args)
    threat = ThreatModel.parse(o.threat)
    d, model, dev, meta, data_cfg = _load_for_checkpoint(args.checkpoint, o, _device(o.device))
    x, y, sub = _split(d, o.split, o.n, o.subset_seed)
    gen = torch.Generator(device=dev)
    gen.manual_seed(o.seed)
    if o.targeted == "none":
        labels = y
    elif o.targeted == "next":
        labels = (y + 1) % d.num_classes
    else:
        g = torch.Generator().manual_seed(o.seed)
        labels = (y + torch.randint(1, d.num_classes, y.shape, generator=g)) % d.num_classes
    attack = Attack(threat.norm, threat.eps, steps=o.steps, step_size=o.step_size, restarts=o.restarts,
                    random_start=o.random_start, targeted=o.targeted != "none")
    step = attack.step
    t_att = time.perf_counter()
    x_adv = pgd(model, x.to(dev), labels.to(dev), **attack.pgd_kwargs(), generator=gen, batch_size=o.batch_size).cpu()
    attack_seconds = time.perf_counter() - t_att
    pred_clean, pred_adv = predict(model, x, device=dev), predict(model, x_adv, device=dev)
    success = (pred_adv == labels) if o.targeted != "none" else (pred_adv != y)
    delta = (x_adv - x).flatten(1)
    out_dir = Path(args.out_dir)
    buf = io.BytesIO()
    torch.save({"x_adv": x_adv.contiguous(), "y": y.clone(), "attack_labels": labels.clone()}, buf)
    atomic_write_bytes(out_dir / "adversarial.pt", buf.getvalue())
    config = {"checkpoint": str(args.checkpoint), "checkpoint_sha256": file_sha256(args.checkpoint),
              "arch": meta["arch"], **data_cfg, "split": o.split, "n": int(x.shape[0]), "norm": threat.norm,
              "eps": threat.eps, "steps": o.steps, "step_size": step, "restarts": o.restarts,
              "random_start": o.random_start, "targeted": o.targeted, "subset": sub.describe()}
    metrics = {"success_rate": float(success.float().mean()), "clean_accuracy": float((pred_clean == y).float().mean()),
               "adversarial_accuracy": float((pred_adv == y).float().mean()),
               "mean_l2": float(delta.norm(dim=1).mean()), "max_l2": float(delta.norm(dim=1).max()),
               "max_linf": float(delta.abs().max()), "attack_seconds": attack_seconds,
               "images_per_second": x.shape[0] / max(attack_seconds, 1e-9)}
    write_record(out_dir / "attack.json", experiment="empirical.attack", config=config, metrics=metrics,
                 seeds={"seed": o.seed}, device=_device_name(dev), started_at=started_at, start_time=t0,
                 extra={"tensors": {"path": "adversarial.pt", "sha256": file_sha256(out_dir / "adversarial.pt")}})
    desc = attack.describe() + (f" ({o.targeted} target)" if o.targeted != "none" else "")
    print(f"success {100 * metrics['success_rate']:.1f}% | clean {100 * metrics['clean_accuracy']:.1f}% -> "
          f"adversarial {100 * metrics['adversarial_accuracy']:.1f}% at {desc}, n={x.shape[0]}; "
          f"record {out_dir / 'attack.json'}")
    return 0


def _add_options(p: argparse.ArgumentParser, cls: type) -> None:
    """The flags of ``cls``'s fields, then --config and --set (the one grammar: flags win)."""
    from foundation import config as grammar

    grammar.add_flags(p, cls)
    grammar.add_config_options(p, example=_SET_EXAMPLES[cls])


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train``, ``eval`` and ``attack`` to the top-level parser."""
    from foundation import checks as C

    p = subparsers.add_parser("train", help="standard or adversarial training (writes model.pt, train.json)",
                              description="Train a model. Options: defaults (per-dataset presets for what is left "
                                          "absent) < --config TOML < --set KEY=VALUE < explicit flags.")
    p.add_argument("--out-dir", required=True, type=C.path_arg,
                   help="run folder: latest.pt, model.pt + model.json, train.json")
    p.add_argument("--cache-dir", default=None, help=CACHE_DIR_HELP)
    _add_options(p, TrainOptions)
    p.set_defaults(func=_cmd_train)

    p = subparsers.add_parser("eval", help="clean and PGD robust accuracy of a checkpoint (writes eval.json)",
                              description="Evaluate a checkpoint. Options: defaults < --config TOML < --set "
                                          "KEY=VALUE < explicit flags.")
    p.add_argument("--checkpoint", required=True, type=C.path_arg,
                   help="model.pt written by `train` (with its model.json)")
    p.add_argument("--out", default=None, type=C.path_arg,
                   help="record path (default: eval.json beside the checkpoint)")
    p.add_argument("--cache-dir", default=None, help=CACHE_DIR_HELP)
    _add_options(p, EvalOptions)
    p.set_defaults(func=_cmd_eval)

    p = subparsers.add_parser("attack", help="PGD adversarial examples for a checkpoint (adversarial.pt, attack.json)",
                              description="Attack a checkpoint. Options: defaults < --config TOML < --set "
                                          "KEY=VALUE < explicit flags.")
    p.add_argument("--checkpoint", required=True, type=C.path_arg,
                   help="model.pt written by `train` (with its model.json)")
    p.add_argument("--out-dir", required=True, type=C.path_arg, help="folder of adversarial.pt and attack.json")
    p.add_argument("--cache-dir", default=None, help=CACHE_DIR_HELP)
    _add_options(p, AttackOptions)
    p.set_defaults(func=_cmd_attack)


__all__ = ["TRAIN_KEYS", "load_toml_config", "register", "resolve_attack_options", "resolve_eval_options",
           "resolve_train_options"]
