"""`key=value` settings: the one parser for model_args strings, `--set` flags and config specs.

Settings reach dllm-eval as text in several places (lm-eval's `--model_args`, `dllm-eval generate
--set`, `name:key=value` specs of the synth evaluator and benchmarks, recorded `model_args` in
results files). All of them go through `split_settings` and `coerce`, so "true", "none" and "0.9"
mean the same thing everywhere. A leaf module: it imports nothing from the rest of the package
but `errors`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from dllm_eval.errors import UserError


def split_settings(text: str | Iterable[str] | None, *, what: str = "settings") -> dict[str, str]:
    """'a=1,b=x' (or ['a=1', 'b=x']) -> {'a': '1', 'b': 'x'}; the values stay text.

    Empty items are skipped; an item without '=' or with an empty key is a one-line UserError.
    """
    if text is None:
        return {}
    items = text.split(",") if isinstance(text, str) else list(text)
    out: dict[str, str] = {}
    for item in items:
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"{what}: {item!r} is not KEY=VALUE (for example threshold=0.9)")
        out[key.strip()] = value.strip()
    return out


def coerce(value: Any, default: Any, name: str) -> Any:
    """Turn a setting given as text (or typed by lm-eval's CLI) into the type of its default.

    "none"/"null" become None, except for text parameters (`cache=none` is a value there). With
    `default=None` (an optional parameter, or no known default)
    the text becomes an int, a float or a bool when it reads as one, else it stays a string.
    """
    if isinstance(default, str):
        return value if value is None else str(value)
    if isinstance(value, str) and value.lower() in ("none", "null"):
        return None
    if default is None or value is None:
        if isinstance(value, str):
            for cast in (int, float):
                try:
                    return cast(value)
                except ValueError:
                    pass
            if value.lower() in ("true", "false"):
                return value.lower() == "true"
        return value
    try:
        if isinstance(default, bool):
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(value)
                return value.lower() in ("true", "1")
            return bool(value)
        if isinstance(default, int):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if isinstance(default, float):
            return float(value)
    except (TypeError, ValueError):
        raise UserError(f"model_args {name}={value!r}: expected {type(default).__name__}") from None
    return value


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """'name:key=value,key=value' -> (name, {key: value}), the spec syntax of the CLIs."""
    name, _, rest = spec.partition(":")
    if not name.strip():
        raise UserError(f"{spec!r}: expected NAME or NAME:key=value,...")
    return name.strip(), split_settings(rest, what=f"spec {spec!r}")


def cli_option(argv: Sequence[str], name: str) -> str | None:
    """The value of `--name VALUE` or `--name=VALUE` (last one wins, as argparse)."""
    value = None
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
    return value
