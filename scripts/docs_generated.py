"""Write every generated block of the docs from the code, so no table or map lags what it describes:

- docs/settings.md   ``settings:train``, ``settings:lr-find``: every setting's flag, meaning, range and per-preset
                     value (``resnet_lab.settings.markdown_table``);
- docs/training.md   ``presets``: each preset's idea, recipe and measured figures (``resnet_lab.train.notes``);
- docs/architecture.md ``layout``: the library's modules, each with the first paragraph of its docstring;
- docs/inspect.md    ``explain``: the explanation methods' sanity checks and ROAD scores on the reference run, from
                     the stored measurement ``assets/explain/reference.json`` (``scripts/explain_asset.py``).

    python scripts/docs_generated.py          # rewrite each block between <!-- NAME --> and <!-- /NAME -->
    python scripts/docs_generated.py --check  # exit 1 if a block is stale (the tests assert it too)
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from resnet_lab import explain, lr_finder, settings, training  # noqa: E402
from resnet_lab.train.notes import preset_table  # noqa: E402

WIDTH = 118


def _about(path: Path) -> str:
    """A module docstring's first paragraph on one line."""
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    return " ".join(doc.split("\n\n")[0].split())


def layout() -> str:
    rows = []
    lib = ROOT / "resnet_lab"
    for path in sorted(lib.rglob("*.py"), key=lambda p: p.relative_to(lib).parts):
        if path.name == "__main__.py":
            continue
        rel = path.relative_to(ROOT)
        package = path.name == "__init__.py"
        depth = len(rel.parts) - (2 if package else 1)
        label = "  " * depth + (rel.parts[-2] + "/" if package else rel.parts[-1])
        line = f"{label:<32}{_about(path)}"
        rows.append(line if len(line) <= WIDTH else line[:WIDTH - 1] + "…")
    return "```\n" + "\n".join(rows) + "\n```"


def explain_table() -> str:
    """One row per method from the stored measurement: model randomisation (rho after the first step and after the
    last), its verdict, data randomisation, ROAD. Nothing typed: re-measure with scripts/explain_asset.py."""
    stored = explain.measured()
    if stored is None:
        return "_No stored measurement: run `python scripts/explain_asset.py`._"
    r = stored["result"]
    sanity, data, road = r["sanity"], r.get("data_randomisation"), r.get("faithfulness")
    verdict = {m: word for word in ("fail", "partly", "pass") for m in sanity["verdict"][word]}
    words = {"fail": "**fails**", "partly": "partly", "pass": "passes"}
    first, last = sanity["steps"][1], sanity["steps"][-1]
    rows = [f"Measured with `{stored['command']}` ({len(r['images'])} test images, one per class; "
            f"{stored['hardware']}; {stored['date']}; {stored['seconds']:.0f} s). Model randomisation: mean Spearman "
            f"ρ of each map to the trained network's after re-initialising `{first}` and after re-initialising "
            f"everything down to `{last}`; data randomisation: ρ to the map of the network trained on shuffled "
            f"labels; ROAD: half the difference between the mean class probability left when the map's least "
            f"relevant pixels are removed and when its most relevant are (higher = the map's order matters more).",
            "",
            f"| method | ρ after `{first}` | ρ after `{last}` | model randomisation | ρ shuffled labels | ROAD |",
            "|---|---|---|---|---|---|"]
    for m in r["methods"]:
        mean = sanity["mean"][m]
        shuffled = f"{data['mean'][m]:.2f}" if data else "–"
        score = f"{road['mean'][m]['road']:+.3f}" if road else "–"
        rows.append(f"| {m} | {mean[1]:.2f} | {mean[-1]:.2f} | {words[verdict[m]]} | {shuffled} | {score} |")
    if road and "random order" in road["mean"]:
        rows.append(f"| random order (baseline) | | | | | {road['mean']['random order']['road']:+.3f} |")
    return "\n".join(rows)


BLOCKS = {
    ("docs/settings.md", "settings:train"): lambda: settings.markdown_table(training.TrainConfig, training.PRESETS),
    ("docs/settings.md", "settings:lr-find"): lambda: settings.markdown_table(lr_finder.LRFindConfig,
                                                                              lr_finder.DEFAULTS),
    ("docs/training.md", "presets"): preset_table,
    ("docs/architecture.md", "layout"): layout,
    ("docs/inspect.md", "explain"): explain_table,
}


def main(argv: list[str]) -> int:
    stale = []
    for file in sorted({f for f, _ in BLOCKS}):
        path = ROOT / file
        text = old = path.read_text(encoding="utf-8")
        for (where, name), make in BLOCKS.items():
            if where != file:
                continue
            pattern = re.compile(rf"(<!-- {re.escape(name)} -->\n).*?(<!-- /{re.escape(name)} -->)", re.S)
            if not pattern.search(text):
                print(f"{file} has no <!-- {name} --> ... <!-- /{name} --> block", file=sys.stderr)
                return 2
            text = pattern.sub(lambda m: m.group(1) + make() + "\n" + m.group(2), text)
        if text != old:
            stale.append(file)
            if "--check" not in argv:
                path.write_text(text, encoding="utf-8")
    if "--check" in argv and stale:
        print("stale: " + ", ".join(stale) + " (run python scripts/docs_generated.py)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
