"""Lazy package attributes (PEP 562): names whose modules (and torch) load on first use."""
from __future__ import annotations

import importlib


def lazy_attributes(namespace: dict, table: dict[str, str]):
    """``(__getattr__, __dir__)`` for a package whose ``namespace`` (its globals) gets each name of
    ``table`` (name → defining module) imported, and cached, when the name is first used."""
    package = namespace["__name__"]

    def __getattr__(name: str):
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__():
        return sorted(set(namespace) | set(table))

    return __getattr__, __dir__
