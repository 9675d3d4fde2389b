"""One error type for bad user input: the CLI prints its message on one line and exits 2."""


class UserError(Exception):
    """A problem with what the user asked for (bad config, unknown op, corrupt file...)."""
