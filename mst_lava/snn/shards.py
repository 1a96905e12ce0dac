"""``snn-eval`` over several processes (``torchrun``): each rank evaluates every ``world``-th batch, the ranks' integer
tallies (correct predictions, samples) and operation counters are gathered and summed in rank order, and rank 0
writes the report: the same report as one process (RSM masks are keyed by seed, site, block, step and the element
index within one sample, so they do not depend on which rank sees a batch).
"""
from __future__ import annotations

import os

import torch


def init_from_env(device) -> tuple[int, int]:
    """``(rank, world)``: under ``torchrun`` (WORLD_SIZE > 1) joins the process group (gloo on a CPU, nccl on
    CUDA); otherwise ``(0, 1)``."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return 0, 1
    import torch.distributed as dist
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.device(device).type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


def finish(world: int) -> None:
    """Leave the process group (after every rank is done)."""
    if world > 1:
        import torch.distributed as dist
        dist.barrier()
        dist.destroy_process_group()


def gather(obj, world: int) -> list:
    """Every rank's ``obj``, in rank order (one process: ``[obj]``)."""
    if world <= 1:
        return [obj]
    import torch.distributed as dist
    out = [None] * world
    dist.all_gather_object(out, obj)
    return out


def sum_tallies(per_rank: list[dict]) -> dict:
    """Sum ``{key: (correct {t: n}, total)}`` over ranks."""
    out: dict = {}
    for tallies in per_rank:
        for k, (correct, total) in tallies.items():
            c, n = out.get(k, ({}, 0))
            out[k] = ({t: c.get(t, 0) + v for t, v in correct.items()}, n + total)
    return out


def sum_counter_states(states: list[dict]) -> dict:
    """One :meth:`mst_lava.snn.counters.OpCounter.state` from the ranks' states: integer totals and samples
    summed, the site description of the first rank that saw one."""
    totals: dict = {}
    samples: dict = {}
    site_info: dict = {}
    for s in states:
        for t, items in s["totals"]:
            acc = totals.setdefault(int(t), {})
            for k, v in items:
                acc[tuple(k)] = acc.get(tuple(k), 0) + int(v)
        for t, n in s["samples"]:
            samples[int(t)] = samples.get(int(t), 0) + int(n)
        site_info = site_info or s["site_info"]
    return {"totals": [[t, [[list(k), v] for k, v in tot.items()]] for t, tot in sorted(totals.items())],
            "samples": sorted(samples.items()), "site_info": site_info,
            "merge_alternative": all(s.get("merge_alternative", True) for s in states)}
