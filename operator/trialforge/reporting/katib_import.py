"""``trialforge import katib``: a Katib ``kubeflow.org/v1beta1`` Experiment as a Trialforge one.

Written from Katib's published v1beta1 API (ExperimentSpec: objective,
algorithm, earlyStopping, parameters, trialTemplate, metricsCollectorSpec,
parallelTrialCount, maxTrialCount, maxFailedTrialCount, resumePolicy,
nasConfig) and its examples.  Every field is either converted, converted with a
:class:`Note` that says what changed (a renamed parameter, a setting with
another name), or reported in a note as not converted: nothing is dropped
silently.  What makes a conversion impossible (neural architecture search, a
template in a ConfigMap, an MPIJob) raises :class:`KatibImportError` naming
each field.  The result is validated as ``trialforge validate`` validates.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from trialforge.api.experiment import API_VERSION, EXPERIMENT_NAME, MAX_EXPERIMENT_NAME
from trialforge.engine.validation import ExperimentInvalid, load_experiment

KATIB_API_VERSION = "kubeflow.org/v1beta1"

# Katib's default StdOut/File TEXT filter: `name=value` pairs (keyvalue reads those).
KATIB_DEFAULT_FILTER = r"([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)"


@dataclass(frozen=True)
class Note:
    """A field that was converted with a change, or not converted (``dropped``)."""

    field: str
    message: str
    dropped: bool = False

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


@dataclass
class Conversion:
    document: dict[str, Any]
    notes: list[Note] = field(default_factory=list)

    @property
    def dropped(self) -> list[Note]:
        return [n for n in self.notes if n.dropped]


class KatibImportError(ValueError):
    """The Experiment cannot be converted; ``errors`` name each field and why."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


class _Ctx:
    def __init__(self) -> None:
        self.notes: list[Note] = []
        self.errors: list[str] = []

    def note(self, path: str, message: str) -> None:
        self.notes.append(Note(path, message))

    def drop(self, path: str, message: str) -> None:
        self.notes.append(Note(path, message, dropped=True))

    def error(self, path: str, message: str) -> None:
        self.errors.append(f"{path}: {message}")


# --- names ---------------------------------------------------------------------------------


def _parameter_name(name: str) -> str:
    """A Katib parameter name (``num-layers``, ``lr.decay``) as ours must be
    (``^[A-Za-z_][A-Za-z0-9_]*$``)."""
    out = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return out if re.match(r"^[A-Za-z_]", out) else f"p_{out}"


def _experiment_name(name: str, ctx: _Ctx) -> str:
    out = name.lower()
    out = re.sub(r"[^a-z0-9-]", "-", out).strip("-")[:MAX_EXPERIMENT_NAME].rstrip("-")
    if not re.match(EXPERIMENT_NAME, out or "-"):
        ctx.error("metadata.name", f"{name!r} cannot be made a valid experiment name")
    elif out != name:
        ctx.note(
            "metadata.name",
            f"{name!r} became {out!r} (at most {MAX_EXPERIMENT_NAME} characters, lowercase: "
            "trial, Job and Service names are built from it)",
        )
    return out


# --- numbers -------------------------------------------------------------------------------


def _number(text: Any, path: str, ctx: _Ctx, integer: bool = False) -> int | float | None:
    """Katib writes bounds as strings ("0.01")."""
    if text is None:
        return None
    try:
        value = float(text)
    except (TypeError, ValueError):
        ctx.error(path, f"{text!r} is not a number")
        return None
    if integer:
        if value != int(value):
            ctx.error(path, f"{text!r} is not an integer")
            return None
        return int(value)
    return value


def _scalar(text: Any) -> Any:
    """A discrete/categorical list item: a number where it reads as one."""
    if isinstance(text, bool | int | float):
        return text
    try:
        number = float(text)
    except (TypeError, ValueError):
        return text
    return int(number) if number == int(number) and re.fullmatch(r"[+-]?\d+", str(text)) else number


# --- the parts -----------------------------------------------------------------------------


