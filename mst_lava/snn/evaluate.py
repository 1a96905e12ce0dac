"""``mst snn-eval``: accuracy, spikes, synaptic ops and energy of a converted checkpoint.

One simulation at the largest T gives every smaller T of ``--T`` exactly (the network is
causal and masks are keyed by step), so ``--T 8,16,32,64,128`` costs one T=128 run per
mask configuration and seed. Each ``--mask`` occurrence is one configuration
(``--mask Q=0.75 K=0.75 A=0.75 --mask Q=0.5``); the unmasked network is always evaluated
too (``--no-unmasked`` skips it). Masked configurations run over the paper's seeds
0, 1000, …, 1000·(seeds-1) and report mean ± std; unmasked runs are deterministic (one run).
``--attention compensated`` simulates the exported network's attention products (what
``mst-export`` files, NetSim and the Lava runtime run) instead of the paper's per-step ones.
"""
from __future__ import annotations

import math
import platform
import sys
import time

import torch

from mst_lava import argtypes as at
from mst_lava.errors import MSTError
from mst_lava.model import rsm
from mst_lava.netx_ops import MERGE_INPUTS
from mst_lava.snn import shards
from mst_lava.snn.attention import MODES, check_attention
from mst_lava.snn.counters import OpCounter, ann_counts
from mst_lava.snn.simulate import simulate

DEFAULT_T = "8,16,32,64,128"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "snn-eval", help="convert a checkpoint to a spiking network and evaluate it (accuracy, spikes, energy)",
        description="Convert every QCFS site of the checkpoint's model to an integrate-and-fire neuron, simulate "
                    "T time steps with Random Spike Masking, and write report.json, summary.md and PNG plots "
                    "(accuracy vs T per mask configuration, firing rate per site and block, spikes per block) "
                    "with spike, synaptic-op and energy counts (Loihi profile and 45 nm theoretical energy).")
    p.add_argument("checkpoint", help="checkpoint .pt written by `mst train`")
    at.add_dataset_options(p, "the one named in the checkpoint")
    p.add_argument("--T", type=at.time_steps_text, default=DEFAULT_T,
                   help=f"comma-separated time steps, each at most {at.MAX_T:_} (default {DEFAULT_T})")
    p.add_argument("--seeds", type=at.seed_count, default=10,
                   help="number of mask seeds 0, 1000, ... for masked configurations (default 10)")
    at.add_mask_option(p, "the checkpoint's ratios when it was trained with any; the unmasked network is "
                          "evaluated as well unless --no-unmasked", configurations=True,
                       keywords={"ckpt": "the ratios the checkpoint was trained with"})
    p.add_argument("--no-unmasked", action="store_true", help="do not evaluate the unmasked network")
    p.add_argument("--attention", default="paper", choices=MODES,
                   help="attention products: paper (Q·Kᵀ and softmax·V of each step's spikes, the paper's "
                        "conversion; default) or compensated (the exported network's expectation-compensated "
                        "products, what mst-export/NetSim/Lava run)")
    p.add_argument("--merge-input", default="graded", choices=MERGE_INPUTS,
                   help="what patch merging reads, for the counts and energy: graded (the residual stream's "
                        "values, dense MACs every step; default, as mst-export writes) or events (the stream's "
                        "spike trains with composed weights: accumulations per spike; the same currents). The "
                        "report prices the other formulation too")
    p.add_argument("--burst", type=at.positive_int, default=1, metavar="B",
                   help="spikes a neuron may fire in one time step (graded-payload neurons, as Loihi 2 sends "
                        "them; default 1: binary IF neurons). Each spike of a burst is worth λ/B and counted "
                        "as one spike; with B = the QCFS levels L the network at T = 1 computes the ANN. "
                        "`mst-export --burst B` writes the same neurons into a .net file (IF_BURST) for NetSim "
                        "and Lava")
    p.add_argument("--report", type=at.path_text, default="snn_report", help="output folder (default snn_report)")
    p.add_argument("--n", type=at.sample_count, default=None, help="evaluate the first N test samples only")
    p.add_argument("--samples", dest="n", type=at.sample_count, default=None, metavar="N",
                   help="the same as --n, a spelling torchrun's own option parser does not mistake for its "
                        "--nnodes/--nproc-per-node (use it under torchrun)")
    p.add_argument("--batch-size", type=at.batch_size, default=64,
                   help="test samples simulated at once (default 64); memory grows with batch size × time chunk")
    p.add_argument("--t-chunk", type=at.time_chunk, default=None,
                   help="time steps folded into one forward pass (default: automatic, from the largest neuron layer)")
    p.add_argument("--device", type=at.device_name, default="cpu", help="cpu or cuda (cuda:N)")
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"),
                   help="arithmetic of the simulation (default float32)")
    p.add_argument("--energy-precision", default="fp32", choices=("fp32", "int8"),
                   help="45 nm constants for the theoretical energy (default fp32: E_AC 0.9 pJ, E_MAC 4.6 pJ)")
    at.add_threads_option(p)
    p.add_argument("--pepper", type=at.list_text, default=None, metavar="D1,D2,...",
                   help="also evaluate with pepper (salt) noise at these densities, e.g. 0.01,0.05,0.1: the "
                        "fraction of pixels per image set to its brightest value (same noise for every config)")
    p.add_argument("--no-plots", action="store_true", help="write JSON and Markdown only")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted evaluation whose progress.json is in --report (same command; "
                        "the progress is saved after every batch and removed when the report is written)")
    p.set_defaults(func=run_snn_eval)


