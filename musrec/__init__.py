"""musrec: find sounds that sound like this one, by VGGish embeddings searched against Google AudioSet."""

from __future__ import annotations

__version__ = "0.1.0"
