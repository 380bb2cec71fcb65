"""The Helm chart against the real local control plane (helm built from Go modules).

- `helm lint` and `helm template` with default and non-default values; the
  rendered objects pass the API server's own validation (`--dry-run=server`),
  ServiceMonitor/PrometheusRule included (see MONITORING_CRDS for why minimal
  CRDs stand in for prometheus-operator's);
- bad values are refused by values.schema.json, naming the key;
- `helm install` / `upgrade` / `uninstall` really happen, into a namespace that
  enforces the *restricted* Pod Security Standard, so the operator's pods are
  admitted only if their securityContext is restricted; the ingest key survives
  an upgrade;
- RBAC is proven, not assumed: the real operator runs as a local process
  authenticated with a token of the chart's ServiceAccount (`kubectl create
  token`), drives a whole experiment to success with only the chart's Roles,
  and is refused (403) what it does not need;
- repeated `kubectl apply` of the same Experiment is a no-op: no new generation,
  no restarted trial, no trial beyond the plan (what Argo CD's sync does).
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from clusterlib import REPO, KubeCluster, wait_for
from kubernetes.client.rest import ApiException
from operatorlib import (
    LABEL_EXPERIMENT,
    Cluster,
    OperatorProcess,
    Reporter,
    batch,
    experiment,
    post,
)

pytestmark = pytest.mark.cluster

CHART = REPO / "charts" / "trialforge"
LEASE = "trialforge-operator"

# prometheus-operator's CRDs are not in this offline build (they are not built
# from Go modules like the control plane). These stand-ins carry the part of
# upstream's monitoring.coreos.com/v1 schema that the chart uses, with upstream's
# types, so `--dry-run=server` checks the chart's ServiceMonitor and
# PrometheusRule for real: kind, group, version, required fields and types.
_STR = {"type": "string"}
_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_SELECTOR = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
MONITORING_CRDS = [
    {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.monitoring.coreos.com"},
        "spec": {
            "group": "monitoring.coreos.com",
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "plural": plural,
                "singular": plural[:-1],
                "listKind": f"{kind}List",
            },
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {"spec": spec},
                            "required": ["spec"],
                        }
                    },
                }
            ],
        },
    }
    for kind, plural, spec in [
        (
            "ServiceMonitor",
            "servicemonitors",
            {
                "type": "object",
                "required": ["selector"],
                "properties": {
                    "selector": _SELECTOR,
                    "namespaceSelector": {
                        "type": "object",
                        "properties": {
                            "any": {"type": "boolean"},
                            "matchNames": {"type": "array", "items": _STR},
                        },
                    },
                    "endpoints": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "port": _STR,
                                "path": _STR,
                                "scheme": _STR,
                                "interval": {
                                    "type": "string",
                                    "pattern": "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?"
                                    "(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?"
                                    "(([0-9]+)ms)?)$",
                                },
                                "scrapeTimeout": _STR,
                                "honorLabels": {"type": "boolean"},
                            },
                        },
                    },
                },
            },
        ),
        (
            "PrometheusRule",
            "prometheusrules",
            {
                "type": "object",
                "properties": {
                    "groups": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["name"],
                            "properties": {
                                "name": {"type": "string", "minLength": 1},
                                "interval": _STR,
                                "rules": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "required": ["expr"],
                                        "properties": {
                                            "alert": _STR,
                                            "record": _STR,
                                            "expr": {"x-kubernetes-int-or-string": True},
                                            "for": {
                                                "type": "string",
                                                "pattern": "^(0|(([0-9]+)y)?(([0-9]+)w)?"
                                                "(([0-9]+)d)?(([0-9]+)h)?"
                                                "(([0-9]+)m)?(([0-9]+)s)?"
                                                "(([0-9]+)ms)?)$",
                                            },
                                            "keep_firing_for": {
                                                "type": "string",
                                                "minLength": 1,
                                                "pattern": "^(0|(([0-9]+)y)?(([0-9]+)w)?"
                                                "(([0-9]+)d)?(([0-9]+)h)?"
                                                "(([0-9]+)m)?(([0-9]+)s)?"
                                                "(([0-9]+)ms)?)$",
                                            },
                                            "labels": _MAP,
                                            "annotations": _MAP,
                                        },
                                    },
                                },
                            },
                        },
                    }
                },
            },
        ),
    ]
]


# -- helpers --------------------------------------------------------------------------------


def helm_bin(cluster: KubeCluster) -> str:
    import tfcluster

    path = (cluster.bin_dir or tfcluster.bin_dir()) / "helm"
    assert path.exists(), f"helm is not built: {path} (run e2e/build)"
    return str(path)


def helm(
    cluster: KubeCluster, *args: str, check: bool = True, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    cmd = [helm_bin(cluster), "--kubeconfig", str(cluster.kubeconfig), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"helm {' '.join(args)} failed ({proc.returncode}):\n"
            f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc


def sets(values: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for key, value in values.items():
        out += ["--set-json", f"{key}={json.dumps(value)}"]
    return out


def render(
    cluster: KubeCluster, namespace: str = "tf-system", release: str = "tf", **values: Any
) -> list[dict[str, Any]]:
    out = helm(
        cluster, "template", release, str(CHART), "--namespace", namespace, *sets(values)
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(docs, kind)
    assert len(found) == 1, f"{len(found)} {kind}s"
    return found[0]


def rules_of(role: dict[str, Any]) -> set[tuple[str, str, str, str]]:
    """(group, resource, verb, resourceName or '') for every permission a role grants."""
    out = set()
    for r in role["rules"]:
        for g in r.get("apiGroups", []):
            for res in r["resources"]:
                for v in r["verbs"]:
                    for n in r.get("resourceNames") or [""]:
                        out.add((g, res, v, n))
    return out


# What the operator's code calls (operator/trialforge/kube): the test below runs
# the operator with exactly these and nothing else.
WORKLOAD_PERMISSIONS = {
    ("trialforge.io", "experiments", "get", ""),
    ("trialforge.io", "experiments", "list", ""),
    ("trialforge.io", "experiments", "watch", ""),
    ("trialforge.io", "experiments/status", "patch", ""),
    ("trialforge.io", "trials", "get", ""),
    ("trialforge.io", "trials", "list", ""),
    ("trialforge.io", "trials", "watch", ""),
    ("trialforge.io", "trials", "create", ""),
    ("trialforge.io", "trials/status", "patch", ""),
    ("trialforge.io", "experiments/finalizers", "update", ""),
    ("trialforge.io", "trials/finalizers", "update", ""),
    ("batch", "jobs", "list", ""),
    ("batch", "jobs", "watch", ""),
    ("batch", "jobs", "create", ""),
    ("batch", "jobs", "delete", ""),
    ("batch", "jobs", "patch", ""),  # suspendPolicy Pause
    ("kueue.x-k8s.io", "workloads", "list", ""),  # spec.queue: why a Job waits
    ("kueue.x-k8s.io", "workloads", "patch", ""),  # Pause with a queue: spec.active
    ("", "pods", "list", ""),
    ("", "pods", "watch", ""),
    ("", "services", "create", ""),
    ("", "secrets", "create", ""),
    ("", "events", "create", ""),
}
LEASE_PERMISSIONS = {
    ("coordination.k8s.io", "leases", "create", ""),
    ("coordination.k8s.io", "leases", "get", LEASE),
    ("coordination.k8s.io", "leases", "update", LEASE),
}


def new_namespace(cluster: KubeCluster, prefix: str, labels: dict[str, str] | None = None) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", name)
    if labels:
        cluster.kubectl("label", "namespace", name, *[f"{k}={v}" for k, v in labels.items()])
    wait_for(
        lambda: (
            cluster.kubectl("-n", name, "get", "serviceaccount", "default", check=False).returncode
            == 0
        ),
        timeout=30,
        what=f"default ServiceAccount in {name}",
    )
    return name


RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}


@pytest.fixture
def scratch(cluster: KubeCluster) -> Iterator[list[str]]:
    """Extra namespaces a test makes (appended by the test); deleted after."""
    made: list[str] = []
    yield made
    for ns in made:
        cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


@pytest.fixture
def release(cluster: KubeCluster, namespace: str) -> Iterator[str]:
    """A unique release name; uninstalled after the test if still there."""
    name = f"tf{uuid.uuid4().hex[:6]}"
    yield name
    helm(
        cluster,
        "uninstall",
        name,
        "--namespace",
        namespace,
        "--wait",
        "--timeout",
        "60s",
        check=False,
    )


# -- lint and template ----------------------------------------------------------------------


def test_helm_lint_default_and_non_default_values(cluster: KubeCluster) -> None:
    helm(cluster, "lint", "--strict", str(CHART))
    helm(
        cluster,
        "lint",
        "--strict",
        str(CHART),
        *sets(
            {
                "watch": {"allNamespaces": False, "namespaces": ["ml-a", "ml-b"]},
                "metrics.serviceMonitor.enabled": True,
                "metrics.prometheusRule.enabled": True,
                "ingest.existingSecret": "my-key",
                "image.digest": "sha256:" + "a" * 64,
                "replicaCount": 3,
                "networkPolicy.enabled": False,
                "grafana.dashboard.namespace": "monitoring",
            }
        ),
    )


def test_template_default_values(cluster: KubeCluster) -> None:
    docs = render(cluster)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(
        [
            "ServiceAccount",
            "Secret",
            "ConfigMap",
            "ClusterRole",
            "ClusterRole",
            "ClusterRole",  # nodes (get): the GPU model for lineage
            "ClusterRoleBinding",
            "ClusterRoleBinding",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "Service",
            "Deployment",
            "PodDisruptionBudget",
            "NetworkPolicy",
            "Pod",  # the `helm test` hook (templates/tests/)
        ]
    ), kinds

    deploy = one(docs, "Deployment")
    assert deploy["spec"]["replicas"] == 2
    pod = deploy["spec"]["template"]["spec"]
    container = pod["containers"][0]
    args = container["args"]
    assert args[0] == "operator" and "--all-namespaces" in args
    assert not any(a.startswith("--namespace") for a in args)
    assert "--lease-namespace=$(POD_NAMESPACE)" in args and "--identity=$(POD_NAME)" in args
    assert "--ingest-url=http://tf-trialforge.tf-system.svc:8080/v1/observations" in args
    assert "--ingest-key-file=/etc/trialforge/ingest/key" in args
    assert "--collector-image=ghcr.io/trialforge/operator:0.1.0" in args
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    secret_vol = next(v for v in pod["volumes"] if v["name"] == "ingest-key")
    secret = one(docs, "Secret")
    assert secret_vol["secret"]["secretName"] == secret["metadata"]["name"]
    assert len(base64.b64decode(secret["data"]["key"])) == 48

    # Cluster-wide mode: the workload rules in one ClusterRole, exactly.
    roles = {r["metadata"]["name"]: r for r in by_kind(docs, "ClusterRole")}
    assert rules_of(roles["tf-trialforge"]) == WORKLOAD_PERMISSIONS
    assert rules_of(roles["tf-trialforge-discovery"]) == {
        ("apiextensions.k8s.io", "customresourcedefinitions", v, "") for v in ("list", "watch")
    }
    assert rules_of(roles["tf-trialforge-nodes"]) == {("", "nodes", "get", "")}
    lease_role = one(docs, "Role")
    assert lease_role["metadata"]["namespace"] == "tf-system"
    assert rules_of(lease_role) == LEASE_PERMISSIONS

    svc = one(docs, "Service")
    assert svc["spec"]["ports"] == [
        {"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}
    ]
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    cm = one(docs, "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["trialforge.json"])["uid"] == "trialforge-overview"
    netpol = one(docs, "NetworkPolicy")
    peers = netpol["spec"]["ingress"][0]["from"]
    assert peers[0]["podSelector"] == {
        "matchExpressions": [{"key": "trialforge.io/trial", "operator": "Exists"}]
    }
    assert peers[0]["namespaceSelector"] == {}
    assert peers[1]["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}
    assert netpol["spec"]["ingress"][0]["ports"] == [{"port": "http", "protocol": "TCP"}]


def test_template_namespaced_mode_and_options(cluster: KubeCluster) -> None:
    docs = render(
        cluster,
        **{
            "watch": {"allNamespaces": False, "namespaces": ["ml-a", "ml-b"]},
            "ingest.existingSecret": "my-key",
            "ingest.secretKey": "hmac",
            "metrics.serviceMonitor.enabled": True,
            "metrics.prometheusRule.enabled": True,
            "image.digest": "sha256:" + "b" * 64,
            "replicaCount": 1,
            "rbac.discovery": False,
            "rbac.nodes": False,
        },
    )
    assert not by_kind(docs, "ClusterRole") and not by_kind(docs, "ClusterRoleBinding")
    assert not by_kind(docs, "Secret"), "an existing Secret is used, none is made"
    assert not by_kind(docs, "PodDisruptionBudget"), "no PDB for a single replica"
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]): r for r in by_kind(docs, "Role")}
    assert set(roles) == {
        ("ml-a", "tf-trialforge"),
        ("ml-b", "tf-trialforge"),
        ("tf-system", "tf-trialforge-leader-election"),
    }
    assert rules_of(roles["ml-a", "tf-trialforge"]) == WORKLOAD_PERMISSIONS
    for rb in by_kind(docs, "RoleBinding"):
        assert rb["subjects"] == [
            {"kind": "ServiceAccount", "name": "tf-trialforge", "namespace": "tf-system"}
        ]
    deploy = one(docs, "Deployment")
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "ghcr.io/trialforge/operator@sha256:" + "b" * 64
    args = container["args"]
    assert "--all-namespaces" not in args
    assert [a for a in args if a.startswith("--namespace")] == [
        "--namespace=ml-a",
        "--namespace=ml-b",
    ]
    assert "--ingest-key-file=/etc/trialforge/ingest/hmac" in args
    vol = next(
        v for v in deploy["spec"]["template"]["spec"]["volumes"] if v["name"] == "ingest-key"
    )
    assert vol["secret"]["secretName"] == "my-key"
    netpol = one(docs, "NetworkPolicy")
    assert netpol["spec"]["ingress"][0]["from"][0]["namespaceSelector"] == {
        "matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["ml-a", "ml-b"]}
        ]
    }
    sm = one(docs, "ServiceMonitor")
    assert sm["spec"]["endpoints"][0]["honorLabels"] is True
    rule = one(docs, "PrometheusRule")
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert {
        "TrialforgeOperatorDown",
        "TrialforgeExperimentFailed",
        "TrialforgeTrialsStuckPending",
        "TrialforgeIngestRejections",
    } <= alerts


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"watch": {"allNamespaces": False, "namespaces": ["ml-a", "ml-b"]}},
        {"ingest.enabled": False, "operator.logFormat": "text", "operator.resync": 7.5},
        {"collector.image": "registry.example/collector:1", "operator.extraArgs": ["--workers=9"]},
    ],
    ids=["default", "namespaced", "no-ingest", "collector-image"],
)
def test_deployment_args_are_what_trialforge_operator_accepts(
    cluster: KubeCluster, values: dict[str, Any]
) -> None:
    """The Deployment's command line parses with the real CLI (a renamed flag fails here)."""
    from trialforge.cli import build_parser

    deploy = one(render(cluster, **values), "Deployment")
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    try:
        parsed = build_parser().parse_args(args)
    except SystemExit:
        pytest.fail(f"`trialforge {' '.join(args)}` does not parse")
    assert parsed.command == "operator"
    assert parsed.lease_namespace == "$(POD_NAMESPACE)" and parsed.identity == "$(POD_NAME)"
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"]}
    assert env == {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"}
    assert parsed.port == container["ports"][0]["containerPort"] == 8080
    watch = values.get("watch")
    if watch:
        assert parsed.namespace == watch["namespaces"] and not parsed.all_namespaces
    else:
        assert parsed.all_namespaces and parsed.namespace is None
    if values.get("ingest.enabled") is False:
        assert parsed.ingest_key_file is None and parsed.ingest_url is None
        assert parsed.log_format == "text" and parsed.resync == 7.5
    else:
        assert parsed.ingest_key_file == "/etc/trialforge/ingest/key"
        assert parsed.ingest_url.endswith("/v1/observations")
        expected = values.get("collector.image", container["image"])
        assert parsed.collector_image == expected
    if "operator.extraArgs" in values:
        assert parsed.workers == 9


def test_template_ingest_disabled(cluster: KubeCluster) -> None:
    docs = render(cluster, **{"ingest.enabled": False})
    assert not by_kind(docs, "Secret")
    args = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not any(a.startswith(("--ingest", "--collector")) for a in args)


def test_rendered_objects_pass_server_side_validation(
    cluster: KubeCluster, namespace: str, scratch: list[str]
) -> None:
    """Every object of two renderings, monitoring on, through `kubectl apply --dry-run=server`."""
    for crd in MONITORING_CRDS:
        cluster.apply(crd)
    cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/servicemonitors.monitoring.coreos.com",
        "crd/prometheusrules.monitoring.coreos.com",
    )
    other = new_namespace(cluster, "chart-watched")
    scratch.append(other)
    monitoring = {"metrics.serviceMonitor.enabled": True, "metrics.prometheusRule.enabled": True}
    for values in (
        monitoring,
        {
            **monitoring,
            "watch": {"allNamespaces": False, "namespaces": [namespace, other]},
            "grafana.dashboard.namespace": other,
        },
    ):
        docs = render(cluster, namespace=namespace, release=f"v{uuid.uuid4().hex[:5]}", **values)
        doc = {"apiVersion": "v1", "kind": "List", "items": docs}
        proc = cluster.kubectl(
            "apply", "--dry-run=server", "-o", "json", "-f", "-", input=json.dumps(doc), check=False
        )
        assert proc.returncode == 0, f"the API server refused the chart's objects:\n{proc.stderr}"
        applied = json.loads(proc.stdout)["items"]
        assert sorted(o["kind"] for o in applied) == sorted(d["kind"] for d in docs)
        # The PrometheusRule's alert expressions survive the API server intact.
        rule = next(o for o in applied if o["kind"] == "PrometheusRule")
        assert len([r for g in rule["spec"]["groups"] for r in g["rules"]]) >= 4
        kept = [
            r["alert"] for g in rule["spec"]["groups"] for r in g["rules"] if "keep_firing_for" in r
        ]
        assert kept == ["TrialforgeExperimentFailed", "TrialforgeTrialsStuckPending"], kept

    # ...and a wrong object would have been refused: the check has teeth.
    bad = json.loads(json.dumps(next(d for d in docs if d["kind"] == "ServiceMonitor")))
    bad["spec"]["endpoints"][0]["interval"] = "every minute"
    proc = cluster.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=json.dumps(bad), check=False
    )
    assert proc.returncode != 0 and "interval" in proc.stderr