def _objective(spec: Mapping[str, Any], ctx: _Ctx) -> dict[str, Any] | None:
    objective = spec.get("objective")
    if not isinstance(objective, Mapping):
        ctx.error("spec.objective", "required: the metric to optimise and its type")
        return None
    direction = objective.get("type")
    if direction not in ("maximize", "minimize"):
        ctx.error("spec.objective.type", f"{direction!r}: must be maximize or minimize")
        return None
    metric = objective.get("objectiveMetricName")
    if not metric:
        ctx.error("spec.objective.objectiveMetricName", "required")
        return None
    out: dict[str, Any] = {"metric": metric, "direction": direction}
    if objective.get("goal") is not None:
        goal = _number(objective["goal"], "spec.objective.goal", ctx)
        if goal is not None:
            out["goal"] = goal
    extra = objective.get("additionalMetricNames") or []
    if extra:
        ctx.note(
            "spec.objective.additionalMetricNames",
            f"{', '.join(map(str, extra))}: recorded for every trial as they are reported "
            "(Trialforge keeps every metric a trial reports; nothing to list)",
        )
    for i, strategy in enumerate(objective.get("metricStrategies") or []):
        path = f"spec.objective.metricStrategies[{i}]"
        name, value = strategy.get("name"), strategy.get("value")
        if name != metric:
            ctx.drop(
                path,
                f"{name}: {value}: only the objective's final value is chosen "
                "(additional metrics keep their latest and best)",
            )
            continue
        best = "max" if direction == "maximize" else "min"
        if value == "latest":
            out["final"] = "last"
        elif value == best:
            out["final"] = "best"
        else:
            ctx.drop(
                path,
                f"{value!r} for a {direction}d objective has no equivalent "
                "(objective.final is last, best or mean); last is used",
            )
    if "final" not in out and objective.get("metricStrategies") is None:
        # Katib's default strategy is the best value in the objective's direction.
        out["final"] = "best"
        ctx.note(
            "spec.objective",
            "final: best (Katib's default metric strategy: the best "
            "value in the objective's direction)",
        )
    return out


_SEARCH = {
    "random": "random",
    "grid": "grid",
    "tpe": "tpe",
    "multivariate-tpe": "tpe",
    "cmaes": "cmaes",
    "sobol": "qmc",
    # Katib's skopt Gaussian process: ours (gp) needs PyTorch, which the operator image
    # and the default install lack (the CRD refuses gp), so the model-based search that
    # runs everywhere instead, with the note saying so
    "bayesianoptimization": "tpe",
    "hyperband": "random",
}
_NOT_SEARCH = {
    "enas": "neural architecture search (ENAS)",
    "darts": "neural architecture search (DARTS)",
    "pbt": "population-based training (trials that hand checkpoints on)",
}
# Katib setting -> (our setting, converter), per algorithm; random_state is the seed.
_SETTINGS: dict[str, dict[str, str]] = {
    "tpe": {"n_startup_trials": "nStartupTrials", "n_ei_candidates": "nEiCandidates"},
    "multivariate-tpe": {"n_startup_trials": "nStartupTrials", "n_ei_candidates": "nEiCandidates"},
    "cmaes": {"sigma": "sigma0", "restart_strategy": "restartStrategy"},  # sigma0 as written
    "bayesianoptimization": {"n_initial_points": "nStartupTrials"},
    "sobol": {},
    "random": {},
    "grid": {},
}


def _setting_value(text: Any) -> Any:
    value = _scalar(text)
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return value


