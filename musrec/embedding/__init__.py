"""Samples in, embedding rows out: VGGish in this process (``local``), MAX servers over HTTP (``max_client``), and a
MAX-compatible server around a local embedder (``server``). Built on ``audio`` and ``vggish``."""
