"""TOML training configs -> frozen dataclasses, validated strictly before any work starts.

Every section of a config file is a dataclass; a key the dataclass does not have, a value of the
wrong type or a missing required key raises ConfigError naming the file, the section and the key
(with a "did you mean" suggestion for near-misses), so a typo fails in a second instead of
silently training with a default for an hour.

Types understood: bool, int, float (an int is accepted), str, `X | None`, `tuple[X, ...]`,
`tuple[X, Y]`, `Literal[...]`, nested dataclasses (TOML tables) and `tuple[Dataclass, ...]`
(TOML arrays of tables, e.g. curriculum phases).
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, packaged as tomli
    import tomli as tomllib


from libragen_core.errors import ConfigError

T = TypeVar("T")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_type_name(args[0])}"
        return f"a list of {len(args)} values ({', '.join(_type_name(a) for a in args)})"
    if dataclasses.is_dataclass(tp):
        return "a table"
    if tp is type(None):
        return "absent"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(value, a, where)
            except ConfigError as e:
                errors.append(e)
        raise ConfigError(f"{where} must be {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in typing.get_args(tp):
            close = difflib.get_close_matches(str(value), [str(a) for a in typing.get_args(tp)], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{where} must be {_type_name(tp)}, got {value!r}{hint}")
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be {_type_name(tp)}, got {value!r}")
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where} must be {_type_name(tp)}, got {len(value)} values")
        return tuple(_convert(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a table ([{where}]), got {value!r}")
        return _build(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    raise TypeError(f"config schema uses an unsupported type {tp!r} at {where}")


def _build(cls: type[T], data: dict, where: str) -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    label = f"[{where}]" if where else "top level"
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else f"; known keys: {', '.join(sorted(fields))}"
            raise ConfigError(f"{label} unknown key {key!r}{hint}")
    kwargs = {}
    for name, f in fields.items():
        key_where = f"{where}.{name}" if where else name
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], key_where)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{label} is missing the required key {name!r} ({_type_name(hints[name])})")
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(f"{label}: {e}") from None


def from_dict(cls: type[T], data: dict, source: str = "<config>") -> T:
    """Build and validate `cls` from plain data; errors are prefixed with `source`."""
    try:
        return _build(cls, data, "")
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def load_config(cls: type[T], path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()) -> T:
    """Read a TOML file into `cls`. overrides: "section.key=value" strings (TOML values) applied first."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    for item in overrides:
        apply_override(data, item, str(path))
    return from_dict(cls, data, str(path))


def apply_override(data: dict, item: str, source: str = "<config>") -> None:
    """Set `a.b.c=value` in nested dicts; the value is parsed as TOML (strings need quotes unless bare words)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like section.key=value")
    dotted, raw = item.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # a bare word: treat as a string
    node = data
    parts = dotted.strip().split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{source}: override {item!r}: {p!r} is not a table")
    node[parts[-1]] = value


def to_toml(data: dict, prefix: str = "") -> str:
    """Nested dicts -> TOML: tables, arrays of tables (lists of dicts, e.g. [[base.phases]]), scalars and
    lists of scalars; what a config layer written by a script holds (None has no TOML form)."""
    scalars, tables, arrays = [], [], []
    for k, v in data.items():
        if isinstance(v, dict):
            tables.append((k, v))
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            arrays.append((k, v))
        else:
            scalars.append(f"{k} = {json.dumps(v)}")
    text = (f"[{prefix}]\n" if prefix and scalars else "") + "".join(s + "\n" for s in scalars)
    for k, v in tables:
        text += to_toml(v, f"{prefix}.{k}" if prefix else k)
    for k, items in arrays:
        name = f"{prefix}.{k}" if prefix else k
        for item in items:
            flat = {kk: vv for kk, vv in item.items() if not isinstance(vv, dict)}
            text += f"[[{name}]]\n" + "".join(f"{kk} = {json.dumps(vv)}\n" for kk, vv in flat.items())
            for kk, vv in item.items():
                if isinstance(vv, dict):
                    text += to_toml(vv, f"{name}.{kk}")
    return text


def to_dict(obj: Any) -> Any:
    """Dataclass -> plain data (tuples as lists), for logging the resolved config next to a run."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (tuple, list)):
        return [to_dict(v) for v in obj]
    return obj