# -- bad values -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"replicaCount": "two"}, r"at '/replicaCount': got string, want integer"),
        ({"replicaCount": 0}, r"at '/replicaCount': minimum"),
        (
            {"watch": {"allNamespaces": True, "namespace": ["x"]}},
            r"at '/watch': additional properties 'namespace' not allowed",
        ),
        (
            {"watch": {"allNamespaces": False, "namespaces": ["Not_A_Namespace"]}},
            r"at '/watch/namespaces/0': 'Not_A_Namespace' does not match",
        ),
        ({"service": {"port": 80}}, r"at '/service/port': minimum"),
        ({"image": {"repository": "r", "digest": "sha256:abc"}}, r"at '/image/digest'"),
        ({"operator": {"logFormat": "xml"}}, r"at '/operator/logFormat': value must be one of"),
        (
            {"metrics": {"prometheusRule": {"pendingFor": "a while"}}},
            r"at '/metrics/prometheusRule/pendingFor'",
        ),
        ({"replicas": 3}, r"additional properties 'replicas' not allowed"),  # a typo
    ],
)
def test_bad_values_are_refused_by_the_schema(
    cluster: KubeCluster, values: dict[str, Any], expected: str
) -> None:
    proc = helm(cluster, "template", "tf", str(CHART), *sets(values), check=False)
    assert proc.returncode != 0, f"accepted: {values}"
    assert "values don't meet the specifications of the schema" in proc.stderr, proc.stderr
    assert re.search(expected, proc.stderr, re.S), proc.stderr


