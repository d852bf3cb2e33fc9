"""`mcnflow download` against a local HTTP server, through the real yt-dlp code path (no mocks).

The server (tests/http_fixtures.py) plays YouTube's failure modes: 404 (video gone), 503 once
(transient), 429 everywhere (rate limited), a connection that stalls mid-file (job killed), and
YouTube's own texts as reason phrases (an upcoming live event, the embedded player's refusal).
The canary (a block or deletions?) is tested in test_canary.py.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from mcnflow import cli
from mcnflow.download.policy import NOT_ATTEMPTED
from mcnflow.core.ledger import DOWNLOAD_COLUMNS, journal_path, read_ledger

from conftest import REPO, require_ffmpeg
from http_fixtures import media_root, media_server  # noqa: F401 (pytest fixtures)

A, B, C, D, E = "clipA-00001", "clipB-00002", "clipC-00003", "clipD-00004", "clipE-00005"


@pytest.fixture(scope="session")
def clips(tmp_path_factory) -> dict[str, Path]:
    """Two tiny real videos (h264 + aac, 160x90): 1.5 s and 1.0 s."""
    require_ffmpeg()
    out = tmp_path_factory.mktemp("clips")
    made = {}
    for name, seconds, freq in (("long", 1.5, 440), ("short", 1.0, 660)):
        path = out / f"{name}.mp4"
        subprocess.run(
            ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc=size=160x90:rate=15:duration={seconds}",
             "-f", "lavfi", "-i", f"sine=frequency={freq}:sample_rate=16000:duration={seconds}",
             "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "32k",
             "-shortest", "-movflags", "+faststart", str(path)], check=True)
        made[name] = path
    return made


def base_settings(**overrides) -> dict:
    """config.yaml's `download:` section, made fast for tests (no sleeps, short back-off)."""
    settings = yaml.safe_load((REPO / "config.yaml").read_text())["download"]
    settings.update(sleep_requests=0, sleep_interval=0, max_sleep_interval=0, socket_timeout=2, attempts=3,
                    backoff_initial=0.05, backoff_max=0.1, cooldown=0.2, rate_limit_burst=3, max_cooldowns=2)
    settings.update(overrides)
    return settings


class Shard:
    """Paths of one shard's download in a tmp dir, and a runner for `mcnflow download`."""

    def __init__(self, root: Path, rows, shard: str = "00000"):
        self.root = root
        self.manifest = root / "manifest.tsv"
        self.ledger = root / "download" / f"shard-{shard}.tsv"
        self.videos = root / "download" / "videos"
        self.shard = shard
        self.write_manifest(rows)

    def write_manifest(self, rows) -> None:
        self.manifest.write_text("video_id\tshard\tsource\n" + "".join(f"{v}\t{s}\t{src}\n" for v, s, src in rows))

    def argv(self, settings: dict, id_kind: str = "youtube") -> list[str]:
        return ["download", "--manifest", str(self.manifest), "--shard", self.shard, "--id-kind", id_kind,
                "--ledger", str(self.ledger), "--videos-dir", str(self.videos), "--settings", json.dumps(settings)]

    def run(self, settings: dict, id_kind: str = "youtube") -> int:
        return cli.main(self.argv(settings, id_kind))

    def rows(self) -> dict[str, dict[str, str]]:
        return {r["video_id"]: r for r in read_ledger(self.ledger)}

    def leftovers(self) -> list[str]:
        return sorted(p.name for p in self.videos.iterdir() if p.name.startswith(".tmp-") or p.name.endswith(".part"))


def serve(media_root: Path, clips: dict, **names) -> None:
    """Put clips on the server: serve(root, clips, **{"clipA-00001.mp4": "long"})."""
    for name, clip in names.items():
        shutil.copyfile(clips[clip], media_root / name)


