"""Cancellation of a request's work: a token the server sets when the client goes away (or
the request runs out of time), checked by the work that request caused.

A token is checked at every point where work can stop cheaply: before a request's batch
runs, between pipeline stages, before a prompt is sent to an engine, and at every decoding
step of a generation (the HF backend stops that sequence; the others skip what has not
started, and the HTTP backend closes the upstream request so the upstream server aborts).
"""

from __future__ import annotations

import threading


class CancelToken:
    """Set once (:meth:`cancel`); readers check :attr:`cancelled`. Thread-safe."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""
        self.started = False
        """Set by the worker that starts the request's work (a request not started by its
        queue deadline is cancelled with a 503)."""

    def cancel(self, reason: str = "cancelled") -> None:
        """Ask the work to stop (the first reason is kept)."""
        if not self._event.is_set():
            self.reason = reason
            self._event.set()

    @property
    def cancelled(self) -> bool:
        """True once :meth:`cancel` was called."""
        return self._event.is_set()

    def __repr__(self) -> str:
        return f"CancelToken(cancelled={self.cancelled}{', ' + repr(self.reason) if self.reason else ''})"


def is_cancelled(token: CancelToken | None) -> bool:
    """True for a token that was cancelled (``None``: never cancelled)."""
    return token is not None and token.cancelled
