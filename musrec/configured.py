"""The embedder a configuration asks for: VGGish in this process (loaded once per set of files) or MAX servers, and
the name of its embedding space (cached link embeddings are never reused across spaces)."""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from musrec.config import Config
from musrec.cores import usable_cores
from musrec.errors import EmbedderError

if TYPE_CHECKING:
    from musrec.embedding.base import Embedder

__all__ = ["embedder_identity", "make_embedder", "model_threads", "use_model_threads"]

log = logging.getLogger(__name__)


def model_threads(config: Config, concurrent: int = 1) -> int:
    """Threads per forward pass: ``embedder.threads``, or the usable cores shared by ``concurrent`` passes.

    Passes that run at once then do not contend for the cores (bench/bot_service_bench.py measures the choice).
    """
    if config.embedder.threads:
        return config.embedder.threads
    return max(1, usable_cores() // max(1, concurrent))


def use_model_threads(config: Config, concurrent: int = 1) -> int:
    """Size the in-process model's thread pool for ``concurrent`` forward passes at once; call before loading it.

    Returns the threads per pass, for the caller to report. A MAX embedder runs no model here: nothing to size.
    """
    threads = model_threads(config, concurrent)
    if config.embedder.kind == "local":
        from musrec.vggish.tfutil import set_intra_op_threads

        set_intra_op_threads(threads)
    return threads


def make_embedder(config: Config) -> Embedder:
    """The embedder the configuration asks for: VGGish in process, or MAX servers."""
    if config.embedder.kind == "max":
        from musrec.embedding.max_client import MaxEmbedder

        return MaxEmbedder(config.max.urls, timeout_s=config.max.timeout_s, retries=config.max.retries)
    missing = [p for p in (config.checkpoint_path, config.pca_params_path) if not p.is_file()]
    if missing:
        names = " and ".join(p.name for p in missing)
        raise EmbedderError(
            f"VGGish model files not found ({names} in {missing[0].parent}): run `musrec setup`, "
            "or set embedder.checkpoint and embedder.pca_params"
        )
    return _local_embedder(
        config.checkpoint_path.resolve(),
        config.pca_params_path.resolve(),
        config.embedder.relu,
        _stamp(config.checkpoint_path),
        _stamp(config.pca_params_path),
    )


def _stamp(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_mtime_ns, info.st_size


@functools.lru_cache(maxsize=2)
def _local_embedder(checkpoint: Path, pca_params: Path, relu: bool, *stamps: tuple[int, int]) -> Embedder:
    """One loaded model per (files, variant) in a process: 300 MB of weights are not read twice.

    ``stamps`` (modification time and size) make a replaced file load afresh.
    """
    from musrec.embedding.local import LocalEmbedder
    from musrec.vggish.tfutil import import_tensorflow

    log.info("loading VGGish (%s, relu=%s)", checkpoint.name, relu)
    import_tensorflow()  # quietly, before the model's own import
    return LocalEmbedder(checkpoint, pca_params, relu=relu)


def embedder_identity(config: Config) -> str:
    """Names the embedding space, so cached link embeddings from another model or variant are never reused."""
    if config.embedder.kind == "max":
        return "max:" + ",".join(config.max.urls)
    stamp = "-".join(str(v) for p in (config.checkpoint_path, config.pca_params_path) for v in _stamp_or_none(p))
    # "pcm16": the input is embedded as 16-bit PCM (issue 26), so links cached before that are embedded afresh.
    return f"local:relu={config.embedder.relu}:pcm16:{stamp}"


def _stamp_or_none(path: Path) -> tuple[int, int]:
    try:
        return _stamp(path)
    except OSError:
        return (0, 0)
