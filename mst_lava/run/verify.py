"""``mst verify``: the torch executor of an exported file (:class:`mst_lava.export.NetSim`, float or fixed) and
Lava on the same inputs, RSM seed and T; per-site spike counts side by side; exit 1 when they differ beyond the
precision's tolerance (fixed: exactly equal; float: <= 0.5 % per site and identical predictions)."""
from __future__ import annotations

import time

import numpy as np

from mst_lava.errors import MSTError
from mst_lava.model.rsm import format_mask

FLOAT_TOL = 0.005


def compare_counts(ref_sites: dict, lava_sites: dict, precision: str) -> tuple[list, float, bool]:
    """Rows (site, torch, lava, diff, rel) and the largest relative difference; ok under the tolerance."""
    rows, worst, ok = [], 0.0, True
    for key in sorted(set(ref_sites) | set(lava_sites), key=site_order):
        a, b = int(ref_sites.get(key, 0)), int(lava_sites.get(key, 0))
        rel = abs(b - a) / max(abs(a), 1)
        worst = max(worst, rel)
        good = (a == b) if precision == "fixed" else rel <= FLOAT_TOL
        ok &= good
        rows.append((key, a, b, b - a, rel, good))
    return rows, worst, ok


def site_order(key: str):
    """Sort key of ``SITE@BLOCK``: embed first, then block by block in forward order, merges before their
    stage's first block."""
    from mst_lava.model.rsm import SITES
    site, _, block = key.partition("@")
    s = SITES.index(site) if site in SITES else 99
    b = int(block) if block.lstrip("-").isdigit() else 0
    if site == "embed":
        return (-1, 0, 0)
    if site == "merge":
        return (b - 0.5, 0, 0)
    return (b, 1, s)


def verify(args) -> int:
    from mst_lava.run.inputs import load_inputs
    from mst_lava.run.lava_backend import build, interrupts_stop_lava, load
    from mst_lava.run.torch_backend import torch_batch_that_fits
    if args.T < 1:
        raise MSTError(f"--T must be at least 1, not {args.T}")
    from mst_lava.checkpoint import load_checkpoint
    model, ckpt = load_checkpoint(args.checkpoint)     # validated before Lava is imported
    from mst_lava.lava.runner import run_network
    graph = load(args.net)
    precision = args.precision or graph.precision
    cfg_file, cfg_ckpt = dict(graph.attrs.get("model_config") or {}), dict(ckpt.get("config") or {})
    diff = sorted(k for k in set(cfg_file) & set(cfg_ckpt) if cfg_file[k] != cfg_ckpt[k])
    if diff:
        raise MSTError(f"{args.net} was not exported from {args.checkpoint}: model configs differ in {diff}")
    fingerprint_note = check_fingerprint(graph, model, args.net, args.checkpoint)
    x, labels, dname = load_inputs(graph, args.dataset, args.data, args.n, args.offset,
                                     resize=getattr(args, "resize", False))
    seed = graph.seed if args.seed is None else int(args.seed)
    print(f"verify: {args.net} ({precision} precision) on {args.n} {dname} samples, T={args.T}, RSM seed {seed}, "
          f"mask {format_mask(graph.attrs.get('mask'))}")
    print(fingerprint_note)
    from mst_lava import argtypes as at
    at.apply_threads(getattr(args, "threads", None))
    t0 = time.perf_counter()
    ref_counts = None
    if args.reference == "snn":
        if precision != "float":
            raise MSTError("--reference snn compares floating point only (the converted checkpoint is float)")
        ref_sites, ref_pred = snn_reference(model, graph, x, args.T, seed)
        ref_name = "torch SNN (mst_lava.snn)"
    else:
        from mst_lava.export import NetSim
        if torch_batch_that_fits(graph, args.T, len(x), "cpu") < len(x):
            raise MSTError(f"--n {len(x)} samples at --T {args.T} do not fit in memory at once for the NetSim "
                           "reference: use a smaller --n or --T")
        ref = NetSim(graph, precision=precision).run(x, args.T, seed=seed)
        ref_sites, ref_pred = ref.site_counts(), np.asarray(ref.pred.cpu().numpy())
        ref_counts = ref.counts
        ref_name = f"torch NetSim ({precision})"
    t_ref = time.perf_counter() - t0
    net = build(graph, x, args.T, precision, args, seed)
    with interrupts_stop_lava():
        res = run_network(net, progress=not args.no_progress, desc="mst verify (lava)")
    rows, worst, ok = compare_counts(ref_sites, res.site_counts(), precision)
    same_pred = bool(np.array_equal(ref_pred, res.pred))
    tol = "exact" if precision == "fixed" else f"<= {100 * FLOAT_TOL:.1f} %"
    print(f"{'site':>10} {'torch':>10} {'lava':>10} {'diff':>8} {'rel %':>8}")
    for key, a, b, d, rel, good in rows:
        print(f"{key:>10} {a:>10d} {b:>10d} {d:>8d} {100 * rel:>8.3f}{'' if good else '  <-- over tolerance'}")
    print(f"predictions torch {ref_pred.tolist()}  lava {res.pred.tolist()}  labels {labels.tolist()}")
    print(f"reference {ref_name}: {t_ref:.1f} s; Lava: {res.steps_per_s:.1f} steps/s, {res.n_procs} processes")
    print(f"largest per-site difference {100 * worst:.4f} % (tolerance {tol}); predictions "
          f"{'identical' if same_pred else 'DIFFER'}")
    passed = ok and same_pred
    if ref_counts is not None and precision == "fixed":     # fixed point: every count of every layer, exactly
        bad = layer_count_differences(ref_counts, res.counts)
        n_keys = sum(len(c) for c in ref_counts.values())
        print(f"every per-layer count ({n_keys} values: spikes, delivered, messages, synops, synops_messages, "
              f"overflows, ...): {'identical' if not bad else f'{len(bad)} differ, first {bad[:3]}'}")
        passed &= not bad
    print("PASS" if passed else "FAIL")
    return 0 if passed else 1


