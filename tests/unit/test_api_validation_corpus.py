"""api/validation.py against a corpus of broken Experiments (issue 18, "Bad specs").

Every file in tests/data/bad-specs/ is something a new user (or an attacker)
might write; its header says what must be refused and with which words:

    # expect: spec.budget.maxTrials: valid integer
    # cluster: schema | operator | none (why)

`trialforge validate` and `trialforge run` each get every file, as the user runs
them (a subprocess): a non-zero exit, the field path and the reason on stderr,
never a traceback, nothing written to the run directory. The `cluster:` line is
for tests/cluster/test_bad_specs.py (who refuses it there).
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from trialforge.api.validation import MAX_FILE_BYTES

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "data" / "bad-specs"
GOOD = ROOT / "examples" / "smoke.yaml"
# A bad spec must be refused before it can take memory: an expansion bomb or an
# absurd grid that got through would run into this and fail the test, not the machine.
MEMORY_LIMIT = 4 << 30


@dataclass(frozen=True)
class Case:
    file: Path
    where: str  # the field path the error names
    words: str  # what the message says
    cluster: str  # schema, operator or none: who refuses it on a cluster


def read_case(file: Path) -> Case:
    # latin-1 reads any bytes: one file is deliberately not UTF-8.
    header = [line for line in file.read_bytes().decode("latin-1").splitlines() if line[:1] == "#"]
    fields = dict(line[2:].split(": ", 1) for line in header if ": " in line)
    where, _, words = fields["expect"].partition(": ")
    return Case(file, where, words.strip(), fields["cluster"].split()[0])


CASES = [read_case(f) for f in sorted(CORPUS.glob("*.yaml"))]


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

    return subprocess.run(
        [sys.executable, "-m", "trialforge.cli", *args],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=120,
        check=False,
        cwd=cwd,
        preexec_fn=limit,
        env={**os.environ, "COLUMNS": "200"},
    )


def blocks(stderr: str) -> dict[str, list[str]]:
    """validate's stderr, per file: "FILE: invalid" and its indented error lines."""
    out: dict[str, list[str]] = {}
    current: list[str] = []
    for line in stderr.splitlines():
        if line.endswith(": invalid") and not line.startswith(" "):
            current = out.setdefault(line.removesuffix(": invalid"), [])
        elif line.startswith("  "):
            current.append(line.strip())
    return out


def names_it(lines: list[str], case: Case) -> bool:
    return any(
        line.startswith(f"{case.where}: ") and case.words.lower() in line.lower() for line in lines
    )


def test_the_corpus_holds_at_least_60_kinds_each_with_what_it_expects() -> None:
    assert len(CASES) >= 60
    assert all(c.where and c.words for c in CASES), [c.file.name for c in CASES if not c.words]
    assert {c.cluster for c in CASES} == {"schema", "schema-kind", "operator", "none"}


@pytest.fixture(scope="module")
def validated() -> subprocess.CompletedProcess[str]:
    """One `validate` of every file: it must go on after each bad one, also a non-UTF-8 file."""
    return cli("validate", *(str(c.file) for c in CASES))


def test_validate_refuses_every_file_of_the_corpus(
    validated: subprocess.CompletedProcess[str],
) -> None:
    assert validated.returncode == 1
    assert "Traceback" not in validated.stdout + validated.stderr
    assert validated.stdout == ""  # not one of them is "ok"
    found = blocks(validated.stderr)
    assert set(found) == {str(c.file) for c in CASES}


@pytest.mark.parametrize("case", CASES, ids=[c.file.stem for c in CASES])
def test_validate_names_the_field_and_the_reason(
    case: Case, validated: subprocess.CompletedProcess[str]
) -> None:
    lines = blocks(validated.stderr).get(str(case.file), [])
    assert names_it(lines, case), f"expected '{case.where}: ...{case.words}...' in {lines}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[Path, tuple[Path, object]]:
    """`trialforge run` of every file, several at a time (each is a process of its own)."""
    tmp = tmp_path_factory.mktemp("bad-runs")

    def one(case: Case) -> tuple[Path, subprocess.CompletedProcess[str]]:
        run_dir = tmp / case.file.stem
        return run_dir, cli("run", str(case.file), "--dir", str(run_dir), "--no-table")

    with ThreadPoolExecutor(max_workers=2 * (os.cpu_count() or 2)) as pool:
        return dict(zip((c.file for c in CASES), pool.map(one, CASES), strict=True))


@pytest.mark.parametrize("case", CASES, ids=[c.file.stem for c in CASES])
def test_run_refuses_it_by_name_and_writes_nothing(
    case: Case, runs: dict[Path, tuple[Path, subprocess.CompletedProcess[str]]]
) -> None:
    run_dir, done = runs[case.file]
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert names_it([line.strip() for line in done.stderr.splitlines()], case), done.stderr
    assert not run_dir.exists()


def test_validate_goes_on_after_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    latin = CORPUS / "not-utf8.yaml"
    done = cli("validate", str(GOOD), str(latin), str(GOOD))
    assert done.returncode == 1
    assert done.stdout.count(f"{GOOD}: ok") == 2
    assert f"{latin}: invalid" in done.stderr
    assert "byte 0xe9" in done.stderr and "Traceback" not in done.stderr


def test_a_file_over_the_size_limit_is_refused_with_its_size(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    text = GOOD.read_text()
    padding = "# " + "x" * 1000 + "\n"
    big.write_text(text + padding * (MAX_FILE_BYTES // len(padding) + 1))
    size = big.stat().st_size
    for args in (("validate", str(big)), ("run", str(big), "--dir", str(tmp_path / "run"))):
        done = cli(*args)
        assert done.returncode != 0
        assert f"(file): {size} bytes" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    assert not (tmp_path / "run").exists()


def test_a_large_file_under_the_limit_is_read(tmp_path: Path) -> None:
    """Near the limit but valid: accepted (the C loader reads it; bench/ says how fast)."""
    text = GOOD.read_text()
    padding = "# " + "x" * 1000 + "\n"
    near = tmp_path / "near.yaml"
    near.write_text(text + padding * ((MAX_FILE_BYTES - len(text)) // len(padding) - 1))
    assert near.stat().st_size <= MAX_FILE_BYTES
    done = cli("validate", str(near))
    assert done.returncode == 0, done.stderr
