"""Turn the lines a trainer writes into observations.

Three line formats, picked by ``trial.metrics.format``:

``json``
    One JSON object per line: ``{"step": 3, "val_loss": 0.21}``.  Every other
    key whose value is a number is a metric; a nested ``"metrics"`` object (the
    shape of :meth:`Observation.to_dict`) is merged in.  Numeric strings count
    (``json.dumps(..., default=str)`` is the usual way numpy floats reach a
    log), other strings, booleans, ``null``, lists and objects are ignored.
    Python's ``NaN``/``Infinity`` literals are kept as non-finite floats.

``keyvalue``
    A lenient scanner for ``key=value`` and ``key: value`` pairs anywhere in the
    line, separated by spaces, commas or anything else: ``step=3 val_loss=0.21``,
    ``epoch 3 | loss: 0.2, acc: 0.9`` and Hugging Face's printed dicts
    (``{'loss': 0.69, 'epoch': 1.0}``) all parse.  Only numeric values count
    (``nan``/``inf`` included); ``eta: 00:12`` or ``size=10MB`` are not numbers.

``regex``
    A user pattern with named groups, applied with :func:`re.finditer` (search
    semantics, not a full match).  If the pattern has groups ``name`` and
    ``value``, every match is one metric (other named groups still count as
    below); otherwise every named group is a metric named after the group.
    All matches on a line merge into one observation, later matches winning.

In every format the keys ``step``, ``time`` and ``timestamp`` are not metrics:
``step`` is the trainer's counter (a non-negative integer; a line whose step is
anything else is junk, because numbering it ourselves would misplace it in the
pruner's history) and ``time``/``timestamp`` is seconds since the epoch (JSON may
also give an ISO-8601 string; naive times are UTC).  A line without any metric
is junk.  Parsers never raise on input.

:class:`ObservationReader` adds the state a stream needs: it splits chunks into
lines (``\\n``, ``\\r\\n`` or a bare ``\\r``, as Python's universal newlines do, so
progress bars that redraw with ``\\r`` yield one line per redraw), keeps the
trailing partial line for the next chunk, numbers lines that carry no step, and
counts what it saw.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol, TypeVar

from trialforge.api.observation import Observation

__all__ = [
    "FORMATS",
    "JsonLinesParser",
    "KeyValueParser",
    "ObservationParser",
    "ObservationReader",
    "ParsedLine",
    "RegexParser",
    "make_parser",
    "non_finite",
]

_T = TypeVar("_T")

STEP_KEY = "step"
TIME_KEYS = ("time", "timestamp")  # "time" wins when a line has both
_RESERVED = frozenset((STEP_KEY, *TIME_KEYS))

# A number as trainers print it.  Strict on purpose: float() alone would also
# accept "1_000" and surrounding whitespace.
_NUMBER = r"[-+]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|(?i:nan|inf(?:inity)?))"
_NUMBER_RE = re.compile(_NUMBER)

# The lookbehind keeps a key from starting mid-token ("3abc=1" gives no "abc",
# "x.y=1" gives "x.y", not "y"); the lookahead rejects numbers that are only the start of something
# else ("12:30", "1.2.3", "10MB", "1e-3x").
_KEY_VALUE_RE = re.compile(
    r"(?<![\w.'\"])['\"]?(?P<key>[A-Za-z_][\w./-]*)['\"]?\s*[:=]\s*"
    rf"(?P<value>{_NUMBER})(?![\w.:/-])"
)


@dataclass(frozen=True, slots=True)
class ParsedLine:
    """What one line said, before the reader numbers it.

    Not an :class:`Observation` because ``step`` may be missing here and the
    observation's step is a plain ``int``.
    """

    metrics: dict[str, float]
    step: int | None = None
    time: float | None = None

    def to_observation(self, step: int) -> Observation:
        return Observation(step=step, metrics=dict(self.metrics), time=self.time)


class ObservationParser(Protocol):
    """Parses one line (without its newline); ``None`` means junk."""

    def parse(self, line: str) -> ParsedLine | None: ...


def _number(text: str) -> float | None:
    if _NUMBER_RE.fullmatch(text) is None:
        return None
    return float(text)


def _stripped_number(text: str) -> float | None:
    return _number(text.strip())


def _metric_value(value: object) -> float | None:
    """A metric value from JSON: numbers and numeric strings; never booleans."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            return float(value)
        except OverflowError:  # an int too large for a float
            return None
    if isinstance(value, str):
        return _number(value.strip())
    return None


