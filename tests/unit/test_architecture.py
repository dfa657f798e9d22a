"""The shape of the code, checked: no import cycle inside engine/, the layers import only downwards (engine never
imports the service, the workers or their frameworks; the service never imports the workers), kinds import no
other kind and never the registry, and every kind keeps to the contract."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from engine.core.errors import ErrorCode
from engine.core.kind import Kind, ReportBase, StrictParams
from engine.registry import KINDS

ROOT = Path(__file__).resolve().parents[2]


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module an import statement in the file names (at any depth: lazy imports count too)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def _graph(package: str) -> dict[str, set[str]]:
    files = {_module(p): p for p in (ROOT / package).rglob("*.py")}
    return {name: {m for m in _imports(path) if m in files} for name, path in files.items()}


def _top(package: str) -> dict[str, set[str]]:
    return {_module(p): _imports(p) for p in (ROOT / package).rglob("*.py")}


def test_no_import_cycle_in_the_engine() -> None:
    graph = _graph("engine")
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the stack, 2: done

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("engine", ("service", "workers", "onnxsmith", "fastapi", "celery", "sqlalchemy", "boto3", "starlette")),
        ("service", ("workers",)),
        ("onnxsmith", ("service", "workers")),  # the SDK and CLI import them lazily inside commands only
    ],
)
def test_layers_import_only_downwards(package: str, forbidden: tuple[str, ...]) -> None:
    bad = []
    for module, imports in _top(package).items():
        if package == "onnxsmith" and module.startswith("onnxsmith.cli"):
            continue  # `serve`, `worker` and `--local` import the service, workers and engine inside the command
        bad += [f"{module} imports {m}" for m in imports if m.split(".")[0] in forbidden]
    assert not bad, bad


def test_kinds_import_neither_other_kinds_nor_the_registry() -> None:
    bad = []
    for module, imports in _top("engine/kinds").items():
        own = ".".join(module.split(".")[:3])  # engine.kinds.<kind>
        for m in imports:
            if m == "engine.registry" or (m.startswith("engine.kinds.") and not m.startswith(own)):
                bad.append(f"{module} imports {m}")
    assert not bad, bad


def test_every_kind_keeps_the_contract() -> None:
    for name, kind in KINDS.items():
        assert isinstance(kind, Kind) and kind.name == name
        assert issubclass(kind.Params, StrictParams) and issubclass(kind.Report, ReportBase)
        assert kind.queue in ("default", "measure")
        assert set(kind.required) <= set(kind.roles), name
        assert kind.description and kind.Params.model_json_schema()
        folder = Path(type(kind).__module__.replace(".", "/")).parent
        assert (ROOT / folder / "report.html").exists(), f"{name}: its page template lives in its folder"


def test_every_error_code_has_a_status_and_no_free_string_codes_remain() -> None:
    assert all(code.status in (409, 422, 500) and code.info.problem for code in ErrorCode)
    bad = []
    for path in [
        *(ROOT / "engine").rglob("*.py"),
        *(ROOT / "service").rglob("*.py"),
        *(ROOT / "workers").rglob("*.py"),
    ]:
        if re.search(r"EngineError\(\s*[rfb]?[\"']", path.read_text()):  # a string where the ErrorCode goes
            bad.append(str(path.relative_to(ROOT)))
    assert not bad, f"free-string error codes in {bad}: use ErrorCode"


MAX_FUNCTION_LINES = 100
MAX_MODULE_LINES = 500


def test_no_function_over_100_lines_and_no_module_over_500() -> None:
    long = []
    for package in ("engine", "service", "workers"):
        for path in (ROOT / package).rglob("*.py"):
            text = path.read_text()
            where = path.relative_to(ROOT)
            if len(text.splitlines()) > MAX_MODULE_LINES:
                long.append(f"{where}: {len(text.splitlines())} lines")
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    length = (node.end_lineno or node.lineno) - node.lineno + 1
                    if length > MAX_FUNCTION_LINES:
                        long.append(f"{where}:{node.lineno} {node.name}: {length} lines")
    assert not long, long
