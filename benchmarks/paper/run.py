"""The paper's experiments on Fashion-MNIST (issue 11), as resumable steps for two CPU cores.

    python benchmarks/paper/run.py                    # everything not done yet, 2 lanes
    python benchmarks/paper/run.py --dry-run          # the commands, and which are done
    python benchmarks/paper/run.py --only power ablation --lanes 1
    python benchmarks/paper/tables.py                 # tables and figures from what the steps left

Every step is one `mst` command. A step that finished leaves ``runs/paper/<step>.done`` and is
skipped; `snn-eval` steps run with ``--resume`` and training steps with ``--resume`` when their
checkpoint holds a training state, so stopping (Ctrl-C, a session ending) and running this again
continues where it stopped. Logs: ``runs/paper/<step>.log``. Reports: ``benchmarks/results/paper/``.

Steps (groups for ``--only``):
  power      the shipped MST checkpoints at Q, K, A = 0 / 50 / 75 % (`export/fmnist*.pt`) and QCFS
             ResNet-18 / VGG-16 baselines (`fmnist` baseline preset) trained here, fine-tuned with RSM
             on every block at 50 / 75 % like the MST (at 75 % also 3 epochs at lr 2e-3); `snn-eval` at
             T = 8, 16, 32, 64 (accuracy vs T is the paper's Fig. 2; the power table is read at T = 64;
             patch merging on spike events, as the shipped .net runs it);
  ablation   `export/fmnist.pt` with the ten rows of the paper's Table 2 (cumulative sets of sites at 50 %,
             MLP at 10 % in two rows), and with one site masked at a time (the ten sites) at --ablation-ratio;
  search     `mst rsm-search` on `export/fmnist.pt`, the found map fine-tuned once
             (`export/fmnist_searched.pt`) and evaluated;
  pepper     the three MST checkpoints under pepper noise (the paper's Fig. 6).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[2]
RES = Path("benchmarks/results/paper")
RUNS = Path("runs/paper")
SITES = ("SC1", "Q", "K", "V", "A", "AV", "Proj", "SC2", "MLP1", "MLP2")
BASELINES = ("resnet18", "vgg16")
# The ten rows of the paper's Table 2 (supplementary material): cumulative sets of masked sites at the
# paper's ratios (soft(A)*V is the AV site here).
_SA = "Q=0.5,K=0.5,A=0.5"
PAPER_TABLE2 = (_SA, f"{_SA},V=0.5", f"{_SA},V=0.5,AV=0.5", f"{_SA},V=0.5,AV=0.5,Proj=0.5",
                f"{_SA},V=0.5,AV=0.5,Proj=0.5,MLP2=0.1", f"{_SA},V=0.5,AV=0.5,Proj=0.5,MLP1=0.1",
                f"SC1=0.5,{_SA},V=0.5,AV=0.5,Proj=0.5", f"{_SA},V=0.5,AV=0.5,Proj=0.5,SC2=0.5",
                f"{_SA},V=0.5,AV=0.5,Proj=0.5,MLP1=0.5", f"{_SA},V=0.5,AV=0.5,Proj=0.5,MLP2=0.5")


@dataclass
class Step:
    name: str
    group: str
    cmd: list[str] | Callable[[], list[str]]
    after: list[str] = field(default_factory=list)
    product: Path | None = None        # written (atomically) only when the step finished: done without a .done


    def command(self) -> list[str]:
        return self.cmd() if callable(self.cmd) else self.cmd


def _mst(*args) -> list[str]:
    return [str(Path(sys.executable).parent / "mst"), *map(str, args)]


def _train_resume(out: Path) -> list[str]:
    """--resume when ``out`` is a checkpoint with a training state (an interrupted run of this step)."""
    if not out.exists():
        return []
    from mst_lava.checkpoint import read_checkpoint
    from mst_lava.errors import MSTError
    try:
        return ["--resume"] if "train_state" in read_checkpoint(out) else []
    except MSTError:         # unreadable: let `mst train` start over and overwrite it
        return []


def steps(a) -> list[Step]:
    def E(name, group, ck, rep, *extra, after=(), seeds=a.seeds):
        """An `snn-eval` step writing RES/rep (its report.json marks it done)."""
        cmd = _mst("snn-eval", ck, "--report", RES / rep, "--n", a.n, "--seeds", seeds, "--attention", a.attention,
                   "--threads", 1, "--batch-size", a.batch_size, "--merge-input", "events", "--resume", *extra)
        return Step(name, group, cmd, list(after), RES / rep / "report.json")

    def ft(init, out, *mask, epochs=a.ft_epochs, lr="5e-4"):
        return _mst("train", "--init", init, "--mask", *mask, "--epochs", epochs, "--lr", lr, "--warmup-epochs", 0,
                    "--batch-size", 128, "--threads", 1, "--seed", 0, "--out", out)
    T = "8,16,32,64"
    S = [E("mst_r0", "power", "export/fmnist.pt", "power/mst_r0", "--T", T, "--no-plots"),
         E("mst_r50", "power", "export/fmnist_rsm50.pt", "power/mst_r50", "--T", T, "--mask", "ckpt",
           "--no-unmasked", "--no-plots"),
         E("mst_r75", "power", "export/fmnist_rsm75.pt", "power/mst_r75", "--T", T, "--mask", "ckpt",
           "--no-unmasked", "--no-plots")]
    for arch in BASELINES:
        ck = RUNS / f"{arch}.pt"
        S.append(Step(f"train_{arch}", "power",
                      lambda ck=ck, arch=arch: _mst("train", "--arch", arch, "--preset", "fmnist", "--epochs",
                                                    a.baseline_epochs, "--batch-size", 128, "--lr", "2e-3",
                                                    "--threads", 1, "--seed", 0, "--out", ck,
                                                    *_train_resume(ck))))
        S.append(E(f"{arch}_r0", "power", ck, f"power/{arch}_r0", "--T", T, "--no-plots", after=[f"train_{arch}"]))
        for r in (50, 75):
            fck = RUNS / f"{arch}_rsm{r}.pt"
            S.append(Step(f"ft_{arch}_r{r}", "power", ft(ck, fck, f"act=0.{r}"), [f"train_{arch}"]))
            S.append(E(f"{arch}_r{r}", "power", fck, f"power/{arch}_r{r}", "--T", T, "--mask", "ckpt",
                       "--no-unmasked", "--no-plots", after=[f"ft_{arch}_r{r}"]))
        # 75 % on every block does not survive the MST's one-epoch fine-tune (ResNet-18: ANN 20.6 %): a longer one
        lck = RUNS / f"{arch}_rsm75_long.pt"
        S.append(Step(f"ft_{arch}_r75_long", "power", ft(ck, lck, "act=0.75", epochs=3, lr="2e-3"), [f"train_{arch}"]))
        S.append(E(f"{arch}_r75_long", "power", lck, f"power/{arch}_r75_long", "--T", T, "--mask", "ckpt",
                   "--no-unmasked", "--no-plots", after=[f"ft_{arch}_r75_long"]))
    masks = [x for s in SITES for x in ("--mask", f"{s}={a.ablation_ratio}")]
    S.append(E("ablation", "ablation", "export/fmnist.pt", "ablation", "--T", 64, *masks, "--no-plots",
               seeds=a.ablation_seeds))
    rows = [x for r in PAPER_TABLE2 for x in ("--mask", r)]        # the unmasked row: power/mst_r0
    S.append(E("ablation_paper", "ablation", "export/fmnist.pt", "ablation_paper", "--T", 64, *rows,
               "--no-unmasked", "--no-plots", seeds=a.ablation_seeds))
    search = RES / "search.json"
    S.append(Step("search", "search", _mst("rsm-search", "export/fmnist.pt", "--T", 32, "--seeds", 3,
                                           "--final-seeds", a.seeds, "--n", a.n, "--attention", a.attention,
                                           "--merge-input", "events", "--threads", 1, "--resume", "--out", search),
                  product=search))

    def ft_searched():
        found = json.loads(search.read_text())["mask"]
        if not found:
            raise SystemExit("the search found no map within its budget: nothing to fine-tune")
        return ft("export/fmnist.pt", "export/fmnist_searched.pt", *(f"{k}={v}" for k, v in found.items()))
    S.append(Step("ft_searched", "search", ft_searched, ["search"]))
    S.append(E("searched", "search", "export/fmnist_searched.pt", "searched", "--T", 64, "--mask", "ckpt",
               "--no-plots", after=["ft_searched"]))
    for r, ck in ((0, "export/fmnist.pt"), (50, "export/fmnist_rsm50.pt"), (75, "export/fmnist_rsm75.pt")):
        extra = ["--mask", "ckpt", "--no-unmasked"] if r else []
        S.append(E(f"pepper_r{r}", "pepper", ck, f"pepper/mst_r{r}", "--T", 64, "--pepper", a.pepper, *extra,
                   "--no-plots", seeds=a.pepper_seeds))
    return S


def done(step: Step) -> bool:
    return (RUNS / f"{step.name}.done").exists() or (step.product is not None and step.product.exists())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=2000, help="test images per evaluation (default 2000; 10000 = all)")
    p.add_argument("--seeds", type=int, default=5, help="mask seeds per masked configuration (default 5)")
    p.add_argument("--attention", default="compensated", choices=("paper", "compensated"),
                   help="attention products of the SNN (default compensated: what the exported network runs)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--baseline-epochs", type=int, default=8, help="training epochs of ResNet-18 / VGG-16")
    p.add_argument("--ft-epochs", type=int, default=1, help="RSM fine-tuning epochs (default 1)")
    p.add_argument("--ablation-ratio", type=float, default=0.75)
    p.add_argument("--ablation-seeds", type=int, default=1,
                   help="mask seeds per ablation row (default 1: eleven runs at T = 64 on 2,000 images are "
                        "~1.5 core-hours here; the masked power rows' seed std is 0.1-0.2 point)")
    p.add_argument("--pepper-seeds", type=int, default=1,
                   help="mask seeds of the masked pepper runs (default 1: the seed std of the masked models is "
                        "0.1-0.2 point, the pepper effects are points to tens of points)")
    p.add_argument("--pepper", default="0.01,0.05,0.1", help="pepper-noise densities")
    p.add_argument("--only", nargs="+", choices=("power", "ablation", "search", "pepper"), default=None)
    p.add_argument("--lanes", type=int, default=2, help="steps run at once, one thread each (default 2)")
    p.add_argument("--dry-run", action="store_true", help="print the steps and their state; run nothing")
    a = p.parse_args(argv)
    os.chdir(ROOT)
    every = {s.name: s for s in steps(a)}
    todo = [s for s in every.values() if a.only is None or s.group in a.only]
    names = {s.name for s in todo}
    if a.dry_run:
        for s in todo:
            try:
                cmd = shlex.join(s.command())
            except (OSError, ValueError, KeyError, SystemExit) as e:
                cmd = f"(made when {', '.join(s.after)} is done: {e})"
            print(f"[{'done' if done(s) else 'todo'}] {s.name}: {cmd}")
        return 0
    RUNS.mkdir(parents=True, exist_ok=True)
    RES.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    running: dict[str, tuple[subprocess.Popen, float]] = {}
    failed: set[str] = set()
    pending = [s for s in todo if not done(s)]
    while pending or running:
        for name, (proc, t0) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[name]
            if proc.returncode == 0:
                (RUNS / f"{name}.done").write_text(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {time.time() - t0:.0f} s\n")
                print(f"done   {name} ({time.time() - t0:.0f} s)", flush=True)
            else:
                failed.add(name)
                print(f"FAILED {name} (exit {proc.returncode}; see {RUNS / (name + '.log')})", flush=True)
                if proc.returncode in (130, -2):          # interrupted (Ctrl-C): start nothing more
                    pending.clear()
                    print("interrupted: run this command again to continue", flush=True)
        blocked = [s for s in pending if any(d in failed or (d not in names and not done(every[d])) for d in s.after)]
        for s in blocked:
            pending.remove(s)
            failed.add(s.name)
            print(f"skip   {s.name}: needs {', '.join(s.after)}", flush=True)
        for s in list(pending):
            if len(running) >= a.lanes:
                break
            if all(done(every[d]) for d in s.after):
                pending.remove(s)
                cmd = s.command()
                log = open(RUNS / f"{s.name}.log", "a")
                log.write(f"\n$ {shlex.join(cmd)}\n")
                log.flush()
                running[s.name] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env),
                                   time.time())
                print(f"start  {s.name}", flush=True)
        time.sleep(2)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
