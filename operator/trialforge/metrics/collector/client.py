"""Delivery: the ingest endpoint's client, the pause between requests, backoff."""

from __future__ import annotations

import http.client
import json
import logging
import random
import urllib.parse
from collections.abc import Iterator

from trialforge.metrics.collector.config import Config
from trialforge.metrics.contract import IngestAnswer, batch_bytes, batch_head, read_answer

log = logging.getLogger("trialforge.collector")

# A pause between requests is the send interval times 1 - SEND_JITTER to
# 1 + SEND_JITTER, drawn afresh each time.  With a fixed pause, collectors answered
# at the same moment (all of them, after any pause of the operator's) send at the
# same moment again, every interval, and such a herd only grows: each answer then
# waits behind a hundred others (Floyd & Jacobson, "The synchronization of periodic
# routing messages", who draw from 0.5 to 1.5 times the period too).
SEND_JITTER = 0.5


def send_pause(interval: float, rng: random.Random) -> float:
    """Seconds from one request's answer to the next request, while the trainer runs."""
    return interval * (1.0 + SEND_JITTER * (2.0 * rng.random() - 1.0))


def backoff_delays(base: float, cap: float, rng: random.Random | None = None) -> Iterator[float]:
    """Exponential backoff with 'equal jitter': half fixed, half random, capped."""
    rng = rng or random.Random()
    attempt = 0
    while True:
        ceiling = min(cap, base * (2**attempt))
        yield ceiling / 2 + rng.uniform(0, ceiling / 2)
        attempt = min(attempt + 1, 30)


class IngestClient:
    """POSTs batches to the ingest endpoint over one kept-alive connection."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        url = urllib.parse.urlsplit(cfg.ingest_url)
        if url.scheme not in ("http", "https"):
            raise ValueError(f"the ingest URL must be http(s): {cfg.ingest_url!r}")
        self.https = url.scheme == "https"
        self.host = url.hostname or "localhost"
        self.port = url.port or (443 if self.https else 80)
        self.target = url.path or "/"
        if url.query:
            self.target += "?" + url.query
        self.head = batch_head(cfg.namespace, cfg.trial, cfg.token)
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
            self._conn = cls(self.host, self.port, timeout=self.cfg.request_timeout)
        return self._conn

    def send(self, items: list[tuple[int, str]], wait: float = 0.0) -> IngestAnswer:
        """POST the encoded observations ``items`` ((seq, text) pairs) as one batch."""
        body = batch_bytes(self.head, [text for _, text in items], wait)
        for attempt in range(2):  # a kept-alive connection the server closed: once more
            conn = self._connection()
            try:
                conn.request(
                    "POST", self.target, body=body, headers={"Content-Type": "application/json"}
                )
                response = conn.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                if attempt == 0 and isinstance(
                    exc, http.client.RemoteDisconnected | BrokenPipeError | ConnectionResetError
                ):
                    continue
                log.debug("ingest unreachable: %s", exc)
                return IngestAnswer(0, None, str(exc))
            try:
                parsed = json.loads(data or b"{}")
            except ValueError:
                parsed = {"error": data[:200].decode("utf-8", "replace")}
            return read_answer(response.status, parsed if isinstance(parsed, dict) else {})
        return IngestAnswer(0, None, "no answer")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
