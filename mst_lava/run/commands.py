"""``mst run`` and ``mst verify``: their arguments, and ``mst run`` itself.

    mst run export/digits.net --dataset digits --n 20 --T 64 --backend lava-cpu --precision fixed --report runs/lava
    mst run export/digits.net --n 0 --T 64 --backend torch --precision fixed --device cuda --report runs/torch
    mst verify export/digits.pt export/digits.net --precision fixed --n 5 --T 32

``run`` hands the file to a backend, :mod:`.lava_backend` (Lava's CPU simulator or Loihi) or
:mod:`.torch_backend` (the torch executor NetSim, batched, CPU or CUDA; fixed point bit-exact with Lava's
``fixed_pt`` models), then prints predictions, accuracy, spike counts, synaptic ops and energy per inference
(through ``hw_profiles/`` via :mod:`mst_lava.energy`) and writes ``report.json`` and ``summary.md``
(:mod:`mst_lava.report`), the same for both. ``verify`` is in :mod:`.verify`. Nothing here imports torch or
Lava before a backend is chosen.
"""
from __future__ import annotations

import sys

from mst_lava import argtypes as at
from mst_lava.backends import BACKENDS
from mst_lava.errors import MSTError

RUN_DATASET_DEFAULT = "the one recorded in the file"


