"""Float vs fixed, graded vs event-driven patch merging (format §5b) on the first N test images.

    python benchmarks/event_merge_compare.py export/fmnist.net runs/s4/fmnist_events.net --dataset fmnist --n 16 --T 32

Runs NetSim (1 thread) on both files in float and in fixed point and prints how far each fixed-point file's
per-site spike counts are from the float network's (Σ|Δ| / Σ float spikes), the merge layer's counts and the
predictions. The two files must come from the same checkpoint.
"""
from __future__ import annotations

import argparse
import time

import torch

from mst_lava.data import get_dataset
from mst_lava.export import NetSim, read_network


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("graded")
    p.add_argument("events")
    p.add_argument("--dataset", default="fmnist")
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--T", type=int, default=32)
    a = p.parse_args()
    torch.set_num_threads(1)
    gg, ge = read_network(a.graded), read_network(a.events)
    C, H, _ = gg.layers[0].shape
    ds = get_dataset(a.dataset, None, "test", H, in_chans=C)
    x = torch.stack([torch.as_tensor(ds[i][0]) for i in range(a.n)]).float()
    t0 = time.time()
    fl, fl_e = NetSim(gg, precision="float").run(x, a.T), NetSim(ge, precision="float").run(x, a.T)
    fg, fe = NetSim(gg, precision="fixed").run(x, a.T), NetSim(ge, precision="fixed").run(x, a.T)
    ref = fl.site_counts()
    print(f"{a.n} images, T={a.T}, {time.time() - t0:.0f} s")
    print("float: events == graded site counts:", fl_e.site_counts() == ref, "| predictions equal:",
          torch.equal(fl.pred, fl_e.pred), "| largest logit difference:",
          f"{float((fl.logits - fl_e.logits).abs().max()):.3g}")

    def rel(d, keys):
        return sum(abs(d[k] - ref[k]) for k in keys) / max(sum(ref[k] for k in keys), 1)
    later = [k for k in ref if k.startswith("merge@") or int(k.split("@")[1]) >= 2]
    for name, r in (("fixed graded", fg), ("fixed events", fe)):
        d = r.site_counts()
        c = r.counts["merge1"]
        print(f"{name}: spikes vs float, all sites {rel(d, list(ref)):.4f}, merge and after {rel(d, later):.4f}; "
              f"predictions = float: {int((r.pred == fl.pred).sum())}/{a.n}; merge1 spikes {c['spikes']}, "
              f"synops {c['synops']}, analog_macs {c['analog_macs']}")


if __name__ == "__main__":
    main()
