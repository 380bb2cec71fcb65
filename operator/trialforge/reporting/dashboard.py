"""``trialforge dashboard``: optuna-dashboard over a live Optuna mirror of an experiment.

The experiment (a run directory, or an Experiment on a cluster) is read every
``interval`` seconds and :class:`~trialforge.reporting.optuna_mirror.Mirror`
brings an Optuna storage (in memory unless ``--storage`` names one) up to date;
optuna-dashboard (``pip install 'trialforge[dashboard]'``) serves that storage.
The same server answers ``/trialforge/`` with Trialforge's own plots
(reporting.plots: parallel coordinates with every axis's values, learning
curves with pruned trials marked, history, Pareto front), drawn afresh from
the latest read; the study's note on the dashboard links to them.
"""

from __future__ import annotations

import html
import logging
import socketserver
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import optuna

from trialforge.reporting import plots
from trialforge.reporting.optuna_mirror import Mirror, SyncResult
from trialforge.reporting.rundata import RunData

log = logging.getLogger(__name__)

PREFIX = "/trialforge"
# slug -> title; drawn in this order on /trialforge/.
PLOTS = {
    "parallel": "Parallel coordinates",
    "learning-curves": "Learning curves",
    "history": "Optimisation history",
    "pareto": "Pareto front",
}


class DashboardMissing(RuntimeError):
    """optuna-dashboard is not installed."""


def _optuna_dashboard() -> Any:
    try:
        import optuna_dashboard
    except ImportError:
        raise DashboardMissing(
            "optuna-dashboard is not installed: pip install 'trialforge[dashboard]' "
            "(or pip install optuna-dashboard)"
        ) from None
    return optuna_dashboard


def plot_svgs(data: RunData) -> dict[str, str]:
    """slug -> SVG of every plot this experiment has now."""
    spec = data.spec
    front_names = {b.get("trial") for b in data.state.get("paretoFront") or []}
    front = [r for r in data.records if r.name in front_names]
    drawn = {
        "parallel": plots.parallel_svg(spec, data.records),
        "learning-curves": plots.learning_curves_svg(spec, data.records, data.observations),
        "history": plots.history_svg(spec, data.records),
        "pareto": plots.pareto_svg(spec, data.records, front),
    }
    return {slug: svg for slug, svg in drawn.items() if svg is not None}


def _placeholder(title: str) -> str:
    from trialforge.reporting.svg import Figure

    fig = Figure(480, 80, title)
    fig.text(240, 55, "nothing to draw yet", 12, text_anchor="middle", class_="placeholder")
    return fig.render()