def _add_common(p, *, n_type, n_default: int, n_help: str, T_default: int) -> None:
    """The options ``run`` and ``verify`` share: which samples, how many steps, which RSM seed, precision."""
    p.add_argument("net", help="network file written by mst-export (e.g. export/digits.net)")
    at.add_dataset_options(p, RUN_DATASET_DEFAULT, legacy_data_name=True)
    p.add_argument("--n", type=n_type, default=n_default, help=n_help)
    p.add_argument("--offset", type=at.sample_index, default=0, help="index of the first test sample (default 0)")
    p.add_argument("--resize", action="store_true",
                   help="let a --dataset other than the file's resize its images (and repeat or average their "
                        "channels) to the network's input; without it a dataset whose image size or channels "
                        "differ from the file's input layer is refused (the number of classes must match always)")
    p.add_argument("--T", type=at.time_steps, default=T_default, help=f"time steps per sample (default {T_default})")
    p.add_argument("--seed", type=at.seed, default=None,
                   help=f"RSM seed in [0, {at.SEED_MAX}] (default: the file's rsm_seed)")
    from mst_lava.run.lava_backend import add_process_graph_options
    add_process_graph_options(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def register(subparsers) -> None:
    from mst_lava.run import torch_backend
    p = subparsers.add_parser(
        "run", help="run an exported network (.net) on Lava (CPU simulator or Loihi) or the torch executor",
        description="Run an mst_lava.netx network over test samples: predictions, accuracy, spike counts, "
                    "synaptic ops and energy per inference. Lava backends: all counted by the Lava processes "
                    "themselves. --backend torch: the torch executor of the same file (NetSim), batched on CPU "
                    "or CUDA, bit-exact with Lava in fixed point; Lava is not imported.")
    _add_common(p, n_type=at.sample_count_or_all, n_default=20, T_default=64,
                n_help="number of test samples (default 20; 0 = the whole test split from --offset)")
    p.add_argument("--backend", default="lava-cpu", choices=BACKENDS,
                   help="lava-cpu: Lava's CPU simulator (Loihi2SimCfg, default); loihi: Loihi2HwCfg (needs "
                        "lava-loihi); torch: the torch executor of the file (mst_lava.export.NetSim), batched, CPU "
                        "or CUDA")
    p.add_argument("--precision", default=None, choices=("float", "fixed"),
                   help="float or fixed point: Lava's floating_pt or fixed_pt models, NetSim's float64 or integer "
                        "arithmetic (default: the file's precision)")
    torch_backend.add_options(p)
    p.add_argument("--frames", type=at.frame_count, default=None, help="event datasets: frames per sample")
    p.add_argument("--report", type=at.path_text, default=None, metavar="DIR",
                   help="write report.json and summary.md into DIR")
    p.set_defaults(func=cmd_run)

    v = subparsers.add_parser(
        "verify", help="compare Lava with the torch simulation of the same network (spike parity)",
        description="Run the torch executor of the exported file and Lava on the same inputs, RSM seed and T; "
                    "print per-site spike counts and exit 1 if they differ beyond the tolerance "
                    "(fixed: exact; float: <= 0.5 %% per site and identical predictions).")
    v.add_argument("checkpoint", help="the checkpoint the network was exported from (.pt)")
    _add_common(v, n_type=at.sample_count, n_default=5, n_help="number of test samples (default 5)", T_default=32)
    v.add_argument("--precision", default=None, choices=("float", "fixed"),
                   help="precision of both runs (default: the file's precision)")
    v.add_argument("--reference", default="netsim", choices=("netsim", "snn"),
                   help="netsim (default): mst_lava.export.NetSim, the torch executor of the file's exact "
                        "semantics; snn: the converted checkpoint in mst_lava.snn with expectation-compensated "
                        "attention, the same semantics as the file (float only)")
    at.add_threads_option(v, "the torch reference: ")
    v.set_defaults(func=cmd_verify)


def cmd_verify(args) -> int:
    from mst_lava.run.verify import verify
    at.resolve_dataset_options(args, "verify")
    return verify(args)


def cmd_run(args) -> int:
    from mst_lava.report import (
        json_text,
        per_inference_summary,
        run_breakdown_writer,
        run_energy,
        run_lines,
        run_markdown,
        text_writer,
        write_report_folder,
    )
    from mst_lava.run.lava_backend import uses_process_graph_options
    at.resolve_dataset_options(args, "run")
    if args.T < 1:
        raise MSTError(f"--T must be at least 1, not {args.T}")
    if args.backend == "torch" and uses_process_graph_options(args):
        raise MSTError("--granularity, --no-pipeline and --lava-conv shape the Lava process graph; "
                       "--backend torch has none")
    if args.backend != "torch" and (args.device is not None or args.batch_size is not None
                                    or args.threads is not None):
        raise MSTError("--device, --batch-size and --threads configure --backend torch; Lava backends run sample "
                       "by sample on the CPU (or Loihi)")
    if args.report:
        from mst_lava.fileio import check_output_dir
        from mst_lava.report import RUN_REPORT_FILES
        check_output_dir(args.report, "--report", names=RUN_REPORT_FILES, inputs=[args.net])
    if args.backend == "torch":
        from mst_lava.run import torch_backend as backend
    else:
        from mst_lava.run import lava_backend as backend
    rec = backend.run(args)
    res, labels = rec.result, rec.labels
    acc = float((res.pred == labels).mean())
    summary = per_inference_summary(res)
    energy, energy_note = run_energy(summary, rec.precision, rec.graph, rec.images)
    print(f"predictions: {res.pred.tolist()}")
    print(f"labels:      {labels.tolist()}")
    print(f"accuracy {100 * acc:.2f} % ({int((res.pred == labels).sum())}/{len(labels)})")
    for line in run_lines(summary, rec.precision, energy, energy_note):
        print(line)
    print(rec.throughput_line)
    if args.report:
        report = {
            "command": "mst " + " ".join(sys.argv[1:]) if sys.argv else "",
            "network": str(args.net), "dataset": rec.dataset, "backend": args.backend,
            "precision": rec.precision, **rec.setup,
            "T": args.T, "n_samples": int(len(labels)), "offset": args.offset,
            "rsm_seed": rec.seed, "mask": rec.graph.attrs.get("mask"),
            "neuron_types": sorted({str(L.neuron["type"]) for L in rec.graph.layers if L.neuron is not None}),
            "labels": labels.tolist(), "predictions": res.pred.tolist(), "accuracy": acc,
            "logits": res.logits.tolist(), "scores": res.scores.tolist(),
            "counts_per_layer_total": res.counts, "per_inference": summary,
            "energy": energy, "energy_note": energy_note,
            "throughput": rec.throughput,
            "machine": rec.machine,
        }
        files = [("report.json", text_writer(json_text(report))), ("summary.md", text_writer(run_markdown(report)))]
        plot = run_breakdown_writer(report)
        if plot is not None:
            files.append(("energy_breakdown.png", plot))
        # every file of the report, all or nothing (a full disk left report.json without summary.md)
        paths = write_report_folder(args.report, files)
        print(f"wrote {' and '.join(str(p) for p in paths)}")
    return 0
