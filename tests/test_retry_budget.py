"""Issue 19: no live video lost. Only answers that name the video are final; every other failure is
asked again by later runs until a visible budget ends in ``given_up``; verdicts are stored; a rerun
after a yt-dlp upgrade asks exactly the rows an older yt-dlp failed; any long streak asks the canary.

Real yt-dlp against the local HTTP server (tests/http_fixtures.py); the policy-only tests feed
ShardPolicy recorded yt-dlp answers through a scripted fetcher.
"""

import datetime

from mcnflow.core.ledger import DOWNLOAD_COLUMNS, journal_path, read_ledger, write_ledger
from mcnflow.download.canary import RunWatch
from mcnflow.download.classify import classify
from mcnflow.download.fetch import YTDLP_VERSION, Attempt, Fetcher, Video, make_row, ytdlp_params, YtDlpLog
from mcnflow.download.policy import EXIT_SYSTEMIC, ShardPolicy
from mcnflow.download.resume import RetryRequest, is_settled

from http_fixtures import media_root, media_server  # noqa: F401 (pytest fixtures)
from test_canary import CANARY, canary_settings
from test_download import Shard, base_settings, clips, serve  # noqa: F401 (clips is a fixture)

UNKNOWN_TEXT = "The page needs to be reloaded."  # a real yt-dlp answer no table row knows
A, B, C, D = "clipA-00001", "clipB-00002", "clipC-00003", "clipD-00004"


def unknown_failure(media_server, video_id):
    media_server.behave(f"{video_id}.mp4", status=400, reason=UNKNOWN_TEXT)


def test_an_unknown_answer_is_retried_by_later_runs_until_the_budget_ends_in_given_up(tmp_path, clips,
                                                                                     media_server, media_root):
    serve(media_root, clips, **{f"{A}.mp4": "short"})
    unknown_failure(media_server, B)
    shard = Shard(tmp_path, [(A, "0", media_server.url(f"{A}.mp4")), (B, "0", media_server.url(f"{B}.mp4"))])
    settings = base_settings(retry_budget={"attempts": 3, "min_days": 1})
    for run in (1, 2, 3):
        assert shard.run(settings) == 0
        row = shard.rows()[B]
        assert (row["status"], row["verdict"], row["attempts"]) == ("error", "yt-dlp", str(run)), row
        assert UNKNOWN_TEXT in row["message"] and row["ytdlp_version"] == YTDLP_VERSION
    # three attempts within an hour: the span protects the budget
    assert len(media_server.hits(f"{B}.mp4", method="GET")) >= 3 and shard.rows()[A]["attempts"] == "1"
    # a month later (the first attempt moved back), the budget is spent: given up, never "gone"
    rows = read_ledger(shard.ledger)
    month_ago = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=30)
    for row in rows:
        row["first_attempt"] = month_ago.strftime("%Y-%m-%dT%H:%M:%SZ")
    write_ledger(shard.ledger, rows, DOWNLOAD_COLUMNS)
    assert shard.run(settings) == 0
    row = shard.rows()[B]
    assert row["status"] == "given_up" and row["attempts"] == "4" and "given up after 4 attempts" in row["message"]
    assert UNKNOWN_TEXT in row["message"]
    # settled now: not asked again
    media_server.clear_log()
    assert shard.run(settings) == 0
    assert media_server.requests == []


def test_a_rerun_after_a_ytdlp_upgrade_asks_exactly_the_older_error_and_given_up_rows(tmp_path, clips,
                                                                                    media_server, media_root):
    videos = {f"clip{c}-0000{i}": None for i, c in enumerate("ABCDEF", start=1)}
    ids = list(videos)
    serve(media_root, clips, **{f"{v}.mp4": "short" for v in ids})
    shard = Shard(tmp_path, [(v, "0", media_server.url(f"{v}.mp4")) for v in ids])
    # a finished ledger: two rows per status, one written by an older yt-dlp, one by this one
    old, new = "2025.01.15", YTDLP_VERSION
    layout = {ids[0]: ("error", old), ids[1]: ("error", new), ids[2]: ("given_up", old), ids[3]: ("given_up", new),
              ids[4]: ("unavailable", old), ids[5]: ("unavailable", new)}
    rows = []
    for video_id, (status, version) in layout.items():
        verdict = "video" if status == "unavailable" else "yt-dlp"
        row = make_row(video_id, status, "an old answer", attempts=12, verdict=verdict)
        row.update(first_attempt="2026-01-01T00:00:00Z", last_attempt="2026-03-01T00:00:00Z", ytdlp_version=version)
        rows.append(row)
    shard.ledger.parent.mkdir(parents=True)
    write_ledger(shard.ledger, rows, DOWNLOAD_COLUMNS)
    settings = base_settings(retry={"statuses": [], "any_version": False})
    from mcnflow import cli
    assert cli.main([*shard.argv(settings), "--retry", "error,given_up"]) == 0
    asked = {v for v in ids if media_server.hits(f"{v}.mp4")}
    # the error rows are retryable anyway; of the settled ones only the given_up row of the older yt-dlp
    assert asked == {ids[0], ids[1], ids[2]}
    after = shard.rows()
    assert after[ids[2]]["status"] == "ok" and after[ids[3]]["status"] == "given_up"
    assert after[ids[4]]["status"] == after[ids[5]]["status"] == "unavailable"
    # the config key does the same (the workflow passes it)
    assert RetryRequest(frozenset({"unavailable"})).wants(after[ids[4]])
    assert not RetryRequest(frozenset({"unavailable"})).wants(after[ids[5]])
    assert RetryRequest(frozenset({"unavailable"}), any_version=True).wants(after[ids[5]])


