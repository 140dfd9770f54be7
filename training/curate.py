"""Curation entry point for training runs: `python -m training.curate --data DIR --out DIR`.

The same as `libragen curate DIR --out DIR` (the work lives in libragen_core.curation); finish a
run with `python -m training.curate --out DIR --decisions decisions.json`.
"""
from __future__ import annotations

import sys

from libragen_core.cli import main


def cli(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--data" in argv:
        i = argv.index("--data")
        if i + 1 >= len(argv):
            print("training.curate: --data needs a dataset folder", file=sys.stderr)
            return 2
        data = argv[i + 1]
        argv = argv[:i] + argv[i + 2 :]
        return main(["curate", data, *argv])
    return main(["curate", *argv])


if __name__ == "__main__":
    sys.exit(cli())
