"""Models whose activations are QCFS sites: the Masked Spiking Transformer (and baselines)."""

from mst_lava.model.qcfs import QCFS, qcfs, iter_sites
from mst_lava.model.rsm import SITES, parse_mask_spec, set_ann_masks
from mst_lava.model.mst import MST, MSTConfig, PRESETS, build_model

__all__ = ["QCFS", "qcfs", "iter_sites", "SITES", "parse_mask_spec", "set_ann_masks",
           "MST", "MSTConfig", "PRESETS", "build_model"]

# Architectures a checkpoint may name; baselines register themselves here.
ARCHS = {"mst": lambda cfg: MST(MSTConfig.from_dict(cfg))}


def build_model_from_config(arch: str, cfg: dict):
    from mst_lava.errors import MSTError
    if not isinstance(arch, str):
        raise MSTError(f"the architecture name must be a string such as 'mst', not {type(arch).__name__}")
    if not isinstance(cfg, dict):
        raise MSTError(f"the model config must be a dict of fields, not {type(cfg).__name__}")
    if arch not in ARCHS:
        try:  # baselines live in their own module and register on import
            import mst_lava.model.baselines  # noqa: F401
        except ImportError:
            pass
    if arch not in ARCHS:
        raise MSTError(f"unknown architecture {arch!r} in checkpoint; known: {', '.join(ARCHS)}")
    return ARCHS[arch](dict(cfg))
