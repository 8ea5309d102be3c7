"""The house's rules (issue 30: three wings), read from the code itself: every import of every
module, at any depth.

    simplegvr_core/            the library: imports neither app/ nor demo/ (nor the lab, nodes,
        benchmarks)
    simplegvr_core/app/        the `simplegvr` command (shipped)
    simplegvr_core/demo/       what `simplegvr demo` runs (shipped)
    training/                  the lab: never imports app/; training/demo is the one writer of the
        demo assets
    benchmarks/, experiments/  measure the library and the lab

No circles: the modules' imports form no loop. No project script is run by subprocess to get at code
that could be imported.
"""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WINGS = ("simplegvr_core", "training", "nodes", "benchmarks", "experiments", "tools")


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict[str, Path]:
    out = {}
    for wing in WINGS:
        for path in sorted((ROOT / wing).rglob("*.py")):
            if "__pycache__" not in path.parts:
                out[module_name(path)] = path
    return out


MODULES = modules()


def _resolve(name: str) -> str | None:
    """The project module an imported name lands in (a submodule when it is one, else its
    package)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def imports(name: str) -> set[str]:
    """Every project module `name` imports, at module level or inside functions."""
    path = MODULES[name]
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                base = ".".join(base)
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            # `from pkg import sub` imports the submodule sub; `from pkg import name` imports pkg
            # (its __init__)
            targets = [
                f"{mod}.{a.name}" if f"{mod}.{a.name}" in MODULES else mod for a in node.names
            ]
        else:
            continue
        for t in targets:
            r = _resolve(t)
            if r is not None and r != name:
                found.add(r)
    return found


GRAPH = {name: imports(name) for name in MODULES}


def in_wing(name: str, wing: str) -> bool:
    return name == wing or name.startswith(wing + ".")


def _violations(sources, forbidden) -> list[str]:
    return sorted(f"{a} -> {b}" for a in GRAPH if sources(a) for b in GRAPH[a] if forbidden(b))


def test_the_library_imports_neither_the_app_nor_the_demo_nor_anything_above_it():
    # (simplegvr_core.__main__ is the command's entry point: `python -m simplegvr_core`)
    def library(n):
        return (
            in_wing(n, "simplegvr_core")
            and not in_wing(n, "simplegvr_core.app")
            and not in_wing(n, "simplegvr_core.demo")
            and n != "simplegvr_core.__main__"
        )

    def above(n):
        return (
            in_wing(n, "simplegvr_core.app")
            or in_wing(n, "simplegvr_core.demo")
            or any(
                in_wing(n, w) for w in ("training", "nodes", "benchmarks", "experiments", "tools")
            )
        )

    assert _violations(library, above) == []


def test_the_lab_never_imports_the_app_and_the_shipped_demo_never_imports_the_lab():
    assert (
        _violations(lambda n: in_wing(n, "training"), lambda n: in_wing(n, "simplegvr_core.app"))
        == []
    )
    assert (
        _violations(
            lambda n: in_wing(n, "simplegvr_core.demo"),
            lambda n: in_wing(n, "training") or in_wing(n, "simplegvr_core.app"),
        )
        == []
    )


def test_the_degradations_do_not_import_the_pipeline():
    assert (
        _violations(
            lambda n: in_wing(n, "simplegvr_core.degrade"),
            lambda n: n in ("simplegvr_core.pipeline", "simplegvr_core.plan"),
        )
        == []
    )


def test_the_modules_import_each_other_in_no_circle():
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                circles.append(sorted(comp))

    for v in GRAPH:
        if v not in index:
            visit(v)
    assert circles == []


WRITERS = re.compile(
    r"atomic_write\(|\bcommit\(|copyfile\(|\.write_text\(|\.write_bytes\(|"
    r"save_checkpoint\(|save_file\("
)


def test_only_the_labs_demo_stage_writes_the_demo_assets():
    """A module that names the demo assets folder and writes files is the lab's demo stage; every
    other one only reads it (or hands its files to training.demo.install_assets)."""
    offenders = []
    for name, path in MODULES.items():
        if in_wing(name, "training.demo"):
            continue
        text = path.read_text()
        if re.search(
            r"demo\.ASSETS|import[^\n]*\bASSETS\b|simplegvr_core/demo/assets", text
        ) and WRITERS.search(text):
            offenders.append(name)
    assert offenders == []
    assert "def install_assets" in (ROOT / "training" / "demo" / "rebuild.py").read_text()


def test_no_project_script_is_run_by_subprocess():
    """Code that could be imported is imported: no subprocess call names a .py file of the project.
    (A fresh `python -c` process to measure peak memory is not running a script.)"""
    offenders = []
    calls = {"run", "Popen", "call", "check_call", "check_output"}
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in calls
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "subprocess"
            ):
                for const in ast.walk(node):
                    if (
                        isinstance(const, ast.Constant)
                        and isinstance(const.value, str)
                        and const.value.endswith(".py")
                        and const.value.split("/")[0] in WINGS
                    ):
                        offenders.append(f"{name}: {const.value}")
    assert offenders == []
