"""Registers the `dllm_adaptive` model with lm-eval at interpreter start (loaded from a .pth file).

lm-eval 0.4.x has no plugin entry points, and `get_model` only imports its built-in models when
the registry is empty. So we register a lazy placeholder *and* import `lm_eval.models` first,
keeping `hf` and the other built-ins resolvable. Any failure is swallowed: a broken optional
hook must never stop the interpreter from starting.

It also installs `dllm_eval.errors.one_line_excepthook`: under the stock `lm_eval` / `lm-eval
run` CLIs, a `UserError` from the dllm_adaptive model (unknown scheduler, bad threshold, missing
checkpoint...) arrives wrapped in a 30-50 line traceback; the hook prints its one line instead.
Other exceptions keep their normal traceback.
"""

try:  # pragma: no cover - exercised through the stock `lm_eval` CLI in tests
    import sys as _sys

    from dllm_eval.errors import one_line_excepthook as _hook

    if getattr(_sys.excepthook, "__name__", "") != _hook.__name__:
        _hook.previous = _sys.excepthook
        _sys.excepthook = _hook
except Exception:
    pass

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
