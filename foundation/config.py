"""One config grammar for every command: defaults or preset < ``--config FILE.toml`` < ``--set KEY=VALUE`` < explicit flags.

A command's settings are one frozen dataclass: an :class:`empirical.experiments.ExperimentConfig`
(a preset) for ``construct``, ``fig2``, ``table1``, ``fig3`` and ``reproduce``; the option classes
of :mod:`robust_features.options` for ``train``, ``eval`` and ``attack``. The grammar is the same
for all of them:

* **keys** are the field names, dotted into a field that is itself a dataclass (``targeted.eps``);
  a TOML table nests the same way (``[targeted]`` then ``eps = 0.5``), and ``-`` in a key reads as
  ``_`` (``n-train`` is ``n_train``). An unknown key is refused, listing the valid ones.
* **values** are typed by the field's declared type. A string (``--set``, or a string in the TOML
  file) is parsed: ``int``; ``float``, fractions such as ``8/255`` included (parsed, never
  ``eval``-ed); ``bool`` from true/false, 1/0, yes/no; a tuple from a comma list (``mlp,cnn_small``;
  empty = ``()``); ``none`` or ``null`` where the field allows None; ``str`` as given. Other TOML
  values are taken as they are (a list becomes a tuple, an integer a float for a float field).
  Explicit flags are already typed by argparse and are never re-parsed.
* **checks** are the dataclass's own (``__post_init__``), run once on the resolved config; an error
  raised inside a nested dataclass names its dotted key (``std.epochs=0 must be a positive integer``).
* **tables** are how a registry adds settings to a config without editing its class: a field made
  with :func:`table` holds one entry per registered :class:`Option` (a scalar such as
  ``square_queries``, or a whole settings dataclass such as a construction's ``rep``). Its entries
  read and write exactly like fields: keys ``square_queries`` / ``rep.steps``, keyword arguments
  ``EvalConfig(square_queries=10)``, ``replace(cfg, rep=...)``, attributes ``cfg.rep``, flags
  ``--square-queries``, and in the JSON form they sit beside the fields (no extra level). A class
  with a table field is decorated with :func:`tabled`.

Every error is a ``ValueError`` (a missing file a ``FileNotFoundError``) of one line, which the
console script prints as ``robust-features <cmd>: error: ...`` with exit status 2.

    from foundation import config
    cfg = config.resolve(preset, config.command_layers(config="my.toml", sets=["targeted.eps=8/255"],
                                                       flags={"seed": 3}))

Pure Python (no torch): importable from any floor.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from foundation import checks as C

SET_EXAMPLE = "targeted.eps=0.5"


@dataclass(frozen=True)
class Layer:
    """One source of overrides: ``values`` (flat dotted keys or nested tables), the ``source``
    named in an unknown-key error (``in PATH``; empty = none), and whether strings are ``parse``-d
    by the field types (False for argparse-typed flags)."""

    values: Mapping[str, Any]
    source: str = ""
    parse: bool = True


# ---------------------------------------------------------------------------------------------
# reading the sources
# ---------------------------------------------------------------------------------------------
def parse_sets(items: Iterable[str], *, example: str = SET_EXAMPLE) -> dict[str, str]:
    """``["a.b=1", "c=x"]`` (the ``--set`` list) -> ``{"a.b": "1", "c": "x"}``; the last of a key wins."""
    out: dict[str, str] = {}
    for item in items:
        k, eq, v = item.partition("=")
        if not eq or not k.strip():
            raise ValueError(f"--set {item!r} must look like KEY=VALUE, e.g. {example}")
        out[k.strip()] = v
    return out


def load_toml(path: str | Path, *, section: str | None = None) -> dict[str, Any]:
    """The table of a ``--config`` TOML file. With ``section``, a file whose only top-level entry is
    the table ``[section]`` gives that table (``train`` files may keep their options under ``[train]``)."""
    import tomllib

    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"--config {path} is a folder, not a TOML file; give the path of a FILE.toml")
    if not path.is_file():
        raise FileNotFoundError(f"--config {path} does not exist" if not path.exists() else
                                f"--config {path} is not a regular file; give the path of a FILE.toml")
    try:
        with open(path, "rb") as fh:
            table = tomllib.load(fh)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"--config {path} is not valid TOML: {exc}") from None
    if section is not None and set(table) == {section} and isinstance(table[section], dict):
        table = table[section]
    return table


def command_layers(*, config: str | Path | None = None, sets: Iterable[str] = (),
                   flags: Mapping[str, Any] | None = None, section: str | None = None,
                   example: str = SET_EXAMPLE) -> list[Layer]:
    """The layers of one command line, lowest first: the TOML file, the ``--set`` items, the flags."""
    layers = []
    if config is not None:
        layers.append(Layer(load_toml(config, section=section), source=str(config)))
    layers.append(Layer(parse_sets(sets, example=example)))
    if flags:
        layers.append(Layer(dict(flags), parse=False))
    return layers



# ---------------------------------------------------------------------------------------------
# tables: settings a registry adds to a config
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Option:
    """One entry of a config table: ``name`` (the key users write), ``default`` and ``help``.

    A dataclass ``default`` makes the entry a settings section (keys ``name.FIELD``, checked by that
    dataclass); any other default makes it a scalar of ``kind`` (the default's type unless given;
    a ``None`` default allows None), checked by ``check(key, value)``, which raises one
    ``ValueError`` line naming ``key=value`` and what is valid."""

    name: str
    default: Any
    help: str = ""
    check: Callable[[str, Any], Any] | None = None
    kind: type | None = None

    @property
    def is_section(self) -> bool:
        return dataclasses.is_dataclass(self.default) and not isinstance(self.default, type)

    @property
    def type(self) -> type:
        return self.kind if self.kind is not None else type(self.default)


Provider = Callable[[], Sequence[Option]]


class Table(Mapping[str, Any]):
    """The value of a :func:`table` field: one value per option its provider (a registry) lists now,
    the default unless given. Immutable; equal when every value is; :meth:`replace` makes a new one."""

    __slots__ = ("_given", "_provider")

    def __init__(self, provider: Provider, given: Mapping[str, Any] | None = None) -> None:
        object.__setattr__(self, "_provider", provider)
        object.__setattr__(self, "_given", dict(given or {}))

    def options(self) -> dict[str, Option]:
        return {o.name: o for o in self._provider()}

    def __getitem__(self, name: str) -> Any:
        if name in self._given:
            return self._given[name]
        return self.options()[name].default

    def __iter__(self) -> Iterator[str]:
        return iter(self.options())

    def __len__(self) -> int:
        return len(self.options())

    def __setattr__(self, name: str, value: Any) -> None:
        raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Table) and dict(self.items()) == dict(other.items())

    def __hash__(self) -> int:
        return hash(tuple(self.items()))

    def __repr__(self) -> str:
        return f"Table({dict(self.items())!r})"

    def replace(self, **changes: Any) -> Table:
        """A new table with ``changes``; an entry no option names raises ``TypeError`` (as an unknown
        keyword argument of a dataclass does)."""
        known = self.options()
        for name in changes:
            if name not in known:
                raise TypeError(f"unexpected keyword argument {name!r}; valid: {', '.join(known)}")
        return Table(self._provider, {**self._given, **changes})

    def check(self, prefix: str = "") -> None:
        """Run every entry's check (sections: the value must be of the default's class), naming the
        key as ``prefix + name``."""
        for name, opt in self.options().items():
            v = self[name]
            if opt.is_section:
                if not isinstance(v, type(opt.default)):
                    raise ValueError(f"{prefix}{name}={v!r} must be a {type(opt.default).__name__} (set its fields "
                                     f"as {prefix}{name}.KEY)")
            elif opt.check is not None:
                opt.check(f"{prefix}{name}", v)


def table(provider: Provider, help: str = "") -> Any:
    """A dataclass field holding a :class:`Table` of the options ``provider()`` lists (decorate the
    class with :func:`tabled`; run ``self.<field>.check(prefix)`` in its ``__post_init__``)."""
    return dataclasses.field(default_factory=lambda: Table(provider), metadata={"table": provider, "help": help})


def table_field(cls: Any) -> str | None:
    """The name of ``cls``'s :func:`table` field, or None."""
    cls = cls if isinstance(cls, type) else type(cls)
    if not dataclasses.is_dataclass(cls):
        return None
    names = [f.name for f in fields(cls) if "table" in f.metadata]
    return names[0] if names else None


