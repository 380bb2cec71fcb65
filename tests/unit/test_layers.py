"""What the layers contract (lint-imports) cannot say: which third-party packages a layer uses.

import-linter's contracts forbid what they list; these are allow-lists, so a new
dependency of the API (say optuna, pulled in for a check) fails here by name.
"""

from __future__ import annotations

import sys

import grimp
import pytest

# The models are pydantic, specs are YAML; nothing else, so that anything may import them.
ALLOWED = {
    "trialforge.api": {"pydantic", "yaml"},
    # Copied into the trainer's process and the collector sidecar: standard library only.
    "trialforge.client": set(),
    "trialforge.api.observation": set(),
    "trialforge.api.vocabulary": set(),
    "trialforge.metrics.contract": set(),
}

# Ours that a module may import, where that is not what its layer allows: the trainer's
# client loads nothing of ours but the sidecar contract (no pydantic, no optuna).
OURS = {
    "trialforge.client": {"trialforge.metrics.contract"},
    "trialforge.metrics.contract": set(),
}


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("trialforge", include_external_packages=True)


def _third_party(graph: grimp.ImportGraph, package: str) -> dict[str, set[str]]:
    """Each third-party top-level package that modules of ``package`` import, and by whom."""
    modules = {package} | graph.find_descendants(package)
    found: dict[str, set[str]] = {}
    for module in modules:
        for imported in graph.find_modules_directly_imported_by(module):
            top = imported.split(".")[0]
            if top != "trialforge" and top not in sys.stdlib_module_names:
                found.setdefault(top, set()).add(module)
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_third_party_imports_stay_inside_the_allow_list(
    graph: grimp.ImportGraph, package: str
) -> None:
    found = _third_party(graph, package)
    extra = {name: sorted(by) for name, by in found.items() if name not in ALLOWED[package]}
    assert not extra, f"{package} imports {extra}; allowed: {sorted(ALLOWED[package])}"


@pytest.mark.parametrize("module", sorted(OURS))
def test_the_trainers_client_imports_nothing_of_ours_but_the_contract(
    graph: grimp.ImportGraph, module: str
) -> None:
    ours = {
        m for m in graph.find_modules_directly_imported_by(module) if m.startswith("trialforge")
    }
    assert ours <= OURS[module], f"{module} imports {sorted(ours - OURS[module])}"


def test_the_scan_sees_function_level_imports(graph: grimp.ImportGraph) -> None:
    # The engine imports optuna at the top and the CLI imports rich inside functions:
    # an allow-list that missed either kind would pass for the wrong reason.
    assert "optuna" in _third_party(graph, "trialforge.engine")
    assert "rich" in _third_party(graph, "trialforge.cli")
