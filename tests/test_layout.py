"""The package's shape: imports flow one way, the command line is one layer, modules stay small,
and the repository speaks of itself only."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "atlas"
MAX_LINES = 450


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The atlas modules `name` imports, at any level (a function-level import is an import too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            candidates = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            candidates = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for c in candidates:
            # the longest module name that `c` is or lies in
            while c and c not in modules:
                c = c.rpartition(".")[0]
            if c and c != name:
                found.add(c)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    # A package's __init__ importing its own modules is how packages re-export; not a cycle.
    for name in graph:
        graph[name] = {m for m in graph[name] if not m.startswith(name + ".") and not name.startswith(m + ".")}
    return graph


def test_no_import_cycle() -> None:
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_the_library_never_imports_the_command_line_and_has_no_argparse() -> None:
    for name, path in _modules().items():
        if name == "atlas.cli" or name.startswith("atlas.cli."):
            continue
        assert not any(m.startswith("atlas.cli") for m in _graph()[name]), f"{name} imports atlas.cli"
        assert "argparse" not in path.read_text(encoding="utf-8"), f"{name} uses argparse: parsing belongs in atlas.cli"


def test_every_command_has_a_module_named_after_it() -> None:
    from atlas.cli import COMMANDS, main_parser

    parser = main_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    names = sorted(sub.choices)  # type: ignore[arg-type]
    assert names == sorted(c.replace("_", "-") for c in COMMANDS)
    for command in COMMANDS:
        assert (PACKAGE / "cli" / f"{command}.py").is_file()
        stage = PACKAGE / command
        assert (stage.with_suffix(".py")).is_file() or (stage / "__init__.py").is_file(), (
            f"no stage module atlas.{command}"
        )


def test_modules_stay_small() -> None:
    big = {
        name: n
        for name, path in _modules().items()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not big, f"modules over {MAX_LINES} lines: {big}; split them along their seams"


def test_help_loads_neither_torch_nor_a_stage() -> None:
    code = (
        "import sys, contextlib, io\n"
        "from atlas.cli import main\n"
        "for argv in (['--help'], ['generate', '--help'], ['train-dae', '--help'], ['extract', '--help']):\n"
        "    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "        main(argv)\n"
        "heavy = sorted(m for m in sys.modules if m in ('torch', 'numpy', 'pandas', 'PIL', 'jinja2') or m in\n"
        "    ('atlas.generate', 'atlas.score', 'atlas.site', 'atlas.index', 'atlas.train_dae.training', 'atlas.extract.build'))\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"`atlas --help` imported {out}"


# Words that would mean the repository speaks of how it was built rather than of itself.
_FOREIGN = (
    "DESIGN.md",
    "STYLE.md",
    "../shared",
    "device tool",
    "lent GPU",
    "lent a GPU",
    "this session",
    "the issue's",
)


def test_the_repository_speaks_of_itself() -> None:
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    hits = []
    for rel in files:
        path = ROOT / rel
        if (
            rel == "tests/test_layout.py"
            or not path.is_file()
            or path.suffix not in {".py", ".md", ".smk", ".yaml", ".yml", ".sh", ".toml", ".html", ".js", ".css", ""}
        ):
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        hits += [f"{rel}: {word}" for word in _FOREIGN if word in text]
    assert not hits, "mentions of files outside the repository or of how it was built: " + "; ".join(hits)
