"""Filling a trial's parameters into the pod template's command, args and env."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from typing import Any

# The API's, so that what validation accepted is exactly what gets filled in.
from trialforge.api.vocabulary import PLACEHOLDER


def format_value(value: Any) -> str:
    """How a parameter value is written into a command line: as the user would type it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def substitute_text(text: str, parameters: Mapping[str, Any]) -> str:
    """``text`` with each ``${params.NAME}`` replaced by the trial's value.

    Validation has made sure every placeholder names a parameter, so one the
    trial lacks is a conditional parameter that is inactive in this trial
    (``parameters[].when``): it becomes the empty string.
    """

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in parameters:
            return ""
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
