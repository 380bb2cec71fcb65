"""trialforge/__init__.py: the package's public API for trainers."""

from __future__ import annotations


def test_the_public_report_function_survives_every_internal_import() -> None:
    """`trialforge.report()` is the trainer's API; no subpackage may shadow it."""
    import importlib
    import pkgutil

    import trialforge

    for module in pkgutil.walk_packages(trialforge.__path__, "trialforge."):
        importlib.import_module(module.name)
    assert callable(trialforge.report) and trialforge.report.__module__ == "trialforge.client"
    assert callable(trialforge.seed) and callable(trialforge.parameters)
