"""``mcnflow train``: train MCN for one experiment (one modality-pair combination and space).

    mcnflow train --experiment NAME --seed N --settings-file JSON \
        --text SHARD.h5... [--video SHARD.h5...] [--video3d SHARD.h5...] [--audio SHARD.h5...] \
        --out-dir results/train/NAME/seed-N

``--settings`` is the experiment's entry (pairs, space, losses) whose ``training`` key holds the
whole training section with the experiment's overrides applied (what the workflow passes).
With ``--config config.yaml ...`` the same is built from the config files and ``--experiment``.
One ``--<stream>`` flag per feature stream (mcnflow.core.streams). Shards of a stream the experiment
does not read may be given; they are not read.
"""

from __future__ import annotations

import argparse
import logging

from mcnflow.core.config import ConfigError, add_settings_arguments, settings_from_args
from mcnflow.core.streams import STREAMS

log = logging.getLogger(__name__)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--experiment", required=True, help="the experiment's name (config key experiments.NAME)")
    parser.add_argument("--seed", required=True, type=int, help="the branch's seed (one of the experiment's seeds)")
    add_settings_arguments(parser)
    for s in STREAMS:
        parser.add_argument(f"--{s.name}", nargs="*", default=[], metavar="SHARD.h5",
                            help=f"{s.name} feature shards: {s.description}"
                                 + (" (always needed: captions define the clips)" if s.modality == "text" else ""))
    parser.add_argument("--out-dir", required=True, help="where checkpoints/, model.pt and log.tsv go")
    parser.add_argument("--restart", action="store_true",
                        help="delete this branch's checkpoints and train from scratch (a checkpoint that cannot be "
                             "resumed otherwise stops training)")


def main(args: argparse.Namespace) -> int:
    settings = settings_from_args(args, "train", experiment=args.experiment, seed=args.seed)
    if settings["training"]["seed"] != args.seed:
        raise ConfigError(f"--seed {args.seed} but the settings are for seed {settings['training']['seed']}")
    from mcnflow.training.trainer import train  # torch is imported only when training runs

    shards = {s.name: getattr(args, s.name) for s in STREAMS}
    path = train(settings, shards=shards, out_dir=args.out_dir, experiment=args.experiment, restart=args.restart)
    log.info("wrote %s", path)
    return 0
