"""The neuron types an mst_lava.netx file may hold: one registry, one entry per type.

Every part of the toolkit that depends on "the neuron" asks this registry (:data:`NEURON_TYPES`):
the exporter (the ``neuron/`` group it writes), the reader (the group's validation), ``NetSim``
and the Lava kernels (the step arithmetic, through :func:`mst_lava.netx_ops.if_scan` /
``if_step`` / ``if_step_fixed`` with the type's ``burst``), the ANN form (``NetSim.run_ann``),
the counting rule (payload and messages) and ``mst inspect`` (payload bits, ``loihi_mapping``).
Adding a neuron type means one new entry here plus its tests (tests/test_neurons.py runs the
contract over every entry).

Two types today (docs/netx-mst-format.md §2, "Neuron group"):

* ``IF`` — binary integrate-and-fire: threshold θ (the site's λ), membrane from θ/2, spike
  ``s = v >= θ``, reset by subtraction. A message carries no payload (a binary spike).
* ``IF_BURST`` — graded (burst) integrate-and-fire: up to B spikes per step, each worth
  ``u = λ/B`` (the file's ``threshold`` is u), membrane from u/2, payload ``s = clip(floor(v/u),
  0, B)`` sent as one graded message, ``v -= s·u``. With B = the QCFS levels L and T = 1 it is
  the ANN's QCFS activation. Loihi 2 sends such a payload natively (Lava: ``num_message_bits``).

numpy only (the format core): no torch, no Lava.
"""
from __future__ import annotations

import math

import numpy as np

from mst_lava import netx_ops as ops

# Lava's graded spikes and currents are 24-bit (lava.proc.dense num_message_bits, s_out precision=24):
MAX_PAYLOAD_BITS = 24
DEFAULT_MAX_PAYLOAD_BITS = 8      # the exporter's default ceiling; Intel's Loihi 2 brief: 8 bits is typical


def payload_bits(burst: int) -> int:
    """Bits of an unsigned payload 0..B: ``ceil(log2(B + 1))`` (0 for a binary spike, B = 1)."""
    return 0 if int(burst) <= 1 else int(math.ceil(math.log2(int(burst) + 1)))


class NeuronType:
    """One neuron type of the format: its ``neuron/`` fields, validation, arithmetic parameters and counting."""

    name = ""
    # the CUBA-style keys lava-dl netx also reads: IF is a neuron whose current decays fully each step
    # (iDecay 4096), whose voltage never decays (vDecay 0), with no refractory period (refDelay 0)
    FIXED_KEYS = {"iDecay": 4096, "vDecay": 0, "refDelay": 0}
    SEMANTICS = {"reset": "subtract", "compare": "ge", "v_init": "half_threshold"}

    def fields(self, threshold: float, burst: int = 1) -> dict:
        """The float part of the ``neuron/`` group the exporter writes (fixed files add vThMant, vInit)."""
        return {"type": self.name, **self.SEMANTICS, "threshold": float(threshold), **self.FIXED_KEYS}

    def burst(self, neuron: dict) -> int:
        """The largest payload of one message (1 for a binary spike)."""
        return 1

    def loihi_mapping(self, graded_spikes: bool) -> str | None:
        """How the neurons map to a neurocore of a chip with (Loihi 2) or without (Loihi) graded spikes, as
        ``mst inspect`` words it; None where they cannot run on neurocores."""
        return "IF neurons"

    def problems(self, neuron: dict) -> list[str]:
        """What in a (structurally read) ``neuron/`` group the runtime would not honour: [] when valid."""
        out = []
        for k, v in self.SEMANTICS.items():
            if k in neuron and str(neuron[k]) != v:
                out.append(f"{k} is {neuron[k]!r}; the runtime implements {k}={v!r} only")
        for k, v in self.FIXED_KEYS.items():
            if k in neuron:
                try:
                    ok = float(np.asarray(neuron[k]).reshape(-1)[0]) == v
                except (TypeError, ValueError, IndexError):
                    ok = False
                if not ok:
                    out.append(f"{k} is {neuron[k]!r}; the runtime implements an IF neuron with {k} = {v} only "
                               "(no current/voltage decay, no refractory period)")
        return out

    def ann_value(self, cur, theta: float, levels: int, burst: int):
        """The ANN form of the neuron (QCFS with L levels) on its input ``cur``, in the units its consumers'
        weights expect (one payload unit): binary ``clip(floor(cur·L/θ + ½), 0, L) / L``; burst (λ = B·u)
        ``clip(floor(cur·L/λ + ½), 0, L) · B / L``. Works on numpy arrays and torch tensors."""
        lam = float(theta) * int(burst)
        q = cur * (levels / lam) + 0.5
        q = ops.clip(q.floor() if ops.is_torch(q) else np.floor(q), 0, levels)
        return q * (int(burst) / levels)


