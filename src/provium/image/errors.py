"""Errors raised while building or locating guest images."""


class ImageError(Exception):
    """An image could not be built or found; the message says what to do about it."""
