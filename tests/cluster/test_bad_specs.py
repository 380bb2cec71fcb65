"""The corpus of broken Experiments (tests/data/bad-specs) against the real API server
and the real operator (issue 18): one rule set, refused by name everywhere.

Each file's `# cluster:` line says who refuses it on a cluster:
- `schema`: the CRD's OpenAPI schema or CEL rules; `kubectl create` fails naming the field;
- `schema-kind`: no such kind; `kubectl create` fails naming the kind;
- `operator`: a rule the CRD cannot express (Optuna settings, the free-form pod template,
  the grid's size, a discrete value's range); the server stores it, the operator sets
  SpecValid=False naming the field and starts no trial;
- `none`: the server never sees it as written (not JSON: .nan/.inf; a YAML-level fault such
  as a key given twice; not one object). Not sent.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from clusterlib import KubeCluster
from operatorlib import Cluster, OperatorProcess, condition

# Cluster tests run with tests/cluster on the path only; the corpus and how its
# headers read are the unit test's, written once.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.unit.test_api_validation_corpus import CASES, Case

pytestmark = pytest.mark.cluster

SENT = [c for c in CASES if c.cluster != "none"]


def document(case: Case, index: int) -> dict[str, Any]:
    doc = yaml.safe_load(case.file.read_text())
    assert isinstance(doc, dict), f"{case.file.name} is marked for the cluster but is no object"
    doc.setdefault("metadata", {})["name"] = f"bad-{index}"
    return doc


def test_the_cluster_sees_most_of_the_corpus() -> None:
    assert len([c for c in SENT if c.cluster == "schema"]) >= 20
    assert len([c for c in SENT if c.cluster == "operator"]) >= 10


def test_the_api_server_refuses_what_the_schema_can_say_by_field(
    cluster: KubeCluster, namespace: str
) -> None:
    refused = [c for c in SENT if c.cluster.startswith("schema")]
    wrong: list[str] = []
    for index, case in enumerate(refused):
        doc = document(case, index)
        done = cluster.kubectl("-n", namespace, "create", "-f", "-", check=False,
                               input=json.dumps(doc))  # fmt: skip
        # The server names the field as validate does (spec.parameters[0].min); a
        # wrong kind is refused by name before any schema.
        named = doc["kind"] if case.cluster == "schema-kind" else case.where
        if done.returncode == 0 or named not in done.stderr:
            wrong.append(f"{case.file.name}: rc {done.returncode}: {done.stderr.strip()}")
    assert not wrong, "\n".join(wrong)


def test_the_operator_refuses_what_only_it_can_check_by_field(
    cluster: KubeCluster, namespace: str, operator: OperatorProcess, kube: Cluster
) -> None:
    cases = [c for c in SENT if c.cluster == "operator"]
    names = {}
    for index, case in enumerate(cases):
        doc = document(case, index)
        kube.create(doc)  # the server accepts it: raises if it does not
        names[doc["metadata"]["name"]] = case

    def all_refused() -> bool:
        for name in names:
            c = condition((kube.experiment(name) or {}).get("status") or {}, "SpecValid")
            if not (c and c["status"] == "False"):
                return False
        return True

    kube.until(all_refused, 120, "SpecValid False on every experiment")
    wrong = []
    for name, case in names.items():
        c = condition(kube.experiment(name)["status"], "SpecValid")
        if c["reason"] != "InvalidSpec" or case.where not in c["message"]:
            wrong.append(f"{case.file.name}: {c}")
        if kube.trials(name):
            wrong.append(f"{case.file.name}: trials were created for an invalid spec")
    assert not wrong, "\n".join(wrong)
    events = kube.events("InvalidSpec")
    assert {e.involved_object.name for e in events} >= set(names), "an InvalidSpec Event each"
