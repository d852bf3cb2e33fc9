"""``mcnflow demo-server``: serve the demo corpus over local HTTP so the real yt-dlp path downloads it.

``GET /<corpus>/<video_id>.mp4`` returns the file; an id without a file answers 404 (a deleted
video); each ``--flaky`` id answers 503 to its first request and then succeeds (a transient
failure). ``GET /health`` answers 200 so the workflow can tell a running server from a busy port.
Binds to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import threading
import time
import urllib.request
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

log = logging.getLogger(__name__)

HOST = "127.0.0.1"


class DemoHandler(BaseHTTPRequestHandler):
    server_version = "mcnflow-demo/1"

    def __init__(self, *args, root: Path, flaky: set[str], failed_once: set[str], lock: threading.Lock, **kwargs):
        self.root, self.flaky, self.failed_once, self.lock = root, flaky, failed_once, lock
        super().__init__(*args, **kwargs)

    def log_message(self, fmt: str, *args) -> None:
        log.info("%s %s", self.address_string(), fmt % args)

    def _resolve(self) -> Path | None:
        parts = [p for p in self.path.split("?")[0].split("/") if p]
        if len(parts) != 2 or any(p.startswith(".") for p in parts):
            return None
        return self.root / parts[0] / "videos" / parts[1]

    def _answer(self, head_only: bool) -> None:
        if self.path == "/health":
            # The served root, so a workflow can tell its own server from another one on the port.
            body = str(self.root.resolve()).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head_only:
                self.wfile.write(body)
            return
        path = self._resolve()
        stem = path.stem if path else ""
        with self.lock:
            fail_now = stem in self.flaky and stem not in self.failed_once
            if fail_now:
                self.failed_once.add(stem)
        if fail_now:
            self.send_error(503, "Service Unavailable (demo: transient failure)")
            return
        if path is None or not path.is_file():
            self.send_error(404, "Not Found (demo: video removed)")
            return
        size = path.stat().st_size
        self.send_response(200)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        if not head_only:
            with open(path, "rb") as handle:
                shutil.copyfileobj(handle, self.wfile)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._answer(head_only=False)

    def do_HEAD(self) -> None:  # noqa: N802
        self._answer(head_only=True)


def make_server(root: str | Path, port: int, flaky: list[str]) -> ThreadingHTTPServer:
    handler = partial(DemoHandler, root=Path(root), flaky=set(flaky), failed_once=set(), lock=threading.Lock())
    return ThreadingHTTPServer((HOST, port), handler)


def served_root(port: int, timeout: float = 1.0) -> str | None:
    """The root directory of the demo server answering on ``port``, or None if none answers."""
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/health", timeout=timeout) as response:
            return response.read().decode() if response.status == 200 else None
    except OSError:
        return None


def wait_until_serving(port: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if served_root(port) is not None:
            return True
        time.sleep(0.1)
    return False


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", required=True, help="the demo corpus directory")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--flaky", nargs="*", default=[], help="ids that fail once before succeeding")
    parser.add_argument("--pidfile", help="write the server's pid here (removed on exit)")


def main(args: argparse.Namespace) -> int:
    os.makedirs(args.root, exist_ok=True)
    server = make_server(args.root, args.port, args.flaky)
    if args.pidfile:
        Path(args.pidfile).write_text(str(os.getpid()))

    def stop(signum, frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    log.info("serving %s on http://%s:%d (flaky: %s)", args.root, HOST, args.port, ", ".join(args.flaky) or "none")
    try:
        server.serve_forever()
    finally:
        server.server_close()
        if args.pidfile:
            Path(args.pidfile).unlink(missing_ok=True)
    return 0

