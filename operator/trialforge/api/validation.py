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
import itertools
import math
import os
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
_BRANCHES = {"str", "int", "float", "bool"}
# pydantic's type errors, and what the user should have written instead.
_TYPE_WORDS = {
    "int_type": "integer",
    "float_type": "number",
    "string_type": "string",
    "bool_type": "boolean",
    "dict_type": "mapping",
    "list_type": "list",
}

_BOUND_WORDS = {
    "less_than_equal": "less than or equal to",
    "greater_than_equal": "greater than or equal to",
    "less_than": "less than",
    "greater_than": "greater than",
}


def _shown(value: Any) -> str:
    """A value as the user wrote it in YAML (true, not True)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return repr(value)
    return repr(value) if isinstance(value, int | float) else _what(value)


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
        # Plain unions name the branch tried (values.0.str, parameters.x.float); not
        # useful either. Only at the end of the path: there a name is a branch, not a key.
        if part in _BRANCHES and i > 0 and (isinstance(parts[i - 1], int) or i == len(parts) - 1):
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
    if kind == "literal_error" and tuple(err["loc"]) in {("apiVersion",), ("kind",)}:
        expected = str(err.get("ctx", {}).get("expected", "")).strip("'")
        return f"{err.get('input')!r}, expected {expected}"
    if kind == "string_pattern_mismatch" and tuple(err["loc"]) == ("spec", "queue"):
        return (
            f"{err.get('input')!r} is not a valid Kueue queue name: lower-case letters, digits, "
            "'-' and '.', starting and ending with a letter or digit (RFC 1123)"
        )
    if kind in _TYPE_WORDS:
        return f"{msg}, not {_shown(err.get('input'))}"
    bound = next(iter(err.get("ctx", {}).values()), None)
    if kind in _BOUND_WORDS and isinstance(bound, float):
        # pydantic writes a float bound out in full (1000000000000000.0).
        return f"Input should be {_BOUND_WORDS[kind]} {bound:g}"
    if kind == "literal_error":
        return f"{err.get('input')!r} is not allowed; expected {err.get('ctx', {}).get('expected')}"
    if kind == "string_pattern_mismatch" and "arms" in err["loc"] and err["loc"][-1] == "name":
        return (
            f"{err.get('input')!r} is not a valid arm name: use letters, digits, '-', '_' "
            "and '.', starting and ending with a letter or digit"
        )
    if kind == "string_pattern_mismatch" and tuple(err["loc"][-2:]) == ("warmStart", "experiment"):
        return (
            f"{err.get('input')!r} is not a valid name: an Experiment's name is lower-case "
            "letters, digits and '-'"
        )
    if kind == "string_pattern_mismatch" and str(err["loc"][-1]) == "name":
        return (
            f"{err.get('input')!r} is not a valid name: use lower-case letters, digits and "
            "'-' for resources, letters, digits and '_' for parameters"
        )
    return msg.removeprefix("Value error, ")


def _from_pydantic(exc: ValidationError) -> list[FieldError]:
    known = _known_field_names()
    by_path: dict[str, list[Mapping[str, Any]]] = {}
    for err in exc.errors():
        by_path.setdefault(_path(err["loc"]), []).append(err)
    errors: list[FieldError] = []
    for path, errs in by_path.items():
        # A union (str | int | float | bool) fails once per branch. The branch that
        # took the value and refused it (a finite number) says why; failing that,
        # one line lists the types it could have been.
        typed = [e for e in errs if e.get("type") in _TYPE_WORDS]
        if len(typed) > 1 and len(typed) < len(errs):
            errs = [e for e in errs if e not in typed]
        elif len(typed) > 1:
            kinds = " or ".join(dict.fromkeys(_TYPE_WORDS[str(e["type"])] for e in typed))
            shown = _shown(typed[0].get("input"))
            errors.append(FieldError(path, f"{shown} is not a valid {kinds}"))
            errs = [e for e in errs if e not in typed]
        for message in dict.fromkeys(_message(e, known) for e in errs):
            errors.append(FieldError(path, message))
    return errors


# A rule a higher layer adds (the engine's algorithm settings): it sees a spec that
# passed the models, and its errors are listed with this module's.
SpecCheck = Callable[[ExperimentSpec], Iterable[FieldError]]


def load_experiment(
    data: Any, source: str | None = None, extra_checks: Iterable[SpecCheck] = ()
) -> Experiment:
    """Validate a parsed document; raise :class:`ExperimentInvalid` listing every problem."""
    if not isinstance(data, Mapping) or data.get("kind") != "Experiment":
        raise ExperimentInvalid([_not_an_experiment(data)], source)
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


# Limits on what a file may be before it is read as YAML. An Experiment is a few
# kilobytes; the limits sit far above any real one and far below what would take
# seconds or gigabytes. 1 MiB is also under the API server's (etcd's) 1.5 MiB
# limit on one object, so a file that passes could be applied.
MAX_FILE_BYTES = 1 << 20
# Nodes of the document once every alias is expanded: a "billion laughs" file is a
# few hundred bytes and ten nodes, but expands to 10^9; counted before expanding.
MAX_NODES = 100_000
# Grid points: Optuna's GridSampler lists every one of them in memory.
MAX_GRID = 100_000
# Nesting, so that neither the walk below nor pydantic runs out of stack.
MAX_DEPTH = 100

# PyYAML's libyaml binding reads a large file some tens of times faster.
_YamlLoader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Refused(Exception):
    def __init__(self, error: FieldError) -> None:
        self.error = error


def _key_path(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


class _NodeCheck:
    """One pass over a composed (not constructed) YAML document: repeated keys,
    expanded size and depth, all known before anything is expanded."""

    def __init__(self) -> None:
        self.sizes: dict[int, int] = {}
        self.open: set[int] = set()

    def size(self, node: yaml.Node, path: str, depth: int) -> int:
        key = id(node)
        if key in self.sizes:  # an alias of a node already counted: its size again
            return self.sizes[key]
        if key in self.open:
            raise _Refused(
                FieldError(
                    "(file)",
                    f"an alias refers to its own anchor (line {node.start_mark.line + 1}): "
                    "the document would be infinite",
                )
            )
        if depth > MAX_DEPTH:
            raise _Refused(FieldError("(file)", f"nested deeper than {MAX_DEPTH} levels"))
        self.open.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                total += self.size(item, f"{path}[{i}]", depth + 1)
        elif isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key_node, value_node in node.value:
                name = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
                line = key_node.start_mark.line + 1
                where = _key_path(path, str(name))
                if name is not None and name != "<<" and name in seen:
                    first = seen[name]
                    lines = f"on line {line}" if first == line else f"(lines {first} and {line})"
                    raise _Refused(FieldError(where, f"{name!r} is given twice {lines}; keep one"))
                if name is not None:
                    seen[name] = line
                total += self.size(key_node, where, depth + 1)
                total += self.size(value_node, where, depth + 1)
        self.open.discard(key)
        self.sizes[key] = total
        if total > MAX_NODES:
            raise _Refused(
                FieldError(
                    "(file)",
                    f"expands to more than {MAX_NODES} nodes once its aliases are expanded "
                    f"(an alias bomb?); an Experiment is far smaller",
                )
            )
        return total


def _read_documents(path: str) -> list[Any]:
    """The file's YAML documents, or :class:`_Refused` saying why it is no Experiment file."""
    try:
        size = os.stat(path).st_size
        if size > MAX_FILE_BYTES:
            raise _Refused(
                FieldError(
                    "(file)",
                    f"{size} bytes; an Experiment file may be at most {MAX_FILE_BYTES} bytes "
                    "(1 MiB)",
                )
            )
        with open(path, "rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise _Refused(FieldError("(file)", exc.strerror or str(exc))) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise _Refused(
            FieldError(
                "(file)",
                f"not UTF-8: byte 0x{raw[exc.start]:02x} at offset {exc.start} (line {line}); "
                "save the file as UTF-8",
            )
        ) from None
    loader = _YamlLoader(text)
    docs: list[Any] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            _NodeCheck().size(node, "", 0)
            docs.append(loader.construct_document(node))
    except yaml.YAMLError as exc:
        raise _Refused(FieldError("(file)", f"not valid YAML: {exc}")) from None
    except RecursionError:
        raise _Refused(FieldError("(file)", f"nested deeper than {MAX_DEPTH} levels")) from None
    finally:
        loader.dispose()
    return [d for d in docs if d is not None]


