"""CustomResourceDefinitions generated from the pydantic models.

Kubernetes needs *structural* OpenAPI v3 schemas: every node typed, no
``$ref``, no ``anyOf`` of differing types.  This module turns the models' JSON
Schema into that form: references inlined, ``X | None`` made ``nullable``,
the parameter union merged into one object whose per-type rules are CEL, free
form maps marked ``x-kubernetes-preserve-unknown-fields``.  The CEL rules come
from :data:`trialforge.api.experiment.CEL_RULES`, next to the Python rules
they mirror.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from trialforge.api.experiment import (
    CEL_RULES,
    GROUP,
    IMMUTABLE_FIELDS,
    VERSION,
    Experiment,
    _immutable,
)
from trialforge.api.trial import Trial

_KEEP = {
    "type",
    "format",
    "description",
    "enum",
    "pattern",
    "minimum",
    "maximum",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "nullable",
}

# The merged parameter union, named for CEL_RULES.
_UNION_NAMES = {"FloatParameter": "Parameter"}


class _Converter:
    def __init__(self, defs: dict[str, Any]) -> None:
        self.defs = defs

    def node(self, schema: dict[str, Any], name: str | None = None) -> dict[str, Any]:
        if "$ref" in schema:
            ref = schema["$ref"].split("/")[-1]
            out = self.node(self.defs[ref], ref)
            if "description" in schema:
                out["description"] = schema["description"]
            return out
        if "anyOf" in schema or "oneOf" in schema:
            return self._union(schema, name)
        if "const" in schema:
            return {"type": "string", "enum": [schema["const"]]}
        kind = schema.get("type")
        out: dict[str, Any] = {k: v for k, v in schema.items() if k in _KEEP}
        if "exclusiveMinimum" in schema:
            out["minimum"] = schema["exclusiveMinimum"]
            out["exclusiveMinimum"] = True
        if "exclusiveMaximum" in schema:
            out["maximum"] = schema["exclusiveMaximum"]
            out["exclusiveMaximum"] = True
        if kind == "object" or "properties" in schema:
            out["type"] = "object"
            props = schema.get("properties")
            extra = schema.get("additionalProperties")
            if props:
                out["properties"] = {k: self.node(v) for k, v in props.items()}
                if schema.get("required"):
                    out["required"] = sorted(schema["required"])
                if name and name in IMMUTABLE_FIELDS:
                    for field in IMMUTABLE_FIELDS[name]:
                        alias = _alias(field)
                        if alias in out["properties"]:
                            out["properties"][alias].setdefault(
                                "x-kubernetes-validations", []
                            ).append(_immutable(f"spec.{alias}"))
            elif isinstance(extra, dict) and extra:
                out["additionalProperties"] = self.node(extra)
            else:
                out["x-kubernetes-preserve-unknown-fields"] = True
        elif kind == "array":
            out["items"] = self.node(schema.get("items", {}))
        elif kind is None and not out.get("enum"):
            # Any JSON value (a categorical choice, an Optuna setting).
            out = {k: v for k, v in out.items() if k == "description"}
            out["x-kubernetes-preserve-unknown-fields"] = True
        elif kind is None:
            out["type"] = "string"
        rules = CEL_RULES.get(_UNION_NAMES.get(name or "", name or ""))
        if rules:
            out["x-kubernetes-validations"] = copy.deepcopy(rules)
        return out

    def _union(self, schema: dict[str, Any], name: str | None) -> dict[str, Any]:
        branches = [
            b for b in schema.get("anyOf", schema.get("oneOf", [])) if b.get("type") != "null"
        ]
        nullable = len(branches) < len(schema.get("anyOf", schema.get("oneOf", [])))
        resolved = [self.defs[b["$ref"].split("/")[-1]] if "$ref" in b else b for b in branches]
        if len(branches) == 1:
            out = self.node(branches[0], name)
        elif all(r.get("type") == "object" and "properties" in r for r in resolved):
            out = self._merge_objects(branches, resolved)
        else:
            # Scalars of several types (str | int | float | bool): any value.
            out = {"x-kubernetes-preserve-unknown-fields": True}
        if "description" in schema:
            out["description"] = schema["description"]
        if nullable and "type" in out:
            out["nullable"] = True
        return out

    def _merge_objects(
        self, branches: list[dict[str, Any]], resolved: list[dict[str, Any]]
    ) -> dict[str, Any]:
        props: dict[str, dict[str, Any]] = {}
        required: set[str] | None = None
        first_name = branches[0]["$ref"].split("/")[-1] if "$ref" in branches[0] else None
        for branch in resolved:
            for key, sub in branch["properties"].items():
                converted = self.node(sub)
                if key not in props:
                    props[key] = converted
                elif props[key] != converted:
                    props[key] = _widen(props[key], converted)
            req = set(branch.get("required", []))
            required = req if required is None else required & req
        out: dict[str, Any] = {"type": "object", "properties": props}
        if required:
            out["required"] = sorted(required)
        rules = CEL_RULES.get(_UNION_NAMES.get(first_name or "", ""))
        if rules:
            out["x-kubernetes-validations"] = copy.deepcopy(rules)
        return out


def _widen(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """One schema that accepts what either branch's field accepts."""
    if a.get("enum") and b.get("enum"):
        return {**a, "enum": sorted(set(a["enum"]) | set(b["enum"]))}
    types = {a.get("type"), b.get("type")}
    if types <= {"number", "integer"}:
        keep = {k: v for k, v in a.items() if k in ("description", "nullable")}
        # The wider of the two ranges (a float's); CEL_RULES["Parameter"] holds each
        # type's own range.
        for key, pick in (("minimum", min), ("maximum", max)):
            if key in a and key in b:
                keep[key] = pick(a[key], b[key])
        return {"type": "number", **keep}
    if types == {"array"}:
        return {
            "type": "array",
            **{k: v for k, v in a.items() if k in ("minItems", "maxItems", "description")},
            "items": _widen(a.get("items", {}), b.get("items", {})),
        }
    if a == b:
        return a
    return {"x-kubernetes-preserve-unknown-fields": True}