def test_a_bad_retry_status_names_the_allowed_values(tmp_path, capsys):
    from mcnflow import cli
    shard = Shard(tmp_path, [])
    assert cli.main([*shard.argv(base_settings()), "--retry", "ok"]) == 2
    assert "--retry: 'ok' not allowed; allowed values: 'unavailable'" in capsys.readouterr().err


def test_every_video_failing_with_one_unknown_error_stops_at_the_canary_with_every_row_retryable(
        tmp_path, clips, media_server, media_root):
    media_server.default_status, media_server.default_reason = 400, UNKNOWN_TEXT  # yt-dlp broken for everything
    ids = [f"clip{i:03d}-000" for i in range(25)]
    shard = Shard(tmp_path, [(v, "0", media_server.url(f"{v}.mp4")) for v in ids])
    assert shard.run(canary_settings()) == EXIT_SYSTEMIC
    journal = {}
    for line in journal_path(shard.ledger).read_text().splitlines():
        cells = line.split("\t")
        journal[cells[0]] = dict(zip(DOWNLOAD_COLUMNS, cells))
    assert len(journal) == 20  # the streak of 20 asked the canary; the canary failed too
    assert all(is_settled(row) is False for row in journal.values())
    assert {row["status"] for row in journal.values()} == {"error"}
    assert media_server.hits(f"{CANARY}.mp4")
    assert not any(media_server.hits(f"{v}.mp4") for v in ids[20:])


def test_a_streak_of_errors_resumes_when_the_canary_answers(tmp_path, clips, media_server, media_root, caplog):
    serve(media_root, clips, **{f"{CANARY}.mp4": "short"})
    ids = [f"clip{i:03d}-000" for i in range(6)]
    for v in ids:
        unknown_failure(media_server, v)
    shard = Shard(tmp_path, [(v, "0", media_server.url(f"{v}.mp4")) for v in ids])
    with caplog.at_level("WARNING", logger="mcnflow.download"):
        assert shard.run(canary_settings(canary={"failure_streak": 3})) == 0
    assert {row["status"] for row in shard.rows().values()} == {"error"}
    assert sum("3 failures in a row; asking a canary" in r.getMessage() for r in caplog.records) == 2


def test_a_stored_verdict_is_read_not_rederived():
    # the message alone reads as a deletion; the verdict stored at run time said the network: ask again
    row = {"status": "unavailable", "verdict": "network", "message": "Video unavailable", "ytdlp_version": ""}
    assert not is_settled(row)
    assert is_settled({**row, "verdict": "video"})
    # a row from before verdicts were stored is judged by today's table: a bare 404 is not about the video
    assert not is_settled({"status": "unavailable", "message": "HTTP Error 404: Not Found"})
    assert is_settled({"status": "removed", "message": "This video has been removed by the uploader"})


def test_a_verdict_survives_a_rerun(tmp_path, clips, media_server, media_root):
    media_server.behave(f"{A}.mp4", status=404, reason="Video unavailable. This video is private")
    shard = Shard(tmp_path, [(A, "0", media_server.url(f"{A}.mp4"))])
    assert shard.run(base_settings()) == 0
    row = shard.rows()[A]
    assert (row["status"], row["verdict"]) == ("private", "video")
    media_server.clear_log()
    assert shard.run(base_settings()) == 0
    assert media_server.requests == [] and shard.rows()[A]["verdict"] == "video"
    # change only the stored verdict: the rerun follows it, whatever the message says
    rows = read_ledger(shard.ledger)
    rows[0]["verdict"] = "block"
    write_ledger(shard.ledger, rows, DOWNLOAD_COLUMNS)
    assert shard.run(base_settings()) == 0
    assert media_server.hits(f"{A}.mp4")


# --- the policy on recorded answers -------------------------------------------------------------------

class ScriptedFetcher:
    """Answers each video with the next of its recorded yt-dlp failures (then succeeds)."""

    def __init__(self, answers: dict[str, list[tuple[str, list[str]]]]):
        self.answers = {video: list(items) for video, items in answers.items()}
        self.calls: list[str] = []

    def fetch(self, video: Video) -> Attempt:
        self.calls.append(video.video_id)
        queue = self.answers.get(video.video_id) or []
        if not queue:
            return Attempt(row=make_row(video.video_id, "ok", size=1, verdict=""))
        message, warnings = queue.pop(0)
        return Attempt(verdict=classify(message, None, warnings), message=message)


def run_policy(fetcher, videos, **overrides):
    settings = canary_settings(**overrides)
    rows = []
    policy = ShardPolicy(settings, fetcher, rows.append, "00000", RunWatch(settings["canary"]), None)
    return policy, policy.run([Video(v, f"https://www.youtube.com/watch?v={v}") for v in videos]), rows


