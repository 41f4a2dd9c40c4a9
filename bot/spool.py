"""Where attachments wait for a worker: files, not memory.

Up to ``workers + max_waiting`` requests hold attachments at once, and a /blend three of them (25 MiB each by
default): in memory that would be hundreds of MiB. Each attachment is written, as it downloads, to a file of its own
in a private directory (under the system's temporary directory: set ``TMPDIR`` to a disk where /tmp is a tmpfs), and
the decoder reads that file as it would read any other. A file is removed when its request ends, however it ends:
answered, refused, timed out, or cancelled at shutdown; the directory, and whatever a request still held in it, when
the bot closes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

PREFIX = "musrec-bot-"


class Spool:
    """A private directory (mode 0700) of attachment files; :meth:`file` gives one for a request."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix=PREFIX))

    @contextlib.contextmanager
    def file(self) -> Iterator[Path]:
        """An empty file of its own (mode 0600), removed on leaving the block."""
        fd, name = tempfile.mkstemp(dir=self.path, prefix="clip-")
        os.close(fd)
        path = Path(name)
        try:
            yield path
        finally:
            path.unlink(missing_ok=True)

    def files(self) -> list[Path]:
        """The attachment files held now (none once every request has ended)."""
        return sorted(self.path.iterdir()) if self.path.is_dir() else []

    def close(self) -> None:
        """Remove the directory and anything still in it (a request's worker thread may still read a file: its
        open file stays readable until it is done)."""
        shutil.rmtree(self.path, ignore_errors=True)
        log.debug("attachment spool %s removed", self.path)
