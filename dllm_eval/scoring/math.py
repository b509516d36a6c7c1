"""Answer checking for MATH-style problems: `extract_answer` and `is_equiv`.

Why not exact string match: MATH answers are LaTeX, and the same value has many spellings
(`\\dfrac{3}{4}`, `\\frac34`, `0.75`; `1,000` and `1000`; `90^\\circ` and `90`; `\\{1,-2\\}` and
`-2, 1`). `is_equiv` lets math-verify (the maintained checker lm-eval's own `minerva_math`
uses) decide equivalence symbolically, after a light normalization of the notations that
math-verify leaves alone (percent signs, `\\text{}` word answers, `\\left`/`\\right`, spacing).

Why a deadline of our own: math-verify guards itself with `signal.alarm` in whole seconds, which
(a) clobbers any other alarm, (b) fails outright off the main thread, and (c) is swallowed into a
silent "not equal" when it fires inside its broad `except Exception`. Here one deadline covers
the whole check (`timeout_s`, fractions of a second allowed); on the main thread it is a
`setitimer` alarm raising a BaseException that nothing inside sympy catches; on any other
thread the check runs in a helper process that is killed when the deadline passes. A timed-out
check counts as "not equivalent".

Public API:
    extract_answer(text) -> str | None   the final answer a solution commits to
    answer_of(text) -> str | None        that, or the text itself when it is a bare answer
    is_equiv(prediction, gold) -> bool   does the prediction's answer equal the gold answer
"""

from __future__ import annotations

import re
import signal
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TypeVar

DEFAULT_TIMEOUT_S = 5.0  # per is_equiv call; a normal check takes a few milliseconds

T = TypeVar("T")


# --------------------------------------------------------------------------------------------
# answer extraction
# --------------------------------------------------------------------------------------------


def _braced_after(text: str, start: int) -> str | None:
    """The contents of the brace group opening at or after `start` (None if unbalanced)."""
    i = text.find("{", start)
    if i < 0:
        return None
    depth = 0
    for j in range(i, len(text)):
        ch = text[j]
        if ch == "{" and (j == 0 or text[j - 1] != "\\"):
            depth += 1
        elif ch == "}" and (j == 0 or text[j - 1] != "\\"):
            depth -= 1
            if depth == 0:
                return text[i + 1 : j]
    return None


def last_boxed(text: str) -> str | None:
    """The contents of the last `\\boxed{...}` (or `\\fbox{...}`, or `\\boxed x`) in `text`."""
    best: str | None = None
    best_at = -1
    for macro in ("\\boxed", "\\fbox"):
        at = text.rfind(macro)
        if at > best_at:
            rest = text[at + len(macro) :]
            if rest.startswith(" ") and not rest.lstrip().startswith("{"):
                # `\boxed 5`: the token up to the next space or `$`
                m = re.match(r"\s*([^\s$]+)", rest)
                inner = m.group(1) if m else None
            else:
                inner = _braced_after(text, at + len(macro))
            if inner is not None:
                best, best_at = inner, at
    return best


_FINAL_ANSWER = re.compile(r"final answer is[:\s]*(.+?)(?:\.\s*I hope it is correct|\n|$)", re.IGNORECASE)
_DOLLARS = re.compile(r"(?<!\\)\$\$(.+?)(?<!\\)\$\$|(?<!\\)\$(.+?)(?<!\\)\$", re.DOTALL)


def extract_answer(text: str) -> str | None:
    """The final answer a solution states, or None when it states none.

    In order: the last `\\boxed{}`; else the text after the last "The final answer is" (Minerva's
    closing line; `$` signs dropped); else the last `$...$` math span. Returns the raw LaTeX.
    """
    if not text:
        return None
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed.strip()
    finals = _FINAL_ANSWER.findall(text)
    if finals:
        answer = finals[-1].strip()
        inner = _DOLLARS.findall(answer)
        if inner:
            answer = inner[-1][0] or inner[-1][1]
        answer = answer.strip().rstrip(".").strip().strip("$").strip()
        return answer or None
    spans = _DOLLARS.findall(text)
    if spans:
        last = spans[-1][0] or spans[-1][1]
        return last.strip() or None
    return None


BARE_ANSWER_MAX_CHARS = 80


def answer_of(prediction: str) -> str | None:
    """The answer `is_equiv` judges: `extract_answer`'s, else the text itself if it is a bare answer.

    A bare answer is one short line (`-2, 1`, `\\frac34`). Longer text with no boxed, final-answer
    or `$` answer states none: handing a whole paragraph to math-verify would let it fish out
    some number, and would cost time on every unanswered sample.
    """
    found = extract_answer(prediction)
    if found is not None:
        return found
    text = prediction.strip()
    if text and "\n" not in text and len(text) <= BARE_ANSWER_MAX_CHARS:
        return text
    return None


# --------------------------------------------------------------------------------------------
# normalization
# --------------------------------------------------------------------------------------------

