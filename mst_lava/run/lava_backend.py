"""``mst run`` on a Lava backend (lava-cpu: ``Loihi2SimCfg``; loihi: ``Loihi2HwCfg``): build the process graph
from the file, run it sample by sample. Imports no torch (tests/test_format_core.py)."""
from __future__ import annotations

import time
from contextlib import contextmanager

import numpy as np

from mst_lava.errors import MSTError
from mst_lava.report import machine_info
from mst_lava.run.inputs import load_inputs
from mst_lava.run.record import ZERO_SKIP_SAMPLES, RunRecord


def add_process_graph_options(p) -> None:
    """Options that shape the Lava process graph (``mst run`` and ``mst verify``)."""
    p.add_argument("--granularity", default="block", choices=("block", "layer"),
                   help="Lava backends: block: wide fused processes, one per block part (fast, default); layer: one "
                        "Lava process per synapse, neuron population, RSM site, residual, attention op")
    p.add_argument("--no-pipeline", action="store_true",
                   help="Lava backends: zero-latency processes only (default: fused segments / synapses take one "
                        "step of latency so consecutive processes run in parallel; paths are re-aligned)")
    p.add_argument("--lava-conv", action="store_true",
                   help="Lava backends, with --granularity layer: run pointwise spike convolutions in "
                        "lava.proc.conv's Conv process (slow; shows Lava's one-step synaptic delay being compensated)")


def uses_process_graph_options(args) -> bool:
    return bool(args.lava_conv or args.no_pipeline or args.granularity != "block")


def build(graph, x, T: int, precision: str, args, seed):
    """The Lava network of ``graph`` over the inputs ``x`` (the process-graph options from ``args``)."""
    import mst_lava.lava  # noqa: F401  (registers the Python 3.11 compatibility hook first)
    from mst_lava.lava.builder import build_network
    if args.lava_conv and args.granularity != "layer":
        raise MSTError("--lava-conv needs --granularity layer")
    return build_network(graph, x, T, precision=precision, granularity=args.granularity, seed=seed,
                         pipeline=not args.no_pipeline, lava_synapses=args.lava_conv)


@contextmanager
def interrupts_stop_lava():
    """SIGINT and SIGTERM raise KeyboardInterrupt (SIGTERM: ``interrupts.Terminated``, exit 143) while Lava
    runs, so ``finally`` stops Lava's children (also when called without the CLI)."""
    from mst_lava.interrupts import handled
    with handled():
        yield


def load(net_path):
    """The network file, read and checked, with Lava importable."""
    import mst_lava.lava  # noqa: F401
    from mst_lava.lava.builder import load_graph
    return load_graph(net_path)


def run(args) -> RunRecord:
    """``mst run --backend lava-cpu|loihi``."""
    import mst_lava.lava  # noqa: F401
    from mst_lava.lava.runner import check_backend, run_network
    check_backend(args.backend)
    graph = load(args.net)
    precision = args.precision or graph.precision
    x, labels, dname = load_inputs(graph, args.dataset, args.data, args.n, args.offset, args.frames,
                                     getattr(args, "resize", False))
    t0 = time.perf_counter()
    net = build(graph, x, args.T, precision, args, args.seed)
    build_s = time.perf_counter() - t0
    print(f"{args.net}: {len(graph.layers)} layers → {net.describe()}; {precision} precision, T={args.T}, "
          f"{len(labels)} {dname} samples, backend {args.backend}")
    with interrupts_stop_lava():
        res = run_network(net, backend=args.backend, progress=not args.no_progress, desc="mst run")
    return RunRecord(
        images=np.asarray(x[:ZERO_SKIP_SAMPLES]) if np.ndim(x) == 4 else None,
        result=res, labels=labels, graph=graph, precision=precision, dataset=dname, seed=net.seed,
        setup={"granularity": args.granularity, "pipeline": net.pipeline, "pipeline_latency": net.latency},
        throughput={"steps": res.steps, "run_s": res.run_s, "steps_per_s": res.steps_per_s,
                    "images_per_s": res.n_samples / res.run_s if res.run_s > 0 else float("nan"),
                    "compile_s": res.compile_s, "build_s": build_s, "processes": res.n_procs,
                    "process_kinds": net.describe()},
        throughput_line=f"throughput {res.steps_per_s:.1f} steps/s, "
                        f"{res.n_samples / max(res.run_s, 1e-9):.2f} images/s "
                        f"({res.steps} steps in {res.run_s:.2f} s; "
                        f"compile {res.compile_s:.2f} s; {res.n_procs} Lava processes)",
        machine=machine_info())
