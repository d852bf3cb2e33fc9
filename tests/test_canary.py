"""A block or deletions? The canary, through the real yt-dlp against a local HTTP server (no mocks).

The server answers "Video unavailable. This content isn't available." (HTTP 404 with that reason
phrase, which yt-dlp's generic extractor reports): for every path while the IP is "blocked", or
only for the videos that were really deleted while a known-good canary video still plays.
"""

import csv

import pytest

from mcnflow import cli
from mcnflow.core.status import DOWNLOAD_PERMANENT
from mcnflow.download.canary import RunWatch, required_run
from mcnflow.download.policy import NOT_ATTEMPTED_BLOCKED

from http_fixtures import media_root, media_server  # noqa: F401 (pytest fixtures)
from test_download import Shard, base_settings, clips, serve  # noqa: F401 (clips is a fixture)

BLOCKED_TEXT = "Video unavailable. This content isn't available."
REMOVED_TEXT = "Video unavailable. This video has been removed by the uploader"  # names the video: final
CANARY = "canaryVideo"  # a valid 11-character YouTube id
VIDEOS = [f"clip{c}-0000{i}" for i, c in enumerate("ABCDEFGH", start=1)]


def canary_settings(**overrides) -> dict:
    canary = {"videos": {"youtube": [CANARY]}, "rule": "improbable_run", "threshold": 0.001,
              "expected_survival": 0.75, "prior_weight": 20, "failure_streak": 20, "failure_window": 100,
              "failure_rate": 0.9}
    canary.update(overrides.pop("canary", {}))
    return base_settings(canary=canary, **overrides)


def shard_of(tmp_path, media_server, videos=VIDEOS) -> Shard:
    return Shard(tmp_path, [(v, "0", media_server.url(f"{v}.mp4")) for v in videos])


def test_block_asks_the_canary_leaves_nothing_permanent_and_a_rerun_fetches(tmp_path, clips, media_server,
                                                                          media_root, capsys):
    serve(media_root, clips, **{f"{v}.mp4": "short" for v in [*VIDEOS, CANARY]})
    media_server.default_status, media_server.default_reason = 404, BLOCKED_TEXT  # the IP is blocked
    shard = shard_of(tmp_path, media_server)
    assert shard.run(canary_settings(max_cooldowns=0)) == 0

    rows = shard.rows()
    assert media_server.hits(f"{CANARY}.mp4"), "the canary was not asked"
    assert not [v for v, r in rows.items() if r["status"] in DOWNLOAD_PERMANENT]
    assert {r["status"] for r in rows.values()} == {"blocked"}
    asked = VIDEOS[:5]  # at survival 0.75 and threshold 0.001: 0.25^5 < 0.001
    for v in asked:
        assert f"canary {CANARY} failed too" in rows[v]["message"] and BLOCKED_TEXT in rows[v]["message"]
        assert rows[v]["attempts"] == "1"
    for v in VIDEOS[5:]:  # the job stopped contacting the server
        assert rows[v]["message"] == NOT_ATTEMPTED_BLOCKED and rows[v]["attempts"] == "0"
        assert media_server.hits(f"{v}.mp4") == []

    # the survival summary reports the block, and which videos were never tried
    out = tmp_path / "survival.tsv"
    assert cli.main(["survival", "--ledgers", str(shard.ledger), "--corpus", "howto100m", "--output", str(out)]) == 0
    with open(out, newline="") as handle:
        table = {r["status"]: r for r in csv.DictReader(handle, delimiter="\t")}
    assert (table["blocked"]["videos"], table["blocked"]["outcome"], table["blocked"]["never_tried"]) == (
        "8", "blocked", "3")
    assert table["unavailable"]["videos"] == "0" and table["total"]["never_tried"] == "3"
    printed = capsys.readouterr().out
    assert "BLOCK" in printed and "never_tried" in printed

    # the block lifts: a rerun fetches every one of them
    media_server.reset()
    media_server.clear_log()
    assert shard.run(canary_settings(max_cooldowns=0)) == 0
    assert {v: r["status"] for v, r in shard.rows().items()} == {v: "ok" for v in VIDEOS}
    assert media_server.hits(f"{CANARY}.mp4") == []  # nothing implausible happened: no canary


