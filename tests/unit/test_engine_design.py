"""engine.design: configuration names, slots as trials record them, seeds."""

from __future__ import annotations

import pytest

from trialforge.api.trial import TrialRole
from trialforge.engine.design import (
    BASELINE,
    ROLE_BASELINE,
    ROLE_SEARCH,
    Slot,
    search_config,
    search_index_of,
    seed_of,
    slot_of,
)
from trialforge.engine.record import TrialRecord
from trialforge.engine.search import derive_seed


@pytest.mark.parametrize("k", [0, 1, 9, 10, 123, 10**6])
def test_a_search_configuration_name_parses_back(k: int) -> None:
    assert search_config(k) == f"c{k}"
    assert search_index_of(search_config(k)) == k


@pytest.mark.parametrize(
    "name", [BASELINE, "big", "c", "cx", "c-1", "c01", "c1a", "C1", "c²", "c\u0661", "", " c1"]
)
def test_other_names_are_not_search_configurations(name: str) -> None:
    assert search_index_of(name) is None


def record(**fields: object) -> TrialRecord:
    return TrialRecord(name="x-3", index=3, attempt=0, phase="Running", parameters={}, **fields)  # type: ignore[arg-type]


def test_a_record_without_role_is_the_search_configuration_of_its_index() -> None:
    slot = slot_of(record())
    assert slot == Slot(ROLE_SEARCH, "c3", 0, 3)
    assert slot.role is TrialRole.SEARCH


def test_a_recorded_role_string_becomes_the_member() -> None:
    slot = slot_of(record(role="baseline", config=BASELINE, repeat=2))
    assert slot.role is TrialRole.BASELINE and slot == Slot(ROLE_BASELINE, BASELINE, 2)
    assert slot_of(record(role="search", search_index=7, repeat=1)) == Slot(ROLE_SEARCH, "c7", 1, 7)


def test_an_unknown_role_is_kept_as_it_is() -> None:
    assert slot_of(record(role="later", config="z")).role == "later"


def test_seeds_hash_the_roles_string_as_before_the_enum() -> None:
    # derive_seed hashes the repr of its parts: a member's repr would change every seed.
    assert seed_of(7, Slot(ROLE_BASELINE, BASELINE, 1)) == derive_seed(7, "baseline", BASELINE, 1)
    assert seed_of(7, Slot(ROLE_SEARCH, "c4", 0, 4)) == derive_seed(7, "trial", 4)
    assert seed_of(7, Slot(ROLE_SEARCH, "c4", 2, 4)) == derive_seed(7, "trial", 4, "repeat", 2)
