"""The configuration reference, docs/configuration.md, rendered from scorer.settings.

Regenerate it with `python -m scorer.docs_reference > docs/configuration.md`; tests/test_docs.py fails when
the file is stale.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from typing import Any

from scorer.settings import Settings
from scorer.settings_text import documented_keys

COMMAND = "python -m scorer.docs_reference > docs/configuration.md"

INTRO = f"""\
# Configuration

<!-- Generated from scorer/settings.py by `{COMMAND}`: do not edit by hand. -->

Every key is optional: the defaults live in `scorer/settings.py`, and `config.yaml` only
overrides them. The shipped `config.yaml` shows the keys people usually change; any key below may
be added to it. Relative paths resolve against the config file's folder. An unknown key, a wrong
type, a value below its minimum, a missing model, an unwritable outbox or classes that don't
match the learner give one line that names the key and the fix, and exit status 2. `scorer watch`
and `scorer serve` log the settings in effect at start-up, options included, in a few lines: those
that differ from the defaults, or all of them with `scorer -v` (secrets as `(set, not shown)`).
"""

# Where each section's keys are explained in use, relative to docs/.
GUIDES = {
    "": "[Scoring](scoring.md), [Model integrity](integrity.md), [Performance](performance.md)",
    "images": "[What gets rejected](scoring.md#what-gets-rejected-and-why), [Performance](performance.md)",
    "report": "[The report](scoring.md#the-report)",
    "watch": "[The hot folder](hot-folder.md)",
    "train": "[Training](training.md)",
    "train.clean": "[Training](training.md)",
    "train.label": "[Training](training.md)",
    "serve": "[The web page](web.md)",
    "context": "[Posting time and caption](training.md#posting-time-and-caption-kept-only-where-they-measurably-help)",
    "bulk": "[Bulk](bulk.md)",
    "outcomes": "[Did the picks win?](outcomes.md)",
    "notify": "[Notifications](hot-folder.md#notifications)",
    "video": "[Videos](video.md)",
}


def reference_markdown() -> str:
    """The whole configuration reference as Markdown: one table per section of config.yaml."""
    sections: dict[str, list[str]] = {}
    for key, doc, default in documented_keys():
        section = key.rpartition(".")[0]
        sections.setdefault(section, []).append(f"| `{key}` | `{_yaml(default)}` | {_meaning(key, doc)} |")
    parts = [INTRO]
    for section, rows in sections.items():
        title = f"`{section}.*`" if section else "Top level"
        table = "\n".join(["| key | default | meaning |", "| --- | --- | --- |", *rows])
        parts.append(f"## {title}\n\n{_docstring(section)} See {GUIDES[section]}.\n\n{table}\n")
    return "\n".join(parts)


def _node(key: str) -> tuple[type, dataclasses.Field[Any] | None]:
    """The settings class a dotted key leads to, and the key's own field (None for a section)."""
    cls: type = Settings
    found: dataclasses.Field[Any] | None = None
    for name in key.split(".") if key else []:
        found = {f.name: f for f in dataclasses.fields(cls)}[name]
        hint: type = typing.get_type_hints(cls)[name]
        cls = hint if dataclasses.is_dataclass(hint) else cls
    return cls, found


def _docstring(section: str) -> str:
    cls, _ = _node(section)
    return (cls.__doc__ or "").strip()


def _meaning(key: str, doc: str) -> str:
    cls, found = _node(key)
    assert found is not None
    text = _escape(doc)
    choices = typing.get_args(typing.get_type_hints(cls)[found.name])
    if choices and all(isinstance(choice, str) for choice in choices):
        text += " (one of " + ", ".join(f"`{choice}`" for choice in choices) + ")"
    if found.metadata.get("min") is not None:
        text += f" (at least {_yaml(found.metadata['min'])})"
    if found.metadata.get("secret"):
        text += " (never logged)"
    return text


def _escape(text: str) -> str:
    # Outside code spans, a `<name>` would be read as an HTML tag and a `|` would split the table's cell.
    pieces = re.split(r"(`[^`]*`)", text)
    return "".join(p if p.startswith("`") else p.replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")
                   for p in pieces)


def _yaml(value: Any) -> str:
    """A default as it would be written in config.yaml."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_yaml(item) for item in value) + "]"
    return str(value)


if __name__ == "__main__":
    print(reference_markdown(), end="")
