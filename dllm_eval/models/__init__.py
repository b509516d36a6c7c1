"""Model code (one architecture per file) and the location of the embedded default model."""

from pathlib import Path

EMBEDDED_MODEL_DIR = Path(__file__).resolve().parent.parent / "assets" / "tiny_llada"
