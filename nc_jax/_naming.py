"""How functions are named in results and checkpoint identities.

A function nc-jax provides carries the name it is registered under (attribute `nc_jax_name`:
"head", "record:collapse", ...), so moving it to another module changes no identity. A user's
function is named by `module.qualname`: two different functions never share an identity.
"""
from __future__ import annotations

import functools
from typing import Callable, Optional

NAME_ATTR = "nc_jax_name"


def named(name: str):
    """Decorator giving a function (or any object taking attributes) its registered name."""
    def deco(fn):
        setattr(fn, NAME_ATTR, name)
        return fn
    return deco


def callable_name(fn: Optional[Callable]) -> Optional[str]:
    """The registered name of `fn`, else `module.qualname`; a `functools.partial` is named by its
    function; None stays None."""
    if fn is None:
        return None
    if isinstance(fn, str):
        return fn
    registered = getattr(fn, NAME_ATTR, None)
    if registered is not None:
        return registered
    if isinstance(fn, functools.partial):
        return callable_name(fn.func)
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__name__)}"
