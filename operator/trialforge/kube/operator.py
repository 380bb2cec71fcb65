"""``trialforge operator``: kopf watches, one coalescing queue of reconciles, the ingest server.

Explicit registration on our own registry, as kopf's docs recommend for
libraries.  Every watched change (an Experiment, one of our Trials, Jobs or
pods) only *requests* a reconcile of the Experiment it belongs to; a queue
coalesces bursts so a hundred pod updates cost one reconcile, and reconciles of
different experiments run in parallel threads.  Only the Lease holder acts.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import kopf
from aiohttp import web
from kubernetes import client, config
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from trialforge.api.experiment import GROUP, VERSION
from trialforge.api.status import TERMINAL_PHASES
from trialforge.kube import names
from trialforge.kube.cache import CachedKube
from trialforge.kube.client import Kube
from trialforge.kube.ingest import (
    DISABLED,
    INLINE_BYTES,
    WRITE_INTERVAL,
    WRITES_PER_SECOND,
    Ingest,
    WouldBlock,
    objective_tails,
)
from trialforge.kube.leader import LeaderElection
from trialforge.kube.reconcile import Reconciler, objective_directions
from trialforge.metrics import exporter
from trialforge.metrics.exporter import (
    INGEST_SECONDS,
    LEADER,
    OBSERVATIONS_RECEIVED,
    OBSERVATIONS_REJECTED,
    RECONCILE_ERRORS,
    RECONCILE_SECONDS,
)

log = logging.getLogger("trialforge.operator")

Key = tuple[str, str]
INGEST_RECONCILE_DELAY = 0.5  # seconds
SWITCH_INTERVAL = 0.0005  # seconds
GC_THRESHOLDS = (10_000, 10, 100)  # default (700, 10, 10)
YOUNG_COLLECTION_INTERVAL = 0.1  # seconds


@dataclass
class OperatorConfig:
    namespaces: list[str] = field(default_factory=list)  # empty: all namespaces
    lease_namespace: str = "default"
    identity: str = ""
    listen: str = "0.0.0.0"
    port: int = 8080
    ingest_url: str | None = None
    ingest_key: bytes | None = None
    workers: int = 4
    resync: float = 30.0
    # The image of the metrics collector sidecar (the operator's own image).
    collector_image: str | None = None
    # At most this many trialforge_trial_metric series are exported.
    max_metric_series: int = exporter.DEFAULT_SERIES_LIMIT
    # The ingest's status writes: per trial at most one per interval, all together
    # at most this many a second.
    ingest_write_interval: float = WRITE_INTERVAL
    ingest_writes_per_second: float = WRITES_PER_SECOND


class YoungCollections:
    """Collects the youngest generation every ``interval`` seconds, on the event loop.

    The threshold counts allocations minus deallocations, and the flusher and the
    reconciler free old Trials (thousands of objects each) as fast as the ingest
    makes observations: the youngest generation grew to 50,000-70,000 objects,
    most of them held observations, before a collection came, and that collection
    took 20-35 ms of CPU in whichever thread it fell on while every answer waited
    for the GIL.  Collected every 100 ms it holds a few thousand and takes about a
    millisecond, between two callbacks of the loop (bench/ingest.py, a
    ``gc.callbacks`` probe; bench/RESULTS.md).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float) -> None:
        self.loop = loop
        self.interval = interval
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._handle = self.loop.call_later(self.interval, self._collect)

    def _collect(self) -> None:
        gc.collect(0)
        self._handle = self.loop.call_later(self.interval, self._collect)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class Queue:
    """Reconcile requests, coalesced per experiment; one reconcile per experiment at a time."""

    def __init__(self, reconciler: Reconciler, leader: LeaderElection, workers: int) -> None:
        self.reconciler = reconciler
        self.leader = leader
        self.workers = workers
        self._queue: asyncio.Queue[Key] = asyncio.Queue()
        self._pending: set[Key] = set()
        self._running: set[Key] = set()
        self._dirty: set[Key] = set()
        self._timers: dict[Key, asyncio.TimerHandle] = {}
        self._soon: dict[Key, asyncio.TimerHandle] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.loop = asyncio.get_running_loop()

    def request(self, key: Key) -> None:
        if key in self._running:
            self._dirty.add(key)
        elif key not in self._pending:
            self._pending.add(key)
            self._queue.put_nowait(key)

    def request_threadsafe(self, key: Key) -> None:
        self.loop.call_soon_threadsafe(self.request, key)

    def request_soon(self, key: Key, seconds: float) -> None:
        """A reconcile within ``seconds``: many requests in that time make one (ingest)."""
        if key in self._pending or key in self._soon:
            return
        self._soon[key] = self.loop.call_later(seconds, self._fire_soon, key)

    def _fire_soon(self, key: Key) -> None:
        self._soon.pop(key, None)
        self.request(key)

    def request_soon_threadsafe(self, key: Key, seconds: float) -> None:
        self.loop.call_soon_threadsafe(self.request_soon, key, seconds)

    def later(self, key: Key, seconds: float) -> None:
        old = self._timers.pop(key, None)
        if old:
            old.cancel()
        self._timers[key] = self.loop.call_later(seconds, self.request, key)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._work()) for _ in range(self.workers)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _work(self) -> None:
        while True:
            key = await self._queue.get()
            self._pending.discard(key)
            if not self.leader.is_leader:
                continue  # the leader will do it; we resync on winning the lease
            self._running.add(key)
            started = time.perf_counter()
            try:
                again = await asyncio.to_thread(self.reconciler.reconcile, *key)
            except Exception:
                RECONCILE_ERRORS.inc()
                log.exception("reconcile of %s/%s failed; retrying", *key)
                again = 5.0
            finally:
                RECONCILE_SECONDS.observe(time.perf_counter() - started)
                self._running.discard(key)
            if key in self._dirty:
                self._dirty.discard(key)
                self.request(key)
            elif again is not None:
                self.later(key, again)