def test_block_that_lifts_during_the_cooldown_is_fetched_in_the_same_job(tmp_path, clips, media_server,
                                                                        media_root, caplog):
    videos = VIDEOS[:5]
    serve(media_root, clips, **{f"{v}.mp4": "short" for v in [*videos, CANARY]})
    for name in [*videos, CANARY]:
        media_server.behave(f"{name}.mp4", fail_times=1, fail_status=404, reason=BLOCKED_TEXT)
    shard = shard_of(tmp_path, media_server, videos)
    with caplog.at_level("INFO", logger="mcnflow.download"):
        assert shard.run(canary_settings(max_cooldowns=1, cooldown=0.2)) == 0
    assert {v: r["status"] for v, r in shard.rows().items()} == {v: "ok" for v in videos}
    assert len(media_server.hits(f"{CANARY}.mp4")) >= 1
    assert any("were a block" in r.getMessage() and "cooldown 1 of 1" in r.getMessage() for r in caplog.records)
    for v in videos:  # answered once as "gone", then fetched after the pause
        assert len(media_server.hits(f"{v}.mp4", method="GET")) >= 2


def test_real_deletions_stand_when_the_canary_plays(tmp_path, clips, media_server, media_root):
    serve(media_root, clips, **{f"{CANARY}.mp4": "short"})
    for v in VIDEOS:  # really deleted: only these videos answer so
        media_server.behave(f"{v}.mp4", status=404, reason=REMOVED_TEXT)
    shard = shard_of(tmp_path, media_server)
    assert shard.run(canary_settings()) == 0
    rows = shard.rows()
    assert {r["status"] for r in rows.values()} == {"removed"}
    assert {r["verdict"] for r in rows.values()} == {"video"}
    assert all(REMOVED_TEXT in r["message"] and "canary" not in r["message"] for r in rows.values())
    canary_requests = len(media_server.hits(f"{CANARY}.mp4"))
    assert canary_requests >= 1
    # asked once, after 5 in a row; the next 3 are a new run, plausible again
    assert canary_requests == len(_requests_of_one_check(tmp_path, clips, media_server, media_root))
    media_server.clear_log()
    assert shard.run(canary_settings()) == 0  # permanent rows are settled: nothing asked again
    assert media_server.requests == []


def _requests_of_one_check(tmp_path, clips, media_server, media_root):
    """The requests one canary check makes (the generic extractor's probing of a direct link)."""
    from mcnflow.download.fetch import Fetcher
    fetcher = Fetcher(canary_settings(), tmp_path / "probe")
    before = len(media_server.hits(f"{CANARY}.mp4"))
    assert not fetcher.check(CANARY, media_server.url(f"{CANARY}.mp4")).failed
    return media_server.hits(f"{CANARY}.mp4")[before:]


def test_without_a_canary_the_answers_stand_and_say_so(tmp_path, clips, media_server, media_root, caplog):
    media_server.default_status, media_server.default_reason = 404, REMOVED_TEXT
    shard = shard_of(tmp_path, media_server, VIDEOS[:4])
    with caplog.at_level("WARNING", logger="mcnflow.download"):
        assert shard.run(canary_settings(canary={"videos": {}, "rule": "run_length", "threshold": 3})) == 0
    assert {r["status"] for r in shard.rows().values()} == {"removed"}
    assert any("no canary video is configured" in r.getMessage() for r in caplog.records)


def test_the_rule_follows_the_observed_survival():
    settings = {"rule": "improbable_run", "threshold": 0.001, "expected_survival": 0.75, "prior_weight": 20}
    watch = RunWatch(settings)
    assert watch.survival() == pytest.approx(0.75)
    assert [watch.implausible(run) for run in (1, 4, 5)] == [False, False, True]
    assert required_run(settings, 0.75) == 5
    # a shard that has seen only survivors finds a shorter run implausible...
    watch.observe(alive=380)
    assert watch.survival() == pytest.approx(395 / 400)
    assert watch.implausible(2) and not watch.implausible(1)
    # ...and one on a poorly surviving corpus needs a longer one
    poor = RunWatch(settings, alive=30, gone=70)
    assert not poor.implausible(10) and poor.implausible(20)
    count = RunWatch({**settings, "rule": "run_length", "threshold": 4})
    assert not count.implausible(3) and count.implausible(4)


@pytest.mark.parametrize("canary, key, words", [
    ({"rule": "sometimes"}, "download.canary.rule", ["'improbable_run'", "'run_length'"]),
    ({"rule": "run_length", "threshold": 0.5}, "download.canary.threshold", ["2"]),
    ({"threshold": 5}, "download.canary.threshold", ["1"]),
    ({"videos": {"vimeo": ["x"]}}, "download.canary.videos", ["'youtube'", "'local'"]),
    ({"videos": {"youtube": ["not-an-id"]}}, "download.canary.videos.youtube", ["invalid youtube video id"]),
])
def test_bad_canary_settings_name_the_key_and_the_allowed_values(tmp_path, capsys, canary, key, words):
    shard = Shard(tmp_path, [(VIDEOS[0], "0", "http://127.0.0.1:9/x.mp4")])
    assert shard.run(canary_settings(canary=canary)) == 2
    err = capsys.readouterr().err
    assert key in err, err
    assert all(word in err for word in words), err
