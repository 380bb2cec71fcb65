"""The spec-change policy: which changes an experiment takes while it runs, and what follows.

One answer for a cluster Experiment (whose spec a user edits with ``kubectl``)
and a local run (run again with an edited file): the fields that define what
the experiment is (``api.experiment.IMMUTABLE_FIELDS``: the objectives, the
space, the search, the design of baseline, repeats and arms) cannot change,
since the trials already run would not be comparable with the rest; the API
server refuses such a change with a CEL rule, a local resume with the same
words.  Everything else may change and takes effect at the next plan: a larger
``maxTrials`` or a later ``deadline`` makes a finished experiment run the new
trials only (the planner is level-based: it keeps what ran and plans what is
missing), ``suspend`` stops new trials, a new template applies to new trials,
and a change of the early stopping rebuilds the search's state from the trials.
"""

from __future__ import annotations

import hashlib

from pydantic.alias_generators import to_camel

from trialforge.api.experiment import IMMUTABLE_FIELDS, ExperimentSpec


def refused_changes(old: ExperimentSpec, new: ExperimentSpec) -> list[str]:
    """What ``new`` changes that cannot change (a message per field; empty: accepted)."""
    refused = []
    for name in IMMUTABLE_FIELDS["ExperimentSpec"]:
        if getattr(old, name) != getattr(new, name):
            what = f"spec.{to_camel(name)}"
            refused.append(f"{what}: {what} cannot change once the experiment exists")
    return refused


def changed_fields(old: ExperimentSpec, new: ExperimentSpec) -> list[str]:
    """The spec's top-level fields that differ (wire names), for events and messages."""
    return [
        f"spec.{to_camel(name)}"
        for name in type(old).model_fields
        if getattr(old, name) != getattr(new, name)
    ]


def search_fingerprint(spec: ExperimentSpec) -> str:
    """What the search's state depends on: when it changes, the planner is built anew
    (from the trials, as after a restart)."""
    fixed = {
        "objectives": [o.model_dump() for o in spec.all_objectives],
        "parameters": [p.model_dump() for p in spec.parameters],
        "search": spec.search.model_dump(),
        "earlyStopping": spec.early_stopping.model_dump(),
    }
    return hashlib.sha256(repr(fixed).encode()).hexdigest()
