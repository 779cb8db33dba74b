"""Spellings that earlier versions accepted and this one does not: each fails with a message that
names its new place, instead of Python's bare "unexpected keyword argument".

    @removed_keywords(grad="options=TrainOptions(mode=...)")
    def make_step(...): ...

    make_step(model, loss, opt, grad="manual")
    # InputTypeError: make_step(grad=...) was removed in jaxnn 0.3:
    # write options=TrainOptions(mode=...)

The changelog's migration table lists them all.
"""

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from .errors import InputTypeError

__all__ = ["removed_keywords", "removed_attribute", "FIT", "STEPS"]

F = TypeVar("F", bound=Callable[..., Any])

STEPS = {
    "grad": "options=TrainOptions(mode=...)",
    "mesh": "options=TrainOptions(mesh=...)",
    "augment": "options=TrainOptions(augment=...)",
}
"""The step builders' options that moved into TrainOptions (make_step, steps_function, make_epoch, ...)."""

FIT = {
    **STEPS,
    "test_loss": "options=TrainOptions(test_loss=...)",
    "checkpoint_path": "checkpointing=Checkpointing(path=...)",
    "resume": "checkpointing=Checkpointing(resume=...)",
    "checkpoint_every": "checkpointing=Checkpointing(every=...)",
    "progress": "reporting=Reporting(progress=...)",
    "eval_every_epoch": "reporting=Reporting(eval_every_epoch=...)",
    "log": "reporting=Reporting(log=...)",
}
"""fit's keyword arguments that moved into its three option tuples."""


def removed_keywords(**moved: str) -> Callable[[F], F]:
    """A decorator: calling the function with a removed keyword raises an InputTypeError naming its
    new place.

    **Arguments:** `**moved` the removed keyword -> what to write instead.

    **Returns:** the decorator; the function keeps its name, docstring and signature.
    """

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            for name in kwargs:
                if name in moved:
                    raise InputTypeError(
                        f"{fn.__name__}({name}=...) was removed in jaxnn 0.3: write {moved[name]} "
                        "(the changelog's migration table lists every moved name)"
                    )
            return fn(*args, **kwargs)

        return call  # type: ignore[return-value]

    return wrap


def removed_attribute(module: str, name: str, moved: dict[str, str]) -> AttributeError:
    """The AttributeError for `module.name`: naming its new place when it moved, else Python's own.

    **Arguments:** `module` the module's name; `name` the attribute asked for; `moved` removed
    attribute -> its new place.

    **Returns:** the error, for the module's `__getattr__` to raise.
    """
    if name in moved:
        return AttributeError(f"{module}.{name} was removed in jaxnn 0.3: use {moved[name]}")
    return AttributeError(f"module {module!r} has no attribute {name!r}")
