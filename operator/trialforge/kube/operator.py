"""``trialforge operator``: the kopf wiring, start-up and shutdown of the operator's parts.

Explicit registration on our own registry, as kopf's docs recommend for
libraries.  Every watched change (an Experiment, one of our Trials, Jobs or
pods) only *requests* a reconcile of the Experiment it belongs to
(:mod:`trialforge.kube.workqueue`); the ingest and the metrics are served by
:mod:`trialforge.kube.server`; the interpreter's GC is tuned by
:mod:`trialforge.kube.gctuning`.  Only the Lease holder acts.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import kopf
from kubernetes import client, config

from trialforge.api.experiment import GROUP, VERSION
from trialforge.api.status import TERMINAL_PHASES
from trialforge.kube import names, server
from trialforge.kube.cache import CachedKube
from trialforge.kube.client import Kube
from trialforge.kube.gctuning import YOUNG_COLLECTION_INTERVAL, YoungCollections, tune_interpreter
from trialforge.kube.ingest import WRITE_INTERVAL, WRITES_PER_SECOND, Ingest, objective_tails
from trialforge.kube.leader import LeaderElection
from trialforge.kube.reconcile import Reconciler, objective_directions
from trialforge.kube.workqueue import Queue
from trialforge.metrics import exporter
from trialforge.metrics.exporter import LEADER

INGEST_RECONCILE_DELAY = 0.5  # seconds


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
    memo.ingest = _ingest(memo, cfg, kube, reconciler)
    app = server.build_app(memo.ingest, lambda: leader.is_leader)
    memo.runner = await server.serve(app, cfg.listen, cfg.port)
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


def _ingest(
    memo: kopf.Memo, cfg: OperatorConfig, kube: Kube, reconciler: Reconciler
) -> Ingest | None:
    if cfg.ingest_key is None:
        return None
    return Ingest(
        kube,
        cfg.ingest_key,
        lambda ns, xp: objective_directions(reconciler, ns, xp),
        # Stored observations may prune: reconcile soon, once per burst of batches.
        lambda ns, xp: memo.queue.request_soon_threadsafe((ns, xp), INGEST_RECONCILE_DELAY),
        tails_for=lambda ns, xp: objective_tails(reconciler, ns, xp),
        write_interval=cfg.ingest_write_interval,
        writes_per_second=cfg.ingest_writes_per_second,
    )


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
    tune_interpreter()
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
        # kopf's own default calls getpass.getuser(), which fails in a pod whose
        # UID has no passwd entry (the chart's restricted securityContext)
        identity=cfg.identity,
    )
