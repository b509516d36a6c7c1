"""One exception type for bad input: the CLI prints its message as a single line and exits 2."""


class UserError(ValueError):
    """Bad input from the user: the message says what is wrong and how to fix it."""
