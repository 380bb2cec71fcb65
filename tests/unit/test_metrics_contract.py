"""The sidecar contract (metrics/contract.py): the Job builder, the collector, the entrypoint
and the ingest each hold up their side of it, checked from their code, not from a list
copied here."""

from __future__ import annotations

import ast
import inspect
import json
import math
import re
from pathlib import Path
from typing import Any, get_args

import pytest

from tests.unit.test_kube_jobs import collector_of, env_of, trial, xp
from trialforge.api.experiment import MetricsSpec
from trialforge.engine.template import trial_environment
from trialforge.kube import ingest
from trialforge.kube.jobs import build_job
from trialforge.metrics import contract
from trialforge.metrics.collector import ON_REASON, SOURCES, Config
from trialforge.metrics.contract import Reason

URL = "http://op.trialforge-system.svc:8080/v1/observations"
IMAGE = "ghcr.io/trialforge/operator:0.1.0"
KUBE = Path(ingest.__file__).parent

# One experiment per source and shape of pod the Job builder knows.
TRIALS = {
    "stdout": {},
    "file regex": {
        "metrics": {
            "source": "file",
            "path": "out/m.log",
            "format": "regex",
            "pattern": r"loss=(?P<loss>\S+)",
        },
    },
    "push": {"metrics": {"source": "push"}},
    "tensorboard": {"metrics": {"source": "tensorboard", "path": "/logs/tb"}},
    "two workers": {"workers": 2},
}


def pod_spec(trial_spec: dict[str, Any]) -> dict[str, Any]:
    job, _ = build_job(xp(trial=trial_spec), trial(), URL, IMAGE)
    return job["spec"]["template"]["spec"]


def resolved(env: list[dict[str, Any]]) -> dict[str, str]:
    """A container's environment as the kubelet would give it (references resolved)."""
    stand_ins = {"secretKeyRef": "a-token", "fieldRef": "0"}
    out = {}
    for e in env:
        if "value" in e:
            out[e["name"]] = e["value"]
        else:
            (kind,) = e["valueFrom"]
            out[e["name"]] = stand_ins[kind]
    return out


class Recording(dict[str, str]):
    """An environment that remembers which names were read from it."""

    def __init__(self, values: dict[str, str]) -> None:
        super().__init__(values)
        self.read: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)


@pytest.mark.parametrize("trial_spec", TRIALS.values(), ids=TRIALS.keys())
def test_every_variable_the_job_gives_the_sidecar_is_one_the_collector_reads(
    trial_spec: dict[str, Any],
) -> None:
    sidecar = collector_of(pod_spec(trial_spec))
    env = Recording(resolved(sidecar["env"]))
    cfg = Config.from_env(env)  # raises if a variable it needs is missing
    assert set(env) - env.read == set()
    metrics = xp(trial=trial_spec).spec.trial.metrics
    assert (cfg.source, cfg.format, cfg.pattern) == (
        metrics.source,
        metrics.format,
        metrics.pattern,
    )
    assert (cfg.ingest_url, cfg.token, cfg.trial) == (URL, "a-token", "mnist-3")
    # The collector's shared directory is the volume the Job mounts there.
    assert {m["mountPath"] for m in sidecar["volumeMounts"]} >= {str(cfg.shared_dir)}


# The entrypoint (entrypoint/main.go) spells the contract's names in Go.
ENTRYPOINT_GO = (Path(__file__).parents[2] / "entrypoint" / "main.go").read_text()


def go_constant(name: str) -> str:
    match = re.search(rf'^\s*{name}\s*=\s*"([^"]*)"', ENTRYPOINT_GO, re.M)
    assert match, f"entrypoint/main.go has no constant {name}"
    return match.group(1)


def test_the_entrypoint_spells_the_contract_as_the_contract_does() -> None:
    assert go_constant("name") == contract.ENTRYPOINT_NAME
    assert go_constant("envSharedDir") == contract.ENV_SHARED_DIR
    assert go_constant("defaultShared") == contract.SHARED_DIR
    assert go_constant("stdoutFile") == contract.STDOUT_FILE
    assert go_constant("exitFile") == contract.EXIT_FILE


@pytest.mark.parametrize("trial_spec", TRIALS.values(), ids=TRIALS.keys())
def test_the_entrypoint_and_the_collector_share_the_directory_the_entrypoint_is_installed_in(
    trial_spec: dict[str, Any],
) -> None:
    spec = pod_spec(trial_spec)
    trainer, sidecar = spec["containers"][0], collector_of(spec)
    trainer_env, sidecar_env = resolved(trainer["env"]), resolved(sidecar["env"])
    assert trainer_env[contract.ENV_SHARED_DIR] == sidecar_env[contract.ENV_SHARED_DIR]
    if xp(trial=trial_spec).spec.trial.metrics.source != "stdout":
        assert trainer["command"][0] != contract.ENTRYPOINT
        return
    assert trainer["command"][:2] == [contract.ENTRYPOINT, "--"]
    installer = spec["initContainers"][0]
    shared = trainer_env[contract.ENV_SHARED_DIR]
    assert contract.ENTRYPOINT.startswith(shared + "/")
    assert installer["command"][-1] == contract.ENTRYPOINT.rsplit("/", 1)[0]
    for container in (installer, trainer, sidecar):
        assert shared in {m["mountPath"] for m in container["volumeMounts"]}