def table_options(cls: Any) -> dict[str, Option]:
    """The options ``cls``'s table lists now ({} without a table)."""
    cls = cls if isinstance(cls, type) else type(cls)
    name = table_field(cls)
    if name is None:
        return {}
    return {o.name: o for o in next(f for f in fields(cls) if f.name == name).metadata["table"]()}


def tabled(cls: type) -> type:
    """Let a dataclass with a :func:`table` field take its entries as keyword arguments (so
    ``replace(cfg, square_queries=3)`` and ``EvalConfig(square_queries=0)`` work) and read them as
    attributes (``cfg.rep``)."""
    name = table_field(cls)
    if name is None:
        raise TypeError(f"{cls.__name__} has no table field")
    init_names = {f.name for f in fields(cls) if f.init}
    generated = cls.__init__

    @functools.wraps(generated)
    def __init__(self, *args: Any, **kw: Any) -> None:
        clash = init_names & set(table_options(cls))
        if clash:
            raise TypeError(f"{cls.__name__}: table entries {sorted(clash)} have the names of its fields")
        entries = {k: kw.pop(k) for k in list(kw) if k not in init_names}
        if entries:
            provider = next(f for f in fields(cls) if f.name == name).metadata["table"]
            base = kw.get(name)
            base = base if isinstance(base, Table) else Table(provider, base)
            try:
                kw[name] = base.replace(**entries)
            except TypeError as exc:
                raise TypeError(f"{cls.__name__}.__init__() got an {exc}") from None
        elif name in kw and not isinstance(kw[name], Table):      # a plain mapping of entries
            provider = next(f for f in fields(cls) if f.name == name).metadata["table"]
            kw[name] = Table(provider).replace(**dict(kw[name]))
        generated(self, *args, **kw)

    def __getattr__(self: Any, attr: str) -> Any:
        if not attr.startswith("__"):
            tbl = self.__dict__.get(name)
            if tbl is not None and attr in tbl.options():
                return tbl[attr]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {attr!r}")

    cls.__init__ = __init__
    cls.__getattr__ = __getattr__
    return cls