def _what(data: Any) -> str:
    """What a YAML value is, in the user's words."""
    if isinstance(data, list):
        return "a YAML list"
    if isinstance(data, str):
        return "a string"
    if isinstance(data, bool):
        return "a boolean"
    if isinstance(data, int | float):
        return "a number"
    return f"a {type(data).__name__}"


def _not_an_experiment(data: Any) -> FieldError:
    if not isinstance(data, Mapping):
        return FieldError("(top level)", f"{_what(data)}, expected one Experiment (a mapping)")
    if "kind" not in data:
        return FieldError("kind", "required: kind: Experiment")
    return FieldError("kind", f"{data['kind']!r}, expected Experiment")


def load_experiment_file(path: str, extra_checks: Iterable[SpecCheck] = ()) -> Experiment:
    """The one Experiment in a YAML file, checked as :func:`load_experiment` does."""
    try:
        docs = _read_documents(path)
    except _Refused as refused:
        raise ExperimentInvalid([refused.error], path) from None
    experiments = [d for d in docs if isinstance(d, Mapping) and d.get("kind") == "Experiment"]
    if len(experiments) > 1:
        raise ExperimentInvalid(
            [FieldError("(file)", f"{len(experiments)} Experiments, expected one per file")], path
        )
    if not experiments:
        if len(docs) == 1:
            raise ExperimentInvalid([_not_an_experiment(docs[0])], path)
        found = f"{len(docs)} documents, none of kind Experiment" if docs else "it is empty"
        raise ExperimentInvalid([FieldError("(file)", f"no Experiment: {found}")], path)
    return load_experiment(experiments[0], path, extra_checks)


