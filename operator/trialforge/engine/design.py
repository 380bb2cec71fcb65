"""The experiment's design: which runs it calls for, in what order, with what parameters and seeds.

The design, in the order trials start:

* ``arms`` (a comparison experiment): for each repeat, the baseline (when
  set) and every arm; nothing else.
* otherwise the baseline's ``repeats`` runs first, then the search:
  configuration k (Optuna trial k) runs ``repeats`` times, each with its
  own seed; the search hears the mean of the runs that succeeded, and its
  pruner watches the first run (pruning it stops the configuration).
  ``budget.maxTrials`` counts configurations, so a search makes up to
  maxTrials x repeats trials.  When it ends (budget, space, or goal),
  ``confirm`` runs the best ``top`` configurations and the baseline
  ``confirm.repeats`` times each with fresh seeds.

Trial indices are handed out in that order, each new trial taking the
smallest index no trial has; every Trial records its role, configuration,
repeat and (for the search) its configuration number, so the design is read
back from the trials, not from index arithmetic.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trialforge.api.experiment import ExperimentSpec
from trialforge.api.trial import TrialRole
from trialforge.engine.record import TrialRecord
from trialforge.engine.search import Search, derive_seed

if TYPE_CHECKING:
    from trialforge.engine.ledger import Merged

ROLE_SEARCH = TrialRole.SEARCH
ROLE_BASELINE = TrialRole.BASELINE
ROLE_ARM = TrialRole.ARM
ROLE_CONFIRM = TrialRole.CONFIRM
BASELINE = "baseline"  # the baseline configuration's name in comparisons

_ROLES: dict[str, TrialRole] = {role.value: role for role in TrialRole}


def search_config(k: int) -> str:
    """The name of the search's configuration ``k`` (its Optuna trial number)."""
    return f"c{k}"


def search_index_of(name: str) -> int | None:
    """The search configuration ``name`` names (:func:`search_config`'s inverse).

    None for any other name: the baseline's, an arm's.
    """
    digits = name[1:]
    if name[:1] != "c" or not (digits.isascii() and digits.isdecimal()):
        return None
    k = int(digits)
    return k if search_config(k) == name else None


@dataclass(frozen=True)
class Slot:
    """One run the experiment's design calls for: which configuration, which repeat.

    ``role`` is ``search`` (configuration ``search_index`` of the search),
    ``baseline`` (spec.baseline), ``arm`` (an arm of spec.arms) or ``confirm``
    (a fresh run of a top configuration or of the baseline after the search).
    """

    role: TrialRole | str  # a str only for a role this version does not know
    config: str
    repeat: int = 0
    search_index: int | None = None


def slot_of(view: TrialRecord) -> Slot:
    """The slot a trial fills, as it recorded it."""
    # A role this version does not know stays as it is: it fills no slot of the design.
    recorded = view.role or ROLE_SEARCH
    role = _ROLES.get(recorded, recorded)
    if role == ROLE_SEARCH:
        k = view.search_index if view.search_index is not None else view.index
        return Slot(ROLE_SEARCH, search_config(k), view.repeat, k)
    return Slot(role, view.config or "", view.repeat, view.search_index)


def search_limit(spec: ExperimentSpec, search: Search) -> int:
    """How many configurations the search tries: the budget, or fewer if the space is smaller."""
    capacity = search.capacity()
    limit = spec.budget.max_trials or 0
    return min(limit, capacity) if capacity is not None else limit


