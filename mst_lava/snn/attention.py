"""Spiking rules for the two dynamic products of the attention (Q·Kᵀ and softmax·V).

``attention="paper"`` (default): the model's own code runs on each step's spikes, as the
paper's conversion does: the A site integrates ``Q(t)·K(t)ᵀ·scale`` and the AV site
``softmax(A(t) + B + M)·V(t)``. Nothing here is involved.

``attention="compensated"``: the expectation-compensated products of the exported network
(docs/netx-mst-format.md §3, §5; ``mst_lava.export.NetSim`` and the Lava runtime), in the
same float arithmetic. With ``S_x(t)`` the cumulative *delivered* spike counts of a site up
to step t (t counted from 1, after RSM) and θ the sites' thresholds λ:

    F(t) = c · S_q(t)·S_k(t)ᵀ / t,   c = θ_Q·θ_K·scale          A current  F(t) − F(t−1)
    G(t) = softmax(θ_A·S_A(t)/t + B + M) · (θ_V·S_V(t))         AV current G(t) − G(t−1)

with F(0) = G(0) = 0, B the relative-position bias and M the shift mask, added by the
model's own :meth:`WindowAttention.attend`. Summed over steps the A (AV) neuron receives
t·f(running means), so its rate converges to the ANN's QCFS value.

Counts (so that ``snn-eval`` reports what the export runs, format §7): on the ``Q·Kᵀ`` line
(kind spike·spike) each delivered Q or K spike updates the cumulative product of its window
and head against all N tokens: (Q + K delivered spikes) × N additions; on the ``softmax·V``
line (kind analog·spike) each delivered V spike feeds the N rows of its window and each
delivered A spike the d values of its row: V spikes × N + A spikes × d. Softmax elements are
counted as in the paper mode (every step). The per-step rescaling by 1/t and the
recomputation of softmax·S_V when the running means change are not counted beyond that.

Two implementations, like the neurons: :class:`CompensatedAttention` (multi-step, time folded
time-major into the batch, state carried across time chunks) and
:class:`StepCompensatedAttention` (one step per call, the oracle), written separately.
Spike counts are recovered from the sites' outputs (``x != 0``: a delivered spike is λ, else 0;
burst neurons: round(x/u), u = λ/B the value of one spike, which then takes λ's place above), so
all cumulative counts and Q·Kᵀ products are exact integers in the float dtype.
"""
from __future__ import annotations

from contextlib import nullcontext

import torch

from mst_lava.errors import MSTError
from mst_lava.snn.counters import exact_total

MODES = ("paper", "compensated")
_EXACT_F32 = 1 << 24          # float32 integers below this are exact


def check_attention(mode: str) -> str:
    if mode not in MODES:
        raise MSTError(f"attention must be one of {', '.join(MODES)}, not {mode!r}")
    return mode