def test_bad_values_are_refused_at_install(
    cluster: KubeCluster, namespace: str, release: str
) -> None:
    proc = helm(
        cluster,
        "install",
        release,
        str(CHART),
        "--namespace",
        namespace,
        *sets({"service": {"port": "http"}}),
        check=False,
    )
    assert proc.returncode != 0
    assert "service" in proc.stderr and "port" in proc.stderr, proc.stderr
    assert "Deployment" not in cluster.kubectl("-n", namespace, "get", "all").stdout
    assert helm(cluster, "status", release, "-n", namespace, check=False).returncode != 0


# -- install, upgrade, uninstall ------------------------------------------------------------


def test_install_upgrade_uninstall(
    cluster: KubeCluster, namespace: str, release: str, scratch: list[str]
) -> None:
    # The release namespace enforces the restricted Pod Security Standard: the
    # operator's pods are only admitted if the chart's securityContext is restricted.
    cluster.kubectl("label", "namespace", namespace, *[f"{k}={v}" for k, v in RESTRICTED.items()])
    watched = new_namespace(cluster, "chart-xp")
    scratch.append(watched)
    full = f"{release}-trialforge"
    values = {"watch": {"allNamespaces": False, "namespaces": [watched]}}
    helm(
        cluster,
        "install",
        release,
        str(CHART),
        "--namespace",
        namespace,
        "--wait",
        "--timeout",
        "120s",
        *sets(values),
    )

    k = cluster.kubectl
    deploy = json.loads(k("-n", namespace, "get", "deployment", full, "-o", "json").stdout)
    assert deploy["status"].get("availableReplicas") == 2, deploy["status"]
    pods = json.loads(
        k(
            "-n",
            namespace,
            "get",
            "pods",
            "-l",
            f"app.kubernetes.io/instance={release}",
            "-o",
            "json",
        ).stdout
    )["items"]
    assert len(pods) == 2 and all(p["status"]["phase"] == "Running" for p in pods)
    assert len({p["spec"]["nodeName"] for p in pods}) == 2, "anti-affinity spreads the replicas"
    for kind in (
        "serviceaccount",
        "service",
        "secret",
        "configmap",
        "networkpolicy",
        "poddisruptionbudget",
    ):
        names = k("-n", namespace, "get", kind, "-o", "name").stdout
        assert full in names, f"no {kind} {full} in {names}"
    assert k("-n", namespace, "get", "role", f"{full}-leader-election").returncode == 0
    assert k("-n", watched, "get", "role,rolebinding", full).returncode == 0
    assert k("get", "clusterrole", full, check=False).returncode != 0, "namespaced mode"
    assert k("get", "clusterrole", f"{full}-discovery").returncode == 0
    endpoints = json.loads(
        k(
            "-n",
            namespace,
            "get",
            "endpointslices",
            "-l",
            f"kubernetes.io/service-name={full}",
            "-o",
            "json",
        ).stdout
    )
    ready = [
        e
        for s in endpoints["items"]
        for e in s.get("endpoints") or []
        if (e.get("conditions") or {}).get("ready")
    ]
    assert len(ready) == 2, "both replicas serve ingest and /metrics"
    key_before = k(
        "-n", namespace, "get", "secret", f"{full}-ingest-key", "-o", "jsonpath={.data.key}"
    ).stdout
    assert len(base64.b64decode(key_before)) == 48
    notes = helm(cluster, "get", "notes", release, "-n", namespace).stdout
    assert f"rollout status deployment/{full}" in notes and watched in notes

    # upgrade: more replicas and another log level; the ingest key stays (running
    # trials' tokens are derived from it).
    helm(
        cluster,
        "upgrade",
        release,
        str(CHART),
        "--namespace",
        namespace,
        "--wait",
        "--timeout",
        "120s",
        "--reuse-values",
        *sets({"replicaCount": 3, "operator.logLevel": "debug"}),
    )
    deploy = json.loads(k("-n", namespace, "get", "deployment", full, "-o", "json").stdout)
    assert deploy["spec"]["replicas"] == 3 and deploy["status"].get("availableReplicas") == 3
    assert "--log-level=debug" in deploy["spec"]["template"]["spec"]["containers"][0]["args"]
    key_after = k(
        "-n", namespace, "get", "secret", f"{full}-ingest-key", "-o", "jsonpath={.data.key}"
    ).stdout
    assert key_after == key_before, "the ingest key changed on upgrade"
    history = json.loads(helm(cluster, "history", release, "-n", namespace, "-o", "json").stdout)
    assert [h["status"] for h in history] == ["superseded", "deployed"]

    # uninstall: everything goes but the CRDs (and the Experiments in them).
    helm(cluster, "uninstall", release, "--namespace", namespace, "--wait", "--timeout", "60s")
    for kind in (
        "deployment",
        "serviceaccount",
        "service",
        "secret",
        "configmap",
        "networkpolicy",
        "poddisruptionbudget",
        "role",
        "rolebinding",
    ):
        names = k("-n", namespace, "get", kind, "-o", "name").stdout
        assert full not in names, f"{kind} {full} is left after uninstall"
    assert full not in k("-n", watched, "get", "role,rolebinding", "-o", "name").stdout
    assert k("get", "clusterrole", f"{full}-discovery", check=False).returncode != 0
    assert k("get", "crd", "experiments.trialforge.io").returncode == 0


