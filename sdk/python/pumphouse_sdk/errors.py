"""What a sink's `write` raises when it did not deliver the whole batch.

Each is one case of the WIT `write-error`; the README says how the host
handles each. Raising anything else from `write` is a bug in the plugin:
the interpreter prints the traceback to stderr (the host logs it) and the
call traps, so the host discards the instance and retries the batch on a
fresh one, as it does for a Rust plugin that panics.
"""

from dataclasses import dataclass
from typing import List

__all__ = ["WriteError", "Retry", "Partial", "Failure", "InvalidBatch", "TooLarge", "Fatal", "ConfigError"]


class WriteError(Exception):
    """Base class of the write errors."""


class Retry(WriteError):
    """Transient trouble (server down, rate limited): the host backs off and
    retries the whole batch. A filter raising it makes the host retry too."""


@dataclass
class Failure:
    """One record a sink could not deliver, by its index in the batch."""

    index: int
    reason: str
    #: True: transient, retried with backoff; False: dead-lettered.
    retryable: bool = False


class Partial(WriteError):
    """Only these records failed; the rest were delivered."""

    def __init__(self, failures: List[Failure]):
        super().__init__(f"{len(failures)} record(s) failed")
        self.failures = list(failures)


class InvalidBatch(WriteError):
    """Something in the batch is bad but the sink cannot say which: the host
    bisects the batch to isolate and dead-letter the bad records."""


class TooLarge(WriteError):
    """The batch is too large for the destination: the host splits it."""

    def __init__(self, message: str = "batch too large"):
        super().__init__(message)


class Fatal(WriteError):
    """Misconfiguration that retrying cannot fix: the host stops sending to
    this pump and reports it failing."""


class ConfigError(ValueError):
    """Raised by `init` for a bad `config`; fails the pump's start with its
    message (any other exception from `init` does too)."""
