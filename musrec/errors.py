"""One error hierarchy for musrec.

Every error a user can cause is a :class:`MusrecError` with ``expected = True``: its message is short, safe to
show to a user (no tracebacks, file system internals, internal URLs or tokens) and says what to do. Anything
else that escapes is a bug: front ends log it with its traceback and show a generic message.
"""

from __future__ import annotations

import errno

DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


def is_disk_full(err: OSError) -> bool:
    """Whether a write failed because the disk (or the user's quota) is full."""
    return err.errno in DISK_FULL


class MusrecError(Exception):
    """Base class: ``str(err)`` is a user-facing message when ``expected`` is true."""

    expected: bool = True


class ConfigError(MusrecError):
    """A configuration file, environment variable or flag has a wrong key or value."""


class DataError(MusrecError):
    """Input data (a TFRecord, a tarball, a label file) is missing or not in the expected format."""


class IndexNotFoundError(MusrecError):
    """No usable index at the configured location."""


class IndexFormatError(MusrecError):
    """An index exists but is damaged or was written by an incompatible version."""


class QueryError(MusrecError):
    """A query cannot be answered: unknown segment, malformed input, nothing left after filtering."""


class UnknownSegmentError(QueryError):
    """An ``audioset:VIDEO_ID[@START]`` query names no indexed segment."""


class DecodeError(MusrecError):
    """Audio could not be decoded: corrupt, empty, or not audio at all."""


class TooLongError(MusrecError):
    """Input exceeds a configured size or duration limit."""


class TooShortError(MusrecError):
    """Input is too short to embed."""


class DownloadError(MusrecError):
    """A remote file could not be fetched."""


class UnsupportedLinkError(MusrecError):
    """A link is not one musrec fetches (another host, a private address, a playlist)."""


class EmbedderError(MusrecError):
    """The embedding model or the embedding service failed."""


class BusyError(MusrecError):
    """Too much work queued; try again shortly."""