def test_restricted_namespace_refuses_a_weakened_security_context(
    cluster: KubeCluster, namespace: str
) -> None:
    """The Pod Security check above has teeth: root would not be admitted."""
    cluster.kubectl("label", "namespace", namespace, *[f"{k}={v}" for k, v in RESTRICTED.items()])
    docs = render(
        cluster,
        namespace=namespace,
        **{"podSecurityContext": {"runAsNonRoot": False, "runAsUser": 0}},
    )
    deploy = one(docs, "Deployment")
    deploy["spec"]["template"]["spec"].pop("serviceAccountName")  # not installed here
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "weak", "namespace": namespace},
        "spec": deploy["spec"]["template"]["spec"],
    }
    proc = cluster.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=json.dumps(pod), check=False
    )
    assert proc.returncode != 0 and "violates PodSecurity" in proc.stderr, proc.stderr
    ok = one(render(cluster, namespace=namespace), "Deployment")["spec"]["template"]["spec"]
    ok.pop("serviceAccountName")
    pod["spec"] = ok
    cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(pod))


# -- RBAC, proven ---------------------------------------------------------------------------


def token_kubeconfig(cluster: KubeCluster, namespace: str, sa: str, path: Path) -> Path:
    """A kubeconfig that authenticates as the ServiceAccount with a real token."""
    token = cluster.kubectl("-n", namespace, "create", "token", sa, "--duration=1h").stdout.strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    ctx = next(c for c in admin["contexts"] if c["name"] == admin["current-context"])
    cl = next(c for c in admin["clusters"] if c["name"] == ctx["context"]["cluster"])
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": cl["cluster"]}],
        "users": [{"name": sa, "user": {"token": token}}],
        "contexts": [{"name": sa, "context": {"cluster": "local", "user": sa}}],
        "current-context": sa,
    }
    for key in ("certificate-authority",):  # make relative paths absolute
        value = cl["cluster"].get(key)
        if value and not Path(value).is_absolute():
            cfg["clusters"][0]["cluster"][key] = str((cluster.kubeconfig.parent / value).resolve())
    path.write_text(yaml.safe_dump(cfg))
    return path


