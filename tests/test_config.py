from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from musrec.config import Config, load_config
from musrec.config.values import section_names
from musrec.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.toml"


def test_defaults_without_file_or_environment() -> None:
    config = load_config(None, environ={})
    assert config == Config()
    assert config.build.representation == "flatten" and config.recommend.top_k == 10


def test_file_then_environment_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[recommend]\ntop_k = 5\nmusic_only = true\n[build]\nsplits = ["eval"]\ntrees = 7\n')
    config = load_config(path, environ={"MUSREC_RECOMMEND_TOP_K": "3", "MUSREC_BUILD_SPLITS": "eval,bal_train"})
    assert config.recommend.top_k == 3  # environment beats file
    assert config.recommend.music_only is True  # file beats default
    assert config.build.splits == ("eval", "bal_train")
    assert config.build.trees == 7
    flagged = config.with_overrides({"recommend.top_k": 8, "build.trees": None})
    assert flagged.recommend.top_k == 8 and flagged.build.trees == 7  # None: flag not given


def test_paths_and_data_dir(tmp_path: Path) -> None:
    config = load_config(None, environ={"MUSREC_DATA_DIR": str(tmp_path)})
    assert config.data_dir == tmp_path and config.index_path == tmp_path / "index"
    config = load_config(None, environ={"MUSREC_INDEX_PATH": str(tmp_path / "x")})
    assert config.index_path == tmp_path / "x"


@pytest.mark.parametrize(
    ("toml", "environ", "message"),
    [
        ("[recommend]\ntopk = 3\n", {}, "unknown key recommend.topk"),
        ("[nope]\nx = 1\n", {}, r"unknown section \[nope\]"),
        ("[recommend]\ntop_k = 'ten'\n", {}, "recommend.top_k must be int"),
        ("[recommend]\ntop_k = 0\n", {}, "recommend.top_k must be at least 1"),
        (
            "[build]\nrepresentation = 'pca'\n",
            {},
            "build.representation must be one of flatten, mean, meanstd",
        ),
        ("[build]\nsplits = ['train']\n", {}, "build.splits must be one of"),
        ("[build]\ntarget_recall = 1.5\n", {}, "build.target_recall"),
        ("[build]\nmusic_only = 'maybe'\n", {}, "build.music_only must be bool"),
        ("[youtube]\nfetch_timeout_s = 0\n", {}, "youtube.fetch_timeout_s must be positive"),
        (
            "",
            {"MUSREC_RECOMMEND_TOP_K": "many"},
            r"environment: MUSREC_RECOMMEND_TOP_K \(recommend.top_k\) must be int",
        ),
        (
            "",
            {"MUSREC_RECOMMEND_TOP_K": "0"},
            r"environment \(MUSREC_RECOMMEND_TOP_K\): recommend.top_k must be at least 1",
        ),
        ("", {"MUSREC_BUILD_MUSIC_ONLY": "perhaps"}, r"MUSREC_BUILD_MUSIC_ONLY \(build.music_only\) must be bool"),
        ("", {"MUSREC_WHATEVER": "1"}, "unknown environment variable MUSREC_WHATEVER"),
        ("top_k = 3\n", {}, "must be a \\[section\\]"),
        ("[recommend\n", {}, "not valid TOML"),
    ],
)
def test_wrong_keys_and_values_name_the_culprit(
    tmp_path: Path, toml: str, environ: dict[str, str], message: str
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=message):
        load_config(path, environ=environ)


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.toml", environ={})


def test_example_config_documents_every_key_and_loads() -> None:
    raw = tomllib.loads(EXAMPLE.read_text())
    config = load_config(EXAMPLE, environ={})
    for section in section_names(Config):
        documented = set(raw.get(section, {}))
        text = EXAMPLE.read_text()
        for key in (f.name for f in dataclasses.fields(getattr(config, section))):
            assert key in documented or f"# {key} =" in text, f"{section}.{key} is not documented"
