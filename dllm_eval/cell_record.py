"""A record per eval-all cell: what besides the scheduler could have changed the numbers.

Two cells of one run are compared document by document, so everything that is not the decoding
rule must be the same on both sides: the weights, the tokenizer, the data files the tasks read,
the library versions, the code, the dtype, the device type, the compile mode and the sandbox's
isolation floor. The adapter builds this record (`build_record`, it is the one that sees those
facts) into its results file; eval-all copies it to ``<cell>/record.json`` once the cell is done;
the report compares the records of all cells (`compare_records`) and refuses to put side by side
two cells whose records differ in anything but the scheduler settings (`SCHEDULER_FIELDS`).

Hashes are sha256 of whole files, read in chunks so an 8B checkpoint never sits in memory, and
cached in ``hashes.json`` under the user's cache folder (`cache_dir`, not the checkpoint's folder,
which may be read-only or shared), keyed by (path, size, mtime): each file is hashed once.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from dllm_eval.errors import UserError

RECORD_FILE = "record.json"
CACHE_DIR_ENV = "DLLM_EVAL_CACHE_DIR"
# Record fields that are the scheduler settings: they may (and do) differ between cells of a run.
SCHEDULER_FIELDS = ("scheduler", "scheduler_args", "seed", "trace_dir")
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.safetensors.index.json", "*.bin.index.json")
TOKENIZER_PATTERNS = ("tokenizer*", "special_tokens_map.json", "vocab*", "merges.txt", "*.model", "*.tiktoken",
                      "added_tokens.json", "chat_template*", "*.jinja")
_CHUNK = 1 << 22  # 4 MiB per read


def cache_dir() -> Path:
    """$DLLM_EVAL_CACHE_DIR, else $XDG_CACHE_HOME/dllm_eval, else ~/.cache/dllm_eval."""
    raw = os.environ.get(CACHE_DIR_ENV)
    if raw:
        return Path(raw).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "dllm_eval"


def _stream_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def file_sha256(path: str | Path, *, cache: bool = True) -> str:
    """sha256 of a file's bytes, streamed; cached by (resolved path, size, mtime_ns) in
    `cache_dir()/hashes.json`. A cache that cannot be written is skipped, never an error."""
    p = Path(path).resolve()
    st = p.stat()
    key = str(p)
    stamp = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    cpath = cache_dir() / "hashes.json"
    if cache:
        hit = _read_cache(cpath).get(key)
        if isinstance(hit, dict) and {k: hit.get(k) for k in stamp} == stamp and isinstance(hit.get("sha256"), str):
            return hit["sha256"]
    digest = _stream_sha256(p)
    if cache:
        try:
            cpath.parent.mkdir(parents=True, exist_ok=True)
            entries = _read_cache(cpath)  # re-read: another cell may have added entries meanwhile
            entries[key] = {**stamp, "sha256": digest}
            tmp = cpath.with_name(f"{cpath.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(entries, indent=1, sort_keys=True), encoding="utf-8")
            os.replace(tmp, cpath)
        except OSError:
            pass
    return digest


def hash_files(root: Path, patterns: Iterable[str]) -> dict[str, str]:
    """{file name relative to root: sha256} for the files directly in ``root`` matching ``patterns``."""
    found: dict[str, Path] = {}
    for pat in patterns:
        for p in root.glob(pat):
            if p.is_file():
                found[p.relative_to(root).as_posix()] = p
    return {name: file_sha256(found[name]) for name in sorted(found)}


def data_files_read() -> dict[str, str]:
    """{path relative to $DLLM_EVAL_DATA_DIR: sha256} of the data files this process read."""
    from dllm_eval.data import data_dir, files_read

    root = data_dir()
    out = {}
    for p in files_read():
        try:
            name = p.resolve().relative_to(root.resolve()).as_posix() if root else p.name
        except ValueError:
            name = p.name
        out[name] = file_sha256(p)
    return dict(sorted(out.items()))


def code_version() -> dict[str, Any]:
    """The dllm_eval code that ran, without noise: the git commit, and when the tracked code differs
    from it, a hash of that difference (untracked files and results/, where runs write, are not
    code). Outside a git checkout: the package version only."""
    from dllm_eval import __version__

    out: dict[str, Any] = {"version": __version__, "commit": None, "dirty": None, "diff_sha256": None}
    repo = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return out
        diff = subprocess.run(["git", "diff", "HEAD", "--no-ext-diff", "--", ".", ":!results"],
                              cwd=repo, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return out
    out["commit"] = head.stdout.strip()
    out["dirty"] = bool(diff.stdout.strip())
    out["diff_sha256"] = hashlib.sha256(diff.stdout).hexdigest() if out["dirty"] else None
    return out


def library_versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {"python": platform.python_version()}
    for mod in ("torch", "transformers", "lm_eval"):
        try:
            out[mod] = version(mod)
        except PackageNotFoundError:
            out[mod] = None
    return out


def checkpoint_dir(pretrained: str | Path) -> Path | None:
    """The local folder of a checkpoint: a directory, an embedded name, or a hub id already
    downloaded (never fetched again here)."""
    from dllm_eval.models.checkpoint_io import resolve_checkpoint

    path = Path(pretrained).expanduser()
    if path.is_dir() or "/" not in str(pretrained):
        try:
            return resolve_checkpoint(pretrained)
        except UserError:
            return None
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(pretrained), local_files_only=True))
    except Exception:
        return None


def sandbox_min_isolation() -> str:
    """The code sandbox's isolation floor as the run set it (a lowered floor is part of the record)."""
    from dllm_eval.scoring.sandbox import DEFAULT_MIN_ISOLATION, MIN_ISOLATION_ENV

    return os.environ.get(MIN_ISOLATION_ENV) or f"{DEFAULT_MIN_ISOLATION} (default)"