class ChartOperator(OperatorProcess):
    """The operator as the chart runs it: the Lease in the release namespace and the
    ingest key read from the chart's Secret, as a file (--ingest-key-file)."""

    lease_namespace: str = ""
    key_file: Path | None = None

    def command(self) -> list[str]:
        cmd = super().command()
        i = cmd.index("--lease-namespace")
        cmd[i + 1] = self.lease_namespace
        if self.key_file is not None:
            cmd += ["--ingest-key-file", str(self.key_file)]
        return cmd


def curve(trial: dict[str, Any]) -> list[tuple[int, dict[str, float]]]:
    x = float(trial["spec"]["parameters"]["x"])
    return [(1, {"loss": (x - 0.3) ** 2 + 0.1}), (2, {"loss": (x - 0.3) ** 2})]


def can_i(cluster: KubeCluster, subject: str, *args: str) -> bool:
    """`kubectl auth can-i` as subject; a resource may carry ' --subresource=NAME'."""
    args = tuple(part for a in args for part in a.split(" "))
    proc = cluster.kubectl("auth", "can-i", *args, f"--as={subject}", check=False)
    # An unknown resource type would make every "no" vacuous.
    assert "doesn't have a resource type" not in proc.stderr, proc.stderr
    assert proc.stdout.strip() in ("yes", "no"), proc.stderr
    return proc.stdout.strip() == "yes"