def test_url_sources_are_downloaded_and_renamed(tmp_path, clips, media_server, media_root):
    serve(media_root, clips, **{f"{A}.mp4": "long", f"{B}.mp4": "short"})
    shard = Shard(tmp_path, [(B, "0", media_server.url(f"{B}.mp4")), (A, "00000", media_server.url(f"{A}.mp4")),
                             (C, "1", media_server.url(f"{C}.mp4"))])
    assert shard.run(base_settings()) == 0

    ledger = read_ledger(shard.ledger)
    assert [r["video_id"] for r in ledger] == [B, A]  # manifest order, shard 00000 only ("0" == "00000")
    assert list(ledger[0]) == list(DOWNLOAD_COLUMNS)
    for vid, clip, seconds in ((A, "long", 1.5), (B, "short", 1.0)):
        row = shard.rows()[vid]
        assert row["status"] == "ok" and row["message"] == "" and row["attempts"] == "1"
        assert row["path"] == str(shard.videos / f"{vid}.mp4")
        assert Path(row["path"]).read_bytes() == clips[clip].read_bytes()
        assert int(row["bytes"]) == clips[clip].stat().st_size
        assert float(row["duration"]) == pytest.approx(seconds, abs=0.1)
        assert row["captions_path"] == ""  # a direct video link has no caption track
    assert shard.leftovers() == []
    assert not journal_path(shard.ledger).exists()
    assert not media_server.hits(f"{C}.mp4")  # another shard's video


def test_missing_video_is_unavailable_and_not_retried(tmp_path, clips, media_server, media_root):
    serve(media_root, clips, **{f"{A}.mp4": "short"})
    shard = Shard(tmp_path, [(D, "0", media_server.url(f"{D}.mp4")), (A, "0", media_server.url(f"{A}.mp4"))])
    assert shard.run(base_settings(attempts=3)) == 0
    rows = shard.rows()
    assert rows[D]["status"] == "unavailable" and "404" in rows[D]["message"] and rows[D]["attempts"] == "1"
    assert rows[D]["path"] == rows[D]["bytes"] == ""
    # yt-dlp needs one request to learn the video is gone; a retry would have made more.
    assert len(media_server.hits(f"{D}.mp4")) == 1
    assert rows[A]["status"] == "ok"  # the shard went on


def test_transient_failure_is_retried_with_backoff(tmp_path, clips, media_server, media_root):
    serve(media_root, clips, **{f"{A}.mp4": "short", f"{B}.mp4": "short"})
    media_server.behave(f"{A}.mp4", fail_times=1, fail_status=503)
    media_server.behave(f"{B}.mp4", status=503)
    shard = Shard(tmp_path, [(A, "0", media_server.url(f"{A}.mp4")), (B, "0", media_server.url(f"{B}.mp4"))])
    started = time.monotonic()
    assert shard.run(base_settings(attempts=3, backoff_initial=0.2, backoff_max=0.3)) == 0
    elapsed = time.monotonic() - started
    rows = shard.rows()
    assert rows[A]["status"] == "ok" and rows[A]["attempts"] == "2"
    assert Path(rows[A]["path"]).stat().st_size == int(rows[A]["bytes"])
    assert rows[B]["status"] == "transient" and rows[B]["attempts"] == "3" and "503" in rows[B]["message"]
    assert len(media_server.hits(f"{B}.mp4")) == 3
    # back-off: A waited 0.2 s; B waited 0.2 s then min(0.4, cap 0.3) s
    assert elapsed >= 0.2 + 0.2 + 0.3


