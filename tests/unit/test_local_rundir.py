"""local/rundir.py: the run directory, and the background writer of trial records."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from pathlib import Path

import pytest

from trialforge.api.observation import Observation
from trialforge.engine.record import JOURNAL_KEYS, TrialRecord
from trialforge.local.rundir import FORMAT_VERSION, RunDirectory, state_of

OLD_LAYOUTS = Path(__file__).parents[1] / "data" / "run-directories"


def snake(rec: TrialRecord) -> dict:
    """A record as format 1 wrote it (snake_case keys)."""
    line = rec.to_journal()
    return {attr: line[key] for attr, key in JOURNAL_KEYS.items()}


def record(name: str = "xp-0", phase: str = "Running") -> TrialRecord:
    return TrialRecord(name=name, index=0, attempt=0, parameters={"x": 0.5}, seed=1, phase=phase)


def journal(rd: RunDirectory) -> list[dict]:
    """Every line of the journal, in order."""
    if not rd.journal_path.exists():
        return []
    return [json.loads(line) for line in rd.journal_path.read_text().splitlines()]


def on_disk(rd: RunDirectory, name: str) -> dict:
    """The record of ``name``: the journal's last line that names it."""
    return [line for line in journal(rd) if line["name"] == name][-1]


def written(rd: RunDirectory) -> set[str]:
    return {line["name"] for line in journal(rd)}


def writer_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "trialforge-records")


def test_flush_puts_the_state_each_record_had_when_saved_on_disk(tmp_path: Path) -> None:
    rd = RunDirectory(tmp_path)
    rd.trials_dir.mkdir()
    writer = rd.writer()
    first, second = record("xp-0"), record("xp-1")
    writer.save(first)
    writer.save(second)
    # A change is a new record: the one saved is written as it was.
    first = dataclasses.replace(first, phase="Succeeded", values=(0.25,))
    writer.flush()
    assert on_disk(rd, "xp-0")["phase"] == "Running"
    assert on_disk(rd, "xp-1")["phase"] == "Running"
    writer.save(first)
    writer.close()
    saved = on_disk(rd, "xp-0")
    assert (saved["phase"], saved["values"]) == ("Succeeded", [0.25])
    assert TrialRecord.from_journal(saved) == first
    assert [r.name for r in rd.load_trials()] == ["xp-0", "xp-1"]


def full_record() -> TrialRecord:
    """A record with every field set to something other than its default."""
    return TrialRecord(
        name="xp-3-r1", index=3, attempt=1, parameters={"x": 0.5, "opt": "adam"}, seed=9,
        phase="Succeeded", reason="Completed", message="done", values=(0.25, 3.0),
        retryable=False, constraints={"latency_ms": 12.5}, feasible=True, exit_code=0,
        start_time=1.5, completion_time=2.5,
        search_state={"trial": {"number": 3}, "study": {}}, junk_lines=2, role="repeat",
        config="c1", repeat=1, search_index=3, warm_start="runDir old: 3 trials",
        code_version="abc", data_version="v2",
        command=("python", "train.py"), node="host", gpu_type="H200", image_digest="img@sha256:1",
        artifact_uri="file:///m", gpu_seconds=1.0, disruptions=1, checkpoint_step=4,
        disruption_history=({"reason": "Interrupted", "message": "m", "run": "xp-3-r1#0"},),
    )  # fmt: skip


def test_a_journal_line_holds_every_field_and_reads_back_as_the_same_record() -> None:
    rec = full_record()
    defaults = TrialRecord("x", 0, 0, "Pending", {})
    # full_record sets every field the journal holds, so none can be left out unseen.
    journaled = {f.name for f in dataclasses.fields(TrialRecord)} - {"intermediate"}
    assert {f for f in journaled if getattr(rec, f) == getattr(defaults, f)} == set()
    line = json.loads(json.dumps(rec.to_journal()))
    assert set(line) == {JOURNAL_KEYS[f] for f in journaled}
    assert [k for k in line if "_" in k] == []  # camelCase, as state.json and the resources
    assert TrialRecord.from_journal(line) == rec
    # Format 1 wrote the same line with snake_case keys: it reads as the same record.
    snake = {attr: line[key] for attr, key in JOURNAL_KEYS.items()}
    assert "search_state" in snake and "gpu_seconds" in snake
    assert TrialRecord.from_journal(snake) == rec
    with pytest.raises(dataclasses.FrozenInstanceError):
        rec.phase = "Failed"  # type: ignore[misc]


