"""e2e/tfcluster.py's Kueue pieces that need no cluster: the pinned tool, its build
stamp and cache check, and the Configuration `up --kueue` writes."""

import dataclasses
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "e2e"))
import tfcluster  # noqa: E402


def test_kueue_is_pinned_in_its_wrapper_module_and_stamped_like_upstream() -> None:
    tool = tfcluster.kueue_tool()
    assert tool.version() == "v0.17.0"
    gomod = (tool.dir / "go.mod").read_text()
    assert "tool sigs.k8s.io/kueue/cmd/kueue" in gomod
    assert (tool.dir / "go.sum").read_text().count("sigs.k8s.io/kueue v0.17.0") == 2
    flags = tool.ldflags()
    assert "-X=sigs.k8s.io/kueue/pkg/version.GitVersion=v0.17.0" in flags
    assert tool.packages == {"kueue": "sigs.k8s.io/kueue/cmd/kueue"}
    # `e2e/cluster build` (no names) builds every tool of the set, Kueue included
    assert tool in tfcluster.TOOLSET and "kueue" in tfcluster.KUEUE_TOOLS


def test_the_copied_crds_are_part_of_the_stamp_and_of_being_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tool = tfcluster.kueue_tool()
    other = dataclasses.replace(tool, copies=(("crds", "config/components/crd"),))
    assert other.stamp() != tool.stamp()
    monkeypatch.setenv("TRIALFORGE_CACHE", str(tmp_path))
    d = tfcluster.tool_dir(tool)
    (d / "bin").mkdir(parents=True)
    (d / "bin" / "kueue").write_text("#!/bin/sh\n")
    (d / "bin" / "kueue").chmod(0o755)
    (d / "stamp").write_text(tool.stamp() + "\n")
    assert not tfcluster.tool_is_built(tool), "built without its CRDs"
    (d / "crds").mkdir()
    assert tfcluster.tool_is_built(tool)


def test_the_configuration_keeps_kueue_on_loopback_without_webhooks_or_extras(
    tmp_path: Path,
) -> None:
    cfg = yaml.safe_load(tfcluster.kueue_config(tmp_path / "certs", 40001, 40002))
    assert cfg["apiVersion"] == "config.kueue.x-k8s.io/v1beta2"
    assert cfg["kind"] == "Configuration"
    assert cfg["namespace"] == tfcluster.KUEUE_NAMESPACE
    assert cfg["webhook"] == {
        "host": "127.0.0.1",
        "port": 40001,
        "certDir": str(tmp_path / "certs"),
    }
    assert cfg["health"]["healthProbeBindAddress"] == "127.0.0.1:40002"
    assert cfg["metrics"]["bindAddress"] == "0"
    assert cfg["leaderElection"]["leaderElect"] is False
    assert cfg["internalCertManagement"] == {
        "enable": True,
        "webhookServiceName": tfcluster.KUEUE_SERVICE,
        "webhookSecretName": tfcluster.KUEUE_SECRET,
    }
    assert cfg["integrations"]["frameworks"] == ["batch/job"]
    assert cfg["manageJobsWithoutQueueName"] is False
    assert cfg["featureGates"] == {"VisibilityOnDemand": False, "MultiKueue": False}
