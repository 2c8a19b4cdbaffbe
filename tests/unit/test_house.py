"""The house's rules, checked on the tree itself, so the file list keeps telling the
architecture:

- the ``captionq`` command's help, and importing the API, load no torch, transformers
  or ``worker`` module (producers publish by task name; the API image has no torch);
- no module over 400 lines;
- no import circle among the product packages;
- imports point downward (schemas ← producers, review, worker ← evaluation), and only
  ``worker/models`` imports torch or transformers at module level;
- the README's architecture map lists every module, and nothing that is gone.

The import graph is read with ``ast`` from the source, function-level imports included.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
import typer
import typer.main

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("schemas", "producers", "worker", "review", "evaluation")
GENERATED = ("schemas/migrations/versions/",)
MAX_LINES = 400
HEAVY = ("torch", "transformers")
# What each package may import of ours (a package, or a module and what is under it).
DOWNWARD = {
    "schemas": ("schemas",),
    "producers": ("producers", "schemas"),
    "review": ("review", "schemas"),
    "worker": ("worker", "schemas"),
    "evaluation": ("evaluation", "schemas", "worker.models"),
}
# The one entry point imports the packages it runs inside the command that runs them.
LAZY_EDGE = "producers.cli"
# Known circles, each to be removed with the change that breaks it.
KNOWN_CIRCLES: set[frozenset[str]] = set()


# --- the tree -------------------------------------------------------------------------


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module, as written (resolved if relative)
    line: int
    in_function: bool

    def names(self, prefix: str) -> bool:
        return self.target == prefix or self.target.startswith(prefix + ".")

    def where(self) -> str:
        return f"{path_of(self.source)}:{self.line} imports {self.target}"


def product_files() -> list[Path]:
    files = (path for package in PACKAGES for path in (ROOT / package).rglob("*.py"))
    return sorted(p for p in files if not relative(p).startswith(GENERATED))


def relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def module_of(path: Path) -> str:
    parts = relative(path).removesuffix(".py").split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    return {module_of(path): path for path in product_files()}


def path_of(module: str) -> str:
    return relative(modules()[module])


class _Imports(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool) -> None:
        self.module, self.is_package = module, is_package
        self.depth = 0
        self.found: list[Import] = []

    def _nested(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = _nested  # noqa: N815 (ast's naming)

    def _add(self, target: str, node: ast.stmt) -> None:
        self.found.append(Import(self.module, target, node.lineno, self.depth > 0))

    def visit_Import(self, node: ast.Import) -> None:  # noqa: N802 (ast's naming)
        for alias in node.names:
            self._add(alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:  # noqa: N802 (ast's naming)
        base = node.module or ""
        if node.level:
            package = self.module.split(".")
            package = package if self.is_package else package[:-1]
            anchor = package[: len(package) - node.level + 1]
            base = ".".join([*anchor, base] if base else anchor)
        for alias in node.names:
            # ``from worker import tasks`` imports the module worker.tasks.
            submodule = f"{base}.{alias.name}"
            self._add(submodule if submodule in modules() else base, node)


@cache
def imports() -> tuple[Import, ...]:
    found: list[Import] = []
    for module, path in modules().items():
        visitor = _Imports(module, path.name == "__init__.py")
        visitor.visit(ast.parse(path.read_text(), filename=str(path)))
        found += visitor.found
    return tuple(found)


def ours(target: str) -> str | None:
    """The product module an import target lands in (a name imported from it, or the
    module itself), or None for another library."""
    parts = target.split(".")
    while parts:
        if ".".join(parts) in modules():
            return ".".join(parts)
        parts.pop()
    return None


def circles(edges: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[frozenset[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for after in sorted(edges.get(node, ())):
            if after not in index:
                visit(after)
                low[node] = min(low[node], low[after])
            elif after in stack:
                low[node] = min(low[node], index[after])
        if low[node] == index[node]:
            component = {stack.pop()}
            while node not in component:
                component.add(stack.pop())
            if len(component) > 1:
                found.append(frozenset(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


# --- the command line loads no model code ---------------------------------------------------

PROBE = """
import sys
{setup}
print("--- sys.modules")
print("\\n".join(sorted(sys.modules)))
"""
RUN_CLI = """
from producers.cli import main
sys.argv = ["captionq", *sys.argv[1:]]
try:
    main()
except SystemExit as done:
    assert done.code in (0, None), f"exit {done.code}"
"""
PRODUCER_COMMANDS = {
    "submit", "job", "cancel", "delete", "purge", "db upgrade", "tenant create",
    "tenant key", "tenant policy", "webhooks add", "webhooks list", "webhooks ping",
    "webhooks deliveries", "webhooks replay", "api", "demo", "tenant keys list",
    "tenant keys revoke", "tenant keys expire", "webhooks delete", "webhooks delivery",
    "webhooks rotate", "webhooks enable",
}  # fmt: skip


def probe(setup: str, *args: str) -> tuple[str, set[str]]:
    """What a fresh interpreter prints running ``setup`` (with ``args``), and the modules
    it then holds."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(setup=setup), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, f"{args}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
    shown, _, names = done.stdout.rpartition("--- sys.modules\n")
    return shown, set(names.split())


def loaded(setup: str, *args: str) -> set[str]:
    return probe(setup, *args)[1]


