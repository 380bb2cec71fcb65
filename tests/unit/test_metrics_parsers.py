"""Observation parsers and the streaming reader (issue 3, item 5)."""

from __future__ import annotations

import itertools
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trialforge.api.observation import Observation
from trialforge.metrics.parsers import (
    JsonLinesParser,
    KeyValueParser,
    ObservationReader,
    ParsedLine,
    RegexParser,
    make_parser,
    non_finite,
)


def read_all(parser_format: str, text: str, pattern: str | None = None) -> list[Observation]:
    reader = ObservationReader(make_parser(parser_format, pattern))
    return reader.feed(text) + reader.flush()


# --- JSON lines -----------------------------------------------------------------


def test_json_line_with_step_and_metrics() -> None:
    parsed = JsonLinesParser().parse('{"step": 3, "val_loss": 0.21, "acc": 1}')
    assert parsed == ParsedLine(metrics={"val_loss": 0.21, "acc": 1.0}, step=3)


def test_json_ignores_booleans_null_text_and_containers_but_takes_numeric_strings() -> None:
    parsed = JsonLinesParser().parse(
        '{"loss": "0.5", "done": true, "tag": "run-1", "x": null, "l": [1], "d": {"a": 1}}'
    )
    assert parsed is not None
    assert parsed.metrics == {"loss": 0.5}


def test_json_merges_nested_metrics_in_observation_shape() -> None:
    obs = Observation(step=7, metrics={"loss": 0.25}, time=12.5)
    parsed = JsonLinesParser().parse(json.dumps(obs.to_dict()))
    assert parsed is not None
    assert parsed.to_observation(parsed.step or 0) == obs


def test_json_time_as_number_or_iso_string() -> None:
    parser = JsonLinesParser()
    numeric = parser.parse('{"loss": 1, "time": 1700000000.5}')
    iso = parser.parse('{"loss": 1, "timestamp": "2024-01-01T00:00:00Z"}')
    naive = parser.parse('{"loss": 1, "timestamp": "2024-01-01T00:00:00"}')
    assert numeric is not None and numeric.time == 1700000000.5
    assert iso is not None and iso.time == 1704067200.0
    assert naive is not None and naive.time == 1704067200.0  # naive means UTC
    assert "time" not in numeric.metrics and "timestamp" not in iso.metrics


@pytest.mark.parametrize(
    "line",
    [
        "plain text",
        "[1, 2, 3]",
        '{"step": 3}',  # no metric
        '{"msg": "starting", "level": "info"}',  # structured log, no numbers
        '{"step": 3.5, "loss": 1}',  # fractional step
        '{"step": -1, "loss": 1}',  # negative step
        '{"step": "three", "loss": 1}',
        '{"step": true, "loss": 1}',
        '{"loss": 1',  # truncated
        "{" * 100_000,  # deep nesting must not escape as RecursionError
    ],
)
def test_json_junk(line: str) -> None:
    assert JsonLinesParser().parse(line) is None


def test_json_keeps_nan_and_infinity() -> None:
    (obs,) = read_all("json", '{"loss": NaN, "a": Infinity, "b": -Infinity, "c": "nan"}\n')
    assert math.isnan(obs.metrics["loss"]) and math.isnan(obs.metrics["c"])
    assert obs.metrics["a"] == math.inf and obs.metrics["b"] == -math.inf
    assert non_finite(obs) == ["loss", "a", "b", "c"]
    assert non_finite(obs, ["b", "missing"]) == ["b"]


# --- key=value ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "step", "metrics"),
    [
        ("step=3 val_loss=0.21", 3, {"val_loss": 0.21}),
        ("step=3,val_loss=0.21, acc=9e-1", 3, {"val_loss": 0.21, "acc": 0.9}),
        ("step: 4  loss: -0.5", 4, {"loss": -0.5}),
        ("Epoch 2 | train/loss=0.3 lr=1e-3", None, {"train/loss": 0.3, "lr": 0.001}),
        (
            "{'loss': 0.6931, 'learning_rate': 5e-05, 'epoch': 1.0}",
            None,
            {"loss": 0.6931, "learning_rate": 5e-05, "epoch": 1.0},
        ),
        ("x=1 x=2", None, {"x": 2.0}),  # last one wins
        # Not numbers: times, versions, sizes, words.
        ("eta: 00:12 v=1.2.3 size=10MB mode=train acc=0.5", None, {"acc": 0.5}),
    ],
)
def test_key_value(line: str, step: int | None, metrics: dict[str, float]) -> None:
    assert KeyValueParser().parse(line) == ParsedLine(metrics=metrics, step=step)


