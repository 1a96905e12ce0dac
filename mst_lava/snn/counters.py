"""Spike, synaptic-operation and MAC counters for converted (and plain ANN) models.

How it works, generically (any model built from QCFS sites, the MST and the baselines):

* every neuron reports, per call, the spikes it emitted, the spikes delivered after RSM,
  and its neuron updates (neurons × steps); it *tags* its output tensor with its site;
* a ``TorchFunctionMode`` follows tags through operations that only move elements
  (view, reshape, permute, transpose, roll, slicing, cat, window partition…) and through
  average pooling (tag marked "pooled", with the pooling factor);
* forward hooks on every ``nn.Linear`` / ``nn.Conv2d`` look at the input's tag:
    - spike input → synaptic ops = Σ over delivered spikes of their nonzero outgoing
      synapses (the project's one rule, docs/netx-mst-format.md §7), i.e.
      ``sum(conv((x≠0), (W≠0)))`` with the layer's own stride, padding, dilation and groups;
      computed as ``(x≠0)·fanout`` with ``fanout`` the exact per-input fan-out map of
      :func:`mst_lava.netx_ops.conv_fanout` (``dense_fanout`` for linear layers), exact at
      borders; attributed to the producing site;
    - pooled spikes → the same with spike counts ``round(x·factor/λ)`` per pooled input;
    - analog input (image, BN of the residual stream, head) → dense MACs;
* matrix products with a spike operand are *dynamic products* (no fixed synapses):
  number of nonzero pairwise products ``Σ_k nnz(a[..., :, k])·nnz(b[..., k, :])``:
  Q·Kᵀ coincidences (spike·spike) and softmax·V accumulations (analog·spike);
* with ``attention="compensated"`` the two attention products are counted by the simulator
  itself on the same two lines, by the export's rule: Q·Kᵀ = (Q + K delivered spikes) × N,
  softmax·V = V spikes × N + A spikes × d (see :mod:`mst_lava.snn.attention`);
* softmax evaluations (elements and rows), counted apart;
* adding a spike tensor to a tensor of the same shape (the residual stream) is a
  residual accumulation: one per delivered spike, counted apart; the sum remembers, per
  element, how many events of which site it is made of (the stream is a weighted sum of
  spike trains: the embedding's or merge's, each block's Proj and MLP2);
* burst neurons (up to B spikes per step, each worth λ/B): an element carrying s spikes counts
  as s events everywhere above (s accumulations per synapse, s residual accumulations, s·s'
  pairs in a dynamic product);
* patch merging reads the residual stream. ``merge_input="graded"`` (the default, what
  ``mst-export`` writes unless told otherwise) counts its linear layer as dense MACs on a
  graded input, every step; ``"events"`` counts the exact re-expression that takes the
  stream's spike trains directly with composed weights (reduction · BN scale · θ of the
  source): each source event × the non-zero composed synapses leaving it (2C per event).
  Both are counted in every run (``totals["merge_graded_macs"]``, ``["merge_event_synops"]``),
  so a report can price the other formulation; the chosen one enters the layer table.
  A stream that passed through anything but additions of spikes (the official topology's
  BatchNorm on the stream) has no event record and stays graded;
* products of two analog tensors (the ANN's attention) are counted as MACs.

Counts accumulate on the device (no per-step synchronisation) and are read into Python
integers at checkpoints (``checkpoint(t)``), so one T=128 run yields the counts at
T = 8, 16, … too. :meth:`OpCounter.summary` returns per-inference (per sample) figures.
"""
from __future__ import annotations

import weakref
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from mst_lava import netx_ops as ops
from mst_lava.model.mst import PatchMerging
from mst_lava.model.qcfs import QCFS, iter_sites
from mst_lava.model.rsm import BLOCK_SITES