def _owner_experiment(body: Any) -> str | None:
    labels = body.get("metadata", {}).get("labels") or {}
    return labels.get(names.LABEL_EXPERIMENT)


def build_registry() -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        # Watches that hang silently are kopf's best known failure (DESIGN §5).
        settings.watching.server_timeout = 120
        settings.watching.client_timeout = 150
        settings.watching.connect_timeout = 10
        settings.posting.level = logging.WARNING
        settings.peering.standalone = True
        # Only on.event handlers: nothing to store; keep kopf's marks out of our status.
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
        await _start(memo)

    @kopf.on.cleanup(registry=registry)
    async def cleanup(memo: kopf.Memo, **_: Any) -> None:
        await _stop(memo)

    @kopf.on.event(GROUP, VERSION, names.EXPERIMENTS, registry=registry)
    async def experiment_event(event: dict[str, Any], body: Any, memo: kopf.Memo, **_: Any) -> None:
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        if event.get("type") == "DELETED":
            memo.reconciler.forget(*key)
            memo.kube.cache.forget(*key)
            return
        memo.queue.request(key)

    managed = {names.LABEL_MANAGED: names.MANAGER}

    def remember(kind: str, event: dict[str, Any], memo: kopf.Memo) -> None:
        # Every replica keeps its cache warm, so a new leader starts with it.
        if hasattr(memo, "kube") and isinstance(event.get("object"), dict):
            memo.kube.cache.seen(kind, event.get("type"), event["object"])

    def owned(kind: str) -> Callable[..., Awaitable[None]]:
        async def handler(body: Any, event: dict[str, Any], memo: kopf.Memo, **_: Any) -> None:
            remember(kind, event, memo)
            experiment = _owner_experiment(body)
            if experiment and hasattr(memo, "queue"):
                memo.queue.request((body["metadata"]["namespace"], experiment))

        return handler

    async def owned_trial(body: Any, event: dict[str, Any], memo: kopf.Memo, **_: Any) -> None:
        remember("trials", event, memo)
        ingest = getattr(memo, "ingest", None)
        if ingest is not None:
            gone = event.get("type") == "DELETED"
            if gone or (body.get("status") or {}).get("phase") in TERMINAL_PHASES:
                meta = body["metadata"]
                why = "the trial was deleted" if gone else "the trial has ended"
                ingest.forget(meta["namespace"], meta["name"], why)
        # Most Trial changes are the ingest's stored observations (or the reconciler's
        # own writes): one reconcile per short burst, not one per batch.
        experiment = _owner_experiment(body)
        if experiment and hasattr(memo, "queue"):
            key = (body["metadata"]["namespace"], experiment)
            memo.queue.request_soon(key, INGEST_RECONCILE_DELAY)

    kopf.on.event(GROUP, VERSION, names.TRIALS, labels=managed, registry=registry)(owned_trial)
    kopf.on.event("batch", "v1", "jobs", labels=managed, registry=registry, id="jobs")(
        owned("jobs")
    )
    kopf.on.event("", "v1", "pods", labels=managed, registry=registry, id="pods")(owned("pods"))
    return registry


