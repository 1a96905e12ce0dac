"""``mst run`` and ``mst verify``: the exported network on Lava, and its parity with torch.

    mst run export/digits.net --data digits --n 20 --T 64 --backend lava-cpu --precision fixed --report runs/lava
    mst run export/digits.net --n 0 --T 64 --backend torch --precision fixed --device cuda --report runs/torch
    mst verify export/digits.pt export/digits.net --precision fixed --n 5 --T 32

``run`` prints predictions, accuracy, spike counts, synaptic ops and energy per inference
(through ``hw_profiles/`` via :mod:`mst_lava.energy`) and writes ``report.json`` and
``summary.md``. ``--backend torch`` runs the same file in the torch executor
(:class:`mst_lava.export.NetSim`, batched, CPU or CUDA; fixed point is bit-exact with
Lava's ``fixed_pt`` models) through the same summary, energy and report code, and never
imports Lava. ``verify`` runs the torch executor of the same file
(:class:`mst_lava.export.NetSim`, precision float or fixed) and Lava on the same inputs, RSM
seed and T, prints per-site spike counts side by side and exits 1 when they differ beyond
the precision's tolerance (fixed: exactly equal; float: ≤ 0.5 % per site and identical
predictions). This module imports no training code.
"""
from __future__ import annotations

import json
import platform
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mst_lava import argtypes as at
from mst_lava.errors import MSTError
from mst_lava.model.rsm import format_mask

FLOAT_TOL = 0.005
RUN_BACKENDS = ("lava-cpu", "loihi", "torch")
TORCH_BATCH = 64


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "run", help="run an exported network (.net) on Lava (CPU simulator or Loihi) or the torch executor",
        description="Run an mst_lava.netx network over test samples: predictions, accuracy, spike counts, "
                    "synaptic ops and energy per inference. Lava backends: all counted by the Lava processes "
                    "themselves. --backend torch: the torch executor of the same file (NetSim), batched on CPU "
                    "or CUDA, bit-exact with Lava in fixed point; Lava is not imported.")
    p.add_argument("net", help="network file written by mst-export (e.g. export/digits.net)")
    p.add_argument("--data", default=None, help="dataset name (default: the one recorded in the file)")
    p.add_argument("--data-root", default=None, help="dataset folder (default: the dataset's standard location)")
    p.add_argument("--n", type=at.non_negative_int, default=20,
                   help="number of test samples (default 20; 0 = the whole test split from --offset)")
    p.add_argument("--offset", type=at.non_negative_int, default=0, help="index of the first test sample (default 0)")
    p.add_argument("--T", type=at.positive_int, default=64, help="time steps per sample (default 64)")
    p.add_argument("--backend", default="lava-cpu", choices=RUN_BACKENDS,
                   help="lava-cpu: Lava's CPU simulator (Loihi2SimCfg); loihi: Loihi2HwCfg (needs lava-loihi); "
                        "torch: the torch executor of the file (mst_lava.export.NetSim), batched, CPU or CUDA")
    p.add_argument("--precision", default=None, choices=("float", "fixed"),
                   help="float or fixed point: Lava's floating_pt or fixed_pt models, NetSim's float64 or integer "
                        "arithmetic (default: the file's precision)")
    p.add_argument("--device", type=at.device_name, default=None,
                   help="--backend torch: cpu (default), cuda or cuda:N")
    p.add_argument("--batch-size", type=at.positive_int, default=None,
                   help=f"--backend torch: samples simulated at once (default {TORCH_BATCH}); memory grows "
                        "with batch size × T")
    p.add_argument("--threads", type=at.positive_int, default=None,
                   help="--backend torch on cpu: torch intra-op threads (default: torch's, one per core); on a "
                        "busy machine 1 can be much faster")
    p.add_argument("--seed", type=at.seed, default=None,
                   help=f"RSM seed in [0, {at.SEED_MAX}] (default: the file's rsm_seed)")
    p.add_argument("--frames", type=at.positive_int, default=None, help="event datasets: frames per sample")
    _add_runtime_options(p)
    p.add_argument("--report", type=at.path_text, default=None, metavar="DIR",
                   help="write report.json and summary.md into DIR")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_run)

    v = subparsers.add_parser(
        "verify", help="compare Lava with the torch simulation of the same network (spike parity)",
        description="Run the torch executor of the exported file and Lava on the same inputs, RSM seed and T; "
                    "print per-site spike counts and exit 1 if they differ beyond the tolerance "
                    "(fixed: exact; float: <= 0.5 %% per site and identical predictions).")
    v.add_argument("checkpoint", help="the checkpoint the network was exported from (.pt)")
    v.add_argument("net", help="the exported network (.net)")
    v.add_argument("--precision", default=None, choices=("float", "fixed"),
                   help="precision of both runs (default: the file's precision)")
    v.add_argument("--data", default=None, help="dataset name (default: the one recorded in the file)")
    v.add_argument("--data-root", default=None, help="dataset folder")
    v.add_argument("--n", type=at.positive_int, default=5, help="number of test samples (default 5)")
    v.add_argument("--offset", type=at.non_negative_int, default=0)
    v.add_argument("--T", type=at.positive_int, default=32, help="time steps (default 32)")
    v.add_argument("--seed", type=at.seed, default=None,
                   help=f"RSM seed in [0, {at.SEED_MAX}] (default: the file's rsm_seed)")
    _add_runtime_options(v)
    v.add_argument("--reference", default="netsim", choices=("netsim", "snn"),
                   help="netsim (default): mst_lava.export.NetSim, the torch executor of the file's exact "
                        "semantics; snn: the converted checkpoint in mst_lava.snn with expectation-compensated "
                        "attention, the same semantics as the file (float only)")
    v.add_argument("--no-progress", action="store_true")
    v.set_defaults(func=cmd_verify)


