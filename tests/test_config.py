"""Config: defaults, path resolution, and one-line errors that name the key and the fix."""

from __future__ import annotations

import importlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from scorer.cli import main
from scorer.config import load_settings, set_top_level_keys
from scorer.errors import ConfigError
from scorer.settings import Settings
from scorer.settings_text import describe_settings, documented_keys

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_resolve_against_the_config_folder(tmp_path: Path) -> None:
    config = tmp_path / "cfg" / "config.yaml"
    config.parent.mkdir()
    config.write_text("inbox: drops\nwatch:\n  settle_seconds: 0.5\n")
    settings = load_settings(config)
    assert settings.inbox == config.parent / "drops"
    assert settings.outbox == config.parent / "outbox"
    assert settings.model == config.parent / "models" / "demo.pkl"
    assert settings.watch.settle_seconds == 0.5
    assert settings.watch.max_batch == 200
    assert settings.source == config


def test_cli_overrides_replace_config_values(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("model: models/a.pkl\n")
    settings = load_settings(config, model=tmp_path / "b.pkl", outbox=None)
    assert settings.model == tmp_path / "b.pkl"
    assert settings.outbox == tmp_path / "outbox"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("inbx: inbox\n", "unknown key 'inbx'"),
        ("watch:\n  setle_seconds: 2\n", "unknown key 'watch.setle_seconds'"),
        ("batch_size: many\n", "'batch_size' in .* must be a whole number, got 'many'"),
        ("device: gpu\n", "'device' in .* must be one of auto, cpu, cuda, got 'gpu'"),
        ("watch:\n  polling: yes please\n", "'watch.polling' in .* must be true or false"),
        ("images:\n  formats: JPEG\n", "'images.formats' in .* must be a list"),
        ("batch_size: 0\n", "'batch_size' in .* must be at least 1"),
        ("watch: 3\n", "'watch' in .* must be a mapping"),
        ("model_sha256: abc\n", "'model_sha256' .* must be 64 hex digits: run `scorer model pin`"),
        ("train:\n  label:\n    thresholds: [7000]\n", "'train.label.thresholds' .* needs 2 cut points"),
        ("- a\n- b\n", "must be a mapping of keys to values"),
        ("inbox: [\n", "is not valid YAML at line"),
    ],
)
def test_bad_config_names_the_key_and_the_fix(tmp_path: Path, text: str, expected: str) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=expected):
        load_settings(config)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("notify:\n  urls: 'mailtos://me:pw-S3cret-q@smtp.example.com'\n",
         r"'notify.urls' in .* must be a list, like \[a, b\], got text \(not shown: it holds secrets\)"),
        ("serve:\n  token: [tk-S3cret-q]\n",
         r"'serve.token' in .* must be text, got a list \(not shown: it holds secrets\)"),
        ("notify:\n  urls: [{url: 'json://h/tk-S3cret-q'}]\n",
         r"'notify.urls' in .* must be text, got a mapping \(not shown"),
    ],
)
def test_a_bad_secret_value_names_the_key_and_the_fix_but_not_the_value(
        tmp_path: Path, text: str, expected: str) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=expected) as raised:
        load_settings(config)
    assert "S3cret" not in str(raised.value)


def test_missing_outbox_is_an_error_not_created(project) -> None:  # type: ignore[no-untyped-def]
    project.write_config("model: models/tiny.pkl\noutbox: nowhere\n")
    (project.inbox / "a.jpg").write_bytes(b"x")
    result = CliRunner().invoke(main, ["score", str(project.inbox), "--config", str(project.config)])
    assert result.exit_code == 2
    assert "outbox" in result.output and "does not exist: create it or change 'outbox'" in result.output
    assert not (project.root / "nowhere").exists()


@contextmanager
def _unprivileged() -> Iterator[None]:
    """Run the block as `nobody` when we are root, whom folder permissions would not stop."""
    if os.geteuid() != 0:
        yield
        return
    # Load what the command imports while we can: the interpreter's own files may be private to root.
    importlib.import_module("scorer.score.run")
    os.setegid(65534)
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


def test_unwritable_outbox_is_refused() -> None:
    # Outside pytest's private tmp folder, so that `nobody` can read the config.
    root = Path(tempfile.mkdtemp(prefix="scorer-readonly-"))
    try:
        root.chmod(0o755)
        (root / "inbox").mkdir(mode=0o755)
        (root / "outbox").mkdir()
        (root / "outbox").chmod(0o555)
        (root / "inbox" / "a.jpg").write_bytes(b"x")
        (root / "config.yaml").write_text("model: models/m.pkl\n")
        with _unprivileged():
            result = CliRunner().invoke(main, ["score", str(root / "inbox"), "--config", str(root / "config.yaml")])
    finally:
        shutil.rmtree(root)
    assert result.exit_code == 2, result.output
    assert "is not writable" in result.output and "change 'outbox' in config.yaml" in result.output


