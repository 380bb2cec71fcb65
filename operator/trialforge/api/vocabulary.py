"""The words a spec is written in: algorithm names and the parameter placeholder.

Written once here, the lowest layer, because the CRD's enums and CEL rules are
generated from them; the engine keys its Optuna registries by these names (a unit
test checks that both hold exactly the same ones). Standard library only, so the
engine's light modules can use it without loading the models.
"""

from __future__ import annotations

import re
from typing import Literal, get_args

SearchAlgorithm = Literal["random", "grid", "tpe", "cmaes", "gp", "qmc", "nsga2"]
EarlyStoppingAlgorithm = Literal["none", "median", "asha", "hyperband"]

SEARCH_ALGORITHMS: tuple[str, ...] = get_args(SearchAlgorithm)
EARLY_STOPPING_ALGORITHMS: tuple[str, ...] = get_args(EarlyStoppingAlgorithm)

# The samplers that can rank trials on several objectives at once (CMA-ES keeps one
# scalar fitness). The order is the CRD's CEL rule's; changing it changes the CRD.
MULTI_OBJECTIVE_ALGORITHMS: tuple[str, ...] = ("random", "grid", "tpe", "qmc", "nsga2", "gp")

# Search algorithms whose Optuna sampler imports a package that neither the default
# install (pyproject.toml's dependencies) nor the operator image
# (images/operator/Dockerfile) carries: name -> (module, what it is, the pip extra that
# installs it). `validate` and `trialforge run` refuse such an algorithm where its module
# cannot be imported, and the CRD (a CEL rule) refuses it on every cluster, since the
# operator that would run its sampler has no such module. tests/unit/test_api_vocabulary.py
# checks this against the engine's registry, pyproject.toml and the Dockerfile.
NEEDS_OPTIONAL_PACKAGE: dict[str, tuple[str, str, str]] = {
    "gp": ("torch", "PyTorch", "gp"),
}


def missing_package_reason(algorithm: str, on_cluster: bool) -> str:
    """Why ``algorithm`` cannot run here (or on a cluster), in the user's words."""
    module, what, extra = NEEDS_OPTIONAL_PACKAGE[algorithm]
    others = ", ".join(a for a in SEARCH_ALGORITHMS if a not in NEEDS_OPTIONAL_PACKAGE)
    needs = f"search algorithm {algorithm!r} needs {what} (the Python package {module!r})"
    if on_cluster:
        return f"{needs}, which the operator image does not include; use one of {others}"
    return (
        f"{needs}, which is not installed here: pip install 'trialforge[{extra}]', "
        f"or use one of {others}"
    )


# `${params.<name>}` in the pod template. Anything up to the brace counts as a name, so
# that validation can name a misspelt placeholder (`${params.learning-rate}`) instead of
# leaving it in the command; a valid spec only holds names of its parameters.
PLACEHOLDER = re.compile(r"\$\{params\.([^}]*)\}")
