"""The API app under uvicorn on a loopback port, in a thread: for tests that drive it through a
real HTTP client (the CLI, SSE followers)."""

from __future__ import annotations

import threading
import time

import uvicorn

from api.app import create_app
from forgeline.embedded.postgres import free_port
from forgeline.settings import Settings


class ApiServer:
    """The API app under uvicorn on a loopback port, in a thread; `stop(force=True)` ends it
    with streams still open, as a crashed or redeployed server would."""

    def __init__(self, settings: Settings, port: int | None = None) -> None:
        self.port = port or free_port()
        config = uvicorn.Config(
            create_app(settings),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="on",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ApiServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "uvicorn did not start"
            time.sleep(0.05)
        return self

    def stop(self, *, force: bool = False) -> None:
        self.server.should_exit = True
        self.server.force_exit = force
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "uvicorn did not stop"