# ----------------------------------------------------------------------------------------
# helpers

def _add_runtime_options(p) -> None:
    p.add_argument("--granularity", default="block", choices=("block", "layer"),
                   help="block: wide fused processes, one per block part (fast, default); layer: one Lava "
                        "process per synapse, neuron population, RSM site, residual, attention op")
    p.add_argument("--no-pipeline", action="store_true",
                   help="zero-latency processes only (default: fused segments / synapses take one step of "
                        "latency so consecutive processes run in parallel; paths are re-aligned)")
    p.add_argument("--lava-conv", action="store_true",
                   help="with --granularity layer: run pointwise spike convolutions in lava.proc.conv's Conv "
                        "process (slow; shows Lava's one-step synaptic delay being compensated)")


def _build(graph, x, T, precision, args, seed):
    from mst_lava.lava.builder import build_network
    if args.lava_conv and args.granularity != "layer":
        raise MSTError("--lava-conv needs --granularity layer")
    return build_network(graph, x, T, precision=precision, granularity=args.granularity, seed=seed,
                         pipeline=not args.no_pipeline, lava_synapses=args.lava_conv)

@contextmanager
def _sigterm_as_interrupt():
    """SIGINT and SIGTERM raise KeyboardInterrupt (SIGTERM: ``interrupts.Terminated``, exit 143)
    while Lava runs, so ``finally`` stops Lava's children (also when called without the CLI)."""
    from mst_lava.interrupts import handled
    with handled():
        yield


def _config(graph) -> dict:
    return dict(graph.attrs.get("model_config") or {})      # decoded from JSON by read_network


def load_inputs(graph, data: str | None, root, n: int, offset: int = 0, frames: int | None = None):
    """The first ``n`` test samples (from ``offset``; ``n = 0``: to the end) the network expects:
    (x float32 numpy array, labels, name)."""
    ds, name, n = _test_split(graph, data, root, n, offset, frames)
    x, labels = _samples(ds, offset, offset + n, name, graph)
    return x, labels, name


def _test_split(graph, data: str | None, root, n: int, offset: int = 0, frames: int | None = None):
    """The test split of the network's dataset, its name and the number of samples ``n`` resolves to.

    Static datasets at their own size come as arrays (``data.eval_arrays``: no torch, so a Lava run
    imports none); the others (resized, ImageNet folders, event frames) as torch datasets."""
    from mst_lava.data import eval_arrays, get_dataset
    name = data or str(graph.attrs.get("dataset") or "") or None
    if not name:
        raise MSTError(f"{graph.path or 'the network'} does not record its dataset; give --data NAME")
    if n < 0 or offset < 0:
        raise MSTError("--n must be non-negative (0 = the whole test split) and --offset non-negative")
    C, H, W = (int(s) for s in graph.layers[0].shape)
    ds = None if frames else eval_arrays(name, root, "test")
    if ds is None or ds.eval_images(0, 1, H, C) is None:
        kw = {"frames": frames} if frames else {}
        ds = get_dataset(name, root, "test", H, in_chans=C, **kw)
    if n == 0:
        n = len(ds) - offset
        if n < 1:
            raise MSTError(f"the {name} test split has {len(ds)} samples; --offset {offset} leaves none")
    if offset + n > len(ds):
        raise MSTError(f"the {name} test split has {len(ds)} samples; --offset {offset} --n {n} asks for more")
    return ds, name, n


