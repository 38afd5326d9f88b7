"""Write the settings tables of docs/settings.md from the configs' field metadata (resnet_lab.settings.markdown_table).

    python scripts/settings_table.py          # rewrite the tables between the <!-- settings:NAME --> markers
    python scripts/settings_table.py --check  # exit 1 if docs/settings.md is stale (tests/test_settings.py asserts it too)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from resnet_lab import lr_finder, settings, training  # noqa: E402

TABLES = {"train": lambda: settings.markdown_table(training.TrainConfig, training.PRESETS),
          "lr-find": lambda: settings.markdown_table(lr_finder.LRFindConfig, lr_finder.DEFAULTS)}


def main(argv: list[str]) -> int:
    path = ROOT / "docs" / "settings.md"
    text = old = path.read_text(encoding="utf-8")
    for name, make in TABLES.items():
        pattern = re.compile(rf"(<!-- settings:{re.escape(name)} -->\n).*?(<!-- /settings:{re.escape(name)} -->)",
                             re.S)
        if not pattern.search(text):
            print(f"docs/settings.md has no <!-- settings:{name} --> ... <!-- /settings:{name} --> block", file=sys.stderr)
            return 2
        text = pattern.sub(lambda m: m.group(1) + make() + "\n" + m.group(2), text)
    if "--check" in argv:
        return 0 if text == old else 1
    path.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
