"""How a STOMP session's parts report a client's mistake: they raise ``StompError``, and
the session answers it with an ERROR frame and closes (STOMP 1.2: the server closes the
connection after an ERROR frame)."""

from __future__ import annotations

from twisted.python.failure import Failure


class StompError(Exception):
    """A client error: answered with an ERROR frame, then the connection closes."""

    def __init__(self, message: str, detail: str = "", **headers: str) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail
        self.headers = headers


def error_of(failure: Failure) -> BaseException:
    """The exception a Failure carries (an ERROR frame is made from it)."""
    return failure.value if failure.value is not None else Exception(failure.getErrorMessage())