def test_operator_runs_an_experiment_with_only_the_charts_rbac(
    cluster: KubeCluster, namespace: str, release: str, scratch: list[str], tmp_path: Path
) -> None:
    watched = new_namespace(cluster, "rbac-xp")
    other = new_namespace(cluster, "rbac-other")
    scratch += [watched, other]
    full = f"{release}-trialforge"
    # replicaCount 1: the in-cluster pods are kwok's (they do not run); the real
    # operator is the local process below, with the chart's ServiceAccount.
    helm(
        cluster,
        "install",
        release,
        str(CHART),
        "--namespace",
        namespace,
        *sets(
            {
                "watch": {"allNamespaces": False, "namespaces": [watched]},
                "replicaCount": 1,
            }
        ),
    )
    subject = f"system:serviceaccount:{namespace}:{full}"

    # What the chart grants, as the API server's authorizer sees it.
    for verb, resource, ns in [
        ("create", "trials.trialforge.io", watched),
        ("patch", "experiments.trialforge.io --subresource=status", watched),
        ("patch", "trials.trialforge.io --subresource=status", watched),
        ("create", "jobs.batch", watched),
        ("delete", "jobs.batch", watched),
        ("create", "secrets", watched),
        ("watch", "pods", watched),
        ("create", "leases.coordination.k8s.io", namespace),
    ]:
        assert can_i(cluster, subject, verb, resource, "-n", ns), f"cannot {verb} {resource}"
    for verb, resource, ns in [
        ("get", "secrets", other),  # the example
        ("get", "secrets", watched),  # it only ever creates token Secrets
        ("list", "secrets", watched),
        ("list", "experiments.trialforge.io", other),
        ("create", "jobs.batch", other),
        ("create", "pods", watched),  # Jobs make the pods, not the operator
        ("delete", "pods", watched),
        ("update", "experiments.trialforge.io", watched),  # only the status subresource
        ("patch", "experiments.trialforge.io", watched),
        ("patch", "trials.trialforge.io", watched),
        ("delete", "trials.trialforge.io", watched),
        ("get", "leases.coordination.k8s.io/kube-scheduler", "kube-system"),
        ("update", "leases.coordination.k8s.io/someone-else", namespace),
        ("create", "trials.trialforge.io", namespace),  # the release ns is not watched
        ("list", "nodes", ""),
    ]:
        args = [verb, resource, *(["-n", ns] if ns else [])]
        assert not can_i(cluster, subject, *args), f"should not: {' '.join(args)}"

    # The real operator, authenticated with a token of that ServiceAccount.
    kubeconfig = token_kubeconfig(cluster, namespace, full, tmp_path / "sa.kubeconfig")
    op = ChartOperator(
        kubeconfig, watched, tmp_path / "operator.log", identity="rbac-op", resync=3.0
    )
    op.lease_namespace = namespace
    # The key the chart generated, mounted as a file in the Deployment.
    encoded = cluster.kubectl(
        "-n", namespace, "get", "secret", f"{full}-ingest-key", "-o", "jsonpath={.data.key}"
    ).stdout
    chart_key = base64.b64decode(encoded).decode()
    assert chart_key != op.key  # $TRIALFORGE_INGEST_KEY (op.key) must lose to the file
    op.key_file = tmp_path / "ingest-key"
    op.key_file.write_text(chart_key + "\n")
    kube = Cluster(cluster, watched, op)
    try:
        op.start()
        # A plain experiment, and one that takes the other paths: two workers per
        # trial (a headless Service each) and a pruned trial (its Job deleted).
        kube.create(experiment("rbac", max_trials=3, parallelism=2, run_seconds="2"))
        kube.create(
            experiment(
                "edge",
                max_trials=3,
                parallelism=1,
                workers=2,
                run_seconds="6",
                early_stopping={
                    "algorithm": "median",
                    "settings": {"nStartupTrials": 2, "nWarmupSteps": 0},
                },
            )
        )

        def report(trial: dict[str, Any]) -> list[tuple[int, dict[str, float]]]:
            if trial["spec"]["experiment"] == "rbac":
                return curve(trial)
            losses = {0: 0.3, 1: 0.2}  # edge-2 reports a hopeless loss: pruned
            return [(1, {"loss": losses.get(int(trial["spec"]["index"]), 100.0)})]

        with Reporter(cluster, watched, op.port, report, key=chart_key) as reporter:
            status = kube.until(lambda: kube.finished("rbac"), 120, "the experiment to finish")
            edge = kube.until(lambda: kube.finished("edge"), 120, "experiment edge to finish")
            # A forged token: refused, and counted for the dashboard.
            code, _ = post(op.port, batch(watched, "rbac-0", [(9, {"loss": 1.0})], tok="0" * 64))
            kube.check(code == 403, f"a forged token got {code}")
        kube.check(status["phase"] == "Succeeded", f"the experiment ended {status['phase']}")
        kube.check(not reporter.errors, f"reporter errors: {reporter.errors}")
        trials = kube.trials("rbac")
        kube.check(
            len(trials) == 3 and all(t["status"]["phase"] == "Succeeded" for t in trials),
            "three trials succeeded",
        )
        # The GPU model, from the node's label (the chart's get-nodes rule; the
        # template selects no GPU product).
        gpu_types = {t["status"].get("gpuType") for t in trials}
        kube.check(len(gpu_types) == 1 and None not in gpu_types, f"gpuType per trial: {gpu_types}")
        phases = {t["metadata"]["name"]: t["status"]["phase"] for t in kube.trials("edge")}
        kube.check(
            edge["phase"] == "Succeeded" and phases.get("edge-2") == "Pruned",
            f"edge: {edge['phase']}, trials {phases}",
        )
        services = cluster.kubectl(
            "-n", watched, "get", "services", "-l", f"{LABEL_EXPERIMENT}=edge", "-o", "name"
        ).stdout.split()
        kube.check(len(services) == 3, f"a headless Service per two-worker trial: {services}")
        kube.until(
            lambda: all(
                j.metadata.name != "edge-2" or j.metadata.deletion_timestamp
                for j in kube.jobs("edge")
            ),
            30,
            "the pruned trial's Job to be deleted",
        )

        # The series the dashboard and the alerts query, from the operator that ran it.
        with urllib.request.urlopen(f"http://127.0.0.1:{op.port}/metrics", timeout=10) as r:
            exposition = r.read().decode()
        from prometheus_client.parser import text_string_to_metric_families

        samples = {
            (smp.name, tuple(sorted(smp.labels.items()))): smp.value
            for family in text_string_to_metric_families(exposition)
            for smp in family.samples
        }

        def value(name: str, **labels: str) -> float | None:
            return samples.get((name, tuple(sorted(labels.items()))))

        got = {n for n, _ in samples}
        kube.check(
            value("trialforge_trials", namespace=watched, experiment="rbac", phase="Succeeded")
            == 3,
            "trialforge_trials counts the 3 succeeded trials",
        )
        kube.check(value("trialforge_leader") == 1, "trialforge_leader is 1")
        kube.check(
            value("trialforge_observations_rejected_total", reason="bad_token") == 1,
            "the forged token is counted in trialforge_observations_rejected_total",
        )
        kube.check((value("trialforge_observations_ingested_total") or 0) >= 6, "ingested")
        for name in (
            "trialforge_experiment_best_objective",
            "trialforge_reconcile_duration_seconds_bucket",
            "trialforge_ingest_request_duration_seconds_bucket",
            "trialforge_status_patches_total",
            "trialforge_api_writes_total",
        ):
            kube.check(name in got, f"/metrics lacks {name}")
        secrets = cluster.kubectl(
            "-n", watched, "get", "secrets", "-l", LABEL_EXPERIMENT, "-o", "name"
        ).stdout.split()
        kube.check(
            sorted(secrets) == ["secret/edge-tokens-1000-0", "secret/rbac-tokens-1000-0"],
            f"one token Secret per experiment's block of trials (it created them): {secrets}",
        )
        lease = json.loads(
            cluster.kubectl("-n", namespace, "get", "lease", LEASE, "-o", "json").stdout
        )
        assert lease["spec"]["holderIdentity"] == "rbac-op"
        ours = [
            e for e in kube.events() if e.source and e.source.component == "trialforge-operator"
        ]
        kube.check(ours, "the operator could write Events (it drops refused ones silently)")
        log = op.log_path.read_text(errors="replace")
        forbidden = [
            ln
            for ln in log.splitlines()
            if re.search(r"\b403\b|[Ff]orbidden|[Nn]ot enough permissions", ln)
        ]
        kube.check(
            not forbidden,
            "the operator was refused something it uses:\n" + "\n".join(forbidden[:20]),
        )
    finally:
        op.stop()
        op.kill()

    # A real request with the operator's credentials, refused by the API server.
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=str(kubeconfig))
    try:
        core = client.CoreV1Api(api)
        for call in (
            lambda: core.list_namespaced_secret(other),
            lambda: core.read_namespaced_secret(secrets[0].split("/")[1], watched),
            lambda: core.delete_namespaced_pod("anything", watched),
            lambda: client.CustomObjectsApi(api).list_namespaced_custom_object(
                "trialforge.io", "v1alpha1", other, "experiments"
            ),
        ):
            with pytest.raises(ApiException) as denied:
                call()
            assert denied.value.status == 403, denied.value
    finally:
        api.close()
    proc = cluster.kubectl(
        "--kubeconfig", str(kubeconfig), "-n", other, "get", "secrets", check=False
    )
    assert proc.returncode != 0 and "Forbidden" in proc.stderr, proc.stderr


