"""The Dockerfiles in images/, checked by parsing them (this machine has no Docker engine).

What is checked is what a reviewer would: multi-stage builds whose final stage
holds no build tools, a base pinned to an exact release (or a digest), a numeric
non-root user, no secret in ENV/ARG or copied in, and an entrypoint that really
exists (the console script of pyproject.toml, the trainer script in the repo).
"""

from __future__ import annotations

import ast
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from dockerfile_parse import DockerfileParser

REPO = Path(__file__).resolve().parents[2]
IMAGES = REPO / "images"
DOCKERFILES = sorted(IMAGES.glob("*/Dockerfile"))
SECRET_NAME = re.compile(r"(?i)(secret|token|passw(or)?d|api_?key|private|credential|_key$|^key$)")
SECRET_VALUE = re.compile(
    r"(AKIA[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY|gh[pousr]_[A-Za-z0-9]{20,})"
)
SECRET_FILES = re.compile(
    r"(?i)(\.pem|\.key|id_rsa|id_ed25519|kubeconfig|\.env|credentials|\.netrc)\b"
)
BUILD_TOOLS = re.compile(
    r"\b(gcc|g\+\+|make|build-essential|clang|cmake|apt-get install|apk add)\b"
)


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[dict[str, Any]] = field(default_factory=list)

    def of(self, kind: str) -> list[str]:
        return [i["value"] for i in self.instructions if i["instruction"] == kind]


def stages(path: Path) -> tuple[DockerfileParser, list[Stage]]:
    parser = DockerfileParser(str(path))
    resolved = iter(parser.parent_images)  # FROM lines with ARG defaults substituted
    out: list[Stage] = []
    for ins in parser.structure:
        if ins["instruction"] == "FROM":
            parts = ins["value"].split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            out.append(Stage(next(resolved), name))
        elif ins["instruction"] != "COMMENT" and out:
            out[-1].instructions.append(ins)
    return parser, out


def console_scripts() -> dict[str, str]:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    return data["project"]["scripts"]


def exec_form(value: str) -> list[str]:
    try:
        parsed = json.loads(value)
    except ValueError:
        pytest.fail(f"not exec (JSON) form, signals would go to a shell: {value}")
    assert isinstance(parsed, list) and all(isinstance(p, str) for p in parsed), value
    return parsed


def test_there_are_the_two_images() -> None:
    assert {p.parent.name for p in DOCKERFILES} == {"operator", "trainer"}


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.parent.name)
def test_multi_stage_and_final_stage_has_no_build_tools(path: Path) -> None:
    check_multi_stage_and_final_stage_has_no_build_tools(path)


def check_multi_stage_and_final_stage_has_no_build_tools(path: Path) -> None:
    _, st = stages(path)
    assert len(st) >= 2, "build in one stage, run in another"
    final = st[-1]
    copies = final.of("COPY")
    assert any("--from=build" in c for c in copies), "the final stage takes the build's output"
    for run in final.of("RUN"):
        assert not BUILD_TOOLS.search(run), f"build tooling in the final stage: {run}"
        assert "pip install" not in run, f"installing in the final stage: {run}"
    stage_names = {s.name for s in st if s.name}
    assert final.base not in stage_names, "the final stage starts from the pinned base"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.parent.name)
def test_base_images_are_pinned(path: Path) -> None:
    check_base_images_are_pinned(path)


def check_base_images_are_pinned(path: Path) -> None:
    _, st = stages(path)
    names = {s.name for s in st if s.name}
    for s in st:
        if s.base in names:
            continue  # FROM an earlier stage
        image, _, digest = s.base.partition("@")
        if digest:
            assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), s.base
            continue
        assert ":" in image, f"{s.base}: no tag means latest"
        tag = image.rsplit(":", 1)[1]
        assert tag != "latest", s.base
        assert re.match(r"\d+\.\d+\.\d+", tag), f"{s.base}: pin an exact release (x.y.z), not {tag}"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.parent.name)
def test_runs_as_numeric_non_root_user(path: Path) -> None:
    check_runs_as_numeric_non_root_user(path)