def model_code(names: set[str]) -> list[str]:
    return sorted(n for n in names if n.split(".")[0] in (*HEAVY, "worker"))


def commands(group: object, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every command and group of the typer app, as the words a user types."""
    for name, command in getattr(group, "commands", {}).items():
        yield (*prefix, name)
        yield from commands(command, (*prefix, name))


# Help text renders for people: no reST or rich markup, no flag types to decode.
MARKUP = ("``", "<bool>", "[bold]", "[/", ":func:", ":class:")


def test_the_help_of_every_command_loads_no_model_code_and_reads_plainly() -> None:
    from producers.cli import app

    every = [(), *commands(typer.main.get_command(app)), ("eval",)]
    assert {" ".join(words) for words in every} >= PRODUCER_COMMANDS
    with ThreadPoolExecutor(max_workers=4) as pool:
        held = list(pool.map(lambda words: probe(RUN_CLI, *words, "--help"), every))
    lines = [" ".join(("captionq", *words, "--help")) for words in every]
    found = {line: model_code(names) for line, (_, names) in zip(lines, held, strict=True)}
    assert {line: mods for line, mods in found.items() if mods} == {}
    root = held[0][1]  # `captionq --help` loads none of the packages it runs lazily
    assert sorted(n for n in root if n.split(".")[0] in ("evaluation", "review")) == []
    marked = {
        line: [m for m in MARKUP if m in shown]
        for line, (shown, _) in zip(lines, held, strict=True)
        if any(m in shown for m in MARKUP)
    }
    assert marked == {}


def test_importing_the_api_the_client_and_the_cli_loads_no_model_code() -> None:
    names = loaded("import producers.api, producers.client, producers.cli")
    assert "producers.api" in names
    assert model_code(names) == []


# --- sizes, circles, directions -----------------------------------------------------------


def test_no_module_is_over_400_lines() -> None:
    sizes = {relative(p): len(p.read_text().splitlines()) for p in product_files()}
    assert {path: n for path, n in sizes.items() if n > MAX_LINES} == {}


def test_no_import_circle_among_the_product_packages() -> None:
    edges: dict[str, set[str]] = {module: set() for module in modules()}
    lines: dict[tuple[str, str], Import] = {}
    for found in imports():
        target = ours(found.target)
        if target is not None and target != found.source:
            edges[found.source].add(target)
            lines.setdefault((found.source, target), found)
    present = set(circles(edges))
    described = {
        " ↔ ".join(sorted(path_of(m) for m in circle)): [
            lines[pair].where() for pair in sorted(lines) if set(pair) <= circle
        ]
        for circle in present - KNOWN_CIRCLES
    }
    assert described == {}, "import circles (each line is one edge of the circle)"
    gone = [sorted(circle) for circle in KNOWN_CIRCLES - present]
    assert gone == [], "no longer a circle: remove it from KNOWN_CIRCLES"


def test_imports_point_downward() -> None:
    wrong = []
    for found in imports():
        if ours(found.target) is None:
            continue
        allowed = DOWNWARD[found.source.split(".")[0]]
        if found.source.split(".")[:2] == LAZY_EDGE.split(".") and found.in_function:
            allowed = PACKAGES
        if not any(found.names(prefix) for prefix in allowed):
            wrong.append(found.where())
    assert wrong == []


def test_only_the_model_backends_import_torch_or_transformers_at_module_level() -> None:
    wrong = [
        found.where()
        for found in imports()
        if any(found.names(heavy) for heavy in HEAVY)
        and not found.in_function
        and not found.source.startswith("worker.models")
    ]
    assert wrong == []


def test_schemas_import_no_torch_transformers_or_celery_at_all() -> None:
    wrong = [
        found.where()
        for found in imports()
        if found.source.split(".")[0] == "schemas"
        and any(found.names(name) for name in (*HEAVY, "celery", "kombu"))
    ]
    assert wrong == []


# --- the README's map ---------------------------------------------------------------------

ROW = re.compile(r"^\|\s*`([^`]+)`\s*\|(.*)\|\s*$")


def architecture_map(readme: str) -> dict[str, str]:
    """The ``| module | job |`` table in the ``## Architecture`` section: path → job."""
    section = re.search(r"^## Architecture\s*$(.*?)(?=^## |\Z)", readme, re.M | re.S)
    if section is None:
        pytest.fail("README.md has no '## Architecture' section")
    header = re.search(r"^\|\s*module\s*\|\s*job\s*\|\s*$", section.group(1), re.M | re.I)
    if header is None:
        pytest.fail("README.md's Architecture section has no '| module | job |' table")
    rows = (ROW.match(line.strip()) for line in section.group(1)[header.end() :].splitlines())
    return {row.group(1): row.group(2).strip() for row in rows if row is not None}


def test_the_readme_map_lists_every_module_and_nothing_gone() -> None:
    listed = architecture_map((ROOT / "README.md").read_text())
    on_disk = {relative(p) for p in product_files()}
    packages = {path for path in on_disk if path.endswith("/__init__.py")}
    entries = {path for path in listed if path.endswith(".py")}
    missing = sorted(on_disk - packages - entries)
    stale = sorted(entries - on_disk)
    assert (missing, stale) == ([], []), "README.md's map: (missing modules, stale entries)"
    assert [path for path in entries if not listed[path]] == [], "entries without their job"
