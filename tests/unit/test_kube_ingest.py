"""kube/ingest.py: the write budget (``Pace``, a token bucket on a fake clock) and what a
request may be (issue 18: every bad request refused by its reason, never raised)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trialforge.kube.ingest import (
    MAX_REQUEST_BYTES,
    REJECTED_LABEL,
    Ingest,
    Pace,
    WouldBlock,
    _TrialBuffer,
)
from trialforge.metrics.contract import (
    HTTP_STATUS,
    Reason,
    batch_bytes,
    batch_head,
    ingest_token,
    observation_json,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_goes_at_once_then_writes_are_spaced_by_the_rate() -> None:
    clock = Clock()
    pace = Pace(rate=4.0, burst=2.0, clock=clock)
    assert [pace.reserve(), pace.reserve()] == [0.0, 0.0]
    # The third and fourth are taken in advance: each waits one more 1/rate.
    assert pace.reserve() == pytest.approx(0.25)
    assert pace.reserve() == pytest.approx(0.5)
    clock.now += 0.5  # both have been used; the bucket is empty again
    assert pace.reserve() == pytest.approx(0.25)


def test_an_idle_bucket_refills_only_up_to_the_burst() -> None:
    clock = Clock()
    pace = Pace(rate=1.0, burst=3.0, clock=clock)
    clock.now += 3600
    assert [pace.reserve() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert pace.reserve() == pytest.approx(1.0)


@given(
    rate=st.floats(0.5, 100.0),
    burst=st.integers(1, 20),
    gaps=st.lists(st.floats(0.0, 2.0), min_size=1, max_size=200),
)
def test_writes_never_exceed_burst_plus_rate_times_time(
    rate: float, burst: int, gaps: list[float]
) -> None:
    """Wherever the requests fall, the writes started by time t (each at its request
    time plus its wait) are at most burst + rate * t."""
    clock = Clock()
    start = clock.now
    pace = Pace(rate=rate, burst=float(burst), clock=clock)
    starts = []
    for gap in gaps:
        clock.now += gap
        starts.append(clock.now + pace.reserve())
    for i, at in enumerate(sorted(starts)):
        assert i + 1 <= burst + rate * (at - start) + 1e-6


# -- what a request may be: refused by reason before anything is read or stored --------

KEY = b"unit-key"


def _ingest(**kwargs: Any) -> Ingest:
    """An ingest that holds trial ns/t-0 as read from a cluster (nothing stored yet) and
    writes nothing within the test (no cluster here); any other trial would need a read,
    which may_block=False turns into WouldBlock."""
    ingest = Ingest(None, KEY, lambda ns, xp: {}, lambda ns, xp: None,  # type: ignore[arg-type]
                    write_interval=3600, **kwargs)  # fmt: skip
    buffer = _TrialBuffer("xp", {"metadata": {}, "status": {}}, 0, 0)
    buffer.last_write = time.monotonic()  # its first write is an interval away
    ingest._trials[("ns", "t-0")] = buffer
    return ingest


def _body(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "namespace": "ns",
        "trial": "t-0",
        "token": ingest_token(KEY, "ns", "t-0"),
        "observations": [{"seq": 1, "step": 0, "time": 1.0, "metrics": {"loss": 0.5}}],
    }
    body.update(fields)
    return body


def _obs(**fields: Any) -> dict[str, Any]:
    return {"seq": 1, "step": 0, "time": 1.0, "metrics": {"loss": 0.5}, **fields}


BAD: list[tuple[str, bytes, Reason, str]] = [
    ("not json", b"{nope", Reason.BAD_REQUEST, "not JSON"),
    ("nested too deep", b"[" * 100_000 + b"]" * 100_000, Reason.BAD_REQUEST, "not JSON"),
    ("NaN literal", json.dumps(_body(wait=float("nan"))).encode(), Reason.BAD_REQUEST, "NaN"),
    ("a list", b"[]", Reason.BAD_REQUEST, "object"),
    ("token a number", json.dumps(_body(token=7)).encode(), Reason.BAD_REQUEST, "strings"),
    ("forged token", json.dumps(_body(token="0" * 64)).encode(), Reason.UNAUTHORIZED, "token"),
    ("non-ASCII token", json.dumps(_body(token="é" * 64)).encode(), Reason.UNAUTHORIZED, "token"),
    (
        "another trial's token",
        json.dumps(_body(token=ingest_token(KEY, "ns", "t-1"))).encode(),
        Reason.UNAUTHORIZED,
        "token",
    ),
    ("huge batch", json.dumps(_body(observations=[_obs()] * 5001)).encode(),
     Reason.BAD_REQUEST, "at most 5000"),
    ("seq zero", json.dumps(_body(observations=[_obs(seq=0)])).encode(),
     Reason.BAD_REQUEST, "seq 0 is out of range"),
    ("seq negative", json.dumps(_body(observations=[_obs(seq=-5)])).encode(),
     Reason.BAD_REQUEST, "out of range"),
    ("seq beyond 2^53", json.dumps(_body(observations=[_obs(seq=2**60)])).encode(),
     Reason.BAD_REQUEST, "out of range"),
    ("seq a string", json.dumps(_body(observations=[_obs(seq="3")])).encode(),
     Reason.BAD_REQUEST, "seq must be an integer"),
    ("seq a float", json.dumps(_body(observations=[_obs(seq=2.5)])).encode(),
     Reason.BAD_REQUEST, "seq must be an integer"),
    ("seq true", json.dumps(_body(observations=[_obs(seq=True)])).encode(),
     Reason.BAD_REQUEST, "seq must be an integer"),
    ("seq missing", json.dumps(_body(observations=[{"step": 1, "metrics": {}}])).encode(),
     Reason.BAD_REQUEST, "'seq' is missing"),
    ("seq twice", json.dumps(_body(observations=[_obs(), _obs()])).encode(),
     Reason.BAD_REQUEST, "given twice"),
    ("step negative", json.dumps(_body(observations=[_obs(step=-1)])).encode(),
     Reason.BAD_REQUEST, "step -1 is out of range"),
    ("step 1e300", b'{"namespace":"ns","trial":"t-0","token":"%s","observations":'
     b'[{"seq":1,"step":1e300,"metrics":{}}]}' % ingest_token(KEY, "ns", "t-0").encode(),
     Reason.BAD_REQUEST, "step must be an integer"),
    ("metric a string", json.dumps(_body(observations=[_obs(metrics={"loss": "0.5"})])).encode(),
     Reason.BAD_REQUEST, "not a number"),
    ("metric a bool", json.dumps(_body(observations=[_obs(metrics={"loss": True})])).encode(),
     Reason.BAD_REQUEST, "not a number"),
    ("metric too big", json.dumps(_body(observations=[_obs(metrics={"loss": 10**400})])).encode(),
     Reason.BAD_REQUEST, "bad observation"),
    ("metric name empty", json.dumps(_body(observations=[_obs(metrics={"": 1})])).encode(),
     Reason.BAD_REQUEST, "metric name"),
    ("metric name huge", json.dumps(_body(observations=[_obs(metrics={"m" * 201: 1})])).encode(),
     Reason.BAD_REQUEST, "metric name"),
    ("many metrics", json.dumps(_body(observations=[_obs(
        metrics={f"m{i}": i for i in range(101)})])).encode(), Reason.BAD_REQUEST, "at most 100"),
    ("metrics a list", json.dumps(_body(observations=[_obs(metrics=[1])])).encode(),
     Reason.BAD_REQUEST, "metrics must be an object"),
    ("time a string", json.dumps(_body(observations=[_obs(time="now")])).encode(),
     Reason.BAD_REQUEST, "time must be"),
    ("wait negative", json.dumps(_body(wait=-1)).encode(), Reason.BAD_REQUEST, "wait"),
    ("over the size limit", b" " * (MAX_REQUEST_BYTES + 1), Reason.TOO_LARGE, "bytes"),
]  # fmt: skip


@pytest.mark.parametrize(("raw", "reason", "words"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_a_bad_request_is_refused_by_reason(raw: bytes, reason: Reason, words: str) -> None:
    answer = _ingest().handle_bytes(raw, may_block=False)
    assert (answer.status, answer.body["reason"]) == (HTTP_STATUS[reason], reason.value)
    assert 400 <= answer.status < 500 and answer.reason == REJECTED_LABEL[reason]
    assert words in answer.body["error"], answer.body["error"]


def test_what_the_collector_sends_passes_every_check() -> None:
    head = batch_head("ns", "t-0", ingest_token(KEY, "ns", "t-0"))
    encoded = [
        observation_json(1, 0, 10.0, {"loss": 0.5}),
        observation_json(2, 1, 11.0, {"loss": float("nan"), "g": float("-inf")}),
    ]
    answer = _ingest().handle_bytes(batch_bytes(head, encoded, wait=2.0), may_block=False)
    assert (answer.status, answer.reason) == (200, None)
    assert answer.body == {"reason": "Accepted", "stored": 0, "received": 2, "accepted": 2}
    # Sent again (a lost answer, or a replay): taken once.
    ingest = _ingest()
    for accepted in (2, 0):
        again = ingest.handle_bytes(batch_bytes(head, encoded), may_block=False)
        assert (again.body["accepted"], again.body["received"]) == (accepted, 2)


def test_a_trial_is_admitted_at_most_its_request_rate() -> None:
    ingest = _ingest(requests_per_second=1.0, request_burst=3)
    forged = json.dumps(_body(token="f" * 64)).encode()
    # A forged token is refused before it costs the trial any of its budget.
    assert ingest.handle_bytes(forged, may_block=False).body["reason"] == "Unauthorized"
    raw = json.dumps(_body(observations=[])).encode()
    answers = [ingest.handle_bytes(raw, may_block=False).body["reason"] for _ in range(5)]
    assert answers == [Reason.ACCEPTED.value] * 3 + [Reason.RATE_LIMITED.value] * 2
    # Another trial has its own budget (it goes on to be read: WouldBlock here).
    other = json.dumps(_body(trial="t-1", token=ingest_token(KEY, "ns", "t-1"))).encode()
    with pytest.raises(WouldBlock):
        ingest.handle_bytes(other, may_block=False)
    assert (
        ingest.handle_bytes(other.replace(b'"t-1"', b'"t-0"'), may_block=False).body["reason"]
        == "Unauthorized"
    )  # t-1's token is not t-0's


@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                  max_size=4),
    max_leaves=20,
))  # fmt: skip
def test_any_json_in_any_field_is_answered_never_raised(value: Any) -> None:
    ingest = _ingest()
    for body in (value, _body(observations=value), _body(observations=[value]),
                 _body(observations=[_obs(metrics=value)]), _body(observations=[_obs(seq=value)]),
                 _body(wait=value), _body(token=value)):  # fmt: skip
        answer = ingest.handle(body, may_block=False)
        assert (answer.status, answer.reason) == (200, None) or (
            400 <= answer.status < 500 and answer.reason in REJECTED_LABEL.values()
        ), answer
