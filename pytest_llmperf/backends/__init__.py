"""Backends behind one protocol (:mod:`.base`): ``offline`` (engine) and ``server`` (OpenAI)."""

from __future__ import annotations

from .base import Backend, BackendHandle

__all__ = ["Backend", "BackendHandle"]
