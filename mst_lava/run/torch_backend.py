"""``mst run --backend torch``: the torch executor of the file (:class:`mst_lava.export.NetSim`), batched, CPU
or CUDA; in fixed point bit-exact with Lava's ``fixed_pt`` models. Imports no Lava (tests/test_run_torch.py)."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np

from mst_lava.errors import MSTError
from mst_lava.report import machine_info
from mst_lava.run.inputs import eval_split, samples
from mst_lava.run.record import ZERO_SKIP_SAMPLES, RunRecord

DEFAULT_BATCH = 64
# NetSim holds every step of a layer at once: measured peak ≈ 9 × 8 bytes × (largest layer) per sample-step
# (digits.net, T 64-1024, batches 4-16, float and fixed); 12 leaves a margin.
TORCH_BYTES_PER_NEURON_STEP = 12 * 8


def add_options(p) -> None:
    """Options of ``mst run --backend torch``."""
    from mst_lava import argtypes as at
    p.add_argument("--device", type=at.device_name, default=None, help="--backend torch: cpu (default), cuda or cuda:N")
    p.add_argument("--batch-size", type=at.batch_size, default=None,
                   help=f"--backend torch: samples simulated at once (default {DEFAULT_BATCH}); memory grows with "
                        "batch size × T")
    at.add_threads_option(p, "--backend torch on cpu: ")


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


def run(args) -> RunRecord:
    """``mst run --backend torch``: NetSim over the samples in batches of ``--batch-size``."""
    bs = DEFAULT_BATCH if args.batch_size is None else int(args.batch_size)
    if bs < 1:
        raise MSTError(f"--batch-size must be at least 1, not {bs}")
    dev = torch_device(args.device)
    import torch
    from tqdm import tqdm

    from mst_lava import argtypes as at
    at.apply_threads(args.threads)

    from mst_lava.export import NetSim, read_network
    graph = read_network(args.net)
    precision = args.precision or graph.precision
    sim = NetSim(graph, precision=precision, device=dev)
    ds, dname, n = eval_split(graph, args.dataset, args.data, args.n, args.offset, args.frames,
                              getattr(args, "resize", False))
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
    first: list = []                                # images for the zero-skipping ANN baseline
    run_s = 0.0
    if not hasattr(tqdm, "_lock"):
        # tqdm's default lock is a multiprocessing RLock, which fixes the process's start method; Lava's
        # import then fails (it calls mp.set_start_method('fork')). A thread lock leaves it unset.
        tqdm.set_lock(threading.RLock())
    with tqdm(total=n, unit="sample", desc="mst run (torch)", disable=args.no_progress, leave=False) as bar:
        for a in range(args.offset, args.offset + n, bs):
            b = min(a + bs, args.offset + n)
            x, y = samples(ds, a, b, dname, graph)
            if x.ndim != 4:
                raise MSTError(f"dataset {dname} gives event frames {tuple(x.shape[1:])}; the torch executor runs "
                               "static images only (use --backend lava-cpu for event data)")
            if sum(len(v) for v in first) < ZERO_SKIP_SAMPLES:
                first.append(x[:ZERO_SKIP_SAMPLES - sum(len(v) for v in first)])
            t0 = time.perf_counter()
            r = sim.run(torch.from_numpy(x).to(dev), args.T, seed=seed)
            sc = r.readout.sum(0)
            preds.append(r.pred.cpu().numpy())
            logits.append(r.logits.cpu().numpy())
            scores.append(sc.cpu().numpy())                     # also waits for the device
            run_s += time.perf_counter() - t0
            add_counts(counts, r.counts)
            labels.append(y)
            bar.update(b - a)
            bar.set_postfix_str(f"{(b - args.offset) / run_s:.1f} samples/s")
    res = TorchRunResult(scores=np.concatenate(scores), logits=np.concatenate(logits), pred=np.concatenate(preds),
                         counts=counts, T=args.T, n_samples=n)
    steps = n * args.T
    threads = torch.get_num_threads()
    machine = machine_info()
    machine.update({"torch": torch.__version__, "torch_threads": threads})
    if dev.type == "cuda":
        machine["gpu"] = torch.cuda.get_device_name(dev)
    return RunRecord(
        images=np.concatenate(first),
        result=res, labels=np.concatenate(labels), graph=graph, precision=precision, dataset=dname, seed=seed,
        setup={"device": str(dev), "batch_size": bs},
        throughput={"samples": n, "sample_steps": steps, "run_s": run_s,
                    "samples_per_s": n / run_s if run_s > 0 else float("nan"),
                    "sample_steps_per_s": steps / run_s if run_s > 0 else float("nan"),
                    "device": str(dev), "batch_size": bs, "torch_threads": threads},
        throughput_line=f"throughput {n / run_s:.2f} samples/s ({steps / run_s:.0f} sample-steps/s; {n} samples × "
                        f"T={args.T} in {run_s:.2f} s on {dev}, batches of {bs}, {threads} torch threads)",
        machine=machine)


def add_counts(total: dict, counts: dict) -> None:
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
