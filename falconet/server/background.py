"""Run an app under a real uvicorn server in a background thread, on a loopback port.

For tests and for embedding a prediction server in another program: the socket is bound before
the server starts (port 0 picks a free one), so the address is known at once and nothing races
for the port.
"""
from __future__ import annotations

import socket
import threading
import time
import urllib.request
from typing import Any, Optional


class BackgroundServer:
    """``with BackgroundServer(app) as server: httpx.get(server.url + "/healthz")``."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning") -> None:
        import uvicorn

        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.host, self.port = host, self.sock.getsockname()[1]
        self.url = f"http://{host}:{self.port}"
        self.app = app
        self.server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True,
                                       name=f"uvicorn:{self.port}")

    def start(self, ready_path: Optional[str] = "/readyz", timeout_s: float = 120.0) -> "BackgroundServer":
        """Start, and wait until the server answers (and ``ready_path`` says 200, when given)."""
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.thread.is_alive():
                raise RuntimeError("the server thread stopped while starting")
            if self.server.started:
                if ready_path is None:
                    return self
                try:
                    with urllib.request.urlopen(self.url + ready_path, timeout=2) as answer:
                        if answer.status == 200:
                            return self
                except OSError:
                    pass
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"{self.url}{ready_path or ''} was not ready after {timeout_s:g} s")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.sock.close()

    def __enter__(self) -> "BackgroundServer":
        return self if self.thread.is_alive() else self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
