"""Shared model plumbing: camelCase on the wire, strict about unknown fields."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h|d))+$"
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class WireModel(BaseModel):
    """Base for every resource model.

    Fields are snake_case in Python and camelCase in YAML, as Kubernetes users
    expect.  Unknown fields are errors: a typo such as ``maxTrail`` must not be
    silently ignored and leave the user with a default they never chose.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_assignment=False,
    )

    def to_wire(self) -> dict[str, Any]:
        """The resource as it is written to YAML or to the API server."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


def parse_duration(text: str) -> float:
    """Seconds in a Go-style duration such as ``30m``, ``1h30m`` or ``45s``."""
    if not isinstance(text, str) or not re.fullmatch(DURATION_PATTERN, text.strip()):
        raise ValueError(f"{text!r} is not a duration; write it like 30s, 45m, 2h or 1h30m")
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))


def format_duration(seconds: float) -> str:
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.0f}s" if seconds >= 10 else f"{seconds:.1f}s"
    minutes, sec = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{sec:02d}s"
