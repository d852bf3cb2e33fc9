"""``mcnflow evaluate``: one experiment's checkpoint on one benchmark -> results/eval/<experiment>/<benchmark>.json.

Settings: the ``evaluate`` stage of :mod:`mcnflow.core.plan` (``--settings-file``, what the workflow
passes; or computed from ``--config`` files with ``--experiment`` and ``--benchmark``):
``{"benchmark", "task": retrieval|localization|crosstask|mining_youtube, "corpus", "spec", "tie_policy",
"batch_size", "audio_frames", "convention": present|failures, "exclude": {corpus, spec} | null,
"localization": {...}, "crosstask": {audio_window, max_words, pool}, "experiment": {pairs, space, losses,
training}}``. The experiment's ``training`` section gives the clip cutting (``max_words``,
``audio_frames``) and the ``device``, so evaluation sees clips exactly as training did; ``audio_frames``
(the benchmark's, else evaluation's) lengthens evaluation clips as MCN does (YouCook2 5120, MSR-VTT 3072).

The result JSON holds ``metrics`` in the benchmark's ``convention`` and ``metrics_by_convention``
with both (:data:`mcnflow.evaluation.metrics.CONVENTIONS`), ``protocol`` (``mcn``, or ``mcnflow``
for the YouCook2 IoU localization, which is mcnflow's own), and ``n_excluded`` / ``excluded_by``: the
queries (clips, or step-localization videos) left out because their video is in another corpus, and
``per_query``: each query's (step localization: each video's) values, from which results/statistics.csv
computes intervals and paired tests (:mod:`mcnflow.statistics`).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any, Mapping

from mcnflow.core.atomic import atomic_write
from mcnflow.core.config import ConfigError, add_settings_arguments, settings_from_args
from mcnflow.core.device import resolve_device
from mcnflow.core.streams import STREAMS, read_streams
from mcnflow.evaluation.scoring import check_model, choose_scoring

log = logging.getLogger(__name__)

TASKS = ("retrieval", "localization", "crosstask", "mining_youtube")
STEP_TASKS = ("crosstask", "mining_youtube")  # step localization recall (mcnflow.evaluation.crosstask)
# whose protocol a task's metrics follow: MCN's, or mcnflow's own (the YouCook2 IoU decoder)
PROTOCOLS = {"retrieval": "mcn", "localization": "mcnflow", "crosstask": "mcn", "mining_youtube": "mcn"}


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--experiment", required=True, help="experiment name (a key of config experiments)")
    parser.add_argument("--seed", required=True, type=int, help="the branch's seed (one of the experiment's seeds)")
    parser.add_argument("--benchmark", required=True, help="benchmark name (a key of evaluation.benchmarks, or crosstask)")
    parser.add_argument("--checkpoint", required=True, help="results/train/{experiment}/seed-{seed}/model.pt")
    parser.add_argument("--manifest", help="results/manifest/{corpus}.tsv: videos outside it count as missing")
    for s in STREAMS:
        parser.add_argument(f"--{s.name}", nargs="*", default=[], metavar="H5",
                            help=f"{s.name} feature shards of the corpus: {s.description}")
    parser.add_argument("--word2vec", required=True, help="results/features/word2vec.h5 (the source the "
                                                          "checkpoint's text features came from)")
    parser.add_argument("--output", required=True, help="results/eval/{experiment}/seed-{seed}/{benchmark}.json")
    add_settings_arguments(parser)


def check_checkpoint(meta: dict, experiment: dict, checkpoint: str) -> None:
    """The checkpoint must be the experiment's: same pairs and space."""
    if "pairs" in meta and sorted(meta["pairs"]) != sorted(experiment["pairs"]):
        raise ConfigError(f"{checkpoint}: trained with pairs {meta['pairs']} but the experiment has "
                          f"{experiment['pairs']}")
    if "space" in meta and meta["space"] != experiment["space"]:
        raise ConfigError(f"{checkpoint}: trained with space {meta['space']!r} but the experiment has "
                          f"{experiment['space']!r}")