def build_record(*, pretrained: str, dtype: str, device_type: str, compile_mode: str, sandbox_min_isolation: str,
                 scheduler: Mapping[str, Any]) -> dict[str, Any]:
    """The record of one cell (see the module docstring). ``scheduler``: the exempt settings."""
    folder = checkpoint_dir(pretrained)
    return {
        # a folder by its name (the same checkpoint from another working directory is the same model)
        "model": Path(pretrained).name if Path(pretrained).expanduser().is_dir() else str(pretrained),
        "weights": hash_files(folder, WEIGHT_PATTERNS) if folder else None,
        "tokenizer": hash_files(folder, TOKENIZER_PATTERNS) if folder else None,
        "data": data_files_read(),
        "versions": library_versions(),
        "code": code_version(),
        "dtype": dtype,
        "device_type": device_type,
        "compile_mode": compile_mode,
        "sandbox_min_isolation": sandbox_min_isolation,
        **{k: scheduler.get(k) for k in SCHEDULER_FIELDS},
    }


def write_record(path: Path, record: Mapping[str, Any]) -> None:
    """Write atomically (a temporary file moved into place), so a reader never sees half."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, Mapping) and obj:
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: obj}


def record_differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """(field, value in a, value in b) for every field outside `SCHEDULER_FIELDS` that differs;
    nested fields are dotted (``weights.model.safetensors``); a missing field reads as None."""
    fa = _flatten({k: v for k, v in a.items() if k not in SCHEDULER_FIELDS})
    fb = _flatten({k: v for k, v in b.items() if k not in SCHEDULER_FIELDS})
    return [(k, fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)]


def compare_records(records: Mapping[str, Mapping[str, Any]]) -> None:
    """Refuse (UserError) when two cells' records differ outside the scheduler settings, naming
    the field, the two cells and the two values. Each cell is compared with the first."""
    items = list(records.items())
    if len(items) < 2:
        return
    ref_name, ref = items[0]
    for name, rec in items[1:]:
        diffs = record_differences(ref, rec)
        if diffs:
            field, va, vb = diffs[0]
            more = f" (and {len(diffs) - 1} more field(s))" if len(diffs) > 1 else ""
            raise UserError(
                f"cells {ref_name} and {name} differ in {field}: {va!r} vs {vb!r}{more}; only the scheduler settings "
                f"({', '.join(SCHEDULER_FIELDS)}) may differ between cells that are compared: rerun one of them "
                "under the same conditions (delete its folder and rerun eval-all)"
            )