def test_the_start_up_log_shows_what_differs_from_the_defaults_as_in_effect(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    # the shipped config's own values (defaults written out) count as defaults; a path is compared resolved
    config.write_text("model: models/demo.pkl\ninbox: inbox\nthreads: 2\nwatch:\n  polling: true\n"
                      "serve:\n  token: a-long-Secret-token-9\n  port: 8000\n")
    settings = load_settings(config, outbox=tmp_path / "reports")
    assert describe_settings(settings) == [
        f"settings from {config}: 4 of {len(documented_keys())} differ from the defaults (-v shows all)",
        f"settings: outbox = {tmp_path / 'reports'}; threads = 2",
        "settings: watch.polling = True",
        "settings: serve.token = (set, not shown)",
    ]
    everything = describe_settings(settings, everything=True)
    assert everything[0] == f"settings from {config}: all {len(documented_keys())}, 4 of them not at their defaults"
    assert len(everything) == 1 + len({key.split(".")[0] for key, _, _ in documented_keys() if "." in key}) + 1
    listed = "; ".join(line.removeprefix("settings: ") for line in everything[1:]).split("; ")
    assert [item.split(" = ")[0] for item in listed] == [key for key, _, _ in documented_keys()]
    assert "serve.port = 8000" in listed and "a-long-Secret" not in " ".join(everything)
    config.write_text("# nothing changed\n")
    assert describe_settings(load_settings(config)) == [
        f"settings from {config}: all {len(documented_keys())} at their defaults (-v shows them)"]


def test_set_top_level_keys_keeps_comments_and_other_lines(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("# header\nmodel: models/a.pkl   # the learner\nmodel_sha256: null  # pin\ninbox: inbox\n")
    set_top_level_keys(config, {"model_sha256": "ab" * 32, "outbox": "out"})
    text = config.read_text()
    assert text.startswith("# header\nmodel: models/a.pkl   # the learner\n")
    assert f"model_sha256: {'ab' * 32}  # pin\n" in text
    assert text.endswith("inbox: inbox\noutbox: out\n")
    assert load_settings(config).model_sha256 == "ab" * 32


def _leaves(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name, value in tree.items():
        if isinstance(value, dict):
            found |= _leaves(value, f"{prefix}{name}.")
        else:
            found[f"{prefix}{name}"] = value
    return found


def test_the_shipped_config_shows_defaults_with_a_comment_each_and_points_to_the_reference() -> None:
    text = (ROOT / "config.yaml").read_text()
    assert isinstance(load_settings(ROOT / "config.yaml"), Settings)
    header = text.split("\n\n", 1)[0]
    assert "docs/configuration.md" in header, "config.yaml's header must send readers to the full reference"
    defaults = {key: default for key, _, default in documented_keys()}
    shown = _leaves(yaml.safe_load(text))
    assert {"model", "inbox", "outbox", "state"} <= shown.keys()
    for key, value in shown.items():
        default = defaults[key]
        expected = str(default) if isinstance(default, Path) else default
        expected = list(expected) if isinstance(expected, tuple) else expected
        assert value == expected, f"config.yaml shows {key}: {value!r}, but its default is {expected!r}"
    for line in text.splitlines():
        if ":" in line and not line.lstrip().startswith("#") and line.split(":", 1)[1].split("#")[0].strip():
            assert " # " in line, f"config.yaml has no comment on: {line.strip()}"


@pytest.mark.parametrize(("old", "said"), [
    ("half: true", "'half' in {config} is now 'precision': replace 'half: true' with 'precision: fp16'"),
    ("half: false", "'half' in {config} is now 'precision': remove 'half: false' (fp32 on CUDA is the default)"),
])
def test_the_old_half_key_is_refused_with_the_precision_key_to_use(tmp_path: Path, old: str, said: str) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"device: cpu\n{old}\n")
    with pytest.raises(ConfigError) as refused:
        load_settings(config)
    assert str(refused.value) == said.format(config=config)
    config.write_text("precision: fp16\n")  # one key chooses the numeric precision, fp16 among them
    assert load_settings(config).precision == "fp16"
