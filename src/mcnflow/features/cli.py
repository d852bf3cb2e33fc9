"""``mcnflow extract <modality>``: the text features of one shard into HDF5, or the word2vec source.

Video and audio features are not extracted here: ``mcnflow media`` makes them from one decode of
each download (:mod:`mcnflow.media`)."""

from __future__ import annotations

import argparse
import importlib

# sub-command -> module defining configure_parser(parser) and main(args)
EXTRACTORS = {
    "word2vec": ("mcnflow.features.word2vec", "the word2vec source every corpus's text features use"),
    "text": ("mcnflow.features.text", "caption tokens (with their word vectors) of one shard"),
}


def configure_parser(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="extractor", metavar="<modality>", required=True)
    for name, (module_name, help_text) in EXTRACTORS.items():
        child = sub.add_parser(name, help=help_text, description=help_text)
        module = importlib.import_module(module_name)
        module.configure_parser(child)
        child.set_defaults(_extract_main=module.main)


def main(args: argparse.Namespace) -> int:
    return int(args._extract_main(args) or 0)
