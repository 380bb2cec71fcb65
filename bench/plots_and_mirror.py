"""The end-of-run plots and the Optuna mirror, timed (reporting/plots.py, optuna_mirror.py).

    PYTHONPATH=operator:. python bench/plots_and_mirror.py [--trials N]

Writes a run directory of N trials (every fourth pruned, every tenth failed, 20
steps each) and times, in fresh interpreters: importing reporting.plots and
drawing every end-of-run plot; a first mirror of the run into Optuna's
in-memory storage and a sqlite file; a second sync with nothing new (what
`trialforge dashboard` does at every --interval).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make(root: Path, n: int) -> None:
    sys.path[:0] = [str(ROOT / "operator"), str(ROOT)]
    from tests.factories import experiment_doc

    from trialforge.api.observation import Observation
    from trialforge.engine.record import TrialRecord
    from trialforge.local.rundir import RunDirectory, state_of

    directory = RunDirectory(root)
    directory.create(experiment_doc(budget={"maxTrials": n, "parallelism": 4}))
    records = []
    for i in range(n):
        phase = "Failed" if i % 10 == 9 else "Pruned" if i % 4 == 3 else "Succeeded"
        steps = 5 if phase != "Succeeded" else 20
        curve = [0.3 + 0.6 * (1 - 1 / (s + 1)) * ((i * 7919) % 97) / 97 for s in range(steps)]
        obs = [Observation(step=s, metrics={"acc": v}, time=1e9 + i) for s, v in enumerate(curve)]
        record = TrialRecord(
            name=f"demo-{i}", index=i, attempt=0, phase=phase,
            parameters={"lr": 10 ** (-4 + 3 * ((i * 31) % 101) / 100),
                        "opt": ["sgd", "adam"][i % 2], "layers": 1 + i % 4},
            values=(curve[-1],) if phase == "Succeeded" else None,
            start_time=1e9 + i, completion_time=1e9 + i + 5,
        )  # fmt: skip
        records.append((record, obs))
    directory.append_records(records)
    directory.save_state(state_of({"phase": "Succeeded"}, "demo", root))


PLOTS = """
import time; t = time.perf_counter()
from pathlib import Path
from trialforge.reporting import plots
from trialforge.reporting.rundata import from_run_dir
t_import = time.perf_counter() - t
d = from_run_dir(RUN)
t = time.perf_counter()
made = plots.write_all(d.spec, d.records, None, [], Path(RUN), d.observations)
import sys, json
print(json.dumps({"import": t_import, "draw": time.perf_counter() - t, "files": len(made),
                  "matplotlib": "matplotlib" in sys.modules, "sklearn": "sklearn" in sys.modules}))
"""

MIRROR = """
import time, json, optuna
from trialforge.reporting.optuna_mirror import Mirror, RunDirSource
source = RunDirSource(RUN)
t = time.perf_counter(); data = source.read(); t_read = time.perf_counter() - t
mirror = Mirror(STORAGE)
t = time.perf_counter(); mirror.sync(data); t_first = time.perf_counter() - t
t = time.perf_counter(); data = source.read(); r = mirror.sync(data); t_again = time.perf_counter() - t
print(json.dumps({"read": t_read, "first": t_first, "again": t_again, "unchanged": r.unchanged}))
"""


def run(code: str) -> dict:
    env = {"PYTHONPATH": f"{ROOT / 'operator'}:{ROOT}", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "run"
        make(root, args.trials)
        print(f"{args.trials} trials:")
        print("plots", run(PLOTS.replace("RUN", repr(str(root)))))
        storages = ("optuna.storages.InMemoryStorage()", repr(f"sqlite:///{tmp}/o.db"),
                    repr(f"{tmp}/o.log"))  # fmt: skip
        for storage in storages:
            code = MIRROR.replace("RUN", repr(str(root))).replace("STORAGE", storage)
            print("mirror", storage.split("(")[0], run(code))


if __name__ == "__main__":
    main()
