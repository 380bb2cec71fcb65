"""The ``push`` source: ``trialforge.report()`` posts each observation to the sidecar."""

from __future__ import annotations

import ipaddress
import json
import logging
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from trialforge.api.observation import Observation
from trialforge.metrics.collector.config import Config
from trialforge.metrics.collector.journal import Journal
from trialforge.metrics.collector.sources.base import MetricsSource, reader_state, register
from trialforge.metrics.contract import PUSH_HOST
from trialforge.metrics.parsers import JsonLinesParser, ObservationParser, ObservationReader

log = logging.getLogger("trialforge.collector")


def may_report(client: str) -> bool:
    """Reports come from the trainer in the same network namespace: loopback only."""
    try:
        return ipaddress.ip_address(client).is_loopback
    except ValueError:
        return False


class PushServer:
    """``trialforge.report()`` posts here: one JSON observation per request.

    An observation is in the journal before the answer goes back; with the
    journal full the answer is 503 and ``report()`` tries again.
    """

    def __init__(
        self, port: int, journal: Journal, reader: ObservationReader, host: str = PUSH_HOST
    ) -> None:
        self.journal = journal
        self.reader = reader
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._answer(200, {"ok": True})

            def do_POST(self) -> None:
                if not may_report(self.client_address[0]):
                    # it listens on the pod's IP for the kubelet's probe; only the
                    # trainer, in the same network namespace, reports
                    self.close_connection = True
                    self._answer(403, {"error": "reports are taken from the pod itself only"})
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode("utf-8", "replace")
                code, answer = outer.accept(body)
                self._answer(code, answer)

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def accept(self, body: str) -> tuple[int, dict[str, Any]]:
        with self.lock:
            if self.journal.room() <= 0:
                return 503, {"error": "the collector's buffer is full; try again"}
            obs = self.reader.feed_line(" ".join(body.split("\n")))
            if obs is None:
                return 400, {"error": "no metrics in this report", "junk": self.reader.junk}
            self.journal.append([obs], reader=reader_state(self.reader))
        return 200, {"ok": True}

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        if self.thread.is_alive():  # shutdown() waits for a serve_forever() that never ran
            self.server.shutdown()
        self.server.server_close()


@register("push")
class PushSource(MetricsSource):
    """The push server as a source: what it takes is in the journal at once."""

    polled = False

    def __init__(self, server: PushServer) -> None:
        self.server = server

    @property
    def port(self) -> int:
        return self.server.port

    @classmethod
    def open(
        cls, cfg: Config, journal: Journal, reader: ObservationReader, saved: Mapping[str, Any]
    ) -> PushSource:
        return cls(PushServer(cfg.push_port, journal, reader, host=cfg.push_listen))

    @classmethod
    def parser(cls, cfg: Config) -> ObservationParser:
        return JsonLinesParser()  # report() posts JSON, whatever the format says

    def poll(self, limit: int = 1 << 30, final: bool = False) -> list[Observation]:
        return []  # each report went into the journal as it came

    def position(self) -> dict[str, Any]:
        return {}

    def start(self) -> None:
        self.server.start()
        host, port = self.server.server.server_address[:2]
        log.info("push server on %s:%d", host, port)

    def close(self) -> None:
        self.server.close()
