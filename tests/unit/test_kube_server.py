"""The operator's HTTP routes, served for real on a local port (no cluster: no ingest)."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from typing import Any

from trialforge.kube import server


def _get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


def _post(url: str, body: bytes) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_health_metrics_and_a_disabled_ingest() -> None:
    leader = [False]

    async def scenario() -> list[Any]:
        runner = await server.serve(server.build_app(None, lambda: leader[0]), "127.0.0.1", 0)
        port = runner.addresses[0][1]
        base = f"http://127.0.0.1:{port}"
        try:
            follower = await asyncio.to_thread(_get, f"{base}/healthz")
            leader[0] = True
            held = await asyncio.to_thread(_get, f"{base}/healthz")
            metrics = await asyncio.to_thread(_get, f"{base}/metrics")
            ingest = await asyncio.to_thread(_post, f"{base}/v1/observations", b"{}")
        finally:
            await runner.cleanup()
        return [follower, held, metrics, ingest]

    follower, held, metrics, ingest = asyncio.run(scenario())
    assert follower[0] == 200 and json.loads(follower[2]) == {"ok": True, "leader": False}
    assert json.loads(held[2])["leader"] is True
    assert metrics[0] == 200 and metrics[1].startswith("text/plain")
    assert b"trialforge_" in metrics[2]
    assert ingest == (404, {"reason": "IngestDisabled", "error": "ingest is disabled"})