# operations that only move/copy elements, each input element to at most one output element
_STRUCTURAL = {
    "view", "reshape", "permute", "transpose", "contiguous", "flatten", "unflatten", "squeeze",
    "unsqueeze", "roll", "__getitem__", "select", "narrow", "clone", "detach", "to", "float", "double",
    "half", "bfloat16", "type", "type_as", "movedim", "moveaxis", "swapaxes", "swapdims", "t",
    "view_as", "reshape_as", "dropout", "identity", "pad",
}
_MULTI_OUT = {"unbind", "chunk", "split", "tensor_split"}
_CAT = {"cat", "concat", "concatenate", "stack"}
_POOL = {"adaptive_avg_pool2d", "avg_pool2d", "adaptive_avg_pool1d", "avg_pool1d", "mean"}
_MATMUL = {"matmul", "__matmul__", "bmm"}
_ADD = {"add", "__add__", "__radd__", "__iadd__", "add_"}
_SOFTMAX = {"softmax", "_softmax", "log_softmax"}


@dataclass(frozen=True)
class Tag:
    site: QCFS
    factor: float = 1.0        # > 1: average of `factor` spike-valued elements (pooled spikes)

    @property
    def label(self) -> str:
        return f"{self.site.site}@{self.site.block}"


def group_of(site: str, block: int) -> str:
    """Group for per-block figures: transformer-block sites and baseline 'act' sites by block index."""
    return str(block) if (site in BLOCK_SITES or site == "act") else f"{site}@{block}"


def conv_fanout(conv: nn.Conv2d, in_hw: tuple[int, int], device=None) -> torch.Tensor:
    """(C_in, H, W) float32: number of nonzero synapses from each input element to the output map.

    The one counting rule of the project (docs/netx-mst-format.md §7), computed by
    :func:`mst_lava.netx_ops.conv_fanout` for the layer's geometry: exact at borders (zero
    padding), for any stride, dilation and groups.
    """
    fan = ops.conv_fanout((conv.in_channels, *in_hw), conv.weight, conv.stride, conv.padding, conv.groups,
                          conv.dilation)
    return torch.as_tensor(fan, dtype=torch.float32, device=conv.weight.device if device is None else device)


def conv_synops_direct(conv: nn.Conv2d, x: torch.Tensor) -> int:
    """Reference count: sum(conv((x≠0), (W≠0))) with the layer's geometry (slow; for tests)."""
    w = (conv.weight.detach() != 0).to(torch.float64)
    ind = (x != 0).to(torch.float64)
    return int(F.conv2d(ind, w, None, conv.stride, conv.padding, conv.dilation, conv.groups).sum())


def linear_fanout(lin: nn.Linear) -> torch.Tensor:
    """(in_features,) float32: nonzero outgoing synapses of each input feature
    (:func:`mst_lava.netx_ops.dense_fanout`)."""
    return torch.as_tensor(ops.dense_fanout(lin.weight), dtype=torch.float32, device=lin.weight.device)


def merge_fanout(merge: PatchMerging) -> torch.Tensor:
    """(4C,) float32: non-zero synapses leaving one stream element of each gathered channel in the
    event-driven patch merging, whose composed weights are reduction · BN scale (· θ of the source,
    never 0): :func:`mst_lava.netx_ops.dense_fanout` of ``R · g``."""
    bn = merge.norm
    g = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    w = merge.reduction.weight.detach() * g
    return torch.as_tensor(ops.dense_fanout(w.cpu().numpy()), dtype=torch.float32)


class _Mode(TorchFunctionMode):
    def __init__(self, counter: "OpCounter"):
        super().__init__()
        self.counter = counter

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        c = self.counter
        if not c._quiet:
            c._quiet = True
            try:
                c._on_op(getattr(func, "__name__", ""), args, kwargs, out)
            finally:
                c._quiet = False
        return out


_MERGE_KEYS = ("merge_graded_macs", "merge_event_synops")
_EXACT = 1 << 23          # float32 sums of 0/1 (or small integers) below this many terms are exact