class BinaryIF(NeuronType):
    name = "IF"


class BurstIF(NeuronType):
    name = "IF_BURST"

    def fields(self, threshold: float, burst: int = 1) -> dict:
        """IF's fields with ``burst`` B, ``messageBits`` ceil(log2(B + 1)) and ``gradedSpike`` 1; threshold = u."""
        B = int(burst)
        return {**super().fields(threshold), "burst": np.int64(B), "messageBits": np.int64(payload_bits(B)),
                "gradedSpike": np.int64(1)}

    def burst(self, neuron: dict) -> int:
        """The group's ``burst`` B."""
        return int(np.asarray(neuron["burst"]).reshape(-1)[0])

    def loihi_mapping(self, graded_spikes: bool) -> str | None:
        """Graded payloads need Loihi 2's graded spikes: None (not on neurocores) on Loihi."""
        return "IF neurons sending graded payloads" if graded_spikes else None

    def problems(self, neuron: dict) -> list[str]:
        """IF's checks plus ``burst``/``messageBits``/``gradedSpike``: integers, B within the declared bits."""
        out = super().problems(neuron)
        for k in ("burst", "messageBits"):
            if k not in neuron:
                return out + [f"has no '{k}' (a graded IF_BURST neuron needs burst B and messageBits)"]
        vals = {}
        for k in ("burst", "messageBits"):
            a = np.asarray(neuron[k])
            if a.size != 1 or a.dtype.kind not in "iu":
                return out + [f"{k} is {neuron[k]!r}; it must be one integer"]
            vals[k] = int(a.reshape(-1)[0])
        B, bits = vals["burst"], vals["messageBits"]
        if not 1 <= bits <= MAX_PAYLOAD_BITS:
            out.append(f"messageBits is {bits}; Lava's graded payloads have 1 to {MAX_PAYLOAD_BITS} bits")
        elif not 2 <= B <= (1 << bits) - 1:
            out.append(f"burst is {B}; with messageBits {bits} a payload holds 2 to {(1 << bits) - 1} spikes "
                       "(burst 1 is the binary 'IF' neuron)")
        if "gradedSpike" in neuron and int(np.asarray(neuron["gradedSpike"]).reshape(-1)[0]) != 1:
            out.append(f"gradedSpike is {neuron['gradedSpike']!r}; an IF_BURST neuron sends graded spikes (1)")
        return out


NEURON_TYPES: dict[str, NeuronType] = {t.name: t for t in (BinaryIF(), BurstIF())}


def for_burst(burst: int) -> NeuronType:
    """The type the exporter writes for ``burst`` spikes per step (1: binary IF)."""
    return NEURON_TYPES["IF"] if int(burst) == 1 else NEURON_TYPES["IF_BURST"]


def of(neuron: dict | None) -> NeuronType | None:
    """The registry entry of a ``neuron/`` group (None: no neuron; KeyError: an unknown type)."""
    if neuron is None:
        return None
    return NEURON_TYPES[str(neuron.get("type", "IF"))]


def burst_of(neuron: dict | None) -> int:
    """The largest payload a layer's neurons send per step: 1 (binary, or no neuron), B for IF_BURST."""
    t = of(neuron)
    return 1 if t is None else t.burst(neuron)


def check_burst_option(burst, levels: int | None = None, max_bits: int = DEFAULT_MAX_PAYLOAD_BITS) -> int:
    """Validate an exporter's ``--burst B``: an integer ≥ 1 whose payload fits ``max_bits`` (≤ 24). Raises
    ValueError with the message to show."""
    if isinstance(burst, bool) or not isinstance(burst, (int, np.integer)) or int(burst) < 1:
        raise ValueError(f"--burst must be an integer >= 1 (spikes per neuron and step), not {burst!r}")
    if not 1 <= int(max_bits) <= MAX_PAYLOAD_BITS:
        raise ValueError(f"--payload-bits must be in [1, {MAX_PAYLOAD_BITS}] (Lava's graded payloads), "
                         f"not {max_bits}")
    bits = payload_bits(int(burst))
    if bits > int(max_bits):
        hint = f" (the checkpoint's QCFS levels L = {levels} is the lossless choice)" if levels else ""
        raise ValueError(f"--burst {burst} needs {bits}-bit payloads, more than --payload-bits {max_bits}; "
                         f"lower --burst{hint} or raise --payload-bits (at most {MAX_PAYLOAD_BITS})")
    return int(burst)
