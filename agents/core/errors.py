"""The base of every error whose message is written for the caller."""


class CallerError(Exception):
    """A failure the caller can act on: tool wrappers and job runners hand its message on word for word."""
