"""Multi-step spiking simulator vs the per-step reference, same model and inputs, outputs checked.

    python benchmarks/sim_speed.py                       # CPU: fmnist preset, T=64, batch 64
    python benchmarks/sim_speed.py --device cuda         # GPU: swin-t preset (224×224), T=128, batch 32

Times (best of --repeat, after one warm-up):
  * per-step reference: the whole model re-run once per step, batch B, stateful neurons;
  * multi-step: time folded into the batch, neurons scan over T (chunks of --t-chunk steps);
  * T × one ANN forward pass of the same batch (the floor a simulator can hope for);
  * multi-step with the op counters on (what `mst snn-eval` runs).
Outputs are compared: bit-for-bit equality of the T per-step head outputs, max |Δ| of the
mean logits and agreement of predictions. An untrained preset model is given spiking
statistics with ``make_spiky`` (or pass --ckpt). Targets (issue 3): ≥ 2× on CPU,
≥ 5× on GPU and within 1.3× of T ANN forwards on GPU.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mst_lava.model import build_model  # noqa: E402
from mst_lava.snn import OpCounter, simulate, simulate_reference  # noqa: E402
from mst_lava.snn.testing import make_spiky  # noqa: E402


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device, repeat, warmup=True):
    """(best wall seconds, process CPU seconds of that run, output)."""
    if warmup:
        fn()
        _sync(device)
    best, cpu, out = float("inf"), None, None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        _sync(device)
        w = time.perf_counter() - t0
        if w < best:
            best, cpu = w, time.process_time() - c0
    return best, cpu, out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--preset", default=None, help="model preset (default fmnist on CPU, swin-t on CUDA)")
    p.add_argument("--ckpt", default=None, help="use this checkpoint instead of a preset model")
    p.add_argument("--T", type=int, default=None, help="time steps (default 64 on CPU, 128 on CUDA)")
    p.add_argument("--batch", type=int, default=None, help="batch size (default 64 on CPU, 32 on CUDA)")
    p.add_argument("--t-chunk", type=int, default=None, help="steps per multi-step forward (default: auto)")
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    p.add_argument("--mask", nargs="*", default=["Q=0.75", "K=0.75", "A=0.75"], help="RSM ratios")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-counters", action="store_true", help="skip the timing with op counters on")
    p.add_argument("--out", default=None, help="append a Markdown record to this file")
    a = p.parse_args(argv)
    device = torch.device(a.device)
    cuda = device.type == "cuda"
    if a.threads:
        torch.set_num_threads(a.threads)
    preset = a.preset or ("swin-t" if cuda else "fmnist")
    T = a.T or (128 if cuda else 64)
    B = a.batch or (32 if cuda else 64)
    dtype = torch.float64 if a.dtype == "float64" else torch.float32
    torch.manual_seed(0)
    if a.ckpt:
        from mst_lava.checkpoint import load_checkpoint
        model, _ = load_checkpoint(a.ckpt)
        preset = f"checkpoint {a.ckpt}"
    else:
        model = make_spiky(build_model(preset), seed=0, weight_std=0.1)
    model = model.to(device, dtype).eval()
    cfg = model.cfg
    x = torch.randn(B, cfg.in_chans, cfg.img_size, cfg.img_size, device=device, dtype=dtype)
    mask = a.mask
    print(f"{preset}: {sum(q.numel() for q in model.parameters()) / 1e6:.2f} M params, input {tuple(x.shape)}, "
          f"T={T}, {a.dtype}, device {device}, threads {torch.get_num_threads()}, mask {mask}", flush=True)

    with torch.no_grad():
        t_ann, c_ann, _ = _time(lambda: model(x), device, max(a.repeat, 3))
    # warm-up on a short run, then the timed full runs
    simulate(model, x, 2, mask=mask, seed=0, t_chunk=a.t_chunk)
    simulate_reference(model, x, 2, mask=mask, seed=0)
    t_ms, c_ms, ms = _time(lambda: simulate(model, x, T, mask=mask, seed=0, t_chunk=a.t_chunk,
                                            return_steps=True), device, a.repeat, warmup=False)
    print(f"multi-step: {t_ms:.2f} s wall, {c_ms:.2f} s CPU", flush=True)
    t_ref, c_ref, ref = _time(lambda: simulate_reference(model, x, T, mask=mask, seed=0, return_steps=True),
                              device, a.repeat, warmup=False)
    print(f"per-step reference: {t_ref:.2f} s wall, {c_ref:.2f} s CPU", flush=True)
    t_cnt = None
    if not a.no_counters:
        t_cnt, _, _ = _time(lambda: simulate(model, x, T, mask=mask, seed=0, t_chunk=a.t_chunk,
                                             counter=OpCounter(model)), device, 1, warmup=False)
    equal = torch.equal(ms.steps, ref.steps)
    dmax = (ms.logits - ref.logits).abs().max().item()
    agree = (ms.predictions() == ref.predictions()).double().mean().item()
    mem = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        "| setting | value |", "|---|---|",
        f"| model | {preset} ({sum(q.numel() for q in model.parameters()) / 1e6:.2f} M params), "
        f"input {tuple(x.shape)} |",
        f"| T, batch, dtype, RSM | {T}, {B}, {a.dtype}, {' '.join(mask) or 'none'} |",
        f"| device | {torch.cuda.get_device_name(device) if cuda else platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads |",
        f"| per-step reference | {t_ref:.2f} s wall, {c_ref:.2f} s process CPU |",
        f"| multi-step (t_chunk {a.t_chunk or 'auto'}) | {t_ms:.2f} s wall, "
        f"{c_ms:.2f} s process CPU |",
        f"| **speed-up** | **{t_ref / t_ms:.2f}× wall, {c_ref / c_ms:.2f}× CPU time** |",
        f"| T × one ANN forward | {T * t_ann:.2f} s wall, {T * c_ann:.2f} s CPU (one forward {1e3 * t_ann:.1f} ms); "
        f"multi-step / that = {t_ms / (T * t_ann):.2f} |",
        f"| multi-step with op counters | {f'{t_cnt:.2f} s' if t_cnt is not None else 'not run'} |",
        f"| machine load average (1 min) at the end | {load:.1f} on {os.cpu_count()} cores |",
        f"| outputs | per-step head outputs bit-equal: {'yes' if equal else 'no'}; max abs diff of mean logits "
        f"{dmax:.3g}; predictions agree {100 * agree:.1f} % |",
    ]
    if mem is not None:
        lines.append(f"| peak GPU memory | {mem:.1f} GiB |")
    text = "\n".join(lines)
    print(text)
    if a.out:
        with open(a.out, "a") as f:
            f.write(f"\n`python {' '.join(['benchmarks/sim_speed.py', *(argv if argv is not None else sys.argv[1:])])}`"
                    f"\n\n{text}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