def _samples(ds, start: int, stop: int, name: str, graph):
    """Samples ``start..stop-1`` of ``ds`` stacked: (x float32 numpy array, labels int array)."""
    from mst_lava.data import ImageArrays
    C, H, W = (int(s) for s in graph.layers[0].shape)
    if isinstance(ds, ImageArrays):
        x, ys = ds.eval_images(start, stop, H, C), ds.labels[start:stop]
    else:
        import torch
        xs, ys = [], []
        for i in range(start, stop):
            xi, y = ds[i]
            xs.append(torch.as_tensor(xi))
            ys.append(int(y))
        x = torch.stack(xs).float().numpy()
    if tuple(x.shape[-3:]) != (C, H, W):
        raise MSTError(f"dataset {name} gives samples of shape {tuple(x.shape[1:])}; the network expects "
                       f"({C}, {H}, {W}) (wrong --data for this network?)")
    return x, np.asarray(ys)


def _per_inference_summary(res) -> dict:
    """Counts per inference (mean over samples) in the structure mst_lava.energy expects."""
    n = max(res.n_samples, 1)
    sites, layers = [], []
    tot = {"spikes_emitted": 0.0, "spikes_delivered": 0.0, "neuron_updates": 0.0, "neurons": 0.0, "synops": 0.0,
           "analog_macs": 0.0, "qk_products": 0.0, "softmax_v_accumulations": 0.0, "softmax_elements": 0.0,
           "residual_accumulations": 0.0, "analog_matmul_macs": 0.0,
           "current_overflows": 0.0, "voltage_overflows": 0.0}
    overflows = []
    for name, c in res.counts.items():
        typ = c["type"]
        oc, ov = c.get("current_overflows", 0), c.get("voltage_overflows", 0)
        if oc or ov:                         # 24-bit wraps / saturations of the fixed-point neurons
            tot["current_overflows"] += oc / n
            tot["voltage_overflows"] += ov / n
            overflows.append({"name": name, "current_overflows": oc / n, "voltage_overflows": ov / n,
                              "per_neuron_step": (oc + ov) / max(c.get("neuron_updates", 0), 1)})
        if typ == "mst_residual":
            tot["residual_accumulations"] += c.get("residual_adds", 0) / n
        elif typ == "mst_qk":
            tot["qk_products"] += c.get("synops", 0) / n
        elif typ == "mst_softmax_av":
            tot["softmax_v_accumulations"] += c.get("synops", 0) / n
            tot["softmax_elements"] += c.get("softmax_elements", 0) / n
        elif typ == "mst_readout":
            tot["analog_macs"] += c.get("analog_macs", 0) / n
        else:
            if c.get("analog_macs", 0):
                tot["analog_macs"] += c["analog_macs"] / n
            else:
                tot["synops"] += c.get("synops", 0) / n
            layers.append({"name": name, "type": typ, "synops": c.get("synops", 0) / n,
                           "macs": c.get("analog_macs", 0) / n})
        if c["site"]:
            up = c.get("neuron_updates", 0)
            tot["spikes_emitted"] += c["spikes"] / n
            tot["spikes_delivered"] += c["delivered"] / n
            tot["neuron_updates"] += up / n
            tot["neurons"] += c["neurons"]
            sites.append({"name": name, "site": c["site"], "block": c["block"], "neurons": c["neurons"],
                          "spikes_emitted": c["spikes"] / n, "spikes_delivered": c["delivered"] / n,
                          "dropped": c.get("dropped", 0) / n, "neuron_updates": up / n,
                          "firing_rate": c["spikes"] / up if up else 0.0})
    tot["firing_rate"] = tot["spikes_emitted"] / tot["neuron_updates"] if tot["neuron_updates"] else 0.0
    return {"T": res.T, "samples": res.n_samples, "sites": sites, "layers": layers, "totals": tot,
            "overflows": overflows}


