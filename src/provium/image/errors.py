"""Errors raised while building or locating guest images (the family lives in provium.errors)."""

from ..errors import ImageError

__all__ = ["ImageError"]
