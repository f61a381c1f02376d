"""One root error for the whole toolkit, with precise subclasses.

Every message says what was expected, what was found and, where it helps, how to fix it, so a
user can act on it without reading a traceback (the CLI prints only the message).
"""

from __future__ import annotations


class DeepPCOSError(Exception):
    """Root of every error raised on purpose by deeppcos."""


class ConfigError(DeepPCOSError):
    """A YAML spec or config is missing, unreadable or invalid."""


class SchemaError(DeepPCOSError):
    """A table does not have the shape the spec promises (columns, ids, labels, types)."""


class DataFileError(DeepPCOSError):
    """A data file is missing, empty, corrupt or of the wrong kind."""


class ImageError(DataFileError):
    """An image cannot be read safely (missing, zero bytes, not an image, corrupt, too large)."""


class UnitError(DeepPCOSError, ValueError):
    """A unit that is not understood, out of range, or not convertible into the one expected.

    Also a ValueError, which it was before it joined this hierarchy, so callers that caught
    ValueError keep working.
    """


class EmptyCohortError(SchemaError):
    """Nothing usable is left after loading."""


class SplitError(DeepPCOSError):
    """A split cannot be made, or a made split breaks a grouping rule."""


class RunError(DeepPCOSError):
    """A run folder is missing, incomplete or was written by an incompatible version."""


class LogIntegrityError(DataFileError):
    """An append-only log (the reviewers' feedback log) was altered outside deeppcos: an entry
    was changed, replaced or removed, so its hash chain no longer matches."""