def _overflow_line(summary: dict) -> str | None:
    """One line on Loihi's 24-bit limits when a fixed-point run hit them (None otherwise)."""
    t, ov = summary["totals"], summary.get("overflows") or []
    if not ov:
        return None
    worst = sorted(ov, key=lambda o: -(o["current_overflows"] + o["voltage_overflows"]))[:3]
    where = ", ".join(f"{o['name']} ({_num(o['current_overflows'])} wraps, {_num(o['voltage_overflows'])} "
                      f"saturations)" for o in worst)
    return (f"24-bit overflow events per inference: {_num(t['current_overflows'])} current wrap-arounds, "
            f"{_num(t['voltage_overflows'])} voltage saturations in {len(ov)} layer(s); most in {where}")


def _energy(summary: dict, precision: str):
    try:
        from mst_lava import energy
    except ImportError:
        return None, "mst_lava.energy is not available: counts only"
    try:
        return energy.energy_report(summary, None, precision="int8" if precision == "fixed" else "fp32"), None
    except (MSTError, KeyError, ValueError) as e:
        return None, f"energy report unavailable: {e}"


def _num(v) -> str:
    v = float(v)
    for unit, f in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= f:
            return f"{v / f:.3g} {unit}"
    return f"{v:.4g}"


def _fmt_pj(pj) -> str:
    try:
        from mst_lava.energy import format_energy
        return format_energy(pj)
    except ImportError:
        return "—" if pj is None else f"{pj:.3g} pJ"


def _write(path: Path, text: str) -> None:
    try:
        from mst_lava.fileio import atomic_write
        atomic_write(path, lambda tmp: Path(tmp).write_text(text), "report file")
    except ImportError:
        path.write_text(text)


# ----------------------------------------------------------------------------------------
# mst run

def cmd_run(args) -> int:
    if args.T < 1:
        raise MSTError(f"--T must be at least 1, not {args.T}")
    if args.report:
        from mst_lava.fileio import check_output_dir
        check_output_dir(args.report, "--report")
    if args.backend == "torch":
        run = _run_torch(args)
    else:
        run = _run_lava(args)
    res, labels = run["res"], run["labels"]
    acc = float((res.pred == labels).mean())
    summary = _per_inference_summary(res)
    energy, energy_note = _energy(summary, run["precision"])
    t = summary["totals"]
    print(f"predictions: {res.pred.tolist()}")
    print(f"labels:      {labels.tolist()}")
    print(f"accuracy {100 * acc:.2f} % ({int((res.pred == labels).sum())}/{len(labels)})")
    print(f"per inference: spikes {_num(t['spikes_emitted'])} emitted, {_num(t['spikes_delivered'])} delivered "
          f"(firing rate {t['firing_rate']:.4f}); synaptic ops {_num(t['synops'])}; neuron updates "
          f"{_num(t['neuron_updates'])}; analog MACs {_num(t['analog_macs'])}")
    ovl = _overflow_line(summary)
    if ovl:
        print(ovl)
    elif run["precision"] == "fixed":
        print("24-bit overflow events: none (no current wrapped, no voltage saturated)")
    if energy is not None:
        for h in energy["hardware"]:
            if h.get("available"):
                print(f"energy ({h['title']}): {_fmt_pj(h['total_pJ'])} per inference")
        th = energy["theoretical"]
        print(f"energy (45 nm theoretical, {th['precision']}): {_fmt_pj(th['papers_total_pJ'])} per inference "
              f"({_fmt_pj(th['total_with_residual_and_dynamic_pJ'])} with residual and dynamic products)")
    else:
        print(energy_note)
    print(run["throughput_line"])
    if args.report:
        from mst_lava.fileio import ensure_dir
        out = ensure_dir(args.report, "--report folder")
        graph = run["graph"]
        report = {
            "command": "mst " + " ".join(sys.argv[1:]) if sys.argv else "",
            "network": str(args.net), "dataset": run["dataset"], "backend": args.backend,
            "precision": run["precision"], **run["setup"],
            "T": args.T, "n_samples": int(len(labels)), "offset": args.offset,
            "rsm_seed": run["seed"], "mask": graph.attrs.get("mask"),
            "labels": labels.tolist(), "predictions": res.pred.tolist(), "accuracy": acc,
            "logits": res.logits.tolist(), "scores": res.scores.tolist(),
            "counts_per_layer_total": res.counts, "per_inference": summary,
            "energy": energy, "energy_note": energy_note,
            "throughput": run["throughput"],
            "machine": _machine(run.get("device")),
        }
        _write(out / "report.json", json.dumps(report, indent=1, default=_json_default))
        _write(out / "summary.md", _markdown(report))
        print(f"wrote {out / 'report.json'} and {out / 'summary.md'}")
    return 0


