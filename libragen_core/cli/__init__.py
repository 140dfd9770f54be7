"""The `libragen` command. Each subcommand lives in its own module with `add_parser(subparsers)`."""
from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import LibraGenError

# module name -> registered by its add_parser(); listed here so `libragen --help` shows all of them
SUBCOMMANDS = ["generate", "inspect", "batch", "lora", "spriteworld", "rewrite", "curate", "eval"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="libragen", description="LibraGen subject-to-video tools")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"{__name__}.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except LibraGenError as e:
        print(f"libragen {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"libragen {args.command}: interrupted; no partial output was left behind", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
