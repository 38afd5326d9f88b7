"""Write the library's module tree into docs/architecture.md, each module with the first paragraph of its docstring.

    python scripts/layout_table.py          # rewrite the block between <!-- layout --> and <!-- /layout -->
    python scripts/layout_table.py --check  # exit 1 if the block is stale (tests/test_layout.py asserts it too)

Generated, so the map never lags the tree: a module moved, added or re-described shows up here by itself.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "architecture.md"
WIDTH = 118


def first_sentence(path: Path) -> str:
    """The docstring's first paragraph on one line (cut to the table's width by the caller)."""
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    return " ".join(doc.split("\n\n")[0].split())


def tree() -> str:
    rows = []
    lib = ROOT / "resnet_lab"
    for path in sorted(lib.rglob("*.py"), key=lambda p: p.relative_to(lib).parts):
        rel = path.relative_to(ROOT)
        if path.name == "__main__.py":
            continue
        name = (str(rel.parent) + "/") if path.name == "__init__.py" else str(rel)
        depth = len(rel.parts) - (2 if path.name == "__init__.py" else 1)
        label = "  " * depth + name.split("/")[-2 if path.name == "__init__.py" else -1] + \
            ("/" if path.name == "__init__.py" else "")
        about = first_sentence(path)
        line = f"{label:<32}{about}"
        rows.append(line if len(line) <= WIDTH else line[:WIDTH - 1] + "…")
    return "```\n" + "\n".join(rows) + "\n```"


def main(argv: list[str]) -> int:
    text = old = DOC.read_text(encoding="utf-8")
    pattern = re.compile(r"(<!-- layout -->\n).*?(<!-- /layout -->)", re.S)
    if not pattern.search(text):
        print("docs/architecture.md has no <!-- layout --> ... <!-- /layout --> block", file=sys.stderr)
        return 2
    text = pattern.sub(lambda m: m.group(1) + tree() + "\n" + m.group(2), text)
    if "--check" in argv:
        return 0 if text == old else 1
    DOC.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
