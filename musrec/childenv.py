"""The environment of the programs musrec starts: this process's, without its secrets.

ffmpeg, mpg123, and the ffmpeg and JavaScript runtime that yt-dlp starts parse media and scripts from strangers. A
bug in one of them must not hand over the bot's Discord token, an API key or a proxy's password: none of them needs
any. What is left out:

- every ``MUSREC_*`` variable: musrec's own settings and secrets (``MUSREC_DISCORD_TOKEN``,
  ``MUSREC_YOUTUBE_API_KEY``, ``MUSREC_YOUTUBE_PROXY_PASSWORD``...); no child reads them;
- any variable whose name says it holds a secret (:func:`is_secret_name`: ``*TOKEN*``, ``*SECRET*``,
  ``*PASSWORD*``, ``*API_KEY*``, ``*_KEY_*``, ``*AUTH*``, ``*COOKIE*``, ``*CREDENTIAL*``...);
- any variable whose value is a URL with a password in it (``http_proxy=http://user:pass@host``,
  ``DATABASE_URL=postgres://...``).

What the children need stays: ``PATH``, ``HOME``, the locale, ``TMPDIR``, ``LD_LIBRARY_PATH``, ``DENO_DIR``...
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Final

OWN_PREFIX: Final = "MUSREC_"
_SECRET_WORDS: Final = re.compile(
    r"TOKEN|SECRET|PASSWORD|PASSWD|PASSPHRASE|CREDENTIAL|AUTH|COOKIE|APIKEY|(?:^|_)(?:API_|ACCESS_|PRIVATE_)?KEYS?(?:_|$)"
)
_URL_WITH_PASSWORD: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/@\s:]*:[^/@\s]*@")


def is_secret_name(name: str) -> bool:
    """Whether a variable named ``name`` is musrec's own or, by its name, holds a secret."""
    upper = name.upper()
    return upper.startswith(OWN_PREFIX) or _SECRET_WORDS.search(upper) is not None


def child_environment(base: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
    """``base`` (default: ``os.environ``) without secrets (see the module docstring), then ``extra`` set on top.

    ``extra`` is what the caller means the child to have (a proxy, for instance), so it is not filtered.
    """
    environ = os.environ if base is None else base
    kept = {
        name: value
        for name, value in environ.items()
        if not is_secret_name(name) and _URL_WITH_PASSWORD.search(value) is None
    }
    kept.update(extra)
    return kept
