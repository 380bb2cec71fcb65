"""Errors the engine raises when a spec it was given cannot be carried out."""


class EngineError(RuntimeError):
    """The engine cannot do what the spec asks (a missing optional package, bad settings)."""
