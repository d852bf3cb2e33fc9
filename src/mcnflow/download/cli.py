"""``mcnflow download``: fetch one shard of videos with yt-dlp (or take local files); one ledger row each.

    mcnflow download --manifest results/manifest/howto100m.tsv --shard 00003 --id-kind youtube \\
        --ledger results/download/howto100m/shard-00003.tsv \\
        --videos-dir results/download/howto100m/videos --config config.yaml

Each video of the shard ends as one ledger row (ledger.DOWNLOAD_COLUMNS) whose status says what
happened (mcnflow.core.status.DownloadStatus; docs/ledgers.md). The package's modules: fetch.py
(one video), classify.py (yt-dlp's messages), policy.py (retries, cool-downs, systemic stops),
canary.py (a block or deletions?), resume.py (what earlier runs settled), survival.py (the
corpus's summary). Exit codes: 0 every video has a row (some may be retryable), 2 bad input or
settings, 3 the shard stopped for a systemic failure (fix it, then rerun: finished videos are kept).

Once the final ledger exists Snakemake considers the shard done (even with retryable rows). To
retry them run ``snakemake --forcerun download_shard`` (or rerun this command by hand on the shard);
the rule declares its ledger ``update()``, so the forced rerun still sees it. Every row that did not
name the video is asked again, until its ``download.retry_budget`` is spent (``given_up``). After a
yt-dlp upgrade, ``--retry error,given_up`` (or config ``download.retry.statuses``) also asks the
settled rows in those statuses that an older yt-dlp answered.

With ``download.routes`` (egress routes: a proxy and/or a source address each) the shard uses route
``shard % len(routes)``: a stable rule, so a shard's requests always leave by the same address.
"""

from __future__ import annotations

import argparse
import collections
import logging
from pathlib import Path
from typing import Mapping

from mcnflow.core.config import ConfigError, add_settings_arguments, settings_from_args
from mcnflow.core.ids import ID_KINDS, InvalidVideoId, validate_video_id
from mcnflow.core.status import DOWNLOAD_PERMANENT, DownloadStatus as S, values
from mcnflow.download.canary import Canary, RunWatch, required_run
from mcnflow.download.fetch import YTDLP_VERSION, Fetcher, Video, is_url, ledger_key, po_token_plugin
from mcnflow.download.policy import ShardPolicy
from mcnflow.download.resume import RetryRequest, ShardJournal, settle_known
from mcnflow.manifest import ManifestError, read_manifest

log = logging.getLogger(__name__)

EXIT_BAD_INPUT = 2  # the manifest cannot be read

# The keys of config.yaml's `download:` section this stage reads (all of them are required).
SETTING_KEYS = (
    "format", "format_sort", "max_height", "merge_output_format", "captions", "caption_languages",
    "cookies_file", "proxy", "sleep_requests", "sleep_interval", "max_sleep_interval", "sleep_subtitles",
    "socket_timeout", "attempts", "backoff_initial", "backoff_max", "max_duration", "rate_limit_burst",
    "cooldown", "max_cooldowns", "format_unavailable_limit", "player_clients", "embed_fallback_clients",
    "extractor_args", "js_runtime", "js_runtime_path", "remote_components", "po_token_provider",
    "po_token_base_url", "canary", "http_retries", "fragment_retries", "extractor_retries", "fallback_format",
    "retry_budget", "retry", "routes", "source_address",
)
CANARY_KEYS = ("videos", "rule", "threshold", "expected_survival", "prior_weight", "failure_streak",
               "failure_window", "failure_rate")
RETRY_STATUSES = tuple(status for status in values(S) if status != S.OK)  # an ok row is never asked again
CANARY_RULES = ("improbable_run", "run_length")


def shard_number(text: str) -> int:
    """``--shard``: "00003" and "3" name the same shard."""
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"shard must be a number such as 00003, got {text!r}") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"shard must not be negative, got {text!r}")
    return number


