"""kube/logtail.py: the bounded tail of a trial's output kept in its status."""

from __future__ import annotations

from trialforge.api.status import MAX_LOG_TAIL_LINES, TrialStatus
from trialforge.kube.logtail import MAX_LINE_CHARS, bounded, trainer_name


def test_the_tail_keeps_the_last_lines_each_cut_to_a_bound() -> None:
    text = "\n".join(f"line {i}" for i in range(500)) + "\n" + "x" * 5000 + "\n"
    tail = bounded(text)
    assert len(tail) == MAX_LOG_TAIL_LINES
    assert tail[-2] == "line 499" and tail[0] == f"line {500 - MAX_LOG_TAIL_LINES + 1}"
    assert len(tail[-1]) == MAX_LINE_CHARS and tail[-1].endswith("…")
    assert bounded("") == []
    # What the operator writes, the Trial's schema takes; one line more it refuses.
    assert TrialStatus.model_validate({"logTail": tail}).log_tail == tail
    try:
        TrialStatus.model_validate({"logTail": [*tail, "one more"]})
    except ValueError as exc:
        assert "logTail" in str(exc) or "log_tail" in str(exc)
    else:
        raise AssertionError("a tail longer than the bound was taken")


def test_the_trainer_is_the_templates_first_container() -> None:
    template = {"spec": {"containers": [{"name": "trainer"}, {"name": "helper"}]}}
    assert trainer_name(template) == "trainer"
    assert trainer_name({"spec": {}}) is None