def _search(spec: Mapping[str, Any], ctx: _Ctx) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """spec.search, and the early stopping that Katib's hyperband search implies."""
    algorithm = spec.get("algorithm") or {}
    name = str(algorithm.get("algorithmName") or "random").lower()
    if name in _NOT_SEARCH:
        ctx.error(
            "spec.algorithm.algorithmName",
            f"{name}: {_NOT_SEARCH[name]} has no Trialforge equivalent",
        )
        return {}, None
    ours = _SEARCH.get(name)
    if ours is None:
        ctx.error(
            "spec.algorithm.algorithmName",
            f"{name!r} is not a Katib algorithm Trialforge knows ({', '.join(sorted(_SEARCH))})",
        )
        return {}, None
    out: dict[str, Any] = {"algorithm": ours}
    settings: dict[str, Any] = {}
    if name == "multivariate-tpe":
        settings["multivariate"] = True
    if name == "sobol":
        settings["qmcType"] = "sobol"
    if name == "bayesianoptimization":
        ctx.note(
            "spec.algorithm.algorithmName",
            "bayesianoptimization became tpe: Trialforge's gp needs PyTorch, which the "
            "operator image lacks (set search.algorithm: gp where torch is installed)",
        )
    elif ours != name and name != "multivariate-tpe":
        ctx.note("spec.algorithm.algorithmName", f"{name} became {ours}")
    pruning = None
    known = _SETTINGS.get(name, {})
    for i, setting in enumerate(algorithm.get("algorithmSettings") or []):
        path = f"spec.algorithm.algorithmSettings[{i}]"
        key, value = setting.get("name"), setting.get("value")
        if key == "random_state":
            seed = _number(value, path, ctx, integer=True)
            if seed is not None:
                out["seed"] = seed
        elif key in known:
            settings[known[key]] = _setting_value(value)
            ctx.note(path, f"{key} became search.settings.{known[key]}")
        elif name == "hyperband" and key in ("resource_name", "eta", "r_l"):
            continue  # below
        else:
            ctx.drop(
                path, f"{key}={value!r} has no equivalent in Optuna's {ours} sampler; left out"
            )
    if name == "hyperband":
        given = {s.get("name"): s.get("value") for s in algorithm.get("algorithmSettings") or []}
        pruning = {"algorithm": "hyperband"}
        hyper: dict[str, Any] = {}
        if given.get("eta") is not None:
            hyper["reductionFactor"] = _setting_value(given["eta"])
        if given.get("r_l") is not None:
            hyper["maxResource"] = _setting_value(given["r_l"])
        if hyper:
            pruning["settings"] = hyper
        ctx.note(
            "spec.algorithm",
            "Katib's hyperband search became random search with hyperband early stopping "
            "(Optuna's HyperbandPruner: trials report each step and are stopped early"
            + (
                f"; resource_name {given['resource_name']!r} is not a parameter Trialforge "
                "sets: the trainer's own step counts"
                if given.get("resource_name")
                else ""
            )
            + ")",
        )
    if settings:
        out["settings"] = settings
    return out, pruning


def _early_stopping(spec: Mapping[str, Any], ctx: _Ctx) -> dict[str, Any] | None:
    early = spec.get("earlyStopping")
    if not early:
        return None
    name = str(early.get("algorithmName") or "").lower()
    if name != "medianstop":
        ctx.error("spec.earlyStopping.algorithmName", f"{name!r}: only medianstop is converted")
        return None
    settings: dict[str, Any] = {}
    for i, setting in enumerate(early.get("algorithmSettings") or []):
        path = f"spec.earlyStopping.algorithmSettings[{i}]"
        key, value = setting.get("name"), setting.get("value")
        if key == "min_trials_required":
            settings["nStartupTrials"] = _setting_value(value)
            ctx.note(path, "min_trials_required became earlyStopping.settings.nStartupTrials")
        elif key == "start_step":
            settings["nWarmupSteps"] = _setting_value(value)
            ctx.note(path, "start_step became earlyStopping.settings.nWarmupSteps")
        else:
            ctx.drop(path, f"{key}={value!r} has no equivalent in Optuna's MedianPruner")
    out: dict[str, Any] = {"algorithm": "median"}
    if settings:
        out["settings"] = settings
    return out


