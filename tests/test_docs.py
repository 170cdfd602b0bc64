"""The docs stay true: help with examples, a short README, working links and commands, a fresh reference, a full map."""

from __future__ import annotations

import ast
import importlib
import re
import tokenize
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import scorer
from scorer.cli import main
from scorer.docs_reference import COMMAND, reference_markdown
from scorer.ledger.schema import MIGRATIONS
from scorer.settings_text import documented_keys

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "bench" / "RESULTS.md"]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name, command in group.commands.items():
        found.append((*prefix, name))
        if isinstance(command, click.Group):
            found += _commands(command, (*prefix, name))
    return found


@pytest.mark.parametrize("command", _commands(main), ids=" ".join)
def test_every_command_has_help_ending_with_an_example(command: tuple[str, ...]) -> None:
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0
    text = result.output.split("Options:")[0].strip()
    assert "Example:" in text, f"`scorer {' '.join(command)} --help` has no example"
    assert text.splitlines()[-1].strip().startswith("scorer "), "the example is the last thing before Options"


def test_readme_quick_start_is_exactly_two_make_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```sh\n(.*?)```", section, re.S)
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert commands == ["make demo", "make test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci


def test_readme_is_read_in_five_minutes() -> None:
    size = len((ROOT / "README.md").read_bytes())
    assert size < 12_000, f"README.md is {size} bytes: move detail into docs/ and link to it"


def test_the_configuration_reference_is_fresh() -> None:
    shown = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert shown == reference_markdown(), f"docs/configuration.md is stale: run `.venv/bin/{COMMAND}`"


def test_the_configuration_reference_documents_every_key() -> None:
    reference = reference_markdown()
    for key, doc, _ in documented_keys():
        assert doc, f"{key} has no documentation in scorer/settings.py"
        assert f"\n| `{key}` | " in reference, f"the configuration reference has no row for {key}"


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    anchors: set[str] = set()
    counts: dict[str, int] = {}
    for heading in re.findall(r"^#{1,6} (.+)$", FENCE.sub("", page.read_text(encoding="utf-8")), re.M):
        slug = _slug(heading)
        # GitHub numbers a repeated heading's anchor: -1, -2, ...
        anchors.add(f"{slug}-{counts[slug]}" if slug in counts else slug)
        counts[slug] = counts.get(slug, 0) + 1
    return anchors


def broken_links(page: Path) -> list[str]:
    """Every relative link of a Markdown page whose file, or whose #anchor in it, does not exist."""
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", FENCE.sub("", page.read_text(encoding="utf-8"))):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and (linked.suffix != ".md" or anchor not in _anchors(linked)):
            broken.append(f"{target} (no such heading)")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    assert broken_links(page) == [], f"{page.relative_to(ROOT)} links to what is not there"


def _shown_commands(text: str) -> list[list[str]]:
    """The argument lists of every `scorer ...` in the code spans and code blocks (but ```text) of a page."""
    shown = [span.split() for span in re.findall(r"`(scorer [^`]*)`", FENCE.sub("", text))]
    for block in (block for kind, block in FENCE.findall(text) if kind != "text"):
        for line in block.replace("\\\n", " ").splitlines():
            for segment in re.split(r"&&|\|\||[;|>]", re.split(r"\s#", line)[0]):
                words = segment.split()
                words = words[1:] if words[:1] == ["sudo"] else words
                if words and (words[0] == "scorer" or words[0].endswith("/scorer")):
                    shown.append(words)
    return [[word.strip("[]") for word in words[1:]] for words in shown]


def unknown_in(args: list[str]) -> str | None:
    """What in `scorer ARGS` is not a command or an option of it, or None when it all exists."""
    command: click.Command = main
    path: list[str] = []
    for word in args:
        flag = word.split("=", 1)[0]
        if flag.startswith("-"):
            help_text = CliRunner().invoke(main, [*path, "--help"]).output
            if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_text):
                return f"`{' '.join(['scorer', *path])}` has no option {flag}"
        elif isinstance(command, click.Group):
            if word not in command.commands:
                return f"`{' '.join(['scorer', *path])}` has no command {word!r}"
            command = command.commands[word]
            path.append(word)
    return None


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_command_shown_exists(page: Path) -> None:
    commands = _shown_commands(page.read_text(encoding="utf-8"))
    wrong = [f"scorer {' '.join(args)}: {unknown_in(args)}" for args in commands if unknown_in(args)]
    assert wrong == [], f"{page.relative_to(ROOT)} shows commands that do not exist"


