"""Libraries on a Milvus server (issue 25), ``[library] uri = "http://127.0.0.1:PORT"``, over the gRPC protocol
pymilvus speaks to Milvus standalone and clusters. Two servers (tests/milvus_servers.py): ``milvus-lite server``, and
Milvus standalone itself (Milvus 2.3, as compose.yaml's ``milvus`` service runs it, there 2.6) with authentication,
the token TOKEN. On both: the CLI end to end (add, an idempotent second add, list, a track found by an excerpt of
itself first, one match per track, removal of all its segments and nothing else, the HNSW index and its recorded
recall), two processes on one server at once, and ``MUSREC_LIBRARY_TOKEN`` handed to the client and never shown. The
standalone refuses a wrong token or none, and a privilege the user lacks: one line each. A server that is not there
or stops answering is said in one line within ``[library] timeout_s``. The refusals of other Milvus versions (2.4+:
UNAUTHENTICATED; a Status with code 1800), and a token refused only after connecting, are tested against the
stand-in of tests/milvus_standin.py."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pymilvus
import pytest
from conftest import child_environment
from library_fixtures import Recording, assert_one_per_track_when_crowded, excerpt, recording, write_config
from milvus_servers import (
    STANDALONE_TOKEN,
    Server,
    free_port,
    killed_and_restarted,
    lite_server,
    standalone_server,
)
from milvus_standin import FORMS, refusing_milvus
from vggish_fixtures import shared_vggish_files

from musrec.cli import main
from musrec.library import LibraryError
from musrec.library.store import MilvusStore

SESSION_TTL_S = 8  # a killed standalone's sessions expire before it starts again (30 s by default)
CHILD_WAIT_S = 120.0  # bound on a musrec process a test starts (a hang guard, not a limit on speed)
TOKEN = "root:tok-3f9c2a71e8d4b6"  # what a user's MUSREC_LIBRARY_TOKEN looks like (user:password)
PASSWORD = TOKEN.partition(":")[2]
API_KEY = "mk-58e0b2d94c7a13f6"  # the other kind of token: an API key (no ":")
REFUSED = (
    "musrec: error: could not open the library: the Milvus server at {uri} refused the credentials in "
    'MUSREC_LIBRARY_TOKEN: check that it holds a user and password ("user:password") or an API key the server '
    "accepts, then try again\n"
)
UNGIVEN = (
    "musrec: error: could not open the library: the Milvus server at {uri} requires credentials and none were given: "
    'set MUSREC_LIBRARY_TOKEN to "user:password" or an API key, then try again\n'
)

# A second client in a process of its own: opens the store, says so, then answers "counts" until told to stop.
HOLDER = """
import json, os, sys
from musrec.library.store import MilvusStore
store = MilvusStore(sys.argv[1], prefix=sys.argv[2], token=os.environ.get("MUSREC_LIBRARY_TOKEN"))
print("open", flush=True)
for line in sys.stdin:
    if line.strip() != "counts":
        break
    print(json.dumps(store.counts()), flush=True)
store.close()
"""


@pytest.fixture(scope="module")
def standalone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Milvus standalone, its root user's password made TOKEN's (a new server's is "Milvus")."""
    root = tmp_path_factory.mktemp("milvus-standalone")
    with standalone_server(root, child_environment(root / "home")) as running:
        client = admin(running.uri, STANDALONE_TOKEN)
        try:
            client.update_password("root", STANDALONE_TOKEN.partition(":")[2], PASSWORD)
        finally:
            client.close()
        yield running