def _parameters(spec: Mapping[str, Any], ctx: _Ctx) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """spec.parameters, and each Katib parameter name -> ours."""
    out: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    params = spec.get("parameters") or []
    if not params:
        ctx.error("spec.parameters", "required: at least one parameter")
    for i, p in enumerate(params):
        path = f"spec.parameters[{i}]"
        katib_name = str(p.get("name") or "")
        name = _parameter_name(katib_name)
        if name != katib_name:
            ctx.note(f"{path}.name", f"{katib_name!r} became {name!r} (letters, digits, _)")
        names[katib_name] = name
        kind = p.get("parameterType")
        space = p.get("feasibleSpace") or {}
        sp = f"{path}.feasibleSpace"
        distribution = space.get("distribution")
        log = False
        if distribution in ("logUniform",):
            log = True
        elif distribution in ("normal", "logNormal"):
            ctx.drop(
                f"{sp}.distribution",
                f"{distribution}: Trialforge samples uniformly "
                "within min and max (or log-uniformly)",
            )
        elif distribution not in (None, "", "uniform"):
            ctx.drop(f"{sp}.distribution", f"{distribution!r} is not known; uniform is used")
        if kind in ("double", "int"):
            integer = kind == "int"
            low = _number(space.get("min"), f"{sp}.min", ctx, integer)
            high = _number(space.get("max"), f"{sp}.max", ctx, integer)
            step = _number(space.get("step"), f"{sp}.step", ctx, integer)
            if low is None or high is None:
                if "min" not in space or "max" not in space:
                    ctx.error(sp, f"a {kind} parameter needs min and max")
                continue
            if low == high:
                out.append({"name": name, "type": "categorical", "values": [low]})
                ctx.note(
                    sp,
                    f"min = max = {low}: a fixed value, written as a categorical "
                    "parameter with one value",
                )
                continue
            param: dict[str, Any] = {
                "name": name,
                "type": "int" if integer else "float",
                "min": low,
                "max": high,
            }
            if step is not None and not (integer and step == 1):
                if log:
                    ctx.drop(
                        f"{sp}.step",
                        "a step cannot be combined with a log scale; the step is left out",
                    )
                else:
                    param["step"] = step
            if log:
                param["log"] = True
            out.append(param)
        elif kind in ("categorical", "discrete"):
            values = space.get("list")
            if not values:
                ctx.error(f"{sp}.list", f"a {kind} parameter needs a list of values")
                continue
            if kind == "categorical":
                out.append(
                    {"name": name, "type": "categorical", "values": [str(v) for v in values]}
                )
            else:
                numbers = [_scalar(v) for v in values]
                bad = [v for v in numbers if not isinstance(v, int | float)]
                if bad:
                    ctx.error(f"{sp}.list", f"discrete values must be numbers: {bad!r}")
                    continue
                out.append({"name": name, "type": "discrete", "values": numbers})
        else:
            ctx.error(
                f"{path}.parameterType", f"{kind!r}: must be double, int, categorical or discrete"
            )
    return out, names


_TRAINING_JOBS = {
    "PyTorchJob": ("pytorchReplicaSpecs", ("Master", "Worker")),
    "TFJob": ("tfReplicaSpecs", ("Chief", "Master", "Worker", "PS", "Evaluator")),
    "XGBoostJob": ("xgbReplicaSpecs", ("Master", "Worker")),
    "MXJob": ("mxReplicaSpecs", ("Scheduler", "Server", "Worker")),
    "PaddleJob": ("paddleReplicaSpecs", ("Master", "Worker")),
    "JAXJob": ("jaxReplicaSpecs", ("Worker",)),
}


