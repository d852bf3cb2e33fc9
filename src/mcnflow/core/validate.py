"""``mcnflow validate-config``: check config files against the schema and print the merged result."""

from __future__ import annotations

import argparse

import yaml

from mcnflow.core.config import load_config


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("configs", nargs="+", metavar="YAML", help="config files, later ones override")
    parser.add_argument("--print", action="store_true", help="print the merged, validated config")


def main(args: argparse.Namespace) -> int:
    config = load_config(args.configs)
    if args.print:
        print(yaml.safe_dump(config, sort_keys=False))
    else:
        print(f"valid: {', '.join(args.configs)}")
    return 0
