"""ANN→SNN conversion, the multi-step spiking simulator with RSM, and op counters.

Public API::

    from mst_lava.snn import simulate, simulate_reference, spiking, convert, restore, OpCounter, ann_counts

    res = simulate(model, x, T=64, mask={"Q": .75}, seed=0, checkpoints=[8, 16, 32])
    res = simulate(model, x, T=64, attention="compensated")   # the exported network's attention products
    res.logits, res.logits_at[16], res.predictions()

    c = OpCounter(model)
    simulate(model, x, 64, counter=c, checkpoints=[8, 16, 32])
    c.summary(64)          # per-inference spikes, synops, MACs, dynamic products, softmax, residual adds
    ann_counts(model, x)   # the ANN's MACs on the same input
"""
from mst_lava.snn.attention import CompensatedAttention, StepCompensatedAttention
from mst_lava.snn.counters import OpCounter, ann_counts, conv_fanout, conv_synops_direct, summarize
from mst_lava.snn.neuron import Clock, IFNeuron, StepIFNeuron, if_spike_train, if_step, keep_block
from mst_lava.snn.simulate import (
                                   SimResult,
                                   Spiking,
                                   auto_t_chunk,
                                   convert,
                                   restore,
                                   simulate,
                                   simulate_reference,
                                   spiking,
)

__all__ = ["CompensatedAttention", "StepCompensatedAttention", "Clock", "IFNeuron", "StepIFNeuron",
           "if_spike_train", "if_step", "keep_block", "SimResult", "Spiking", "auto_t_chunk", "convert", "restore",
           "simulate", "simulate_reference", "spiking", "OpCounter",
           "ann_counts", "conv_fanout", "conv_synops_direct", "summarize"]