def _pod_template(trial_spec: Mapping[str, Any], ctx: _Ctx) -> tuple[dict[str, Any], int] | None:
    """The pod template for one worker and the workers count, from a Job or a
    training-operator job."""
    kind = trial_spec.get("kind")
    api = str(trial_spec.get("apiVersion") or "")
    body = trial_spec.get("spec") or {}
    path = "spec.trialTemplate.trialSpec"
    if kind == "Job" and api.startswith("batch/"):
        for key, value in body.items():
            if key == "template":
                continue
            if key == "activeDeadlineSeconds":
                continue  # the timeout, below
            ctx.drop(
                f"{path}.spec.{key}",
                f"{value!r}: Trialforge builds the Job itself "
                "(trial.retries and trial.timeout are its knobs)",
            )
        template = body.get("template")
        if not isinstance(template, Mapping):
            ctx.error(f"{path}.spec.template", "required: the pod template")
            return None
        return copy.deepcopy(dict(template)), 1
    if kind in _TRAINING_JOBS and api.startswith("kubeflow.org/"):
        key, roles = _TRAINING_JOBS[kind]
        replicas = body.get(key) or {}
        if not replicas:
            ctx.error(f"{path}.spec.{key}", "required: the replica specs")
            return None
        unknown = [r for r in replicas if r not in roles]
        if unknown:
            ctx.error(f"{path}.spec.{key}", f"unknown replica types {unknown}")
            return None
        if kind == "TFJob" and (set(replicas) - {"Worker"} or _count(replicas["Worker"]) > 1):
            ctx.error(
                f"{path}.spec.{key}",
                "a distributed TFJob (Chief, PS or several workers) "
                "needs TF_CONFIG, which Trialforge does not set; a TFJob with one Worker "
                "converts",
            )
            return None
        if kind == "MXJob":
            ctx.error(
                f"{path}.spec.{key}",
                "an MXJob's scheduler/server/worker roles have no Trialforge equivalent",
            )
            return None
        total = sum(_count(r) for r in replicas.values())
        first = next(r for r in roles if r in replicas)
        template = (replicas[first] or {}).get("template")
        if not isinstance(template, Mapping):
            ctx.error(f"{path}.spec.{key}.{first}.template", "required: the pod template")
            return None
        others = [r for r in replicas if r != first]
        for other in others:
            if (replicas[other] or {}).get("template") != template:
                ctx.drop(
                    f"{path}.spec.{key}.{other}.template",
                    f"differs from {first}'s: every Trialforge worker runs {first}'s pod template",
                )
        for role, rs in replicas.items():
            for k, v in (rs or {}).items():
                if k not in ("replicas", "template", "restartPolicy"):
                    ctx.drop(f"{path}.spec.{key}.{role}.{k}", f"{v!r} is not converted")
            if (rs or {}).get("restartPolicy") not in (None, "Never"):
                ctx.note(
                    f"{path}.spec.{key}.{role}.restartPolicy",
                    f"{rs['restartPolicy']}: Trialforge pods restart Never; a failed "
                    "trial is retried as a whole (trial.retries)",
                )
        for k in body:
            if k != key:
                ctx.drop(f"{path}.spec.{k}", f"{body[k]!r} is not converted")
        note = f"{kind} became a Job with the same pod template and {total} worker(s)"
        if kind == "PyTorchJob" and total > 1:
            note += " (MASTER_ADDR, MASTER_PORT, WORLD_SIZE and RANK set as torchrun expects)"
        ctx.note(path, note)
        return copy.deepcopy(dict(template)), total
    if kind == "MPIJob":
        ctx.error(
            f"{path}.kind",
            "MPIJob: a launcher and workers over MPI have no Trialforge "
            "equivalent (convert it to a PyTorchJob-style Job)",
        )
        return None
    ctx.error(
        f"{path}.kind",
        f"{api}/{kind}: only batch/v1 Job and Kubeflow training-operator "
        "jobs (PyTorchJob, TFJob with one worker, XGBoostJob, PaddleJob, "
        "JAXJob) convert",
    )
    return None


def _count(replica_spec: Any) -> int:
    value = (replica_spec or {}).get("replicas", 1)
    return int(value) if isinstance(value, int) else 1


_REFERENCE = re.compile(r"\$\{trialParameters\.([^}]+)\}")
_TRIAL_META = {"${trialSpec.Name}": "$(TRIALFORGE_TRIAL)"}


def _substitute(
    node: Any,
    replace: Mapping[str, str],
    at: str,
    seen: list[str],
    left: list[str],
    declared: frozenset[str] = frozenset(),
) -> Any:
    """``node`` with every ``${trialParameters.X}`` replaced; ``seen`` collects the paths of
    strings that held one, ``left`` those that still hold one (an undeclared name)."""
    if isinstance(node, str):
        if "${trialParameters." in node or "${trialSpec." in node:
            seen.append(at)

        def sub(m: re.Match[str]) -> str:
            return replace.get(m.group(1), m.group(0))

        out = _REFERENCE.sub(sub, node)
        for key, value in _TRIAL_META.items():
            out = out.replace(key, value)
        undeclared = [n for n in _REFERENCE.findall(out) if n not in declared]
        if undeclared:
            left.append(f"{at} ({', '.join(undeclared)})")
        return out
    if isinstance(node, list):
        return [
            _substitute(v, replace, f"{at}[{i}]", seen, left, declared) for i, v in enumerate(node)
        ]
    if isinstance(node, Mapping):
        return {
            k: _substitute(v, replace, f"{at}.{k}", seen, left, declared) for k, v in node.items()
        }
    return node


_FILLED = re.compile(
    r"^spec\.containers\[\d+\]\.(command|args)\[\d+\]$|"
    r"^spec\.containers\[\d+\]\.env\[\d+\]\.value$"
)


