"""The daemon's HTTP endpoint: /metrics, /healthz, /readyz, /status and the operator controls.

GET  /metrics   Prometheus text format
GET  /healthz   200 while the process loop is alive
GET  /readyz    200 once partitions are assigned and caught up, else 503
GET  /status    JSON: windows, lag, policy state, recent decisions, last errors
POST /v1/<control>  JSON body; controls are registered by the service (retrain, pause, resume)
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from distilld.daemon.metrics import DaemonMetrics

log = logging.getLogger(__name__)

Control = Callable[[dict[str, Any]], dict[str, Any]]


class ControlError(Exception):
    """A control request that cannot be honoured; becomes HTTP 409 with the message."""


class DaemonHttpServer:
    def __init__(
        self,
        host: str,
        port: int,
        metrics: DaemonMetrics,
        status: Callable[[], dict[str, Any]],
        healthy: Callable[[], bool],
        ready: Callable[[], bool],
        controls: dict[str, Control] | None = None,
        control_token_env: str | None = None,
    ):
        self.metrics = metrics
        self.status = status
        self.healthy = healthy
        self.ready = ready
        self.controls = controls or {}
        # an empty variable must not mean "any request without a header passes"
        self.token = (os.environ.get(control_token_env) or None) if control_token_env else None
        if control_token_env and self.token is None:
            raise ValueError(
                f"http.control_token_env names {control_token_env}, which is unset or empty; "
                "set it, or remove control_token_env to leave the controls open on http.host"
            )
        handler = self._handler_class()
        self.server = ThreadingHTTPServer((host, port), handler)
        self.server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> DaemonHttpServer:
        self._thread = threading.Thread(target=self.server.serve_forever, name="distilld-http", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler_class(self):
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, fmt, *args):  # access logs would drown the structured log
                return

            def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _json(self, code: int, doc: Any) -> None:
                self._send(code, json.dumps(doc, default=str, indent=1).encode())

            def do_GET(self):
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(outer.metrics.registry), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    ok = outer.healthy()
                    self._json(200 if ok else 503, {"healthy": ok})
                elif path == "/readyz":
                    ok = outer.ready()
                    self._json(200 if ok else 503, {"ready": ok})
                elif path == "/status":
                    try:
                        self._json(200, outer.status())
                    except Exception as err:  # a status bug must not take the endpoint down
                        log.exception("status failed")
                        self._json(500, {"error": repr(err)})
                else:
                    self._json(404, {"error": f"no such path {path}"})

            def do_POST(self):
                path = self.path.split("?", 1)[0]
                name = path.removeprefix("/v1/")
                control = outer.controls.get(name) if path.startswith("/v1/") else None
                if control is None:
                    self._json(404, {"error": f"no such control {path}"})
                    return
                if outer.token is not None:
                    given = self.headers.get("Authorization", "").removeprefix("Bearer ")
                    if not hmac.compare_digest(given.encode(), outer.token.encode()):
                        self._json(401, {"error": "missing or wrong bearer token"})
                        return
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                    if not isinstance(body, dict):
                        raise ValueError("body must be a JSON object")
                except ValueError as err:
                    self._json(400, {"error": f"bad JSON body: {err}"})
                    return
                try:
                    self._json(200, control(body))
                except ControlError as err:
                    self._json(409, {"error": str(err)})
                except (KeyError, ValueError, TypeError) as err:
                    self._json(400, {"error": str(err)})

        return Handler