_DROP = [
    "\\left",
    "\\right",
    "\\!",
    "\\,",
    "\\;",
    "\\:",
    "\\displaystyle",
    "^\\circ",
    "^{\\circ}",
    "^{\\circ }",
    "°",
    "\\%",
    "%",
    "\\$",
]
_TEXT_ONLY = re.compile(r"^\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}$")
_WORDY = re.compile(r"^\(?[A-Za-z][A-Za-z ,'\-()]*\)?$")


def normalize(answer: str) -> str:
    """A canonical spelling for string comparison: notation-only differences removed.

    Used before math-verify sees the answer, and as the first, exact-string test.
    """
    s = answer.strip()
    while True:
        inner = last_boxed(s)
        if inner is not None and s.startswith(("\\boxed", "\\fbox")):
            s = inner.strip()
        else:
            break
    s = s.strip("$").strip()
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    for token in _DROP:
        s = s.replace(token, "")
    s = re.sub(r"(?<!\\)\\ ", "", s)  # `\ ` is a space, but `\\ ` is a matrix row break
    s = re.sub(r"\\text\{\s*\}", "", s)
    s = s.rstrip(".").strip()
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s):  # 1,000 is a number; 1,00 or 0,1 are not
        s = s.replace(",", "")
    s = re.sub(r"\s+", " ", s)
    return s


def _text_answer(s: str) -> str | None:
    """The lower-cased words of an answer that is text rather than math (`\\text{(C)}`, `Evelyn`)."""
    m = _TEXT_ONLY.match(s)
    body = (m.group(1) if m else s).strip()
    if not _WORDY.match(body) or (m is None and len(body.replace(" ", "")) <= 1 and body.islower()):
        return None
    return re.sub(r"[^a-z0-9]", "", body.lower()) or None


# --------------------------------------------------------------------------------------------
# deadline
# --------------------------------------------------------------------------------------------


class CheckTimeout(BaseException):
    """Raised by the alarm; a BaseException so math-verify's and sympy's `except Exception` let it through."""


def _alarm(_signum: int, _frame: object) -> None:
    raise CheckTimeout


_pool: ProcessPoolExecutor | None = None
_pool_lock = threading.Lock()


def _run_in_process(fn: Callable[..., T], args: tuple, timeout_s: float) -> T | None:
    """Off the main thread no alarm can interrupt us: run in a helper process, kill it on timeout."""
    global _pool
    import multiprocessing

    with _pool_lock:
        if _pool is None:
            _pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        pool = _pool
    future = pool.submit(fn, *args)
    try:
        return future.result(timeout=timeout_s + 10.0)  # + start-up of a fresh helper
    except FutureTimeout:
        with _pool_lock:
            for proc in list(getattr(pool, "_processes", {}).values()):
                proc.kill()
            pool.shutdown(wait=False, cancel_futures=True)
            if _pool is pool:
                _pool = None
        return None


def run_with_deadline(fn: Callable[..., T], args: tuple, timeout_s: float) -> T | None:
    """`fn(*args)`, or None if it has not returned within `timeout_s` seconds."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        return _run_in_process(fn, args, timeout_s)
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        return fn(*args)
    except CheckTimeout:
        return None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# --------------------------------------------------------------------------------------------
# equivalence
# --------------------------------------------------------------------------------------------


def _math_verify_equal(gold: str, pred: str) -> bool:
    """math-verify's verdict on two normalized answers (its own alarms off: ours covers it)."""
    import math_verify.grader
    import math_verify.parser
    from math_verify import LatexExtractionConfig, parse, verify

    # we pass timeout None on purpose (see module docstring); silence its one-time warning
    math_verify.parser.TIMEOUT_WARNING_SHOWN = True
    math_verify.grader.TIMEOUT_WARNING_SHOWN = True
    config = [LatexExtractionConfig(boxed_match_priority=0)]
    gold_parsed = parse(f"${gold}$", extraction_config=config, parsing_timeout=None)  # type: ignore[arg-type]
    pred_parsed = parse(f"${pred}$", extraction_config=config, parsing_timeout=None)  # type: ignore[arg-type]
    if not gold_parsed or not pred_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))


def _equal_answers(pred: str, gold: str) -> bool:
    """Compare two extracted answers: exact after normalization, as text, then symbolically."""
    p, g = normalize(pred), normalize(gold)
    if not p or not g:
        return False
    if p == g or p.replace(" ", "") == g.replace(" ", ""):
        return True
    g_text = _text_answer(g)
    if g_text is not None:
        return _text_answer(p) == g_text
    return _math_verify_equal(g, p)


def is_equiv(prediction: str, gold: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
    """Whether `prediction` answers with the value of `gold`.

    `prediction` may be a whole solution (its final answer is found by `extract_answer`) or a
    bare answer; so may `gold` (a bare answer such as MATH-500's `answer` field is the usual
    case). A check that runs past `timeout_s` seconds counts as not equivalent.
    """
    if not isinstance(prediction, str) or not isinstance(gold, str):
        return False
    pred = answer_of(prediction)
    gold_answer = (last_boxed(gold) or gold).strip()
    if not pred or not gold_answer:
        return False
    return bool(run_with_deadline(_equal_answers, (pred, gold_answer), timeout_s))
