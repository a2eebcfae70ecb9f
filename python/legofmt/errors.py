"""The exceptions of legofmt: every error the library raises derives from :class:`LgnError`.

Errors about bad arguments or bad files also derive from :class:`ValueError`, and I/O errors
from :class:`OSError`, so code written for the standard exceptions keeps working.
"""

from __future__ import annotations


class LgnError(Exception):
    """Base class of every legofmt error."""


class InvalidArgumentError(LgnError, ValueError):
    """An argument is outside its documented range (k, block, option name, dtype...)."""


class FormatError(LgnError, ValueError):
    """A file is not a valid ``.lgn``/safetensors file; the message names tensor and field."""


class ChecksumError(FormatError):
    """A tensor's bytes do not match the CRC-32 stored for them (the file is corrupt)."""


class UnsupportedVersionError(FormatError):
    """The file was written with a newer major version of the format."""


class LgnIOError(LgnError, OSError):
    """Reading or writing a file failed."""


class CancelledError(LgnError):
    """A long operation was cancelled."""


__all__ = [
    "CancelledError",
    "ChecksumError",
    "FormatError",
    "InvalidArgumentError",
    "LgnError",
    "LgnIOError",
    "UnsupportedVersionError",
]
