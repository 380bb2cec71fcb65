"""The operator's HTTP server: /healthz, /metrics and the collectors' /v1/observations."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from trialforge.kube.ingest import (
    BODY_SECONDS,
    DISABLED,
    INLINE_BYTES,
    MAX_REQUEST_BYTES,
    TOO_LARGE,
    TOO_SLOW,
    Answer,
    Ingest,
    WouldBlock,
)
from trialforge.metrics import exporter
from trialforge.metrics.contract import INGEST_PATH
from trialforge.metrics.exporter import (
    INGEST_SECONDS,
    OBSERVATIONS_RECEIVED,
    OBSERVATIONS_REJECTED,
)

# The operator's logger, as before the split: its lines keep their name.
log = logging.getLogger("trialforge.operator")


def build_app(ingest: Ingest | None, is_leader: Callable[[], bool]) -> web.Application:
    """The routes; ``ingest`` None (no ingest key) answers observations with 404."""

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"ok": True, "leader": is_leader()})

    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest(exporter.REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def observations(request: web.Request) -> web.Response:
        if ingest is None:
            return web.json_response(DISABLED.body, status=DISABLED.status)
        started = time.perf_counter()
        refused = await _refused_body(request)
        if isinstance(refused, Answer):
            # Over the size limit, or a body that trickles in (slowloris): refused with
            # its reason and counted; the connection is closed, not kept alive.
            OBSERVATIONS_REJECTED.labels(refused.reason).inc()
            response = web.json_response(refused.body, status=refused.status)
            response.force_close()
            return response
        raw = refused
        answer = None
        if len(raw) <= INLINE_BYTES:
            # A small batch costs less than the hop to a thread and back: answer it here,
            # unless the trial must first be read from the cluster.
            with contextlib.suppress(WouldBlock):
                answer = ingest.handle_bytes(raw, may_block=False)
        if answer is None:
            # A large batch is parsed off the event loop (kopf's watches share it).
            answer = await asyncio.to_thread(ingest.handle_bytes, raw)
        if answer.reason:
            OBSERVATIONS_REJECTED.labels(answer.reason).inc()
        else:
            OBSERVATIONS_RECEIVED.inc(answer.body.get("accepted", 0))
        INGEST_SECONDS.observe(time.perf_counter() - started)
        body = answer.body
        if answer.wait and answer.key is not None:
            # The collector has nothing new: answer once what it sent is stored.
            stored = asyncio.Event()
            loop = asyncio.get_running_loop()
            if ingest.when_stored(*answer.key, lambda: loop.call_soon_threadsafe(stored.set)):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stored.wait(), answer.wait)
                body = {**body, **ingest.progress(*answer.key)}
        return web.json_response(body, status=answer.status)

    app = web.Application(client_max_size=MAX_REQUEST_BYTES)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_post(INGEST_PATH, observations)
    return app


async def _refused_body(request: web.Request) -> Answer | bytes:
    """The request's body, or the answer that refuses it (too large, too slow)."""
    if request.content_length is not None and request.content_length > MAX_REQUEST_BYTES:
        return TOO_LARGE
    try:
        return await asyncio.wait_for(request.read(), BODY_SECONDS)
    except web.HTTPRequestEntityTooLarge:  # no Content-Length (chunked), and too much
        return TOO_LARGE
    except TimeoutError:
        return TOO_SLOW


async def serve(app: web.Application, listen: str, port: int) -> web.AppRunner:
    """Listening on ``listen:port``; the caller cleans the runner up at shutdown."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, listen, port).start()
    log.info("serving /healthz, /metrics and /v1/observations on %s:%d", listen, port)
    return runner