def test_a_push_trainer_reports_to_the_port_its_collector_listens_on() -> None:
    spec = pod_spec({"metrics": {"source": "push"}})
    sidecar = collector_of(spec)
    cfg = Config.from_env(resolved(sidecar["env"]))
    url = env_of(spec["containers"][0])[contract.ENV_REPORT_URL]["value"]
    assert url == contract.report_url(cfg.push_port)
    assert sidecar["startupProbe"]["httpGet"]["port"] == cfg.push_port


def test_the_trial_environment_the_engine_sets_uses_the_contract_names() -> None:
    env = trial_environment("xp", "xp-0", {"lr": 0.1}, seed=3, attempt=0)
    names = {
        contract.ENV_EXPERIMENT,
        contract.ENV_TRIAL,
        contract.ENV_PARAMS,
        contract.ENV_SEED,
        contract.ENV_ATTEMPT,
    }
    assert set(env) == names


def test_the_collector_has_a_source_for_each_the_api_allows() -> None:
    allowed = get_args(MetricsSpec.model_fields["source"].annotation)
    assert set(allowed) == set(contract.METRICS_SOURCES) == set(SOURCES)
    assert not [name for name, cls in SOURCES.items() if inspect.isabstract(cls)]


def _reasons_named_in(path: Path) -> set[Reason]:
    tree = ast.parse(path.read_text())
    return {
        Reason[node.attr]
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "Reason"
    }


def test_each_reason_the_ingest_can_answer_is_handled_by_the_collector() -> None:
    answered = _reasons_named_in(KUBE / "ingest.py") | _reasons_named_in(KUBE / "operator.py")
    assert Reason.ACCEPTED in answered and Reason.TRIAL_ENDED in answered
    assert answered <= set(ON_REASON)
    assert set(Reason) <= set(ON_REASON) and None in ON_REASON  # and no answer at all
    # Every refusal has its HTTP status and its label on the rejected-observations metric.
    assert set(contract.HTTP_STATUS) == set(Reason)
    assert set(ingest.REJECTED_LABEL) == set(Reason) - {Reason.ACCEPTED}


def test_answers_are_read_by_their_reason_and_malformed_fields_are_none() -> None:
    body = contract.answer_body(Reason.SEQUENCE_GAP, "expected 3", stored=1, received=2)
    answer = contract.read_answer(409, json.loads(json.dumps(body)))
    assert (answer.reason, answer.stored, answer.received) == (Reason.SEQUENCE_GAP, 1, 2)
    assert answer.error == "expected 3"
    newer = contract.read_answer(200, {"reason": "SomethingNew", "stored": True, "received": 2})
    assert newer.reason is None and newer.stored is None and newer.received == 2
    only_stored = contract.read_answer(200, {"reason": "Accepted", "stored": 4})
    assert only_stored.received == 4


def test_the_ingest_reads_back_a_batch_as_the_collector_encodes_it() -> None:
    head = contract.batch_head("ns", "t-0", "tok")
    encoded = [
        contract.observation_json(1, 0, 10.0, {"loss": 0.5}),
        contract.observation_json(2, 1, 11.0, {"loss": math.nan, "g": math.inf}),
    ]
    batch = json.loads(contract.batch_bytes(head, encoded, wait=2.0))
    assert {k: batch[k] for k in ("namespace", "trial", "token", "wait")} == {
        "namespace": "ns",
        "trial": "t-0",
        "token": "tok",
        "wait": 2.0,
    }
    received = [ingest._received(o) for o in batch["observations"]]
    assert received[0] == (1, 0, 10.0, "loss", 0.5)
    seq, step, at, *metrics = received[1]
    assert (seq, step, at, metrics[0], metrics[2]) == (2, 1, 11.0, "loss", "g")
    assert math.isnan(metrics[1]) and metrics[3] == math.inf
    assert "wait" not in json.loads(contract.batch_bytes(head, []))


def test_the_token_is_the_trials_own_and_reconcile_still_exports_it() -> None:
    from trialforge.kube.reconcile import ingest_token

    assert ingest_token is contract.ingest_token
    key = b"k"
    tokens = {ingest_token(key, ns, t) for ns, t in [("a", "x"), ("a", "y"), ("b", "x")]}
    assert len(tokens) == 3 and ingest_token(key, "a", "x") in tokens
