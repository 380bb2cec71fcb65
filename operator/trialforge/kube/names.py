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
MASTER_PORT = 29500


def api_version() -> str:
    return f"{GROUP}/{VERSION}"


def job_name(trial: str) -> str:
    return trial


# Trials' ingest tokens live in Secrets shared by a block of trial indices (every
# attempt of each), one key per trial: one Secret write per block, not per trial.
# A pod's env references only its own trial's key.
TOKENS_PER_SECRET = 1000


def token_block(retries: int) -> int:
    """How many trial indices share one token Secret."""
    return max(1, TOKENS_PER_SECRET // (retries + 1))


def token_secret_name(experiment: str, index: int, retries: int) -> str:
    block = token_block(retries)
    return f"{experiment}-tokens-{block}-{index // block}"


def token_secret_ref(experiment: str, trial: str, index: int, retries: int) -> dict[str, str]:
    """The secretKeyRef of a trial's ingest token."""
    return {"name": token_secret_name(experiment, index, retries), "key": trial}
