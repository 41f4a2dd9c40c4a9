"""The library's failures a user can cause or meet, each with a message safe to show (no paths of the store's
internals, no tokens) that says what to do."""

from __future__ import annotations

from musrec.errors import MusrecError


class LibraryError(MusrecError):
    """The library's store failed: a Milvus server that does not answer, a write it refused."""


class LibraryBusyError(LibraryError):
    """A Milvus Lite file held by another process (Milvus Lite lets one process hold it)."""


class LibraryFormatError(LibraryError):
    """The store was made by another version of musrec, or is not a musrec library."""


class LibraryNameError(LibraryError):
    """A library name musrec does not accept."""


class UnknownTrackError(LibraryError):
    """A track id (or prefix) that names no track of the library, or several."""
