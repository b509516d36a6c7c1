"""dllm-eval: trustworthy evaluation of inference schedulers for diffusion language models."""

__version__ = "0.1.0"