def test_rate_limiting_pauses_the_shard_then_gives_up(tmp_path, clips, media_server, media_root, caplog):
    names = [A, B, C, D, E]
    serve(media_root, clips, **{f"{v}.mp4": "short" for v in names})
    media_server.default_status = 429  # this IP is rate limited everywhere
    shard = Shard(tmp_path, [(v, "0", media_server.url(f"{v}.mp4")) for v in names])
    started = time.monotonic()
    with caplog.at_level("INFO", logger="mcnflow.download"):
        code = shard.run(base_settings(rate_limit_burst=2, cooldown=0.2, max_cooldowns=1))
    assert code == 0  # a later run retries them
    assert time.monotonic() - started >= 0.2
    assert any("pausing" in r.getMessage() and "cooldown 1 of 1" in r.getMessage() for r in caplog.records)
    rows = shard.rows()
    assert [rows[v]["status"] for v in names] == ["rate_limited"] * 5
    for v in (A, B):  # tried, paused, tried again after the cooldown
        assert "429" in rows[v]["message"]
        assert len(media_server.hits(f"{v}.mp4")) == 2
    for v in (C, D, E):  # the job stopped contacting the server
        assert rows[v]["message"] == NOT_ATTEMPTED and rows[v]["attempts"] == "0"
        assert media_server.hits(f"{v}.mp4") == []


def test_rate_limit_burst_resets_and_cooldown_recovers(tmp_path, clips, media_server, media_root):
    serve(media_root, clips, **{f"{v}.mp4": "short" for v in (A, B, C)})
    media_server.behave(f"{A}.mp4", fail_times=1, fail_status=429)
    media_server.behave(f"{B}.mp4", fail_times=1, fail_status=429)
    shard = Shard(tmp_path, [(v, "0", media_server.url(f"{v}.mp4")) for v in (A, B, C)])
    assert shard.run(base_settings(rate_limit_burst=2, cooldown=0.1, max_cooldowns=1)) == 0
    rows = shard.rows()
    # A and B were rate limited in a row: the shard paused, then both succeeded on the retry
    assert [rows[v]["status"] for v in (A, B, C)] == ["ok", "ok", "ok"]


def test_captions_are_renamed_next_to_the_video(tmp_path, clips, media_server, media_root):
    serve(media_root, clips, **{"clip.mp4": "short"})
    (media_root / "clip.vtt").write_text("WEBVTT\n\n00:00:00.000 --> 00:00:01.000\nhello world\n")
    (media_root / f"{A}.html").write_text(
        '<html><head><title>a</title></head><body><video controls><source src="clip.mp4" type="video/mp4">'
        '<track kind="captions" src="clip.vtt" srclang="en" label="English"></video></body></html>')
    (media_root / f"{B}.html").write_text(
        '<html><head><title>b</title></head><body><video controls><source src="clip.mp4" type="video/mp4">'
        '<track kind="captions" src="gone.vtt" srclang="en" label="English"></video></body></html>')
    shard = Shard(tmp_path, [(A, "0", media_server.url(f"{A}.html")), (B, "0", media_server.url(f"{B}.html"))])
    assert shard.run(base_settings()) == 0
    rows = shard.rows()
    assert rows[A]["status"] == "ok"
    assert rows[A]["captions_path"] == str(shard.videos / f"{A}.en.vtt")
    assert "hello world" in Path(rows[A]["captions_path"]).read_text()
    assert rows[A]["path"] == str(shard.videos / f"{A}.mp4")
    # a caption track that fails for good does not cost the video
    assert rows[B]["status"] == "ok" and rows[B]["captions_path"] == ""
    assert rows[B]["message"].startswith("captions failed") and "404" in rows[B]["message"]
    assert Path(rows[B]["path"]).read_bytes() == clips["short"].read_bytes()
    assert shard.leftovers() == []