def wanted(
    spec: ExperimentSpec,
    search: Search,
    configs: Merged,
    highest_settled: int,
    search_end: tuple[str, str] | None,
    top: list[str],
) -> Iterator[Slot]:
    """Every run the design calls for now, in the order they should start.

    ``configs`` are the search's configurations so far (settled and live),
    ``highest_settled`` the highest configuration number the ledger holds and
    ``top`` the confirmation's configurations once the search ended.
    """
    repeats = spec.repeats
    baseline = [BASELINE] if spec.baseline is not None else []
    if spec.arms:
        names = baseline + [a.name for a in spec.arms]
        for r in range(repeats):
            for name in names:
                role = ROLE_BASELINE if name == BASELINE and baseline else ROLE_ARM
                yield Slot(role, name, r)
        return
    for r in range(repeats if baseline else 0):
        yield Slot(ROLE_BASELINE, BASELINE, r)
    if search_end is None:
        limit = search_limit(spec, search)
        # Configurations started but short of runs, gaps (a crash between
        # deciding and creating), then new ones: without scanning them all.
        highest = max(highest_settled, max(configs.live, default=-1))
        open_ks = {
            k
            for k, cfg in configs.live.items()  # a settled configuration has ended
            if k < limit
            and cfg.phase is None
            and len(cfg.runs) < repeats
            and not search.should_prune(k)
        }
        if len(configs) < highest + 1:
            open_ks.update(k for k in range(min(highest + 1, limit)) if k not in configs)
        for k in itertools.chain(sorted(open_ks), range(highest + 1, limit)):
            for r in range(repeats):
                yield Slot(ROLE_SEARCH, search_config(k), r, k)
    elif spec.confirm is not None and top:
        for r in range(spec.confirm.repeats):
            for name in baseline + top:
                yield Slot(ROLE_CONFIRM, name, r, search_index_of(name))


def parameters(
    spec: ExperimentSpec,
    search: Search,
    slot: Slot,
    runs: Mapping[int, TrialRecord] | None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A new run's parameters and search state.

    ``runs`` are the runs its search configuration already has (repeat ->
    latest attempt), if any: a repeat or a confirmation runs what they ran.
    """
    if slot.config == BASELINE and slot.role in (ROLE_BASELINE, ROLE_CONFIRM):
        assert spec.baseline is not None
        return dict(spec.baseline.parameters), {}
    if slot.role == ROLE_ARM:
        arm = next(a for a in spec.arms or [] if a.name == slot.config)
        return dict(arm.parameters), {}
    k = slot.search_index
    assert k is not None
    if runs:
        first = runs[min(runs)]
        state = dict(first.search_state or {}) if slot.role == ROLE_SEARCH else {}
        return dict(first.parameters), state
    s = search.suggest(k)
    return dict(s.parameters), dict(s.state)


def seed_of(seed: int, slot: Slot) -> int:
    """A new run's seed, derived from the search's ``seed`` and the slot."""
    if slot.role == ROLE_SEARCH:
        if slot.repeat == 0:  # what a search without repeats always gave
            return derive_seed(seed, "trial", slot.search_index)
        return derive_seed(seed, "trial", slot.search_index, "repeat", slot.repeat)
    # The role's string, not the member: the seed is a hash of its parts' repr.
    return derive_seed(seed, str(slot.role), slot.config, slot.repeat)


def arm_runs(by_slot: Mapping[Slot, TrialRecord]) -> dict[str, list[TrialRecord]]:
    """The runs of each arm and of the baseline, by configuration name, in repeat order."""
    out: dict[str, list[TrialRecord]] = {}
    for slot, view in by_slot.items():
        if slot.role in (ROLE_ARM, ROLE_BASELINE):
            out.setdefault(slot.config, []).append(view)
    for views in out.values():
        views.sort(key=lambda v: v.repeat)
    return out


def planned_trials(spec: ExperimentSpec) -> int:
    """How many trials the design makes at most (retries not counted)."""
    baseline = 1 if spec.baseline is not None else 0
    if spec.arms:
        return (len(spec.arms) + baseline) * spec.repeats
    total = ((spec.budget.max_trials or 0) + baseline) * spec.repeats
    if spec.confirm is not None:
        total += (spec.confirm.top + baseline) * spec.confirm.repeats
    return total


def design_summary(spec: ExperimentSpec) -> str:
    """The design in words, e.g. for ``trialforge validate``."""
    runs = f"{spec.repeats} runs each" if spec.repeats > 1 else "1 run each"
    baseline = " + the baseline" if spec.baseline is not None else ""
    if spec.arms:
        text = f"{len(spec.arms)} arms{baseline}, {runs}"
    else:
        text = f"{spec.budget.max_trials} configurations{baseline}, {runs}"
        if spec.confirm is not None:
            text += (
                f"; then the best {spec.confirm.top}{baseline} confirmed with "
                f"{spec.confirm.repeats} fresh runs"
            )
    return f"{text} (at most {planned_trials(spec)} trials)"