@pytest.fixture(scope="module")
def lite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``milvus-lite server``: no authentication (it ignores the token)."""
    root = tmp_path_factory.mktemp("milvus-server")
    with lite_server(root, child_environment(root / "home")) as running:
        yield running


@pytest.fixture(params=["lite", "standalone"])
def server(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Server:
    """Each server, and TOKEN in MUSREC_LIBRARY_TOKEN for what runs in this process."""
    monkeypatch.setenv("MUSREC_LIBRARY_TOKEN", TOKEN)
    running: Server = request.getfixturevalue(request.param)
    return running


@pytest.fixture(scope="module")
def music(tmp_path_factory: pytest.TempPathFactory) -> list[Recording]:
    root = tmp_path_factory.mktemp("music")
    return [
        recording(root, "one.mp3", seed=61, seconds=24, title="North", artist="Compass", album="Points"),
        recording(root, "two.flac", seed=62, seconds=22, title="South", artist="Compass"),
        recording(root / "more", "three.ogg", seed=63, seconds=23, title="East"),
    ]


def admin(uri: str, token: str) -> pymilvus.MilvusClient:
    """A client of the test's own, its connection closed with it (pymilvus otherwise keeps a shared one pinging the
    server, which milvus-lite server ends after a while: "too_many_pings", and the next connection to it waits)."""
    return pymilvus.MilvusClient(uri=uri, token=token, dedicated=True)


def server_config(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, uri: str, *, collection: str, timeout_s: float = 30.0
) -> Path:
    """A configuration whose library is ``uri`` (its collections prefixed ``collection``: one set per test), its data
    directory under ``tmp_path``."""
    files = shared_vggish_files(tmp_path_factory)
    library = f'\n[library]\nuri = "{uri}"\ncollection = "{collection}"\ntimeout_s = {timeout_s}\n'
    return write_config(tmp_path / "config.toml", data_dir=tmp_path / "data", checkpoint=files.checkpoint,
                        pca_params=files.pca_column, extra=library)  # fmt: skip


def store_command(command: str, music: list[Recording]) -> list[str]:
    """The arguments of a command that opens the store: ``list`` only reads it, ``add`` writes one recording."""
    return ["library", "list"] if command == "list" else ["library", "add", str(music[0].path), "--no-progress"]


def run(config: Path, *argv: str) -> int:
    return main(["--config", str(config), *argv])


def run_child(config: Path, home: Path, *argv: str, token: str | None = TOKEN) -> subprocess.CompletedProcess[str]:
    """``musrec`` in a process of its own, as a user runs it (its stderr is what a user sees, pymilvus's too);
    ``token`` None: MUSREC_LIBRARY_TOKEN unset."""
    argv_ = [sys.executable, "-m", "musrec.cli", "--config", str(config), *argv]
    env = child_environment(home, **({"MUSREC_LIBRARY_TOKEN": token} if token is not None else {}))
    return subprocess.run(argv_, capture_output=True, text=True, timeout=CHILD_WAIT_S, env=env)


def test_cli_end_to_end_on_a_server(
    server: Server,
    music: list[Recording],
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    local_embedder: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = server_config(tmp_path, tmp_path_factory, server.uri, collection="e2e")
    folder = music[0].path.parent
    assert run(config, "library", "add", str(folder), "--library", "home", "--no-progress") == 0
    out = capsys.readouterr().out
    assert "added 3 tracks (9 segments) to library home" in out
    # A server builds HNSW ([library] index = "auto"); the recall measured after the add is recorded with it.
    assert "index HNSW: recall@10 1.000 against exact search (9 stored segments as queries)" in out
    client = admin(server.uri, TOKEN)
    try:
        (index,) = client.list_indexes("e2e_segments")
        assert client.describe_index("e2e_segments", index)["index_type"] == "HNSW"
        # Strong: a read sees every write before it (a server's default, Bounded, lags a few seconds).
        for name in ("e2e_segments", "e2e_tracks"):
            assert client.describe_collection(name)["consistency_level_name"] == "Strong"
    finally:
        client.close()
    store = MilvusStore(server.uri, prefix="e2e", token=TOKEN)
    try:
        assert store.index_type == "HNSW" and store.recorded_recall() == 1.0
    finally:
        store.close()

    # The same files again add nothing.
    assert run(config, "library", "add", str(folder), str(music[0].path), "--library", "home", "--no-progress") == 0
    out = capsys.readouterr().out
    assert "added 0 tracks" in out and "3 already there" in out and "3 tracks in it now" in out
    assert run(config, "library", "list", "--library", "home", "--json") == 0
    tracks = {t["title"]: t for t in json.loads(capsys.readouterr().out)["tracks"]}
    assert sorted(tracks) == ["East", "North", "South"]
    assert tracks["North"]["album"] == "Points" and tracks["North"]["file"] == str(music[0].path)

    # An excerpt of the second recording, encoded on its own, finds it first, at the segment it was cut from.
    clip = excerpt(music[1], tmp_path / "clip.wav", start_s=10)
    assert run(config, "recommend", str(clip), "--library", "home", "--json") == 0
    matches = json.loads(capsys.readouterr().out)["matches"]
    assert (matches[0]["title"], matches[0]["file"], matches[0]["start_s"]) == ("South", str(music[1].path), 10.0)
    assert len({m["track_id"] for m in matches}) == len(matches) == 3  # one match per track

    # Removal takes every segment of the track and nothing of the others.
    removed = tracks["South"]["track_id"]
    assert run(config, "library", "remove", removed[:8], "--library", "home") == 0
    assert "removed" in capsys.readouterr().out
    assert run(config, "library", "list", "--library", "home", "--json") == 0
    assert sorted(t["title"] for t in json.loads(capsys.readouterr().out)["tracks"]) == ["East", "North"]
    store = MilvusStore(server.uri, prefix="e2e", token=TOKEN)
    try:
        assert store.segment_count("home", removed) == 0
        for kept in ("North", "East"):
            assert store.segment_count("home", tracks[kept]["track_id"]) == tracks[kept]["segments"] == 3
        assert store.segment_count("home") == 6
    finally:
        store.close()
    assert run(config, "library", "check", "--library", "home") == 0
    assert capsys.readouterr().out == "library home: 2 tracks, each with all its segments\n"


def test_two_processes_use_one_server_at_once(
    lite: Server,
    music: list[Recording],
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    isolated_home: Path,
    local_embedder: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Another process (a bot, say) keeps the store open while `musrec library` runs: a server is shared, so nothing
    # is refused as it is for a Milvus Lite directory, and what one writes the other reads.
    config = server_config(tmp_path, tmp_path_factory, lite.uri, collection="shared")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, lite.uri, "shared"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True,
                              env=child_environment(isolated_home, MUSREC_LIBRARY_TOKEN=TOKEN))  # fmt: skip
    assert holder.stdin is not None and holder.stdout is not None
    try:
        assert holder.stdout.readline().strip() == "open"
        assert run(config, "library", "add", str(music[2].path), "--library", "guild", "--no-progress") == 0
        out, err = capsys.readouterr()
        assert "added 1 tracks" in out and "in use" not in err
        holder.stdin.write("counts\n")
        holder.stdin.flush()
        assert json.loads(holder.stdout.readline()) == {"guild": 1}
        assert run(config, "library", "list") == 0
        assert capsys.readouterr().out.split() == ["guild", "1", "tracks"]
    finally:
        holder.communicate("stop\n", timeout=CHILD_WAIT_S)
    assert holder.returncode == 0


def test_a_server_that_is_not_there_is_one_line(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, isolated_home: Path
) -> None:
    uri = f"http://127.0.0.1:{free_port()}"  # closed: nothing listens there
    config = server_config(tmp_path, tmp_path_factory, uri, collection="absent", timeout_s=2)
    done = run_child(config, isolated_home, "library", "list")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == (
        f"musrec: error: could not open the library: the Milvus server at {uri} cannot be reached: check that it is "
        "running and that [library] uri names it, then try again\n"
    )
    assert TOKEN not in done.stderr


def test_a_server_that_stops_answering_is_one_line(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, isolated_home: Path
) -> None:
    root = tmp_path_factory.mktemp("stopped-server")
    with lite_server(root, child_environment(root / "home")) as stopped:
        store = MilvusStore(stopped.uri, prefix="stops", timeout_s=1)
        try:
            stopped.process.send_signal(signal.SIGSTOP)  # it keeps its port and connections, and answers nothing
            # Every call is bounded by [library] timeout_s and fails as the store's error, in one line.
            calls: list[tuple[str, Callable[[], object]]] = [
                ("read the library", lambda: store.tracks("x")),
                (
                    "search the library",
                    lambda: store.search(np.ones(1280, np.float32), library="x", limit=3, one_per_track=True),
                ),  # fmt: skip
                ("read the library", store.recorded_recall),
            ]
            for doing, call in calls:
                with pytest.raises(LibraryError) as raised:
                    call()
                assert str(raised.value) == (
                    f"could not {doing}: the Milvus server at {stopped.uri} did not answer within 1 s "
                    "([library] timeout_s): check that it is running and that [library] uri names it, then try again"
                )
        finally:
            store.close()
        # The command line meets it when it connects: one line, no traceback (pymilvus's own log is quiet).
        config = server_config(tmp_path, tmp_path_factory, stopped.uri, collection="stops", timeout_s=1)
        done = run_child(config, isolated_home, "library", "list")
        assert done.returncode == 1 and done.stdout == ""
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
        assert done.stderr.startswith(f"musrec: error: could not open the library: the Milvus server at {stopped.uri}")
        assert "then try again" in done.stderr and TOKEN not in done.stderr


def test_the_token_reaches_the_client_and_is_never_shown(
    lite: Server,
    music: list[Recording],
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    isolated_home: Path,
    local_embedder: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    tokens: list[str | None] = []
    connect = pymilvus.MilvusClient.__init__

    def recording_init(self: pymilvus.MilvusClient, *args: Any, **kwargs: Any) -> None:
        tokens.append(kwargs.get("token"))
        connect(self, *args, **kwargs)  # still connects, with it

    monkeypatch.setattr(pymilvus.MilvusClient, "__init__", recording_init)
    monkeypatch.setenv("MUSREC_LIBRARY_TOKEN", TOKEN)
    caplog.set_level(logging.DEBUG)
    config = server_config(tmp_path, tmp_path_factory, lite.uri, collection="token")
    assert run(config, "library", "add", str(music[0].path), "--library", "t", "--no-progress") == 0
    assert run(config, "library", "list", "--library", "t") == 0
    (tmp_path / "absent").mkdir()
    absent = server_config(tmp_path / "absent", tmp_path_factory, f"http://127.0.0.1:{free_port()}",
                           collection="token", timeout_s=2)  # fmt: skip
    assert run(absent, "library", "list") == 1
    out, err = capsys.readouterr()
    assert tokens == [TOKEN] * 3
    assert "1 tracks in library t" in out and "cannot be reached" in err
    assert TOKEN not in out + err + caplog.text and "tok-3f9c" not in out + err + caplog.text

    # A process of its own, as chatty as it gets (-vv: every log line, pymilvus's too): never the token.
    done = run_child(config, isolated_home, "-vv", "library", "list", "--library", "t")
    assert done.returncode == 0 and "1 tracks in library t" in done.stdout
    assert TOKEN not in done.stdout + done.stderr


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("command", ["list", "add"])
def test_a_refused_token_is_one_line(
    form: str,
    command: str,
    music: list[Recording],
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    isolated_home: Path,
) -> None:
    # issue 25: a server with authentication refuses a wrong token at Connect; pymilvus raises that as a connection
    # it could not make ("server unavailable"), which must not read as a server that cannot be reached.
    argv = store_command(command, music)
    with refusing_milvus(form) as standin:
        config = server_config(tmp_path, tmp_path_factory, standin.uri, collection="refused", timeout_s=5)
        done = run_child(config, isolated_home, *argv)
    assert (done.returncode, done.stdout, done.stderr) == (1, "", REFUSED.format(uri=standin.uri))
    assert standin.authorizations == [TOKEN]  # the token reached the server, once: refused, nothing retried
    assert PASSWORD not in done.stderr  # the UNKNOWN form's answer names it: never repeated


@pytest.mark.parametrize("command", ["list", "add"])
@pytest.mark.parametrize("token", ["root:not-the-password", None], ids=["wrong", "none"])
def test_milvus_standalone_refusing_the_token_is_one_line(
    token: str | None,
    command: str,
    standalone: Server,
    music: list[Recording],
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    isolated_home: Path,
) -> None:
    # The real server's refusal, not the stand-in's: Milvus 2.3.5 ends the call UNAUTHENTICATED, "auth check
    # failure", at Connect (pymilvus: a connection it could not make). Nothing is written.
    argv = store_command(command, music)
    config = server_config(tmp_path, tmp_path_factory, standalone.uri, collection="refused", timeout_s=10)
    done = run_child(config, isolated_home, *argv, token=token)
    expected = (REFUSED if token else UNGIVEN).format(uri=standalone.uri)
    assert (done.returncode, done.stdout, done.stderr) == (1, "", expected)
    assert "not-the-password" not in done.stderr
    client = admin(standalone.uri, TOKEN)
    try:
        assert not [name for name in client.list_collections() if name.startswith("refused")]
    finally:
        client.close()


# What a library needs on Milvus 2.3 (found by granting, one at a time, what each refusal named): CreateCollection
# and CreateIndex only to make the collections.
PRIVILEGES = [("Global", "CreateCollection"), *(("Collection", name) for name in (
    "CreateIndex", "Load", "Insert", "Delete", "Flush", "GetFlushState", "Query", "Search"))]  # fmt: skip
DENIED = (
    "musrec: error: could not {doing}: the Milvus server at {uri} does not grant the user in MUSREC_LIBRARY_TOKEN "
    "the privilege {privilege}: grant it to one of that user's roles (musrec's README lists the privileges a library "
    "needs), then try again\n"
)


def test_a_privilege_the_user_lacks_is_one_line_and_the_next_open_finishes_the_store(
    standalone: Server,
    music: list[Recording],
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    isolated_home: Path,
    local_embedder: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A user the server knows, whose role may make collections but not their index: the collection is made, its
    # index refused. Each refusal is one line naming the privilege; once the role has them all, the next command
    # makes the missing index and the library works.
    user, password = "librarian", "shelves-7c21"
    root = admin(standalone.uri, TOKEN)
    try:
        root.create_user(user, password)
        root.create_role("librarians")
        root.grant_role(user, "librarians")
        config = server_config(tmp_path, tmp_path_factory, standalone.uri, collection="granted", timeout_s=10)
        token = f"{user}:{password}"
        done = run_child(config, isolated_home, "library", "list", token=token)
        expected = DENIED.format(doing="open the library", uri=standalone.uri, privilege="CreateCollection")
        assert (done.returncode, done.stdout, done.stderr) == (1, "", expected)

        root.grant_privilege("librarians", "Global", "CreateCollection", "*")
        done = run_child(config, isolated_home, "library", "list", token=token)
        expected = DENIED.format(doing="open the library", uri=standalone.uri, privilege="CreateIndex")
        assert (done.returncode, done.stdout, done.stderr) == (1, "", expected)
        assert "granted_segments" in root.list_collections() and not root.list_indexes("granted_segments")

        for kind, privilege in PRIVILEGES[1:]:
            root.grant_privilege("librarians", kind, privilege, "*")
        monkeypatch.setenv("MUSREC_LIBRARY_TOKEN", token)  # the model's commands in this process (it is loaded)
        assert run(config, "library", "add", str(music[2].path), "--library", "shelf", "--no-progress") == 0
        assert "added 1 tracks" in capsys.readouterr().out
        assert root.describe_index("granted_segments", "vector")["index_type"] == "HNSW"
        clip = excerpt(music[2], tmp_path / "clip.wav", start_s=10)
        assert run(config, "recommend", str(clip), "--library", "shelf", "--json") == 0
        (found, *_) = json.loads(capsys.readouterr().out)["matches"]
        assert found["title"] == "East"

        root.revoke_privilege("librarians", "Collection", "Delete", "*")
        done = run_child(config, isolated_home, "library", "remove", found["track_id"], "--library", "shelf",
                         token=token)  # fmt: skip
        expected = DENIED.format(doing="remove the tracks", uri=standalone.uri, privilege="Delete")
        assert (done.returncode, done.stdout, done.stderr) == (1, "", expected)
    finally:
        root.close()


@pytest.mark.parametrize("form", FORMS)
def test_no_token_for_a_server_that_requires_one_is_one_line(
    form: str, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, isolated_home: Path
) -> None:
    with refusing_milvus(form) as standin:
        config = server_config(tmp_path, tmp_path_factory, standin.uri, collection="untold", timeout_s=5)
        done = run_child(config, isolated_home, "library", "list", token=None)
    assert (done.returncode, done.stdout, done.stderr) == (1, "", UNGIVEN.format(uri=standin.uri))
    assert standin.authorizations == [None]


def test_a_refused_api_key_is_one_line(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, isolated_home: Path
) -> None:
    with refusing_milvus("unauthenticated") as standin:
        config = server_config(tmp_path, tmp_path_factory, standin.uri, collection="key", timeout_s=5)
        done = run_child(config, isolated_home, "library", "list", token=API_KEY)
    assert (done.returncode, done.stdout, done.stderr) == (1, "", REFUSED.format(uri=standin.uri))
    assert standin.authorizations == [API_KEY] and API_KEY not in done.stderr


@pytest.mark.parametrize("form", FORMS)
def test_a_token_refused_after_connecting_is_one_line_and_never_logged(
    form: str, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, isolated_home: Path
) -> None:
    # The server admits Connect, then refuses each call (a password changed, an API key removed, while connected):
    # the store's own calls say the same, and -vv (every log line, pymilvus's too) never shows the token or the
    # UNKNOWN form's words, which name the password. That form's UNKNOWN is retried by pymilvus until [library]
    # timeout_s (2 s here).
    with refusing_milvus(form, admit_connect=True) as standin:
        config = server_config(tmp_path, tmp_path_factory, standin.uri, collection="later", timeout_s=2)
        done = run_child(config, isolated_home, "-vv", "library", "list")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.endswith(REFUSED.format(uri=standin.uri))  # after -vv's log lines (and traceback)
    assert len(standin.authorizations) >= 2 and set(standin.authorizations) == {TOKEN}
    assert PASSWORD not in done.stderr and "auth check failure" not in done.stderr


def test_one_match_per_track_when_one_track_fills_the_nearest(server: Server) -> None:
    store = MilvusStore(server.uri, prefix="crowded", token=TOKEN)
    try:
        assert_one_per_track_when_crowded(store)
    finally:
        store.close()


def test_a_password_changed_while_connected_is_one_line_at_the_next_call(standalone: Server) -> None:
    # The bot keeps its connection; the server's user changes its password meanwhile. Milvus 2.3.5 refuses the next
    # call at once, UNAUTHENTICATED (the stand-in's UNKNOWN form of earlier releases is retried until the deadline).
    user, password = "rotating", "first-pass-31"
    root = admin(standalone.uri, TOKEN)
    store = None
    try:
        MilvusStore(standalone.uri, prefix="rotated", token=TOKEN).close()  # the collections, made by root
        root.create_user(user, password)
        root.create_role("rotators")
        root.grant_role(user, "rotators")
        for kind, privilege in PRIVILEGES:
            root.grant_privilege("rotators", kind, privilege, "*")
        store = MilvusStore(standalone.uri, prefix="rotated", token=f"{user}:{password}", timeout_s=10)
        assert store.counts() == {}
        root.update_password(user, password, "second-pass-47")
        with pytest.raises(LibraryError) as raised:
            store.counts()
        assert str(raised.value) == (
            f"could not read the library: the Milvus server at {standalone.uri} refused the credentials in "
            'MUSREC_LIBRARY_TOKEN: check that it holds a user and password ("user:password") or an API key the '
            "server accepts, then try again"
        )
    finally:
        if store is not None:
            store.close()
        root.close()


@pytest.mark.slow  # about 45 s: a server of its own, its collections made, and its restart after kill -9
def test_tracks_added_outlive_the_server_killed_without_a_flush(
    music: list[Recording],
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    local_embedder: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A server keeps what it acknowledged in its write-ahead log (Milvus standalone: RocksMQ), so the store does not
    # flush there (Milvus Lite it does). Killed right after an add, it comes back with every track, each whole.
    root = tmp_path_factory.mktemp("killed-standalone")
    with standalone_server(root, child_environment(root / "home"), session_ttl_s=SESSION_TTL_S) as server:
        monkeypatch.setenv("MUSREC_LIBRARY_TOKEN", STANDALONE_TOKEN)
        config = server_config(tmp_path, tmp_path_factory, server.uri, collection="kept")
        assert run(config, "library", "add", str(music[0].path), str(music[1].path), "--library", "home",
                   "--no-progress") == 0  # fmt: skip
        assert "added 2 tracks (6 segments)" in capsys.readouterr().out
        with killed_and_restarted(server):
            assert run(config, "library", "list", "--library", "home", "--json") == 0
            tracks = json.loads(capsys.readouterr().out)["tracks"]
            assert sorted(t["title"] for t in tracks) == ["North", "South"]
            store = MilvusStore(server.uri, prefix="kept", token=STANDALONE_TOKEN)
            try:
                assert [store.segment_count("home", t["track_id"]) for t in tracks] == [3, 3]
            finally:
                store.close()
