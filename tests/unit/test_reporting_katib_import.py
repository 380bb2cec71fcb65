"""reporting/katib_import.py: Katib v1beta1 Experiments (tests/data/katib) as Trialforge ones.

Each converted document is validated by the converter (as `trialforge validate` does);
these tests check what each field became, that what is left out is named, and that
a converted Experiment runs on this machine.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.test_local_runner import cli
from trialforge.engine.validation import load_experiment
from trialforge.reporting.katib_import import KatibImportError, convert, convert_all

KATIB = Path(__file__).parents[1] / "data" / "katib"


def katib(name: str) -> dict[str, Any]:
    return yaml.safe_load((KATIB / name).read_text())


def fields(conversion: Any, dropped: bool | None = None) -> list[str]:
    return [n.field for n in conversion.notes if dropped is None or n.dropped is dropped]


def test_a_batch_job_experiment_converts_every_field() -> None:
    c = convert(katib("random-job.yaml"))
    doc = c.document
    assert doc["metadata"] == {
        "name": "random",
        "namespace": "kubeflow",
        "labels": {"team": "vision"},
        "annotations": {"trialforge.io/imported-from": "kubeflow.org/v1beta1 Experiment random"},
    }
    spec = doc["spec"]
    assert spec["objective"] == {
        "metric": "Validation-accuracy",
        "direction": "maximize",
        "goal": 0.99,
        "final": "best",
    }
    assert spec["search"] == {"algorithm": "random", "seed": 10}
    assert spec["budget"] == {"maxTrials": 12, "parallelism": 3, "maxFailedTrials": 3}
    assert spec["parameters"] == [
        {"name": "lr", "type": "float", "min": 0.01, "max": 0.03},
        {"name": "num_layers", "type": "int", "min": 2, "max": 5},
        {"name": "optimizer", "type": "categorical", "values": ["sgd", "adam", "ftrl"]},
    ]
    container = spec["trial"]["template"]["spec"]["containers"][0]
    assert container["command"][3:] == [
        "--lr=${params.lr}",
        "--num-layers=${params.num_layers}",
        "--optimizer=${params.optimizer}",
    ]
    assert spec["trial"]["template"]["metadata"]["annotations"] == {
        "sidecar.istio.io/inject": "false"
    }
    assert spec["trial"]["metrics"] == {"source": "stdout", "format": "keyvalue"}
    assert "workers" not in spec["trial"]
    assert "spec.parameters[1].name" in fields(
        c
    ) and "spec.objective.additionalMetricNames" in fields(c)
    assert fields(c, dropped=True) == []
    load_experiment(doc)  # what the converter validated, validated again here


def test_file_collector_json_strategies_steps_discrete_log_and_timeout() -> None:
    c = convert(katib("tpe-file-json.yaml"))
    spec = c.document["spec"]
    assert spec["objective"]["final"] == "last"  # metricStrategies: latest
    assert spec["search"] == {"algorithm": "tpe", "seed": 7, "settings": {"nStartupTrials": 5}}
    assert spec["trial"]["metrics"] == {
        "source": "file",
        "path": "/katib/mnist.json",
        "format": "json",
    }
    assert spec["parameters"][0] == {"name": "lr", "type": "float", "min": 0.001, "max": 0.1,
                                     "step": 0.001}  # fmt: skip
    assert spec["parameters"][1] == {
        "name": "batch_size",
        "type": "discrete",
        "values": [16, 32, 64],
    }
    assert spec["parameters"][2]["log"] is True
    assert spec["trial"]["timeout"] == "1800s"
    env = spec["trial"]["template"]["spec"]["containers"][0]["env"]
    assert env == [{"name": "MOMENTUM", "value": "${params.momentum}"}]
    # The additional metric's strategy has no equivalent: named, not dropped silently.
    assert fields(c, dropped=True) == ["spec.objective.metricStrategies[1]"]


def test_median_stop_and_retain() -> None:
    c = convert(katib("median-stop.yaml"))
    assert c.document["spec"]["earlyStopping"] == {
        "algorithm": "median",
        "settings": {"nStartupTrials": 1, "nWarmupSteps": 2},
    }
    assert fields(c, dropped=True) == ["spec.trialTemplate.retain"]


def test_a_pytorchjob_becomes_a_job_with_its_workers_count() -> None:
    c = convert(katib("pytorchjob.yaml"))
    trial = c.document["spec"]["trial"]
    assert trial["workers"] == 3  # Master 1 + Worker 2
    [container] = trial["template"]["spec"]["containers"]
    assert container["resources"] == {"limits": {"nvidia.com/gpu": 1}}
    assert container["command"][-1] == "--run-name=$(TRIALFORGE_TRIAL)"
    assert "restartPolicy" not in trial["template"]["spec"]
    assert c.document["spec"]["search"] == {"algorithm": "cmaes", "seed": 3,
                                            "settings": {"sigma0": 0.2}}  # fmt: skip
    assert any("PyTorchJob became a Job" in n.message for n in c.notes)


def test_a_pytorchjob_whose_worker_template_differs_says_so() -> None:
    doc = katib("pytorchjob.yaml")
    replicas = doc["spec"]["trialTemplate"]["trialSpec"]["spec"]["pytorchReplicaSpecs"]
    replicas["Worker"]["template"]["spec"]["containers"][0]["image"] = "other:2"
    c = convert(doc)
    assert "spec.trialTemplate.trialSpec.spec.pytorchReplicaSpecs.Worker.template" in fields(
        c, dropped=True
    )


def test_a_single_worker_tfjob_with_tensorflow_events_and_bayesian_optimisation() -> None:
    c = convert(katib("tfevent-tfjob.yaml"))
    spec = c.document["spec"]
    assert spec["trial"]["metrics"] == {"source": "tensorboard",
                                        "path": "/mnist-with-summaries-logs/test"}  # fmt: skip
    # gp needs PyTorch, which the operator image lacks: the model-based search that runs
    assert spec["search"] == {"algorithm": "tpe", "settings": {"nStartupTrials": 3}}
    assert any("bayesianoptimization became tpe" in n.message for n in c.notes), c.notes
    assert spec["parameters"][1] == {"name": "batch_size", "type": "int", "min": 100, "max": 200,
                                     "step": 20}  # fmt: skip
    assert fields(c, dropped=True) == ["spec.algorithm.algorithmSettings[1]"]  # acq_func


def test_push_and_hyperband_become_push_and_a_hyperband_pruner() -> None:
    c = convert(katib("push-hyperband.yaml"))
    spec = c.document["spec"]
    assert spec["trial"]["metrics"] == {"source": "push"}
    assert spec["search"]["algorithm"] == "random"
    hyperband = {"reductionFactor": 3, "maxResource": 9}
    assert spec["earlyStopping"] == {"algorithm": "hyperband", "settings": hyperband}
    assert spec["parameters"][1] == {"name": "num_epochs", "type": "categorical", "values": [1]}
    containers = spec["trial"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["training-container", "sidecar-proxy"]
    assert spec["budget"]["parallelism"] == 2 and "maxFailedTrials" not in spec["budget"]


def test_a_custom_stdout_filter_becomes_a_named_group_pattern_and_the_name_is_shortened() -> None:
    c = convert(katib("stdout-regex.yaml"))
    doc = c.document
    assert doc["metadata"]["name"] == "metrics-collection-strategy-with-a-rathe"
    metrics = doc["spec"]["trial"]["metrics"]
    assert metrics["format"] == "regex"
    assert metrics["pattern"] == r"(?P<name>[\w-]+)\s*:\s*(?P<value>(?:-?\d+)(?:\.\d+)?)"
    from trialforge.metrics.parsers import make_parser

    parsed = make_parser("regex", metrics["pattern"]).parse("epoch 3 loss: 0.25")
    assert parsed is not None and parsed.metrics == {"loss": 0.25}
    assert doc["spec"]["objective"]["final"] == "best"  # strategy min for minimize
    assert doc["spec"]["search"] == {"algorithm": "grid"}
    assert fields(c, dropped=True) == ["spec.trialTemplate.trialSpec.spec.backoffLimit"]
    args = doc["spec"]["trial"]["template"]["spec"]["containers"][0]["args"]
    assert args == ["--optimizer=${params.optimizer}"]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("refused/darts.yaml", ["spec.nasConfig", "spec.algorithm.algorithmName: darts"]),
        ("refused/mpijob.yaml", ["spec.trialTemplate.trialSpec.kind: MPIJob",
                                 "spec.metricsCollectorSpec.collector.kind: PrometheusMetric"]),
        ("refused/configmap.yaml", ["spec.trialTemplate.configMap",
                                    "spec.parameters[1].feasibleSpace.min: 'x' is not a number"]),
    ],
)  # fmt: skip
def test_what_cannot_be_converted_is_refused_naming_each_field(
    name: str, expected: list[str]
) -> None:
    with pytest.raises(KatibImportError) as caught:
        convert(katib(name))
    for text in expected:
        assert any(e.startswith(text) for e in caught.value.errors), (text, caught.value.errors)


def test_small_refusals_name_their_field() -> None:
    base = katib("random-job.yaml")
    cases: list[tuple[Any, str]] = [
        (lambda d: d["spec"]["objective"].update(type="maximise"), "spec.objective.type"),
        (lambda d: d["spec"]["parameters"][0].update(parameterType="float"),
         "spec.parameters[0].parameterType"),
        (lambda d: d["spec"]["trialTemplate"]["trialParameters"][0].update(reference="nope"),
         "spec.trialTemplate.trialParameters[0].reference"),
        (lambda d: d["spec"]["trialTemplate"].update(primaryContainerName="main"),
         "spec.trialTemplate.primaryContainerName"),
        (lambda d: d["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"][
            "containers"][0]["command"].append("--x=${trialParameters.undeclared}"),
         "spec.trialTemplate.trialSpec...template.spec.containers[0].command[6]"),
        (lambda d: d["spec"]["algorithm"].update(algorithmName="pbt"),
         "spec.algorithm.algorithmName"),
        (lambda d: d["spec"]["metricsCollectorSpec"].update(collector={"kind": "Custom"})
         if "metricsCollectorSpec" in d["spec"] else d["spec"].update(
             metricsCollectorSpec={"collector": {"kind": "Custom"}}),
         "spec.metricsCollectorSpec.collector.kind"),
        (lambda d: d.update(apiVersion="kubeflow.org/v1alpha3"), "apiVersion/kind"),
    ]  # fmt: skip
    for change, field in cases:
        doc = copy.deepcopy(base)
        change(doc)
        with pytest.raises(KatibImportError) as caught:
            convert(doc)
        assert any(e.startswith(field) for e in caught.value.errors), (field, caught.value.errors)


def test_every_experiment_of_a_stream_is_converted() -> None:
    docs = [katib("random-job.yaml"), None, katib("median-stop.yaml")]
    assert [c.document["metadata"]["name"] for c in convert_all(docs)] == ["random", "median-stop"]
    with pytest.raises(KatibImportError, match=r"median-stop: spec\.objective\.type"):
        bad = katib("median-stop.yaml")
        bad["spec"]["objective"]["type"] = "up"
        convert_all([katib("random-job.yaml"), bad])


def test_the_command_writes_yaml_that_validates_and_names_changes_on_stderr(tmp_path: Path) -> None:
    out = tmp_path / "xp.yaml"
    done = cli("import", "katib", str(KATIB / "tpe-file-json.yaml"), "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert "tpe-file-metrics: not converted: spec.objective.metricStrategies[1]" in done.stderr
    assert cli("validate", str(out)).returncode == 0
    strict = cli("import", "katib", str(KATIB / "tpe-file-json.yaml"), "--strict", "--json")
    assert strict.returncode == 1
    [entry] = json.loads(strict.stdout)  # only JSON on stdout
    assert entry["experiment"]["metadata"]["name"] == "tpe-file-metrics"
    assert {"field": "spec.objective.metricStrategies[1]", "dropped": True}.items() <= next(
        n for n in entry["notes"] if n["dropped"]
    ).items()
    refused = cli("import", "katib", str(KATIB / "refused" / "mpijob.yaml"))
    assert refused.returncode == 2 and refused.stdout == ""
    assert "spec.trialTemplate.trialSpec.kind: MPIJob" in refused.stderr
    assert "Traceback" not in refused.stderr
    missing = cli("import", "katib", str(tmp_path / "none.yaml"))
    assert missing.returncode == 2 and "No such file" in missing.stderr


def test_a_converted_katib_experiment_runs_here(tmp_path: Path) -> None:
    converted = tmp_path / "katib-local.yaml"
    done = cli("import", "katib", str(KATIB / "local-runnable.yaml"), "-o", str(converted))
    assert done.returncode == 0, done.stderr
    ran = cli("run", str(converted), "--dir", str(tmp_path / "run"), "--quiet", "--json",
              timeout=300)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    state = json.loads(ran.stdout)
    assert state["phase"] == "Succeeded" and state["trials"]["succeeded"] == 4
    best = state["best"]
    assert set(best["parameters"]) == {"learning_rate", "batch_size", "optimizer"}
    # The trainer's own loss for the best parameters, at its best (last) epoch.
    p = best["parameters"]
    expected = (p["learning_rate"] - 0.2) ** 2 + 1 / 4 + (0.01 if p["optimizer"] == "sgd" else 0)
    assert best["value"] == pytest.approx(expected + p["batch_size"] / 1e4, abs=1e-5)
