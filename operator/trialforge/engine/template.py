"""Filling a trial's parameters into the pod template's command, args and env."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from typing import Any

# The API's, so that what validation accepted is exactly what gets filled in.
from trialforge.api.experiment import ExperimentSpec
from trialforge.api.vocabulary import PLACEHOLDER


def format_value(value: Any) -> str:
    """How a parameter value is written into a command line: as the user would type it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def placeholder_values(spec: ExperimentSpec, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """What ``${params.NAME}`` reads for a trial: its values, and the empty string for
    each conditional parameter that is inactive in it (``parameters[].when``).  The
    trial's parameters and TRIALFORGE_PARAMS hold the active ones only."""
    return {**{p.name: "" for p in spec.parameters}, **parameters}


def substitute_text(text: str, parameters: Mapping[str, Any]) -> str:
    """``text`` with each ``${params.NAME}`` replaced (KeyError: it names no parameter)."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in parameters:
            raise KeyError(f"${{params.{name}}} names no parameter")
        return format_value(parameters[name])

    return PLACEHOLDER.sub(replace, text)


def substitute_container(
    container: Mapping[str, Any], parameters: Mapping[str, Any]
) -> dict[str, Any]:
    """A copy of ``container`` with placeholders filled in command, args and env values."""
    out = copy.deepcopy(dict(container))
    for key in ("command", "args"):
        if isinstance(out.get(key), list):
            out[key] = [substitute_text(str(a), parameters) for a in out[key]]
    for env in out.get("env") or []:
        if isinstance(env, dict) and isinstance(env.get("value"), str):
            env["value"] = substitute_text(env["value"], parameters)
    return out


def trial_environment(
    experiment: str, trial: str, parameters: Mapping[str, Any], seed: int, attempt: int
) -> dict[str, str]:
    """The TRIALFORGE_* variables every trial gets, locally and on a cluster."""
    return {
        "TRIALFORGE_EXPERIMENT": experiment,
        "TRIALFORGE_TRIAL": trial,
        "TRIALFORGE_PARAMS": json.dumps(dict(parameters), sort_keys=True),
        "TRIALFORGE_SEED": str(seed),
        "TRIALFORGE_ATTEMPT": str(attempt),
    }
