"""(Re)write checksums.json of reference run folders: python scripts/reference_checksums.py assets/reference/*/

Run it after a deliberate change to a shipped reference run (new weights, a corrected about.json); the app refuses
a reference whose files do not match their checksums."""

from __future__ import annotations

import sys
from pathlib import Path

from resnet_lab.runs.reference import verify_reference, write_checksums


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    for folder in map(Path, argv):
        if not (folder / "config.json").is_file():
            print(f"{folder}: not a run folder (no config.json)", file=sys.stderr)
            return 1
        sums = write_checksums(folder)
        verify_reference(folder)
        print(f"{folder}: {len(sums)} files: " + ", ".join(sorted(sums)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