def _run_lava(args) -> dict:
    """``mst run`` on a Lava backend: build the process graph, run it sample by sample."""
    if args.device is not None or args.batch_size is not None or args.threads is not None:
        raise MSTError("--device, --batch-size and --threads configure --backend torch; Lava backends run sample "
                       "by sample on the CPU (or Loihi)")
    import mst_lava.lava  # noqa: F401
    from mst_lava.lava.builder import load_graph
    from mst_lava.lava.runner import check_backend, run_network
    check_backend(args.backend)
    graph = load_graph(args.net)
    precision = args.precision or graph.precision
    x, labels, dname = load_inputs(graph, args.data, args.data_root, args.n, args.offset, args.frames)
    t0 = time.perf_counter()
    net = _build(graph, x, args.T, precision, args, args.seed)
    build_s = time.perf_counter() - t0
    print(f"{args.net}: {len(graph.layers)} layers → {net.describe()}; {precision} precision, T={args.T}, "
          f"{len(labels)} {dname} samples, backend {args.backend}")
    with _sigterm_as_interrupt():
        res = run_network(net, backend=args.backend, progress=not args.no_progress, desc="mst run")
    return {
        "res": res, "labels": labels, "graph": graph, "precision": precision, "dataset": dname, "seed": net.seed,
        "setup": {"granularity": args.granularity, "pipeline": net.pipeline, "pipeline_latency": net.latency},
        "throughput": {"steps": res.steps, "run_s": res.run_s, "steps_per_s": res.steps_per_s,
                       "compile_s": res.compile_s, "build_s": build_s, "processes": res.n_procs,
                       "process_kinds": net.describe()},
        "throughput_line": f"throughput {res.steps_per_s:.1f} steps/s ({res.steps} steps in {res.run_s:.2f} s; "
                           f"compile {res.compile_s:.2f} s; {res.n_procs} Lava processes)",
    }


@dataclass
class TorchRunResult:
    """What ``mst run --backend torch`` collects over its batches, shaped like ``runner.LavaResult``."""
    scores: np.ndarray      # (n, K) Σ_t readout (int64 in fixed point)
    logits: np.ndarray      # (n, K)
    pred: np.ndarray        # (n,)
    counts: dict            # layer name → counts summed over all samples (NetSim.counts structure)
    T: int
    n_samples: int


