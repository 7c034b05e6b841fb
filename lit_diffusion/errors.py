"""User-facing errors.

A :class:`UserError` is a mistake the user can fix (a wrong override, a missing dataset, a path that is
not a checkpoint).  The entry points catch it, print its one-paragraph message and exit with status 2,
without a traceback.  Everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import sys
from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable)

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A problem with the user's input: the message names the problem and how to fix it."""


def exit_on_user_error(fn: F) -> F:
    """Decorate an entry point so that a :class:`UserError` becomes one message and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            # Hydra's instantiate wraps errors raised in constructors (InstantiationException): unwrap ours.
            cause = err if isinstance(err, UserError) else err.__cause__
            if not isinstance(cause, UserError):
                raise
            print(f"lit_diffusion error: {user_message(cause)}", file=sys.stderr)
            sys.exit(EXIT_USER_ERROR)

    return wrapper  # type: ignore[return-value]


def user_message(err: UserError) -> str:
    """The error's message.  One raised in a DataLoader worker process reaches the main process as a new error
    whose message is the worker's traceback text, ending with the original ``UserError: <message>``: that part."""
    text = str(err)
    if "Original Traceback" in text:
        text = text.rsplit(f"{type(err).__name__}: ", 1)[-1].strip()
    return text