def test_close_ends_the_thread_and_a_later_save_starts_another(tmp_path: Path) -> None:
    rd = RunDirectory(tmp_path)
    rd.trials_dir.mkdir()
    before = writer_threads()
    writer = rd.writer()
    writer.close()  # nothing saved: nothing to wait for
    writer.save(record())
    writer.close()
    for thread in threading.enumerate():
        if thread.name == "trialforge-records":
            thread.join(timeout=5)
    assert writer_threads() == before
    writer.save(record(phase="Succeeded"))
    writer.close()
    assert on_disk(rd, "xp-0")["phase"] == "Succeeded"


def test_a_failed_write_is_raised_by_flush_and_by_the_next_save(tmp_path: Path) -> None:
    rd = RunDirectory(tmp_path)
    rd.journal_path.mkdir(parents=True)  # a folder where the journal should be
    writer = rd.writer()
    writer.save(record())
    with pytest.raises(OSError):
        writer.flush()
    with pytest.raises(OSError):
        writer.save(record("xp-1"))
    with pytest.raises(OSError):
        writer.close()


def test_a_delayed_snapshot_waits_unless_a_newer_one_or_a_flush_comes(tmp_path: Path) -> None:
    rd = RunDirectory(tmp_path)
    rd.trials_dir.mkdir()
    writer = rd.writer()
    started = record("xp-0")
    writer.save(started, delay=600)
    writer.save(record("xp-1"))
    deadline = time.monotonic() + 30
    while "xp-1" not in written(rd) and time.monotonic() < deadline:
        time.sleep(0.01)
    # Written in the order saved, but the delayed one is not due yet.
    assert written(rd) == {"xp-1"}
    writer.save(
        dataclasses.replace(started, phase="Succeeded")
    )  # a newer state: written at once, the delayed one never
    writer.flush()
    assert [line["phase"] for line in journal(rd) if line["name"] == "xp-0"] == ["Succeeded"]
    writer.save(record("xp-2"), delay=600)
    writer.close()  # writes what is delayed, now
    assert on_disk(rd, "xp-2")["phase"] == "Running"


def test_an_attempts_observations_are_written_with_its_end_and_read_back(tmp_path: Path) -> None:
    rd = RunDirectory(tmp_path)
    writer = rd.writer()
    rec = record("xp-0")
    writer.save(rec)
    writer.flush()  # else the end's snapshot would replace the start's before its turn
    seen = [Observation(0, {"loss": 0.5}, 10.0), Observation(1, {"loss": float("nan")}, 11.0)]
    writer.save(dataclasses.replace(rec, phase="Failed", values=None), observations=seen)
    seen.append(Observation(2, {"loss": 0.1}))  # after the save: not written
    writer.close()
    assert [line["phase"] for line in journal(rd)] == ["Running", "Failed"]
    again = RunDirectory(tmp_path)
    assert [r.phase for r in again.load_trials()] == ["Failed"]
    back = again.load_observations("xp-0")
    assert [(o.step, o.time) for o in back] == [(0, 10.0), (1, 11.0)]
    assert back[0].metrics == {"loss": 0.5} and back[1].metrics["loss"] != back[1].metrics["loss"]
    assert again.load_observations("xp-1") == []