def result_record(args: argparse.Namespace, settings: dict, scoring, outcome, note: str) -> dict[str, Any]:
    experiment = settings["experiment"]
    record = {
        "experiment": args.experiment, "seed": experiment["training"]["seed"], "pairs": list(experiment["pairs"]),
        "space": experiment["space"], "benchmark": args.benchmark, "task": settings["task"],
        "protocol": PROTOCOLS.get(settings["task"], ""),
        "convention": settings["convention"],
        "metrics": outcome.metrics if outcome else {},
        "metrics_by_convention": outcome.by_convention if outcome else {},
        "n_queries": outcome.n_queries if outcome else None,
        "n_missing": outcome.n_missing if outcome else None,
        "missing_reasons": outcome.missing_reasons if outcome else {},
        "n_excluded": outcome.extra.get("n_excluded", 0) if outcome else None,
        "excluded_by": (settings.get("exclude") or {}).get("corpus"),
        "scoring": scoring.label, "tie_policy": settings["tie_policy"], "note": note,
        "checkpoint": str(args.checkpoint),
    }
    if outcome and outcome.extra:
        record.update(outcome.extra)
    return record


def run(args: argparse.Namespace, settings: Mapping[str, Any]) -> dict[str, Any]:
    from mcnflow.corpora import CorpusError
    from mcnflow.model.mcn import load_model  # torch-heavy imports only when evaluating
    from mcnflow.evaluation.crosstask import CrossTaskError
    from mcnflow.evaluation.core import EvalFeatures
    from mcnflow.features.text_index import WordSourceMismatch

    task = settings["task"]
    if task not in TASKS:
        raise ConfigError(f"task {task!r}; allowed values: {', '.join(TASKS)}")
    experiment = settings["experiment"]
    training = experiment["training"]
    scoring = choose_scoring(experiment["pairs"], experiment["space"])
    device = resolve_device(training["device"], "training.device")
    model, meta = load_model(args.checkpoint, map_location=device)
    check_checkpoint(meta, experiment, args.checkpoint)
    if not scoring.scored:
        log.info("%s: %s; %s is not scored", args.experiment, scoring.note, args.benchmark)
        return result_record(args, settings, scoring, None, scoring.note)
    check_model(model, scoring)

    # the streams the scoring's clip modalities read (training.video_features selects the video streams)
    needed = read_streams(scoring.clip_modalities, training["video_features"])
    absent = [name for name in needed if not getattr(args, name)]
    if absent:
        raise ConfigError(f"scoring {scoring.label} needs " + " and ".join(f"--{name}" for name in absent)
                          + " feature shards")
    if task not in STEP_TASKS and not args.text:
        raise ConfigError("--text feature shards are needed: they hold the query sentences")
    fingerprint = (meta.get("word2vec") or {}).get("fingerprint", "")
    try:
        features = EvalFeatures.open(shards={"text": args.text, **{name: getattr(args, name) for name in needed}},
                                     word2vec=args.word2vec, max_words=training["max_words"],
                                     # evaluation clips may be longer than training's (MCN: 5120 frames)
                                     audio_frames=settings.get("audio_frames") or training["audio_frames"],
                                     word_dim=training["word_dim"], fingerprint=fingerprint,
                                     video_features=training["video_features"])
    except WordSourceMismatch as exc:
        raise ConfigError(f"{args.checkpoint}: {exc}") from exc
    try:
        excluded = excluded_ids(settings)
        if task in STEP_TASKS:
            outcome = _evaluate_steps(settings, model, scoring, features, excluded, device)
        else:
            outcome = _evaluate_corpus(args, settings, model, scoring, features, excluded, device)
    except (CorpusError, CrossTaskError) as exc:  # a benchmark file is missing or malformed
        raise ConfigError(str(exc)) from exc
    finally:
        features.close()
    return result_record(args, settings, scoring, outcome, outcome_note(settings, outcome, meta, scoring))


