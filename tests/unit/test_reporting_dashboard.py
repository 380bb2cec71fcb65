"""reporting/dashboard.py: `trialforge dashboard` serves optuna-dashboard over a live
mirror of a running local experiment; a real browser (the Debian chromium, driven by
Playwright) opens it.

Screenshots go to $TRIALFORGE_TEST_ARTIFACTS (default: test-artifacts/ in the
repository, gitignored).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.rundirs import TRIALS, make_run

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("TRIALFORGE_TEST_ARTIFACTS", ROOT / "test-artifacts"))

pytest.importorskip("optuna_dashboard")

TRAINER = """
import json, os, pathlib, sys, time
params = json.loads(os.environ["TRIALFORGE_PARAMS"])
gate = pathlib.Path(sys.argv[1])
for step in (1, 2, 3):
    print(json.dumps({"step": step, "loss": (params["x"] - 0.4) ** 2 + 1.0 / step}), flush=True)
    if step == 2:  # every trial waits here until the test opens the gate
        while not gate.exists():
            time.sleep(0.05)
if params["mode"] == "crash":
    sys.exit(3)
"""

EXPERIMENT = """
apiVersion: trialforge.io/v1alpha1
kind: Experiment
metadata: {name: gated}
spec:
  objective: {metric: loss, direction: minimize}
  parameters:
    - {name: x, type: discrete, values: [0.1, 0.4, 0.9]}
    - {name: mode, type: categorical, values: [ok, crash]}
  search: {algorithm: grid, seed: 3}
  budget: {maxTrials: 6, parallelism: 2, maxFailedTrials: 10}
  trial:
    retries: 0
    timeout: 2m
    metrics: {format: json}
    template:
      spec:
        containers:
          - {name: trainer, image: none, command: [python, trainer.py, GATE]}
"""


def wait_for(check: Callable[[], Any], what: str, timeout: float = 120.0) -> Any:
    """``check()``'s first true answer; fails naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        answer = check()
        if answer:
            return answer
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what} ({timeout:.0f} s)")
        time.sleep(0.2)


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return json.loads(answer.read())


def get_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return answer.read().decode()


def start_dashboard(*args: str) -> tuple[subprocess.Popen[str], str]:
    """`trialforge dashboard ARGS --port 0`, and the base URL it says it serves."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "operator"), str(ROOT)])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "trialforge.cli", "dashboard", *args, "--port", "0",
         "--interval", "0.3"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env,
    )  # fmt: skip
    assert proc.stderr is not None
    line = proc.stderr.readline()
    found = re.search(r"(http://127\.0\.0\.1:\d+)/dashboard/studies/(\d+)", line)
    if found is None:
        proc.kill()
        pytest.fail(f"trialforge dashboard said {line!r} {proc.stderr.read()[-2000:]}")
    return proc, found.group(1)


def stop(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(20)
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium from the Debian package, driven by Playwright; skipped only off CI."""
    missing = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = "the playwright package (pip install -e '.[dev]')"
    if missing is None and not os.path.exists(CHROMIUM):
        missing = f"{CHROMIUM} (apt-get install chromium, or e2e/cluster deps)"
    if missing is not None:
        if os.environ.get("CI"):
            pytest.fail(f"the browser tests need {missing}")
        pytest.skip(f"the browser tests need {missing}")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


def _trials(base: str) -> list[dict[str, Any]]:
    return get_json(f"{base}/api/studies/0")["trials"]


def _attr(trial: dict[str, Any], key: str) -> Any:
    return next((a["value"] for a in trial["user_attrs"] if a["key"] == key), None)


