"""``[library]``: where the libraries of one's own recordings are stored (Milvus) and what a track may be
(:mod:`musrec.library` reads it)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from musrec.errors import ConfigError

INDEX_TYPES = ("auto", "FLAT", "IVF_FLAT", "HNSW")
MAX_TRACK_S = 600.0  # ten minutes: 60 segments; a longer recording is stored up to here
MAX_BYTES = 1 << 31  # a file read for a library: a long lossless album side, not a runaway
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
NAME_HELP = "letters, digits, '.', '_' and '-', at most 64"
REMOTE_SCHEMES = ("http://", "https://", "tcp://", "unix:")
ROLE_NAME_MAX = 100  # Discord's longest role name
DEFAULT_FILE = "library.db"  # in the data directory: Milvus Lite's directory (pymilvus wants the .db suffix)


def is_local(uri: str) -> bool:
    """Whether ``uri`` is a Milvus Lite path (else the address of a Milvus server)."""
    return not uri.startswith(REMOTE_SCHEMES)


@dataclass(frozen=True, kw_only=True)
class LibraryConfig:
    """``uri``: a Milvus Lite path ending in ``.db`` (None: ``library.db`` in the data directory) or
    ``http(s)://host:19530`` for Milvus standalone or a cluster (its token comes from ``MUSREC_LIBRARY_TOKEN`` only).
    ``default``: the library a command uses without ``--library``. ``index``: the vector index (auto: FLAT, exact,
    on Milvus Lite; HNSW on a server). ``max_track_s``: the part of a recording stored. ``max_bytes``: the largest
    file ``library add`` reads. ``collection``: the collections' name prefix (several installations on one server).
    ``timeout_s``: each call to the store. The bot's: ``manage_role``, a role (its name or id) whose members may
    add and remove their server's tracks beside those with Manage Server ("" for none); ``max_server_tracks``, the
    tracks a server's library holds at most."""

    uri: str | None = None
    default: str = "default"
    collection: str = "musrec"
    index: str = "auto"
    max_track_s: float = MAX_TRACK_S
    max_bytes: int = MAX_BYTES
    timeout_s: float = 30.0
    manage_role: str = ""
    max_server_tracks: int = 1000

    def __post_init__(self) -> None:
        if not NAME_PATTERN.fullmatch(self.default):
            raise ConfigError(f"library.default must be {NAME_HELP} characters, got {self.default!r}")
        if self.index not in INDEX_TYPES:
            raise ConfigError(f"library.index must be one of {', '.join(INDEX_TYPES)}, got {self.index!r}")
        if not 10.0 <= self.max_track_s <= 6 * 3600:
            raise ConfigError(f"library.max_track_s must be between 10 and 21600 seconds, got {self.max_track_s}")
        if self.max_bytes < 1:
            raise ConfigError(f"library.max_bytes must be at least 1, got {self.max_bytes}")
        if self.uri is not None and is_local(self.uri) and not self.uri.endswith(".db"):
            raise ConfigError(
                f"library.uri must be a Milvus Lite path ending in .db or an http(s):// address, got {self.uri!r}"
            )
        if self.timeout_s <= 0:
            raise ConfigError(f"library.timeout_s must be positive, got {self.timeout_s}")
        if len(self.manage_role) > ROLE_NAME_MAX:
            raise ConfigError(f"library.manage_role must be a role's name or id, at most {ROLE_NAME_MAX} characters")
        if self.max_server_tracks < 1:
            raise ConfigError(f"library.max_server_tracks must be at least 1, got {self.max_server_tracks}")
        if not self.collection.replace("_", "").isalnum() or not self.collection[:1].isalpha():
            raise ConfigError(f"library.collection must be letters, digits and _, got {self.collection!r}")
