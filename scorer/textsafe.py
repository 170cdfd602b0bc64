"""Untrusted text (file names, reasons, captions) made safe for spreadsheets, each rule written once."""

from __future__ import annotations

import re

# Spreadsheets run a cell that starts with one of these as a formula.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# XML 1.0 cannot hold these; openpyxl raises IllegalCharacterError on them.
_NOT_IN_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff\ufffe\uffff]")


def looks_like_formula(value: str) -> bool:
    """Whether a spreadsheet would read this text as a formula."""
    return value.startswith(FORMULA_START)


def xml_text(value: str) -> str:
    """Text that an .xlsx cell can hold: undecodable bytes and control characters become U+FFFD."""
    # Undecodable bytes in a file name arrive as surrogates, which XML cannot hold.
    value = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return _NOT_IN_XML.sub("\ufffd", value)


def csv_text(value: object) -> object:
    """A CSV value that a spreadsheet shows as typed: text that looks like a formula gets a leading quote."""
    return f"'{value}" if isinstance(value, str) and looks_like_formula(value) else value


_CONTROL = re.compile("[\x00-\x1f\x7f\x85\u2028\u2029]")


def log_text(value: str) -> str:
    """One log line's text: line breaks and other control characters shown as escapes, so a file name
    like "a.jpg\\nERROR forged" cannot start a line of its own."""
    return _CONTROL.sub(lambda m: ascii(m.group())[1:-1], value)


# Shown around a name, these reorder or hide what the reader sees ("gpj.exe" shown as "exe.jpg"):
# C0 and C1 controls, bidi embeddings, overrides, isolates and marks, and zero-width characters.
_NOT_IN_NAMES = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u202a-\u202e\u2060\u2066-\u2069\ufeff]")


def display_text(value: str) -> str:
    """A name as people are shown it (pages, workbooks): without controls, bidi or zero-width characters."""
    return _NOT_IN_NAMES.sub("", value)
