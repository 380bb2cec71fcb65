"""Names, labels and API coordinates shared by the Kubernetes adapter."""

from __future__ import annotations

from trialforge.api.experiment import GROUP, VERSION

EXPERIMENTS = "experiments"
TRIALS = "trials"

LABEL_EXPERIMENT = f"{GROUP}/experiment"
LABEL_TRIAL = f"{GROUP}/trial"
LABEL_INDEX = f"{GROUP}/index"
LABEL_ATTEMPT = f"{GROUP}/attempt"
LABEL_MANAGED = "app.kubernetes.io/managed-by"
# On a Job the operator suspended because its experiment is paused (not Kueue's).
ANNOTATION_PAUSED = f"{GROUP}/paused"
MANAGER = "trialforge"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"

FINALIZER = f"{GROUP}/cleanup"
INGEST_TOKEN_KEY = "token"
MASTER_PORT = 29500


def api_version() -> str:
    return f"{GROUP}/{VERSION}"


def job_name(trial: str) -> str:
    return trial


def token_secret_name(trial: str) -> str:
    return f"{trial}-ingest"
