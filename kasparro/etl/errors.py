"""The error a source raises when it cannot be read as a whole.

It lives apart from the sources package so that the modules sources use (the HTTP client) can
raise it without importing the registry.
"""


class SourceError(RuntimeError):
    """The source as a whole cannot be read (unreachable, unreadable, wrong layout)."""
