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


class MissingExtraError(DeepPCOSError, ImportError):
    """A feature needs an optional extra that is not installed (``deeppcos[serve]``, …); the
    message names the feature and the command that installs the extra. Also an ImportError, so
    code that guarded the import with ``except ImportError`` keeps working. Raised by
    :func:`deeppcos.extras.require`."""


class NotFittedError(DeepPCOSError, ValueError, AttributeError):
    """A model used before it was fitted or loaded. Also a ValueError and an AttributeError,
    as scikit-learn's NotFittedError is, so code written for scikit-learn estimators catches it.
    """


def require_fitted(model: object, attribute: str, how: str | None = None) -> None:
    """Raise :class:`NotFittedError` unless ``model`` has the fitted ``attribute``; ``how`` says
    what fits it (default: its fit() or its class's load())."""
    if not hasattr(model, attribute):
        name = type(model).__name__
        raise NotFittedError(
            f"this {name} is not fitted yet; {how or f'call fit() or {name}.load() first'}"
        )
