"""The ingest tokens: a Secret per block of trial indices, holding each attempt's token.

A trial's collector authenticates its observations with a token only the
operator can derive (an HMAC of the trial's name under the operator's key), so
the operator checks a token without storing it.  Tokens reach pods through a
Secret per block of indices (names.token_secret_name), created once per
Experiment uid, owned by the Experiment so that it goes with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trialforge.api.trial import trial_name
from trialforge.kube import names
from trialforge.kube.client import Kube
from trialforge.metrics.contract import ingest_token


class TokenSecrets:
    def __init__(self, kube: Kube, key: bytes) -> None:
        self.kube = kube
        self.key = key
        self._created: set[tuple[str, str, str]] = set()  # (namespace, name, owner uid)

    def ensure(self, experiment: str, retries: int, trial: Mapping[str, Any]) -> None:
        """The token Secret of ``trial``'s block of indices exists."""
        namespace = trial["metadata"]["namespace"]
        index = int(trial["spec"]["index"])
        secret = names.token_secret_name(experiment, index, retries)
        owners = list(trial["metadata"].get("ownerReferences") or [])
        # By the Experiment's uid: a new Experiment under an old name needs its own.
        known = (namespace, secret, owners[0]["uid"] if owners else "")
        if known in self._created:
            return
        block = names.token_block(retries)
        first = index // block * block
        tokens = {
            name: ingest_token(self.key, namespace, name)
            for i in range(first, first + block)
            for attempt in range(retries + 1)
            for name in [trial_name(experiment, i, attempt)]
        }
        self.kube.create(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {
                    "name": secret,
                    "namespace": namespace,
                    "labels": {
                        names.LABEL_EXPERIMENT: experiment,
                        names.LABEL_MANAGED: names.MANAGER,
                    },
                    "ownerReferences": owners,  # the Experiment's: it goes with it
                },
                "type": "Opaque",
                "stringData": tokens,
            }
        )  # AlreadyExists is success: the same tokens (they are derived from the key)
        self._created.add(known)