def torch_device(spec: str | None):
    """``--device`` as a torch device; a clear MSTError when it does not exist here."""
    import torch
    spec = spec or "cpu"
    try:
        dev = torch.device(spec)
    except (RuntimeError, ValueError):
        raise MSTError(f"--device {spec!r} is not a device name: use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise MSTError(f"--device {spec}: no CUDA GPU is usable here (torch {torch.__version__}, built with "
                           f"CUDA {torch.version.cuda or 'none'}, torch.cuda.is_available() is False); "
                           "use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise MSTError(f"--device {spec}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type != "cpu":
        raise MSTError(f"--device {spec}: --backend torch runs on cpu or cuda")
    return dev


# NetSim holds every step of a layer at once: measured peak ≈ 9 × 8 bytes × (largest layer) per sample-step
# (digits.net, T 64-1024, batches 4-16, float and fixed); 12 leaves a margin.
TORCH_BYTES_PER_NEURON_STEP = 12 * 8


def torch_batch_that_fits(graph, T: int, bs: int, device) -> int:
    """The largest batch (<= ``bs``) whose NetSim run of ``T`` steps fits in 70 % of the memory available on
    ``device``; an MSTError when not even one sample fits (before anything is allocated)."""
    from mst_lava.resources import available_device_memory, fmt_bytes
    peak = max((int(np.prod(L.shape)) for L in graph.layers), default=1)
    per_sample = TORCH_BYTES_PER_NEURON_STEP * peak * int(T)
    budget = int(0.7 * available_device_memory(device))
    if per_sample > budget:
        raise MSTError(f"--T {T} on --backend torch needs about {fmt_bytes(per_sample)} per sample (NetSim holds all "
                       f"T steps of a layer), more than the {fmt_bytes(budget)} usable on {device}: use a smaller --T "
                       "or --backend lava-cpu, whose memory does not grow with T")
    return max(1, min(int(bs), budget // per_sample))


def _run_torch(args) -> dict:
    """``mst run --backend torch``: NetSim over the samples in batches of ``--batch-size`` (no Lava import)."""
    if args.lava_conv or args.no_pipeline or args.granularity != "block":
        raise MSTError("--granularity, --no-pipeline and --lava-conv shape the Lava process graph; "
                       "--backend torch has none")
    bs = TORCH_BATCH if args.batch_size is None else int(args.batch_size)
    if bs < 1:
        raise MSTError(f"--batch-size must be at least 1, not {bs}")
    dev = torch_device(args.device)
    import torch
    if args.threads is not None:
        if args.threads < 1:
            raise MSTError(f"--threads must be at least 1, not {args.threads}")
        torch.set_num_threads(args.threads)
    from tqdm import tqdm
    from mst_lava.export import NetSim, read_network
    graph = read_network(args.net)
    precision = args.precision or graph.precision
    sim = NetSim(graph, precision=precision, device=dev)
    ds, dname, n = _test_split(graph, args.data, args.data_root, args.n, args.offset, args.frames)
    seed = graph.seed if args.seed is None else int(args.seed)
    bs = min(bs, n)
    fit = torch_batch_that_fits(graph, args.T, bs, dev)
    if fit < bs:
        print(f"note: batches of {fit} instead of {bs} so that T={args.T} fits in the memory available on {dev}")
        bs = fit
    print(f"{args.net}: {len(graph.layers)} layers → torch NetSim on {dev}, batches of {bs}; {precision} "
          f"precision, T={args.T}, {n} {dname} samples, backend torch")
    counts: dict = {}
    labels, preds, logits, scores = [], [], [], []
    run_s = 0.0
    if not hasattr(tqdm, "_lock"):
        # tqdm's default lock is a multiprocessing RLock, which fixes the process's start method; Lava's
        # import then fails (it calls mp.set_start_method('fork')). A thread lock leaves it unset.
        tqdm.set_lock(threading.RLock())
    with tqdm(total=n, unit="sample", desc="mst run (torch)", disable=args.no_progress, leave=False) as bar:
        for a in range(args.offset, args.offset + n, bs):
            b = min(a + bs, args.offset + n)
            x, y = _samples(ds, a, b, dname, graph)
            if x.ndim != 4:
                raise MSTError(f"dataset {dname} gives event frames {tuple(x.shape[1:])}; the torch executor runs "
                               "static images only (use --backend lava-cpu for event data)")
            t0 = time.perf_counter()
            r = sim.run(torch.from_numpy(x).to(dev), args.T, seed=seed)
            sc = r.readout.sum(0)
            preds.append(r.pred.cpu().numpy())
            logits.append(r.logits.cpu().numpy())
            scores.append(sc.cpu().numpy())                     # also waits for the device
            run_s += time.perf_counter() - t0
            _add_counts(counts, r.counts)
            labels.append(y)
            bar.update(b - a)
            bar.set_postfix_str(f"{(b - args.offset) / run_s:.1f} samples/s")
    res = TorchRunResult(scores=np.concatenate(scores), logits=np.concatenate(logits), pred=np.concatenate(preds),
                         counts=counts, T=args.T, n_samples=n)
    steps = n * args.T
    threads = torch.get_num_threads()
    return {
        "res": res, "labels": np.concatenate(labels), "graph": graph, "precision": precision, "dataset": dname,
        "seed": seed, "device": dev,
        "setup": {"device": str(dev), "batch_size": bs},
        "throughput": {"samples": n, "sample_steps": steps, "run_s": run_s,
                       "samples_per_s": n / run_s if run_s > 0 else float("nan"),
                       "sample_steps_per_s": steps / run_s if run_s > 0 else float("nan"),
                       "device": str(dev), "batch_size": bs, "torch_threads": threads},
        "throughput_line": f"throughput {n / run_s:.2f} samples/s ({steps / run_s:.0f} sample-steps/s; {n} samples "
                           f"× T={args.T} in {run_s:.2f} s on {dev}, batches of {bs}, {threads} torch "
                           "threads)",
    }


def _add_counts(total: dict, counts: dict) -> None:
    """Adds one batch's per-layer counts into ``total`` (descriptive fields are copied once)."""
    for name, c in counts.items():
        if c.get("type") == "input":
            continue                          # counts nothing (as Lava's encoder, which has no counters)
        t = total.get(name)
        if t is None:
            total[name] = dict(c)
            continue
        for k, v in c.items():
            if k not in ("site", "block", "type", "neurons"):
                t[k] = t.get(k, 0) + v


def _machine(device=None) -> dict:
    import os
    m = {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count()}
    if device is not None:
        import torch
        m["torch"] = torch.__version__
        m["torch_threads"] = torch.get_num_threads()
        if getattr(device, "type", "") == "cuda":
            m["gpu"] = torch.cuda.get_device_name(device)
    return m


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if hasattr(o, "tolist"):
        return o.tolist()
    return str(o)


def _markdown(r: dict) -> str:
    s = r["per_inference"]
    t = s["totals"]
    th = r["throughput"]
    if r["backend"] == "torch":
        L = [f"# torch run (NetSim): {r['network']} on {r['dataset']}", "",
             f"- command: `{r['command']}`",
             f"- backend torch on {r['device']}, {r['precision']} point, T={r['T']}, {r['n_samples']} samples from "
             f"{r['offset']} in batches of {r['batch_size']}, RSM seed {r['rsm_seed']}, mask {format_mask(r['mask'])}",
             f"- accuracy: **{100 * r['accuracy']:.2f} %**",
             f"- throughput: {th['samples_per_s']:.2f} samples/s ({th['sample_steps_per_s']:.0f} sample-steps/s, "
             f"{th['run_s']:.2f} s)", "",
             "All counts below were counted by the torch executor of the file (mst_lava.export.NetSim), the same "
             "quantities the Lava processes count (per inference = mean over samples)."]
    else:
        L = [f"# Lava run: {r['network']} on {r['dataset']}", "",
             f"- command: `{r['command']}`",
             f"- backend {r['backend']}, {r['precision']} point, granularity {r['granularity']}, T={r['T']}, "
             f"{r['n_samples']} samples from {r['offset']}, RSM seed {r['rsm_seed']}, mask {format_mask(r['mask'])}",
             f"- accuracy: **{100 * r['accuracy']:.2f} %**",
             f"- throughput: {th['steps_per_s']:.1f} Lava steps/s ({th['process_kinds']}; "
             f"compile {th['compile_s']:.2f} s)", "",
             "All counts below were counted by the Lava processes during the run (per inference = mean over "
             "samples)."]
    L += ["", "| quantity | per inference |", "|---|---|"]
    for k in ("spikes_emitted", "spikes_delivered", "firing_rate", "synops", "neuron_updates", "analog_macs",
              "residual_accumulations", "qk_products", "softmax_v_accumulations", "softmax_elements"):
        L.append(f"| {k} | {_num(t[k]) if k != 'firing_rate' else f'{t[k]:.4f}'} |")
    if r["precision"] == "fixed":
        L += ["", "## 24-bit overflow events (Loihi: the current wraps around, the voltage saturates)", ""]
        ov = s.get("overflows") or []
        if not ov:
            L.append("None: no neuron's current wrapped and no voltage saturated.")
        else:
            L += ["| layer | current wrap-arounds | voltage saturations | per neuron-step |", "|---|---|---|---|"]
            for o in ov:
                L.append(f"| {o['name']} | {_num(o['current_overflows'])} | {_num(o['voltage_overflows'])} | "
                         f"{o['per_neuron_step']:.2e} |")
    e = r.get("energy")
    L += ["", "## Energy per inference", ""]
    if e:
        for h in e["hardware"]:
            if h.get("available"):
                L.append(f"- {h['title']}: {_fmt_pj(h['total_pJ'])}")
            else:
                L.append(f"- {h['title']}: {h.get('statement', 'no per-op constants')}")
        th = e["theoretical"]
        L.append(f"- 45 nm theoretical ({th['precision']}): {_fmt_pj(th['papers_total_pJ'])} "
                 f"({_fmt_pj(th['total_with_residual_and_dynamic_pJ'])} with residual and dynamic products)")
    else:
        L.append(f"- {r.get('energy_note')}")
    L += ["", "## Per site", "", "| site | block | neurons | spikes emitted | delivered | dropped by RSM | firing rate |",
          "|---|---|---|---|---|---|---|"]
    for x in s["sites"]:
        L.append(f"| {x['site']} | {x['block']} | {x['neurons']} | {_num(x['spikes_emitted'])} | "
                 f"{_num(x['spikes_delivered'])} | {_num(x['dropped'])} | {x['firing_rate']:.4f} |")
    L += ["", "## Predictions", "", f"labels {r['labels']}", "", f"predictions {r['predictions']}", ""]
    return "\n".join(L)


# ----------------------------------------------------------------------------------------
# mst verify

def compare_counts(ref_sites: dict, lava_sites: dict, precision: str) -> tuple[list, float, bool]:
    """Rows (site, torch, lava, diff, rel) and the largest relative difference; ok under the tolerance."""
    rows, worst, ok = [], 0.0, True
    for key in sorted(set(ref_sites) | set(lava_sites), key=_site_order):
        a, b = int(ref_sites.get(key, 0)), int(lava_sites.get(key, 0))
        rel = abs(b - a) / max(abs(a), 1)
        worst = max(worst, rel)
        good = (a == b) if precision == "fixed" else rel <= FLOAT_TOL
        ok &= good
        rows.append((key, a, b, b - a, rel, good))
    return rows, worst, ok


def _site_order(key: str):
    from mst_lava.model.rsm import SITES
    site, _, block = key.partition("@")
    s = SITES.index(site) if site in SITES else 99
    b = int(block) if block.lstrip("-").isdigit() else 0
    # embed first, then block by block in forward order, merges before their stage's first block
    if site == "embed":
        return (-1, 0, 0)
    if site == "merge":
        return (b - 0.5, 0, 0)
    return (b, 1, s)


def cmd_verify(args) -> int:
    if args.T < 1:
        raise MSTError(f"--T must be at least 1, not {args.T}")
    from mst_lava.checkpoint import load_checkpoint
    model, ckpt = load_checkpoint(args.checkpoint)     # validated before Lava is imported
    import mst_lava.lava  # noqa: F401
    from mst_lava.lava.builder import load_graph
    from mst_lava.lava.runner import run_network
    graph = load_graph(args.net)
    precision = args.precision or graph.precision
    cfg_file, cfg_ckpt = _config(graph), dict(ckpt.get("config") or {})
    diff = sorted(k for k in set(cfg_file) & set(cfg_ckpt) if cfg_file[k] != cfg_ckpt[k])
    if diff:
        raise MSTError(f"{args.net} was not exported from {args.checkpoint}: model configs differ in {diff}")
    x, labels, dname = load_inputs(graph, args.data, args.data_root, args.n, args.offset)
    seed = graph.seed if args.seed is None else int(args.seed)
    print(f"verify: {args.net} ({precision} precision) on {args.n} {dname} samples, T={args.T}, RSM seed {seed}, "
          f"mask {format_mask(graph.attrs.get('mask'))}")
    t0 = time.perf_counter()
    if args.reference == "snn":
        if precision != "float":
            raise MSTError("--reference snn compares floating point only (the converted checkpoint is float)")
        ref_sites, ref_pred = _snn_reference(model, graph, x, args.T, seed)
        ref_name = "torch SNN (mst_lava.snn)"
    else:
        from mst_lava.export import NetSim
        if torch_batch_that_fits(graph, args.T, len(x), "cpu") < len(x):
            raise MSTError(f"--n {len(x)} samples at --T {args.T} do not fit in memory at once for the NetSim "
                           "reference: use a smaller --n or --T")
        ref = NetSim(graph, precision=precision).run(x, args.T, seed=seed)
        ref_sites, ref_pred = ref.site_counts(), np.asarray(ref.pred.cpu().numpy())
        ref_name = f"torch NetSim ({precision})"
    t_ref = time.perf_counter() - t0
    net = _build(graph, x, args.T, precision, args, seed)
    with _sigterm_as_interrupt():
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
    print("PASS" if passed else "FAIL")
    return 0 if passed else 1


def _snn_reference(model, graph, x, T: int, seed: int):
    """Per-site spikes of the converted checkpoint in the torch SNN simulator (float)."""
    import torch
    from mst_lava.snn import OpCounter, simulate
    mask = graph.attrs.get("mask") or {}
    counter = OpCounter(model)
    r = simulate(model, torch.from_numpy(x), T, mask=mask or None, seed=seed, counter=counter,
                 attention="compensated")
    s = counter.summary(T)
    n = x.shape[0]
    sites = {f"{e['site']}@{e['block']}": int(round(e["spikes_emitted"] * n)) for e in s["sites"]}
    return sites, np.asarray(r.predictions().cpu().numpy())
