"""The searchable index: its directory's files (``layout``), the segment metadata (``store``), the search backends
(``backends``), building and tuning an approximate structure (``build``, ``tune``) and a loaded index (``loaded``).
Built on ``audioset``."""
