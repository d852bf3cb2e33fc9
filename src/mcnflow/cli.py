"""``mcnflow <stage> ...``: one subcommand per pipeline stage.

Snakemake rules call these commands and nothing else, so each stage runs (and is tested) without
Snakemake. Only the module of the chosen subcommand is imported: ``mcnflow download`` does not pay
for importing torch.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from mcnflow.core.config import ConfigError
from mcnflow.core.ids import InvalidVideoId

# name -> (module defining configure_parser(parser) and main(args) -> int, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "manifest": ("mcnflow.manifest", "read a corpus and write its sharded manifest"),
    "download": ("mcnflow.download.cli", "download one shard of videos with yt-dlp (or take local files)"),
    "survival": ("mcnflow.download.survival", "summarize download ledgers: how many videos survived, and why not"),
    "media": ("mcnflow.media.stage", "decode one shard once: normalize ledger, video + audio features (+ kept videos)"),
    "estimate": ("mcnflow.estimate", "print the expected CPU/GPU hours and bytes per stage of the configured run"),
    "split-captions": ("mcnflow.caption_split", "stream a corpus's caption.json once into one caption file per shard"),
    "extract": ("mcnflow.features.cli", "extract the text features of one shard into HDF5, or the word2vec source"),
    "feature-stats": ("mcnflow.features.stats", "count feature outcomes and stored lengths per modality"),
    "train": ("mcnflow.training.cli", "train MCN for one experiment"),
    "evaluate": ("mcnflow.evaluation.cli", "evaluate one experiment's checkpoint on one benchmark"),
    "summarize": ("mcnflow.report", "collect metrics into results/summary.csv, summary.md and plots"),
    "demo-corpus": ("mcnflow.demo.corpus", "make the offline synthetic demo corpus"),
    "demo-server": ("mcnflow.demo.server", "serve the demo corpus over local HTTP for yt-dlp"),
    "validate-config": ("mcnflow.core.validate", "validate config files against the schema"),
}


def _top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mcnflow", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"mcnflow {importlib.import_module('mcnflow').__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<stage>", required=True)
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def build_parser(command: str) -> argparse.ArgumentParser:
    module_name, help_text = COMMANDS[command]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"mcnflow {command}", description=help_text)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    module.configure_parser(parser)
    parser.set_defaults(_main=module.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        _top_parser().parse_args(argv)  # prints usage / version and exits
        return 2
    parser = build_parser(argv[0])
    args = parser.parse_args(argv[1:])
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args._main(args) or 0)
    except (ConfigError, InvalidVideoId) as exc:
        print(f"mcnflow {argv[0]}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
