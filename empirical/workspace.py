"""The staged workspace: runs each stage of one experiment chain at most once, under one folder.

:class:`Workspace` trains models, builds the constructed datasets and evaluates, caching each as
a stage of :class:`empirical.stages.StageStore` (one validity rule: key, artifacts' sha256,
completeness; commit and timing recorded). The experiments of :mod:`empirical.experiments`
(Figure 2, Table 1, Figure 3) call its public methods: :meth:`Workspace.data`,
:meth:`Workspace.model`, :meth:`Workspace.dataset`, :meth:`Workspace.evaluate`,
:meth:`Workspace.evaluate_suite`, :meth:`Workspace.record`, :meth:`Workspace.loaded_model`,
:meth:`Workspace.note_time` and :attr:`Workspace.timings`.

Layout: ``root/models/<name>/`` (checkpoint, ``latest.pt`` while training, ``stage.json``),
``root/datasets/<kind>/`` (shards, manifest, ``stage.json``), ``root/evals/<name>.json``, and the
records at ``root/*.json``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from empirical import constructions as registry
from empirical.experiments import ExperimentConfig, Recipe
from empirical.stages import StageStore
from empirical.shards import differences as _differences
from empirical.threat import next_label
from foundation.records import atomic_write_json, json_sha256, to_jsonable, write_record

#: the seed of the evaluation attacks (the strong PGD and the worst-case suite) is the config's seed
#: plus this offset, so they draw other numbers than the training of the same seed
ATTACK_SEED_OFFSET = 12345

if TYPE_CHECKING:   # annotations only
    from torch import nn

    from empirical.data import ImageData, Subset
    from empirical.distributed import DistInfo
    from empirical.shards import ConstructedDataset


def _memory_format(model: Any, recipe: Recipe, device: str) -> Any:
    """The model in the memory format its recipe trains in (channels_last where the recipe asks for
    it), whether it was just trained or loaded, so every later stage runs the same kernels."""
    from empirical.models import in_memory_format

    return in_memory_format(model, recipe.channels_last, device)


# ---------------------------------------------------------------------------------------------
@dataclass
class Workspace:
    """Runs and caches the stages of one experiment chain under ``root``.

    Layout: ``root/models/<name>/`` (core checkpoint + stage.json), ``root/datasets/<kind>/``
    (shards + manifest + stage.json), ``root/evals/<name>.json``, records at ``root/*.json``.
    ``timings`` collects per-stage wall seconds and whether the stage was skipped.

    ``dist_info`` (:mod:`empirical.distributed`, under ``torchrun``) splits the dataset
    constructions across ranks; models are always trained in one process (rank 0 trains a
    missing model while the other ranks wait, see ``robust-features construct``).

    A constructed dataset is never replaced behind the user's back: a folder built with other
    settings (or from another source model, or another base dataset) is refused with the
    differing fields named, unless ``overwrite`` is set (``--overwrite``), which deletes and
    rebuilds it. :meth:`writing` holds the workspace's lock, runs that check for the datasets a
    command will use before anything is written, and then saves ``resolved_config.json``.

    Every stage goes through :attr:`store` (:class:`empirical.stages.StageStore`): its key is the
    hash of its inputs, and it is reused only when :meth:`StageStore.check` says ``valid``; a
    model whose training started under the same key is ``pending`` and resumes from
    ``latest.pt``; a stale model or evaluation is redone; a stale dataset is refused (naming
    the differing fields) unless ``overwrite``.
    """

    cfg: ExperimentConfig
    root: Path
    device: str = "cpu"
    progress: bool = False
    dist_info: DistInfo | None = None
    overwrite: bool = False
    subsets: dict[str, Any] = field(default_factory=dict)
    store: StageStore = field(init=False)
    data_sha256: str = field(init=False, default="")
    _data: ImageData | None = field(default=None, init=False, repr=False)
    _models: dict[str, nn.Module] = field(default_factory=dict, init=False, repr=False)
    _recipes: dict[str, Recipe] = field(default_factory=dict, init=False, repr=False)
    _model_hash: dict[str, str] = field(default_factory=dict, init=False, repr=False)
    _datasets: dict[str, ConstructedDataset] = field(default_factory=dict, init=False, repr=False)
    _eval_subset: Subset | None = field(default=None, init=False, repr=False)
    _masks: dict[str, dict[str, Any]] = field(default_factory=dict, init=False, repr=False)
    _sanity: dict[str, dict[str, Any]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.store = StageStore(self.root)

    # ---- public helpers
    @property
    def timings(self) -> dict[str, dict[str, Any]]:
        """Per stage (in the order run): wall seconds, whether it was skipped, and its extras."""
        return self.store.timings

    def note_time(self, stage: str, seconds: float, skipped: bool = False, **extra: Any) -> None:
        """Add a stage's wall time to :attr:`timings` (e.g. ``transfer``, ``figures``)."""
        self.store.note(stage, seconds, skipped, **extra)

    def loaded_model(self, name: str) -> nn.Module | None:
        """Model ``name`` if this workspace has trained or loaded it (None otherwise)."""
        return self._models.get(name)

    def log(self, msg: str) -> None:
        if self.progress:
            print(f"[{self.cfg.name}] {msg}", flush=True)

    # ---- data
    def data(self) -> Any:
        """The base dataset D, with ``n_train`` / ``n_test`` applied as seeded class-stratified samples
        (``subset_seed``; :func:`empirical.data.stratified_subset`), and a fingerprint."""
        if self._data is None:
            from empirical.data import ImageData, load_dataset, stratified_subset

            timer = self.store.timer()
            d = load_dataset(self.cfg.data, root=self.cfg.data_root, seed=self.cfg.seed)
            assert isinstance(d, ImageData)
            tr = stratified_subset(d.x_train, d.y_train, self.cfg.n_train, seed=self.cfg.subset_seed, name="n_train")
            te = stratified_subset(d.x_test, d.y_test, self.cfg.n_test, seed=self.cfg.subset_seed, name="n_test")
            self.subsets = {"train": tr.describe(), "test": te.describe()}
            if self.cfg.n_train is not None or self.cfg.n_test is not None:
                meta = dict(d.meta)
                if "robust_label_train" in meta:       # synthetic ground truth follows the subset
                    meta["robust_label_train"] = meta["robust_label_train"][tr.indices]
                    meta["robust_label_test"] = meta["robust_label_test"][te.indices]
                d = dataclasses.replace(
                    d, x_train=d.x_train[tr.indices].contiguous(), y_train=d.y_train[tr.indices].contiguous(),
                    x_test=d.x_test[te.indices].contiguous(), y_test=d.y_test[te.indices].contiguous(), meta=meta)
            h = hashlib.sha256()     # streamed over the four tensors (the same bytes as one bytes_sha256)
            for t in (d.x_train, d.y_train, d.x_test, d.y_test):
                h.update(t.contiguous().numpy().tobytes())
            self.data_sha256 = h.hexdigest()
            self._data = d
            timer.done("data", False, n_train=int(d.y_train.shape[0]),
                       n_test=int(d.y_test.shape[0]), sha256=self.data_sha256)
        return self._data

    def eval_subset(self) -> Any:
        """The test examples attacked for robust accuracy: a stratified sample of ``eval.n_robust``
        (drawn with ``subset_seed``, so it is nested in the ``n_test`` sample)."""
        if self._eval_subset is None:
            from empirical.data import stratified_subset

            d = self.data()
            self._eval_subset = stratified_subset(d.x_test, d.y_test, self.cfg.eval.n_robust,
                                                  seed=self.cfg.subset_seed, name="eval.n_robust")
            self.subsets["eval"] = self._eval_subset.describe()
        return self._eval_subset

    # ---- models
    def model(self, name: str, *, arch: str, recipe: Recipe, train_on: str = "D", seed: int | None = None) -> Any:
        """Train (or load) model ``name`` of ``arch`` with ``recipe`` on D or a constructed set."""
        if name in self._models:
            return self._models[name]
        from empirical.checkpoint import load_model
        from empirical.models import build_model
        from empirical.train import fit

        d = self.data()
        seed = self.cfg.seed if seed is None else seed
        if train_on == "D":
            x, y, upstream = d.x_train, d.y_train, self.data_sha256
        else:
            ds = self.dataset(train_on)
            x, y, upstream = ds.x, ds.y, ds.content_sha256
            mask = registry.get(train_on).train_mask
            if mask is not None:       # only the examples the row's mask keeps (D_err: the teacher's mistakes)
                if mask not in ds.aux:
                    raise ValueError(f"{ds.root} has no per-example {mask!r} (the mask its construction trains on)")
                keep = ds.aux[mask].bool()
                x, y = x[keep], y[keep]
        key = self._model_key(arch=arch, recipe=recipe, seed=seed, train_on=train_on, upstream=upstream)
        stage = self.store.model_record(name)
        folder = stage.parent
        timer = self.store.timer()
        status = self.store.check(stage, key)
        if status.valid:
            ckpt_name = status.record.get("checkpoint", "model.pt")
            model = _memory_format(load_model(folder / ckpt_name, device=self.device), recipe, self.device)
            model.eval()
            self._models[name], self._model_hash[name] = model, status.artifacts[ckpt_name]
            self._recipes[name] = recipe
            timer.done(f"train:{name}", True, built_seconds=status.record.get("wall_seconds"))
            self.log(f"model {name}: valid checkpoint, skipped")
            return model
        if status.state == "stale":
            self.log(f"model {name}: stale stage ({status.reason}), retraining")
            shutil.rmtree(folder)
        from empirical.distributed import SINGLE_PROCESS

        if self.dist_info is not None and not self.dist_info.is_main:
            raise RuntimeError(f"model {name} is missing on rank {self.dist_info.rank}; rank 0 must train it "
                               "before the other ranks use it")
        self.log(f"model {name}: training {arch} on {train_on} ({recipe.epochs} epochs)")
        import torch

        if status.state == "missing" or not (folder / "latest.pt").is_file():
            # the stage is under way from here: a crash leaves a pending record whose latest.pt resumes
            self.store.save(stage, key, {"arch": arch, "train_on": train_on, "recipe": recipe, "seed": seed},
                            complete=False)
        torch.manual_seed(seed)
        model = build_model(arch, num_classes=d.num_classes, in_channels=d.in_channels,
                            image_size=d.image_size, mean=d.mean, std=d.std)
        result = fit(model, x, y, recipe.to_train_config(seed), device=self.device, out_dir=folder,
                     resume=True, progress=self.progress, dist_info=SINGLE_PROCESS)
        model = _memory_format(result.model, recipe, self.device)
        model.eval()
        ckpt = folder / "model.pt"
        if not ckpt.is_file():   # fit writes model.pt when it knows the architecture; make sure it exists
            from empirical.checkpoint import save_checkpoint

            save_checkpoint(model, ckpt, arch=arch, dataset=d.name, num_classes=d.num_classes,
                            in_channels=d.in_channels, image_size=d.image_size, mean=d.mean, std=d.std,
                            extra={"recipe": to_jsonable(recipe), "train_on": train_on, "seed": seed})
        info = self.store.save(stage, key, {"checkpoint": "model.pt", "arch": arch, "train_on": train_on,
                                            "recipe": recipe, "seed": seed, "history": result.history},
                               artifacts=("model.pt",), wall_seconds=result.wall_seconds)
        self._models[name], self._model_hash[name] = model, info["artifacts"]["model.pt"]
        self._recipes[name] = recipe
        # this run's rate: the epochs it trained (a resumed training trains fewer than recipe.epochs)
        timer.done(f"train:{name}", False, epochs=recipe.epochs, epochs_trained=result.epochs_trained,
                   resumed=result.resumed,
                   images_per_second=result.epochs_trained * int(x.shape[0]) / max(result.wall_seconds, 1e-9))
        return model

    def _model_key(self, *, arch: str, recipe: Recipe, seed: int, train_on: str, upstream: str) -> str:
        return json_sha256({"arch": arch, "recipe": recipe, "seed": seed, "train_on": train_on,
                            "upstream": upstream, "num_classes": self.data().num_classes})

    def model_sha256(self, name: str) -> str:
        return self._model_hash[name]

    # ---- reuse checks and the workspace lock
    def _base(self) -> dict[str, Any]:
        """The identity of the base dataset a construction starts from."""
        d = self.data()
        return {"dataset": d.name, "sha256": self.data_sha256, "n": int(d.y_train.shape[0])}

    def _source_identity(self, kind: str, hashes: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The source model(s) of ``kind`` as its manifest records them (one model: ``model``,
        ``arch``, ``checkpoint_sha256``; several: ``models``, a list of those). ``hashes`` gives the
        checkpoints' sha256 once the models are trained."""
        ids = [{"model": name, "arch": arch, **({"checkpoint_sha256": hashes[name]} if hashes is not None else {})}
               for name, arch in self.source_archs(kind).items()]
        return ids[0] if len(ids) == 1 else {"models": ids}

    def extra_models(self, kind: str) -> tuple[Any, ...]:
        """The further models construction ``kind`` is built from (its row's ``extra_models``:
        :class:`empirical.constructions.ExtraModel`, D_nt's ensemble, D_err's teacher), each trained on
        D with the ``std`` recipe and its overrides."""
        row = registry.get(kind)
        return tuple(row.extra_models(self.cfg.settings(kind), self.cfg.arch, self.cfg.seed)) if row.extra_models else ()

    def source_archs(self, kind: str) -> dict[str, str]:
        """Every model construction ``kind`` is built from, in the order its builder gets them: name -> arch."""
        return {**{name: self.cfg.arch for name in registry.get(kind).sources},
                **{m.name: m.arch for m in self.extra_models(kind)}}

    def source_models(self, kind: str) -> dict[str, Any]:
        """Train (or load) every model construction ``kind`` is built from: name -> model, in order."""
        out = {name: self.source_model(name) for name in registry.get(kind).sources}
        for m in self.extra_models(kind):
            out[m.name] = self.model(m.name, arch=m.arch, recipe=dataclasses.replace(self.cfg.std, **m.recipe),
                                     seed=m.seed)
        return out

    def dataset_differences(self, kind: str, manifest: Mapping[str, Any], *,
                            source_sha256: Mapping[str, str] | None = None) -> list[str]:
        """How the dataset in ``manifest`` differs from what this config builds for ``kind``:
        ``["targeted.eps 1.0 -> 0.9", ...]`` ([] = the same). The source models' checkpoints are
        compared when ``source_sha256`` (source name -> sha256) is given (known once they are trained)."""
        row = registry.get(kind)
        base = self._base()
        settings = manifest.get("settings", {}) or {}
        out = [f"{row.section}.{k} {settings.get(k)!r} -> {v!r}"
               for k, v in to_jsonable(asdict(self.cfg.settings(kind))).items() if settings.get(k) != v]
        old_base = settings.get("base", {}) or {}
        labels = {"dataset": "base dataset", "sha256": "base dataset sha256", "n": "base dataset size"}
        short = lambda v: f"{v[:12]}..." if isinstance(v, str) and len(v) > 16 else repr(v)  # noqa: E731
        out += [f"{labels.get(k, 'base ' + k)} {short(old_base.get(k))} -> {short(v)}"
                for k, v in to_jsonable(base).items() if old_base.get(k) != v]
        src = manifest.get("source", {}) or {}
        old_ids = src.get("models", [src]) if isinstance(src.get("models", [src]), list) else [src]
        archs = self.source_archs(kind)
        for i, (name, arch) in enumerate(archs.items()):
            old = old_ids[i] if i < len(old_ids) and isinstance(old_ids[i], Mapping) else {}
            if old.get("model", name) != name:
                out.append(f"source model {old.get('model')!r} -> {name!r}")
            if old.get("arch") != arch:
                out.append(f"arch (the source model's) {old.get('arch')!r} -> {arch!r}")
            new_sha = (source_sha256 or {}).get(name)
            if new_sha is not None and old.get("checkpoint_sha256") != new_sha:
                out.append(f"source model checkpoint sha256 {str(old.get('checkpoint_sha256'))[:12]}... -> "
                           f"{new_sha[:12]}... (models/{name} was retrained)")
        if len(old_ids) != len(archs):
            out.append(f"source models {len(old_ids)} -> {len(archs)}")
        return out

    #: what a dataset's stage record keeps of its manifest, to tell an edited manifest from a rebuilt one
    SNAPSHOT_FIELDS: tuple[str, ...] = ("settings", "source", "seed", "storage", "num_examples", "num_classes",
                                        "image_shape", "shard_size", "content_sha256", "label_histogram", "metrics")
    DERIVED_FIELDS: tuple[str, ...] = ("content_sha256", "label_histogram", "metrics")

    def _dataset_payload(self, kind: str, manifest: Mapping[str, Any]) -> dict[str, Any]:
        return {"kind": kind, "manifest": {k: manifest.get(k) for k in self.SNAPSHOT_FIELDS}}

    def dataset_edits(self, status: Any, manifest: Mapping[str, Any]) -> list[str]:
        """How a dataset folder contradicts itself ([] = it does not): its stage record or its
        manifest edited after it was written (body hashes), or the manifest no longer saying what
        the stage record recorded when the dataset was built (``settings.eps 1.0 -> 0.8``)."""
        from empirical.shards import manifest_edited

        out = []
        if status.edited:
            out.append(f"its stage record: {status.reason}")
        if manifest_edited(manifest):
            out.append("manifest.json: its body no longer hashes to its body_sha256")
        snap = (status.record or {}).get("manifest") if not status.edited else None
        if isinstance(snap, Mapping):
            # an unfinished build (a crash) has no content yet: only what it is built with is compared
            keys = [k for k in snap if manifest.get("complete") or k not in self.DERIVED_FIELDS]
            out += [f"manifest {d}" for d in _differences({k: snap[k] for k in keys}, {k: manifest.get(k) for k in keys})]
        return out

    def _refuse_edited(self, kind: str, folder: Path, edits: Sequence[str]) -> ValueError:
        return ValueError(f"{folder} ({kind}) was edited after it was written ({'; '.join(edits)}); it is kept: "
                          "restore it, or use --overwrite to delete and rebuild it")

    def _refuse_dataset(self, kind: str, folder: Path, diffs: Sequence[str]) -> ValueError:
        return ValueError(f"{folder} holds a {kind} built with other settings ({'; '.join(diffs)}); it is kept: use "
                          "another --out-dir, or --overwrite to delete and rebuild it")

    def check_reuse(self, kinds: Sequence[str]) -> None:
        """Before a command writes anything: refuse (``ValueError`` naming the differing fields) if a
        dataset folder of ``kinds`` holds a construction this config would not build, or if one of
        its source models would be retrained under another recipe (which would replace it later).
        Nothing to refuse with ``overwrite``, or when no such folder exists yet."""
        if self.overwrite:
            return
        from empirical.shards import read_manifest

        for kind in dict.fromkeys(kinds):
            folder = self.root / "datasets" / kind
            if not (folder / "manifest.json").is_file():
                continue
            try:
                manifest = read_manifest(folder)
            except ValueError as exc:
                raise ValueError(f"{exc}; it is kept: use another --out-dir, or --overwrite to delete and "
                                 "rebuild it") from None
            edits = self.dataset_edits(self.store.check(self.store.dataset_record(kind), ""), manifest)
            if edits:
                raise self._refuse_edited(kind, folder, edits)
            diffs = self.dataset_differences(kind, manifest)
            src = manifest.get("source", {}) or {}
            built_from = {i.get("model"): i.get("checkpoint_sha256") for i in src.get("models", [src])
                          if isinstance(i, Mapping)}
            for source_name in registry.get(kind).sources:
                if diffs:
                    break
                field_ = registry.SOURCE_MODELS[source_name]
                recipe = self.cfg.recipe(field_)
                key = self._model_key(arch=self.cfg.arch, recipe=recipe, seed=self.cfg.seed, train_on="D",
                                      upstream=self.data_sha256)
                status = self.store.check(self.store.model_record(source_name), key)
                info = status.record or {}
                if status.state == "missing":
                    continue
                if status.state == "stale" and info.get("key") != key:
                    old = info.get("recipe") or {}
                    why = [f"{field_}.{k} {old.get(k)!r} -> {v!r}" for k, v in to_jsonable(recipe).items()
                           if k in old and old.get(k) != v]
                    if info.get("seed") != self.cfg.seed:
                        why.append(f"seed {info.get('seed')!r} -> {self.cfg.seed!r}")
                    if info.get("arch") != self.cfg.arch:
                        why.append(f"arch {info.get('arch')!r} -> {self.cfg.arch!r}")
                    diffs = [f"its source model models/{source_name} would be retrained: "
                             + (", ".join(why) or "its training inputs changed")]
                elif status.artifacts.get(info.get("checkpoint", "model.pt")) != built_from.get(source_name):
                    diffs = [f"it was built from another checkpoint of models/{source_name}"]
            if diffs:
                raise self._refuse_dataset(kind, folder, diffs)

    @contextlib.contextmanager
    def writing(self, kinds: Sequence[str] = ()) -> Iterator[Workspace]:
        """Hold the workspace's lock (rank 0 under torchrun; a second writer is refused naming the
        process that holds it), refuse reusing ``kinds``' datasets built otherwise
        (:meth:`check_reuse`), and only then write ``resolved_config.json``."""
        from foundation.locks import rank0_lock

        with rank0_lock(self.root, self.dist_info, purpose=f"workspace {self.cfg.name}"):
            self.check_reuse(kinds)
            if self.dist_info is None or self.dist_info.is_main:
                atomic_write_json(self.root / "resolved_config.json", self.cfg)
            yield self

    # ---- constructed datasets
    def dataset(self, kind: str) -> Any:
        """Build (or load, hash-checked) the dataset of construction ``kind`` (a row of
        :mod:`empirical.constructions`: D_R / D_NR from the robust / standard model, D_rand / D_det,
        or a registered one), from its source models, with its section of the config."""
        if kind in self._datasets:
            return self._datasets[kind]
        from empirical.construct import BuildRequest
        from empirical.shards import DatasetEdited, load_constructed, read_manifest

        row = registry.get(kind)
        d, base = self.data(), self._base()
        sources = self.source_models(kind)
        hashes = {name: self.model_sha256(name) for name in sources}
        source = self._source_identity(kind, hashes)
        stage = self.store.dataset_record(kind)
        folder = stage.parent
        key = self._dataset_key(kind, source, base)
        timer = self.store.timer()
        stale = False
        main = self.dist_info is None or self.dist_info.is_main
        status = self.store.check(stage, key)
        diffs: list[str] = []
        reuse = status.valid
        if (folder / "manifest.json").is_file():
            m = read_manifest(folder)
            edits = self.dataset_edits(status, m)
            if edits:
                # what the folder says contradicts what was built: never trusted, never repaired silently
                if not self.overwrite:
                    raise self._refuse_edited(kind, folder, edits)
                self.log(f"dataset {kind}: edited after it was written ({'; '.join(edits)}); --overwrite: rebuilding")
                stale, reuse = True, False
            elif not status.valid:
                # the fields that differ explain a changed key; a folder built before the stage store (or whose
                # record was lost) with the same settings is checked by content below and recorded; an
                # unfinished one is resumed
                diffs = self.dataset_differences(kind, m, source_sha256=hashes)
                reuse = not diffs and bool(m.get("complete"))
        if reuse:
            try:
                ds = load_constructed(folder)        # shards, manifest body, content hash, labels, pixels, metrics
            except DatasetEdited as exc:
                if not self.overwrite:
                    raise self._refuse_edited(kind, folder, [str(exc)]) from None
                self.log(f"dataset {kind}: {exc}; --overwrite: rebuilding")
                stale = True
            except (ValueError, FileNotFoundError) as exc:
                self.log(f"dataset {kind}: {exc}; resuming/rebuilding damaged shards")
            else:
                if not status.valid and main:
                    self.store.save(stage, key, self._dataset_payload(kind, ds.manifest), artifacts=("manifest.json",))
                self._datasets[kind] = ds
                timer.done(f"construct:{kind}", True,
                           built_seconds=(status.record or {}).get("wall_seconds") if status.valid else None)
                self.log(f"dataset {kind}: valid shards, skipped")
                return ds
        elif diffs:
            if not self.overwrite:     # every rank reads the same manifest, so every rank refuses
                raise self._refuse_dataset(kind, folder, diffs)
            self.log(f"dataset {kind}: built with other settings ({'; '.join(diffs)}); --overwrite: rebuilding")
            stale = True
        distributed = self.dist_info is not None and self.dist_info.is_distributed
        if distributed:  # every rank has looked at the folder before anyone changes it
            from empirical.distributed import barrier

            barrier(self.dist_info)
        if stale and (not distributed or self.dist_info.is_main):
            shutil.rmtree(folder)
        if distributed:
            barrier(self.dist_info)
        self.log(f"dataset {kind}: constructing {int(d.y_train.shape[0])} images")
        res = row.build(BuildRequest(folder=folder, kind=kind, settings=self.cfg.settings(kind), sources=sources,
                                     x=d.x_train, y=d.y_train, num_classes=d.num_classes, device=self.device,
                                     source=source, base=base, progress=self.progress, dist_info=self.dist_info))
        ds = load_constructed(folder)
        if main:
            self.store.save(stage, key, self._dataset_payload(kind, ds.manifest), artifacts=("manifest.json",),
                            wall_seconds=res.wall_seconds)
        self._datasets[kind] = ds
        timer.done(f"construct:{kind}", False, images_per_second=res.images_per_second,
                   shards_built=len(res.built_shards), shards_reused=len(res.reused_shards))
        return ds

    def _dataset_key(self, kind: str, source: Mapping[str, Any], base: Mapping[str, Any]) -> str:
        return json_sha256({"kind": kind, "settings": asdict(self.cfg.settings(kind)), "base": dict(base),
                            "source": dict(source)})

    def source_model(self, which: str) -> Any:
        """A model trained on D that constructions start from, by name (:data:`empirical.constructions.
        SOURCE_MODELS`: ``standard`` with the ``std`` recipe, ``robust`` with ``adv``)."""
        if which not in registry.SOURCE_MODELS:
            raise ValueError(f"source model {which!r} unknown; valid: {', '.join(registry.SOURCE_MODELS)}")
        return self.model(which, arch=self.cfg.arch, recipe=self.cfg.recipe(registry.SOURCE_MODELS[which]))

    def constructed_model(self, kind: str) -> Any:
        """The model trained on construction ``kind`` (its row's ``model`` name and ``recipe``)."""
        row = registry.get(kind)
        return self.model(row.model, arch=self.cfg.arch, recipe=self.cfg.recipe(row.recipe), train_on=kind)

    def constructed_model_name(self, kind: str) -> str:
        return registry.get(kind).model

    # ---- evaluation
    def evaluate(self, name: str, *, robust: bool = True, strong: bool = True, shifted: bool = False) -> dict[str, float]:
        """Clean accuracy on the whole original test set; robust accuracy (paper PGD-7 and the
        strong PGD with restarts) on the stratified ``eval.n_robust`` sample
        (:meth:`eval_subset`). Cached per model hash, with the per-example robust outcomes
        (:meth:`robust_masks`)."""
        import torch

        from empirical.evaluate import accuracy, robust_mask
        from empirical.precision import VERDICT
        from foundation.records import pack_bits, unpack_bits

        d, ev = self.data(), self.cfg.eval
        model = self._models[name]
        sub = self.eval_subset() if robust else None
        key = json_sha256({"model": self._model_hash[name], "eval": ev.pgd_part(), "robust": robust, "strong": strong,
                           "shifted": shifted, "test": self.data_sha256,
                           "subset": sub.indices_sha256 if sub is not None else None})
        variant = ("" if robust else "-clean") + ("" if strong else "-paperonly") + ("-shifted" if shifted else "")
        path = self.store.eval_record(f"{name}{variant}")
        timer = self.store.timer()
        status = self.store.check(path, key)
        problems = _eval_contradictions(status.record, sub.n if sub is not None else 0) if status.valid else []
        if status.valid and not problems:
            old = status.record
            n = int(old["metrics"].get("n_robust", 0))
            self._masks.setdefault(name, {}).update({k: unpack_bits(v, n) for k, v in old.get("masks", {}).items()
                                                     if k != "clean"})
            timer.done(f"eval:{name}", True, built_seconds=old.get("wall_seconds"))
            return old["metrics"]
        if problems or status.edited:
            self.log(f"eval {name}: stale, edited after it was written ({'; '.join(problems) or status.reason}); "
                     "evaluating again")
        # accuracies are verdicts: fp32, whatever precision the attacks' steps run in
        out: dict[str, float] = {"clean": accuracy(model, d.x_test, d.y_test, batch_size=ev.batch_size,
                                                   device=self.device, precision=VERDICT)}
        if shifted:
            out["shifted"] = accuracy(model, d.x_test, next_label(d.y_test, d.num_classes),
                                      batch_size=ev.batch_size, device=self.device, precision=VERDICT)
        masks: dict[str, Any] = {}
        if robust:
            assert sub is not None
            xr, yr = d.x_test[sub.indices], d.y_test[sub.indices]
            attacks = {"robust_paper": (ev.attack("paper"), None)}
            if strong:
                gen = torch.Generator(device=torch.device(self.device))
                gen.manual_seed(self.attack_seed)
                attacks["robust_strong"] = (ev.attack("strong"), gen)
            from empirical.worst_case import progress_bar

            for k, (a, gen) in attacks.items():
                update, close = progress_bar(f"{name} {k.replace('robust_', '')} PGD on {sub.n}",
                                             sub.n * a.steps * a.restarts, self.progress)
                masks[k] = robust_mask(model, xr, yr, a, batch_size=ev.batch_size, device=self.device, generator=gen,
                                       precision=ev.precision, progress=update)
                close()
            for k, m in masks.items():
                out[k] = float(m.float().mean())
            out["n_robust"] = int(sub.n)
            # clean-correct on the attacked sample: every robust mask lies inside it (checked on reuse)
            from empirical.evaluate import predict

            masks["clean"] = predict(model, xr, batch_size=ev.batch_size, device=self.device,
                                     precision=VERDICT) == yr.cpu()
        out = {k: float(v) for k, v in out.items()}
        self.store.save(path, key, {"metrics": out, "masks": {k: pack_bits(m.numpy()) for k, m in masks.items()},
                                    "subset": sub.describe() if sub is not None else None},
                        wall_seconds=timer.seconds)
        self._masks.setdefault(name, {}).update({k: m.numpy() for k, m in masks.items() if k != "clean"})
        timer.done(f"eval:{name}", False)
        return out

    @property
    def attack_seed(self) -> int:
        """The seed of the evaluation attacks: the strong PGD's one generator and the worst-case suite."""
        return self.cfg.seed + ATTACK_SEED_OFFSET

    def evaluate_suite(self, name: str) -> dict[str, Any]:
        """The worst case of model ``name`` on the :meth:`eval_subset`, after :meth:`evaluate`: the
        strong PGD, then the ``eval.suite`` attacks, each only on what the attacks before it left
        standing (:func:`empirical.worst_case.worst_case`; the strong PGD's masks of
        :meth:`evaluate` are its first stage, not recomputed). Returns the
        :meth:`~empirical.worst_case.WorstCase.summary` (fractions), or {} when the preset has no
        suite. Cached in ``evals/<name>-suite.json`` by model, evaluation settings, semantics,
        subset and seed, so adding a suite to a finished run attacks nothing else again."""
        ev = self.cfg.eval
        if not ev.suite:
            return {}
        from empirical.threat import ThreatModel
        from empirical.worst_case import SEMANTICS, worst_case
        from foundation.records import pack_bits, unpack_bits

        d, model, sub = self.data(), self._models[name], self.eval_subset()
        strong = self.robust_masks(name).get("robust_strong")
        if strong is None:
            raise ValueError(f"evaluate({name!r}) with the strong PGD must run before evaluate_suite")
        key = json_sha256({"model": self._model_hash[name], "eval": ev, "subset": sub.indices_sha256,
                           "seed": self.attack_seed, "test": self.data_sha256, "semantics": SEMANTICS})
        path = self.store.eval_record(f"{name}-suite")
        timer = self.store.timer()
        status = self.store.check(path, key)
        problems = _suite_contradictions(status.record, sub.n, strong) if status.valid else []
        if status.valid and not problems:
            old = status.record
            self._masks.setdefault(name, {}).update({k: unpack_bits(v, sub.n) for k, v in old.get("masks", {}).items()})
            self._sanity[name] = old.get("sanity", {})
            timer.done(f"eval-suite:{name}", True, built_seconds=old.get("wall_seconds"))
            return old["summary"]
        if problems or status.edited:
            self.log(f"eval-suite {name}: stale, edited after it was written ({'; '.join(problems) or status.reason}); "
                     "evaluating again")
        wc = worst_case(model, d.x_test[sub.indices], d.y_test[sub.indices], ThreatModel(ev.norm, ev.eps),
                        pgd=ev.attack("strong"), attacks=ev.suite, options=ev.budgets, seed=self.attack_seed,
                        precision=ev.precision, batch_size=ev.batch_size, device=self.device, pgd_mask=strong,
                        progress=self.progress)
        summary = wc.summary()
        self._masks.setdefault(name, {})["robust_worst"] = wc.robust
        self._sanity[name] = dict(wc.sanity)
        self.store.save(path, key, {"summary": summary, "masks": {"robust_worst": pack_bits(wc.robust)},
                                    "sanity": self._sanity[name], "subset": sub.describe()},
                        wall_seconds=timer.seconds)
        timer.done(f"eval-suite:{name}", False)
        return summary

    def eval_options(self, name: str) -> dict[str, Any]:
        """The options of ``robust-features eval`` (its ``--config`` keys, with the checkpoint path
        relative to this workspace) that reproduce model ``name``'s worst case exactly: the same
        examples (the ``n_test`` sample, then ``eval.n_robust`` of it), threat, PGD, suite, budgets,
        seed, batch size and precision."""
        cfg, ev = self.cfg, self.cfg.eval
        opts: dict[str, Any] = {"checkpoint": f"models/{name}/model.pt", "data": cfg.data, "data_root": cfg.data_root,
                                "data_seed": cfg.seed, "split": "test", "n_test": cfg.n_test, "n": ev.n_robust,
                                "subset_seed": cfg.subset_seed, "threat": [f"{ev.norm}:{ev.eps!r}"],
                                "steps": ev.strong_steps, "restarts": ev.strong_restarts, "random_start": True,
                                "attack": list(ev.suite), "seed": self.attack_seed, "batch_size": ev.batch_size,
                                "precision": ev.precision, "channels_last": self._recipes[name].channels_last}
        opts.update({k: v for k, v in ev.budgets.items()})
        return {k: v for k, v in opts.items() if v is not None}

    def eval_command(self, name: str) -> str:
        """:meth:`eval_options` as the command line to type in this workspace's folder."""
        opts = self.eval_options(name)
        sets = []
        for k, v in opts.items():
            if k == "checkpoint":
                continue
            text = ",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v).lower() if isinstance(v, bool) else str(v)
            sets.append(f"--set {k}={text}")
        return f"robust-features eval --checkpoint {opts['checkpoint']} " + " ".join(sets)

    def sanity(self, name: str) -> dict[str, Any]:
        """The suite's sanity flags and explanations for model ``name`` ({} before :meth:`evaluate_suite`)."""
        return dict(self._sanity.get(name, {}))

    def robust_masks(self, name: str) -> dict[str, Any]:
        """Per-example robust outcomes (NumPy bool, over :meth:`eval_subset`) of model ``name``'s
        last :meth:`evaluate`: ``robust_paper`` and, when run, ``robust_strong``."""
        return dict(self._masks.get(name, {}))

    def seeds(self) -> dict[str, int]:
        """Every seed of the chain: the base seed (models, data split), each construction section's,
        the transfer attack's, the subsets', and the evaluation attacks' (strong PGD and suite)."""
        return {"seed": self.cfg.seed, **{f"construction_seed_{k}": v.seed for k, v in self.cfg.sections.items()},
                "transfer_seed": self.cfg.transfer.seed, "subset_seed": self.cfg.subset_seed,
                "attack_seed": self.attack_seed}

    def record(self, filename: str, *, experiment: str, metrics: Any, extra: Mapping[str, Any] | None = None,
               started_at: str, start_time: float) -> dict[str, Any]:
        return write_record(self.root / filename, experiment=experiment, config=self.cfg, metrics=metrics,
                            seeds=self.seeds(),
                            device=str(self.device), started_at=started_at, start_time=start_time,
                            extra={**dict(extra or {}), "subsets": self.subsets})


# ---------------------------------------------------------------------------------------------
# what an evaluation record says, against the masks it holds
# ---------------------------------------------------------------------------------------------
def _eval_contradictions(record: Mapping[str, Any] | None, n: int) -> list[str]:
    """How a cached PGD evaluation contradicts itself: an accuracy that is not its mask's mean (to
    half an example), a mask of the wrong length, robust where the clean model is wrong, an
    accuracy outside [0, 1]. [] = consistent."""
    import numpy as np

    from foundation.records import unpack_bits

    if record is None:
        return []
    metrics, masks, out = record.get("metrics") or {}, record.get("masks") or {}, []
    for k, v in metrics.items():
        if k != "n_robust" and not (isinstance(v, (int, float)) and 0.0 <= float(v) <= 1.0):
            out.append(f"metrics.{k}={v!r} is not an accuracy in [0, 1]")
    if masks and int(metrics.get("n_robust", -1)) != n:
        out.append(f"metrics.n_robust={metrics.get('n_robust')!r} but the sample holds {n} examples")
        return out
    try:
        unpacked = {k: np.asarray(unpack_bits(v, n), dtype=bool) for k, v in masks.items()}
    except (ValueError, TypeError) as exc:
        return out + [f"masks: {exc}"]
    for k, m in unpacked.items():
        if k != "clean" and (k not in metrics or abs(float(m.mean()) - float(metrics[k])) > 0.5 / max(n, 1)):
            out.append(f"metrics.{k}={metrics.get(k)!r} but its mask's mean is {float(m.mean()):.6g}")
    clean = unpacked.get("clean")
    if clean is not None:
        out += [f"masks.{k} is robust where the clean model is wrong" for k, m in unpacked.items()
                if k != "clean" and bool((m & ~clean).any())]
    return out


def _suite_contradictions(record: Mapping[str, Any] | None, n: int, strong: Any) -> list[str]:
    """How a cached worst case contradicts itself or the strong PGD: its worst case not its mask's
    mean, its mask not the hash it records, robust where the strong PGD broke the example, robust
    accuracies rising along the attack order."""
    import numpy as np

    from empirical.worst_case import mask_sha256
    from foundation.records import unpack_bits

    if record is None:
        return []
    summary, out = record.get("summary") or {}, []
    try:
        worst = np.asarray(unpack_bits((record.get("masks") or {})["robust_worst"], n), dtype=bool)
        acc = dict(summary["robust_accuracy"])
        order = list(summary["order"])
    except (KeyError, ValueError, TypeError) as exc:
        return [f"summary or masks incomplete ({exc.__class__.__name__}: {exc})"]
    if abs(float(worst.mean()) - float(acc.get("worst_case", -1))) > 0.5 / max(n, 1):
        out.append(f"robust_accuracy.worst_case={acc.get('worst_case')!r} but its mask's mean is {float(worst.mean()):.6g}")
    if (summary.get("mask_sha256") or {}).get("worst_case") != mask_sha256(worst):
        out.append("mask_sha256.worst_case does not match the stored mask")
    if strong is not None and bool((worst & ~np.asarray(strong, dtype=bool)).any()):
        out.append("the worst case is robust where the strong PGD broke the example")
    seq = [float(summary.get("clean_accuracy", 1.0))] + [float(acc[a]) for a in order if a in acc]
    if any(b > a + 1e-12 for a, b in zip(seq, seq[1:])):
        out.append(f"robust accuracy rises along the attack order {order}: {seq}")
    return out