def check_fingerprint(graph, model, net, checkpoint) -> str:
    """The file's ``source_sha256`` against the checkpoint's weights: an MSTError when they differ, else the
    line verify prints (files of older versions record none: a note that nothing could be checked)."""
    from mst_lava.checkpoint import weights_fingerprint
    recorded = graph.attrs.get("source_sha256")
    if not recorded:
        return (f"note: {net} records no source_sha256 (exported by an older mst_lava): whether it was exported "
                f"from the weights of {checkpoint} could not be checked")
    own = weights_fingerprint(model.state_dict())
    if own != recorded:
        raise MSTError(f"{net} was not exported from the weights of {checkpoint}: the file's source_sha256 "
                       f"{recorded[:16]}… differs from the checkpoint's {own[:16]}… (same config, other weights; "
                       "re-export the file from this checkpoint or give the checkpoint it was exported from)")
    return f"weights: {checkpoint} is the file's source (source_sha256 {own[:16]}…)"


def layer_count_differences(ref: dict, lava: dict) -> list[tuple]:
    """(layer, key, torch, lava) for every numeric count that differs between two per-layer count records."""
    out = []
    for name, c in ref.items():
        if name not in lava and c.get("type") == "input":
            continue                                   # the encoder counts nothing
        other = lava.get(name, {})
        for k, v in c.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "block" and \
                    int(round(v)) != int(round(other.get(k, 0))):
                out.append((name, k, v, other.get(k)))
    return out


def snn_reference(model, graph, x, T: int, seed: int):
    """Per-site spikes of the converted checkpoint in the torch SNN simulator (float)."""
    import torch

    from mst_lava.snn import OpCounter, simulate
    mask = graph.attrs.get("mask") or {}
    counter = OpCounter(model)
    from mst_lava import neurons
    burst = max([neurons.burst_of(L.neuron) for L in graph.layers if L.neuron is not None] or [1])
    r = simulate(model, torch.from_numpy(x), T, mask=mask or None, seed=seed, counter=counter,
                 attention="compensated", burst=burst)
    s = counter.summary(T)
    n = x.shape[0]
    sites = {f"{e['site']}@{e['block']}": int(round(e["spikes_emitted"] * n)) for e in s["sites"]}
    return sites, np.asarray(r.predictions().cpu().numpy())
