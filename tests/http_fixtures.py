"""A local HTTP server for download tests: serves files from a directory, misbehaves on demand.

yt-dlp talks to it exactly as it talks to any web server (its generic extractor treats a URL that
answers ``Content-Type: video/mp4`` as a direct video link), so the download stage is tested through
its real code path without the internet. Behaviour is programmable per path:

- ``status=404``: always answer that status;
- ``fail_times=N, fail_status=503``: answer the first N requests with that status, then serve;
- ``stall_after=K, stall="hang" | "close"``: send the headers and the first K body bytes, then
  either hang until :meth:`MediaServer.release` (or ``stall_timeout``) or drop the connection;
- ``reason="..."``: the reason phrase of the failure status line. yt-dlp's generic extractor puts it
  in its error ("HTTP Error 404: <reason>"), which is how this server speaks YouTube's playability
  texts ("Video unavailable. This content isn't available.") to the real classifier. A status line
  is Latin-1: write apostrophes straight (the classifier tests cover the typographic one).

``default_status`` (with ``default_reason``) makes every path answer one status, e.g. 429 for an IP
that is rate limited, or 404 "This content isn't available." for a blocked one.
Every request is logged (method, path, headers) so tests can count what reached the server.
"""

from __future__ import annotations

import contextlib
import mimetypes
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

mimetypes.add_type("text/vtt", ".vtt")


@dataclass
class PathBehaviour:
    status: int | None = None        # always answer this status
    fail_times: int = 0              # answer the first N requests with fail_status...
    fail_status: int = 503           # ...then serve the file
    stall_after: int | None = None   # body bytes sent before stalling
    stall: str = "hang"              # "hang": wait for release(); "close": drop the connection
    stall_timeout: float = 30.0      # a hang never outlives this (a stuck test must still end)
    reason: str | None = None        # reason phrase of the failure answers (None: the standard one)
    served_failures: int = field(default=0, init=False)


@dataclass(frozen=True)
class RequestRecord:
    method: str
    path: str
    headers: dict[str, str]


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002 - keep pytest output clean
        pass

    def handle_one_request(self):
        try:
            super().handle_one_request()
        except (ConnectionResetError, BrokenPipeError):
            self.close_connection = True  # the client hung up between requests

    def do_HEAD(self):
        self._answer(send_body=False)

    def do_GET(self):
        self._answer(send_body=True)

    def _answer(self, send_body: bool) -> None:
        media = self.server.media
        path = self.path.split("?", 1)[0]
        media._log(RequestRecord(self.command, path, dict(self.headers.items())))
        behaviour = media.behaviour(path)
        status, reason = media.default_status, media.default_reason
        if behaviour is not None:
            reason = behaviour.reason or reason
            if behaviour.status is not None:
                status = behaviour.status
            else:
                with media._lock:
                    if behaviour.served_failures < behaviour.fail_times:
                        behaviour.served_failures += 1
                        status = behaviour.fail_status
        if status is not None and status != 200:
            return self._error(status, send_body, reason)
        file = (media.root / path.lstrip("/")).resolve()
        if media.root.resolve() not in file.parents or not file.is_file():
            return self._error(404, send_body)
        self._send_file(file, behaviour, send_body)

    def _error(self, status: int, send_body: bool, reason: str | None = None) -> None:
        body = f"error {status}\n".encode()
        self.send_response(status, reason)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        if status in (429, 503):
            self.send_header("Retry-After", "1")
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def _send_file(self, file: Path, behaviour: PathBehaviour | None, send_body: bool) -> None:
        data = file.read_bytes()
        start, end = 0, len(data)
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if match:
            start = int(match.group(1))
            end = int(match.group(2)) + 1 if match.group(2) else len(data)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Type", mimetypes.guess_type(file.name)[0] or "application/octet-stream")
        self.send_header("Content-Length", str(end - start))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if not send_body:
            return
        body = data[start:end]
        try:
            if behaviour is not None and behaviour.stall_after is not None:
                self.wfile.write(body[: behaviour.stall_after])
                self.wfile.flush()
                if behaviour.stall == "hang":
                    self.server.media._released.wait(behaviour.stall_timeout)
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(2)
                return
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (e.g. read the headers only)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    media: "MediaServer"


class MediaServer:
    """Serve ``root`` on 127.0.0.1 (a free port) in a background thread."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.default_status: int | None = None
        self.default_reason: str | None = None
        self._behaviours: dict[str, PathBehaviour] = {}
        self._requests: list[RequestRecord] = []
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.media = self
        self._thread = threading.Thread(target=self._server.serve_forever, name="media-server", daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name.lstrip('/')}"

    def behave(self, name: str, **behaviour) -> PathBehaviour:
        """Set the behaviour of ``/name`` (keyword arguments of :class:`PathBehaviour`)."""
        rule = PathBehaviour(**behaviour)
        with self._lock:
            self._behaviours["/" + name.lstrip("/")] = rule
        return rule

    def reset(self, name: str | None = None) -> None:
        """Serve ``name`` (or every path) normally again."""
        with self._lock:
            if name is None:
                self._behaviours.clear()
                self.default_status = None
                self.default_reason = None
            else:
                self._behaviours.pop("/" + name.lstrip("/"), None)

    def behaviour(self, path: str) -> PathBehaviour | None:
        with self._lock:
            return self._behaviours.get(path)

    def release(self) -> None:
        """End every hang now (and every later one immediately)."""
        self._released.set()

    def _log(self, record: RequestRecord) -> None:
        with self._lock:
            self._requests.append(record)

    @property
    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._requests)

    def hits(self, name: str, method: str | None = None) -> list[RequestRecord]:
        path = "/" + name.lstrip("/")
        return [r for r in self.requests if r.path == path and (method is None or r.method == method)]

    def clear_log(self) -> None:
        with self._lock:
            self._requests.clear()

    def start(self) -> "MediaServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "MediaServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@pytest.fixture
def media_root(tmp_path) -> Path:
    root = tmp_path / "served"
    root.mkdir()
    return root


@pytest.fixture
def media_server(media_root):
    """A started server for ``media_root``; tests put files there and program behaviours."""
    with MediaServer(media_root) as server:
        yield server