async def _start(memo: kopf.Memo) -> None:
    cfg: OperatorConfig = memo.config
    api_client = memo.api_client
    kube = CachedKube(api_client)
    reconciler = Reconciler(kube, cfg.ingest_url, cfg.ingest_key, cfg.resync)
    reconciler.collector_image = cfg.collector_image
    exporter.set_series_limit(cfg.max_metric_series)
    memo.kube = kube
    memo.reconciler = reconciler

    LEADER.set(0)

    def on_leadership(held: bool) -> None:
        LEADER.set(1 if held else 0)
        if held:
            kube.cache.invalidate()
            # A new leader trusts nothing it did not read: look at every experiment.
            for namespace in cfg.namespaces or [None]:
                for xp in kube.list_experiments(namespace):
                    memo.queue.request_threadsafe(
                        (xp["metadata"]["namespace"], xp["metadata"]["name"])
                    )

    leader = LeaderElection(api_client, cfg.lease_namespace, cfg.identity, on_change=on_leadership)
    memo.leader = leader
    memo.queue = Queue(reconciler, leader, cfg.workers)
    memo.queue.start()
    leader.start()
    memo.runner = await _serve(memo, cfg, kube, reconciler)
    memo.young = YoungCollections(asyncio.get_running_loop(), YOUNG_COLLECTION_INTERVAL)
    memo.young.start()


async def _stop(memo: kopf.Memo) -> None:
    if hasattr(memo, "young"):
        memo.young.stop()
    if hasattr(memo, "queue"):
        await memo.queue.stop()
    if hasattr(memo, "leader"):
        await asyncio.to_thread(memo.leader.stop)
    if hasattr(memo, "runner"):
        await memo.runner.cleanup()
    if getattr(memo, "ingest", None) is not None:
        memo.ingest.close()


async def _serve(
    memo: kopf.Memo, cfg: OperatorConfig, kube: Kube, reconciler: Reconciler
) -> web.AppRunner:
    ingest = None
    if cfg.ingest_key is not None:
        ingest = Ingest(
            kube,
            cfg.ingest_key,
            lambda ns, xp: objective_directions(reconciler, ns, xp),
            # Stored observations may prune: reconcile soon, once per burst of batches.
            lambda ns, xp: memo.queue.request_soon_threadsafe((ns, xp), INGEST_RECONCILE_DELAY),
            tails_for=lambda ns, xp: objective_tails(reconciler, ns, xp),
            write_interval=cfg.ingest_write_interval,
            writes_per_second=cfg.ingest_writes_per_second,
        )
    memo.ingest = ingest

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"ok": True, "leader": memo.leader.is_leader})

    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest(exporter.REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def observations(request: web.Request) -> web.Response:
        if ingest is None:
            return web.json_response(DISABLED.body, status=DISABLED.status)
        started = time.perf_counter()
        raw = await request.read()
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

    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/v1/observations", observations)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, cfg.listen, cfg.port).start()
    log.info("serving /healthz, /metrics and /v1/observations on %s:%d", cfg.listen, cfg.port)
    return runner


def load_api_client(kubeconfig: str | None) -> client.ApiClient:
    if kubeconfig or not os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_kube_config(config_file=kubeconfig)
    else:
        config.load_incluster_config()
    return client.ApiClient()


def run(cfg: OperatorConfig, kubeconfig: str | None = None) -> None:
    if kubeconfig:
        os.environ["KUBECONFIG"] = kubeconfig  # kopf's own login reads it too
    api_client = load_api_client(kubeconfig)
    cfg.identity = cfg.identity or f"{socket.gethostname()}-{os.getpid()}"
    # The event loop (watches, ingest answers) gives up the GIL on every socket call
    # and waits for it while the flusher and reconcile threads compute: with the
    # default 5 ms switch interval that wait, not the work, set the ingest's answer
    # time under load (bench/ingest.py).
    sys.setswitchinterval(SWITCH_INTERVAL)
    # With the default thresholds a full collection ran about once a second under
    # ingest load and stopped everything for 100-160 ms (the Trials in the caches are
    # hundreds of thousands of objects): freeze what start-up made, and collect the
    # young generations less often and the old one rarely (bench/ingest.py); the
    # youngest is also collected on a timer (YoungCollections).
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    memo = kopf.Memo(config=cfg, api_client=api_client)
    # kopf logs every handler call at INFO: one line per watched event, which
    # drowns the operator's own log. Keep its per-object chatter for --log-level debug.
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    kopf.run(
        registry=build_registry(),
        standalone=True,
        clusterwide=not cfg.namespaces,
        namespaces=cfg.namespaces,
        memo=memo,
    )
