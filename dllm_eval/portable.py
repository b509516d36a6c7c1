"""Text and records without machine paths, for everything a run commits next to its report.

A report folder is read on other machines: the absolute path of the checkout that made it, or of
its virtual environment's interpreter, says nothing there and leaks the author's layout. The
embedded model is named by its name, the interpreter as `python`, and paths under the working
directory or the repository become relative to it. Records that resume a run (the cells'
done-markers) keep their exact commands; this is for what people read.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any


def portable(text: str) -> str:
    """`text` with machine paths replaced (see the module docstring)."""
    from dllm_eval.models import EMBEDDED_MODEL_DIR

    out = str(text)
    # an embedded model of this or any other checkout (a run made in a clone, then copied here): its name
    out = re.sub(rf"(?:[\w.~-]*/)+{EMBEDDED_MODEL_DIR.parent.parent.name}/{EMBEDDED_MODEL_DIR.parent.name}/([\w.-]+)",
                 r"\1", out)
    out = re.sub(r"\S*/bin/python3?(?=\s|$)", "python", out)
    for root in dict.fromkeys([Path.cwd().resolve(), Path(__file__).resolve().parents[1]]):
        if len(root.parts) > 1:  # never the filesystem root itself: that would rewrite every path
            out = out.replace(f"{root}/", "").replace(str(root), ".")
    return out


def portable_record(obj: Any) -> Any:
    """A JSON-like record with `portable` applied to every string in it."""
    if isinstance(obj, str):
        return portable(obj)
    if isinstance(obj, dict):
        return {k: portable_record(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [portable_record(v) for v in obj]
    return obj


__all__ = ["portable", "portable_record"]