class NoisyLoader:
    """A loader whose batches get pepper noise of one density; the same noise on every pass."""

    def __init__(self, loader, density: float, seed: int = 0):
        self.loader, self.density, self.seed = loader, density, seed

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        from mst_lava.data.noise import pepper_noise
        g = torch.Generator().manual_seed(self.seed)
        for x, y in self.loader:
            yield pepper_noise(x, self.density, g), y


def parse_T(spec: str) -> list[int]:
    try:
        Ts = sorted({int(s) for s in str(spec).replace(" ", "").split(",") if s})
    except ValueError:
        raise MSTError(f"--T {spec!r}: give comma-separated integers, e.g. --T 8,16,32,64") from None
    if not Ts or Ts[0] < 1:
        raise MSTError(f"--T {spec!r}: time steps must be positive integers")
    from mst_lava.argtypes import MAX_T
    if Ts[-1] > MAX_T:
        raise MSTError(f"--T {spec!r}: time steps are at most {MAX_T:_}")
    return Ts


def mask_label(mask: dict) -> str:
    return ",".join(f"{k}={v:g}" for k, v in sorted(mask.items())) if mask else "unmasked"


def _device(spec: str) -> torch.device:
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise MSTError(f"--device {spec}: no CUDA device is available here; use --device cpu")
    elif spec != "cpu":
        raise MSTError(f"--device must be cpu or cuda[:N], not {spec!r}")
    return torch.device(spec)


def _mask_configs(args_mask, ckpt_mask: dict, unmasked: bool) -> list[dict]:
    configs: list[dict] = []
    if args_mask is None:
        if ckpt_mask:
            configs.append(rsm.parse_mask_spec(ckpt_mask))
    else:
        for group in args_mask:
            if len(group) == 1 and group[0].strip().lower() == "ckpt":
                if not ckpt_mask:
                    raise MSTError("--mask ckpt: the checkpoint was trained without masking")
                configs.append(rsm.parse_mask_spec(ckpt_mask))
            else:
                configs.append(at.parse_mask_words(group))
    configs = [c for c in configs if any(v > 0 for v in c.values()) or not c]
    if unmasked:
        configs.insert(0, {})
    out, seen = [], set()
    for c in configs:
        c = {k: v for k, v in c.items() if v > 0}
        key = mask_label(c)
        if key not in seen:
            seen.add(key)
            out.append(c)
    if not out:
        raise MSTError("nothing to evaluate: --no-unmasked given and no mask configuration")
    return out


def _loader(dataset, n: int | None, batch_size: int):
    from torch.utils.data import DataLoader, Subset
    if n is not None:
        if n < 1:
            raise MSTError(f"--n must be positive, not {n}")
        dataset = Subset(dataset, range(min(n, len(dataset))))
    if batch_size < 1:
        raise MSTError(f"--batch-size must be positive, not {batch_size}")
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0), len(dataset)


