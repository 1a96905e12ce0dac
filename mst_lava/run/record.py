"""What a backend of ``mst run`` hands to the report: the same fields for Lava and torch."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class RunRecord:
    result: object          # runner.LavaResult or torch_backend.TorchRunResult (pred, scores, logits, counts, ...)
    labels: np.ndarray      # (n,)
    graph: object           # the network read from the file (export.graph.NetxGraph)
    precision: str          # float or fixed: what ran
    dataset: str
    seed: int               # RSM seed
    setup: dict             # backend-specific fields of report.json (granularity, pipeline / device, batch size)
    throughput: dict
    throughput_line: str    # one printed line
    machine: dict = field(default_factory=dict)   # report.json's "machine" (platform, and torch's where it ran)
    # the first static images of the run (at most ZERO_SKIP_SAMPLES; None for event frames): the zero-skipping
    # ANN baseline is counted on them (mst_lava.ann_ops)
    images: np.ndarray | None = None


ZERO_SKIP_SAMPLES = 256