@pytest.mark.parametrize(
    "line", ["Loading checkpoint...", "mode=train", "step=2", "step=1.5 loss=1", "12:30:01 ok"]
)
def test_key_value_junk(line: str) -> None:
    assert KeyValueParser().parse(line) is None


def test_key_value_keeps_nan_and_inf() -> None:
    parsed = KeyValueParser().parse("loss=nan acc=NaN grad=inf g2=-Infinity")
    assert parsed is not None
    assert math.isnan(parsed.metrics["loss"]) and math.isnan(parsed.metrics["acc"])
    assert parsed.metrics["grad"] == math.inf and parsed.metrics["g2"] == -math.inf


def test_key_value_does_not_mistake_words_starting_with_inf_for_numbers() -> None:
    assert KeyValueParser().parse("status=info") is None


# --- regex ----------------------------------------------------------------------


def test_regex_fixed_group_names() -> None:
    parser = RegexParser(r"Epoch (?P<step>\d+).*?loss (?P<loss>\S+).*?acc (?P<acc>\S+)")
    assert parser.parse("Epoch 4: train loss 0.30 | acc 0.91") == ParsedLine(
        metrics={"loss": 0.30, "acc": 0.91}, step=4
    )
    assert parser.parse("Epoch 4: starting") is None


def test_regex_name_value_groups_match_many_times_per_line() -> None:
    parser = RegexParser(r"(?P<name>\w+)=(?P<value>[-+.\deE]+)")
    assert parser.parse("step=2 loss=0.1 acc=0.5 mode=x") == ParsedLine(
        metrics={"loss": 0.1, "acc": 0.5}, step=2
    )


