"""Registers the `dllm_adaptive` model with lm-eval at interpreter start (loaded from a .pth file).

lm-eval 0.4.x has no plugin entry points, and `get_model` only imports its built-in models when
the registry is empty. So we register a lazy placeholder *and* import `lm_eval.models` first,
keeping `hf` and the other built-ins resolvable. Any failure is swallowed: a broken optional
hook must never stop the interpreter from starting.
"""

try:  # pragma: no cover - exercised through the stock `lm_eval` CLI in tests
    import importlib.util

    if importlib.util.find_spec("lm_eval") is not None:
        import lm_eval.models  # noqa: F401  (registers the built-in lazy placeholders)
        from lm_eval.api.registry import model_registry

        if "dllm_adaptive" not in model_registry:
            model_registry.register("dllm_adaptive", target="dllm_eval.lm_eval_model:DiffusionLM")

    from dllm_eval.task_twins import install as _install_task_twins  # stock task -> dllm_* twin hints

    _install_task_twins()
except Exception:
    pass