def check_settings(settings: Mapping) -> Mapping:
    """What the schema cannot say (or a hand-made --settings may lack); errors name the key."""
    missing = [key for key in SETTING_KEYS if key not in settings]
    if missing:
        raise ConfigError(f"download settings lack key(s) {', '.join(missing)} (see config.yaml's `download:`)")
    if settings["attempts"] < 1:
        raise ConfigError(f"config key 'download.attempts': {settings['attempts']!r} violates minimum 1")
    if settings["max_sleep_interval"] < settings["sleep_interval"]:
        raise ConfigError(f"config key 'download.max_sleep_interval': {settings['max_sleep_interval']!r} "
                          f"is below download.sleep_interval {settings['sleep_interval']!r}")
    canary = settings["canary"]
    missing = [key for key in CANARY_KEYS if key not in canary]
    if missing:
        raise ConfigError(f"config key 'download.canary' lacks key(s) {', '.join(missing)}")
    if canary["rule"] not in CANARY_RULES:
        raise ConfigError(f"config key 'download.canary.rule': {canary['rule']!r} is not allowed; "
                          f"allowed values: {', '.join(map(repr, CANARY_RULES))}")
    threshold = canary["threshold"]
    if canary["rule"] == "improbable_run" and not 0 < threshold < 1:
        raise ConfigError(f"config key 'download.canary.threshold': {threshold!r} must be a probability "
                          "between 0 and 1 (exclusive) with rule improbable_run")
    if canary["rule"] == "run_length" and (threshold < 2 or threshold != int(threshold)):
        raise ConfigError(f"config key 'download.canary.threshold': {threshold!r} must be a whole number >= 2 "
                          "with rule run_length")
    for kind, ids in canary["videos"].items():
        if kind not in ID_KINDS:
            raise ConfigError(f"config key 'download.canary.videos': {kind!r} is not allowed; "
                              f"allowed values: {', '.join(map(repr, sorted(ID_KINDS)))}")
        for canary_id in ids:
            try:
                validate_video_id(canary_id, kind)
            except InvalidVideoId as exc:
                raise ConfigError(f"config key 'download.canary.videos.{kind}': {exc}") from None
    for status in settings["retry"]["statuses"]:
        if status not in RETRY_STATUSES:
            raise ConfigError(f"config key 'download.retry.statuses': {status!r} is not allowed; "
                              f"allowed values: {', '.join(map(repr, RETRY_STATUSES))}")
    runtime_path = settings["js_runtime_path"]
    if runtime_path and not Path(runtime_path).is_file():
        raise ConfigError(f"config key 'download.js_runtime_path': {runtime_path!r} is not a file")
    return settings


def read_videos(manifest: str, shard: int) -> list[Video]:
    """The shard's rows of the manifest in manifest order (an id listed twice is taken once)."""
    try:
        rows = read_manifest(manifest, shard)
    except FileNotFoundError:
        raise ManifestError(f"manifest {manifest} does not exist") from None
    videos: dict[str, Video] = {}
    for row in rows:
        video_id = row.get("video_id") or ""
        if ledger_key(video_id) in videos:
            log.warning("manifest %s: %r is listed again; its first row is used", manifest, video_id)
            continue
        videos[ledger_key(video_id)] = Video(video_id, (row.get("source") or "").strip())
    return list(videos.values())


def route_settings(settings: Mapping, shard: int) -> tuple[dict, str]:
    """The settings with this shard's egress route applied (``shard % len(routes)``), and its name."""
    routes = settings["routes"]
    if not routes:
        return dict(settings), "the machine's own address" + (f" via {settings['proxy']}" if settings["proxy"] else "")
    number = shard % len(routes)
    route = routes[number]
    applied = {**settings, "proxy": route.get("proxy") or None, "source_address": route.get("source_address") or None}
    via = ", ".join(f"{key} {value}" for key, value in (("proxy", applied["proxy"]),
                                                        ("source address", applied["source_address"])) if value)
    return applied, f"route {number} of {len(routes)} ({via or 'direct'})"


def retry_request(settings: Mapping, args: argparse.Namespace) -> RetryRequest:
    """--retry / --retry-any-version on the command line, else config ``download.retry``."""
    if args.retry is not None:
        statuses = [s.strip() for s in args.retry.split(",") if s.strip()]
        bad = [s for s in statuses if s not in RETRY_STATUSES]
        if bad:
            raise ConfigError(f"--retry: {', '.join(map(repr, bad))} not allowed; allowed values: "
                              f"{', '.join(map(repr, RETRY_STATUSES))}")
        return RetryRequest(frozenset(statuses), bool(args.retry_any_version))
    config = settings["retry"]
    return RetryRequest(frozenset(config["statuses"]), bool(args.retry_any_version or config["any_version"]))