def _step_value(value: object) -> int | None:
    """A valid step or ``None``; callers treat ``None`` as a broken line."""
    number = _metric_value(value)
    if number is None or not (math.isfinite(number) and number.is_integer()) or number < 0:
        return None
    # int(value) rather than int(number) keeps huge JSON integers exact.
    return value if isinstance(value, int) else int(number)


def _time_value(value: object) -> float | None:
    number = _metric_value(value)
    if number is not None:
        return number if math.isfinite(number) else None
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()
    except (ValueError, OverflowError, OSError):  # not a date, or one out of range
        return None


def _from_fields(
    fields: Mapping[str, _T], convert: Callable[[_T], float | None]
) -> ParsedLine | None:
    """Sort a line's fields into step, time and metrics; ``None`` means junk."""
    step: int | None = None
    if STEP_KEY in fields:
        step = _step_value(fields[STEP_KEY])
        if step is None:
            return None
    time = next(
        (t for key in TIME_KEYS if key in fields and (t := _time_value(fields[key])) is not None),
        None,
    )
    metrics: dict[str, float] = {}
    for key, raw in fields.items():
        if key and key not in _RESERVED and (value := convert(raw)) is not None:
            metrics[key] = value
    if not metrics:
        return None
    return ParsedLine(metrics=metrics, step=step, time=time)


class JsonLinesParser:
    """One JSON object per line."""

    def parse(self, line: str) -> ParsedLine | None:
        text = line.strip()
        if not text.startswith("{"):  # cheap exit for the plain log lines around
            return None
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):
            return None
        if not isinstance(data, dict):
            return None
        nested = data.get("metrics")
        if isinstance(nested, dict):
            # Observation.to_dict's shape.  Its step/time live at the top level;
            # a top-level metric of the same name wins over the nested one.
            del data["metrics"]
            data = {**{k: v for k, v in nested.items() if k not in _RESERVED}, **data}
        return _from_fields(data, _metric_value)


class KeyValueParser:
    """``key=value`` / ``key: value`` pairs anywhere in the line."""

    def parse(self, line: str) -> ParsedLine | None:
        fields = {m["key"]: m["value"] for m in _KEY_VALUE_RE.finditer(line)}
        return _from_fields(fields, _number) if fields else None


class RegexParser:
    """Named groups of a user pattern; see the module docstring for the rules."""

    def __init__(self, pattern: str) -> None:
        try:
            self.regex = re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"invalid metrics pattern {pattern!r}: {exc}") from exc
        groups = set(self.regex.groupindex)
        if not groups:
            raise ValueError(
                f"metrics pattern {pattern!r} has no named groups: name each metric "
                "with (?P<metric>...), or use groups 'name' and 'value'"
            )
        self.name_value = {"name", "value"} <= groups
        if not self.name_value and ({"name", "value"} & groups):
            raise ValueError(f"metrics pattern {pattern!r}: groups 'name' and 'value' go together")
        metric_groups = groups - _RESERVED - ({"name", "value"} if self.name_value else set())
        if not self.name_value and not metric_groups:
            raise ValueError(
                f"metrics pattern {pattern!r} names no metric: its only groups are {sorted(groups)}"
            )

    def parse(self, line: str) -> ParsedLine | None:
        fields: dict[str, str] = {}
        for match in self.regex.finditer(line):
            captured = {k: v for k, v in match.groupdict().items() if v is not None}
            if self.name_value:
                if "name" in captured and "value" in captured:
                    fields[captured["name"].strip()] = captured["value"]
                captured.pop("name", None)
                captured.pop("value", None)
            fields.update(captured)
        return _from_fields(fields, _stripped_number) if fields else None


FORMATS: Mapping[str, str] = {
    "json": "json",
    "jsonl": "json",
    "keyvalue": "keyvalue",
    "key=value": "keyvalue",
    "kv": "keyvalue",
    "regex": "regex",
}


