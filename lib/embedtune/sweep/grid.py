"""Grid syntax: ``--grid KEY=V1,V2,...`` values, their combinations, and point folder names."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from typing import Any, Iterable, Mapping

import yaml

from embedtune.config import ConfigError, yaml_value

_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def split_values(text: str) -> list[str]:
    """Split ``text`` at the commas outside brackets, braces and quotes.

    >>> split_values("[],[bm25],[bm25,dense]")
    ['[]', '[bm25]', '[bm25,dense]']
    """
    parts, depth, quote, current = [], 0, None, []
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
            if depth < 0:
                raise ConfigError(f"unbalanced brackets in {text!r}")
        elif ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    if depth or quote:
        raise ConfigError(f"unbalanced brackets or quotes in {text!r}")
    parts.append("".join(current))
    return [p.strip() for p in parts]


def parse_value(text: str) -> Any:
    """One grid value: YAML, with ``2e-5`` read as a number (plain YAML 1.1 reads it as text)."""
    if not text:
        raise ConfigError("empty grid value; write null for None and '' for an empty string")
    try:
        value = yaml_value(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"grid value {text!r} is not valid YAML: {exc}") from exc
    return numbers(value)


def numbers(value: Any) -> Any:
    """Strings that spell a number (``"2e-5"``) as numbers, inside lists and mappings too."""
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        text = value.strip()
        return int(text) if re.fullmatch(r"[+-]?\d+", text) else float(text)
    if isinstance(value, list):
        return [numbers(v) for v in value]
    if isinstance(value, dict):
        return {k: numbers(v) for k, v in value.items()}
    return value


def parse_grid(text: str) -> tuple[str, list]:
    """``KEY=V1,V2,...`` from the command line (see the module docstring).

    >>> parse_grid("negatives.sources=[],[bm25,dense]")
    ('negatives.sources', [[], ['bm25', 'dense']])
    """
    key, sep, values = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--grid {text!r} is not of the form key=value1,value2,...")
    return key.strip(), [parse_value(v) for v in split_values(values)]


def expand(grid: Mapping[str, list], extra: Iterable[Mapping[str, Any]] = ()) -> list[dict]:
    """Every combination of the grid's values (first key slowest), then the extra points."""
    combos = []
    if grid:
        keys = list(grid)
        combos = [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]
    combos += [dict(p) for p in extra]
    unique = []
    for combo in combos:
        if combo not in unique:
            unique.append(combo)
    return unique


def _slug(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "+".join(_slug(v) for v in value) if value else "empty"
    if isinstance(value, dict):
        return "+".join(f"{k}-{_slug(v)}" for k, v in value.items()) or "empty"
    return str(value)


def short_keys(keys: list[str]) -> dict[str, str]:
    """Each dotted key's last part, or the whole key where two last parts would clash."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}


def point_name(overrides: Mapping[str, Any], varied: list[str]) -> str:
    """A folder name that says what the point varies: ``loss=mnrl,matryoshka_dims=384+128``."""
    shorts = short_keys(varied)
    parts = [f"{shorts[k]}={_slug(overrides.get(k))}" for k in varied]
    name = re.sub(r"[^A-Za-z0-9._+=,-]+", "-", ",".join(parts)) or "base"
    if len(name) > 100:
        digest = hashlib.sha256(json.dumps(overrides, sort_keys=True, default=str).encode()).hexdigest()
        name = f"{name[:90]}-{digest[:8]}"
    return name


def cli_value(value: Any) -> str:
    """A value as ``--grid`` / ``--set`` read it back (see :func:`parse_value`)."""
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(cli_value(v) for v in value) + "]"
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str) and (not value or re.search(r"[,\[\]{}'\":#]", value) or value != value.strip()
                                   or parse_value(value) != value):
        return json.dumps(value)
    return str(value)


def label(value: Any) -> str:
    """A value as people write it in a params file (for tables and axes)."""
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(label(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