def _checkpoint_volume(spec: ExperimentSpec) -> Iterator[FieldError]:
    """spec.trial.checkpoint.volume names a volume of the pod template."""
    checkpoint = spec.trial.checkpoint
    if checkpoint is None:
        return
    pod = spec.trial.template.get("spec") if isinstance(spec.trial.template, dict) else None
    volumes = (pod or {}).get("volumes") if isinstance(pod, dict) else None
    names = [v.get("name") for v in volumes or [] if isinstance(v, dict)]
    if checkpoint.volume not in names:
        known = ", ".join(repr(n) for n in names if n) or "none"
        yield FieldError(
            "spec.trial.checkpoint.volume",
            f"no volume named {checkpoint.volume!r} in spec.trial.template.spec.volumes "
            f"(volumes there: {known}); name the volume (e.g. a PersistentVolumeClaim) "
            "that keeps the checkpoints",
        )


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

    yield from _checkpoint_volume(spec)

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
        if all(p.bounded for p in spec.parameters):
            size = grid_size(spec.parameters)
            if size > MAX_GRID:
                yield FieldError(
                    "spec.parameters",
                    f"a grid of {size} points; grid search enumerates every point and can "
                    f"hold at most {MAX_GRID}: use fewer values or larger steps, or another "
                    "algorithm (random, tpe, qmc)",
                )

    metrics_spec = spec.trial.metrics
    if metrics_spec.format == "regex" and metrics_spec.pattern is None:
        yield FieldError("spec.trial.metrics.pattern", "format regex needs a pattern")
    if metrics_spec.source in ("file", "tensorboard") and metrics_spec.path is None:
        yield FieldError(
            "spec.trial.metrics.path", f"source {metrics_spec.source} needs the path to read"
        )

    yield from _check_template(spec.trial.template, set(names), metrics_spec.source)
    yield from _check_science(spec)
    yield from check_conditions(spec)
    yield from _check_constraints(spec)
    yield from _check_warm(spec)


# Combinations of the parents' values enumerated to find parameters that can
# never be active; a larger space is not enumerated (the rule is then skipped).
MAX_CONDITION_COMBINATIONS = 100_000