class Dashboard:
    """The mirror, the latest read of the experiment, and the WSGI app serving both."""

    def __init__(self, source: Any, storage: Any = None, study_name: str | None = None) -> None:
        self.source = source
        self.mirror = Mirror(
            storage if storage is not None else optuna.storages.InMemoryStorage(), study_name
        )
        self.data: RunData | None = None
        self.last_error: str | None = None

    def refresh(self) -> SyncResult:
        data = self.source.read()
        result = self.mirror.sync(data)
        self.data = data
        self.last_error = None
        return result

    @property
    def study_id(self) -> int:
        assert self.mirror.study_id is not None, "refresh() first"
        return self.mirror.study_id

    def write_note(self) -> None:
        """The study's note on the dashboard: where it comes from, and our plots."""
        dashboard = _optuna_dashboard()
        assert self.data is not None and self.mirror.study_name is not None
        study = optuna.load_study(study_name=self.mirror.study_name, storage=self.mirror.storage)
        shown = {k: v for k, v in PLOTS.items() if k != "pareto" or self.data.spec.multi_objective}
        lines = [
            f"Mirrored by Trialforge from {self.data.source}, kept up to date while it runs.",
            "",
            f"**Trialforge's plots** (every axis with its values; pruned and failed trials "
            f"faded): [all of them]({PREFIX}/), "
            + ", ".join(f"[{title.lower()}]({PREFIX}/{slug}.svg)" for slug, title in shown.items()),
            "",
            f"![Learning curves]({PREFIX}/learning-curves.svg)",
            "",
            f"![Parallel coordinates]({PREFIX}/parallel.svg)",
        ]
        dashboard.save_note(study, "\n".join(lines))

    # -- WSGI ---------------------------------------------------------------------------

    def _page(self) -> str:
        data = self.data
        if data is None:
            return "<p>not read yet</p>"
        svgs = plot_svgs(data)
        phase = data.state.get("phase", "Running")
        refresh = (
            "" if phase in ("Succeeded", "Failed") else "<meta http-equiv='refresh' content='5'>"
        )
        e = html.escape
        body = "".join(
            f"<h2>{e(PLOTS[slug])}</h2><figure data-plot='{slug}'>{svg}</figure>"
            for slug, svg in svgs.items()
        )
        return (
            "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"{refresh}<title>Trialforge plots: {e(data.name)}</title>"
            "<style>body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1000px}"
            "svg{max-width:100%;height:auto}</style></head><body>"
            f"<h1>{e(data.name)}</h1><p>{e(data.source)}: {e(str(phase))}. "
            f"<a href='/dashboard/studies/{self.study_id}'>optuna-dashboard</a></p>"
            f"{body or '<p>No plot yet: no trial has ended.</p>'}</body></html>"
        )

    def plots_app(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")[len(PREFIX) :].strip("/")
        if path in ("", "index.html"):
            body, kind = self._page(), "text/html; charset=utf-8"
        elif path.endswith(".svg") and path[: -len(".svg")] in PLOTS and self.data is not None:
            slug = path[: -len(".svg")]
            svg = plot_svgs(self.data).get(slug)
            if svg is None:  # not yet (the note shows it before any trial has ended)
                svg = _placeholder(PLOTS[slug])
            body, kind = svg, "image/svg+xml"
        else:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found\n"]
        data = body.encode("utf-8")
        start_response(
            "200 OK",
            [
                ("Content-Type", kind),
                ("Content-Length", str(len(data))),
                ("Cache-Control", "no-store"),
            ],
        )
        return [data]

    def app(self) -> Callable[..., Iterable[bytes]]:
        dashboard_app = _optuna_dashboard().wsgi(self.mirror.storage)

        def application(
            environ: dict[str, Any], start_response: Callable[..., Any]
        ) -> Iterable[bytes]:
            if environ.get("PATH_INFO", "").startswith(PREFIX):
                return self.plots_app(environ, start_response)
            return dashboard_app(environ, start_response)

        return application


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)


def serve(
    source: Any,
    host: str = "127.0.0.1",
    port: int = 8080,
    storage: Any = None,
    study_name: str | None = None,
    interval: float = 2.0,
    once: bool = False,
    stop: threading.Event | None = None,
    say: Callable[[str], None] | None = None,
) -> int:
    """Mirror ``source``, serve the dashboard, follow until ``stop`` (or Ctrl-C)."""
    _optuna_dashboard()  # before anything else: the clear error
    if say is None:

        def say(text: str) -> None:
            print(text, file=sys.stderr, flush=True)

    dashboard = Dashboard(source, storage, study_name)
    dashboard.refresh()
    dashboard.write_note()
    server = make_server(
        host, port, dashboard.app(), server_class=_Server, handler_class=_QuietHandler
    )
    thread = threading.Thread(target=server.serve_forever, name="dashboard", daemon=True)
    thread.start()
    shown = host if ":" not in host else f"[{host}]"
    base = f"http://{shown}:{server.server_port}"
    say(f"optuna-dashboard of {source.describe()}: {base}/dashboard/studies/{dashboard.study_id}")
    say(f"trialforge plots: {base}{PREFIX}/ (Ctrl-C stops)")
    stop = stop or threading.Event()
    try:
        while not stop.wait(0 if once else max(0.1, interval)) and not once:
            try:
                dashboard.refresh()
            except Exception as exc:  # a read half-written, an API error: try again
                if str(exc) != dashboard.last_error:
                    say(f"warning: reading {source.describe()} failed ({exc}); trying again")
                dashboard.last_error = str(exc)
        if once:
            stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        server.server_close()
    return 0
