"""Run a built :class:`~mst_lava.lava.builder.LavaNetwork` and read everything back from Lava.

    from mst_lava.lava import runner
    res = runner.run("export/digits.net", images, T=32, precision="fixed")
    res.pred, res.logits, res.counts["block0.attn.q"]["spikes"], res.steps_per_s

All numbers in the result come from the Lava run: class scores from the Readout
process's ``scores`` Var, spikes / delivered / dropped / synaptic ops from every
process's ``counts`` Var. ``counts`` has the structure of the torch executor's
(``mst_lava.export.netsim.SimResult.counts``: layer name → spikes, delivered, synops,
neuron_updates, ... summed over the samples), so the two compare key by key.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

import mst_lava.lava  # noqa: F401  (Python 3.11 shim before any lava import)
from mst_lava.backends import LAVA_BACKENDS as BACKENDS
from mst_lava.errors import MSTError
from mst_lava.export.layers import LAYER_TYPES, new_counts, result_totals
from mst_lava.lava.builder import LavaNetwork, build_network
from mst_lava.lava.session import LavaSession


@dataclass
class LavaResult:
    scores: np.ndarray            # (n, K) Σ_t readout (int64 in fixed point)
    logits: np.ndarray            # (n, K) float estimate of the ANN logits
    pred: np.ndarray              # (n,) argmax of the scores
    counts: dict                  # layer name → counts summed over samples (see module docstring)
    per_sample: dict              # layer name → {count name: (n,) array}
    T: int
    n_samples: int
    precision: str
    granularity: str
    n_procs: int
    steps: int = 0
    run_s: float = 0.0
    compile_s: float = 0.0
    meta: dict = field(default_factory=dict)

    @property
    def steps_per_s(self) -> float:
        """Lava steps per second of the run calls (compilation excluded)."""
        return self.steps / self.run_s if self.run_s > 0 else float("nan")

    def site_counts(self) -> dict:
        """{"SITE@BLOCK": spikes} summed over samples, sites only (as ``NetSim``'s ``site_counts``)."""
        return {f"{c['site']}@{c['block']}": c["spikes"] for c in self.counts.values() if c["site"]}

    def totals(self) -> dict:
        """Totals over every layer (:func:`mst_lava.export.layers.result_totals`, the keys NetSim's have)."""
        return result_totals(self.counts)


def hardware_available() -> bool:
    """True when lava-loihi (Intel's Loihi 2 compiler and runtime extension) is installed."""
    try:
        from lava.utils import loihi
        return bool(loihi.is_installed())
    except ImportError:
        return False


def check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise MSTError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    if backend == "loihi" and not hardware_available():
        raise MSTError("--backend loihi needs lava-loihi (Intel's Loihi 2 compiler and runtime, available to INRC "
                       "members) and a Loihi 2 system; it is not installed here. Use --backend lava-cpu to run "
                       "the same network on Lava's CPU simulator")


def collect(net: LavaNetwork, scores: np.ndarray, proc_counts: dict) -> tuple[dict, dict]:
    """Per-layer counts from the processes' ``counts`` Vars (already read)."""
    graph = net.graph
    counts: dict = {}
    per_sample: dict = {}
    masked = {k.layer for k in net.knodes if k.role == "rsm"}
    for k in net.knodes:
        if k.id not in net.kernel_slots:
            continue
        proc, a, b = net.kernel_slots[k.id]
        arr = proc_counts[proc.id][:, a:b]
        L = graph.layers[k.layer]
        name = L.name or f"layer{k.layer}"
        c = counts.setdefault(name, new_counts(L))
        ps = per_sample.setdefault(name, {})
        for j, cname in enumerate(k.kernel.count_names):
            if k.role == "rsm" and cname == "events":
                continue                               # = the neurons' spikes
            if k.role == "neuron" and cname == "messages" and k.layer in masked:
                continue                               # the RSM kernel counts the messages it delivers
            if cname.startswith("synops_out"):
                continue                               # a Lava Conv consumer's synops, filed below
            col = arr[:, j]
            ps[cname] = ps.get(cname, 0) + col
            c[cname] = c.get(cname, 0) + int(round(float(col.sum())))
    for lay, (src, cname) in net.derived_synops.items():
        # synapses run by Lava's own Conv process (no counters of ours inside): the kernel feeding it
        # counted its delivered events × their non-zero synapses in the Conv (format §7)
        proc, a, _ = net.kernel_slots[src]
        col = proc_counts[proc.id][:, a + net.knodes[src].kernel.count_names.index(cname)]
        name = graph.layers[lay].name or f"layer{lay}"
        per_sample[name]["synops"] = per_sample[name]["synops_messages"] = col     # binary spikes only
        counts[name]["synops"] = counts[name]["synops_messages"] = int(round(float(col.sum())))
    for name, c in counts.items():
        if c["site"] or LAYER_TYPES[c["type"]].neuron:
            if "delivered" not in per_sample[name] and "spikes" in per_sample[name]:
                c["delivered"] = c["spikes"]           # no RSM: every spike is delivered
                per_sample[name]["delivered"] = per_sample[name]["spikes"]
    return counts, per_sample


def run_network(net: LavaNetwork, *, backend: str = "lava-cpu", progress: bool = True,
                desc: str = "lava") -> LavaResult:
    """Run ``net`` sample by sample (T steps each, one Lava ``run`` per sample) and collect results.

    Lava is always stopped, also on an exception or Ctrl-C (see :mod:`mst_lava.lava.session`).
    """
    check_backend(backend)
    from tqdm import tqdm
    cfg = net.run_config(hardware=backend == "loihi")
    n, T = net.n_samples, net.T
    sess = LavaSession(net.root, cfg)
    try:
        t0 = time.perf_counter()
        sess.start()
        with tqdm(total=n, unit="sample", desc=desc, disable=not progress, leave=False) as bar:
            # sample s is complete net.latency steps after the encoder fed its last step
            for s in range(n):
                sess.run(T + (net.latency if s == 0 else 0))
                bar.update(1)
                if sess.run_s > 0:
                    bar.set_postfix_str(f"{sess.steps_run / sess.run_s:.0f} steps/s")
        scores = np.asarray(net.readout.scores.get())
        procs = {slot[0] for slot in net.kernel_slots.values()}
        proc_counts = {p.id: np.asarray(p.counts.get()) for p in procs}
        wall = time.perf_counter() - t0
    finally:
        sess.stop()
    counts, per_sample = collect(net, scores, proc_counts)
    ro = net.knodes[[k.id for k in net.knodes if k.role == "readout"][0]]
    logits = ro.kernel.layer.logits(ro.kernel.P, scores, T, net.precision == "fixed")
    return LavaResult(scores=scores, logits=logits, pred=np.argmax(scores, axis=-1), counts=counts,
                      per_sample=per_sample, T=T, n_samples=n, precision=net.precision,
                      granularity=net.granularity, n_procs=len(net.procs), steps=sess.steps_run, run_s=sess.run_s,
                      compile_s=sess.compile_s, meta={"wall_s": wall, "processes": net.describe(),
                                                      "latency": net.latency, "pipeline": net.pipeline})


def run(net_file, inputs, T: int, *, precision: str | None = None, granularity: str = "block",
        seed: int | None = None, backend: str = "lava-cpu", progress: bool = False,
        pipeline: bool = True, lava_synapses: bool = False) -> LavaResult:
    """Build and run in one call."""
    check_backend(backend)
    net = build_network(net_file, inputs, T, precision=precision, granularity=granularity, seed=seed,
                        pipeline=pipeline, lava_synapses=lava_synapses)
    return run_network(net, backend=backend, progress=progress)