def test_the_dashboard_follows_a_running_local_experiment_in_a_browser(
    tmp_path: Path, browser: Any
) -> None:
    gate = tmp_path / "gate"
    (tmp_path / "trainer.py").write_text(TRAINER)
    (tmp_path / "gated.yaml").write_text(EXPERIMENT.replace("GATE", str(gate)))
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "operator")}
    run = subprocess.Popen(
        [sys.executable, "-m", "trialforge.cli", "run", str(tmp_path / "gated.yaml"), "--dir",
         str(run_dir), "--no-table", "-q"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    dashboard = None
    try:
        wait_for(lambda: (run_dir / "experiment.yaml").exists(), "the run directory")
        dashboard, base = start_dashboard(str(run_dir))

        # While it runs: two trials running, each at its second step (the gate).
        def running() -> list[dict[str, Any]]:
            trials = [t for t in _trials(base) if t["state"] == "Running"]
            ok = len(trials) == 2 and all(len(t["intermediate_values"]) == 2 for t in trials)
            return trials if ok else []

        live = wait_for(running, "two running trials at step 2 in the mirror")
        assert {_attr(t, "trialforge_trial") for t in live} == {"gated-0", "gated-1"}
        assert [v["step"] for v in live[0]["intermediate_values"]] == [1, 2]
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{base}/dashboard/studies/0/trials")
        page.get_by_text("Running").first.wait_for(timeout=60_000)
        body = page.inner_text("body")
        assert "gated" in body and "Trial 0" in body and "Trial 1" in body
        page.screenshot(path=str(ARTIFACTS / "dashboard-local-running.png"))

        gate.write_text("open")
        assert run.wait(180) == 0, run.stderr.read() if run.stderr else ""

        # The mirror catches up with the end: every trial, failed ones as Fail.
        def finished() -> list[dict[str, Any]]:
            trials = _trials(base)
            done = len(trials) == 6 and all(t["state"] in ("Complete", "Fail") for t in trials)
            return trials if done else []

        trials = wait_for(finished, "six finished trials in the mirror")
        from trialforge.local.rundir import RunDirectory

        records = {r.name: r for r in RunDirectory(run_dir).load_trials()}
        assert len(records) == 6
        for trial in trials:
            record = records[_attr(trial, "trialforge_trial")]
            want = "Complete" if record.phase == "Succeeded" else "Fail"
            assert trial["state"] == want, record.name
            params = {p["name"]: p["param_external_value"] for p in trial["params"]}
            assert params == {k: str(v) for k, v in record.parameters.items()}
            assert [v["step"] for v in trial["intermediate_values"]] == [1, 2, 3]
            assert _attr(trial, "seed") == str(record.seed)
        assert sum(t["state"] == "Fail" for t in trials) == 3  # the crash mode

        page.goto(f"{base}/dashboard/studies/0/trials")
        page.get_by_text("Trial 5").first.wait_for(timeout=60_000)
        body = page.inner_text("body")
        for n in range(6):
            assert f"Trial {n}" in body
        assert "Complete" in body and "Fail" in body and "Running" not in body
        page.screenshot(path=str(ARTIFACTS / "dashboard-local.png"))
        # The study page, with optuna-dashboard's own intermediate-values plot.
        page.goto(f"{base}/dashboard/studies/0")
        page.get_by_text("Intermediate values").first.wait_for(timeout=60_000)
        page.screenshot(path=str(ARTIFACTS / "dashboard-local-study.png"), full_page=True)
        # The study's note shows Trialforge's learning curves and parallel coordinates.
        page.goto(f"{base}/dashboard/studies/0/note")
        for slug in ("learning-curves", "parallel"):
            image = page.locator(f"img[src='/trialforge/{slug}.svg']")
            image.wait_for(timeout=30_000)
            loaded = "e => e.complete && e.naturalWidth > 0"
            page.wait_for_function(
                f"() => {{ const e = document.querySelector(\"img[src='/trialforge/{slug}.svg']\");"
                " return e && e.complete && e.naturalWidth > 0; }",
                timeout=30_000,
            )
            assert image.evaluate(loaded)
        page.screenshot(path=str(ARTIFACTS / "dashboard-local-note.png"), full_page=True)
        # Trialforge's plots, from the same server.
        page.goto(f"{base}/trialforge/")
        page.locator("figure[data-plot='learning-curves'] svg").wait_for(timeout=30_000)
        titles = page.locator("figure[data-plot='parallel'] .axis-title").all_text_contents()
        assert titles == ["x", "mode", "loss (minimize)"]
        faded = page.locator("figure[data-plot='parallel'] .trial.failed.faded").count()
        assert faded == 3
        page.screenshot(path=str(ARTIFACTS / "dashboard-local-plots.png"), full_page=True)
        page.close()
    finally:
        if run.poll() is None:
            gate.write_text("open")
            run.kill()
        if dashboard is not None:
            assert stop(dashboard) == 0


def test_the_json_api_and_the_plots_of_a_run_directory(tmp_path: Path) -> None:
    """Without a browser: the dashboard's JSON API over HTTP, and /trialforge/."""
    run_dir = make_run(tmp_path / "run")
    dashboard, base = start_dashboard(str(run_dir), "--once")  # read once, not followed
    try:
        studies = get_json(f"{base}/api/studies")["study_summaries"]
        assert [s["study_name"] for s in studies] == ["demo"]
        trials = _trials(base)
        states = [t["state"] for t in trials]
        assert states == ["Complete", "Complete", "Pruned", "Complete", "Fail", "Pruned", "Fail",
                          "Running", "Waiting"]  # fmt: skip
        assert len(trials) == len(TRIALS)
        note = get_json(f"{base}/api/studies/0")["note"]["body"]
        assert "/trialforge/learning-curves.svg" in note
        page = get_text(f"{base}/trialforge/")
        assert "data-plot='parallel'" in page and "data-plot='learning-curves'" in page
        svg = get_text(f"{base}/trialforge/parallel.svg")
        assert svg.startswith("<svg ") and "lr (log)" in svg
        with pytest.raises(urllib.error.HTTPError):
            get_text(f"{base}/trialforge/nothing.svg")
        # One objective: no Pareto front yet, a placeholder (the note may show it).
        assert "nothing to draw yet" in get_text(f"{base}/trialforge/pareto.svg")
    finally:
        assert stop(dashboard) == 0


def test_bad_arguments_are_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from trialforge.cli import main

    assert main(["dashboard"]) == 2
    assert "give a run directory" in capsys.readouterr().err
    assert main(["dashboard", str(tmp_path / "none")]) == 2
    assert "not a run directory" in capsys.readouterr().err
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        run_dir = make_run(tmp_path / "run")
        assert main(["dashboard", str(run_dir), "--port", port, "--once"]) == 2
    err = capsys.readouterr().err
    assert f"cannot serve on 127.0.0.1:{port}" in err and "Traceback" not in err
