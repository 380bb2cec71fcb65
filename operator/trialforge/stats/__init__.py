"""Comparisons between configurations: tests, intervals, verdicts (issue 8)."""

from trialforge.stats.compare import (
    DIRECTIONS,
    TESTS,
    VERDICTS,
    Comparison,
    ComparisonReport,
    compare_arms,
)
from trialforge.stats.multiple import holm
from trialforge.stats.omnibus import (
    OMNIBUS_METHODS,
    OmnibusResult,
    OutcomeTest,
    omnibus_test,
    pass_fail_test,
)
from trialforge.stats.power import (
    minimum_detectable_effect,
    sample_size_per_arm,
    t_test_power,
)
from trialforge.stats.two_sample import (
    MannWhitneyResult,
    WelchResult,
    bootstrap_interval,
    hedges_g,
    mann_whitney,
    non_normal_reason,
    welch,
)

__all__ = [
    "DIRECTIONS",
    "OMNIBUS_METHODS",
    "TESTS",
    "VERDICTS",
    "Comparison",
    "ComparisonReport",
    "MannWhitneyResult",
    "OmnibusResult",
    "OutcomeTest",
    "WelchResult",
    "bootstrap_interval",
    "compare_arms",
    "hedges_g",
    "holm",
    "mann_whitney",
    "minimum_detectable_effect",
    "non_normal_reason",
    "omnibus_test",
    "pass_fail_test",
    "sample_size_per_arm",
    "t_test_power",
    "welch",
]
