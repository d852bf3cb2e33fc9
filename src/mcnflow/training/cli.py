"""``mcnflow train``: train MCN for one experiment (one modality-pair combination and space).

    mcnflow train --experiment NAME --seed N --settings-file JSON \
        --text SHARD.h5... [--video SHARD.h5...] [--audio SHARD.h5...] \
        --out-dir results/train/NAME/seed-N

``--settings`` is the experiment's entry (pairs, space, losses) whose ``training`` key holds the
whole training section with the experiment's overrides applied (what the workflow passes).
With ``--config config.yaml ...`` the same is built from the config files and ``--experiment``.
Shards of a modality the experiment does not train may be given; they are not read.
"""

from __future__ import annotations

import argparse
import logging

from mcnflow.core.config import ConfigError, add_settings_arguments, settings_from_args

log = logging.getLogger(__name__)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--experiment", required=True, help="the experiment's name (config key experiments.NAME)")
    parser.add_argument("--seed", required=True, type=int, help="the branch's seed (one of the experiment's seeds)")
    add_settings_arguments(parser)
    parser.add_argument("--text", nargs="+", required=True, metavar="SHARD.h5",
                        help="text feature shards (captions define the clips, so always needed)")
    parser.add_argument("--video", nargs="*", default=[], metavar="SHARD.h5", help="2D (ResNet152) video feature shards")
    parser.add_argument("--video3d", nargs="*", default=[], metavar="SHARD.h5",
                        help="3D (ResNeXt-101) video feature shards (read when training.video_features has 3d)")
    parser.add_argument("--audio", nargs="*", default=[], metavar="SHARD.h5", help="audio feature shards")
    parser.add_argument("--out-dir", required=True, help="where checkpoints/, model.pt and log.tsv go")
    parser.add_argument("--restart", action="store_true",
                        help="delete this branch's checkpoints and train from scratch (a checkpoint that cannot be "
                             "resumed otherwise stops training)")


def main(args: argparse.Namespace) -> int:
    settings = settings_from_args(args, "train", experiment=args.experiment, seed=args.seed)
    if settings["training"]["seed"] != args.seed:
        raise ConfigError(f"--seed {args.seed} but the settings are for seed {settings['training']['seed']}")
    from mcnflow.training.trainer import train  # torch is imported only when training runs

    path = train(settings, text=args.text, video=args.video, video3d=args.video3d, audio=args.audio, out_dir=args.out_dir, experiment=args.experiment,
                 restart=args.restart)
    log.info("wrote %s", path)
    return 0