def test_video_longer_than_max_duration_is_skipped(tmp_path, clips, media_server, media_root):
    serve(media_root, clips, **{"three-hours.mp4": "short"})
    # schema.org metadata is how the generic extractor learns a duration before downloading
    (media_root / f"{A}.html").write_text(
        '<html><head><title>a</title><script type="application/ld+json">'
        + json.dumps({"@context": "https://schema.org", "@type": "VideoObject", "name": "a", "duration": "PT3H",
                      "uploadDate": "2020-01-01", "contentUrl": media_server.url("three-hours.mp4")})
        + "</script></head><body></body></html>")
    shard = Shard(tmp_path, [(A, "0", media_server.url(f"{A}.html"))])
    assert shard.run(base_settings(max_duration=7200)) == 0
    row = shard.rows()[A]
    assert row["status"] == "skipped" and "10800" in row["message"] and "7200" in row["message"]
    assert list(shard.videos.iterdir()) == []
    # with no limit it downloads
    assert shard.run(base_settings(max_duration=None)) == 0
    assert shard.rows()[A]["status"] == "skipped"  # skipped is final: a rerun keeps it
    shard.ledger.unlink()
    assert shard.run(base_settings(max_duration=None)) == 0
    assert shard.rows()[A]["status"] == "ok"


def test_local_sources_and_invalid_ids(tmp_path, clips, media_server):
    present = tmp_path / "videos" / "video7020.mp4"
    present.parent.mkdir()
    shutil.copyfile(clips["long"], present)
    empty = tmp_path / "videos" / "video7021.mp4"
    empty.write_bytes(b"")
    shard = Shard(tmp_path, [
        ("video7020", "0", str(present)),
        ("video7021", "0", str(empty)),
        ("video7022", "0", str(tmp_path / "videos" / "video7022.mp4")),
        ("../../etc/passwd", "0", media_server.url("x.mp4")),
        ("video 7023", "0", str(present)),
    ])
    assert shard.run(base_settings(), id_kind="local") == 0
    rows = shard.rows()
    assert rows["video7020"]["status"] == "ok" and rows["video7020"]["path"] == str(present)
    assert int(rows["video7020"]["bytes"]) == present.stat().st_size
    assert float(rows["video7020"]["duration"]) == pytest.approx(1.5, abs=0.1)
    assert (rows["video7021"]["status"], rows["video7021"]["message"]) == ("unavailable", f"empty file: {empty}")
    assert rows["video7022"]["status"] == "unavailable" and rows["video7022"]["message"].startswith("file not found")
    for bad in ("../../etc/passwd", "video 7023"):
        assert rows[bad]["status"] == "error" and "invalid local video id" in rows[bad]["message"]
    assert media_server.requests == []  # an invalid id never reaches a command
    assert not shard.videos.exists() or list(shard.videos.iterdir()) == []  # local files are not copied


def test_invalid_youtube_id_gets_an_error_row(tmp_path, clips, media_server, media_root):
    serve(media_root, clips, **{f"{A}.mp4": "short"})
    shard = Shard(tmp_path, [("short", "0", media_server.url("short.mp4")), (A, "0", media_server.url(f"{A}.mp4"))])
    assert shard.run(base_settings()) == 0
    rows = shard.rows()
    assert rows["short"]["status"] == "error" and "invalid youtube video id" in rows["short"]["message"]
    assert rows[A]["status"] == "ok"
    assert media_server.hits("short.mp4") == []


def test_rerun_retries_only_retryable_rows(tmp_path, clips, media_server, media_root):
    serve(media_root, clips, **{f"{A}.mp4": "long", f"{B}.mp4": "short"})
    media_server.behave(f"{B}.mp4", status=503)
    shard = Shard(tmp_path, [(v, "0", media_server.url(f"{v}.mp4")) for v in (A, B, D)])
    assert shard.run(base_settings(attempts=1)) == 0
    assert {v: r["status"] for v, r in shard.rows().items()} == {A: "ok", B: "transient", D: "unavailable"}

    media_server.reset()
    media_server.clear_log()
    assert shard.run(base_settings(attempts=1)) == 0
    assert {v: r["status"] for v, r in shard.rows().items()} == {A: "ok", B: "ok", D: "unavailable"}
    assert media_server.hits(f"{A}.mp4") == [] and media_server.hits(f"{D}.mp4") == []
    assert media_server.hits(f"{B}.mp4")

    # an ok row whose file changed on disk is not trusted
    Path(shard.rows()[A]["path"]).write_bytes(b"truncated")
    media_server.clear_log()
    assert shard.run(base_settings(attempts=1)) == 0
    assert len(media_server.hits(f"{A}.mp4")) >= 1 and media_server.hits(f"{B}.mp4") == []
    assert Path(shard.rows()[A]["path"]).read_bytes() == clips["long"].read_bytes()