def outcome_note(settings: Mapping[str, Any], outcome, meta: Mapping[str, Any] | None = None,
                 scoring=None) -> str:
    parts = []
    if meta is not None and scoring is not None:
        # training saw a scored pair's MMS end at chance (training.trainer.pairs_at_chance)
        stuck = [term.pair for term in scoring.terms if term.pair in meta.get("mms_at_chance", ())]
        if stuck:
            parts.append(f"{', '.join(f'mms_{p}' for p in stuck)} ended training at chance (did not learn)")
    n_excluded = outcome.extra.get("n_excluded", 0)
    if n_excluded:
        what = "videos" if settings["task"] in STEP_TASKS else "clips"
        parts.append(f"{n_excluded} {what} of videos in {settings['exclude']['corpus']} excluded")
    if outcome.n_missing:
        parts.append(f"{outcome.n_missing} of {outcome.n_queries} queries had no scorable clip: left out "
                     "(convention present), failures (convention failures)")
    return "; ".join(parts)


def excluded_ids(settings: Mapping[str, Any]) -> set[str]:
    """The video ids of the corpus ``settings['exclude']`` names (empty when null)."""
    from mcnflow.corpora import open_corpus

    exclude = settings.get("exclude")
    if not exclude:
        return set()
    ids = set(open_corpus(exclude["corpus"], dict(exclude["spec"])).video_ids())
    log.info("%s: leaving out the videos of %s (%d ids)", settings["benchmark"], exclude["corpus"], len(ids))
    return ids


def _evaluate_steps(settings, model, scoring, features, excluded, device):
    from mcnflow.corpora import open_corpus
    from mcnflow.evaluation.crosstask import evaluate_steps

    task, corpus, spec = settings["task"], settings["corpus"], dict(settings["spec"])
    if spec["reader"] != task:
        raise ConfigError(f"benchmark {settings['benchmark']!r}: task {task} needs a corpus with reader {task}, "
                          f"not {corpus!r} (reader {spec['reader']!r})")
    files = open_corpus(corpus, spec).evaluation_files()
    return evaluate_steps(model, scoring, task, files, features, settings["batch_size"], device,
                          settings=settings["crosstask"], convention=settings["convention"], excluded=excluded)


def _evaluate_corpus(args, settings, model, scoring, features, excluded, device):
    from mcnflow.corpora import open_corpus
    from mcnflow.manifest import read_manifest
    from mcnflow.evaluation.localization import evaluate_localization
    from mcnflow.evaluation.core import align_queries, evaluate_retrieval, exclude_videos

    corpus = settings["corpus"]
    segments, n_excluded = exclude_videos(open_corpus(corpus, dict(settings["spec"])).segments(), excluded)
    if n_excluded:
        log.info("%s: %d clips of videos in %s excluded, %d kept", settings["benchmark"], n_excluded,
                 settings["exclude"]["corpus"], len(segments))
    if not segments:
        raise ConfigError(f"corpus {corpus!r} has no evaluation segments"
                          + (f" outside {settings['exclude']['corpus']}" if n_excluded else ""))
    known = {row["video_id"] for row in read_manifest(args.manifest)} if args.manifest else None
    queries = align_queries(segments, features, scoring.clip_modalities, known)
    convention = settings["convention"]
    if settings["task"] == "retrieval":
        outcome = evaluate_retrieval(model, scoring, queries, features, settings["tie_policy"],
                                     settings["batch_size"], device, convention=convention)
    else:
        outcome = evaluate_localization(model, scoring, queries, features, settings["localization"],
                                        settings["batch_size"], device, convention=convention)
    outcome.extra["n_excluded"] = n_excluded
    return outcome


def main(args: argparse.Namespace) -> int:
    settings = settings_from_args(args, "evaluate", experiment=args.experiment, seed=args.seed,
                                  benchmark=args.benchmark)
    if settings["experiment"]["training"]["seed"] != args.seed:
        raise ConfigError(f"--seed {args.seed} but the settings are for seed "
                          f"{settings['experiment']['training']['seed']}")
    if settings["benchmark"] != args.benchmark:
        raise ConfigError(f"--benchmark {args.benchmark!r} but the settings are for {settings['benchmark']!r}")
    record = run(args, settings)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(output) as handle:
        json.dump(record, handle, indent=2, sort_keys=False)
        handle.write("\n")
    shown = ", ".join(f"{k} {v:.2f}" for k, v in record["metrics"].items()) or record["note"]
    print(f"{args.experiment} on {args.benchmark} ({record['scoring']}, {record['convention']}): {shown}")
    print(f"wrote {output}")
    return 0