def _indicator(x: torch.Tensor) -> torch.Tensor:
    """float32 0/1 of x ≠ 0, contiguous, in one pass."""
    return torch.ne(x, 0, out=torch.empty(x.shape, dtype=torch.float32, device=x.device))


def _column_sum(m: torch.Tensor) -> torch.Tensor:
    """Sum over the first dimension of a float32 tensor of small integers, exactly, as float64."""
    if m.shape[0] <= _EXACT:
        return m.sum(0).to(torch.float64)
    return sum(m[i:i + _EXACT].sum(0).to(torch.float64) for i in range(0, m.shape[0], _EXACT))


def exact_total(m: torch.Tensor) -> torch.Tensor:
    """Exact float64 total of a float tensor of 0/1 values (row sums in float32, then float64)."""
    if m.numel() == 0:
        return torch.zeros((), dtype=torch.float64, device=m.device)
    last = m.shape[-1] if m.dim() else 1
    if last > _EXACT or last == 0:
        return m.sum(dtype=torch.float64)
    return m.reshape(-1, last).sum(1).sum(dtype=torch.float64)


def _nz_pairs(ca: torch.Tensor, cb: torch.Tensor) -> torch.Tensor:
    """Σ over batch and k of (events in column k of a) × (events in row k of b) for a @ b (exact)."""
    return (ca.sum(-2).to(torch.float64) * cb.sum(-1).to(torch.float64)).sum()


