"""Regret at equal budget: Trialforge's search (engine.Planner over a scripted world)
against plain Optuna with the same sampler, on shipped benchmark functions (issue 17).

Per function and seed, both minimise with TPE for BUDGET evaluations, one at a time;
the regret is the best value found minus the known optimum (for the constrained
function, among feasible points; no feasible point counts as the worst value seen).
Paired by seed: a Wilcoxon signed-rank test of ours minus Optuna's (one-sided, is
ours worse?) and the median difference.  Also: a warm start, how many trials a
second Branin search needs to come within TARGET of the optimum, cold and after a
first search of WARM trials.

    PYTHONPATH=operator python bench/search_regret.py [--seeds 10] [--budget 40]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import optuna
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.factories import World

from trialforge.api import load_experiment
from trialforge.engine.objective import is_feasible
from trialforge.engine.planner import Planner
from trialforge.engine.warm import warm_trials

optuna.logging.set_verbosity(optuna.logging.ERROR)


def branin(p: dict[str, float]) -> float:
    x1, x2 = p["x1"], p["x2"]
    a, b, c, r, s, t = 1, 5.1 / (4 * math.pi**2), 5 / math.pi, 6, 10, 1 / (8 * math.pi)
    return a * (x2 - b * x1**2 + c * x1 - r) ** 2 + s * (1 - t) * math.cos(x1) + s


H_A = [[10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14],
       [3, 3.5, 1.7, 10, 17, 8], [17, 8, 0.05, 10, 0.1, 14]]  # fmt: skip
H_P = [[1312, 1696, 5569, 124, 8283, 5886], [2329, 4135, 8307, 3736, 1004, 9991],
       [2348, 1451, 3522, 2883, 3047, 6650], [4047, 8828, 8732, 5743, 1091, 381]]  # fmt: skip
H_ALPHA = [1.0, 1.2, 3.0, 3.2]


def hartmann6(p: dict[str, float]) -> float:
    x = [p[f"x{i}"] for i in range(1, 7)]
    return -sum(
        H_ALPHA[i] * math.exp(-sum(H_A[i][j] * (x[j] - H_P[i][j] * 1e-4) ** 2 for j in range(6)))
        for i in range(4)
    )


def ring(p: dict[str, float]) -> float:
    """The constraint of the constrained Branin: distance from (2.5, 7.5) at most 4.5."""
    return math.hypot(p["x1"] - 2.5, p["x2"] - 7.5)


# (function, parameters, optimum, constraint bound or None)
BRANIN = [{"name": "x1", "type": "float", "min": -5.0, "max": 10.0},
          {"name": "x2", "type": "float", "min": 0.0, "max": 15.0}]  # fmt: skip
HART = [{"name": f"x{i}", "type": "float", "min": 0.0, "max": 1.0} for i in range(1, 7)]
# Branin's three minima all lie outside the disc of radius 4.5 around (2.5, 7.5); the
# feasible optimum (on its edge) is found by a dense grid when the benchmark starts.
PROBLEMS: dict[str, tuple[Any, list[dict[str, Any]], float, float | None]] = {
    "branin": (branin, BRANIN, 0.397887, None),
    "hartmann6": (hartmann6, HART, -3.32237, None),
    "branin-constrained": (branin, BRANIN, float("nan"), 4.5),
}


def feasible_optimum() -> float:
    best = float("inf")
    n = 1500
    for i in range(n + 1):
        for j in range(n + 1):
            p = {"x1": -5 + 15 * i / n, "x2": 15 * j / n}
            if ring(p) <= 4.5:
                best = min(best, branin(p))
    return best


def doc(parameters: list[dict[str, Any]], budget: int, seed: int, bound: float | None,
        startup: int) -> dict[str, Any]:  # fmt: skip
    spec: dict[str, Any] = {
        "objective": {"metric": "f", "direction": "minimize"},
        "parameters": parameters,
        "search": {"algorithm": "tpe", "seed": seed, "settings": {"nStartupTrials": startup}},
        "budget": {"maxTrials": budget, "parallelism": 1},
        "trial": {"template": {"spec": {"containers": [
            {"name": "t", "image": "i", "command": ["t"]}]}}},
    }  # fmt: skip
    if bound is not None:
        spec["constraints"] = [{"metric": "ring", "max": bound}]
    return {"apiVersion": "trialforge.io/v1alpha1", "kind": "Experiment",
            "metadata": {"name": "bench"}, "spec": spec}  # fmt: skip


def ours(problem: str, seed: int, budget: int, startup: int, warm: Any = None) -> list[float]:
    """The objective of each trial in order, as the engine ran them (inf where infeasible)."""
    f, parameters, _, bound = PROBLEMS[problem]
    spec = load_experiment(doc(parameters, budget, seed, bound, startup)).spec
    planner = Planner(spec, "bench", warm)

    def end(view: Any) -> Any:
        p = dict(view.parameters)
        constraints = {"ring": ring(p)} if bound is not None else None
        return replace(view, phase="Succeeded", values=(f(p),), constraints=constraints,
                       feasible=is_feasible(spec, constraints) if constraints else None)  # fmt: skip

    world = World(planner)
    world.limit = 10 * budget
    world.run(end)
    out = []
    for v in sorted(world.views.values(), key=lambda v: v.index):
        out.append(v.values[0] if v.feasible is not False else float("inf"))
    return out


def plain(problem: str, seed: int, budget: int, startup: int) -> list[float]:
    """The same search with Optuna alone (TPE, multivariate, as ours defaults)."""
    f, parameters, _, bound = PROBLEMS[problem]
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, multivariate=True)
    study = optuna.create_study(sampler=sampler)
    out = []
    for _ in range(budget):
        trial = study.ask()
        p = {q["name"]: trial.suggest_float(q["name"], q["min"], q["max"]) for q in parameters}
        value = f(p)
        if bound is not None:
            trial.set_constraint("ring", ring(p) - bound)
        study.tell(trial, value)
        out.append(value if bound is None or ring(p) <= bound else float("inf"))
    return out


def regret(values: list[float], optimum: float) -> float:
    best = min(values)
    if math.isinf(best):
        return max(v for v in values if not math.isinf(v)) - optimum if any(
            not math.isinf(v) for v in values) else float("nan")  # fmt: skip
    return best - optimum


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--budget", type=int, default=40)
    parser.add_argument("--startup", type=int, default=10)
    args = parser.parse_args()
    PROBLEMS["branin-constrained"] = (branin, BRANIN, feasible_optimum(), 4.5)
    print(f"optuna {optuna.__version__}; budget {args.budget}, startup {args.startup}, "
          f"seeds 0..{args.seeds - 1}")  # fmt: skip
    print("| function | ours: median regret | Optuna: median regret | median diff "
          "| ours better / worse | Wilcoxon p (ours worse) |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for name, (_, _, optimum, _) in PROBLEMS.items():
        a = [regret(ours(name, s, args.budget, args.startup), optimum) for s in range(args.seeds)]
        b = [regret(plain(name, s, args.budget, args.startup), optimum) for s in range(args.seeds)]
        diff = [x - y for x, y in zip(a, b, strict=True)]
        p = stats.wilcoxon(a, b, alternative="greater").pvalue if any(diff) else 1.0
        print(f"| {name} | {statistics.median(a):.4g} | {statistics.median(b):.4g} | "
              f"{statistics.median(diff):+.4g} | {sum(d < 0 for d in diff)} / "
              f"{sum(d > 0 for d in diff)} | {p:.3f} |")  # fmt: skip
    # Warm start: trials to come within TARGET of Branin's optimum.
    target = 0.5
    _, parameters, optimum, _ = PROBLEMS["branin"]
    cold, hot = [], []
    for s in range(args.seeds):
        spec = load_experiment(doc(parameters, args.budget, s, None, args.startup)).spec
        first = load_experiment(doc(parameters, 30, 1000 + s, None, args.startup)).spec
        planner = Planner(first, "first")
        world = World(planner)
        world.run(lambda v: replace(v, phase="Succeeded", values=(branin(dict(v.parameters)),),
                                    completion_time=0.0))  # fmt: skip
        warm = warm_trials(spec, first, list(world.views.values()), source="first", before=1.0)

        def reach(values: list[float]) -> int:
            for i, v in enumerate(values):
                if v - optimum <= target:
                    return i + 1
            return len(values) + 1  # not within the budget

        cold.append(reach(ours("branin", s, args.budget, args.startup)))
        hot.append(reach(ours("branin", s, args.budget, args.startup, warm)))
    p = stats.wilcoxon(hot, cold, alternative="less").pvalue if hot != cold else 1.0
    print(f"\nwarm start (branin, regret <= {target}; {args.budget + 1} = not reached): "
          f"median trials cold {statistics.median(cold)}, after 30 told trials "
          f"{statistics.median(hot)}; cold {cold}; warm {hot}; Wilcoxon p (warm fewer) {p:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