def test_complete_file_without_a_row_is_kept(tmp_path, clips, media_server, media_root):
    shard = Shard(tmp_path, [(A, "0", media_server.url(f"{A}.mp4"))])
    shard.videos.mkdir(parents=True)
    shutil.copyfile(clips["short"], shard.videos / f"{A}.mp4")  # the ledger was lost, the file was not
    assert shard.run(base_settings()) == 0
    row = shard.rows()[A]
    assert row["status"] == "ok" and int(row["bytes"]) == clips["short"].stat().st_size
    assert media_server.requests == []


def test_systemic_failure_stops_the_shard_with_exit_3(tmp_path, clips, media_server, media_root):
    serve(media_root, clips, **{f"{A}.mp4": "short", f"{B}.mp4": "short"})
    cookies = tmp_path / "cookies.txt"
    cookies.write_text("this is not\ta cookies file\n")  # breaks every request, not one video
    shard = Shard(tmp_path, [(A, "0", media_server.url(f"{A}.mp4")), (B, "0", media_server.url(f"{B}.mp4"))])
    assert shard.run(base_settings(cookies_file=str(cookies))) == 3
    assert not shard.ledger.exists()
    journal = read_ledger_journal(shard.ledger)
    assert journal[A]["status"] == "error" and "cookies" in journal[A]["message"]
    assert B not in journal and media_server.hits(f"{B}.mp4") == []  # did not burn through the shard
    # fixed: the rerun retries the video the broken setup failed
    assert shard.run(base_settings(cookies_file=None)) == 0
    assert [r["status"] for r in shard.rows().values()] == ["ok", "ok"]


def read_ledger_journal(ledger: Path) -> dict[str, dict[str, str]]:
    from mcnflow.core.ledger import Journal
    return Journal(journal_path(ledger), DOWNLOAD_COLUMNS).read()


def test_stale_partials_of_this_shard_are_deleted_others_kept(tmp_path, clips, media_server, media_root):
    serve(media_root, clips, **{f"{A}.mp4": "short"})
    shard = Shard(tmp_path, [(A, "0", media_server.url(f"{A}.mp4"))])
    (shard.videos / f".tmp-{A}").mkdir(parents=True)
    (shard.videos / f".tmp-{A}" / "video.mp4.part").write_bytes(b"partial")
    (shard.videos / f"{A}.mp4.part").write_bytes(b"partial")
    (shard.videos / f".tmp-{E}.mp4.part").write_bytes(b"another shard is writing this")
    assert shard.run(base_settings()) == 0
    assert shard.leftovers() == [f".tmp-{E}.mp4.part"]
    assert Path(shard.rows()[A]["path"]).read_bytes() == clips["short"].read_bytes()


def test_bad_manifest_and_settings_are_clear_errors(tmp_path, capsys):
    shard = Shard(tmp_path, [(A, "zero", "x")])
    assert shard.run(base_settings()) == 2
    settings = base_settings()
    del settings["cooldown"]
    assert shard.run(settings) == 2
    assert "cooldown" in capsys.readouterr().err