def test_cluster_wide_mode_grants_the_same_rules_everywhere_and_nothing_more(
    cluster: KubeCluster, namespace: str, release: str
) -> None:
    helm(
        cluster,
        "install",
        release,
        str(CHART),
        "--namespace",
        namespace,
        *sets({"replicaCount": 1}),
    )
    subject = f"system:serviceaccount:{namespace}:{release}-trialforge"
    for ns in ("default", "kube-system", namespace):
        assert can_i(cluster, subject, "create", "trials.trialforge.io", "-n", ns)
        assert can_i(cluster, subject, "list", "experiments.trialforge.io", "-n", ns)
        assert not can_i(cluster, subject, "get", "secrets", "-n", ns)
        assert not can_i(cluster, subject, "update", "experiments.trialforge.io", "-n", ns)
    assert can_i(cluster, subject, "watch", "customresourcedefinitions.apiextensions.k8s.io")
    assert can_i(cluster, subject, "get", "nodes")
    assert not can_i(cluster, subject, "list", "nodes")
    assert not can_i(cluster, subject, "list", "namespaces")
    assert not can_i(cluster, subject, "create", "customresourcedefinitions.apiextensions.k8s.io")
    assert not can_i(cluster, subject, "create", "clusterrolebindings")


# -- GitOps: repeated apply ------------------------------------------------------------------


