"""Negative transforms: one module per negative, a shared base class, the registry and TilePlan."""

from .registry import BUILTIN_NEGATIVES, available_negatives, get_negative_class, make_negative

__all__ = ["BUILTIN_NEGATIVES", "available_negatives", "get_negative_class", "make_negative"]
