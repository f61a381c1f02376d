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


class EmptyCohortError(SchemaError):
    """Nothing usable is left after loading."""


class SplitError(DeepPCOSError):
    """A split cannot be made, or a made split breaks a grouping rule."""


class RunError(DeepPCOSError):
    """A run folder is missing, incomplete or was written by an incompatible version."""
