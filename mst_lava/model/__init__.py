"""Models whose activations are QCFS sites: the Masked Spiking Transformer (and baselines).

Importing the package is cheap and torch-free: it loads :mod:`mst_lava.model.rsm` (site names and
the RSM mask generator, numpy only; the format core and the Lava runtime use it), while the torch
models (``QCFS``, ``MST``, ``build_model``, ...) are imported on first use of their names.
"""
from __future__ import annotations

from mst_lava.lazy import lazy_attributes
from mst_lava.model.rsm import SITES, parse_mask_spec, set_ann_masks

# name → module that defines it (imported, with torch, when the name is first used)
_LAZY = {"QCFS": "mst_lava.model.qcfs", "qcfs": "mst_lava.model.qcfs", "iter_sites": "mst_lava.model.qcfs",
         "MST": "mst_lava.model.mst", "MSTConfig": "mst_lava.model.mst", "PRESETS": "mst_lava.model.mst",
         "build_model": "mst_lava.model.mst"}

__all__ = ["QCFS", "qcfs", "iter_sites", "SITES", "parse_mask_spec", "set_ann_masks",
           "MST", "MSTConfig", "PRESETS", "build_model"]


__getattr__, __dir__ = lazy_attributes(globals(), _LAZY)


def _build_mst(cfg: dict):
    from mst_lava.model.mst import MST, MSTConfig
    return MST(MSTConfig.from_dict(cfg))


def _build_baseline(arch: str):
    def build(cfg: dict):
        from mst_lava.model.baselines import baseline_from_config
        return baseline_from_config(arch, cfg)
    return build


# The architectures a checkpoint may name → a builder from its config dict (each imports its module, with torch,
# when called: the QCFS ResNet-18 / VGG-16 baselines live in model/baselines.py, which imports nothing from here).
ARCHS = {"mst": _build_mst, "resnet18": _build_baseline("resnet18"), "vgg16": _build_baseline("vgg16")}


def build_model_from_config(arch: str, cfg: dict):
    """The model a checkpoint's ``arch`` and ``config`` describe (untrained weights), or an MSTError."""
    from mst_lava.errors import MSTError
    if not isinstance(arch, str):
        raise MSTError(f"the architecture name must be a string such as 'mst', not {type(arch).__name__}")
    if not isinstance(cfg, dict):
        raise MSTError(f"the model config must be a dict of fields, not {type(cfg).__name__}")
    if arch not in ARCHS:
        raise MSTError(f"unknown architecture {arch!r} in checkpoint; known: {', '.join(ARCHS)}")
    return ARCHS[arch](dict(cfg))


def required_config_keys(arch: str) -> tuple[str, ...]:
    """The config fields a checkpoint of ``arch`` must give (those that change the computation)."""
    if arch == "mst":
        from mst_lava.model.mst import REQUIRED_IN_CHECKPOINT
        return REQUIRED_IN_CHECKPOINT
    if arch in ("resnet18", "vgg16"):
        from mst_lava.model.baselines import REQUIRED_IN_CHECKPOINT as BASELINE_REQUIRED
        return BASELINE_REQUIRED
    return ()