def _trial(
    spec: Mapping[str, Any], names: Mapping[str, str], ctx: _Ctx
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """spec.trial (without metrics), and the primary container's name."""
    tt = spec.get("trialTemplate")
    if not isinstance(tt, Mapping):
        ctx.error("spec.trialTemplate", "required")
        return None
    if tt.get("configMap"):
        ctx.error(
            "spec.trialTemplate.configMap",
            "a template kept in a ConfigMap: paste it "
            "into trialTemplate.trialSpec and convert that",
        )
        return None
    trial_spec = tt.get("trialSpec")
    if not isinstance(trial_spec, Mapping):
        ctx.error("spec.trialTemplate.trialSpec", "required")
        return None
    for key in ("successCondition", "failureCondition"):
        if tt.get(key):
            ctx.drop(f"spec.trialTemplate.{key}", "Trialforge reads a Job's own conditions")
    if tt.get("retain"):
        ctx.drop(
            "spec.trialTemplate.retain",
            "Trialforge deletes a trial's Job when it is "
            "stopped; `trialforge logs` keeps its last lines",
        )
    replace: dict[str, str] = {}
    for i, tp in enumerate(tt.get("trialParameters") or []):
        path = f"spec.trialTemplate.trialParameters[{i}]"
        ref = str(tp.get("reference") or "")
        if ref in names:
            replace[str(tp.get("name"))] = f"${{params.{names[ref]}}}"
        elif ref.startswith("${trialSpec.") and ref in _TRIAL_META:
            replace[str(tp.get("name"))] = _TRIAL_META[ref]
            ctx.note(
                path,
                f"{ref} became {_TRIAL_META[ref]} (Kubernetes expands it from the "
                "trial's TRIALFORGE_TRIAL variable on a cluster; locally it stays as "
                "written)",
            )
        else:
            ctx.error(
                f"{path}.reference", f"{ref!r} names no parameter (parameters: {', '.join(names)})"
            )
    made = _pod_template(trial_spec, ctx)
    if made is None:
        return None
    template, workers = made
    seen: list[str] = []
    leftover: list[str] = []
    declared = frozenset(str(tp.get("name")) for tp in tt.get("trialParameters") or [])
    template = _substitute(template, replace, "", seen, leftover, declared)
    for where in seen:
        path = where.lstrip(".")
        if not _FILLED.match(path):
            ctx.drop(
                f"spec.trialTemplate.trialSpec...template.{path}",
                "a parameter here is not filled in (Trialforge fills command, args and env values)",
            )
    for where in leftover:
        ctx.error(
            f"spec.trialTemplate.trialSpec...template.{where.lstrip('.')}",
            "names a trialParameter that trialTemplate.trialParameters does not declare",
        )
    containers = (template.get("spec") or {}).get("containers") or []
    primary = tt.get("primaryContainerName")
    if primary:
        index = next((i for i, c in enumerate(containers) if c.get("name") == primary), None)
        if index is None:
            ctx.error(
                "spec.trialTemplate.primaryContainerName",
                f"{primary!r} is not a container of the template",
            )
            return None
        if index:
            containers.insert(0, containers.pop(index))
            ctx.note(
                "spec.trialTemplate.primaryContainerName",
                f"{primary} moved first: Trialforge's trainer is the first container",
            )
    if not containers:
        ctx.error("spec.trialTemplate.trialSpec", "the pod template has no containers")
        return None
    pod_spec = template.setdefault("spec", {})
    if pod_spec.get("restartPolicy") not in (None, "Never"):
        ctx.note(
            "...template.spec.restartPolicy",
            f"{pod_spec['restartPolicy']} became Never (a trial is retried as a whole)",
        )
    pod_spec.pop("restartPolicy", None)
    trial: dict[str, Any] = {"template": template}
    if workers > 1:
        trial["workers"] = workers
    deadline = (trial_spec.get("spec") or {}).get("activeDeadlineSeconds")
    if isinstance(deadline, int) and trial_spec.get("kind") == "Job":
        trial["timeout"] = f"{deadline}s"
        ctx.note(
            "spec.trialTemplate.trialSpec.spec.activeDeadlineSeconds",
            f"became trial.timeout {deadline}s",
        )
    return trial, containers[0]


def _regex(katib: str, path: str, ctx: _Ctx) -> str | None:
    """A Katib metricsFormat regex (two unnamed groups: name, value) as one with named
    groups ``name`` and ``value`` (what the regex format reads)."""
    out, groups, i = [], 0, 0
    while i < len(katib):
        char = katib[i]
        if char == "\\":
            out.append(katib[i : i + 2])
            i += 2
            continue
        if char == "(" and not katib.startswith("(?", i) and groups < 2:
            out.append("(?P<name>" if groups == 0 else "(?P<value>")
            groups += 1
            i += 1
            continue
        if char == "(" and not katib.startswith("(?", i):
            out.append("(?:")  # a nested group: not captured
            i += 1
            continue
        out.append(char)
        i += 1
    if groups < 2:
        ctx.error(path, f"{katib!r}: a metrics filter needs two groups, the name and the value")
        return None
    text = "".join(out)
    try:
        re.compile(text)
    except re.error as exc:
        ctx.error(path, f"{katib!r} is not a regular expression: {exc}")
        return None
    return text


def _metrics(spec: Mapping[str, Any], ctx: _Ctx) -> dict[str, Any]:
    mc = spec.get("metricsCollectorSpec") or {}
    kind = ((mc.get("collector") or {}).get("kind")) or "StdOut"
    source = mc.get("source") or {}
    fs = source.get("fileSystemPath") or {}
    fmt = str(fs.get("format") or "TEXT").upper()
    filters = (source.get("filter") or {}).get("metricsFormat") or []
    base = "spec.metricsCollectorSpec"
    out: dict[str, Any]
    if kind == "StdOut":
        out = {"source": "stdout"}
    elif kind == "File":
        if not fs.get("path"):
            ctx.error(f"{base}.source.fileSystemPath.path", "the File collector needs a path")
            return {}
        out = {"source": "file", "path": fs["path"]}
    elif kind == "TensorFlowEvent":
        if not fs.get("path"):
            ctx.error(
                f"{base}.source.fileSystemPath.path",
                "the TensorFlowEvent collector needs the events directory",
            )
            return {}
        ctx.note(f"{base}.collector.kind", "TensorFlowEvent became source tensorboard")
        return {"source": "tensorboard", "path": fs["path"]}
    elif kind == "Push":
        ctx.note(
            f"{base}.collector.kind",
            "Push became source push: the trainer calls "
            "trialforge.report(...) where it called Katib's "
            "report_metrics(...)",
        )
        return {"source": "push"}
    elif kind == "None":
        ctx.error(
            f"{base}.collector.kind",
            "None: Trialforge needs the trial's metrics to "
            "optimise; choose StdOut, File, TensorFlowEvent "
            "or Push",
        )
        return {}
    else:
        ctx.error(
            f"{base}.collector.kind",
            f"{kind}: a {kind} collector has no Trialforge "
            "equivalent (StdOut, File, TensorFlowEvent, Push "
            "convert)",
        )
        return {}
    if fmt == "JSON":
        out["format"] = "json"
    elif not filters or filters == [KATIB_DEFAULT_FILTER]:
        out["format"] = "keyvalue"
    else:
        pattern = _regex(filters[0], f"{base}.source.filter.metricsFormat[0]", ctx)
        if pattern is not None:
            out.update(format="regex", pattern=pattern)
            ctx.note(
                f"{base}.source.filter.metricsFormat[0]",
                "its two groups became named groups name and value",
            )
        for i in range(1, len(filters)):
            ctx.drop(
                f"{base}.source.filter.metricsFormat[{i}]",
                "Trialforge reads one pattern; only the first is used",
            )
    return out


# --- the whole -----------------------------------------------------------------------------


def convert(doc: Mapping[str, Any]) -> Conversion:
    """A Katib Experiment (a parsed document) as a Trialforge Experiment, validated.

    KatibImportError lists what makes it impossible, each with its field.
    """
    ctx = _Ctx()
    if doc.get("apiVersion") != KATIB_API_VERSION or doc.get("kind") != "Experiment":
        raise KatibImportError(
            [
                f"apiVersion/kind: {doc.get('apiVersion')}/{doc.get('kind')} is "
                f"not a Katib {KATIB_API_VERSION} Experiment"
            ]
        )
    meta = doc.get("metadata") or {}
    spec = doc.get("spec") or {}
    if spec.get("nasConfig"):
        ctx.error("spec.nasConfig", "neural architecture search has no Trialforge equivalent")
    name = _experiment_name(str(meta.get("name") or ""), ctx)
    objective = _objective(spec, ctx)
    search, implied_pruning = _search(spec, ctx)
    pruning = _early_stopping(spec, ctx)
    if pruning and implied_pruning:
        ctx.drop(
            "spec.earlyStopping",
            "hyperband search already stops trials early; medianstop is left out",
        )
        pruning = implied_pruning
    pruning = pruning or implied_pruning
    parameters, names = _parameters(spec, ctx)
    made = _trial(spec, names, ctx)
    metrics = _metrics(spec, ctx)
    if ctx.errors:
        raise KatibImportError(ctx.errors)
    assert made is not None and objective is not None
    trial, _primary = made
    trial["metrics"] = metrics
    budget: dict[str, Any] = {}
    if spec.get("maxTrialCount") is not None:
        budget["maxTrials"] = int(spec["maxTrialCount"])
    else:
        budget["maxTrials"] = 100
        ctx.note(
            "spec.maxTrialCount",
            "not set (Katib runs until the goal or forever); budget.maxTrials 100",
        )
    parallel = spec.get("parallelTrialCount")
    budget["parallelism"] = min(int(parallel if parallel is not None else 3), budget["maxTrials"])
    if parallel is None:
        ctx.note("spec.parallelTrialCount", "not set: Katib's default 3")
    if spec.get("maxFailedTrialCount") is not None:
        budget["maxFailedTrials"] = int(spec["maxFailedTrialCount"])
    if spec.get("resumePolicy") not in (None, "Never", "LongRunning"):
        ctx.drop(
            "spec.resumePolicy",
            f"{spec['resumePolicy']}: Trialforge rebuilds its search "
            "from the Trials; a budget raised later resumes it",
        )
    if search.get("algorithm") == "grid":
        for p in parameters:
            if p["type"] == "float" and "step" not in p:
                raise KatibImportError(
                    [
                        f"spec.parameters: {p['name']}: grid search needs a "
                        "step for every double parameter"
                    ]
                )
    out_meta: dict[str, Any] = {"name": name}
    if meta.get("namespace"):
        out_meta["namespace"] = meta["namespace"]
    labels = dict(meta.get("labels") or {})
    if labels:
        out_meta["labels"] = labels
    annotations = {
        k: v
        for k, v in (meta.get("annotations") or {}).items()
        if k != "kubectl.kubernetes.io/last-applied-configuration"
    }
    annotations["trialforge.io/imported-from"] = (
        f"{KATIB_API_VERSION} Experiment {meta.get('name')}"
    )
    out_meta["annotations"] = annotations
    out_spec: dict[str, Any] = {"objective": objective, "parameters": parameters, "search": search}
    if pruning:
        out_spec["earlyStopping"] = pruning
    out_spec["budget"] = budget
    out_spec["trial"] = trial
    document = {
        "apiVersion": API_VERSION,
        "kind": "Experiment",
        "metadata": out_meta,
        "spec": out_spec,
    }
    try:
        load_experiment(document, source=f"converted {meta.get('name')}")
    except ExperimentInvalid as exc:
        raise KatibImportError(
            [f"the converted Experiment is invalid: {e}" for e in exc.errors]
        ) from None
    return Conversion(document, ctx.notes)


def convert_all(docs: list[Any]) -> list[Conversion]:
    """Every Katib Experiment of a YAML stream (other documents are refused by name)."""
    experiments = [d for d in docs if d is not None]
    if not experiments:
        raise KatibImportError(["the file holds no document"])
    out, errors = [], []
    for i, doc in enumerate(experiments):
        if not isinstance(doc, Mapping):
            errors.append(f"document {i}: not a mapping")
            continue
        try:
            out.append(convert(doc))
        except KatibImportError as exc:
            name = (doc.get("metadata") or {}).get("name", f"document {i}")
            errors.extend(f"{name}: {e}" for e in exc.errors)
    if errors:
        raise KatibImportError(errors)
    return out
