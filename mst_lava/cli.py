"""The ``mst`` and ``mst-export`` commands.

Each command module registers its own subparser (``register(subparsers)``); user errors
(:class:`MSTError`) print their message and exit with status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

from mst_lava import argtypes as at
from mst_lava import interrupts
from mst_lava.errors import MSTError
from mst_lava.shipped import PACKAGED, shipped_dir

# modules that add subcommands (each has ``register(subparsers)``) and the commands they add; absent
# modules are skipped. ``mst COMMAND`` imports only its own module (``mst run`` on Lava: no torch).
COMMAND_MODULES = {"mst_lava.snn.evaluate": ("snn-eval",), "mst_lava.run.commands": ("run", "verify"),
                   "mst_lava.search": ("rsm-search",), "mst_lava.official": ("import-official",),
                   "mst_lava.inspect_net": ("inspect",)}


def _add_train(sub) -> None:
    from mst_lava.model import PRESETS
    p = sub.add_parser("train", help="train a QCFS Masked Spiking Transformer (ANN)",
                       description="Train a QCFS MST with AdamW, cosine schedule with warmup, label smoothing, "
                                   "random crop/flip, bf16 autocast where the hardware has it, DDP under torchrun. "
                                   "Writes a checkpoint after every epoch (atomically).")
    at.add_dataset_options(p, "the --init or --resume checkpoint's, else the preset's own: digits→digits, "
                              "fmnist→fmnist, cifar→cifar10, dvs→cifar10-dvs, swin-t→imagenet")
    p.add_argument("--preset", default=None, choices=list(PRESETS), help="model preset (default: from the dataset)")
    p.add_argument("--arch", default=None, choices=("mst", "resnet18", "vgg16"),
                   help="architecture: the MST (default), or the QCFS ResNet-18 / VGG-16 baselines of the paper's "
                        "power table (their preset is digits, fmnist or cifar; --mask act=R masks every block)")
    p.add_argument("--qcfs-levels", type=at.positive_int, default=None, metavar="L",
                   help="QCFS quantization levels L of a fresh model (default: the preset's, 16); with --init, the "
                        "trained model is re-quantized to L levels and fine-tuned; fewer levels let the SNN "
                        "reach the ANN's accuracy in fewer time steps")
    p.add_argument("--epochs", type=at.epochs, default=30, help="training epochs (default 30)")
    p.add_argument("--batch-size", type=at.batch_size, default=64,
                   help="training samples per step, per process under torchrun (default 64)")
    p.add_argument("--lr", type=at.positive_float, default=2e-3, help="peak learning rate (AdamW, weight decay 0.05)")
    p.add_argument("--warmup-epochs", type=at.epochs_or_none, default=2,
                   help="epochs of linear learning-rate warmup before the cosine decay (default 2)")
    p.add_argument("--label-smoothing", type=at.fraction, default=0.1, help="in [0, 1) (default 0.1)")
    at.add_mask_option(p, "no masking (--resume continues with the interrupted run's ratios)", default=[])
    p.add_argument("--seed", type=at.seed, default=0, help=f"random seed in [0, {at.SEED_MAX}] (default 0)")
    p.add_argument("--out", type=at.path_text, default="mst.pt", help="checkpoint path (written after every epoch)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run saved at --out")
    p.add_argument("--init", type=at.path_text, default=None, metavar="CKPT",
                   help="fine-tune from this checkpoint (e.g. add masking)")
    p.add_argument("--device", type=at.device_or_auto, default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--workers", type=at.worker_count, default=0, help="data loader worker processes")
    p.add_argument("--frames", type=at.frame_count, default=None, help="event datasets: number of frames per sample")
    p.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"),
                   help="training arithmetic: auto = bf16 autocast on a GPU and on CPUs with native bf16 "
                        "(AVX512-BF16/AMX), fp32 elsewhere (evaluation is always fp32 on a CPU)")
    at.add_threads_option(p)
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the model for training and for the per-epoch test evaluation (about 1 min "
                        "of compilation; faster epochs)")
    p.add_argument("--ema", type=at.fraction, default=0.0, metavar="DECAY",
                   help="keep an exponential moving average of the weights and BatchNorm statistics with this "
                        "decay per step (timm's ModelEmaV3; e.g. 0.999, about two Fashion-MNIST epochs at batch "
                        "128) and evaluate and save the average instead of the last weights (default 0: off)")
    p.add_argument("--eval-from", type=at.epochs, default=1, metavar="EPOCH",
                   help="evaluate the test set only after this epoch and the later ones (the last epoch always); "
                        "saves the evaluation passes of early epochs (default 1: every epoch)")
    p.add_argument("--limit-train", type=at.sample_count, default=None, help="use only the first N training samples")
    p.set_defaults(func=_run_train)


def _run_train(args) -> int:
    from mst_lava.train import TrainConfig, train
    if args.epochs < 1 or args.batch_size < 1 or not args.lr > 0:
        raise MSTError("--epochs and --batch-size must be ≥ 1 and --lr > 0")
    _check_train_args(args)
    cfg = TrainConfig(dataset=args.dataset, data=args.data, preset=args.preset, epochs=args.epochs,
                      batch_size=args.batch_size, lr=args.lr, warmup_epochs=args.warmup_epochs,
                      label_smoothing=args.label_smoothing, mask=args.mask, seed=args.seed, out=args.out,
                      resume=args.resume, init=args.init, device=args.device, workers=args.workers,
                      frames=args.frames, precision=args.precision, compile=args.compile, threads=args.threads,
                      limit_train=args.limit_train, arch=args.arch, levels=args.qcfs_levels, ema=args.ema,
                      eval_from=args.eval_from)
    t0 = time.time()
    m = train(cfg)
    if "ann_acc" in m:
        print(f"ANN test accuracy {100 * m['ann_acc']:.2f}% after {m.get('epoch', 0) + 1} epochs, "
              f"{time.time() - t0:.1f}s; checkpoint {cfg.out}")
    return 0


def _check_train_args(args) -> None:
    """Before any data is read: the mask parses, the checkpoints to read are valid, --out can be written."""
    from mst_lava.checkpoint import check_output_file, read_checkpoint
    at.parse_mask_words(args.mask)
    if args.resume and args.init:
        raise MSTError("--resume continues the run saved at --out and --init starts a new one from a checkpoint: "
                       "give one of them")
    if args.init:
        read_checkpoint(args.init)
    if args.resume:
        read_checkpoint(args.out)
    check_output_file(args.out, "--out", inputs=[args.init] if args.init else [])


EXPORT_DIR = shipped_dir("export")     # the checkout's export/, or the wheel's copy (digits.net)
# the shipped networks `mst demo` runs: dataset → (file, how it was made)
SHIPPED = {"digits": ("digits.net", "mst-export export/digits.pt -o export/digits.net --precision fixed"),
           "fmnist": ("fmnist.net", "mst-export export/fmnist.pt -o export/fmnist.net --precision fixed "
                                    "--merge-input events")}
# ... and the graded-spike network of each (IF_BURST neurons, B = the checkpoint's QCFS levels), run at T = 1
SHIPPED_GRADED = {"digits": ("digits_burst.net", "mst-export export/digits.pt -o export/digits_burst.net "
                                                 "--precision fixed --burst 16"),
                  "fmnist": ("fmnist_burst.net", "mst-export export/fmnist.pt -o export/fmnist_burst.net "
                                                 "--precision fixed --burst 8 --merge-input events")}


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="run a shipped model on Lava's CPU simulator (README's `make demo`)",
                       description="Runs a shipped network (export/digits.net by default, export/fmnist.net with "
                                   "--dataset fmnist; both exported in fixed point) on Lava's CPU simulator over "
                                   "the first test images and prints accuracy, spike counts, synaptic ops and "
                                   "energy; then the same images through the graded-spike network of the same "
                                   "checkpoint (export/digits_burst.net, export/fmnist_burst.net: IF_BURST neurons, "
                                   "T = 1) and a side-by-side table; writes both reports. No training.")
    p.add_argument("--dataset", default="digits", choices=tuple(SHIPPED),
                   help="digits (default, the quick one: 8x8 images) or fmnist (Fashion-MNIST 28x28; needs "
                        "`make data`)")
    p.add_argument("--n", type=at.sample_count, default=None,
                   help="number of test images (default 100 digits, 20 fmnist)")
    p.add_argument("--T", type=at.time_steps, default=64, help="time steps per image (default 64)")
    p.add_argument("--report", type=at.path_text, default=None,
                   help="report folder (default runs/demo or runs/demo-fmnist); the graded network's report goes "
                        "to its subfolder graded/")
    p.add_argument("--no-graded", action="store_true", help="run the binary network only")
    p.set_defaults(func=_run_demo)


def _run_demo(args) -> int:
    name, how = SHIPPED[args.dataset]
    net = EXPORT_DIR / name
    if not net.exists():
        if EXPORT_DIR.is_relative_to(PACKAGED):
            raise MSTError(f"this installed mst_lava ships export/digits.net only, not {name}: in a checkout, "
                           f"export it with `{how}` and run it with `mst run FILE --dataset {args.dataset}`")
        raise MSTError(f"the shipped network {net} is missing; re-create it with `{how}`")
    n = args.n if args.n is not None else (100 if args.dataset == "digits" else 20)
    report = args.report or ("runs/demo" if args.dataset == "digits" else f"runs/demo-{args.dataset}")

    def run(file, T, rep):
        return main(["run", str(file), "--dataset", args.dataset, "--n", str(n), "--T", str(T),
                     "--backend", "lava-cpu", "--precision", "fixed", "--report", str(rep)])
    rc = run(net, args.T, report)
    graded = EXPORT_DIR / SHIPPED_GRADED[args.dataset][0]
    if rc or args.no_graded:
        return rc
    if not graded.exists():
        print(f"(no graded network: {graded} is missing; make it with `{SHIPPED_GRADED[args.dataset][1]}`)")
        return 0
    print(f"\n--- the graded-spike network of the same checkpoint: {graded.name}, T = 1 ---")
    rc = run(graded, 1, Path(report) / "graded")
    if rc == 0:
        print()
        print(demo_table([Path(report) / "report.json", Path(report) / "graded" / "report.json"]))
    return rc


def demo_table(reports) -> str:
    """The side-by-side table ``mst demo`` prints from its two ``mst run`` reports."""
    from mst_lava.energy import format_energy
    rows = ["| network | neurons | T | accuracy | Lava steps | images/s | energy per inference (45 nm) | SNN/ANN |",
            "|---|---|---|---|---|---|---|---|"]
    for p in reports:
        r = json.loads(Path(p).read_text())
        th, tp = r["energy"]["theoretical"], r["throughput"]
        kind = ", ".join(r.get("neuron_types") or ["IF"])
        rows.append(f"| {Path(r['network']).name} | {kind} | {r['T']} | {100 * r['accuracy']:.2f} % | {tp['steps']} | "
                    f"{r['n_samples'] / tp['run_s']:.2f} | {format_energy(th['total_with_residual_and_dynamic_pJ'])} "
                    f"({th['precision']}) | {th.get('ratio_to_ann_with_extra', float('nan')):.3f} |")
    return "\n".join(rows) + ("\n(SNN/ANN: with residual and dynamic products, against the dense ANN from the "
                               "file's own graph, same constants)")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``mst`` parser with every command, or, given ``command``, with that one only (its module alone is
    imported)."""
    parser = at.OneLineParser(prog="mst", description="Masked Spiking Transformer: train, convert to "
                                     "spikes with Random Spike Masking, export to Lava/Loihi, report energy.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    if command in (None, "train"):
        _add_train(sub)
    for mod, names in COMMAND_MODULES.items():
        if command is not None and command not in names:
            continue
        try:
            module = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name and mod.startswith(e.name):
                continue
            raise
        module.register(sub)
    if command in (None, "demo"):
        _add_demo(sub)
    return parser


def _command_of(argv) -> str | None:
    """The command ``argv`` names, if it is one of ours (then only its parser is built), else None."""
    argv = sys.argv[1:] if argv is None else list(argv)
    known = {"train", "demo"}.union(*COMMAND_MODULES.values())
    return argv[0] if argv and argv[0] in known else None


def _dispatch(func, args) -> int:
    try:
        with interrupts.handled():
            return int(func(args) or 0)
    except MSTError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:      # Ctrl-C: 130, SIGTERM: 143; cleanup (temp files, Lava) already ran
        print(interrupts.message(e), file=sys.stderr)
        return interrupts.exit_status(e)


def _exit_code(e: SystemExit) -> int:
    return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)


def main(argv=None) -> int:
    """``mst COMMAND ...``; returns the exit status (2 for a bad argument: one line on stderr)."""
    try:
        args = build_parser(_command_of(argv)).parse_args(argv)
    except SystemExit as e:   # argparse: --help (0) or a bad argument (2, its one-line message printed)
        return _exit_code(e)
    return _dispatch(args.func, args)


def export_main(argv=None) -> int:
    """``mst-export model.pt -o export/model.net ...``"""
    from mst_lava.export.cli import export_main as run
    try:
        with interrupts.handled():
            return int(run(argv) or 0)
    except SystemExit as e:
        return _exit_code(e)
    except MSTError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:      # Ctrl-C: 130, SIGTERM: 143; the temp file is already removed
        print(f"mst-export: {interrupts.message(e)}", file=sys.stderr)
        return interrupts.exit_status(e)


if __name__ == "__main__":
    sys.exit(main())