def make_parser(format: str, pattern: str | None = None) -> ObservationParser:
    """The parser for an Experiment's ``trial.metrics.format`` (and ``pattern``)."""
    kind = FORMATS.get(format.strip().lower())
    if kind is None:
        known = ", ".join(sorted(set(FORMATS.values())))
        raise ValueError(f"unknown metrics format {format!r}; known formats: {known}")
    if kind == "regex":
        if not pattern:
            raise ValueError("metrics format 'regex' needs a pattern")
        return RegexParser(pattern)
    if pattern is not None:
        raise ValueError(f"a metrics pattern only applies to format 'regex', not {format!r}")
    return JsonLinesParser() if kind == "json" else KeyValueParser()


_NEWLINE_RE = re.compile(r"\r\n|\r|\n")
JUNK_SAMPLE_CHARS = 200


@dataclass(slots=True)
class ObservationReader:
    """Feeds a stream of text through a parser and numbers the observations.

    A line without a step gets the previous step + 1 (the first gets 0), so a
    trainer that never prints a step gets 0, 1, 2, ...; after an explicit step
    the count continues from it.  Explicit steps are kept as given, even when
    they go backwards (a resumed trainer): what that means is the engine's call.

    ``lines == observations + junk + blank`` always holds.  Lines longer than
    ``max_line`` characters are junk without being parsed, and a partial line
    that grows past it is dropped up to its newline, so a stream without
    newlines cannot grow memory without bound.
    """

    parser: ObservationParser
    max_line: int = 1 << 20
    lines: int = field(default=0, init=False)
    observations: int = field(default=0, init=False)
    junk: int = field(default=0, init=False)
    blank: int = field(default=0, init=False)
    last_step: int | None = field(default=None, init=False)
    # A sample for a message such as "no metrics found; the last line was ...".
    last_junk: str | None = field(default=None, init=False)
    _partial: str = field(default="", init=False, repr=False)
    _discarding: bool = field(default=False, init=False, repr=False)

    def feed_line(self, line: str) -> Observation | None:
        """One complete line, without its newline."""
        self.lines += 1
        if not line.strip():
            self.blank += 1
            return None
        parsed = self.parser.parse(line) if len(line) <= self.max_line else None
        if parsed is None:
            self.junk += 1
            self.last_junk = line[:JUNK_SAMPLE_CHARS]
            return None
        step = parsed.step if parsed.step is not None else self._next_step()
        self.last_step = step
        self.observations += 1
        return parsed.to_observation(step)

    def feed(self, chunk: str) -> list[Observation]:
        """Any piece of the stream; the trailing partial line waits for the next chunk."""
        data = self._partial + chunk
        # A trailing "\r" may be the first half of a "\r\n" split across chunks:
        # hold it back so that the pair does not count as two line ends.
        held = "\r" if data.endswith("\r") else ""
        *complete, partial = _NEWLINE_RE.split(data[: len(data) - len(held)])
        found: list[Observation] = []
        for line in complete:
            if self._discarding:  # the tail of an over-long line, already counted
                self._discarding = False
                continue
            obs = self.feed_line(line)
            if obs is not None:
                found.append(obs)
        if not self._discarding and len(partial) > self.max_line:
            self.lines += 1
            self.junk += 1
            self.last_junk = partial[:JUNK_SAMPLE_CHARS]
            self._discarding = True
        self._partial = ("" if self._discarding else partial) + held
        return found

    def flush(self) -> list[Observation]:
        """End of stream: the last line may have had no newline."""
        rest, self._partial = self._partial, ""
        discarding, self._discarding = self._discarding, False
        if rest.endswith("\r"):
            rest = rest[:-1]
        if discarding or not rest:
            return []
        obs = self.feed_line(rest)
        return [] if obs is None else [obs]

    def _next_step(self) -> int:
        return 0 if self.last_step is None else self.last_step + 1


def non_finite(observation: Observation, names: Iterable[str] | None = None) -> list[str]:
    """The metrics (of ``names``, or all) whose value is NaN or infinite.

    The engine uses it to fail a trial with a reason such as "val_loss is nan at
    step 12" rather than feeding the value to the search.
    """
    wanted = observation.metrics if names is None else names
    return [
        name
        for name in wanted
        if name in observation.metrics and not math.isfinite(observation.metrics[name])
    ]