def check_runs_as_numeric_non_root_user(path: Path) -> None:
    _, st = stages(path)
    users = st[-1].of("USER")
    assert users, "the final stage sets USER (else it runs as root)"
    m = re.fullmatch(r"(\d+)(?::(\d+))?", users[-1].strip())
    assert m, f"USER {users[-1]}: numeric, so runAsNonRoot can verify it"
    assert int(m.group(1)) != 0 and (m.group(2) is None or int(m.group(2)) != 0)


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.parent.name)
def test_no_secrets(path: Path) -> None:
    check_no_secrets(path)


def check_no_secrets(path: Path) -> None:
    parser, st = stages(path)
    for s in st:
        for ins in s.instructions:
            kind, value = ins["instruction"], ins["value"]
            if kind in ("ENV", "ARG"):
                names = re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)(?==|\s|$)", value)
                for name in names:
                    assert not SECRET_NAME.search(name), f"{kind} {name}: no secrets in images"
            if kind in ("COPY", "ADD"):
                assert not SECRET_FILES.search(value), f"{kind} {value}: a secret file?"
    assert not SECRET_VALUE.search(path.read_text()), "something that looks like a credential"
    for name in (*parser.envs, *parser.args):
        assert not SECRET_NAME.search(name), name


def test_operator_entrypoint_is_the_console_script() -> None:
    _, st = stages(IMAGES / "operator" / "Dockerfile")
    entry = exec_form(st[-1].of("ENTRYPOINT")[-1])
    assert entry == ["trialforge"]
    assert console_scripts()["trialforge"] == "trialforge.cli:main"
    # ...whose target exists, and whose default command is a real subcommand.
    from trialforge.cli import build_parser, main

    assert callable(main)
    cmd = exec_form(st[-1].of("CMD")[-1])
    args = build_parser().parse_args(cmd)
    assert args.command == "operator"


def test_operator_image_also_runs_the_collector() -> None:
    """The trial pods' collector sidecar runs the operator image with the command the
    Job gives it: the image's console script, and a subcommand that exists."""
    from tests.factories import experiment_doc
    from trialforge import cli
    from trialforge.api import load_experiment
    from trialforge.kube.jobs import COLLECTOR_NAME, add_collector

    pod_spec: dict[str, Any] = {
        "containers": [{"name": "t", "image": "i", "command": ["python", "t.py"], "env": []}]
    }
    xp = load_experiment(experiment_doc())
    add_collector(xp, pod_spec, "http://op:8080", "operator:1", False, {"name": "s", "key": "k"})
    [sidecar] = [c for c in pod_spec["initContainers"] if c["name"] == COLLECTOR_NAME]
    program, *args = sidecar["command"]
    _, st = stages(IMAGES / "operator" / "Dockerfile")
    assert exec_form(st[-1].of("ENTRYPOINT")[-1]) == [program]
    assert console_scripts()[program] == "trialforge.cli:main"
    parsed = cli.build_parser().parse_args(args)
    assert parsed.command == "collector"
    assert parsed.func is cli._cmd_collector


def test_the_operator_image_has_the_entrypoint_the_installer_runs() -> None:
    from tests.factories import experiment_doc
    from trialforge.api import load_experiment
    from trialforge.kube.jobs import ENTRYPOINT_INSTALLER_NAME, add_collector

    pod_spec: dict[str, Any] = {
        "containers": [{"name": "t", "image": "i", "command": ["python", "t.py"], "env": []}]
    }
    xp = load_experiment(experiment_doc())
    add_collector(xp, pod_spec, "http://op:8080", "operator:1", False, {"name": "s", "key": "k"})
    [installer] = [c for c in pod_spec["initContainers"] if c["name"] == ENTRYPOINT_INSTALLER_NAME]
    program = installer["command"][0]
    _, st = stages(IMAGES / "operator" / "Dockerfile")
    copied = [c.split() for c in st[-1].of("COPY") if c.startswith("--from=entrypoint ")]
    assert any(dest == f"/usr/local/bin/{program}" for *_, dest in copied), copied
    # The entrypoint's stage builds from the folder the Go tests cover.
    entry = next(s for s in st if s.name == "entrypoint")
    assert any(c.split()[0] == "entrypoint/" for c in entry.of("COPY"))


