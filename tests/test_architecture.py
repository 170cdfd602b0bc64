"""The house as the map in scorer/__init__.py draws it: ground, floors from the bottom up, rooms beside each other.

Every import statement counts, deferred ones inside functions included: a circle hidden by a deferred
import is still a circle.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import scorer

PACKAGE = Path(scorer.__file__).resolve().parent
MAX_MODULE_LINES = 300
MAX_FUNCTION_LINES = 50


@dataclass(frozen=True)
class House:
    """Where the map puts each part: the ground, the floors in order, the rooms, and the top (the commands)."""

    ground: set[str]
    floors: list[str]
    rooms: set[str]
    top: set[str]
    shared: set[str]

    def part(self, module: str) -> str:
        """The part of the house a dotted module name (without `scorer.`) belongs to."""
        head = module.split(".")[0]
        return head if head in self.rooms or head in self.floors or head in self.top else module


def read_house(doc: str) -> House:
    """The parts of the house, read from the map's three sections."""
    ground: set[str] = set()
    floors: list[str] = []
    rooms: set[str] = set()
    top: set[str] = set()
    shared: set[str] = set()
    section, package = "", ""
    for line in doc.splitlines():
        if line.startswith(("Ground", "Floors", "Rooms")):
            section = line.split()[0].rstrip(":,")
        if found := re.match(r" {4}(\w+)/\s", line):
            package = found[1]
            if section == "Floors":
                floors.append(package)
            elif package == "cli":
                top.add(package)
            elif section == "Rooms":
                rooms.add(package)
        elif found := re.match(r" {4}(\w+)\.py\s", line):
            name = found[1]
            {"Ground": ground.add, "Floors": floors.append, "Rooms": top.add}.get(section, top.add)(name)
        elif (found := re.match(r" {8}(\w+)\.py\s+\[shared\]", line)) and package:
            shared.add(f"{package}.{found[1]}")
    return House(ground, floors, rooms, top, shared)


def modules() -> dict[str, Path]:
    """Every module under scorer/, by dotted name without `scorer.` (a package by its own name)."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if name:
            found[name] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The scorer modules one module imports, anywhere in it."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if package else []
                target = ".".join([*base, *([node.module] if node.module else [])])
            elif node.module and (node.module == "scorer" or node.module.startswith("scorer.")):
                target = node.module.removeprefix("scorer").lstrip(".")
            else:
                continue
            for alias in node.names:
                full = f"{target}.{alias.name}" if target else alias.name
                found.add(full if full in known else target)
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("scorer.") for a in node.names if a.name.startswith("scorer.")}
    return {m for m in found if m in known and m != name}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def wrong_imports(house: House, edges: dict[str, set[str]]) -> list[str]:
    """Imports that break the map's rules, each as `a -> b (why)`."""
    wrong = []
    order = {name: i for i, name in enumerate(house.floors)}
    for a, targets in sorted(edges.items()):
        pa = house.part(a)
        for b in sorted(targets):
            pb = house.part(b)
            if pa == pb or pa in house.top or pa == "__main__" or pb in house.ground:
                continue
            if pa in house.ground:
                wrong.append(f"{a} -> {b} (the ground imports only the ground)")
            elif pa in order and pb not in order:
                wrong.append(f"{a} -> {b} (a floor imports no room)")
            elif pa in order and order[pb] > order[pa]:
                wrong.append(f"{a} -> {b} (a floor imports only the floors before it)")
            elif pa in house.rooms and pb in house.rooms and b not in house.shared:
                wrong.append(f"{a} -> {b} (a room imports a room beside it only through a [shared] module)")
            elif pa in house.rooms and pb in house.top:
                wrong.append(f"{a} -> {b} (a room imports no command)")
    return wrong


def test_the_map_places_every_module() -> None:
    house = read_house(scorer.__doc__ or "")
    assert house.floors[:3] == ["context", "decoding", "evidence"] and "scoring" in house.floors
    assert {"score", "watch", "web", "bulk", "training", "outcomes"} <= house.rooms
    unplaced = [m for m in modules() if house.part(m) not in {*house.ground, *house.floors, *house.rooms, *house.top}]
    assert unplaced == ["__main__"] or unplaced == [], unplaced


def test_no_import_forms_a_circle() -> None:
    assert circles(graph()) == []


def test_imports_go_down_the_floors_and_never_sideways_between_rooms() -> None:
    assert wrong_imports(read_house(scorer.__doc__ or ""), graph()) == []


def test_no_module_is_over_300_lines_and_no_function_over_50() -> None:
    long_modules, long_functions = [], []
    for name, path in modules().items():
        text = path.read_text(encoding="utf-8")
        if len(text.splitlines()) > MAX_MODULE_LINES:
            long_modules.append(name)
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                if node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES:
                    long_functions.append(f"{name}.{node.name}")
    assert long_modules == [] and long_functions == []


def test_the_checks_catch_a_circle_a_sideways_import_and_an_upward_one() -> None:
    house = House({"errors", "textsafe"}, ["decoding", "scoring"], {"watch", "web", "training", "outcomes"}, {"cli"},
                {"training.card"})
    edges = {
        "decoding.vet": {"scoring.engine", "errors"},  # upward
        "scoring.engine": {"decoding.vet"},  # and back: a circle
        "web.views": {"watch.latest"},  # sideways
        "outcomes.run": {"training.card", "training.train"},  # through a shared module, then not
        "textsafe": {"decoding.vet"},  # the ground reaching up
        "cli.data": {"training.train", "outcomes.run"},  # the commands may import any room
    }
    assert circles(edges) == [["decoding.vet", "scoring.engine"]]
    assert wrong_imports(house, edges) == [
        "decoding.vet -> scoring.engine (a floor imports only the floors before it)",
                "outcomes.run -> training.train (a room imports a room beside it only through a [shared] module)",
        "textsafe -> decoding.vet (the ground imports only the ground)",
        "web.views -> watch.latest (a room imports a room beside it only through a [shared] module)",
    ]
