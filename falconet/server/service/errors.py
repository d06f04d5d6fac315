"""The Training API's error vocabulary: one helper per kind, the hosted service's codes."""
from __future__ import annotations

from falconet.core.errors import FalconetError


def not_found(kind: str, ident: object) -> FalconetError:
    """``NotFoundProject``, ``NotFoundTag``, ``NotFoundIteration``, ``NotFoundImage``, ``NotFoundDomain``."""
    return FalconetError(f"No {kind.lower()} with id {ident}.", code=f"NotFound{kind}", status=404)


def bad_request(code: str, message: str) -> FalconetError:
    return FalconetError(message, code=code, status=400)


def conflict(code: str, message: str) -> FalconetError:
    return FalconetError(message, code=code, status=409)