@pytest.mark.slow
def test_killed_job_resumes_without_trusting_partial_files(tmp_path, clips, media_server, media_root):
    serve(media_root, clips, **{f"{A}.mp4": "long", f"{B}.mp4": "long"})
    # past the writer's 8 KiB buffer, so a partial file is on disk when the job dies
    media_server.behave(f"{B}.mp4", stall_after=12000, stall="hang")
    shard = Shard(tmp_path, [(A, "0", media_server.url(f"{A}.mp4")), (B, "0", media_server.url(f"{B}.mp4"))])
    settings = base_settings(socket_timeout=60)
    job = subprocess.Popen([sys.executable, "-m", "mcnflow", *shard.argv(settings)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        partial = shard.videos / f".tmp-{B}"
        deadline = time.monotonic() + 30
        # wait until A is journaled and B's download has written part of the file
        while not (A in read_ledger_journal(shard.ledger)
                   and any(p.stat().st_size > 0 for p in partial.glob("*.part"))):
            assert job.poll() is None and time.monotonic() < deadline, "download job ended early / hung"
            time.sleep(0.05)
        os.kill(job.pid, signal.SIGKILL)
        job.wait(timeout=10)
    finally:
        if job.poll() is None:
            job.kill()
    assert not shard.ledger.exists()
    assert read_ledger_journal(shard.ledger)[A]["status"] == "ok"
    assert list(partial.glob("*.part"))

    media_server.reset(f"{B}.mp4")
    media_server.release()
    media_server.clear_log()
    assert shard.run(settings) == 0
    rows = shard.rows()
    assert rows[A]["status"] == rows[B]["status"] == "ok"
    assert media_server.hits(f"{A}.mp4") == []  # A was not downloaded again
    assert all("Range" not in r.headers for r in media_server.hits(f"{B}.mp4"))  # B started from byte 0
    assert Path(rows[B]["path"]).read_bytes() == clips["long"].read_bytes()
    assert shard.leftovers() == [] and not journal_path(shard.ledger).exists()


def test_connection_dropped_mid_file_is_transient_and_leaves_nothing(tmp_path, clips, media_server, media_root):
    serve(media_root, clips, **{f"{A}.mp4": "long"})
    media_server.behave(f"{A}.mp4", stall_after=5000, stall="close")
    shard = Shard(tmp_path, [(A, "0", media_server.url(f"{A}.mp4"))])
    assert shard.run(base_settings(attempts=2, backoff_initial=0, http_retries=0)) == 0
    row = shard.rows()[A]
    assert row["status"] == "transient" and row["attempts"] == "2" and row["verdict"] == "network", row
    assert shard.leftovers() == [] and not (shard.videos / f"{A}.mp4").exists()


def test_yt_dlp_own_retries_resume_a_dropped_connection_inside_one_try(tmp_path, clips, media_server, media_root):
    # yt-dlp's default http retries pick the file up where the connection dropped (a Range request)
    serve(media_root, clips, **{f"{A}.mp4": "long"})
    media_server.behave(f"{A}.mp4", stall_after=5000, stall="close")
    shard = Shard(tmp_path, [(A, "0", media_server.url(f"{A}.mp4"))])
    assert shard.run(base_settings(attempts=1)) == 0
    row = shard.rows()[A]
    assert row["status"] == "ok" and row["attempts"] == "1", row
    assert Path(row["path"]).read_bytes() == clips["long"].read_bytes()
    assert any("Range" in r.headers for r in media_server.requests)


def test_empty_shard_and_repeated_ids(tmp_path, clips, media_server, media_root):
    shard = Shard(tmp_path, [(A, "1", media_server.url(f"{A}.mp4"))])
    assert shard.run(base_settings()) == 0
    assert shard.ledger.read_text() == "\t".join(DOWNLOAD_COLUMNS) + "\n"  # nothing in shard 0, still a ledger
    serve(media_root, clips, **{f"{A}.mp4": "short"})
    shard.write_manifest([(A, "0", media_server.url(f"{A}.mp4")), (A, "0", media_server.url("elsewhere.mp4"))])
    shard.ledger.unlink()
    assert shard.run(base_settings()) == 0
    assert [r["video_id"] for r in read_ledger(shard.ledger)] == [A]
    assert media_server.hits("elsewhere.mp4") == []


# --- issue 13: not yet, the embedded player's bug, a repeated format error, options at scale ------------

def test_upcoming_live_is_not_yet_and_a_later_run_fetches_it(tmp_path, clips, media_server, media_root):
    serve(media_root, clips, **{f"{A}.mp4": "short", f"{B}.mp4": "short"})
    # 425 Too Early: a status the exception types leave to the text, which says "later"
    media_server.behave(f"{A}.mp4", status=425, reason="This live event will begin in 3 hours.")
    shard = Shard(tmp_path, [(A, "0", media_server.url(f"{A}.mp4")), (B, "0", media_server.url(f"{B}.mp4"))])
    assert shard.run(base_settings(attempts=3)) == 0
    rows = shard.rows()
    assert rows[A]["status"] == "not_yet" and "will begin in 3 hours" in rows[A]["message"]
    assert rows[A]["attempts"] == "1"  # not retried within the job: it is hours away
    media_server.reset()
    media_server.clear_log()
    assert shard.run(base_settings()) == 0
    assert shard.rows()[A]["status"] == "ok" and media_server.hits(f"{B}.mp4") == []


EMBED_DISABLED = ("Video unavailable. Playback on other websites has been disabled by the video owner "
                  "(web_embedded player response playability status: UNPLAYABLE)")


@pytest.mark.parametrize("refusal", [EMBED_DISABLED, "Error 153: Video player configuration error"],
                         ids=["embed-disabled", "error-153"])
def test_embed_disabled_is_retried_with_other_player_clients(tmp_path, clips, media_server, media_root, refusal):
    serve(media_root, clips, **{f"{A}.mp4": "short", f"{B}.mp4": "short"})
    media_server.behave(f"{A}.mp4", fail_times=1, fail_status=400, reason=refusal)
    media_server.behave(f"{B}.mp4", status=400, reason=refusal)
    shard = Shard(tmp_path, [(A, "0", media_server.url(f"{A}.mp4")), (B, "0", media_server.url(f"{B}.mp4"))])
    assert shard.run(base_settings(embed_fallback_clients=["default", "-web_embedded"])) == 0
    rows = shard.rows()
    assert rows[A]["status"] == "ok" and "with player clients default,-web_embedded" in rows[A]["message"]
    assert Path(rows[A]["path"]).read_bytes() == clips["short"].read_bytes()
    # still refused: not gone, an error a later run retries
    assert rows[B]["status"] == "error" and "also with player clients" in rows[B]["message"]
    assert len(media_server.hits(f"{B}.mp4", method="GET")) == 2
    media_server.reset()
    media_server.clear_log()
    assert shard.run(base_settings()) == 0
    assert shard.rows()[B]["status"] == "ok" and media_server.hits(f"{A}.mp4") == []


def test_repeated_format_not_available_stops_the_shard_and_the_rerun_retries(tmp_path, clips, media_server,
                                                                          media_root):
    names = [A, B, C]
    serve(media_root, clips, **{f"{v}.mp4": "short" for v in names})
    shard = Shard(tmp_path, [(v, "0", media_server.url(f"{v}.mp4")) for v in names])
    # a format nothing matches: what yt-dlp answers for every video when the JS runtime is missing
    broken = base_settings(format="b[height<=1]", format_unavailable_limit=2)
    assert shard.run(broken) == 3
    assert not shard.ledger.exists()
    journal = read_ledger_journal(shard.ledger)
    assert [journal[v]["status"] for v in (A, B)] == ["error", "error"]
    assert all("Requested format is not available" in journal[v]["message"] for v in (A, B))
    assert C not in journal and media_server.hits(f"{C}.mp4") == []
    # fixed: the two are retried, not kept as that video's own error
    assert shard.run(base_settings()) == 0
    assert [r["status"] for r in shard.rows().values()] == ["ok", "ok", "ok"]


def test_one_format_not_available_is_that_videos_retryable_error(tmp_path, clips, media_server, media_root):
    serve(media_root, clips, **{f"{A}.mp4": "short"})
    shard = Shard(tmp_path, [(A, "0", media_server.url(f"{A}.mp4"))])
    assert shard.run(base_settings(format="b[height<=1]", format_unavailable_limit=3)) == 0
    row = shard.rows()[A]
    assert row["status"] == "error" and "Requested format is not available" in row["message"]
    media_server.clear_log()
    # not about the video: a later run asks again, and the attempts add up across runs
    assert shard.run(base_settings(format="b[height<=1]", format_unavailable_limit=3)) == 0
    assert media_server.requests != []
    row = shard.rows()[A]
    assert row["status"] == "error" and row["verdict"] == "yt-dlp" and row["attempts"] == "2"


def test_scale_options_reach_yt_dlp_and_settings_stay_untouched(tmp_path):
    import yt_dlp
    from mcnflow.core.frozen import freeze
    from mcnflow.download.fetch import YtDlpLog, ytdlp_params

    runtime = tmp_path / "deno"
    runtime.write_text("#!/bin/sh\n")
    settings = freeze(base_settings(
        player_clients=["tv", "web_safari"], extractor_args={"youtube": {"skip": ["dash"]}},
        js_runtime="node", js_runtime_path=str(runtime), remote_components=["ejs:github"],
        po_token_base_url="http://127.0.0.1:4416", sleep_requests=0.75, sleep_interval=10,
        max_sleep_interval=20, sleep_subtitles=5))
    params = ytdlp_params(settings, tmp_path, YtDlpLog("x"), None, captions=True)
    assert params["extractor_args"] == {"youtube": {"skip": ["dash"], "player_client": ["tv", "web_safari"]},
                                        "youtubepot-bgutilhttp": {"base_url": ["http://127.0.0.1:4416"]}}
    assert params["js_runtimes"] == {"node": {"path": str(runtime)}}
    assert (params["sleep_interval_requests"], params["sleep_interval"], params["max_sleep_interval"],
            params["sleep_interval_subtitles"]) == (0.75, 10, 20, 5)
    assert settings["extractor_args"] == {"youtube": {"skip": ("dash",)}}  # the read-only settings are as given
    with yt_dlp.YoutubeDL(params) as ydl:  # yt-dlp takes them as they are
        assert ydl.params["remote_components"] == {"ejs:github"}
        assert ydl.params["extractor_args"]["youtube"]["player_client"] == ["tv", "web_safari"]
    never = ytdlp_params(freeze(base_settings(po_token_provider="never")), tmp_path, YtDlpLog("x"), None, False)
    assert never["extractor_args"]["youtube"]["fetch_pot"] == ["never"]
    other = ytdlp_params(settings, tmp_path, YtDlpLog("x"), None, False, player_clients=["default", "-web_embedded"])
    assert other["extractor_args"]["youtube"]["player_client"] == ["default", "-web_embedded"]


def test_experiment_sleeps_follow_the_sleep_preset_and_the_demo_has_none():
    from mcnflow.core.config import load_config
    sleeps = ("sleep_requests", "sleep_interval", "max_sleep_interval", "sleep_subtitles")
    real = load_config([REPO / "config.yaml"])["download"]
    assert tuple(real[k] for k in sleeps) == (0.75, 10, 20, 5)  # yt-dlp's `-t sleep`
    demo = load_config([REPO / "config.yaml", REPO / "demo/config.yaml"])["download"]
    assert tuple(demo[k] for k in sleeps) == (0, 0, 0, 0)
    assert real["canary"]["videos"]["youtube"] and not demo["canary"]["videos"]["youtube"]


def test_missing_js_runtime_path_is_a_clear_error(tmp_path, capsys):
    shard = Shard(tmp_path, [(A, "0", "http://127.0.0.1:9/x.mp4")])
    assert shard.run(base_settings(js_runtime_path=str(tmp_path / "no-deno"))) == 2
    assert "download.js_runtime_path" in capsys.readouterr().err
