"""The model's thread pool: sized for the forward passes that run at once, before TensorFlow starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import child_environment

from musrec.config import BotConfig, Config, ConfigError, EmbedderConfig
from musrec.configured import model_threads, use_model_threads
from musrec.cores import usable_cores


@pytest.fixture
def four_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3})


@pytest.mark.usefixtures("four_cores")
@pytest.mark.parametrize(("concurrent", "threads"), [(1, 4), (2, 2), (3, 1), (8, 1)])
def test_the_cores_are_shared_by_the_passes_at_once(concurrent: int, threads: int) -> None:
    assert model_threads(Config(), concurrent) == threads


@pytest.mark.usefixtures("four_cores")
def test_a_configured_count_wins() -> None:
    assert model_threads(Config(embedder=EmbedderConfig(threads=3)), 2) == 3
    with pytest.raises(ConfigError, match="embedder.threads"):
        EmbedderConfig(threads=-1)


def test_without_cpu_affinity_every_core_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Systems without sched_getaffinity (macOS) size the work from the core count."""
    monkeypatch.delattr("os.sched_getaffinity")
    monkeypatch.setattr("os.cpu_count", lambda: 6)
    assert usable_cores() == 6
    assert model_threads(Config(), 2) == 3


def test_max_embedder_sizes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr("musrec.vggish.tfutil.set_intra_op_threads", calls.append)
    use_model_threads(Config(embedder=EmbedderConfig(kind="max")), 1)
    use_model_threads(Config(embedder=EmbedderConfig(threads=2)), 1)
    assert calls == [2]


CHILD = """
import logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
from musrec.vggish.tfutil import import_tensorflow, set_intra_op_threads
set_intra_op_threads(1)
tf = import_tensorflow()
print("threads", tf.config.threading.get_intra_op_parallelism_threads())
set_intra_op_threads(2)
print("threads", tf.config.threading.get_intra_op_parallelism_threads())
"""


def test_tensorflow_starts_with_the_pool_asked_for(tmp_path: Path) -> None:
    """In a fresh process (TensorFlow's pool is per process): the pool is set once, a later change is logged."""
    out = subprocess.run(
        [sys.executable, "-c", CHILD],
        env=child_environment(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    assert "threads 1\n" in out
    assert out.count("threads 1\n") == 2
    assert "already runs with 1 intra-op threads" in out


def test_the_bot_sizes_the_pool_for_its_workers(
    monkeypatch: pytest.MonkeyPatch, four_cores: None, tmp_path: Path
) -> None:
    import bot.__main__ as entry

    calls: list[int] = []
    monkeypatch.setattr("musrec.vggish.tfutil.set_intra_op_threads", calls.append)
    order: list[str] = []
    monkeypatch.setattr(entry, "_prepare", lambda config: order.append(f"prepare after {calls}"))

    async def serve(config: Any, token: str, **options: Any) -> None:
        order.append("serve")

    monkeypatch.setattr(entry, "_serve", serve)
    assert entry._run(Config(bot=BotConfig(workers=2)), "token") == 0
    assert calls == [2] and order == ["prepare after [2]", "serve"]


@pytest.mark.parametrize(("command", "threads"), [(["add", "."], 2), (["list"], 4)])
def test_library_add_shares_the_cores_between_its_passes(
    monkeypatch: pytest.MonkeyPatch, four_cores: None, tmp_path: Path, command: list[str], threads: int
) -> None:
    """``library add`` embeds two recordings at once (musrec.library.add): each pass gets half the cores; other
    commands run one pass on all of them. The pool is sized before the command runs."""
    import musrec.cli as cli

    calls: list[int] = []
    monkeypatch.setattr("musrec.vggish.tfutil.set_intra_op_threads", calls.append)
    ran: list[list[int]] = []

    def library(args: Any, config: Any) -> int:
        ran.append(list(calls))
        return 0

    monkeypatch.setitem(cli.COMMANDS, ("library", None), library)
    config = tmp_path / "config.toml"
    config.write_text(f'[data]\ndir = "{tmp_path / "data"}"\n')
    assert cli.main(["--config", str(config), "library", *command]) == 0
    assert ran == [[threads]]
