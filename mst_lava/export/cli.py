"""``mst-export model.pt -o export/model.net [--precision float|fixed] [--mask SITE=R ...] [--seed S]
[--merge-input graded|events]``."""
from __future__ import annotations

import argparse
import sys

from mst_lava import argtypes as at
from mst_lava import netx_ops as ops
from mst_lava import neurons
from mst_lava.errors import MSTError

DESCRIPTION = """\
Export a trained Masked Spiking Transformer checkpoint to a netx HDF5 file for Lava.

BatchNorm is folded into weights and biases, every QCFS site becomes an integrate-and-fire
neuron (threshold λ, reset by subtraction, initial potential λ/2), token-wise linear layers
become 1x1 convolutions on the token grid, patch embedding and merging strided convolutions.
Plain layers are written as standard netx groups, window attention, residual stream, RSM
sites and the readout as versioned mst_lava extension groups (docs/netx-mst-format.md).
"""

EPILOG = """\
examples:
  mst-export export/digits.pt -o export/digits.net
  mst-export export/digits.pt -o export/digits_fixed.net --precision fixed
  mst-export model.pt -o masked.net --mask Q=0.75 K=0.75 A=0.75 --seed 1000
  mst-export export/fmnist.pt -o fmnist_events.net --precision fixed --merge-input events

RSM sites: SC1 Q K A V AV Proj SC2 MLP1 MLP2 embed merge (SITE@BLOCK=R for one block); one --mask
holds the whole configuration, as in every mst command.
"""


def build_parser(prog: str = "mst-export") -> argparse.ArgumentParser:
    p = at.OneLineParser(prog=prog, description=DESCRIPTION, epilog=EPILOG,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="trained MST checkpoint (.pt) written by `mst train`")
    p.add_argument("-o", "--out", required=True, metavar="NET", type=at.path_text,
                   help="output netx HDF5 file, e.g. export/model.net (written atomically)")
    p.add_argument("--precision", choices=("float", "fixed"), default="float",
                   help="float: float weights and thresholds; fixed: additionally Loihi-style 8-bit weight "
                        "mantissas with a per-layer exponent, integer thresholds and biases, and integer "
                        "softmax/product arithmetic (float values are kept too). Default: float")
    at.add_mask_option(p, "the ratios the checkpoint was trained with")
    p.add_argument("--seed", type=at.seed, default=0,
                   help=f"RSM mask seed written into the file, in [0, {at.SEED_MAX}] (default 0)")
    p.add_argument("--merge-input", choices=ops.MERGE_INPUTS, default="graded",
                   help="what each patch merging reads. graded: the stage's graded residual stream, a dense "
                        "multiply-accumulate per input value every step (analog MACs; extension version 1 or 2 "
                        "files, as before). events: the spike trains that stream sums (the stage's embed or merge "
                        "spikes, every block's Proj and MLP2 spikes), one composed weight set per train "
                        "(merge weight × the train's residual gain; with the official topology's stream BatchNorm "
                        "also its scale, its offset folded into the bias), so each spike costs accumulations only; "
                        "fixed point: one 8-bit weight exponent per train, all sharing the neurons' membrane unit. "
                        "Equal to graded up to float rounding in float; its own rounding in fixed point. Needs "
                        "extension version 3 (format section 5b): older mst_lava releases refuse such files. "
                        "Default: graded")
    p.add_argument("--burst", type=at.positive_int, default=1, metavar="B",
                   help="graded (burst) neurons: every neuron may fire up to B spikes of λ/B per step, sent as one "
                        "graded message with an integer payload (neuron type IF_BURST, format extension version 4; "
                        "Loihi 2 graded spikes, Lava's num_message_bits). B = the checkpoint's QCFS levels L is "
                        "lossless: at --T 1 the file computes the ANN (e.g. --burst 8 for export/fmnist.pt, 16 for "
                        "export/digits.pt). Default 1: binary IF neurons, as before")
    p.add_argument("--payload-bits", type=at.positive_int, default=neurons.DEFAULT_MAX_PAYLOAD_BITS, metavar="N",
                   help="the widest graded payload --burst may need, ceil(log2(B + 1)) bits; at most "
                        f"{neurons.MAX_PAYLOAD_BITS} (Lava's graded spikes). Default "
                        f"{neurons.DEFAULT_MAX_PAYLOAD_BITS} (what Intel calls typical on Loihi 2)")
    p.add_argument("--weight-exponents", choices=("auto", "layer", "channel"), default="auto",
                   help="fixed point: one Loihi weight exponent per conv (layer) or one per output channel (channel: "
                        "every channel keeps nearly 8 bits of its own; on Loihi one synapse group per exponent; "
                        "extension version 4). auto (default): channel for --burst B > 1, whose one-step graded "
                        "payloads need the precision, layer otherwise (the binary files as before)")
    p.add_argument("--summary", action="store_true", help="print the exported layer table")


def run(args) -> int:
    from mst_lava.checkpoint import check_output_file, meta_model, read_checkpoint
    from mst_lava.export.exporter import export_checkpoint
    from mst_lava.model.rsm import check_mask_sites
    mask = at.parse_mask_words(args.mask) if args.mask else None
    if not 0 <= args.seed <= at.SEED_MAX:
        raise MSTError(f"--seed must be in [0, {at.SEED_MAX}], got {args.seed}")
    out = str(args.out)
    if not out.strip():
        raise MSTError("--out is empty; give a file name such as export/model.net")
    check_output_file(out, "-o", inputs=[args.checkpoint])
    ckpt = read_checkpoint(args.checkpoint)          # validated before the export builds anything
    if mask:
        check_mask_sites(mask, meta_model(ckpt, args.checkpoint), "--mask")
    del ckpt        # --burst and --payload-bits are checked by export_model before anything is written
    graph = export_checkpoint(args.checkpoint, out, precision=args.precision, mask=mask, seed=args.seed,
                              merge_input=args.merge_input, burst=args.burst, payload_bits=args.payload_bits,
                              weight_exponents=args.weight_exponents)
    n_sites = len(graph.sites())
    masked = {f"{layer.site}@{layer.block}": layer.rsm_ratio for _, layer in graph.sites() if layer.rsm_ratio > 0}
    if args.summary:
        print(graph.summary())
    kind = "binary IF neurons" if args.burst == 1 else \
        f"graded IF_BURST neurons, B = {args.burst} ({neurons.payload_bits(args.burst)}-bit payloads)"
    print(f"wrote {out}: {len(graph)} layers, {n_sites} neuron sites ({kind}), precision {args.precision}, "
          f"RSM {'off' if not masked else f'{len(masked)} sites masked'} (seed {args.seed})")
    return 0


def export_main(argv=None) -> int:
    """Console entry point of ``mst-export``; user errors print a message and exit 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return run(args)
    except MSTError as e:
        print(f"mst-export: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(export_main())
