"""``mcnflow extract <modality>``: one shard of one modality into HDF5 (or the word2vec source)."""

from __future__ import annotations

import argparse
import importlib

# sub-command -> module defining configure_parser(parser) and main(args)
EXTRACTORS = {
    "video": ("mcnflow.features.video", "ResNet152 per-second features of one shard"),
    "video3d": ("mcnflow.features.video3d", "3D ResNeXt-101 features (1.5 per second) of one shard"),
    "audio": ("mcnflow.features.audio", "DaveNet log-mel spectrograms of one shard"),
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
