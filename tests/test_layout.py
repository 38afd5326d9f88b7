"""The shape of the house, checked on the source itself: modules small and one concept each, no import cycles, the
library's own imports at the top of each file, heavy optional packages kept off the training path, each metric
defined once, and a README that is a front door with pictures that exist."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LIB = ROOT / "resnet_lab"
MAX_LINES = 500
MAX_LAZY = 20
# imported only inside the functions that need them: a training run needs torch + torchvision + numpy alone
OPTIONAL = ("streamlit", "captum", "albumentations", "optuna", "torch_lr_finder", "plotly", "pandas", "torchinfo",
            "tqdm", "sqlalchemy", "cv2", "pytorch_grad_cam", "ray")


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(LIB.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def imports(name: str, path: Path, known: dict) -> list[tuple[str, int, bool, str]]:
    """(imported module, line, inside a function?, the source line) for each import in the file; a ``from X
    import y`` names X.y when that is a module, else X; relative imports are resolved."""
    tree = ast.parse(path.read_text())
    lines = path.read_text().splitlines()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []

    def visit(node, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                out.extend((a.name, child.lineno, in_function, lines[child.lineno - 1]) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    up = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                    base = ".".join(up + ([child.module] if child.module else []))
                for alias in child.names:
                    full = f"{base}.{alias.name}"
                    out.append((full if full in known else base, child.lineno, in_function,
                                lines[child.lineno - 1]))
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(tree, False)
    return out


def own(target: str, known: dict) -> str | None:
    """The resnet_lab module an import names (``resnet_lab.data.load_dataset`` -> ``resnet_lab.data``)."""
    while target and target not in known:
        target = target.rpartition(".")[0]
    return target or None


def graph() -> tuple[dict[str, set[str]], list[tuple[Path, int, str]]]:
    known = modules()
    edges: dict[str, set[str]] = {name: set() for name in known}
    lazy = []
    for name, path in known.items():
        for target, line, in_function, text in imports(name, path, known):
            if target.split(".")[0] != "resnet_lab":
                continue
            module = own(target, known)
            if module and module != name:
                edges[name].add(module)
            if in_function:
                lazy.append((path, line, text))
    return edges, lazy


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in edges:
        if v not in index:
            strong(v)
    return found


def test_no_library_module_is_over_500_lines():
    long = {str(p.relative_to(ROOT)): n for p in LIB.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"split these by concept: {long}"


def test_the_library_has_no_import_cycle_even_counting_imports_inside_functions():
    assert cycles(graph()[0]) == []


def test_the_cycle_finder_finds_a_cycle():
    """The check above can fail: a two-module and a three-module loop are found, a chain is not."""
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_library_imports_sit_at_the_top_and_each_lazy_one_says_why():
    _, lazy = graph()
    assert len(lazy) <= MAX_LAZY, [f"{p.relative_to(ROOT)}:{n}" for p, n, _ in lazy]
    unexplained = [f"{p.relative_to(ROOT)}:{n}" for p, n, text in lazy if "#" not in text]
    assert not unexplained, f"a lazy import of resnet_lab needs a comment saying why: {unexplained}"


def test_heavy_optional_packages_are_imported_only_where_they_are_used():
    known = modules()
    at_top = [f"{path.relative_to(ROOT)}:{line} {target}" for name, path in known.items()
              for target, line, in_function, _ in imports(name, path, known)
              if not in_function and target.split(".")[0] in OPTIONAL]
    assert not at_top, f"import these inside the functions that use them: {at_top}"
    assert not any(t.split(".")[0] == "streamlit" for name, path in known.items()
                   for t, *_ in imports(name, path, known)), "resnet_lab never imports streamlit"


@pytest.mark.parametrize("metric", ["topk_accuracy", "per_class_accuracy", "confusion_matrix", "most_confused"])
def test_each_metric_is_defined_once(metric):
    homes = [str(p.relative_to(ROOT)) for p in LIB.rglob("*.py")
             if any(isinstance(n, ast.FunctionDef) and n.name == metric for n in ast.walk(ast.parse(p.read_text())))]
    assert homes == ["resnet_lab/metrics.py"]


def test_the_readme_is_a_front_door_with_pictures_that_exist():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", text)
    assert len(pictures) >= 3
    for picture in pictures:
        path = ROOT / picture
        assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", picture
    for link in re.findall(r"\]\((docs/[^)#]+)", text):
        assert (ROOT / link).exists(), f"the README links to {link}, which is missing"


def test_every_generated_block_of_the_docs_is_current():
    """docs/architecture.md's module map, docs/training.md's preset table and docs/settings.md's tables are written
    from the code (scripts/docs_generated.py): a moved module, a changed preset or a new measurement makes them stale."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "docs_generated.py"), "--check"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
