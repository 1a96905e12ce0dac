"""``mst rsm-search``: per-site Random Spike Masking ratios under an accuracy budget.

The paper's Table 2 shows that sites differ in how much masking they tolerate. This
search finds a mask map that cuts spike-driven operations the most (synaptic ops plus the
spike-driven dynamic products Q·Kᵀ and soft(A)·V, which is where masking Q, K, A, V acts) while the SNN's mean
accuracy over the seeds stays within ``budget`` points of the unmasked SNN.

Method (greedy, deterministic): start unmasked; at each round try raising every site
(one ratio for all blocks) to its next level in ``--levels``; among the moves that stay
within the budget, take the one with the most synops saved per accuracy point lost
(ties: most synops saved); stop when no move fits. The search scores on a held-out slice of
the *training* split (``--search-n`` samples) so the test split is touched once, for the
final comparison of the found map, uniform masking and the unmasked network.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from mst_lava import argtypes as at
from mst_lava.errors import MSTError
from mst_lava.model.rsm import BLOCK_SITES, check_ratio, parse_mask_spec
from mst_lava.netx_ops import MERGE_INPUTS
from mst_lava.snn.attention import MODES

DEFAULT_LEVELS = "0.25,0.5,0.75,0.9"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "rsm-search", help="find per-site RSM ratios that cut synaptic ops most within an accuracy budget",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None)
    p.add_argument("checkpoint", help="checkpoint .pt written by `mst train`")
    at.add_dataset_options(p, "the one named in the checkpoint")
    p.add_argument("--budget", type=float, default=0.3,
                   help="largest accuracy loss allowed, in percentage points, against the unmasked SNN (default 0.3)")
    p.add_argument("--T", type=at.time_steps, default=32, help="time steps (default 32)")
    p.add_argument("--seeds", type=at.seed_count, default=3,
                   help="mask seeds 0, 1000, ... averaged per candidate (default 3)")
    p.add_argument("--final-seeds", type=at.seed_count, default=10,
                   help="seeds for the final test-split comparison (default 10)")
    p.add_argument("--levels", type=at.fraction_list, default=DEFAULT_LEVELS,
                   help=f"ratios in [0, 1) a site may take (default {DEFAULT_LEVELS})")
    p.add_argument("--sites", default=",".join(BLOCK_SITES), help="sites the search may mask (default: all ten)")
    p.add_argument("--uniform", default="Q=0.75,K=0.75,A=0.75",
                   help="the uniform masking to compare with: one configuration as for --mask, comma-separated "
                        "(default Q=0.75,K=0.75,A=0.75, the paper's)")
    p.add_argument("--search-n", type=at.sample_count, default=256,
                   help="held-out training samples scored per candidate (default 256)")
    p.add_argument("--n", type=at.sample_count, default=None,
                   help="test samples for the final comparison (default: all)")
    p.add_argument("--batch-size", type=at.batch_size, default=128, help="samples simulated at once (default 128)")
    p.add_argument("--attention", default="paper", choices=MODES,
                   help="attention products of the SNN, as for snn-eval: paper (default) or compensated (what "
                        "mst-export/NetSim/Lava run)")
    p.add_argument("--merge-input", default="graded", choices=MERGE_INPUTS,
                   help="what patch merging reads, for the synop counts, as for snn-eval (default graded)")
    p.add_argument("--device", type=at.device_name, default="cpu", help="cpu or cuda")
    at.add_threads_option(p)
    p.add_argument("--out", type=at.path_text, default="rsm_search.json", help="where to write the result (JSON)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted search: every scored candidate is kept in OUT.progress.json "
                        "(same command; removed when OUT is written), so the search replays them and goes on")
    p.set_defaults(func=run_rsm_search)


def _batches(ds, idx, bs):
    for i in range(0, len(idx), bs):
        items = [ds[j] for j in idx[i:i + bs]]
        yield torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])


class Scorer:
    """SNN accuracy (mean over seeds) and synops per inference of a mask map on fixed data.

    ``cache``: scores by mask label, kept across calls (and, through ``save``, across runs: --resume)."""

    def __init__(self, model, batches, T, seeds, device, attention="paper", merge_input="graded",
                 cache: dict | None = None, save=None):
        self.model, self.T, self.seeds, self.device = model, T, seeds, device
        self.attention, self.merge_input, self.save = attention, merge_input, save
        self.batches = [(x.to(device), y.to(device)) for x, y in batches]
        self.cache: dict[str, dict] = {} if cache is None else cache

    def __call__(self, mask: dict[str, float]) -> dict:
        from mst_lava.snn import OpCounter, simulate
        from mst_lava.snn.evaluate import mask_label
        mask = {k: v for k, v in mask.items() if v > 0}
        key = mask_label(mask)
        if key in self.cache:
            return self.cache[key]
        accs, synops = [], []
        for seed in (self.seeds if mask else self.seeds[:1]):   # unmasked: seeds change nothing
            counter = OpCounter(self.model, self.merge_input) if not synops else None
            correct = total = 0
            for x, y in self.batches:
                r = simulate(self.model, x, self.T, mask=mask, seed=seed, counter=counter,
                             attention=self.attention)
                correct += (r.predictions() == y).sum().item()
                total += len(y)
            accs.append(100.0 * correct / total)
            if counter is not None:
                t = counter.summary()["totals"]
                synops.append((t["synops"], t["qk_products"] + t["softmax_v_accumulations"]))
        res = {"acc": float(np.mean(accs)), "acc_std": float(np.std(accs)), "synops": float(synops[0][0]),
               "dynamic_products": float(synops[0][1]), "ops": float(sum(synops[0]))}
        self.cache[key] = res
        if self.save is not None:
            self.save()
        return res


def greedy_search(score, sites, levels, budget, progress=True) -> tuple[dict, list]:
    """The greedy per-site search described in the module docstring. Returns (mask, trace)."""
    base = score({})
    current = {s: 0.0 for s in sites}
    cur = base
    trace = [{"mask": {}, **base}]
    bar = tqdm(desc="rsm-search", disable=not progress, unit="round")
    while True:
        best = None
        for s in sites:
            higher = [lv for lv in levels if lv > current[s]]
            if not higher:
                continue
            cand = dict(current, **{s: higher[0]})
            bar.set_postfix_str(f"ops {cur['ops'] / base['ops']:.2f}x, acc {cur['acc']:.2f}; trying {s}={higher[0]:g}")
            r = score(cand)
            loss = base["acc"] - r["acc"]
            saved = cur["ops"] - r["ops"]
            if loss > budget or saved <= 0:
                continue
            gain = saved / max(loss - (base["acc"] - cur["acc"]), 1e-3)
            if best is None or (gain, saved) > (best[0], best[1]):
                best = (gain, saved, cand, r)
        if best is None:
            break
        current, cur = best[2], best[3]
        trace.append({"mask": {k: v for k, v in current.items() if v}, **cur})
        bar.update(1)
        bar.set_postfix(ops=f"{cur['ops'] / base['ops']:.2f}x", acc=f"{cur['acc']:.2f}")
    bar.close()
    return {k: v for k, v in current.items() if v}, trace


def run_rsm_search(args) -> int:
    with at.torch_threads(args.threads):
        return _run_rsm_search(args)


def _run_rsm_search(args) -> int:
    from mst_lava.checkpoint import check_output_file, load_checkpoint
    from mst_lava.data import get_dataset
    from mst_lava.model.rsm import check_mask_sites
    from mst_lava.train import pick_device
    if not 0 <= args.budget < 100:
        raise MSTError("--budget is in accuracy points and must be in [0, 100)")
    levels = args.levels
    if isinstance(levels, str):      # the default, not passed through the argument type
        levels = sorted({check_ratio(float(v), "--levels ratio") for v in levels.split(",") if v.strip()})
    sites = [s for s in parse_mask_spec([f"{s}=0" for s in args.sites.split(",") if s.strip()])]
    if not sites:
        raise MSTError("--sites names no site; give e.g. --sites Q,K,A")
    uniform = at.parse_mask_words([args.uniform]) if args.uniform else {}
    check_output_file(args.out, "--out", inputs=[args.checkpoint])
    device = pick_device(args.device)
    model, ckpt = load_checkpoint(args.checkpoint)
    check_mask_sites({s: 0.0 for s in sites}, model, "--sites")
    check_mask_sites(uniform, model, "--uniform")
    model.to(device)
    name = args.dataset or ckpt.get("dataset")
    if not name:
        raise MSTError("the checkpoint names no dataset: pass --dataset")
    kw = dict(img_size=model.cfg.img_size, in_chans=model.cfg.in_chans)
    train_ds = get_dataset(name, args.data, "train", **kw)
    test_ds = get_dataset(name, args.data, "test", **kw)
    rng = np.random.default_rng(12345)
    search_idx = rng.permutation(len(train_ds))[:args.search_n].tolist()
    test_idx = list(range(min(args.n or len(test_ds), len(test_ds))))
    seeds = [1000 * i for i in range(args.seeds)]
    out = Path(args.out)
    final_seeds = [1000 * i for i in range(args.final_seeds)]
    from mst_lava.snn.progress import EvalProgress, file_sha256
    prog = EvalProgress(out.parent, {
        "checkpoint_sha256": file_sha256(args.checkpoint), "dataset": name, "data": args.data, "T": args.T,
        "seeds": seeds, "final_seeds": final_seeds, "search_n": len(search_idx), "test_n": len(test_idx),
        "attention": args.attention, "merge_input": args.merge_input}, args.resume, name=out.name + ".progress.json")
    if prog.resumed:
        print(f"resuming from {prog.path} ({len(prog.phase('search')['runs'])} candidates scored)", file=sys.stderr)
    t0 = time.time() - prog.phase("search")["wall_s"]

    def save():
        prog.phase("search")["wall_s"] = time.time() - t0
        prog.save()
    common = dict(attention=args.attention, merge_input=args.merge_input, save=save)
    with torch.no_grad():
        scorer = Scorer(model, list(_batches(train_ds, search_idx, args.batch_size)), args.T, seeds, device,
                        cache=prog.phase("search")["runs"], **common)
        found, trace = greedy_search(scorer, sites, levels, args.budget)
        final = Scorer(model, list(_batches(test_ds, test_idx, args.batch_size)), args.T, final_seeds, device,
                       cache=prog.phase("test")["runs"], **common)
        rows = {"unmasked": final({}), "search": final(found), "uniform": final(uniform)}
    base = rows["unmasked"]
    for r in rows.values():
        r["synops_rel"] = r["synops"] / base["synops"] if base["synops"] else float("nan")
        r["ops_rel"] = r["ops"] / base["ops"] if base["ops"] else float("nan")
        r["acc_loss"] = base["acc"] - r["acc"]
    result = {"checkpoint": str(args.checkpoint), "dataset": name, "T": args.T, "budget_points": args.budget,
              "levels": levels, "sites": sites, "search_seeds": seeds, "search_samples": len(search_idx),
              "test_samples": len(test_idx), "final_seeds": args.final_seeds, "attention": args.attention,
              "merge_input": args.merge_input, "mask": found,
              "uniform_mask": uniform, "test": rows, "trace": trace, "wall_s": round(time.time() - t0, 1)}
    from mst_lava.checkpoint import atomic_write
    atomic_write(out, lambda tmp: Path(tmp).write_text(json.dumps(result, indent=2)), "--out")
    prog.finish()
    print(f"found mask: {' '.join(f'{k}={v}' for k, v in found.items()) or '(none fits the budget)'}")
    print(f"{'':10s} {'synops':>12s} {'x':>6s} {'synops+dyn':>12s} {'x':>6s} {'accuracy %':>16s}")
    for k, r in rows.items():
        print(f"{k:10s} {r['synops']:12.0f} {r['synops_rel']:6.3f} {r['ops']:12.0f} {r['ops_rel']:6.3f} "
              f"{r['acc']:9.2f} ± {r['acc_std']:.2f}")
    print(f"test split, {len(test_idx)} samples, T={args.T}, {args.final_seeds} seeds; wrote {out} "
          f"({result['wall_s']:.0f}s)")
    return 0
