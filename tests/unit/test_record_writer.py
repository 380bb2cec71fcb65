"""The background writer of trial records (local runtime)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from trialforge.local.rundir import RunDirectory, TrialRecord


def record(name: str = "xp-0", phase: str = "Running") -> TrialRecord:
    return TrialRecord(name=name, index=0, attempt=0, parameters={"x": 0.5}, seed=1, phase=phase)


def on_disk(rd: RunDirectory, name: str) -> dict:
    return json.loads(rd.record_path(name).read_text())


def writer_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "trialforge-records")


def test_flush_puts_the_state_each_record_had_when_saved_on_disk(tmp_path: Path) -> None:
    rd = RunDirectory(tmp_path)
    rd.trials_dir.mkdir()
    writer = rd.writer()
    first, second = record("xp-0"), record("xp-1")
    writer.save(first)
    writer.save(second)
    first.phase = "Succeeded"  # changed after the save: not written until saved again
    first.values = [0.25]
    writer.flush()
    assert on_disk(rd, "xp-0")["phase"] == "Running"
    assert on_disk(rd, "xp-1")["phase"] == "Running"
    writer.save(first)
    writer.close()
    saved = on_disk(rd, "xp-0")
    assert (saved["phase"], saved["values"]) == ("Succeeded", [0.25])
    assert TrialRecord.from_dict(saved) == first
    assert [r.name for r in rd.load_trials()] == ["xp-0", "xp-1"]


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
    rd.trials_dir.parent.mkdir(parents=True, exist_ok=True)
    rd.trials_dir.write_text("a file where the trials folder should be")
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
    while not rd.record_path("xp-1").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    # Written in the order saved, but the delayed one is not due yet.
    assert rd.record_path("xp-1").exists() and not rd.record_path("xp-0").exists()
    started.phase = "Succeeded"
    writer.save(started)  # a newer state: written at once, the delayed one never
    writer.flush()
    assert on_disk(rd, "xp-0")["phase"] == "Succeeded"
    writer.save(record("xp-2"), delay=600)
    writer.close()  # writes what is delayed, now
    assert on_disk(rd, "xp-2")["phase"] == "Running"
