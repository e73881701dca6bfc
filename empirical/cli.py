"""Subcommands of `robust-features` owned by the empirical core: ``train``, ``eval``, ``attack``.

    robust-features train --data digits --out-dir runs/digits-std
    robust-features train --data synthetic --adv l2:1.0 --epochs 15 --out-dir runs/syn-adv
    robust-features train --config train.toml --out-dir runs/x        # flags override the file
    robust-features eval --checkpoint runs/digits-std/model.pt --threat l2:0.25 --threat l2:0.5
    robust-features attack --checkpoint runs/digits-std/model.pt --threat l2:1.0 --targeted next --out-dir runs/adv

Torch is imported only when a command runs. Every command writes one JSON record
(``train.json`` / ``eval.json`` / ``attack.json``) through ``robust_features.records.write_record``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from pathlib import Path
from typing import Any

from robust_features.runtime import CACHE_DIR_HELP

# (dest, type, default, help) of every `train` option that may also come from a TOML file.
_TRAIN_OPTIONS: tuple[tuple[str, Any, Any, str], ...] = (
    ("data", str, "digits", "dataset: digits, synthetic, cifar10, imagefolder:PATH"),
    ("data_root", str, None, "data folder (cifar10: the folder holding cifar-10-batches-py)"),
    ("download", bool, False, "download CIFAR-10 if missing (official URL, MD5-checked)"),
    ("data_seed", int, 0, "seed of the digits split / synthetic draw"),
    ("n_train", int, None, "train on a seeded class-stratified sample of N training images (--subset-seed)"),
    ("subset_seed", int, 0, "seed of the --n-train / --n-eval samples"),
    ("arch", str, None, "architecture, optionally with options, e.g. fastnet:widths=32-64-128,pool=avg "
                        "(default per dataset: cnn_small for digits/synthetic, fastnet otherwise)"),
    ("adv", str, None, "adversarial training threat model, e.g. l2:0.5 or linf:8/255 (default: standard training)"),
    ("adv_method", str, "pgd", "pgd (PGD-AT) or fgsm (FGSM-RS with catastrophic-overfitting guard)"),
    ("adv_steps", int, 7, "PGD steps for adversarial training"),
    ("adv_step_size", float, None, "attack step size (default 2.5*eps/steps for PGD, 1.25*eps for FGSM)"),
    ("epochs", int, None, "epochs (default: 15 for digits/synthetic, 20 otherwise)"),
    ("batch_size", int, None, "batch size (default: 64 for digits/synthetic, 512 otherwise)"),
    ("lr", float, None, "peak learning rate (default: 0.05 for digits/synthetic, 0.2 otherwise)"),
    ("momentum", float, 0.9, "SGD momentum (Nesterov)"),
    ("weight_decay", float, 5e-4, "weight decay"),
    ("schedule", str, "onecycle", "onecycle, step or constant"),
    ("optimizer", str, "sgd", "sgd or adam"),
    ("label_smoothing", float, 0.0, "label smoothing"),
    ("crop_padding", int, None, "random-crop padding (default: 4 for 32x32 data, 0 otherwise)"),
    ("flip", bool, None, "random horizontal flips (default: on for 32x32 data)"),
    ("seed", int, 0, "training seed (initialisation, shuffling, attack starts)"),
    ("device", str, "auto", "cpu, cuda, cuda:1, ... (auto = cuda when available)"),
    ("precision", str, "auto", "forward passes: auto (bf16 autocast on CUDA, fp32 on CPU), fp32, or bf16 (any device)"),
    ("channels_last", bool, None, "channels_last memory format (default: on CUDA only)"),
    ("compile", bool, False, "torch.compile the model"),
    ("eval_eps", str, None, "comma-separated eps for robust test accuracy, in the --adv norm (default: adv eps, or l2 0.25)"),
    ("eval_norm", str, None, "norm of --eval-eps (default: the --adv norm, else l2)"),
    ("eval_steps", int, 20, "PGD steps of the evaluation attack (step 2.5*eps/steps)"),
    ("eval_restarts", int, 1, "random restarts of the evaluation attack"),
    ("n_eval", int, 1000, "test images attacked for robust accuracy: a seeded class-stratified sample "
                          "(--subset-seed); clean accuracy uses all"),
    ("resume", bool, True, "resume from OUT_DIR/latest.pt when present"),
    ("progress", bool, True, "progress bars and the per-epoch table"),
)
TRAIN_KEYS: tuple[str, ...] = tuple(o[0] for o in _TRAIN_OPTIONS)


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _add_options(p: argparse.ArgumentParser, options) -> None:
    from robust_features import checks as C

    for dest, typ, default, help_ in options:
        if typ is bool:
            p.add_argument(_flag(dest), dest=dest, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                           help=f"{help_} (default: {default})")
        else:   # floats take fractions (8/255); non-finite values are refused here
            p.add_argument(_flag(dest), dest=dest, type=C.number_arg if typ is float else typ,
                           default=argparse.SUPPRESS, help=f"{help_} (default: {default})")


def load_toml_config(path: str | Path) -> dict[str, Any]:
    """Read a TOML file of `train` options (kebab- or snake-case keys, optionally under [train]);
    unknown keys raise ``ValueError`` listing the valid ones."""
    import tomllib

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} not found")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"config file {path} is not valid TOML: {exc}") from None
    if set(raw) == {"train"} and isinstance(raw["train"], dict):
        raw = raw["train"]
    out = {str(k).replace("-", "_"): v for k, v in raw.items()}
    bad = sorted(k for k in out if k not in TRAIN_KEYS)
    if bad:
        raise ValueError(f"unknown config key(s) {', '.join(bad)} in {path}; valid keys: {', '.join(TRAIN_KEYS)}")
    for dest, typ, _, _ in _TRAIN_OPTIONS:
        if dest in out and out[dest] is not None:
            v = out[dest]
            ok = isinstance(v, bool) if typ is bool else (isinstance(v, (int, float)) and not isinstance(v, bool)
                                                          if typ is float else isinstance(v, typ) and not isinstance(v, bool))
            if not ok:
                raise ValueError(f"config key {dest}={v!r} in {path} must be of type {typ.__name__}")
            out[dest] = typ(v) if typ is float else v
    return out


def resolve_train_options(args: argparse.Namespace) -> dict[str, Any]:
    """defaults < TOML file (--config) < explicit flags."""
    opts = {dest: default for dest, _, default, _ in _TRAIN_OPTIONS}
    if getattr(args, "config", None):
        opts.update(load_toml_config(args.config))
    opts.update({k: v for k, v in vars(args).items() if k in opts})
    return opts


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


def check_train_options(o: dict[str, Any]) -> None:
    """The `train` options that TrainConfig, AttackSpec and the data loaders do not check
    themselves (or check under another name); run before anything is loaded or written."""
    from empirical.data import check_dataset_spec
    from robust_features import checks as C

    check_dataset_spec(o["data"])
    for k in ("data_root", "arch", "adv", "eval_eps"):
        C.optional_str(k, o[k])
    if o["eval_norm"] is not None:
        C.one_of("eval_norm", o["eval_norm"], ("l2", "linf"), what="a threat model")
    C.non_empty_str("device", o["device"])
    for k in ("data_seed", "subset_seed", "seed"):
        C.seed(k, o[k])
    for k in ("n_train", "n_eval", "epochs", "batch_size"):   # absent = all / the default; 0 is not "absent"
        if o[k] is not None:
            C.positive_int(k, o[k])
    if o["lr"] is not None:
        C.positive_float("lr", o["lr"])
    for k in ("eval_steps", "eval_restarts", "adv_steps"):
        C.positive_int(k, o[k])
    if o["crop_padding"] is not None:
        C.non_negative_int("crop_padding", o["crop_padding"])


_BOOKKEEPING_KEYS = ("precision", "channels_last", "compile")   # may change on a resume (TrainConfig.fingerprint)


def check_rerun(out_dir: Path, resolved: dict[str, Any], *, resume: bool) -> None:
    """Refuse to resume in ``out_dir`` a run with other settings: the data, its subset, the
    architecture or the training config (bookkeeping such as precision aside) of the stored
    ``resolved_config.json`` differ from this command's. Changed evaluation options are fine
    (they only change the record). Nothing to refuse with ``--no-resume`` or without ``latest.pt``."""
    from robust_features.records import to_jsonable

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
def _cmd_train(args: argparse.Namespace) -> int:
    import torch

    from empirical.data import Augment, load_dataset
    from empirical.evaluate import AttackSpec, evaluate
    from empirical.data import stratified_subset
    from empirical.models import build_model, canonical_arch, default_arch
    from empirical.threat import ThreatModel
    from empirical.train import NonFiniteLossError, TrainConfig, fit
    from robust_features.locks import rank0_lock
    from robust_features.records import atomic_write_json, utc_now, write_record

    started_at, t0 = utc_now(), time.perf_counter()
    o = resolve_train_options(args)
    out_dir = Path(args.out_dir)
    check_train_options(o)
    small = o["data"] in ("digits", "synthetic")
    adv = ThreatModel.parse(o["adv"]) if o["adv"] is not None else None
    arch = canonical_arch(o["arch"] if o["arch"] is not None else default_arch(o["data"]))
    from empirical.distributed import check_same_config, init_distributed, local_device, shutdown

    dev = _device(o["device"])
    info = init_distributed(dev)  # single process unless launched by torchrun
    # the process group is torn down on every exit path (an error on one rank included), so no
    # rank aborts in gloo's destructor at interpreter exit
    stack = contextlib.ExitStack()
    try:
        dev = local_device(dev, info)
        # one writer per run folder: rank 0 holds OUT_DIR/.lock until the record is written
        stack.enter_context(rank0_lock(out_dir, info, purpose="train"))
        if info.is_distributed and info.is_main and o["download"]:
            load_dataset(o["data"], root=o["data_root"], download=True, seed=o["data_seed"])
        if info.is_distributed:
            import torch.distributed as tdist

            tdist.barrier()  # rank 0 downloads once; the others read what it fetched
        d = load_dataset(o["data"], root=o["data_root"], download=o["download"] and info.is_main, seed=o["data_seed"])
        train_sub = stratified_subset(d.x_train, d.y_train, o["n_train"], seed=o["subset_seed"], name="n_train")
        x_train, y_train = d.x_train[train_sub.indices], d.y_train[train_sub.indices]
        big = d.image_size >= 32
        crop = o["crop_padding"] if o["crop_padding"] is not None else (4 if big else 0)
        flip = o["flip"] if o["flip"] is not None else big
        cfg = TrainConfig(
            # an absent option takes the default; an explicit 0 is refused by TrainConfig, never replaced
            epochs=_default(o["epochs"], 15 if small else 20),
            batch_size=_default(o["batch_size"], 64 if small else 512),
            lr=_default(o["lr"], 0.05 if small else 0.2), momentum=o["momentum"], weight_decay=o["weight_decay"],
            schedule=o["schedule"], label_smoothing=o["label_smoothing"],
            augment=Augment(crop_padding=crop, flip=flip) if (crop or flip) else None, adv=adv,
            adv_method=o["adv_method"], adv_steps=o["adv_steps"], adv_step_size=o["adv_step_size"],
            optimizer=o["optimizer"], seed=o["seed"], precision=o["precision"], channels_last=o["channels_last"],
            compile=o["compile"],
        )
        eval_norm = _default(o["eval_norm"], adv.norm if adv else "l2")
        eval_eps = _parse_eps_list(o["eval_eps"]) if o["eval_eps"] is not None else [adv.eps if adv else 0.25]
        attacks = [AttackSpec(eval_norm, e, steps=o["eval_steps"], restarts=o["eval_restarts"],
                              random_start=o["eval_restarts"] > 1) for e in eval_eps]
        resolved = {**o, "arch": arch, "epochs": cfg.epochs, "batch_size": cfg.batch_size, "lr": cfg.lr,
                    "crop_padding": crop, "flip": flip, "eval_norm": eval_norm, "eval_eps": eval_eps,
                    "device": str(dev), "out_dir": str(out_dir), "train_config": cfg}
        # every rank must run the same command (the device differs per rank, so it is left out)
        check_same_config({k: v for k, v in resolved.items() if k != "device"}, info)
        if info.is_distributed:
            resolved["world_size"] = info.world_size
        # a rerun in a folder holding a run with other settings is refused before anything is written
        check_rerun(out_dir, resolved, resume=o["resume"])

        def write_resolved(first_epoch: int) -> None:    # called by fit once latest.pt is checked
            if info.is_main:
                atomic_write_json(out_dir / "resolved_config.json", resolved)

        torch.manual_seed(o["seed"])
        model = build_model(arch, num_classes=d.num_classes, in_channels=d.in_channels, image_size=d.image_size,
                            mean=d.mean, std=d.std)
        if o["progress"] and info.is_main:
            kind = adv.describe() + " " + cfg.adv_method.upper() + "-AT" if adv else "standard"
            print(f"train {arch} on {d.describe()} | {kind} | {cfg.epochs} epochs, batch {cfg.batch_size}, "
                  f"lr {cfg.lr} ({cfg.schedule}) | device {_device_name(dev)}")
        try:
            res = fit(model, x_train, y_train, cfg, device=dev, out_dir=out_dir, eval_data=(d.x_test, d.y_test),
                      resume=o["resume"], progress=o["progress"] and info.is_main, dataset=d.name,
                      checkpoint_extra={"data_root": o["data_root"], "data_seed": o["data_seed"],
                                        "world_size": info.world_size}, dist_info=info,
                      on_start=write_resolved)
        except NonFiniteLossError as exc:
            print(f"robust-features train: error: {exc}")
            return 3
        if not info.is_main:  # rank 0 evaluates and writes the record
            return 0
        eval_sub = stratified_subset(d.x_test, d.y_test, o["n_eval"], seed=o["subset_seed"], name="n_eval")
        n = eval_sub.n
        ev = evaluate(res.model, d.x_test[eval_sub.indices], d.y_test[eval_sub.indices], attacks=attacks, device=dev,
                      seed=o["seed"])
        from empirical.evaluate import accuracy

        clean_all = accuracy(res.model, d.x_test, d.y_test, device=dev)
        from robust_features.records import file_sha256

        metrics = {"clean_accuracy": clean_all, "robust_accuracy": ev["robust"], "n_robust_eval": n,
                   "n_test": int(d.x_test.shape[0]), "epochs_completed": len(res.history),
                   "final_train_loss": res.history[-1]["train_loss"] if res.history else None,
                   "train_seconds": res.wall_seconds,
                   "train_images_per_second": len(res.history) * x_train.shape[0] / max(res.wall_seconds, 1e-9)}
        write_record(out_dir / "train.json", experiment="empirical.train", config=resolved, metrics=metrics,
                     seeds={"seed": o["seed"], "data_seed": o["data_seed"]}, device=_device_name(dev),
                     started_at=started_at, start_time=t0,
                     extra={"attacks": ev["attacks"], "history": res.history, "stopped_early": res.stopped_early,
                            "data": d.describe(), "subsets": {"train": train_sub.describe(), "eval": eval_sub.describe()},
                            "checkpoint": {"path": "model.pt",
                                                                 "sha256": file_sha256(out_dir / "model.pt")}})
        rob = ", ".join(f"{ev['attacks'][k]}: {100 * v:.1f}%" for k, v in ev["robust"].items())
        print(f"clean {100 * clean_all:.1f}% (n={d.x_test.shape[0]}) / robust {rob} (n={n}); "
              f"record {out_dir / 'train.json'}")
        if res.stopped_early:
            print(res.stopped_early)
        return 0
    finally:
        stack.close()
        shutdown()


# ---------------------------------------------------------------------------------------------
# eval / attack
# ---------------------------------------------------------------------------------------------
def _load_for_checkpoint(args: argparse.Namespace, dev: Any = None):
    from empirical.checkpoint import load_model, read_sidecar
    from empirical.data import load_dataset

    meta = read_sidecar(args.checkpoint)
    extra = meta.get("extra") or {}
    data = args.data if args.data is not None else meta.get("dataset")
    if not data or data == "unknown":
        raise ValueError(f"checkpoint {args.checkpoint} does not name its dataset; pass --data")
    root = args.data_root if args.data_root is not None else extra.get("data_root")
    seed = args.data_seed if args.data_seed is not None else int(extra.get("data_seed") or 0)
    d = load_dataset(data, root=root, seed=seed)
    dev = _device(args.device) if dev is None else dev
    model = load_model(args.checkpoint, device=dev)
    if (d.in_channels, d.image_size, d.num_classes) != (meta["in_channels"], meta["image_size"], meta["num_classes"]):
        raise ValueError(f"dataset {d.name} ({d.in_channels}x{d.image_size}, {d.num_classes} classes) does not match "
                         f"the checkpoint ({meta['in_channels']}x{meta['image_size']}, {meta['num_classes']} classes)")
    return d, model, dev, meta, {"data": data, "data_root": root, "data_seed": seed}


def _check_checkpoint_args(args: argparse.Namespace) -> None:
    """The options `eval` and `attack` share, checked before the checkpoint or data are read."""
    from robust_features import checks as C

    if args.n is not None:                       # absent = the whole split
        C.positive_int("n", args.n)
    for k in ("subset_seed", "seed"):
        C.seed(k, getattr(args, k))
    if args.data_seed is not None:
        C.seed("data_seed", args.data_seed)
    for k in ("steps", "restarts", "batch_size"):
        C.positive_int(k, getattr(args, k))
    C.optional_positive_float("step_size", args.step_size, none=" (None = 2.5*eps/steps)")


def _split(d, split: str, n: int | None, seed: int = 0):
    """The examples of ``split``: all, or a seeded class-stratified sample of ``n`` (and its description)."""
    from empirical.data import stratified_subset

    x, y = (d.x_test, d.y_test) if split == "test" else (d.x_train, d.y_train)
    sub = stratified_subset(x, y, n, seed=seed, name="n")
    return x[sub.indices], y[sub.indices], sub


def _eval_attacks(args: argparse.Namespace) -> tuple[str, ...]:
    """The attacks of ``eval`` in run order: ``pgd`` (the PGD of --steps/--restarts) first, then the
    AutoAttack-style ones, from --attack (repeatable) and --suite; () = PGD alone (the default)."""
    from empirical.autoattack import ATTACKS, SUITES

    names: list[str] = []
    for s in args.suite or []:
        if s not in SUITES:
            raise ValueError(f"--suite {s!r} is not a suite; valid: {', '.join(SUITES)}")
        names += SUITES[s]
    for a in args.attack or []:
        if a != "pgd" and a not in ATTACKS:
            raise ValueError(f"--attack {a!r} is not an attack; valid: pgd, {', '.join(ATTACKS)}")
        names.append(a)
    ordered = tuple(dict.fromkeys(["pgd", *names] if names and "pgd" not in names else names))
    return tuple(a for a in (("pgd",) + ATTACKS) if a in ordered)


def _cmd_eval(args: argparse.Namespace) -> int:
    from robust_features.records import file_sha256
    from empirical.distributed import check_same_config, init_distributed, local_device, shutdown
    from empirical.evaluate import AttackSpec, evaluate
    from empirical.threat import ThreatModel
    from robust_features.records import utc_now, write_record

    started_at, t0 = utc_now(), time.perf_counter()
    _check_checkpoint_args(args)
    threats = [ThreatModel.parse(t) for t in (args.threat if args.threat is not None else ["l2:0.25"])]
    attacks = _eval_attacks(args)
    from robust_features import checks as C

    for k in ("apgd_steps", "apgd_targets", "square_queries"):
        C.positive_int(k, getattr(args, k))
    dev = _device(args.device)
    info = init_distributed(dev)  # single process unless launched by torchrun
    try:
        if attacks and info.is_distributed:
            raise ValueError("--attack/--suite (the worst-case ensemble) runs in one process; run it without torchrun")
        dev = local_device(dev, info)
        d, model, dev, meta, data_cfg = _load_for_checkpoint(args, dev)
        x, y, sub = _split(d, args.split, args.n, args.subset_seed)
        specs = [AttackSpec(t.norm, t.eps, steps=args.steps, step_size=args.step_size, restarts=args.restarts,
                            random_start=args.random_start or args.restarts > 1) for t in threats]
        out = Path(args.out) if args.out is not None else Path(args.checkpoint).with_name("eval.json")
        config = {"checkpoint": str(args.checkpoint), "checkpoint_sha256": file_sha256(args.checkpoint),
                  "arch": meta["arch"], **data_cfg, "split": args.split, "n": int(x.shape[0]),
                  "attacks": [s.__dict__ for s in specs], "batch_size": args.batch_size, "subset": sub.describe()}
        if attacks:
            config["worst_case"] = {"attacks": list(attacks), "budgets": _ensemble_budgets(args, attacks)}
        # every rank must evaluate the same checkpoint on the same examples with the same attacks
        check_same_config({**config, "seed": args.seed, "out": str(out)}, info)
        if attacks:
            metrics, extra = _worst_case_eval(model, x, y, specs, attacks, args, dev)
        else:
            # each rank attacks its run of whole batches; the counts are summed (exactly the 1-process numbers)
            ev = evaluate(model, x, y, attacks=specs, device=dev, batch_size=args.batch_size, seed=args.seed,
                          dist_info=info)
            metrics = {"clean_accuracy": ev["clean"], "robust_accuracy": ev["robust"], "n": ev["n"]}
            extra = {"attacks": ev["attacks"]}
        if not info.is_main:
            return 0
        if info.is_distributed:
            config["world_size"] = info.world_size
        write_record(out, experiment="empirical.eval", config=config, metrics=metrics, seeds={"seed": args.seed},
                     device=_device_name(dev), started_at=started_at, start_time=t0, extra=extra)
    finally:
        shutdown()
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
    return 0


def _ensemble_budgets(args: argparse.Namespace, attacks: tuple[str, ...]) -> dict[str, dict[str, int]]:
    b = {"apgd-ce": {"steps": args.apgd_steps}, "apgd-t": {"steps": args.apgd_steps, "n_target_classes": args.apgd_targets},
         "square": {"queries": args.square_queries}}
    return {a: b[a] for a in attacks if a in b}


def _worst_case_eval(model, x, y, specs, attacks, args, dev) -> tuple[dict, dict]:
    """Per threat: PGD on every example, then each AutoAttack-style attack on those still robust;
    an example is robust only if every attack failed. Masks are recorded by their sha256."""
    import hashlib

    import numpy as np
    import torch

    from empirical.autoattack import ensemble, sanity_flags
    from empirical.evaluate import predict, robust_mask
    from robust_features.records import pack_bits

    xd, yd = x.to(dev), y.to(dev)
    clean = (predict(model, x, batch_size=args.batch_size, device=dev, precision=args.precision) == y.cpu()).numpy()
    metrics: dict = {"clean_accuracy": float(clean.mean()), "n": int(x.shape[0]), "robust_accuracy": {},
                     "seconds": {}, "sanity_flags": {}}
    extra: dict = {"threats": {}, "mask_sha256": {}, "sanity_explanations": {}, "sanity_raised": {}}
    worst_by_norm: dict[str, dict[float, float]] = {}
    sha = lambda m: hashlib.sha256(bytes.fromhex(pack_bits(m))).hexdigest()  # noqa: E731
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
            gen.manual_seed(args.seed)
            m = robust_mask(model, x, y, threat=spec.threat, steps=spec.steps, step_size=spec.step,
                            restarts=spec.restarts, random_start=spec.random_start, batch_size=args.batch_size,
                            device=dev, generator=gen, precision=args.precision).numpy()
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
                               budgets=_ensemble_budgets(args, rest), seed=args.seed, precision=args.precision,
                               batch_size=args.batch_size)
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
                             precision=args.precision)
            metrics["sanity_flags"][key] = f["flags"]
            extra["sanity_explanations"][key] = f["explanations"]
            extra["sanity_raised"].update({f"{key} {k}": f["explanations"][k] for k, v in f["flags"].items() if v})
        metrics["robust_accuracy"][key] = per
        metrics["seconds"][key] = secs
        extra["mask_sha256"][key] = masks
        extra["threats"][key] = spec.describe() if "pgd" in attacks else f"{spec.norm} eps={spec.eps:g}"
    for norm, by_eps in worst_by_norm.items():
        if len(by_eps) > 1:
            f = sanity_flags(robust_accuracy_by_eps=by_eps)
            metrics["sanity_flags"][f"{norm}_monotone"] = {"non_monotone_in_eps": f["flags"]["non_monotone_in_eps"]}
            extra["sanity_explanations"][f"{norm}_monotone"] = {"non_monotone_in_eps": f["explanations"]["non_monotone_in_eps"]}
            if f["flags"]["non_monotone_in_eps"]:
                extra["sanity_raised"][f"{norm} non_monotone_in_eps"] = f["explanations"]["non_monotone_in_eps"]
    extra["budgets"] = _ensemble_budgets(args, attacks)
    extra["attack_order"] = list(attacks)
    return metrics, extra


def _cmd_attack(args: argparse.Namespace) -> int:
    import io

    import torch

    from empirical.attacks import pgd
    from robust_features.records import file_sha256
    from empirical.evaluate import predict
    from empirical.threat import Attack, ThreatModel
    from robust_features.records import atomic_write_bytes, utc_now, write_record

    started_at, t0 = utc_now(), time.perf_counter()
    _check_checkpoint_args(args)
    threat = ThreatModel.parse(args.threat)
    d, model, dev, meta, data_cfg = _load_for_checkpoint(args, _device(args.device))
    x, y, sub = _split(d, args.split, args.n, args.subset_seed)
    gen = torch.Generator(device=dev)
    gen.manual_seed(args.seed)
    if args.targeted == "none":
        labels = y
    elif args.targeted == "next":
        labels = (y + 1) % d.num_classes
    else:
        g = torch.Generator().manual_seed(args.seed)
        labels = (y + torch.randint(1, d.num_classes, y.shape, generator=g)) % d.num_classes
    attack = Attack(threat.norm, threat.eps, steps=args.steps, step_size=args.step_size, restarts=args.restarts,
                    random_start=args.random_start, targeted=args.targeted != "none")
    step = attack.step
    t_att = time.perf_counter()
    x_adv = pgd(model, x.to(dev), labels.to(dev), **attack.pgd_kwargs(), generator=gen, batch_size=args.batch_size).cpu()
    attack_seconds = time.perf_counter() - t_att
    pred_clean, pred_adv = predict(model, x, device=dev), predict(model, x_adv, device=dev)
    success = (pred_adv == labels) if args.targeted != "none" else (pred_adv != y)
    delta = (x_adv - x).flatten(1)
    out_dir = Path(args.out_dir)
    buf = io.BytesIO()
    torch.save({"x_adv": x_adv.contiguous(), "y": y.clone(), "attack_labels": labels.clone()}, buf)
    atomic_write_bytes(out_dir / "adversarial.pt", buf.getvalue())
    config = {"checkpoint": str(args.checkpoint), "checkpoint_sha256": file_sha256(args.checkpoint),
              "arch": meta["arch"], **data_cfg, "split": args.split, "n": int(x.shape[0]), "norm": threat.norm,
              "eps": threat.eps, "steps": args.steps, "step_size": step, "restarts": args.restarts,
              "random_start": args.random_start, "targeted": args.targeted, "subset": sub.describe()}
    metrics = {"success_rate": float(success.float().mean()), "clean_accuracy": float((pred_clean == y).float().mean()),
               "adversarial_accuracy": float((pred_adv == y).float().mean()),
               "mean_l2": float(delta.norm(dim=1).mean()), "max_l2": float(delta.norm(dim=1).max()),
               "max_linf": float(delta.abs().max()), "attack_seconds": attack_seconds,
               "images_per_second": x.shape[0] / max(attack_seconds, 1e-9)}
    write_record(out_dir / "attack.json", experiment="empirical.attack", config=config, metrics=metrics,
                 seeds={"seed": args.seed}, device=_device_name(dev), started_at=started_at, start_time=t0,
                 extra={"tensors": {"path": "adversarial.pt", "sha256": file_sha256(out_dir / "adversarial.pt")}})
    desc = attack.describe() + (f" ({args.targeted} target)" if args.targeted != "none" else "")
    print(f"success {100 * metrics['success_rate']:.1f}% | clean {100 * metrics['clean_accuracy']:.1f}% -> "
          f"adversarial {100 * metrics['adversarial_accuracy']:.1f}% at {desc}, n={x.shape[0]}; "
          f"record {out_dir / 'attack.json'}")
    return 0


def _add_checkpoint_options(p: argparse.ArgumentParser) -> None:
    from robust_features import checks as C

    p.add_argument("--checkpoint", required=True, type=C.path_arg,
                   help="model.pt written by `train` (with its model.json)")
    p.add_argument("--data", default=None, type=C.nonempty_arg,
                   help="dataset (default: the one named in the checkpoint)")
    p.add_argument("--data-root", default=None, type=C.path_arg,
                   help="data folder (default: the one recorded at training)")
    p.add_argument("--cache-dir", default=None, help=CACHE_DIR_HELP)
    p.add_argument("--data-seed", type=int, default=None, help="digits split / synthetic seed (default: recorded)")
    p.add_argument("--split", choices=("test", "train"), default="test")
    p.add_argument("--n", type=int, default=None,
                   help="use a seeded class-stratified sample of N images of the split (default: all)")
    p.add_argument("--subset-seed", type=int, default=0, help="seed of the --n sample (default 0)")
    p.add_argument("--steps", type=int, default=20, help="PGD steps (default 20)")
    p.add_argument("--step-size", type=C.number_arg, default=None, help="PGD step size (default 2.5*eps/steps)")
    p.add_argument("--restarts", type=int, default=1, help="random restarts, batched; per-example worst case kept")
    p.add_argument("--random-start", action="store_true", help="start the first restart at a random point too")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", type=C.nonempty_arg)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train``, ``eval`` and ``attack`` to the top-level parser."""
    from robust_features import checks as C
    p = subparsers.add_parser("train", help="standard or adversarial training (writes model.pt, train.json)",
                              description="Train a model; options may come from --config TOML (flags win).")
    p.add_argument("--out-dir", required=True, type=C.path_arg,
                   help="run folder: latest.pt, model.pt + model.json, train.json")
    p.add_argument("--config", default=None, type=C.path_arg,
                   help="TOML file of options (keys as the flags, e.g. adv = 'l2:0.5')")
    p.add_argument("--cache-dir", default=None, help=CACHE_DIR_HELP)
    _add_options(p, _TRAIN_OPTIONS)
    p.set_defaults(func=_cmd_train)

    p = subparsers.add_parser("eval", help="clean and PGD robust accuracy of a checkpoint (writes eval.json)")
    _add_checkpoint_options(p)
    p.add_argument("--threat", action="append", default=None,
                   help="threat model NORM:EPS, repeatable (default l2:0.25), e.g. --threat linf:8/255")
    p.add_argument("--out", default=None, type=C.path_arg,
                   help="record path (default: eval.json beside the checkpoint)")
    p.add_argument("--attack", action="append", default=None, metavar="NAME",
                   help="add an attack to the worst-case evaluation, repeatable: pgd (the --steps/--restarts PGD), "
                        "apgd-ce, apgd-t, square; run cheap first, each on the examples still robust")
    p.add_argument("--suite", action="append", default=None, metavar="NAME",
                   help="a named attack list: standard = apgd-ce, apgd-t, square (with PGD first)")
    p.add_argument("--apgd-steps", type=int, default=100, help="APGD-CE / APGD-T iterations (default 100)")
    p.add_argument("--apgd-targets", type=int, default=9, help="APGD-T target classes (default 9)")
    p.add_argument("--square-queries", type=int, default=5000, help="Square queries (default 5000)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "auto"),
                   help="forward passes of the worst-case attacks (default fp32)")
    p.set_defaults(func=_cmd_eval)

    p = subparsers.add_parser("attack", help="PGD adversarial examples for a checkpoint (adversarial.pt, attack.json)")
    _add_checkpoint_options(p)
    p.add_argument("--threat", default="l2:0.5", help="threat model NORM:EPS (default l2:0.5)")
    p.add_argument("--targeted", choices=("none", "next", "random"), default="none",
                   help="untargeted, target (y+1) mod C, or a random other class")
    p.add_argument("--out-dir", required=True, type=C.path_arg)
    p.set_defaults(func=_cmd_attack)


__all__ = ["TRAIN_KEYS", "load_toml_config", "register", "resolve_train_options"]