def test_a_run_directory_from_before_the_journal_is_read_and_the_journal_comes_after_it(
    tmp_path: Path,
) -> None:
    rd = RunDirectory(tmp_path)
    rd.trials_dir.mkdir()
    old = dataclasses.replace(record("xp-0", phase="Succeeded"), values=(0.5,))
    (rd.trials_dir / "xp-0.json").write_text(json.dumps(snake(old), indent=1))
    (rd.trials_dir / "xp-0.jsonl").write_text('{"step": 0, "metrics": {"loss": 0.5}}\n')
    (rd.trials_dir / "xp-1.json").write_text(json.dumps(snake(record("xp-1"))))
    assert [(r.name, r.phase) for r in rd.load_trials()] == [
        ("xp-0", "Succeeded"),
        ("xp-1", "Running"),
    ]
    assert [o.metrics for o in rd.load_observations("xp-0")] == [{"loss": 0.5}]
    # xp-1 was running when that run died: a resume runs it again from its start.
    (rd.trials_dir / "xp-1.jsonl").write_text('{"step": 0, "metrics": {"loss": 0.9}}\n')
    rd.log_path("xp-1").write_text("the output of the attempt that died\n")
    assert len(rd.load_observations("xp-1")) == 1
    rd.discard_output("xp-1")
    assert rd.load_observations("xp-1") == [] and not rd.log_path("xp-1").exists()
    resumed = record("xp-1", phase="Pending")  # what a resume records goes to the journal
    rd.save_trial(resumed)
    assert [(r.name, r.phase) for r in rd.load_trials()] == [
        ("xp-0", "Succeeded"),
        ("xp-1", "Pending"),
    ]


# --- the format: versioned, camelCase, old ones read (docs/run-directory.md) --------


def test_state_json_names_its_format_and_camel_cases_its_own_fields(tmp_path: Path) -> None:
    state = state_of({"phase": "Running"}, "xp", tmp_path, pid=12, host="h")
    assert state["formatVersion"] == FORMAT_VERSION == 2
    rd = RunDirectory(tmp_path)
    rd.save_state(state)
    assert rd.format_version() == 2
    assert rd.load_state()["pid"] == 12
    assert [k for k in json.loads((tmp_path / "state.json").read_text()) if "_" in k] == []
    rd.save_state({**state, "formatVersion": 3})  # a newer Trialforge wrote it
    with pytest.raises(ValueError, match="formatVersion 3 is newer"):
        rd.load_state()


def test_a_format_1_directory_loads_as_it_was_recorded(tmp_path: Path) -> None:
    rd = RunDirectory(OLD_LAYOUTS / "v1")
    assert "formatVersion" not in json.loads((rd.root / "state.json").read_text())
    assert rd.format_version() == 1
    assert '"search_index"' in rd.journal_path.read_text()  # snake_case, as format 1 wrote it
    records = rd.load_trials()
    assert [(r.name, r.phase, r.role, r.search_index) for r in records] == [
        (f"format-one-{i}", "Succeeded", "search", i) for i in range(3)
    ]
    assert all(r.values and r.start_time and r.completion_time for r in records)
    assert [o.step for o in rd.load_observations("format-one-1")] == [0, 1, 2]
    assert rd.load_state()["trials"]["succeeded"] == 3


def test_upgrade_rewrites_a_format_1_journal_in_camel_case_and_keeps_every_record(
    tmp_path: Path,
) -> None:
    import shutil

    shutil.copytree(OLD_LAYOUTS / "v1", tmp_path / "run")
    rd = RunDirectory(tmp_path / "run")
    before = rd.load_trials()
    observed = {r.name: rd.load_observations(r.name) for r in before}
    with open(rd.journal_path, "a") as handle:
        handle.write('{"name": "cut-short", "ind\n')  # a crash's line is kept as it is
    assert rd.upgrade() is True
    lines = rd.journal_path.read_text().splitlines()
    assert lines[-1] == '{"name": "cut-short", "ind'
    assert [k for line in lines[:-1] for k in json.loads(line) if "_" in k] == []
    again = RunDirectory(tmp_path / "run")
    assert again.load_trials() == before
    assert {r.name: again.load_observations(r.name) for r in before} == observed
    assert again.upgrade() is False  # camelCase already: left alone
