"""One exception type for bad input: the CLI prints its message as a single line and exits 2."""

import sys


class UserError(ValueError):
    """Bad input from the user: the message says what is wrong and how to fix it."""


def find_user_error(exc: BaseException | None) -> UserError | None:
    """The UserError in `exc`'s cause/context chain (lm-eval may wrap ours), or None."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, UserError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def one_line_excepthook(exc_type, exc, tb) -> None:
    """sys.excepthook: a UserError anywhere in the chain prints `error: <message>` (its first
    line) on stderr; everything else goes to the previous hook. The interpreter then exits 1."""
    user_error = find_user_error(exc)
    if user_error is not None:
        text = str(user_error).strip().splitlines()
        print(f"error: {text[0] if text else type(user_error).__name__}", file=sys.stderr)
        return
    one_line_excepthook.previous(exc_type, exc, tb)


one_line_excepthook.previous = sys.__excepthook__