@torch.no_grad()
def _ann_accuracy(model, loader, device, dtype, mask: dict | None = None, seed: int = 0,
                  shard: tuple[int, int] = (0, 1)) -> float:
    from mst_lava.model.rsm import set_ann_masks
    rank, world = shard
    set_ann_masks(model, mask or {}, seed)
    correct = total = 0
    try:
        for bi, (x, y) in enumerate(loader):
            if bi % world != rank:
                continue
            out = model(x.to(device, dtype))
            correct += int((out.argmax(-1).cpu() == torch.as_tensor(y)).sum())
            total += len(y)
    finally:
        set_ann_masks(model, {}, 0)
    parts = shards.gather((correct, total), world)
    return sum(c for c, _ in parts) / max(sum(n for _, n in parts), 1)


def _mean_std(v: list[float]) -> dict:
    m = sum(v) / len(v)
    sd = math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else 0.0
    return {"mean": m, "std": sd, "per_seed": v}


def evaluate(model, loader, n_samples: int, Ts: list[int], configs: list[dict], seeds: list[int], *,
             device, dtype=torch.float32, t_chunk=None, precision="fp32", progress=True,
             attention: str = "paper", merge_input: str = "graded", burst: int = 1,
             state: dict | None = None, save=None, shard: tuple[int, int] = (0, 1)) -> dict:
    """Evaluate the converted ``model`` on ``loader``: accuracy at each T, counts and energy per config.

    ``attention``: ``"paper"`` or ``"compensated"`` attention products (see :func:`mst_lava.snn.simulate`).
    ``burst``: spikes per neuron and step (:mod:`mst_lava.snn.neuron`).
    ``state``: a phase of :class:`mst_lava.snn.progress.EvalProgress` (resumable: batches already in it
    are skipped, their correct counts and op counts kept); ``save()`` is called after every batch.
    ``shard`` ``(rank, world)``: evaluate every ``world``-th batch from ``rank`` and sum the ranks' tallies and
    counters (:mod:`mst_lava.snn.shards`); every rank returns the whole evaluation's results."""
    rank, world = shard
    check_attention(attention)
    from tqdm import tqdm

    from mst_lava.energy import energy_report
    model.to(device=device, dtype=dtype).eval()
    Tmax = max(Ts)
    n_batches = len(range(rank, len(loader), world))            # this rank's batches
    runs = [(ci, s) for ci, c in enumerate(configs) for s in (seeds if c else seeds[:1])]
    bar = tqdm(total=len(runs) * n_batches, desc="snn-eval", unit="batch", disable=not progress,
               dynamic_ncols=True)
    results = []
    counters = [OpCounter(model, merge_input) for _ in configs]
    if state is not None and state.get("counters"):
        for c, s in zip(counters, state["counters"]):
            if s is not None:
                c.load_state(s)
    tallies: dict[tuple, tuple[dict, int]] = {}
    t0 = time.perf_counter()
    wall_before = state["wall_s"] if state is not None else 0.0
    for ci, seed in runs:
        cfg = configs[ci]
        done = (state or {}).get("runs", {}).get(f"{ci}:{seed}") or {"batches": 0, "total": 0, "correct": {}}
        correct = {t: int(done["correct"].get(str(t), 0)) for t in Ts}
        total, skip = int(done["total"]), int(done["batches"])
        bar.set_postfix_str(f"{mask_label(cfg)} seed {seed}")
        bar.update(len(range(rank, min(skip, len(loader)), world)))
        for bi, (x, y) in enumerate(loader):
            if bi < skip or bi % world != rank:
                continue
            x = x.to(device, dtype)
            y = torch.as_tensor(y)
            res = simulate(model, x, Tmax, mask=cfg, seed=seed, t_chunk=t_chunk, checkpoints=Ts,
                           counter=counters[ci], attention=attention, burst=burst)
            for t in Ts:
                correct[t] += int((res.logits_at[t].argmax(-1).cpu() == y).sum())
            total += len(y)
            bar.update(1)
            if state is not None:
                state["runs"][f"{ci}:{seed}"] = {"batches": bi + 1, "total": total,
                                                 "correct": {str(t): c for t, c in correct.items()}}
                state["counters"] = [c.state() for c in counters]
                state["wall_s"] = wall_before + time.perf_counter() - t0
                if save is not None:
                    save()
        tallies[(ci, seed)] = (correct, total)
    bar.close()
    wall = wall_before + time.perf_counter() - t0
    if world > 1:                                  # the whole evaluation: every rank's tallies and counters
        tallies = shards.sum_tallies(shards.gather(tallies, world))
        for c, states in zip(counters, zip(*shards.gather([c.state() for c in counters], world))):
            c.load_state(shards.sum_counter_states(list(states)))
        wall = max(shards.gather(wall, world))
    acc = {k: {t: correct[t] / max(total, 1) for t in Ts} for k, (correct, total) in tallies.items()}
    x0, _ = next(iter(loader))
    ann = ann_counts(model, x0.to(device, dtype))
    zs = zero_skipping_ann(model, x0)
    for ci, cfg in enumerate(configs):
        cseeds = seeds if cfg else seeds[:1]
        accuracy = {str(t): _mean_std([acc[(ci, s)][t] for s in cseeds]) for t in Ts}
        counts = {str(t): counters[ci].summary(t) for t in Ts}
        energy = {str(t): energy_report(counts[str(t)], ann, precision, zero_skipping=zs) for t in Ts}
        results.append({"label": mask_label(cfg), "mask": cfg, "seeds": cseeds, "accuracy": accuracy,
                        "counts": counts, "energy": energy})
    return {"T": Ts, "n_samples": n_samples, "attention": attention, "merge_input": merge_input,
            "burst": burst, "configs": results, "ann_counts": ann,
            "sim_wall_s": wall}