def test_the_checkers_catch_a_broken_link_and_a_made_up_command(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n[ok](#title) [gone](missing.md) [nowhere](#no-such)\n\n```sh\n"
                    "scorer score a/ --out b/   # fine\nsudo scorer scroe a/\nx && scorer watch --twice\n```\n")
    assert broken_links(page) == ["missing.md (no such file)", "#no-such (no such heading)"]
    assert [unknown_in(args) for args in _shown_commands(page.read_text())] == [
        None, "`scorer` has no command 'scroe'", "`scorer watch` has no option --twice"]


def _map_names() -> set[str]:
    """The modules and rooms scorer/__init__.py's map names, as paths relative to scorer/."""
    names: set[str] = set()
    room = ""
    for line in (scorer.__doc__ or "").splitlines():
        if found := re.match(r" {4}(\w+)/\s", line):
            room = found[1] + "/"
            names.add(room)
        elif found := re.match(r" {8}(\w+\.py)\s", line):
            names.add(room + found[1])
        elif found := re.match(r" {4}(\w+\.py)\s", line):
            names.add(found[1])
    return names


def test_the_package_map_names_every_module_and_no_other() -> None:
    package = ROOT / "scorer"
    modules = {str(path.relative_to(package)).removesuffix("__init__.py") for path in package.rglob("*.py")} - {""}
    named = _map_names()
    assert sorted(modules - named) == [], "scorer/__init__.py's map does not name these modules: add a line each"
    assert sorted(named - modules) == [], "scorer/__init__.py's map names modules that do not exist"


def test_the_path_in_the_map_names_real_modules_and_names() -> None:
    doc = scorer.__doc__ or ""
    path = doc[doc.index("One creative's path"):]
    steps = re.findall(r"^ {4}([\w.]+):([\w.]+)\s", path, re.M)
    assert len(steps) >= 20, "the map has lost one creative's path from the inbox to the report"
    # every module:function the path names, its steps and those in their descriptions, is imported and resolved
    for module, names in re.findall(r"\b((?:\w+\.)*\w+):((?:\w+\.)*\w+)", path):
        assert module.replace(".", "/") + ".py" in _map_names(), f"the path names {module}, which the map does not"
        found: object = importlib.import_module(f"scorer.{module}")
        for name in names.split("."):
            assert hasattr(found, name), f"scorer.{module} has no {names}: the map's path is out of date"
            found = getattr(found, name)
        assert callable(found), f"scorer.{module}:{names} is not a class or a function"


# Names the glossary retired, each with the word that has that meaning now (scorer/__init__.py's glossary).
RETIRED = {
    "Outbox": "NotificationQueue (outbox is the reports folder)", "OUTBOX_NAME": "QUEUE_NAME",
    "features": "embedding (the learner's vector) or signals (posting time and caption)",
    "predict_with_features": "predict_with_embedding", "has_features": "has_embedding",
    "ServingRecord": "FastStart", "record_batch": "write_batch", "batch_view": "batch_result",
    "Look": "Likeness", "looks": "likenesses", "model_and_view": "model_and_shown", "VIEWS": "CROPS",
    "Outcome": "Decision (a file's), Reply (a decoder's) or SendResult (a send's)",
    "DecodeDecision": "DecodeFinding", "PrecisionDecision": "PrecisionFinding",
    "TrackSummary": "TrackRecord", "Launched": "Launch", "Pair": "Launch",
}


def _names_a_retired_table(literal: str, history: set[str]) -> bool:
    try:
        text = ast.literal_eval(literal)
    except ValueError:  # an f-string: its text as written
        text = literal
    return text not in history and re.search(r"(?i)\b(TABLE|FROM|JOIN|INTO)\s+looks\b", str(text)) is not None


def test_no_name_in_the_package_is_one_the_glossary_retired() -> None:
    history = set(MIGRATIONS.values())  # the ledger's migration steps name the tables as those versions wrote them
    found = []
    for path in sorted((ROOT / "scorer").rglob("*.py")):
        with path.open("rb") as handle:
            for token in tokenize.tokenize(handle.readline):
                where = f"{path.relative_to(ROOT)}:{token.start[0]}"
                if token.type == tokenize.NAME and token.string in RETIRED:
                    found.append(f"{where} {token.string}: use {RETIRED[token.string]}")
                elif token.type == tokenize.STRING and _names_a_retired_table(token.string, history):
                    found.append(f"{where} table looks: use likeness")
    assert found == []
