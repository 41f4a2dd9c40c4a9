"""Shared fixtures. Feature-specific fixtures live in tests/*_fixtures.py modules next to their tests."""

from __future__ import annotations

import os

# TensorFlow is chatty on import; tests assert on our output, not its banner.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