def check_conditions(spec: ExperimentSpec) -> Iterator[FieldError]:
    """parameters[].when: parents known, defined earlier, categorical or discrete,
    the values ones they can take, no cycle, and each parameter active somewhere."""
    index = {p.name: i for i, p in enumerate(spec.parameters)}
    bad = False
    for cycle in _cycles(spec, index):
        bad = True
        first = cycle[0]
        loop = " -> ".join([*cycle, first])
        yield FieldError(
            f"spec.parameters[{index[first]}].when",
            f"a cycle of conditions: {loop}; a parent must be defined before the parameters "
            "that depend on it",
        )
    in_cycle = {name for cycle in _cycles(spec, index) for name in cycle}
    for i, p in enumerate(spec.parameters):
        for parent, allowed in (p.when or {}).items():
            where = f"spec.parameters[{i}].when.{parent}"
            if parent not in index:
                known = ", ".join(q.name for q in spec.parameters[:i]) or "none"
                yield FieldError(where, f"names no parameter (parameters before it: {known})")
                bad = True
                continue
            j = index[parent]
            q = spec.parameters[j]
            if j >= i and not (p.name in in_cycle and parent in in_cycle):
                yield FieldError(
                    where,
                    f"parent {parent!r} is defined after {p.name!r} (parameters[{j}]); "
                    "define a parent before the parameters that depend on it",
                )
                bad = True
            if not isinstance(q, xp.CategoricalParameter | xp.DiscreteParameter):
                yield FieldError(
                    where,
                    f"parent {parent!r} is a {q.type} parameter; a condition needs a "
                    "categorical or discrete parent",
                )
                bad = True
                continue
            for k, value in enumerate(allowed):
                if not any(xp.same_value(value, v) for v in q.values):
                    yield FieldError(
                        f"{where}[{k}]",
                        f"{_shown(value)} is not a value {parent!r} can take "
                        f"({list(q.values)}): the condition could never hold",
                    )
                    bad = True
    if bad or not spec.conditional:
        return
    never = _never_active(spec)
    for name in never:
        i = index[name]
        yield FieldError(
            f"spec.parameters[{i}].when",
            f"{name!r} can never be active: no values of its parents meet its condition "
            "together with theirs",
        )


def _cycles(spec: ExperimentSpec, index: Mapping[str, int]) -> list[list[str]]:
    """The cycles among the conditions, each once, as the parameters in it from the
    one defined first, each followed by its parent."""
    parents = {p.name: [q for q in (p.when or {}) if q in index] for p in spec.parameters}
    found: list[list[str]] = []
    seen: set[frozenset[str]] = set()
    done: set[str] = set()

    def visit(node: str, stack: list[str]) -> None:
        if node in stack:
            cycle = stack[stack.index(node) :]
            key = frozenset(cycle)
            if key not in seen:
                seen.add(key)
                first = min(range(len(cycle)), key=lambda k: index[cycle[k]])
                found.append(cycle[first:] + cycle[:first])
            return
        if node in done:
            return
        stack.append(node)
        for parent in parents[node]:
            visit(parent, stack)
        stack.pop()
        done.add(node)

    for name in parents:
        visit(name, [])
    return found


def _never_active(spec: ExperimentSpec) -> list[str]:
    """Parameters no combination of the parents' values makes active (empty when the
    combinations are too many to enumerate)."""
    parents = [p for p in spec.parameters if any(p.name in (q.when or {}) for q in spec.parameters)]
    if not parents:
        return []
    size = 1
    for p in parents:
        size *= len(p.values)  # type: ignore[union-attr]
        if size > MAX_CONDITION_COMBINATIONS:
            return []
    reached: set[str] = set()
    for combo in itertools.product(*(p.values for p in parents)):  # type: ignore[union-attr]
        values = {p.name: v for p, v in zip(parents, combo, strict=True)}
        reached.update(spec.active(values))
    return [p.name for p in spec.parameters if p.name not in reached]


def _check_constraints(spec: ExperimentSpec) -> Iterator[FieldError]:
    objectives = {o.metric for o in spec.all_objectives}
    seen: set[str] = set()
    for i, c in enumerate(spec.constraints or []):
        where = f"spec.constraints[{i}]"
        if c.max is None and c.min is None:
            yield FieldError(f"{where}.max", "a constraint needs max, min or both")
        if c.metric in seen:
            yield FieldError(
                f"{where}.metric",
                f"metric {c.metric!r} is constrained twice; give one constraint both min and max",
            )
        seen.add(c.metric)
        if c.metric in objectives:
            yield FieldError(
                f"{where}.metric",
                f"{c.metric!r} is an objective; a constraint bounds another metric (or use the "
                "objective's goal)",
            )
    if spec.constraints and spec.arms:
        yield FieldError(
            "spec.constraints", "an arms experiment has no search to constrain; remove it"
        )


