"""Turning untrusted input into an Experiment, with every error named by its field path.

Everything the API itself knows is checked here. The settings each algorithm
accepts are read from Optuna by the engine, a layer above, so the way in for the
CLI, the local runtime and the operator is ``trialforge.engine.validation``: it
runs these rules and the engine's together, and each runtime refuses the same
specs with the same words.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from trialforge.api import experiment as xp
from trialforge.api.experiment import Experiment, ExperimentSpec
from trialforge.api.vocabulary import MULTI_OBJECTIVE_ALGORITHMS, PLACEHOLDER


@dataclass(frozen=True)
class FieldError:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class ExperimentInvalid(ValueError):
    """The spec cannot be run; ``errors`` says where and why, one entry per problem."""

    def __init__(self, errors: list[FieldError], source: str | None = None) -> None:
        self.errors = errors
        self.source = source
        where = f"{source}: " if source else ""
        lines = "\n".join(f"  {e}" for e in errors)
        super().__init__(f"{where}invalid Experiment ({len(errors)} error(s)):\n{lines}")


def _known_field_names() -> set[str]:
    names: set[str] = set()
    for obj in vars(xp).values():
        if inspect.isclass(obj) and issubclass(obj, BaseModel):
            for name, info in obj.model_fields.items():
                names.add(info.alias or name)
    return names


_PARAM_TAGS = {"float", "int", "categorical", "discrete"}


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    parts = list(loc)
    for i, part in enumerate(parts):
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        # Discriminated unions put the tag in the location (parameters.0.float.min);
        # the user never wrote it, so leave it out.
        if part in _PARAM_TAGS and i > 0 and isinstance(parts[i - 1], int):
            continue
        # Plain unions name the branch tried (values.0.str); not useful either.
        if part in {"str", "int", "float", "bool"} and i > 0 and isinstance(parts[i - 1], int):
            continue
        if part.startswith("function-") or part.startswith("tagged-union"):
            continue
        out += f".{part}" if out else str(part)
    return out or "(top level)"


def _message(err: Mapping[str, Any], known: set[str]) -> str:
    kind = err.get("type", "")
    msg = str(err.get("msg", ""))
    if kind == "extra_forbidden":
        name = str(err["loc"][-1])
        close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.75)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"unknown field {name!r}{hint}"
    if kind == "missing":
        return "required field is missing"
    if kind == "union_tag_invalid":
        ctx = err.get("ctx", {})
        return f"type must be one of {ctx.get('expected_tags', '')}, not {ctx.get('tag')!r}"
    if kind == "literal_error":
        return f"{err.get('input')!r} is not allowed; expected {err.get('ctx', {}).get('expected')}"
    if kind == "string_pattern_mismatch" and "arms" in err["loc"] and err["loc"][-1] == "name":
        return (
            f"{err.get('input')!r} is not a valid arm name: use letters, digits, '-', '_' "
            "and '.', starting and ending with a letter or digit"
        )
    if kind == "string_pattern_mismatch" and str(err["loc"][-1]) == "name":
        return (
            f"{err.get('input')!r} is not a valid name: use lower-case letters, digits and "
            "'-' for resources, letters, digits and '_' for parameters"
        )
    return msg.removeprefix("Value error, ")


def _from_pydantic(exc: ValidationError) -> list[FieldError]:
    known = _known_field_names()
    seen: set[tuple[str, str]] = set()
    errors: list[FieldError] = []
    for err in exc.errors():
        item = (_path(err["loc"]), _message(err, known))
        if item not in seen:
            seen.add(item)
            errors.append(FieldError(*item))
    return errors


# A rule a higher layer adds (the engine's algorithm settings): it sees a spec that
# passed the models, and its errors are listed with this module's.
SpecCheck = Callable[[ExperimentSpec], Iterable[FieldError]]


def load_experiment(
    data: Any, source: str | None = None, extra_checks: Iterable[SpecCheck] = ()
) -> Experiment:
    """Validate a parsed document; raise :class:`ExperimentInvalid` listing every problem."""
    if not isinstance(data, Mapping):
        raise ExperimentInvalid(
            [FieldError("(top level)", "an Experiment must be a YAML mapping")], source
        )
    try:
        experiment = Experiment.model_validate(dict(data))
    except ValidationError as exc:
        errors = _from_pydantic(exc)
        seen = {e.path for e in errors}
        errors += [e for e in _raw_parallelism(data.get("spec")) if e.path not in seen]
        raise ExperimentInvalid(errors, source) from None
    errors = list(check_spec(experiment.spec))
    for check in extra_checks:
        errors += check(experiment.spec)
    if errors:
        raise ExperimentInvalid(errors, source)
    return experiment


def _parallelism_error(parallelism: int, max_trials: int, repeats: int) -> FieldError | None:
    if parallelism <= max_trials * repeats:
        return None
    times = f" x repeats ({repeats})" if repeats > 1 else ""
    return FieldError(
        "spec.budget.parallelism",
        f"parallelism ({parallelism}) is more than maxTrials ({max_trials}){times}; "
        "no more trials than that can ever run at once",
    )


def _raw_parallelism(spec: Any) -> list[FieldError]:
    """The parallelism rule on a spec that failed elsewhere, so it is reported at once too."""
    if not isinstance(spec, Mapping) or not isinstance(spec.get("budget"), Mapping):
        return []
    budget = spec["budget"]
    numbers = (budget.get("parallelism", 1), budget.get("maxTrials"), spec.get("repeats", 1))
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in numbers):
        return []
    error = _parallelism_error(*numbers)  # type: ignore[arg-type]
    return [error] if error else []


def load_experiment_file(path: str, extra_checks: Iterable[SpecCheck] = ()) -> Experiment:
    try:
        with open(path, encoding="utf-8") as handle:
            docs = [d for d in yaml.safe_load_all(handle) if d is not None]
    except OSError as exc:
        raise ExperimentInvalid([FieldError("(file)", exc.strerror or str(exc))], path) from None
    except yaml.YAMLError as exc:
        raise ExperimentInvalid([FieldError("(file)", f"not valid YAML: {exc}")], path) from None
    experiments = [d for d in docs if isinstance(d, Mapping) and d.get("kind") == "Experiment"]
    if len(experiments) != 1:
        raise ExperimentInvalid(
            [
                FieldError(
                    "(file)", f"expected one document of kind Experiment, found {len(experiments)}"
                )
            ],
            path,
        )
    return load_experiment(experiments[0], path, extra_checks)


def check_spec(spec: ExperimentSpec) -> Iterator[FieldError]:
    """Rules that span several parts of the spec."""
    objectives = spec.all_objectives
    if spec.objective is not None and spec.objectives is not None:
        yield FieldError("spec.objectives", "set either objective or objectives, not both")
    if not objectives:
        yield FieldError("spec.objective", "required: the metric to optimise and its direction")
    metrics = [o.metric for o in objectives]
    for i, name in enumerate(metrics):
        if name in metrics[:i]:
            yield FieldError(f"spec.objectives[{i}].metric", f"metric {name!r} is listed twice")

    multi = len(objectives) > 1
    if multi and spec.search.algorithm not in MULTI_OBJECTIVE_ALGORITHMS:
        yield FieldError(
            "spec.search.algorithm",
            f"{spec.search.algorithm} cannot optimise several objectives; use one of "
            f"{', '.join(sorted(MULTI_OBJECTIVE_ALGORITHMS))}",
        )
    if multi and spec.early_stopping.algorithm != "none":
        yield FieldError(
            "spec.earlyStopping.algorithm",
            "early stopping compares one metric across trials; it cannot be used "
            "with several objectives",
        )

    names = [p.name for p in spec.parameters]
    for i, name in enumerate(names):
        if name in names[:i]:
            yield FieldError(f"spec.parameters[{i}].name", f"parameter {name!r} is defined twice")
    if spec.search.algorithm == "grid":
        for i, p in enumerate(spec.parameters):
            if not p.bounded:
                yield FieldError(
                    f"spec.parameters[{i}]",
                    f"grid search cannot enumerate float parameter {p.name!r} without a "
                    "step; give it a step, make it discrete, or use another algorithm",
                )

    metrics_spec = spec.trial.metrics
    if metrics_spec.format == "regex" and metrics_spec.pattern is None:
        yield FieldError("spec.trial.metrics.pattern", "format regex needs a pattern")
    if metrics_spec.source in ("file", "tensorboard") and metrics_spec.path is None:
        yield FieldError(
            "spec.trial.metrics.path", f"source {metrics_spec.source} needs the path to read"
        )

    if spec.queue is not None and spec.suspend_policy == "Pause":
        yield FieldError(
            "spec.suspendPolicy",
            "Pause cannot be used with a queue: Kueue owns the Jobs' suspend field; use Finish",
        )

    yield from _check_template(spec.trial.template, set(names))
    yield from _check_science(spec)


def value_error(p: Any, value: Any) -> str | None:
    """Why ``value`` is not a value of parameter ``p``, or None when it is one."""
    if isinstance(p, xp.CategoricalParameter | xp.DiscreteParameter):
        # 1 == True in Python, but they are different choices to a user.
        if any(type(v) is type(value) and v == value for v in p.values) or (
            isinstance(p, xp.DiscreteParameter)
            and not isinstance(value, bool)
            and isinstance(value, int | float)
            and value in p.values
        ):
            return None
        return f"{value!r} is not one of {p.name}'s values {list(p.values)}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"{value!r} is not a number; {p.name} is {p.type}"
    if isinstance(p, xp.IntParameter):
        if not float(value).is_integer():
            return f"{value!r} is not an integer; {p.name} is int"
        if not p.min <= value <= p.max or (int(value) - p.min) % p.step:
            step = f" in steps of {p.step}" if p.step != 1 else ""
            return f"{value!r} is outside {p.name}'s space [{p.min}, {p.max}]{step}"
        return None
    if not p.min <= value <= p.max:
        return f"{value!r} is outside {p.name}'s space [{p.min:g}, {p.max:g}]"
    if p.step is not None:
        k = (value - p.min) / p.step
        if abs(k - round(k)) > 1e-9:
            return f"{value!r} is not on {p.name}'s grid (min {p.min:g}, step {p.step:g})"
    return None


def _check_configuration(
    spec: ExperimentSpec, parameters: Mapping[str, Any], path: str
) -> Iterator[FieldError]:
    """A full parameter set: every parameter once, each value inside its space."""
    for name, value in parameters.items():
        p = spec.parameter(name)
        if p is None:
            known = ", ".join(q.name for q in spec.parameters)
            yield FieldError(f"{path}.{name}", f"names no parameter (known: {known})")
            continue
        problem = value_error(p, value)
        if problem is not None:
            yield FieldError(f"{path}.{name}", problem)
    missing = [p.name for p in spec.parameters if p.name not in parameters]
    if missing:
        yield FieldError(
            path, f"a configuration sets every parameter; missing: {', '.join(missing)}"
        )


def _check_science(spec: ExperimentSpec) -> Iterator[FieldError]:
    """Baseline, repeats, arms, confirm: rules across them and the rest of the spec."""
    budget = spec.budget
    if spec.baseline is not None:
        yield from _check_configuration(spec, spec.baseline.parameters, "spec.baseline.parameters")
    if spec.arms is not None:
        seen: set[str] = set()
        for i, arm in enumerate(spec.arms):
            if arm.name in seen:
                yield FieldError(f"spec.arms[{i}].name", f"arm {arm.name!r} is listed twice")
            if arm.name == "baseline" and spec.baseline is not None:
                yield FieldError(
                    f"spec.arms[{i}].name",
                    "'baseline' names spec.baseline; give this arm another name",
                )
            seen.add(arm.name)
            yield from _check_configuration(spec, arm.parameters, f"spec.arms[{i}].parameters")
        if len(spec.arms) + (spec.baseline is not None) < 2:
            yield FieldError(
                "spec.arms",
                "a comparison needs at least two configurations: list two arms, or one arm "
                "and spec.baseline",
            )
        if "algorithm" in spec.search.model_fields_set:
            yield FieldError(
                "spec.search.algorithm",
                "arms list the configurations to compare, there is nothing to search: remove "
                "search.algorithm (search.seed still seeds the repeats)",
            )
        if spec.early_stopping.algorithm != "none":
            yield FieldError(
                "spec.earlyStopping.algorithm",
                "early stopping would cut arms short and bias their comparison; use none",
            )
        if spec.confirm is not None:
            yield FieldError(
                "spec.confirm",
                "confirm re-runs the best configurations of a search; an arms experiment "
                "has no search (raise spec.repeats instead)",
            )
        if budget.max_trials is not None:
            yield FieldError(
                "spec.budget.maxTrials",
                f"an arms experiment runs each of its {len(spec.arms)} arms "
                f"{spec.repeats} times (spec.repeats); remove budget.maxTrials",
            )
    elif budget.max_trials is None:
        yield FieldError(
            "spec.budget.maxTrials",
            "required: how many configurations the search tries (unless spec.arms lists them)",
        )
    if budget.max_trials is not None:
        error = _parallelism_error(budget.parallelism, budget.max_trials, spec.repeats)
        if error is not None:
            yield error
    if spec.confirm is not None:
        if spec.multi_objective:
            yield FieldError(
                "spec.confirm",
                "confirm ranks configurations by one objective; it cannot be used with "
                "several objectives",
            )
        if budget.max_trials is not None and spec.confirm.top > budget.max_trials:
            yield FieldError(
                "spec.confirm.top",
                f"top ({spec.confirm.top}) is more than the {budget.max_trials} "
                "configurations the search tries (budget.maxTrials)",
            )


def _check_template(template: dict[str, Any], parameters: set[str]) -> Iterator[FieldError]:
    base = "spec.trial.template"
    pod = template.get("spec")
    if not isinstance(pod, Mapping):
        yield FieldError(f"{base}.spec", "required: a pod spec with at least one container")
        return
    containers = pod.get("containers")
    if not isinstance(containers, list) or not containers:
        yield FieldError(f"{base}.spec.containers", "required: at least one container")
        return
    for i, container in enumerate(containers):
        where = f"{base}.spec.containers[{i}]"
        if not isinstance(container, Mapping):
            yield FieldError(where, "must be a mapping")
            continue
        if not container.get("name"):
            yield FieldError(f"{where}.name", "required field is missing")
        if not container.get("image"):
            yield FieldError(
                f"{where}.image",
                "required: the image that runs the trial on a cluster "
                "(trialforge run ignores it and runs the command locally)",
            )
    for path, text in _strings(template, base):
        for match in PLACEHOLDER.finditer(text):
            name = match.group(1)
            if name not in parameters:
                known = ", ".join(sorted(parameters))
                yield FieldError(path, f"${{params.{name}}} names no parameter (known: {known})")


def _strings(node: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(node, str):
        yield path, node
    elif isinstance(node, Mapping):
        for key, value in node.items():
            yield from _strings(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _strings(value, f"{path}[{i}]")