def test_images_copy_only_what_is_in_the_context_and_the_context_is_only_that() -> None:
    """.dockerignore keeps the context (and so e2e/tfimages.py's cache key) to what
    the Dockerfiles COPY: a change to the tests or docs does not rebuild the images."""
    import sys

    sys.path.insert(0, str(REPO / "e2e"))
    import tfimages

    context = tfimages.context_files(REPO)
    copied: set[str] = set()
    for path in DOCKERFILES:
        _, st = stages(path)
        for s in st:
            for value in s.of("COPY"):
                if value.startswith("--from="):
                    continue
                *sources, _dest = value.split()
                for src in sources:
                    src = src.rstrip("/")
                    copied.add(src)
                    assert any(f == src or f.startswith(src + "/") for f in context), (
                        f"{path}: COPY {src}: not in the build context"
                    )
    outside = [f for f in context if not any(f == c or f.startswith(c + "/") for c in copied)]
    assert outside == [], f"in the context but never copied: {outside[:10]}"
    assert not any(f.startswith((".venv/", ".git/", "tests/", "e2e/")) for f in context)


def test_trainer_image_runs_a_script_that_reports() -> None:
    _, st = stages(IMAGES / "trainer" / "Dockerfile")
    final = st[-1]
    assert exec_form(final.of("ENTRYPOINT")[-1]) == ["python"]
    cmd = exec_form(final.of("CMD")[-1])
    # COPY examples/trainers/ trainers/ in WORKDIR /app
    assert any(c.split()[:2] == ["examples/trainers/", "trainers/"] for c in final.of("COPY"))
    script = REPO / "examples" / cmd[0]
    assert script.is_file(), script
    tree = ast.parse(script.read_text())
    calls = {
        f"{n.func.value.id}.{n.func.attr}"
        for n in ast.walk(tree)
        if isinstance(n, ast.Call)
        and isinstance(n.func, ast.Attribute)
        and isinstance(n.func.value, ast.Name)
    }
    assert "trialforge.report" in calls
    assert any(
        isinstance(n, ast.Import) and any(a.name == "torch" for a in n.names)
        for n in ast.walk(tree)
    ), "a PyTorch trainer"


BAD = """\
ARG BASE=python:3.11
FROM ${BASE}
ENV API_KEY=0123456789abcdef
RUN apt-get install -y gcc && pip install torch
COPY id_rsa /root/.ssh/id_rsa
ENTRYPOINT trialforge operator
"""


@pytest.mark.parametrize(
    "check",
    [
        check_multi_stage_and_final_stage_has_no_build_tools,
        check_base_images_are_pinned,
        check_runs_as_numeric_non_root_user,
        check_no_secrets,
    ],
)
def test_the_checks_catch_a_bad_dockerfile(check: Any, tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text(BAD)
    with pytest.raises(AssertionError):
        check(bad)


def test_the_torch_trainer_trains_and_reports(tmp_path: Path) -> None:
    """Runs where PyTorch is installed (the trainer image has it; the dev venv does not)."""
    pytest.importorskip("torch", reason="PyTorch is not installed here (it is in the image)")
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TRIALFORGE_REPORT_URL"}
    env["TRIALFORGE_SEED"] = "3"
    proc = subprocess.run(
        [sys.executable, str(REPO / "examples/trainers/torch_digits.py"), "--epochs=3",
         "--device=cpu"],
        capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert [ln["step"] for ln in lines] == [1, 2, 3]
    for ln in lines:
        assert {"train_loss", "val_loss", "val_accuracy", "epoch_seconds"} <= set(ln)
        assert 0.0 <= ln["val_accuracy"] <= 1.0
    assert lines[-1]["val_accuracy"] > 0.5, "an MLP learns the digits in 3 epochs"
