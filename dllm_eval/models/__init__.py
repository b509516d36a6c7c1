"""Model code (one architecture per file) and the embedded models shipped with dllm-eval.

`EMBEDDED_MODELS` maps a bare name (`pretrained=tiny_dream`, `--model tiny_dream`) to its asset
directory; `checkpoint_io.resolve_checkpoint` reads it at call time, so a name resolves the same
way in the adapter, `eval-all` and every tool that loads a checkpoint. A name whose directory
holds no weights yet (tiny_dream before its GPU training run is committed) is one clear error,
not a hub lookup. `EMBEDDED_MODEL_DIR` is the default model when no `pretrained` is given.
"""

from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"
EMBEDDED_MODELS: dict[str, Path] = {
    "tiny_llada": ASSETS_DIR / "tiny_llada",
    "tiny_dream": ASSETS_DIR / "tiny_dream",
}
EMBEDDED_MODEL_DIR = EMBEDDED_MODELS["tiny_llada"]
