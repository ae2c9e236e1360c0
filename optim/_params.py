"""The check every transform here shares: ``update`` must be given the current params."""
from __future__ import annotations

from typing import Any


def require_params(params: Any, transform: str) -> None:
    """Raise ``ValueError`` naming ``transform`` when ``params`` is None."""
    if params is None:
        raise ValueError(f'{transform} needs the current params: call '
                         'tx.update(updates, state, params)')