def test_regex_optional_group_and_non_numeric_capture_are_skipped() -> None:
    parser = RegexParser(r"loss=(?P<loss>\S+)(?: acc=(?P<acc>\S+))?")
    assert parser.parse("loss=0.5") == ParsedLine(metrics={"loss": 0.5})
    assert parser.parse("loss=abc acc=0.1") == ParsedLine(metrics={"acc": 0.1})
    assert parser.parse("loss=abc") is None


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        (r"loss=(\d+", "invalid metrics pattern"),
        (r"loss=(\d+)", "no named groups"),
        (r"(?P<name>\w+)=\d+", "go together"),
        (r"step=(?P<step>\d+)", "names no metric"),
    ],
)
def test_regex_rejects_bad_patterns(pattern: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_parser("regex", pattern)


def test_invalid_regex_error_carries_re_error_text() -> None:
    with pytest.raises(ValueError, match="missing \\), unterminated subpattern"):
        make_parser("regex", r"(?P<x>\d+")


# --- factory --------------------------------------------------------------------


def test_make_parser_formats_and_errors() -> None:
    assert isinstance(make_parser("json"), JsonLinesParser)
    assert isinstance(make_parser("JSONL"), JsonLinesParser)
    assert isinstance(make_parser("keyvalue"), KeyValueParser)
    assert isinstance(make_parser("regex", r"(?P<loss>\d+)"), RegexParser)
    with pytest.raises(ValueError, match="unknown metrics format 'csv'"):
        make_parser("csv")
    with pytest.raises(ValueError, match="needs a pattern"):
        make_parser("regex")
    with pytest.raises(ValueError, match="only applies to format 'regex'"):
        make_parser("json", r"(?P<loss>\d+)")


# --- the reader -----------------------------------------------------------------


def test_reader_counts_junk_and_blank_lines_and_never_raises() -> None:
    reader = ObservationReader(make_parser("json"))
    found = reader.feed('Loading...\n\n{"loss": 1}\n{broken\n   \n{"loss": 2}\n')
    assert [o.metrics["loss"] for o in found] == [1.0, 2.0]
    assert (reader.lines, reader.observations, reader.junk, reader.blank) == (6, 2, 2, 2)
    assert reader.last_junk == "{broken"


def test_reader_numbers_implicit_steps_from_zero_and_after_explicit_ones() -> None:
    text = "loss=1\nloss=2\nstep=10 loss=3\nloss=4\nstep=5 loss=5\nloss=6\n"
    assert [o.step for o in read_all("keyvalue", text)] == [0, 1, 10, 11, 5, 6]


def test_reader_junk_does_not_consume_a_step() -> None:
    assert [o.step for o in read_all("keyvalue", "loss=1\nnoise\nloss=2\n")] == [0, 1]


def test_reader_holds_partial_lines_until_the_next_chunk() -> None:
    reader = ObservationReader(make_parser("json"))
    assert reader.feed('{"step": 1, "lo') == []
    assert reader.feed('ss": 0.5}\n{"step": 2,') == [Observation(step=1, metrics={"loss": 0.5})]
    assert reader.feed(' "loss": 0.25}') == []
    assert reader.flush() == [Observation(step=2, metrics={"loss": 0.25})]
    assert reader.flush() == []
    assert reader.lines == 2


def test_reader_crlf_split_across_chunks_is_one_line_end() -> None:
    reader = ObservationReader(make_parser("keyvalue"))
    assert [o.metrics for o in reader.feed("loss=1\r")] == []
    assert [o.metrics for o in reader.feed("\nloss=2\r")] == [{"loss": 1.0}]
    assert [o.metrics for o in reader.flush()] == [{"loss": 2.0}]
    assert (reader.lines, reader.blank) == (2, 0)


def test_reader_treats_carriage_return_redraws_as_lines() -> None:
    found = read_all("keyvalue", "50%|## loss=0.9\r100%|#### loss=0.5\n")
    assert [o.metrics["loss"] for o in found] == [0.9, 0.5]


def test_reader_drops_an_over_long_partial_line_up_to_its_newline() -> None:
    reader = ObservationReader(make_parser("keyvalue"), max_line=10)
    assert reader.feed("loss=1 " + "x" * 20) == []
    assert reader.feed("loss=2 more") == []  # still the same over-long line
    assert reader.feed("\nloss=3\n") == [Observation(step=0, metrics={"loss": 3.0})]
    assert (reader.lines, reader.junk, reader.observations) == (2, 1, 1)
    assert reader.feed("loss=4 " + "y" * 20 + "\n") == []  # a complete over-long line
    assert (reader.lines, reader.junk) == (3, 2)


# --- properties -----------------------------------------------------------------

_FORMATS = [("json", None), ("keyvalue", None), ("regex", r"(?P<name>\w+)=(?P<value>\S+)")]
_noise = st.text(
    alphabet=st.sampled_from(list('{}[]":,=. \t\r\nabsteplos0123456789-+eEnaifNI'))
    | st.characters(),
    max_size=40,
)
# Valid lines of every format mixed with noise, so that the property also
# exercises real observations being cut at arbitrary points.
_valid = st.sampled_from(
    [
        '{"step": 3, "loss": 0.5}\n',
        '{"acc": NaN}\r\n',
        "step=4 loss=0.25\n",
        "loss=inf\r",
        "x" * 70 + " loss=1\n",  # longer than max_line below
    ]
)
_text = st.lists(_valid | _noise, max_size=12).map("".join)


@settings(max_examples=300, deadline=None)
@given(text=_text, which=st.sampled_from(_FORMATS), cuts=st.lists(st.integers(0, 300)))
def test_any_text_in_any_chunks_never_raises_and_counts_add_up(
    text: str, which: tuple[str, str | None], cuts: list[int]
) -> None:
    whole = ObservationReader(make_parser(*which), max_line=64)
    expected = whole.feed(text) + whole.flush()

    chunked = ObservationReader(make_parser(*which), max_line=64)
    got: list[Observation] = []
    bounds = [0, *sorted(c for c in cuts if c <= len(text)), len(text)]
    for start, end in itertools.pairwise(bounds):
        got += chunked.feed(text[start:end])
    got += chunked.flush()

    for reader in (whole, chunked):
        assert reader.lines == reader.observations + reader.junk + reader.blank
    # repr, because NaN != NaN would fail an equality check on identical results.
    assert repr(got) == repr(expected)
    assert (chunked.lines, chunked.junk, chunked.blank) == (whole.lines, whole.junk, whole.blank)
    assert whole.observations == len(expected)


@settings(max_examples=200, deadline=None)
@given(
    step=st.integers(0, 10**6),
    metrics=st.dictionaries(
        st.from_regex(r"[a-z_][a-z0-9_/]{0,10}", fullmatch=True).filter(
            lambda k: k not in {"step", "time", "timestamp"}
        ),
        st.floats(allow_nan=False, width=64),
        min_size=1,
        max_size=5,
    ),
)
def test_key_value_round_trips_what_a_trainer_prints(step: int, metrics: dict[str, float]) -> None:
    line = " ".join([f"step={step}", *(f"{k}={v!r}" for k, v in metrics.items())])
    assert KeyValueParser().parse(line) == ParsedLine(metrics=metrics, step=step)