def zero_skipping_ann(model, x) -> dict | None:
    """The zero-skipping ANN baseline (:mod:`mst_lava.ann_ops`) of an MST on the images ``x`` (its float graph,
    exported in memory, evaluated as the ANN), or None for the ResNet/VGG baselines, which have no exported form."""
    from mst_lava.ann_ops import zero_skipping_counts
    from mst_lava.export.exporter import export_model
    from mst_lava.model.mst import MST
    if not isinstance(model, MST):
        return None
    was = model.training
    try:
        graph = export_model(model.eval(), precision="float")
    finally:
        model.train(was)
    z = zero_skipping_counts(graph, x.detach().cpu().double().numpy())
    z["source"] = f"the ANN of the model's float graph on the first {len(x)} test images"
    return z


def run_snn_eval(args) -> int:
    with at.torch_threads(args.threads):
        return _run_snn_eval(args)


def _run_snn_eval(args) -> int:
    from mst_lava.checkpoint import load_checkpoint
    Ts = parse_T(args.T)
    if args.seeds < 1:
        raise MSTError(f"--seeds must be at least 1, not {args.seeds}")
    device = _device(args.device)
    dtype = torch.float64 if args.dtype == "float64" else torch.float32
    from mst_lava.checkpoint import check_output_dir
    from mst_lava.report import EVAL_REPORT_FILES
    from mst_lava.snn.progress import EvalProgress
    rank, world = shards.init_from_env(device)
    progress_name = EvalProgress.NAME if world == 1 else f"progress.rank{rank}.json"
    check_output_dir(args.report, "--report", names=(*EVAL_REPORT_FILES, progress_name),
                     inputs=[args.checkpoint])
    if args.pepper:
        from mst_lava.data.noise import parse_densities
        parse_densities(args.pepper)
    model, ckpt = load_checkpoint(args.checkpoint)
    configs = _mask_configs(args.mask, ckpt.get("mask") or {}, not args.no_unmasked)
    for c in configs:
        rsm.check_mask_sites(c, model, "--mask")
    name = args.dataset or ckpt.get("dataset")
    if not name:
        raise MSTError(f"{args.checkpoint} does not name its dataset; give --dataset NAME")
    try:
        from mst_lava.data import get_dataset
    except ImportError as e:
        raise MSTError(f"the dataset module is not available ({e})") from None
    cfg = getattr(model, "cfg", None)
    img_size = getattr(cfg, "img_size", None)
    in_chans = getattr(cfg, "in_chans", None)
    import inspect
    kw = {"in_chans": in_chans} if "in_chans" in inspect.signature(get_dataset).parameters else {}
    ds = get_dataset(name, args.data, "test", img_size, **kw)
    loader, n = _loader(ds, args.n, args.batch_size)
    seeds = [1000 * i for i in range(args.seeds)]
    model.to(device=device, dtype=dtype)
    from mst_lava.snn.progress import EvalProgress, file_sha256
    densities = []
    if args.pepper:
        from mst_lava.data.noise import parse_densities
        densities = parse_densities(args.pepper)
    prog = EvalProgress(args.report, {
        "checkpoint_sha256": file_sha256(args.checkpoint), "dataset": name, "data": args.data, "n": n,
        "batch_size": args.batch_size, "T": Ts, "configs": configs, "seeds": seeds, "attention": args.attention,
        "dtype": args.dtype, "pepper": densities,
        **({"merge_input": args.merge_input} if args.merge_input != "graded" else {}),
        **({"burst": args.burst} if args.burst != 1 else {}),
        **({"ranks": world} if world > 1 else {})}, args.resume, name=progress_name)
    if prog.resumed:
        print(f"resuming from {prog.path}", file=sys.stderr)
    t0 = time.perf_counter()
    if prog.ann is None:
        ann_masked = {}
        for c in configs:
            if c:
                ann_masked[mask_label(c)] = _mean_std([_ann_accuracy(model, loader, device, dtype, c, s,
                                                                     shard=(rank, world)) for s in seeds])
        prog.ann = {"accuracy": _ann_accuracy(model, loader, device, dtype, shard=(rank, world)),
                    "masked": ann_masked}
        prog.save()
    ann_acc, ann_masked = prog.ann["accuracy"], prog.ann["masked"]
    common = dict(device=device, dtype=dtype, t_chunk=args.t_chunk, precision=args.energy_precision,
                  attention=args.attention, merge_input=args.merge_input, burst=args.burst, save=prog.save,
                  shard=(rank, world))
    ev = evaluate(model, loader, n, Ts, configs, seeds, state=prog.phase("clean"), **common)
    pepper = []
    for d in densities:
        noisy = evaluate(model, NoisyLoader(loader, d), n, Ts, configs, seeds, state=prog.phase(f"pepper {d!r}"),
                         **common)
        pepper.append({"density": d, "accuracy": {c["label"]: c["accuracy"] for c in noisy["configs"]}})
    if rank != 0:                                  # rank 0 writes the report
        prog.finish()
        shards.finish(world)
        return 0
    report = {
        "command": "mst " + " ".join(sys.argv[1:]) if sys.argv and sys.argv[0].endswith("mst")
        else " ".join(sys.argv),
        "checkpoint": str(args.checkpoint), "arch": ckpt.get("arch"), "dataset": name,
        "model_config": ckpt.get("config"), "trained_mask": ckpt.get("mask") or {},
        "checkpoint_metrics": ckpt.get("metrics") or {},
        "params": sum(p.numel() for p in model.parameters()),
        "device": str(device), "dtype": args.dtype, "energy_precision": args.energy_precision,
        "machine": {"platform": platform.platform(), "torch": torch.__version__,
                    "threads": torch.get_num_threads(), "ranks": world,
                    "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None},
        "ann": {"accuracy": ann_acc, "masked": ann_masked},
        **ev,
        "pepper": pepper,
        "wall_s": time.perf_counter() - t0,
    }
    from mst_lava.report import write_report
    best = report["configs"][0]
    tm = str(max(Ts))
    lines = []
    if pepper:
        lines = ["", "## Pepper noise", "", f"SNN accuracy (%) at T={tm}, mean ± std over the seeds, "
                 "against the clean input.", "", "| configuration | clean | " +
                 " | ".join(f"density {e['density']:g}" for e in pepper) + " |",
                 "|---" * (len(pepper) + 2) + "|"]
        for c in report["configs"]:
            cells = [c["accuracy"][tm]] + [e["accuracy"][c["label"]][tm] for e in pepper]
            lines.append(f"| {c['label']} | " + " | ".join(f"{100 * a['mean']:.2f} ± {100 * a['std']:.2f}"
                                                          for a in cells) + " |")
    # every file of the report, all or nothing (a full disk left report.json without summary.md)
    paths = write_report(report, args.report, plots=not args.no_plots,
                         summary_extra="\n".join(lines) + "\n" if lines else "")
    print(f"ANN accuracy {100 * ann_acc:.2f} %; SNN ({best['label']}, {args.attention} attention) at T={tm}: "
          f"{100 * best['accuracy'][tm]['mean']:.2f} %")
    if lines:
        print("\n".join(lines[4:]))
    prog.finish()
    shards.finish(world)
    for p in paths:
        print(f"wrote {p}")
    return 0
