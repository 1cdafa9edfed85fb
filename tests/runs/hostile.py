"""Hostile stages for the build-isolation tests: a stage process around a hostile script, a
marker no stage may ever print, and loopback listeners that count what reaches them."""

from __future__ import annotations

import socket
import threading
import uuid
from pathlib import Path

import pytest

from infra.runners import Runner, StageProcess

MARKER = f"hostile-marker-{uuid.uuid4().hex}"


class Listener:
    """A loopback TCP listener that counts the connections it accepts."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = int(self.sock.getsockname()[1])
        self.accepted = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


def hostile(
    runner: Runner, tmp_path: Path, script: str, *, image: str | None = None, **kw: object
) -> StageProcess:
    root = tmp_path / "workspaces" / uuid.uuid4().hex
    return StageProcess(
        name=f"fl-{uuid.uuid4().hex[:12]}-hostile-1",
        script=script,
        workspace=root,
        root=root,
        timeout_seconds=float(kw.pop("timeout", 30)),  # type: ignore[arg-type]
        image=image,
        **kw,  # type: ignore[arg-type]
    )


def image_for(runner: Runner, request: pytest.FixtureRequest) -> str | None:
    return request.getfixturevalue("busybox_image") if runner.kind == "docker" else None


# A TCP connect from inside the stage, with whatever the image has (python3 or busybox nc).
CONNECT = (
    "probe() { if command -v python3 >/dev/null; then "
    'python3 -c "import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 2)" '
    '"$1" "$2" 2>/dev/null; else nc -w 2 "$1" "$2" </dev/null >/dev/null 2>&1; fi; }; '
)


class HTTPListener:
    """A tiny HTTP server on a loopback address, counting the requests that reach it."""

    def __init__(self, host: str) -> None:
        import http.server

        hits: list[str] = []
        self.hits = hits

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hits.append(self.path)
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"reached")

            def log_message(self, *args: object) -> None:
                return None

        self.server = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
