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

# `${params.<name>}` in the pod template. Anything up to the brace counts as a name, so
# that validation can name a misspelt placeholder (`${params.learning-rate}`) instead of
# leaving it in the command; a valid spec only holds names of its parameters.
PLACEHOLDER = re.compile(r"\$\{params\.([^}]*)\}")