# ---------------------------------------------------------------------------------------------
# keys and types
# ---------------------------------------------------------------------------------------------
@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def field_type(cls: type, name: str) -> tuple[Any, bool]:
    """The declared type of ``cls.name`` without ``None``, and whether ``None`` is allowed."""
    hint = _hints(cls)[name]
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [t for t in args if t is not type(None)]
        return (rest[0] if len(rest) == 1 else hint), True
    return hint, False


def nested_fields(cls: type) -> dict[str, type]:
    """The fields of ``cls`` whose declared type is a dataclass (set as ``name.KEY``)."""
    cls = cls if isinstance(cls, type) else type(cls)
    out = {}
    for f in fields(cls):
        base, _ = field_type(cls, f.name)
        if isinstance(base, type) and dataclasses.is_dataclass(base):
            out[f.name] = base
    return out


def keys(cls: Any) -> list[str]:
    """Every key of ``cls`` (a dataclass or an instance), in field order, nested ones dotted; a
    table's entries stand in the table field's place (sections dotted, scalars plain)."""
    cls = cls if isinstance(cls, type) else type(cls)
    sub = nested_fields(cls)
    tname = table_field(cls)
    out: list[str] = []
    for f in fields(cls):
        if f.name in sub:
            out.extend(f"{f.name}.{k}" for k in keys(sub[f.name]))
        elif f.name == tname:
            for name, opt in table_options(cls).items():
                out.extend(f"{name}.{k}" for k in keys(type(opt.default))) if opt.is_section else out.append(name)
        else:
            out.append(f.name)
    return out