def _check_warm(spec: ExperimentSpec) -> Iterator[FieldError]:
    """initialPoints and warmStart: a search to start, values inside the space."""
    warm = spec.warm_start
    if warm is not None:
        if (warm.experiment is None) == (warm.run_dir is None):
            yield FieldError(
                "spec.warmStart",
                "set exactly one of experiment (on a cluster) or runDir (locally)",
            )
        if spec.arms:
            yield FieldError("spec.warmStart", "an arms experiment has no search to warm-start")
    points = spec.initial_points or []
    if points and spec.arms:
        yield FieldError("spec.initialPoints", "an arms experiment has no search; use arms")
        return
    limit = spec.budget.max_trials
    if limit is not None and len(points) > limit:
        yield FieldError(
            "spec.initialPoints",
            f"{len(points)} initial points but the search tries {limit} configurations "
            "(budget.maxTrials)",
        )
    for i, point in enumerate(points):
        yield from _check_configuration(spec, point, f"spec.initialPoints[{i}]", partial=True)
    for i, point in enumerate(points):
        if point in points[:i]:
            yield FieldError(f"spec.initialPoints[{i}]", "the same point is listed earlier")


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
    spec: ExperimentSpec, parameters: Mapping[str, Any], path: str, partial: bool = False
) -> Iterator[FieldError]:
    """A full parameter set: every active parameter once, each value inside its space
    (``partial``: parameters left out are allowed, the search samples them)."""
    active = spec.active(parameters)
    for name, value in parameters.items():
        p = spec.parameter(name)
        if p is None:
            known = ", ".join(q.name for q in spec.parameters)
            yield FieldError(f"{path}.{name}", f"names no parameter (known: {known})")
            continue
        problem = value_error(p, value)
        if problem is not None:
            yield FieldError(f"{path}.{name}", problem)
        elif name not in active:
            condition = ", ".join(f"{k} in {list(v)}" for k, v in (p.when or {}).items())
            yield FieldError(
                f"{path}.{name}",
                f"{name!r} is inactive in this configuration (it exists only when {condition}); "
                "leave it out",
            )
    missing = [n for n in active if n not in parameters]
    if missing and not partial:
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


def _check_template(
    template: dict[str, Any], parameters: set[str], source: str
) -> Iterator[FieldError]:
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
        yield from _check_argv(container, where)
    first = containers[0]
    if isinstance(first, Mapping) and not first.get("command") and source == "stdout":
        # Both runtimes run this command: trialforge run as a local process, and a
        # cluster under the collector's tee wrapper (an image's ENTRYPOINT cannot be
        # read without pulling it). Other sources need no wrapper on a cluster, so
        # validate only warns there (see trialforge.cli).
        yield FieldError(
            f"{base}.spec.containers[0].command",
            "required: the trainer's command (a list, e.g. [python, train.py]); trialforge "
            "run runs it locally, and on a cluster metrics source stdout wraps it to read "
            "its output",
        )
    for path, text in _strings(template, base):
        for match in PLACEHOLDER.finditer(text):
            name = match.group(1)
            if name not in parameters:
                known = ", ".join(sorted(parameters))
                yield FieldError(path, f"${{params.{name}}} names no parameter (known: {known})")
        if "${params." in PLACEHOLDER.sub("", text):
            yield FieldError(path, "unclosed ${params.: write ${params.NAME}")


def _check_argv(container: Mapping[str, Any], where: str) -> Iterator[FieldError]:
    """command and args are lists of strings, as a pod's are (a string is not split)."""
    for field in ("command", "args"):
        value = container.get(field)
        if value is None:
            continue
        if not isinstance(value, list):
            yield FieldError(
                f"{where}.{field}",
                f"{_what(value)}, expected a list of strings (e.g. [python, train.py]): a "
                "pod does not split a string into words",
            )
            continue
        for i, item in enumerate(value):
            if not isinstance(item, str):
                yield FieldError(
                    f"{where}.{field}[{i}]", f"{_shown(item)} is not a string; quote it"
                )
    env = container.get("env")
    for i, var in enumerate(env if isinstance(env, list) else []):
        if isinstance(var, Mapping) and "value" in var and not isinstance(var["value"], str):
            yield FieldError(
                f"{where}.env[{i}].value", f"{_shown(var['value'])} is not a string; quote it"
            )


def grid_size(parameters: Iterable[Any]) -> int:
    """How many points a grid over ``parameters`` has, counted without listing them
    (engine.space lists them; an absurd grid must be refused before that)."""
    size = 1
    for p in parameters:
        if isinstance(p, xp.CategoricalParameter | xp.DiscreteParameter):
            size *= len(p.values)
        elif isinstance(p, xp.IntParameter):
            size *= (p.max - p.min) // p.step + 1
        else:
            # The same count engine.space.grid_values makes.
            size *= math.floor((p.max - p.min) / p.step + 1e-9) + 1
    return size


def _strings(node: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(node, str):
        yield path, node
    elif isinstance(node, Mapping):
        for key, value in node.items():
            yield from _strings(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _strings(value, f"{path}[{i}]")
