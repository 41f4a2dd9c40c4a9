"""A predict request's body, read as it arrives: only the uploaded ``audio`` file is kept, and only as much of it as
the limits allow.

aiohttp's ``request.post()`` holds every plain form field in memory (up to the request limit each) and every file in
a temporary file before the handler sees any of them. Here the multipart body is read part by part: the first part
named after the field that carries a file name (as in MAX, only such a part is an upload) is spooled, up to one byte
past the file limit; any other part is read past in pieces and dropped. The body is refused before a byte is read
when it is compressed, of unknown length or longer than the request limit, and as soon as more than that arrives.
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass
from typing import IO

from aiohttp import BodyPartReader, hdrs, web

MSG_LENGTH_REQUIRED = "Length required: send the form with a Content-Length"
MSG_COMPRESSED = "Compressed request bodies are not accepted"
READ_CHUNK_BYTES = 64 * 1024
SPOOL_MEMORY_BYTES = 1 << 20  # an upload larger than this waits on disk, not in memory


class BodyRefused(Exception):
    """The body is not read (on): ``status`` and the message to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Upload:
    """The uploaded file of a form: its bytes, spooled and rewound, and its declared content type."""

    file: IO[bytes]
    content_type: str


def check_body(request: web.Request, *, max_bytes: int) -> None:
    """BodyRefused before a byte of the body is read: compressed (415; no MAX client compresses, and decompressing
    is work a sender chooses), of unknown length (411: chunked), or longer than ``max_bytes`` (413)."""
    if request.headers.get(hdrs.CONTENT_ENCODING, "identity").strip().lower() != "identity":
        raise BodyRefused(415, MSG_COMPRESSED)
    if request.content_length is None and request.body_exists:
        raise BodyRefused(411, MSG_LENGTH_REQUIRED)
    if request.content_length is not None and request.content_length > max_bytes:
        raise too_large(max_bytes)


def too_large(max_bytes: int) -> BodyRefused:
    return BodyRefused(413, f"Request body too large: the limit is {max_bytes} bytes")


async def receive(request: web.Request, *, field: str, max_bytes: int, max_file_bytes: int) -> Upload | None:
    """The first file part named ``field``, at most ``max_file_bytes + 1`` of its bytes (one more than the limit, so a
    reader can tell "too large" from "at the limit"); None if the form has none or the body is no multipart form.

    BodyRefused (413) as soon as more than ``max_bytes`` of body have arrived; ValueError (or aiohttp's
    AssertionError) for a malformed form, a nested multipart body included.
    """
    if request.content_type != "multipart/form-data":
        return None
    reader = await request.multipart()
    upload: Upload | None = None
    try:
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise ValueError("a nested multipart body")
            spool: IO[bytes] | None = None
            if upload is None and part.name == field and part.filename is not None:
                spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES)  # noqa: SIM115 - handed on
                upload = Upload(spool, part.headers.get(hdrs.CONTENT_TYPE, ""))
            kept = 0
            # Every part is read to its end here: the reader would otherwise read it past itself, unbounded.
            while chunk := await part.read_chunk(READ_CHUNK_BYTES):
                if request.content.total_bytes > max_bytes:  # the body as received, part headers included
                    raise too_large(max_bytes)
                if spool is not None and kept <= max_file_bytes:
                    piece = chunk[: max_file_bytes + 1 - kept]
                    kept += len(piece)
                    await asyncio.to_thread(spool.write, piece)
    except BaseException:
        if upload is not None:
            upload.file.close()
        raise
    if upload is not None:
        upload.file.seek(0)
    return upload


__all__ = ["BodyRefused", "Upload", "check_body", "receive"]
