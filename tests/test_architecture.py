"""The layers of the code, read from its imports (issue 13): lower layers never import upper ones, no module is part
of an import circle, the library never imports discord, and the bot reaches the library only through its top.

Every import counts, including those inside functions and under ``TYPE_CHECKING``: a circle of types is still a
circle a reader has to untangle.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Lowest first. A module may import its own part and anything in a lower layer.
LAYERS: list[set[str]] = [
    # foundations, label files
    {
        "musrec",
        "musrec.data",
        "musrec.errors",
        "musrec.timecode",
        "musrec.progress",
        "musrec.cores",
        "musrec.childenv",
        "musrec.sqlitefile",
    },
    {"musrec.audio"},  # decoding, WAV, resampling
    {"musrec.vggish"},  # the model: front end, network, PCA
    {"musrec.embedding", "musrec.audioset", "musrec.cache"},  # embedders; AudioSet's data; cached embeddings
    {"musrec.index", "musrec.links"},  # the searchable index; links as input
    {"musrec.config", "musrec.recommend", "musrec.compare", "musrec.videos"},  # options of all above; results, live
    {
        "musrec.configured",
        "musrec.link_queries",
        "musrec.library",  # one's own recordings in Milvus, searched as AudioSet is
        "musrec.pipeline",
        "musrec.render",
        "musrec.setup",
    },  # the pipeline, its parts, first run
    {"musrec.cli"},
]
# What the Discord bot may use: the library's top, never its parts.
BOT_MAY_IMPORT = {
    "musrec.errors",
    "musrec.timecode",
    "musrec.config",
    "musrec.recommend",
    "musrec.compare",
    "musrec.pipeline",
    "musrec.setup",
    "musrec.configured",  # the model's thread count, set before the model loads
    "musrec.library",  # a server's library of its own tracks
    "musrec.sqlitefile",  # the store of searches keeps its file as the library keeps its own
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(package: str) -> dict[str, Path]:
    return {module_name(p): p for p in sorted((ROOT / package).rglob("*.py"))}


def imports(path: Path, known: set[str]) -> Iterator[str]:
    """The project modules ``path`` imports, wherever the import stands."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in known)


def part(module: str) -> str:
    """``musrec.index.build`` -> ``musrec.index``; top-level modules are their own part."""
    return ".".join(module.split(".")[:2])


def layer(module: str) -> int:
    for i, members in enumerate(LAYERS):
        if part(module) in members:
            return i
    raise AssertionError(f"{module} is in no layer: add its part to LAYERS")


def graph() -> dict[str, set[str]]:
    known = {**modules("musrec"), **modules("bot")}
    return {m: {t for t in imports(p, set(known)) if t in known and t != m} for m, p in known.items()}


def test_every_part_has_a_layer() -> None:
    for module in modules("musrec"):
        layer(module)


def test_no_layer_imports_a_higher_one() -> None:
    upward = [
        f"{m} -> {t}"
        for m, targets in graph().items()
        if m.startswith("musrec")
        for t in targets
        if layer(t) > layer(m)
    ]
    assert not upward, "imports from a lower layer into a higher one:\n" + "\n".join(sorted(upward))


def test_no_import_circles() -> None:
    edges = graph()
    circles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                circles.append(" -> ".join([*path[path.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for start in sorted(edges):
        if start not in state:
            visit(start, [start])
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_the_library_never_imports_discord_and_lower_layers_never_read_the_config() -> None:
    for module, path in modules("musrec").items():
        names = set(imports(path, set()))
        assert not any(n == "discord" or n.startswith("discord.") for n in names), module
        if layer(module) < layer("musrec.config"):
            assert "musrec.config" not in names, f"{module} reads the configuration"


def test_the_bot_uses_only_the_top_of_the_library() -> None:
    bad = [
        f"{m} -> {t}"
        for m, targets in graph().items()
        if m.startswith("bot")
        for t in targets
        if t.startswith("musrec") and part(t) not in BOT_MAY_IMPORT
    ]
    assert not bad, "the bot reaches into the library:\n" + "\n".join(sorted(bad))


def test_the_cli_and_the_command_payload_do_not_import_tensorflow(tmp_path: Path) -> None:
    """`musrec --help`, `musrec index info` and `python -m bot print-commands` stay instant: no TensorFlow."""
    code = (
        "import asyncio, sys\n"
        "import musrec.cli\n"
        "from bot.client import command_payload\n"
        "from musrec.config import load_config\n"
        "payload = asyncio.run(command_payload(load_config(None, environ={})))\n"
        "assert payload, 'no commands'\n"
        "heavy = sorted(m for m in ('tensorflow', 'keras', 'yt_dlp', 'faiss', 'annoy') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""
