"""Analysis of lm-eval runs: load logged samples and traces, paired statistics, reports.

Import the submodules directly (``dllm_eval.analysis.stats``, ``.loading``, ``.report``); this
package file stays empty so ``dllm-eval report --help`` does not import scipy or matplotlib.
"""