def log_setup(settings: Mapping, id_kind: str) -> None:
    """Say once what this shard runs with at YouTube scale (PO tokens, JS runtime, canaries)."""
    plugin = po_token_plugin()
    if settings["po_token_provider"] == "never":
        log.info("PO tokens: never fetched (download.po_token_provider never)")
    elif plugin:
        log.info("PO tokens: provider plugin bgutil-ytdlp-pot-provider %s is installed; yt-dlp uses it%s", plugin,
                 f" at {settings['po_token_base_url']}" if settings["po_token_base_url"] else "")
    else:
        log.info("PO tokens: no provider plugin installed (optional: pip install bgutil-ytdlp-pot-provider)")
        if settings["po_token_base_url"]:
            log.warning("download.po_token_base_url is set but bgutil-ytdlp-pot-provider is not installed")
    log.info("JavaScript runtime: %s%s", settings["js_runtime"],
             f" at {settings['js_runtime_path']}" if settings["js_runtime_path"] else " (found on PATH)")
    canary = settings["canary"]
    ids = list(canary["videos"].get(id_kind, ()))
    if ids:
        log.info("canary videos for id kind %s: %s (asked after %d gone answers in a row at survival %.2f)",
                 id_kind, ", ".join(ids), required_run(canary, canary["expected_survival"]),
                 canary["expected_survival"])
    else:
        log.info("no canary videos for id kind %s (download.canary.videos): runs of gone answers are not checked",
                 id_kind)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", required=True, help="manifest TSV (video_id, shard, source)")
    parser.add_argument("--shard", required=True, type=shard_number, help="shard number, e.g. 00003")
    parser.add_argument("--id-kind", required=True, choices=sorted(ID_KINDS), help="how video ids are validated")
    parser.add_argument("--ledger", required=True, help="the shard's download ledger (TSV) to write")
    parser.add_argument("--videos-dir", required=True, help="where downloaded videos go (shared by all shards)")
    parser.add_argument("--retry", metavar="STATUS[,STATUS]",
                        help="also ask settled rows in these statuses again (e.g. error,given_up after a yt-dlp "
                             "upgrade); only rows an older yt-dlp answered unless --retry-any-version. "
                             "Default: config download.retry")
    parser.add_argument("--retry-any-version", action="store_true",
                        help="with --retry: rows answered by any yt-dlp version, the running one included")
    add_settings_arguments(parser)


def main(args: argparse.Namespace) -> int:
    settings = check_settings(settings_from_args(args, "download"))
    retry = retry_request(settings, args)
    try:
        videos = read_videos(args.manifest, args.shard)
    except ManifestError as exc:
        log.error("%s", exc)
        return EXIT_BAD_INPUT
    shard_name = f"{args.shard:05d}"
    videos_dir = Path(args.videos_dir)
    settings, route = route_settings(settings, args.shard)
    log.info("shard %s: %d video(s) from %s; yt-dlp %s; egress: %s", shard_name, len(videos), args.manifest,
             YTDLP_VERSION, route)
    if retry.statuses:
        log.info("asking settled %s rows again%s", ",".join(sorted(retry.statuses)),
                 "" if retry.any_version else f" when an older yt-dlp than {YTDLP_VERSION} answered them")
    if any(is_url(video.source) for video in videos):
        log_setup(settings, args.id_kind)
    videos_dir.mkdir(parents=True, exist_ok=True)

    journal = ShardJournal(Path(args.ledger), len(videos), shard_name, retry)
    try:
        to_fetch, kept = settle_known(videos, journal, id_kind=args.id_kind, settings=settings,
                                      videos_dir=videos_dir)
        fetcher = Fetcher(settings, videos_dir)
        watch = RunWatch(settings["canary"], alive=sum(row["status"] in (S.OK, S.SKIPPED) for row in kept),
                         gone=sum(row["status"] in DOWNLOAD_PERMANENT for row in kept))
        canary = Canary(list(settings["canary"]["videos"].get(args.id_kind, ())), fetcher.check)
        policy = ShardPolicy(settings, fetcher, journal.record, shard_name, watch, canary,
                             history=journal.run.earlier)
        code = policy.run(to_fetch)
    finally:
        journal.close()
    if code != 0:
        return code
    rows = journal.finish([ledger_key(v.video_id) for v in videos])
    counts = collections.Counter(row["status"] for row in rows)
    log.info("shard %s: %d video(s): %s%s", shard_name, len(rows),
             ", ".join(f"{status} {counts[status]}" for status in values(S) if counts[status]) or "none",
             f"; canary asked {canary.asked} time(s)" if canary.asked else "")
    return 0
