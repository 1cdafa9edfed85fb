"""The fake GitHub / GitLab API of the tests as a process of its own, for trying the README's
"Connect GitHub / GitLab" section on one machine:

    uv run python -m tests.integrations.fake_forge_server --port 9100

It accepts commit statuses (and pull request comments) on 127.0.0.1 like the forges' APIs do
and prints one JSON line per request it answers: method, path, answer, and the status's
context (GitLab: name), state and description. Start the stack with FORGELINE_GITHUB_API_URL
(GitLab: FORGELINE_GITLAB_API_URL, with `/api/v4`) pointing at it."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from typing import Any

from tests.integrations.fake_forge import Failure, FakeForge, _handler


@dataclass
class PrintingForge(FakeForge):
    """A FakeForge that also writes each request it answered to stdout."""

    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Failure:
        outcome = super().answer(method, path, headers, body)
        with self.lock:
            kept = self.received[-1].body if self.received else {}
        line: dict[str, Any] = {"method": method, "path": path, "answered": outcome.status}
        for key in ("context", "name", "state", "description", "target_url"):
            if key in kept:
                line[key] = kept[key]
        print(json.dumps(line), flush=True)
        return outcome


def serve(host: str, port: int) -> None:
    forge = PrintingForge()
    server = ThreadingHTTPServer((host, port), _handler(forge))
    forge.url = f"http://{host}:{server.server_address[1]}"
    print(json.dumps({"listening": forge.url}), flush=True)

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="loopback only by default")
    parser.add_argument("--port", type=int, default=9100, help="0 picks a free port")
    args = parser.parse_args(argv)
    serve(args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