class OpCounter:
    """Counts spikes, neuron updates, synaptic ops, MACs and the other operations of a model run.

    Use through the simulators (``simulate(..., counter=c)``) or directly::

        c = OpCounter(model); c.begin_input(B)
        with c.active(): model(x)
        c.checkpoint(1); c.summary(1)
    """

    def __init__(self, model: nn.Module, merge_input: str = "graded"):
        if merge_input not in ops.MERGE_INPUTS:
            raise ValueError(f"merge_input must be one of {ops.MERGE_INPUTS}, not {merge_input!r}")
        self.model = model
        self.merge_input = merge_input
        self._stream: dict[int, tuple] = {}
        self._merge_events: dict = {}
        self._no_merge_alternative = False
        self.names = {m: n for n, m in model.named_modules()}
        self._tags: dict[int, tuple] = {}
        self._const: dict[int, weakref.ref] = {}
        self._quiet = False
        self._hooks = []
        self._fanout: dict = {}
        self.current_block = -1
        self.site_info: dict[str, dict] = {}
        self.totals: dict[int, dict] = {}
        self.samples: dict[int, int] = defaultdict(int)
        self._cur: dict = {}
        self._static: dict = defaultdict(int)
        self._B = 0

    # ---- lifecycle ---------------------------------------------------------------------
    def begin_input(self, batch: int) -> None:
        """A new input of ``batch`` samples: the running (per-input) counts start from zero."""
        self._cur = {}
        self._static = defaultdict(int)
        self._B = int(batch)
        self._tags.clear()
        self._const.clear()
        self._stream.clear()

    @contextmanager
    def active(self):
        """Hooks on every Linear/Conv2d and the tag-following mode, for the duration of a run."""
        for m in self.model.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                self._hooks.append(m.register_forward_hook(self._layer_hook))
            if isinstance(m, PatchMerging):
                self._hooks.append(m.register_forward_pre_hook(self._merge_hook))
        mode = _Mode(self)
        try:
            with mode:
                yield self
        finally:
            for h in self._hooks:
                h.remove()
            self._hooks.clear()
            self._tags.clear()
            self._stream.clear()

    @contextmanager
    def quiet(self):
        prev, self._quiet = self._quiet, True
        try:
            yield
        finally:
            self._quiet = prev

    # ---- tags --------------------------------------------------------------------------
    def tag(self, t: torch.Tensor, site: QCFS, factor: float = 1.0) -> None:
        self._set_tag(t, Tag(site, factor))

    def _set_tag(self, t, tag: Tag) -> None:
        if len(self._tags) > 4096:
            self._tags = {k: v for k, v in self._tags.items() if v[0]() is not None}
        self._tags[id(t)] = (weakref.ref(t), tag)

    def mark_constant(self, t: torch.Tensor) -> None:
        """Mark the model input: layers reading it (through element moves) see the same values every step."""
        self._const[id(t)] = weakref.ref(t)

    def _is_constant(self, t) -> bool:
        ref = self._const.get(id(t)) if isinstance(t, torch.Tensor) else None
        return ref is not None and ref() is t

    def _is_softmax_out(self, t) -> bool:
        ref = getattr(self, "_softmax_out", None)
        return ref is not None and ref() is t

    def tag_of(self, t) -> Tag | None:
        if not isinstance(t, torch.Tensor):
            return None
        e = self._tags.get(id(t))
        if e is None or e[0]() is not t:
            return None
        return e[1]

    # ---- accumulation --------------------------------------------------------------------
    def _add(self, key, value) -> None:
        if isinstance(value, torch.Tensor):
            value = value.detach()
        cur = self._cur.get(key)
        self._cur[key] = value if cur is None else cur + value

    def record_site(self, site: QCFS, neuron, emitted, delivered, n: int, steps: int, batch: int) -> None:
        """Called by a neuron after each call: spikes emitted/delivered, n neurons per sample."""
        name = self.names.get(site, f"{site.site}@{site.block}")
        if name not in self.site_info:
            self.site_info[name] = {"site": site.site, "block": site.block, "neurons": int(n),
                                    "mask_ratio": float(getattr(neuron, "ratio", 0.0)), "lam": float(neuron.lam)}
        self.site_info[name]["mask_ratio"] = float(getattr(neuron, "ratio", 0.0))
        self.current_block = site.block
        self._add(("emitted", name), emitted)
        self._add(("delivered", name), delivered)
        self._add(("updates", name), int(n) * int(steps) * int(batch))

    def record_dynamic(self, op: str, kind: str, block: int, count) -> None:
        """Dynamic-product work counted by the caller (compensated attention, :mod:`mst_lava.snn.attention`)."""
        self._add(("dynamic", op, kind, int(block)), count)

    def record_softmax(self, block: int, elements: int, rows: int) -> None:
        """Softmax evaluations counted by the caller (the tag-following mode is quiet there)."""
        self._static[("softmax_elements", int(block))] += int(elements)
        self._static[("softmax_rows", int(block))] += int(rows)

    @staticmethod
    def _events(x: torch.Tensor, tag: Tag | None) -> torch.Tensor:
        """Per element, as float32: number of spikes it stands for (0/1; counts for pooled spikes and for
        burst neurons, whose spike is worth u = λ/B)."""
        if tag is not None:
            nrn = tag.site.neuron
            if tag.factor != 1.0:
                unit = float(nrn.unit) if nrn is not None else float(tag.site.lam)
                return torch.round(x.to(torch.float32) * (tag.factor / unit))
            if nrn is not None:
                return nrn.spike_counts(x, torch.float32)
        return _indicator(x)

    @staticmethod
    def _lead_sum(ev: torch.Tensor, keep_dims: int) -> torch.Tensor:
        """Events summed over all leading dimensions, keeping the last ``keep_dims`` (float64, exact)."""
        lead = ev.dim() - keep_dims
        if lead <= 0:
            return ev.to(torch.float64)
        return _column_sum(ev.reshape(-1, *ev.shape[lead:]))

    def _layer_hook(self, module, inputs, output) -> None:
        prev, self._quiet = self._quiet, True
        try:
            self._count_layer(module, inputs[0], output)
        finally:
            self._quiet = prev

    def _count_layer(self, module, x: torch.Tensor, out: torch.Tensor) -> None:
        name = self.names.get(module, type(module).__name__)
        tag = self.tag_of(x)
        kind = "analog" if tag is None else ("spikes" if tag.factor == 1.0 else "pooled spikes")
        if tag is None and self._is_constant(x):
            kind = "analog, constant input"
        typ = type(module).__name__
        if isinstance(module, nn.Conv2d):
            per_out = (module.in_channels // module.groups) * module.kernel_size[0] * module.kernel_size[1]
        else:
            per_out = module.in_features
        if tag is None:
            macs = int(out.numel()) * per_out
            events = self._merge_events.pop(module, None)
            if events is not None:              # patch merging on the residual stream (both formulations)
                self._add(("merge_graded_macs", name), macs)
                for src, syn in events.items():
                    self._add(("merge_event_synops", name, src), syn)
                if self.merge_input == "events":
                    for src, syn in events.items():
                        self._add(("layer_synops", name, typ, "stream spikes (event-driven)", "stream"), syn)
                        self._add(("site_synops", src), syn)
                    return
            self._add(("layer_macs", name, typ, kind, ""), macs)
            return
        if isinstance(module, nn.Conv2d):
            if isinstance(module.padding, str) or module.padding_mode != "zeros":
                w = (module.weight.detach() != 0).to(torch.float32)

                def reach(ev):
                    return module._conv_forward(ev.to(torch.float32), w, None).sum(dtype=torch.float64)
            else:
                key = (module, tuple(x.shape[-2:]), str(x.device))
                fo = self._fanout.get(key)
                if fo is None:
                    fo = self._fanout[key] = conv_fanout(module, tuple(x.shape[-2:]), x.device).to(torch.float64)

                def reach(ev):
                    return (self._lead_sum(ev, 3) * fo).sum()
        else:
            key = (module, str(x.device))
            fo = self._fanout.get(key)
            if fo is None:
                fo = self._fanout[key] = linear_fanout(module).to(x.device, torch.float64)

            def reach(ev):
                return (self._lead_sum(ev, 1) * fo).sum()
        syn = reach(self._events(x, tag))
        nrn = tag.site.neuron
        if nrn is not None and nrn.burst > 1 and tag.factor == 1.0:
            # graded events (a burst of any size = one event) reaching the same synapses: the rule "one
            # MAC per graded event" that energy.theoretical_energy prices next to the per-spike rule
            self._add(("burst_synops", name), syn)
            self._add(("burst_event_synops", name), reach(_indicator(x)))
        self._add(("layer_synops", name, typ, kind, tag.label), syn)
        self._add(("site_synops", self.names.get(tag.site, tag.label)), syn)

    def _on_op(self, name: str, args, kwargs, out) -> None:
        if not name or not args:
            return
        a0 = args[0]
        if name in _STRUCTURAL and self._is_constant(a0) and isinstance(out, torch.Tensor):
            self._const[id(out)] = weakref.ref(out)
        if name in _STRUCTURAL:
            tag = self.tag_of(a0)
            if tag is not None and isinstance(out, torch.Tensor):
                if name == "__getitem__" and _advanced_index(args[1] if len(args) > 1 else None):
                    return
                if name == "pad" and (kwargs.get("value", args[3] if len(args) > 3 else 0) or 0) != 0:
                    return
                if name == "pad" and kwargs.get("mode", args[2] if len(args) > 2 else "constant") != "constant":
                    return
                self._set_tag(out, tag)
            return
        if name in _MULTI_OUT:
            tag = self.tag_of(a0)
            if tag is not None and isinstance(out, (tuple, list)):
                for o in out:
                    self._set_tag(o, tag)
            return
        if name in _CAT:
            if isinstance(a0, (list, tuple)) and a0:
                tags = [self.tag_of(t) for t in a0]
                if all(t is not None for t in tags) and len({(t.site, t.factor) for t in tags}) == 1:
                    self._set_tag(out, tags[0])
            return
        if name in _POOL:
            tag = self.tag_of(a0)
            if tag is not None and isinstance(out, torch.Tensor) and out.numel():
                self._set_tag(out, Tag(tag.site, tag.factor * a0.numel() / out.numel()))
            return
        if name in _MATMUL:
            if len(args) < 2 or not all(isinstance(t, torch.Tensor) and t.dim() >= 2 for t in args[:2]):
                return
            a, b = args[0], args[1]
            ta, tb = self.tag_of(a), self.tag_of(b)
            if ta is None and tb is None:
                self._static[("matmul_macs", self.current_block)] += int(out.numel()) * int(a.shape[-1])
                return
            n = _nz_pairs(self._events(a, ta), self._events(b, tb))
            if ta is not None and tb is not None:
                label, kind, blk = f"{ta.site.site}·{tb.site.site}ᵀ", "spike·spike", ta.site.block
            else:
                t = ta or tb
                other = a if tb is not None else b
                src = "softmax" if self._is_softmax_out(other) else "analog"
                label = f"{src}·{t.site.site}" if tb is not None else f"{t.site.site}·{src}"
                kind, blk = "analog·spike", t.site.block
            self._add(("dynamic", label, kind, blk), n)
            return
        if name in _SOFTMAX:
            if isinstance(out, torch.Tensor) and out.dim():
                dim = kwargs.get("dim", args[1] if len(args) > 1 else -1)
                self._static[("softmax_elements", self.current_block)] += int(out.numel())
                self._static[("softmax_rows", self.current_block)] += int(out.numel() // out.shape[dim])
                self._softmax_out = weakref.ref(out)
            return
        if name in _ADD:
            if len(args) >= 2 and isinstance(args[1], torch.Tensor) and isinstance(a0, torch.Tensor) \
                    and a0.shape == args[1].shape:
                parts = []
                for t in (a0, args[1]):
                    tag = self.tag_of(t)
                    if tag is not None and tag.factor == 1.0:
                        src = self.names.get(tag.site, tag.label)
                        col = self._event_columns(t, tag)
                        self._add(("residual", src), col.sum())
                        parts.append({src: col})
                    else:
                        parts.append(self._stream_record(t))
                if name.endswith("_"):
                    self._tags.pop(id(a0), None)
                if isinstance(out, torch.Tensor) and out.shape == a0.shape and None not in parts:
                    rec = dict(parts[0])
                    for src, col in parts[1].items():
                        rec[src] = rec[src] + col if src in rec else col
                    self._set_stream(out, rec)
                return
            if name.endswith("_"):
                self._tags.pop(id(a0), None)
            return
        if name.endswith("_") and not name.startswith("__"):
            self._tags.pop(id(a0), None)      # in-place change of a tagged tensor: not spikes any more

    # ---- the residual stream as spike trains (event-driven patch merging) ---------------------
    @classmethod
    def _event_columns(cls, t: torch.Tensor, tag: Tag) -> torch.Tensor:
        """Events per element of one sample's layout, summed over the leading (time·batch) dimension
        (float64, exact): shape ``t.shape[1:]``."""
        ind = cls._events(t, tag)
        return _column_sum(ind.reshape(ind.shape[0], -1)).reshape(t.shape[1:])

    def _set_stream(self, t: torch.Tensor, record: dict) -> None:
        self._stream = {k: v for k, v in self._stream.items() if v[0]() is not None}
        self._stream[id(t)] = (weakref.ref(t), record)

    def _stream_record(self, t) -> dict | None:
        e = self._stream.get(id(t)) if isinstance(t, torch.Tensor) else None
        return None if e is None or e[0]() is not t else e[1]

    def _merge_hook(self, module, inputs) -> None:
        """Before a patch merging runs: the synaptic ops of its event-driven form, per source site."""
        record = self._stream_record(inputs[0])
        if record is None:
            return
        prev, self._quiet = self._quiet, True
        try:
            key = (module, "merge", str(inputs[0].device))
            fan = self._fanout.get(key)
            if fan is None:
                fan = self._fanout[key] = merge_fanout(module).to(inputs[0].device, torch.float64)
            self._merge_events[module.reduction] = {
                src: (module.gather(col).reshape(-1, fan.numel()).sum(0) * fan).sum() for src, col in record.items()}
        finally:
            self._quiet = prev

    # ---- reading -------------------------------------------------------------------------
    def checkpoint(self, t: int) -> None:
        """Add the running counts of the current input (its first t steps) to the totals at t."""
        tot = self.totals.setdefault(int(t), defaultdict(int))
        for k, v in self._cur.items():
            if self._no_merge_alternative and k[0] in _MERGE_KEYS:
                continue
            tot[k] += int(round(float(v))) if isinstance(v, torch.Tensor) else int(v)
        for k, v in self._static.items():
            tot[k] += int(v)
        self.samples[int(t)] += self._B

    def checkpoints(self) -> list[int]:
        return sorted(self.totals)

    def state(self) -> dict:
        """The integer totals so far, as JSON-able data (:meth:`load_state` restores them)."""
        return {"totals": [[t, [[list(k), v] for k, v in tot.items()]] for t, tot in self.totals.items()],
                "samples": [[t, n] for t, n in self.samples.items()], "site_info": self.site_info,
                "merge_alternative": not self._no_merge_alternative}

    def load_state(self, state: dict) -> None:
        """Continue from :meth:`state` (a resumed evaluation): totals add to what was counted before."""
        try:
            self.totals = {int(t): defaultdict(int, {tuple(k): int(v) for k, v in items})
                           for t, items in state["totals"]}
            self.samples = defaultdict(int, {int(t): int(n) for t, n in state["samples"]})
            self.site_info = {str(k): dict(v) for k, v in state["site_info"].items()}
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ValueError(f"not an OpCounter state ({e})") from None
        # a state saved before both merge formulations were counted: the alternative stays unknown
        self._no_merge_alternative = not state.get("merge_alternative", False)

    def raw(self, t: int | None = None) -> dict:
        """Integer totals over all samples at checkpoint t (default: the largest)."""
        if t is None:
            t = max(self.totals)
        return dict(self.totals[int(t)])

    def summary(self, t: int | None = None) -> dict:
        """Per-inference figures (totals divided by the number of samples) at checkpoint t."""
        if not self.totals:
            raise RuntimeError("no counts yet: run a simulation with this counter first")
        if t is None:
            t = max(self.totals)
        return {**summarize(self.raw(t), self.samples[int(t)], int(t), self.site_info),
                "merge_input": self.merge_input}


def _advanced_index(idx) -> bool:
    """True when an index may copy elements more than once (tensors, lists, booleans)."""
    items = idx if isinstance(idx, tuple) else (idx,)
    return not all(i is None or i is Ellipsis or (isinstance(i, (int, slice)) and not isinstance(i, bool))
                   for i in items)


def summarize(raw: dict, samples: int, T: int, site_info: dict) -> dict:
    """Turn raw totals into the per-inference report structure (see module docstring)."""
    S = max(int(samples), 1)
    per = lambda v: v / S  # noqa: E731
    sites = []
    for name, info in site_info.items():
        em, de = raw.get(("emitted", name), 0), raw.get(("delivered", name), 0)
        up = raw.get(("updates", name), 0)
        sites.append({"name": name, "site": info["site"], "block": info["block"],
                      "group": group_of(info["site"], info["block"]), "mask_ratio": info["mask_ratio"],
                      "lam": info["lam"], "neurons": info["neurons"], "neuron_updates": per(up),
                      "spikes_emitted": per(em), "spikes_delivered": per(de),
                      "firing_rate": em / up if up else 0.0, "delivered_rate": de / up if up else 0.0,
                      "synops_out": per(raw.get(("site_synops", name), 0)),
                      "residual_accumulations": per(raw.get(("residual", name), 0))})
    layers: dict[str, dict] = {}
    for k, v in raw.items():
        if k[0] in ("layer_synops", "layer_macs"):
            _, name, typ, kind, src = k
            e = layers.setdefault((name, kind), {"name": name, "type": typ, "input": kind, "source": src or None,
                                                 "synops": 0.0, "macs": 0.0})
            e["synops" if k[0] == "layer_synops" else "macs"] += per(v)
    dynamic = [{"op": k[1], "kind": k[2], "block": k[3], "count": per(v)}
               for k, v in raw.items() if k[0] == "dynamic"]
    blocks = sorted({k[1] for k in raw if k[0] in ("softmax_elements", "matmul_macs")})
    softmax = [{"block": b, "elements": per(raw.get(("softmax_elements", b), 0)),
                "rows": per(raw.get(("softmax_rows", b), 0))} for b in blocks
               if raw.get(("softmax_elements", b))]
    matmul = [{"block": b, "macs": per(raw.get(("matmul_macs", b), 0))} for b in blocks
              if raw.get(("matmul_macs", b))]
    lay = list(layers.values())
    totals = {
        "spikes_emitted": sum(s["spikes_emitted"] for s in sites),
        "spikes_delivered": sum(s["spikes_delivered"] for s in sites),
        "neuron_updates": sum(s["neuron_updates"] for s in sites),
        "neurons": sum(s["neurons"] for s in sites),
        "synops": sum(e["synops"] for e in lay),
        "analog_macs": sum(e["macs"] for e in lay),
        "constant_input_macs": sum(e["macs"] for e in lay if e["input"] == "analog, constant input"),
        "qk_products": sum(d["count"] for d in dynamic if d["kind"] == "spike·spike"),
        "softmax_v_accumulations": sum(d["count"] for d in dynamic if d["kind"] == "analog·spike"),
        "softmax_elements": sum(s["elements"] for s in softmax),
        "residual_accumulations": sum(s["residual_accumulations"] for s in sites),
        "analog_matmul_macs": sum(m["macs"] for m in matmul),
        "merge_graded_macs": per(sum(v for k, v in raw.items() if k[0] == "merge_graded_macs")),
        "merge_event_synops": per(sum(v for k, v in raw.items() if k[0] == "merge_event_synops")),
        "burst_synops": per(sum(v for k, v in raw.items() if k[0] == "burst_synops")),
        "burst_event_synops": per(sum(v for k, v in raw.items() if k[0] == "burst_event_synops")),
    }
    totals["firing_rate"] = totals["spikes_emitted"] / totals["neuron_updates"] if totals["neuron_updates"] else 0.0
    groups: dict[str, dict] = {}
    for s in sites:
        g = groups.setdefault(s["group"], {"group": s["group"], "spikes_emitted": 0.0, "spikes_delivered": 0.0,
                                           "neuron_updates": 0.0, "synops": 0.0})
        g["spikes_emitted"] += s["spikes_emitted"]
        g["spikes_delivered"] += s["spikes_delivered"]
        g["neuron_updates"] += s["neuron_updates"]
        g["synops"] += s["synops_out"]
    return {"T": T, "samples": int(samples), "sites": sites, "layers": lay, "dynamic": dynamic,
            "softmax": softmax, "analog_matmul": matmul, "per_block": list(groups.values()), "totals": totals}


@torch.no_grad()
def ann_counts(model: nn.Module, x: torch.Tensor) -> dict:
    """Per-inference MACs (layers and attention matmuls) and softmax evaluations of the ANN on ``x``."""
    for _, m in iter_sites(model):
        if m.neuron is not None:
            raise RuntimeError("ann_counts needs the ANN: restore() the model first")
    was = model.training
    model.eval()
    c = OpCounter(model)
    c.begin_input(x.shape[0])
    try:
        with c.active():
            model(x)
    finally:
        model.train(was)
    c.checkpoint(1)
    s = c.summary(1)
    t = s["totals"]
    return {"samples": s["samples"], "macs": t["analog_macs"] + t["analog_matmul_macs"], "layer_macs": t["analog_macs"],
            "matmul_macs": t["analog_matmul_macs"], "softmax_elements": t["softmax_elements"],
            "layers": [{"name": e["name"], "type": e["type"], "macs": e["macs"]} for e in s["layers"]]}