class _Base:
    """State and bookkeeping shared by both kinds: the window-attention module, the clock, the counter."""

    def __init__(self, attn, clock, counter=None):
        self.attn = attn
        self.clock = clock
        self.counter = counter
        self.block = attn.a_act.block
        self.reset()

    def reset(self) -> None:
        self.Sq = self.Sk = self.F = None        # cumulative Q, K counts; F(t) of the last step
        self.SA = self.SV = self.G = None        # cumulative A, V counts; G(t) of the last step

    @staticmethod
    def _lam(site) -> float:
        """The value of one spike of the site: λ (u = λ/B for burst neurons)."""
        return float(site.neuron.unit) if site.neuron is not None else float(site.lam.detach())

    def _burst(self) -> int:
        n = self.attn.q_act.neuron
        return n.burst if n is not None else 1

    def scale(self) -> float:
        """c = θ_Q·θ_K·scale, in this order (as the exporter computes it)."""
        return self._lam(self.attn.q_act) * self._lam(self.attn.k_act) * float(self.attn.scale)

    def _quiet(self):
        return self.counter.quiet() if self.counter is not None else nullcontext()

    def _count_qk(self, nq, nk, N: int) -> None:
        if self.counter is not None:
            self.counter.record_dynamic("Q·Kᵀ", "spike·spike", self.block, (nq + nk) * N)

    def _count_av(self, na, nv, softmax_elements: int, N: int, d: int) -> None:
        if self.counter is not None:
            self.counter.record_dynamic("softmax·V", "analog·spike", self.block, nv * N + na * d)
            self.counter.record_softmax(self.block, softmax_elements, softmax_elements // N)

    @staticmethod
    def _products(Sq: torch.Tensor, Sk: torch.Tensor, s_max: int) -> torch.Tensor:
        """S_q·S_kᵀ, exact: in float64 when float32 could not hold every partial sum (s_max bounds the counts)."""
        if Sq.dtype == torch.float32 and s_max * s_max * Sq.shape[-1] >= _EXACT_F32:
            return (Sq.double() @ Sk.double().transpose(-2, -1)).to(Sq.dtype)
        return Sq @ Sk.transpose(-2, -1)


def _counts(x: torch.Tensor, site) -> torch.Tensor:
    """Delivered spikes (the input's dtype) of a converted site's output (its neuron decodes them)."""
    return site.neuron.spike_counts(x)


class CompensatedAttention(_Base):
    """Multi-step: inputs hold ``clock.steps`` steps folded time-major into the leading dimension."""

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        steps = self.clock.steps
        if x.shape[0] % steps:
            raise MSTError(f"attention of block {self.block}: input of shape {tuple(x.shape)} does not split "
                           f"into {steps} time steps")
        return x.unflatten(0, (steps, -1))

    def _times(self, ref: torch.Tensor) -> torch.Tensor:
        t0, steps = self.clock.t0, self.clock.steps
        t = torch.arange(t0 + 1, t0 + steps + 1, dtype=ref.dtype, device=ref.device)
        return t.view((steps,) + (1,) * (ref.dim() - 1))

    @staticmethod
    def _cumulative(prev, counts: torch.Tensor) -> torch.Tensor:
        """prev + running sum over axis 0 (exact: small integers). A loop of whole-step adds: torch.cumsum
        along the leading axis is several times slower on CPU."""
        S = torch.empty_like(counts)
        if prev is None:
            S[0] = counts[0]
        else:
            torch.add(prev, counts[0], out=S[0])
        for i in range(1, counts.shape[0]):
            torch.add(S[i - 1], counts[i], out=S[i])
        return S

    @staticmethod
    def _differences(V: torch.Tensor, prev) -> torch.Tensor:
        """V(t) − V(t−1) along axis 0, V before the first step = ``prev`` (None: nothing subtracted)."""
        out = torch.empty_like(V)
        if prev is None:
            out[0] = V[0]
        else:
            torch.sub(V[0], prev, out=out[0])
        torch.sub(V[1:], V[:-1], out=out[1:])
        return out

    def _check(self, prev, S: torch.Tensor) -> None:
        if prev is not None and prev.shape != S.shape[1:]:
            raise MSTError(f"attention of block {self.block}: state has shape {tuple(prev.shape)} but the input "
                           f"has {tuple(S.shape[1:])} per step; call reset() between inputs")

    def scores(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        with self._quiet():
            cq, ck = _counts(self._split(q), self.attn.q_act), _counts(self._split(k), self.attn.k_act)
            self._check(self.Sq, cq)
            Sq, Sk = self._cumulative(self.Sq, cq), self._cumulative(self.Sk, ck)
            t = self._times(Sq)
            F = self._products(Sq, Sk, (self.clock.t0 + self.clock.steps) * self._burst()) * self.scale() / t
            cur = self._differences(F, self.F)
            self.Sq, self.Sk, self.F = Sq[-1], Sk[-1], F[-1]
            N = q.shape[-2]
            self._count_qk(exact_total(cq), exact_total(ck), N)
        return cur.flatten(0, 1)

    def attend(self, a: torch.Tensor, v: torch.Tensor, mask) -> torch.Tensor:
        attn = self.attn
        with self._quiet():
            ca, cv = _counts(self._split(a), attn.a_act), _counts(self._split(v), attn.v_act)
            self._check(self.SA, ca)
            SA, SV = self._cumulative(self.SA, ca), self._cumulative(self.SV, cv)
            t = self._times(SA)
            a_mean = SA * self._lam(attn.a_act) / t
            v_sum = SV * self._lam(attn.v_act)
            G = attn.attend(a_mean.flatten(0, 1), v_sum.flatten(0, 1), mask).unflatten(0, ca.shape[:2])
            cur = self._differences(G, self.G)
            self.SA, self.SV, self.G = SA[-1], SV[-1], G[-1]
            N, d = a.shape[-1], v.shape[-1]
            self._count_av(exact_total(ca), exact_total(cv), a.numel(), N, d)
        return cur.flatten(0, 1)


class StepCompensatedAttention(_Base):
    """One step per call (the per-step reference): step ``clock.t0``, t = t0 + 1."""

    def _t(self) -> int:
        if self.clock.steps != 1:
            raise MSTError("StepCompensatedAttention runs one step per call (clock.steps must be 1)")
        return self.clock.t0 + 1

    def scores(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        with self._quiet():
            t = self._t()
            cq, ck = _counts(q, self.attn.q_act), _counts(k, self.attn.k_act)
            self.Sq = cq if self.Sq is None else self.Sq + cq
            self.Sk = ck if self.Sk is None else self.Sk + ck
            F = self._products(self.Sq, self.Sk, t * self._burst()) * self.scale() / t
            cur = F if self.F is None else F - self.F
            self.F = F
            self._count_qk(exact_total(cq), exact_total(ck), q.shape[-2])
        return cur

    def attend(self, a: torch.Tensor, v: torch.Tensor, mask) -> torch.Tensor:
        attn = self.attn
        with self._quiet():
            t = self._t()
            ca, cv = _counts(a, attn.a_act), _counts(v, attn.v_act)
            self.SA = ca if self.SA is None else self.SA + ca
            self.SV = cv if self.SV is None else self.SV + cv
            G = attn.attend(self.SA * self._lam(attn.a_act) / t, self.SV * self._lam(attn.v_act), mask)
            cur = G if self.G is None else G - self.G
            self.G = G
            self._count_av(exact_total(ca), exact_total(cv), a.numel(), a.shape[-1], v.shape[-1])
        return cur