def _alias(field: str) -> str:
    head, *rest = field.split("_")
    return head + "".join(p.title() for p in rest)


def _schema(model: type, spec_required: bool = True) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    converter = _Converter(raw.get("$defs", {}))
    props = raw["properties"]
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": converter.node(props["spec"]),
            "status": converter.node(props["status"]),
        },
        "required": ["spec"] if spec_required else [],
    }
    return schema


def _crd(
    plural: str,
    kind: str,
    short_names: list[str],
    schema: dict[str, Any],
    columns: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "trialforge"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "plural": plural,
                "singular": kind.lower(),
                "kind": kind,
                "listKind": f"{kind}List",
                "shortNames": short_names,
                "categories": ["trialforge"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


def _col(
    name: str, path: str, kind: str = "string", priority: int = 0, **extra: Any
) -> dict[str, Any]:
    col = {"name": name, "type": kind, "jsonPath": path, **extra}
    if priority:
        col["priority"] = priority
    return col


def experiment_crd() -> dict[str, Any]:
    return _crd(
        "experiments",
        "Experiment",
        ["xp", "exp"],
        _schema(Experiment),
        [
            _col("Phase", ".status.phase"),
            _col("Progress", ".status.progress"),
            _col("Objective", ".spec.objective.metric", priority=1),
            _col("Best", ".status.bestValue", "number"),
            _col("Best-Trial", ".status.best.trial", priority=1),
            _col("Running", ".status.trials.running", "integer"),
            _col("Succeeded", ".status.trials.succeeded", "integer"),
            _col("Failed", ".status.trials.failed", "integer"),
            _col("Pruned", ".status.trials.pruned", "integer", priority=1),
            _col("Infeasible", ".status.trials.infeasible", "integer", priority=1),
            _col("Reason", ".status.reason", priority=1),
            _col("Age", ".metadata.creationTimestamp", "date"),
        ],
    )


def trial_crd() -> dict[str, Any]:
    return _crd(
        "trials",
        "Trial",
        ["tr"],
        _schema(Trial),
        [
            _col("Experiment", ".spec.experiment"),
            _col("Phase", ".status.phase"),
            _col("Objective", ".status.objective", "number"),
            _col("Attempt", ".spec.attempt", "integer"),
            _col("Feasible", ".status.feasible", "boolean"),
            _col("Disruptions", ".status.disruptions", "integer"),
            _col("Reason", ".status.reason", priority=1),
            _col("Node", ".status.node", priority=1),
            _col("Age", ".metadata.creationTimestamp", "date"),
        ],
    )


def all_crds() -> dict[str, dict[str, Any]]:
    """File name → CRD document."""
    return {
        f"experiments.{GROUP}.yaml": experiment_crd(),
        f"trials.{GROUP}.yaml": trial_crd(),
    }


HEADER = "# Generated by `trialforge crds` from operator/trialforge/api; do not edit.\n"


def render(crd: dict[str, Any]) -> str:
    return HEADER + yaml.safe_dump(crd, sort_keys=False, width=100)