def test_a_429_warning_before_a_broken_player_response_starts_a_cooldown(caplog):
    broken = "[youtube] x: Failed to extract any player response; please report this issue"
    warned = ["[youtube] x: HTTP Error 429: Too Many Requests"]
    fetcher = ScriptedFetcher({v: [(broken, warned)] for v in (A, B, C)})
    with caplog.at_level("WARNING", logger="mcnflow.download"):
        policy, code, rows = run_policy(fetcher, [A, B, C, D], rate_limit_burst=3, max_cooldowns=1, cooldown=0)
    assert code == 0 and policy.cooldowns == 1  # not exit 3: YouTube limited us, the extractor is fine
    assert fetcher.calls == [A, B, C, A, B, C, D]
    assert [r["status"] for r in rows] == ["rate_limited"] * 3 + ["ok"] * 4
    assert {r["verdict"] for r in rows[:3]} == {"block"}
    # without the warning the same text is a broken extractor: the shard stops
    _, code, _ = run_policy(ScriptedFetcher({A: [(broken, [])]}), [A, B])
    assert code == EXIT_SYSTEMIC


def test_rate_limits_do_not_spend_the_budget():
    fetcher = ScriptedFetcher({A: [("HTTP Error 429: Too Many Requests", [])]})
    policy, _, rows = run_policy(fetcher, [A], retry_budget={"attempts": 1, "min_days": 0}, rate_limit_burst=5)
    assert rows[0]["status"] == "rate_limited" and rows[0]["attempts"] == 1
    fetcher = ScriptedFetcher({A: [(UNKNOWN_TEXT, [])]})
    _, _, rows = run_policy(fetcher, [A], retry_budget={"attempts": 1, "min_days": 0})
    assert rows[0]["status"] == "given_up"


def test_a_postprocessing_failure_is_tried_once_more_with_the_fallback_format(tmp_path):
    class PostprocessingFails(Fetcher):
        def __init__(self, settings, videos_dir):
            super().__init__(settings, videos_dir)
            self.formats = []

        def attempt(self, video, captions, player_clients=None, format_=None):
            self.formats.append(format_)
            if format_ is None:
                message = "Postprocessing: Conversion failed! [aac @ 0x1] Invalid data found when processing input"
                return Attempt(verdict=classify(message), message=message)
            return Attempt(row=make_row(video.video_id, "ok", size=1))

    fetcher = PostprocessingFails(base_settings(), tmp_path)
    result = fetcher.fetch(Video(A, "https://example.invalid/a"))
    assert fetcher.formats == [None, "b[height<={max_height}]/b"]
    assert result.row["status"] == "ok" and "Invalid data found when processing input" in result.row["message"]


def test_yt_dlp_keeps_its_own_retries_and_a_route_per_shard(tmp_path):
    from mcnflow.download.cli import route_settings
    settings = base_settings(routes=[{"proxy": "socks5://a:1080"}, {"source_address": "10.0.0.2"}])
    first, name = route_settings(settings, 4)
    second, _ = route_settings(settings, 7)
    assert (first["proxy"], first["source_address"]) == ("socks5://a:1080", None) and "route 0 of 2" in name
    assert (second["proxy"], second["source_address"]) == (None, "10.0.0.2")
    params = ytdlp_params(second, tmp_path, YtDlpLog(A), None, captions=False)
    assert params["source_address"] == "10.0.0.2" and "proxy" not in params
    assert (params["retries"], params["fragment_retries"], params["extractor_retries"]) == (10, 10, 3)
    single, name = route_settings(base_settings(), 4)
    assert single["proxy"] is None and "own address" in name


def test_each_route_is_a_scheduling_resource_of_its_own():
    from mcnflow.core.config import load_config
    from mcnflow.core.plan import Plan
    from conftest import REPO
    config = load_config([REPO / "config.yaml"])
    assert Plan(config).route_limits() == {"route_0": 3} and Plan(config).route_resource(7) == "route_0"
    config["download"]["routes"] = [{"proxy": "socks5://a:1"}, {"proxy": "socks5://b:1"}, {"source_address": "10.0.0.3"}]
    plan = Plan(config)
    assert plan.route_limits() == {"route_0": 3, "route_1": 3, "route_2": 3}
    assert [plan.route_resource(shard) for shard in ("00000", "00004", "00008")] == ["route_0", "route_1", "route_2"]
    # the download CLI picks the same route for the same shard
    from mcnflow.download.cli import route_settings
    applied, _ = route_settings(config["download"], 8)
    assert applied["source_address"] == "10.0.0.3"
    # routes are operational: they reach the download settings, but do not rerun a finished download
    from mcnflow.core.plan import settings_digest
    before = settings_digest("download", plan.settings("download"))
    config["download"].update(routes=[], jobs_per_route=5)
    assert settings_digest("download", Plan(config).settings("download")) == before
    config["download"]["retry"] = {"statuses": ["error"], "any_version": False}
    assert settings_digest("download", Plan(config).settings("download")) != before