def sections(cls: Any) -> dict[str, type]:
    """The settings dataclasses set as ``name.KEY``: the nested fields and the table's sections."""
    cls = cls if isinstance(cls, type) else type(cls)
    out = dict(nested_fields(cls))
    out.update({name: type(o.default) for name, o in table_options(cls).items() if o.is_section})
    return out


def owner(cls: type, key: str) -> tuple[type, str]:
    """The dataclass holding the setting a dotted ``key`` names, and the setting's name."""
    *path, name = key.split(".")
    for part in path:
        cls = sections(cls)[part]
    return cls, name


def setting_names(cls: type) -> tuple[str, ...]:
    """The settings of ``cls`` set by a plain key: its fields, with its table's entries in the table field's place."""
    tname = table_field(cls)
    out: list[str] = []
    for f in fields(cls):
        out.extend(table_options(cls)) if f.name == tname else out.append(f.name)
    return tuple(out)


def setting_type(cls: type, name: str) -> tuple[Any, bool]:
    """The declared type of setting ``name`` of ``cls`` (a field, or a scalar table entry) without
    ``None``, and whether ``None`` is allowed."""
    if name in {f.name for f in fields(cls)}:
        return field_type(cls, name)
    opt = table_options(cls)[name]
    return opt.type, opt.default is None


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested tables -> dotted keys (``{"rep": {"steps": 3}}`` -> ``{"rep.steps": 3}``); ``-`` in a key reads as ``_``."""
    flat: dict[str, Any] = {}
    for k, v in mapping.items():
        key = prefix + ".".join(part.strip().replace("-", "_") for part in str(k).split("."))
        if isinstance(v, Mapping):
            flat.update(flatten(v, f"{key}."))
        else:
            flat[key] = v
    return flat


# ---------------------------------------------------------------------------------------------
# values
# ---------------------------------------------------------------------------------------------
def parse_number(text: str, key: str, *, integer: bool = False) -> int | float:
    """``"3"``, ``"0.5"``, ``"1e-3"``, ``"8/255"`` -> a number (``integer``: an ``int`` where the
    text is one; ``1.7`` is returned as a float, for the field's check to refuse)."""
    s = text.strip()
    if "_" in s:        # Python reads "1_0" as 10; a config never does
        digits = s.replace("_", "").replace("/", "").replace(".", "").lstrip("+-")
        why = " ('_' digit separators are not accepted)" if digits.isdigit() else ""
        raise ValueError(f"{key}={text!r} is not a number{why}")
    if integer:
        try:
            return int(s)
        except ValueError:
            pass
    try:
        if "/" in s:
            num, den = s.split("/")
            if float(den) == 0:
                raise ZeroDivisionError
            return float(num) / float(den)
        return float(s)
    except ZeroDivisionError:
        raise ValueError(f"{key}={text!r} divides by zero") from None
    except ValueError:
        raise ValueError(f"{key}={text!r} is not a number") from None


def coerce(value: Any, cls: type, name: str, key: str, *, parse: bool = True) -> Any:
    """A value for field ``name`` of ``cls`` (named ``key`` in errors), typed by the field's declared
    type; a string is parsed when ``parse`` is set. The result is checked by the dataclass."""
    base, optional = setting_type(cls, name)
    is_tuple = typing.get_origin(base) is tuple or base is tuple
    if isinstance(value, str):
        if not parse:
            return value
        text = value.strip()
        if optional and text.lower() in ("none", "null"):
            return None
        if base is str:
            return value
        if base is bool:
            if text.lower() in ("true", "1", "yes"):
                return True
            if text.lower() in ("false", "0", "no"):
                return False
            raise ValueError(f"{key}={value!r} must be true or false")
        if is_tuple:
            return tuple(s.strip() for s in text.split(",") if s.strip())
        if base in (int, float):
            return parse_number(value, key, integer=base is int)
        return value
    if is_tuple and isinstance(value, list):
        return tuple(value)
    if base is float and C.is_int(value):
        return float(value)
    return value


def typed(cls: Any, overrides: Mapping[str, Any], *, source: str = "", parse: bool = True) -> dict[str, Any]:
    """``overrides`` as flat dotted keys with typed values; unknown keys raise, listing the valid ones
    (``source``, e.g. a file, is named in that error)."""
    cls = cls if isinstance(cls, type) else type(cls)
    flat = flatten(overrides)
    valid = keys(cls)
    unknown = [k for k in flat if k not in valid]
    if unknown:
        where = f" in {source}" if source else ""
        raise ValueError(f"unknown config key(s) {', '.join(unknown)}{where}; valid keys: {', '.join(valid)}")
    out = {}
    for k, v in flat.items():
        holder, name = owner(cls, k)
        out[k] = coerce(v, holder, name, k, parse=parse)
    return out


# ---------------------------------------------------------------------------------------------
# building configs
# ---------------------------------------------------------------------------------------------
def prefixed(key: str, cls: type, exc: ValueError) -> ValueError:
    """``epochs=0 must be ...`` raised by the nested config ``cls`` at ``key`` -> ``std.epochs=0 must be ...``."""
    msg = str(exc)
    head = msg.split("=", 1)[0].split(" ", 1)[0]
    first = head.split(".", 1)[0]
    if head in {f.name for f in fields(cls)} | set(table_options(cls)) or ("." in head and first in sections(cls)):
        return ValueError(f"{key}.{msg}")
    return exc


def nested(key: str, cls: type, build: Any) -> Any:
    """``build()`` (a config of class ``cls`` at ``key``), its errors naming the dotted key."""
    try:
        return build()
    except TypeError as exc:             # e.g. a table with a key the config does not have
        raise ValueError(f"{key}: {exc}") from None
    except ValueError as exc:
        raise prefixed(key, cls, exc) from None


def apply(cfg: Any, values: Mapping[str, Any]) -> Any:
    """``cfg`` with typed flat ``values`` (from :func:`typed`) replaced; checked by the dataclasses."""
    top: dict[str, Any] = {}
    inner: dict[str, dict[str, Any]] = {}
    for k, v in values.items():
        outer, dot, rest = k.partition(".")
        if dot:
            inner.setdefault(outer, {})[rest] = v
        else:
            top[k] = v
    sub = sections(type(cfg))
    for outer, changes in inner.items():
        top[outer] = nested(outer, sub[outer], lambda o=outer, c=changes: apply(getattr(cfg, o), c))
    return replace(cfg, **top)


def with_overrides(cfg: Any, overrides: Mapping[str, Any], *, source: str = "", parse: bool = True) -> Any:
    """``cfg`` with one layer of dotted-key overrides (strings parsed, TOML tables flattened)."""
    return apply(cfg, typed(type(cfg), overrides, source=source, parse=parse))


def resolve(cfg: Any, layers: Sequence[Layer]) -> Any:
    """``cfg`` (the defaults or a preset) with ``layers`` applied, later ones winning key by key; the
    result is checked once (a value a later layer replaces is never checked)."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update(typed(type(cfg), layer.values, source=layer.source, parse=layer.parse))
    return apply(cfg, merged) if merged else cfg


def from_dict(cls: type, d: Mapping[str, Any]) -> Any:
    """Rebuild a config of class ``cls`` from its JSON form (``to_jsonable(cfg)``): lists become
    tuples, tables nested configs, table entries go back into the table. Top-level keys ``cls``
    does not have are ignored; a nested table with an unknown key raises, naming it."""
    names = {f.name for f in fields(cls) if f.name != table_field(cls)} | set(table_options(cls))
    return cls(**_from_json(cls, {k: v for k, v in d.items() if k in names}))


def _from_json(cls: type, d: Mapping[str, Any]) -> dict[str, Any]:
    sub = sections(cls)
    kw: dict[str, Any] = {}
    for k, v in d.items():
        if k in sub:
            if not isinstance(v, Mapping):
                raise ValueError(f"{k}={v!r} must be a table of {sub[k].__name__} fields")
            kw[k] = nested(k, sub[k], lambda c=sub[k], t=v: c(**_from_json(c, t)))
        else:
            kw[k] = tuple(v) if isinstance(v, list) else v
    return kw


# ---------------------------------------------------------------------------------------------
# command-line flags from the fields
# ---------------------------------------------------------------------------------------------
def option(default: Any, help: str, **meta: Any) -> Any:
    """A dataclass field that is also a command-line flag. ``meta``: ``flag`` (default
    ``--name-with-dashes``), ``choices``, ``arg_type`` (argparse ``type=``), ``repeat`` (a tuple field
    whose flag adds one item each time), ``metavar``, ``default_help`` (the default as shown)."""
    return dataclasses.field(default=default, metadata={"help": help, **meta})


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def _shown(default: Any) -> str:
    if isinstance(default, tuple):
        return ",".join(map(str, default)) or "none"
    return str(default)


def _flag_specs(cls: type) -> list[tuple[str, Any, Any, Mapping[str, Any]]]:
    """(name, type, default, metadata) of every flag of ``cls``: its fields, and in the table field's
    place the table's scalar entries."""
    tname = table_field(cls)
    out = []
    for f in fields(cls):
        if f.name == tname:
            out += [(o.name, o.type, o.default, {"help": o.help}) for o in table_options(cls).values()
                    if not o.is_section]
        else:
            out.append((f.name, field_type(cls, f.name)[0], f.default, f.metadata))
    return out


def add_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """One flag per field of ``cls`` (and per scalar entry of its table), typed by the field (bool:
    ``--x/--no-x``; float: a finite number, fractions such as 8/255 included); given flags only
    reach the namespace (no defaults)."""
    for name, base, default_value, meta in _flag_specs(cls):
        default = f"(default: {meta.get('default_help', _shown(default_value))})"
        kw: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": f"{meta.get('help', '')} {default}"}
        if meta.get("metavar"):
            kw["metavar"] = meta["metavar"]
        if meta.get("choices"):
            kw["choices"] = meta["choices"]
        if base is bool:
            kw["action"] = argparse.BooleanOptionalAction
        else:
            if meta.get("repeat"):
                kw["action"] = "append"
                item = typing.get_args(base)[0] if typing.get_args(base) else str
            else:
                item = base
            kw["type"] = meta.get("arg_type") or {float: C.number_arg, int: C.int_arg}.get(item, item)
        parser.add_argument(meta.get("flag") or flag_name(name), **kw)


def given_flags(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The flags of :func:`add_flags` the command line gave (the others are absent from ``args``)."""
    ns = vars(args)
    return {name: ns[name] for name, *_ in _flag_specs(cls) if name in ns}


def add_config_options(parser: argparse.ArgumentParser, *, example: str, what: str = "options") -> None:
    """``--config FILE.toml`` and ``--set KEY=VALUE`` (dest ``overrides``), the same for every command."""
    parser.add_argument("--config", default=None, metavar="TOML", type=C.path_arg,
                        help=f"TOML file of {what} (same keys as --set); --set and explicit flags win")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help=f"set one key, typed by its field, e.g. --set {example}; explicit flags win")


__all__ = [
    "SET_EXAMPLE",
    "Layer",
    "Option",
    "Table",
    "add_config_options",
    "add_flags",
    "apply",
    "coerce",
    "command_layers",
    "field_type",
    "flag_name",
    "flatten",
    "from_dict",
    "given_flags",
    "keys",
    "load_toml",
    "nested",
    "nested_fields",
    "option",
    "parse_number",
    "parse_sets",
    "prefixed",
    "resolve",
    "owner",
    "sections",
    "setting_names",
    "setting_type",
    "table",
    "table_field",
    "table_options",
    "tabled",
    "typed",
    "with_overrides",
]