def test_repeated_apply_is_a_no_op(cluster: KubeCluster, namespace: str, tmp_path: Path) -> None:
    """What an Argo CD sync does to an unchanged Experiment: nothing at all."""
    op = OperatorProcess(
        cluster.kubeconfig,
        namespace,
        tmp_path / "operator.log",
        identity=f"apply-{namespace}",
        resync=2.0,
    )
    kube = Cluster(cluster, namespace, op)
    xp = experiment("gitops", max_trials=3, parallelism=1, run_seconds="4")
    manifest = tmp_path / "experiment.yaml"
    manifest.write_text(yaml.safe_dump(xp))

    def apply(*extra: str) -> str:
        return cluster.kubectl("-n", namespace, "apply", "-f", str(manifest), *extra).stdout

    def jobs() -> dict[str, str]:
        return {j.metadata.name: j.metadata.uid for j in kube.jobs("gitops")}

    try:
        op.start()
        assert "created" in apply()
        with Reporter(cluster, namespace, op.port, curve) as reporter:
            kube.until(
                lambda: len(jobs()) >= 1 and kube.phase("gitops") == "Running",
                60,
                "the first trial to run",
            )
            before = kube.experiment("gitops") or {}
            before_jobs = jobs()
            before_trials = {
                t["metadata"]["name"]: t["metadata"]["uid"] for t in kube.trials("gitops")
            }
            generation = before["metadata"]["generation"]
            # kubectl's client-side apply, then server-side apply as Argo CD does it
            # with ServerSideApply=true (not interleaved: taking the fields over
            # with --force-conflicts drops client-side apply's annotation).
            for _ in range(3):
                assert "unchanged" in apply(), "kubectl saw a change"
                time.sleep(0.5)
            for _ in range(3):
                apply("--server-side", "--field-manager=argocd-controller", "--force-conflicts")
                time.sleep(0.5)
            # The experiment runs, so the operator looks at it again every resync (2 s):
            # once a reconcile has started after the applies and finished, it has acted.
            op.wait_reconciles()
            after = kube.experiment("gitops") or {}
            kube.check(after["metadata"]["generation"] == generation, "the generation moved")
            kube.check(after["spec"] == before["spec"], "the spec drifted")
            kube.check(
                after["status"].get("observedGeneration") == generation, "observedGeneration moved"
            )
            now_jobs = jobs()
            kube.check(
                all(now_jobs.get(n, uid) == uid for n, uid in before_jobs.items()),
                f"a trial's Job was recreated: {before_jobs} -> {now_jobs}",
            )
            now_trials = {
                t["metadata"]["name"]: t["metadata"]["uid"] for t in kube.trials("gitops")
            }
            kube.check(
                all(now_trials[n] == uid for n, uid in before_trials.items()),
                "a Trial was recreated",
            )
            status = kube.until(lambda: kube.finished("gitops"), 120, "the experiment to finish")
            # Applying again after the end changes nothing either.
            apply("--server-side", "--field-manager=argocd-controller", "--force-conflicts")
        kube.check(not reporter.errors, f"reporter errors: {reporter.errors}")
        kube.check(status["phase"] == "Succeeded", f"ended {status['phase']}")
        trials = kube.trials("gitops")
        kube.check(len(trials) == 3, f"{len(trials)} trials; the plan is 3")
        kube.check(
            sorted(int(t["spec"]["index"]) for t in trials) == [0, 1, 2], "each planned trial once"
        )
        kube.check(all(int(t["spec"].get("attempt", 0)) == 0 for t in trials), "no retries")
        kube.check(len(kube.jobs("gitops")) == 3, "one Job per trial, none restarted")
        time.sleep(3)  # a resync after the end
        final = kube.experiment("gitops") or {}
        kube.check(final["metadata"]["generation"] == generation, "generation moved at the end")
        kube.check(final["status"]["observedGeneration"] == generation, "observedGeneration")
        kube.check(
            final["status"]["completionTime"] == status["completionTime"],
            "the finished experiment was rewritten",
        )
    finally:
        op.stop()
        op.kill()


def test_monitoring_objects_follow_the_prometheus_operator_crds_by_default(
    cluster: KubeCluster,
) -> None:
    """enabled: auto (the default) renders the ServiceMonitor and PrometheusRule exactly
    where the cluster serves prometheus-operator's kinds, as a kube-prometheus-stack's
    does: beside one, nothing is to be set; true and false force it either way."""
    served = [
        "--api-versions", "monitoring.coreos.com/v1/ServiceMonitor",
        "--api-versions", "monitoring.coreos.com/v1/PrometheusRule",
    ]  # fmt: skip

    def kinds(*args: str) -> set[str]:
        out = helm(cluster, "template", "tf", str(CHART), "--namespace", "tf", *args).stdout
        return {d["kind"] for d in yaml.safe_load_all(out) if d}

    monitoring = {"ServiceMonitor", "PrometheusRule"}
    assert kinds(*served) >= monitoring
    assert not kinds() & monitoring  # no prometheus-operator: nothing that would fail
    off = ["--set", "metrics.serviceMonitor.enabled=false",
           "--set", "metrics.prometheusRule.enabled=false"]  # fmt: skip
    assert not kinds(*served, *off) & monitoring
    on = ["--set", "metrics.serviceMonitor.enabled=true",
          "--set", "metrics.prometheusRule.enabled=true"]  # fmt: skip
    assert kinds(*on) >= monitoring
    bad = helm(
        cluster, "template", "tf", str(CHART), "--set", "metrics.serviceMonitor.enabled=yes",
        check=False,
    )  # fmt: skip
    assert bad.returncode != 0 and "enabled" in bad.stderr, bad.stderr
