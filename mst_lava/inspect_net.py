"""``mst inspect model.net [--target loihi2|loihi] [--json out.json]``: what a network needs from the chip.

Per layer: neurons; synapses (fan-in per neuron, fan-out per presynaptic neuron, total
connections and those with a non-zero weight); the bit widths the fixed-point parameters use
(weight mantissa and exponent, threshold mantissa, bias mantissa and exponent, and the
voltage range left in thresholds); where the layer runs on the target: **neurocores**
(synapses and IF neurons), the chip's **embedded processors** (the dynamic products Q·Kᵀ and
softmax·V of the attention) or the **host** (input encoding, readout; on the first Loihi also
everything that needs graded spikes). Then a greedy partition of every neurocore layer into
cores under the per-core limits of ``hw_profiles/<target>.json`` (each limit with its source
and kind there: published, public code, derived or unpublished), giving cores and chips.

Partition (per layer, one layer per core as NengoLoihi does): a conv layer's output channels
are cut into the fewest equal slices whose single output position fits a core; then output
positions are added in raster order while neurons, input axons (distinct presynaptic neurons
of the core), synapses and synaptic memory stay within the limits. Output axons (one per
destination core of each neuron) are then checked against the consumers' partition and
over-full cores are split. A/AV neurons take their current from the embedded processor (one
input axon each); on Loihi 2 the residual stream is a layer of relay neurons with graded
spikes (one synapse per input). The result is an estimate from public limits, not a
placement by Intel's compiler.
"""
from __future__ import annotations

import math
import sys

import numpy as np

from mst_lava import neurons
from mst_lava.errors import MSTError

TARGETS = ("loihi2", "loihi")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "inspect", help="per-layer neurons, synapses, bit widths, mapping and a core/chip estimate for a .net file",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None)
    p.add_argument("net", help="network file (.net) written by mst-export")
    p.add_argument("--target", choices=TARGETS, default="loihi2", help="chip whose limits apply (default loihi2)")
    p.add_argument("--json", default=None, metavar="OUT.json", help="also write the inspection as JSON")
    p.set_defaults(func=cmd_inspect)


def cmd_inspect(args) -> int:
    from mst_lava.export import read_network
    if args.json:       # before anything is read: --json must not be the network itself (another spelling, a link)
        from mst_lava.fileio import check_output_file
        check_output_file(args.json, "--json output", inputs=[args.net])
    graph = read_network(args.net)
    rep = inspect_graph(graph, args.target)
    rep["file"] = str(args.net)
    if args.json:
        from mst_lava.report import write_json
        write_json(args.json, rep, "--json output")
    sys.stdout.write(markdown(rep))
    if args.json:
        print(f"\nwrote {args.json}")
    return 0


# ----------------------------------------------------------------------------------------
# limits

def core_limits(target: str) -> dict:
    from mst_lava.energy import load_profile
    if target not in TARGETS:
        raise MSTError(f"--target must be one of {', '.join(TARGETS)}, not {target!r}")
    prof = load_profile(target)
    cores = prof.get("cores")
    if not isinstance(cores, dict):
        raise MSTError(f"hardware profile {target} has no 'cores' limits")

    def val(k):
        v = cores.get(k, {})
        return v.get("value") if isinstance(v, dict) else None

    enc = cores.get("synapse_encoding") or {}
    return {
        "target": target, "title": prof.get("title", target),
        "cores_per_chip": int(val("neuro_cores_per_chip")),
        "embedded_per_chip": int(val("embedded_processors_per_chip")),
        "neurons": val("neurons_per_core"), "fan_in": val("fan_in_axons_per_core"),
        "fan_out": val("fan_out_axons_per_core"), "synapse_bits": val("synapse_memory_bits_per_core"),
        "synapses": val("synapses_per_core"), "graded": bool(val("graded_spikes")),
        "encoding": enc if enc else None,
        "table": [(k, v) for k, v in cores.items() if isinstance(v, dict) and "value" in v],
        "statement": cores.get("statement", ""),
    }


# ----------------------------------------------------------------------------------------
# per-layer figures

def _bits_signed(m: int) -> int:
    return int(m).bit_length() + 1 if m else 1


def _cover(n, k, s, p, no):
    """For each kernel offset j: the number of output positions o whose input o·s − p + j is valid."""
    out = np.zeros(k, dtype=np.int64)
    for j in range(k):
        for o in range(no):
            if 0 <= o * s - p + j < n:
                out[j] += 1
    return out


def _conv_geometry(L, in_shape):
    from mst_lava.export.validate import _pair
    w = np.asarray(L.params["weight"])
    w = w.reshape(w.shape[:4])
    Co, Cg, kH, kW = w.shape
    C, H, W = in_shape
    sy, sx = _pair(L.params.get("stride", 1))
    py, px = _pair(L.params.get("padding", 0))
    groups = int(np.asarray(L.params.get("groups", 1)).reshape(-1)[0])
    _, Ho, Wo = L.shape
    return w, dict(Co=Co, Cg=Cg, kH=kH, kW=kW, C=C, H=H, W=W, sy=sy, sx=sx, py=py, px=px, groups=groups,
                   Ho=Ho, Wo=Wo)


def _conv_synapses(w, g) -> tuple[int, int, int, int]:
    """(total connections, non-zero ones, max fan-in, max fan-out) of a conv layer."""
    cy = _cover(g["H"], g["kH"], g["sy"], g["py"], g["Ho"])
    cx = _cover(g["W"], g["kW"], g["sx"], g["px"], g["Wo"])
    valid = cy[:, None] * cx[None, :]                          # (kH, kW) output positions per offset
    per_offset_all = np.full((g["kH"], g["kW"]), g["Co"] * g["Cg"], dtype=np.int64)
    per_offset_nz = (w != 0).sum(axis=(0, 1)).astype(np.int64)
    total = int((per_offset_all * valid).sum())
    nz = int((per_offset_nz * valid).sum())
    fan_in = g["Cg"] * g["kH"] * g["kW"]
    from mst_lava import netx_ops as ops
    fan_out = int(ops.conv_fanout((g["C"], g["H"], g["W"]), np.ones(w.shape[:4], dtype=bool), (g["sy"], g["sx"]),
                                  (g["py"], g["px"]), g["groups"]).max(initial=0))      # every connection
    return total, nz, fan_in, fan_out


def _bit_widths(L) -> dict:
    out = {}
    if L.type in ("conv", "mst_readout") and L.fix:
        w = np.abs(np.asarray(L.params["weight"]).astype(np.int64))
        out["weight_bits"] = _bits_signed(int(w.max(initial=0)))
        e = np.asarray(L.fix["weight_exp"]).reshape(-1)
        out["weight_exp"] = int(e.max(initial=0))       # an event-driven merge (§5b) has one per input: the largest
        if e.size > 1:
            out["weight_exps"] = [int(v) for v in e]
        b = np.asarray(L.params["bias"]).astype(np.int64)
        be = int(L.fix.get("bias_exp", 0))
        out["bias_bits"] = _bits_signed(int(np.abs(b >> be).max(initial=0)))
        out["bias_exp"] = be
    if L.neuron is not None:          # payload bits of the messages the neurons send (0: binary spikes)
        out["message_bits"] = neurons.payload_bits(neurons.burst_of(L.neuron))
    if L.neuron is not None and "vThMant" in L.neuron:
        vm = int(L.neuron["vThMant"])
        out["threshold_bits"] = vm.bit_length()
        out["voltage_range_thresholds"] = round((2 ** 23 - 1) / (vm << 6), 1)
    if L.type == "mst_residual" and L.fix:
        out["gain_bits"] = _bits_signed(int(np.abs(np.asarray(L.fix["gain"])).max(initial=0)))
    return out


def _placement(L, graph, graded: bool) -> tuple[str, str]:
    """(where the neurons/state go, where the computation goes) for one layer."""
    src_graded = any(graph.layers[k].output == "graded" for k in L.inputs)
    t = L.type
    if t == "input":
        return "host", "host: encodes the image as graded payloads every step" if graded else \
            "host: the analog image (Loihi 1 has no graded spikes: rate-code it or keep it off-chip)"
    if t == "conv":
        if src_graded and not graded:
            return "host", "host: its input is a graded stream, which Loihi 1 spikes cannot carry"
        nrn = neurons.of(L.neuron).loihi_mapping(graded)
        if nrn is None:
            return "host", "host: graded-payload (IF_BURST) neurons, which Loihi 1 spikes cannot carry"
        return "neurocore", f"neurocore: synapses + {nrn}" + (" (graded input spikes)" if src_graded else "")
    if t == "mst_residual":
        if graded:
            return "neurocore", "neurocore: graded relay neurons, one synapse per input (gains as weights)"
        return "host", "host: graded accumulation (Loihi 1 has no graded spikes)"
    if t in ("mst_qk", "mst_softmax_av"):
        what = "Q·Kᵀ products" if t == "mst_qk" else "softmax and ·V products"
        if graded:
            return "neurocore", (f"embedded processors: {what}; neurocore: "
                                 f"{neurons.of(L.neuron).loihi_mapping(graded)} (graded current input)")
        return "host", f"embedded processors/host: {what} and the IF neurons (no graded input on Loihi 1)"
    if t == "mst_readout":
        return "host", "host/embedded processor: token sum and class scores"
    return "host", f"host: {t}"


# ----------------------------------------------------------------------------------------
# partition

class _Core:
    __slots__ = ("neurons", "axons", "synapses", "bits")

    def __init__(self, neurons, axons, synapses, bits):
        self.neurons, self.axons, self.synapses, self.bits = neurons, axons, synapses, bits


def _mem_bits(axons: int, synapses: int, neurons: int, enc, dense: bool = False) -> int:
    """Synaptic memory of a core with the encoding of the profile (NengoLoihi's model), or 0.
    ``dense``: every axon reaches a contiguous run of the core's neurons (no index bits)."""
    if not enc or axons <= 0:
        return 0
    per = synapses / axons
    idx = 0 if dense else max(6, math.ceil(math.log2(max(neurons, 2))))
    wb = int(enc.get("weight_bits", 8))
    blk = int(enc.get("block_synapses", 64))
    hdr = int(enc.get("header_bits", 10))
    word = int(enc.get("word_bits", 64))
    nblk = math.ceil(per / blk) if per > 0 else 0
    bits_axon = math.ceil((per * (wb + idx) + hdr * nblk) / word) * word
    return int(axons * bits_axon)


def _fits(lim, neurons, axons, synapses, bits) -> bool:
    if lim["neurons"] is not None and neurons > lim["neurons"]:
        return False
    if lim["fan_in"] is not None and axons > lim["fan_in"]:
        return False
    if lim["synapses"] is not None and synapses > lim["synapses"]:
        return False
    if lim["synapse_bits"] is not None and bits > lim["synapse_bits"]:
        return False
    return True


def _partition_conv(w, g, lim) -> tuple[list, int]:
    """Cores of one conv layer: (list of _Core for one channel slice, number of slices)."""
    Co, Cg, groups = g["Co"], g["Cg"], g["groups"]
    og = Co // groups
    enc = lim["encoding"]
    # a pointwise conv's axon (one input channel at one position) reaches all the core's channels at
    # that position: a dense run of weights, stored without index bits; other convs use the sparse format
    dense = g["kH"] == g["kW"] == 1 and groups == 1
    H, W, kH, kW = g["H"], g["W"], g["kH"], g["kW"]
    positions = [(y, x) for y in range(g["Ho"]) for x in range(g["Wo"])]

    def rf(y, x):
        y0, x0 = y * g["sy"] - g["py"], x * g["sx"] - g["px"]
        ys = [yy for yy in range(y0, y0 + kH) if 0 <= yy < H]
        xs = [xx for xx in range(x0, x0 + kW) if 0 <= xx < W]
        return ys, xs

    cs = Co
    while True:
        cin = min(g["C"], math.ceil(cs / og) * Cg)
        ys, xs = rf(*positions[0]) if positions else ([], [])
        n1 = len(ys) * len(xs) * cin
        s1 = cs * len(ys) * len(xs) * Cg
        if _fits(lim, cs, n1, s1, _mem_bits(n1, s1, cs, enc, dense)) or cs == 1:
            break
        cs = math.ceil(cs / 2)
    n_slices = math.ceil(Co / cs)
    cin = min(g["C"], math.ceil(cs / og) * Cg)
    cores = []
    mask = np.zeros((H, W), dtype=bool)
    npos = syn = 0

    def close():
        ax = int(mask.sum()) * cin
        cores.append(_Core(npos * cs, ax, syn, _mem_bits(ax, syn, npos * cs, enc, dense)))

    for (y, x) in positions:
        ys, xs = rf(y, x)
        add = len(ys) * len(xs) * Cg * cs
        trial = mask.copy()
        if ys and xs:
            trial[np.ix_(ys, xs)] = True
        ax = int(trial.sum()) * cin
        n = (npos + 1) * cs
        if npos and not _fits(lim, n, ax, syn + add, _mem_bits(ax, syn + add, n, enc, dense)):
            close()
            mask[:] = False
            npos = syn = 0
            if ys and xs:
                mask[np.ix_(ys, xs)] = True
            npos, syn = 1, add
        else:
            mask, npos, syn = trial, npos + 1, syn + add
    if npos:
        close()
    return cores, n_slices


def _partition_pointwise(neurons: int, inputs_per_neuron: int, lim) -> list:
    """Cores of neurons with private inputs (A/AV neurons: 1 axon each; residual relays: one per input)."""
    enc = lim["encoding"]
    per = neurons
    while per > 1:
        ax = per * inputs_per_neuron
        if _fits(lim, per, ax, ax, _mem_bits(ax, ax, per, enc, True)):
            break
        per = math.ceil(per / 2)
    n = math.ceil(neurons / per)
    cores = []
    left = neurons
    for _ in range(n):
        k = min(per, left)
        left -= k
        ax = k * inputs_per_neuron
        cores.append(_Core(k, ax, ax, _mem_bits(ax, ax, k, enc, True)))
    return cores


# ----------------------------------------------------------------------------------------
# inspection

def inspect_graph(graph, target: str = "loihi2") -> dict:
    if getattr(graph, "kind", "mst") != "mst":
        raise MSTError(f"{graph.path or 'the network'} is a plain lava-dl netx file; `mst inspect` reads "
                       "mst_lava.netx files")
    lim = core_limits(target)
    layers = graph.layers
    rows = []
    parts: dict[int, dict] = {}
    for i, L in enumerate(layers):
        neurons = int(np.prod(L.shape))
        row = {"index": i, "name": L.name, "type": L.type, "shape": [int(s) for s in L.shape],
               "neurons": neurons if L.type != "input" else 0, "fan_in": 0, "fan_out": 0, "synapses": 0,
               "nonzero_synapses": 0, "dynamic_ops_per_step": 0}
        where, what = _placement(L, graph, lim["graded"])
        row["maps_to"], row["mapping"] = where, what
        if L.type == "conv":
            C0, H0, W0 = layers[L.inputs[0]].shape          # several spike inputs (§5b): one conv over their stacked
            w, g = _conv_geometry(L, (C0 * len(L.inputs), H0, W0))      # channels, one weight set per input
            tot, nz, fi, fo = _conv_synapses(w, g)
            row.update(synapses=tot, nonzero_synapses=nz, fan_in=fi, fan_out=fo)
            if where == "neurocore":
                cores, ns = _partition_conv(w, g, lim)
                parts[i] = {"cores": cores, "slices": ns}
        elif L.type == "mst_residual":
            row.update(fan_in=len(L.inputs), fan_out=1, synapses=neurons * len(L.inputs),
                       nonzero_synapses=neurons * len(L.inputs))
            if where == "neurocore":
                parts[i] = {"cores": _partition_pointwise(neurons, len(L.inputs), lim), "slices": 1}
        elif L.type in ("mst_qk", "mst_softmax_av"):
            w_, h = int(L.mst["window"]), int(L.mst["heads"])
            N = w_ * w_
            if L.type == "mst_qk":
                nW = int(L.shape[0])
                d = int(layers[L.inputs[0]].shape[0]) // h
                row["dynamic_ops_per_step"] = nW * h * N * N * d          # Q·Kᵀ multiply-accumulates
            else:
                nW, d = int(layers[L.inputs[0]].shape[0]), int(L.shape[0]) // h
                row["dynamic_ops_per_step"] = nW * h * N * N * (d + 1)    # softmax elements + ·V MACs
            row.update(fan_in=1, fan_out=1, synapses=neurons, nonzero_synapses=neurons)
            if where == "neurocore":
                parts[i] = {"cores": _partition_pointwise(neurons, 1, lim), "slices": 1}
        elif L.type == "mst_readout":
            w = np.asarray(L.params["weight"])
            row.update(neurons=0, fan_in=int(w.shape[1]), fan_out=int(w.shape[0]), synapses=int(w.size),
                       nonzero_synapses=int((w != 0).sum()))
        row.update(_bit_widths(L))
        rows.append(row)
    # output axons: each neuron needs one axon per destination core; split cores that exceed the limit
    consumers: dict[int, list] = {}
    for j, L in enumerate(layers):
        for k in L.inputs:
            consumers.setdefault(k, []).append(j)
    for i, p in parts.items():
        dest = sum(parts[j]["slices"] if j in parts else 0 for j in consumers.get(i, []))
        p["dest_per_neuron"] = dest
        if lim["fan_out"] and dest:
            extra = []
            for c in p["cores"]:
                need = c.neurons * dest
                k = math.ceil(need / lim["fan_out"])
                if k > 1:
                    extra.append(k - 1)
            p["split_for_fan_out"] = sum(extra)
        else:
            p["split_for_fan_out"] = 0
    total_cores = 0
    for i, p in parts.items():
        n = len(p["cores"]) * p["slices"] + p["split_for_fan_out"] * p["slices"]
        total_cores += n
        r = rows[i]
        cs = p["cores"]
        r["cores"] = n
        r["core_max"] = {"neurons": max(c.neurons for c in cs), "fan_in_axons": max(c.axons for c in cs),
                         "synapses": max(c.synapses for c in cs), "synapse_bits": max(c.bits for c in cs),
                         "fan_out_axons": max(c.neurons for c in cs) * p["dest_per_neuron"]}
    for r in rows:
        r.setdefault("cores", 0)
    chips = max(1, math.ceil(total_cores / lim["cores_per_chip"])) if total_cores else 0
    on = [r for r in rows if r["maps_to"] == "neurocore"]
    totals = {
        "layers": len(rows),
        "neurocore_layers": len(on),
        "neurons_on_neurocores": sum(r["neurons"] for r in on),
        "neurons_off_chip": sum(r["neurons"] for r in rows if r["maps_to"] != "neurocore"),
        "synapses_on_neurocores": sum(r["synapses"] for r in on),
        "nonzero_synapses_on_neurocores": sum(r["nonzero_synapses"] for r in on),
        "synapses_total": sum(r["synapses"] for r in rows),
        "embedded_ops_per_step": sum(r["dynamic_ops_per_step"] for r in rows),
        "cores": total_cores, "chips": chips,
        "embedded_processors_available": chips * lim["embedded_per_chip"],
        "host_layers": [r["name"] for r in rows if r["maps_to"] == "host"],
    }
    return {"target": target, "title": lim["title"], "precision": graph.precision, "layers": rows,
            "totals": totals, "limits": {k: v for k, v in lim.items() if k not in ("table",)},
            "limit_sources": {k: v for k, v in lim["table"]}}


# ----------------------------------------------------------------------------------------
# markdown

def _n(v) -> str:
    if v is None:
        return "—"
    v = float(v)
    for unit, f in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= f:
            return f"{v / f:.3g} {unit}"
    return f"{int(v)}" if v == int(v) else f"{v:.3g}"


def _names(names: list, k: int = 8) -> str:
    if not names:
        return "nothing"
    more = f" … (+{len(names) - k} more; all in --json)" if len(names) > k else ""
    return f"{len(names)} layer(s): " + ", ".join(names[:k]) + more


def markdown(rep: dict) -> str:
    t = rep["totals"]
    fixed = rep["precision"] == "fixed"
    L = [f"# mst inspect: {rep.get('file', 'network')} → {rep['title']}", "",
         f"- {t['layers']} layers; {t['neurocore_layers']} on neurocores with {_n(t['neurons_on_neurocores'])} neurons "
         f"and {_n(t['synapses_on_neurocores'])} synapses ({_n(t['nonzero_synapses_on_neurocores'])} non-zero)",
         f"- greedy partition: **{t['cores']} neurocores → {t['chips']} chip(s)** "
         f"({rep['limits']['cores_per_chip']} cores and {rep['limits']['embedded_per_chip']} embedded processors "
         f"per chip)",
         f"- embedded processors: {_n(t['embedded_ops_per_step'])} dynamic-product operations per time step "
         f"(Q·Kᵀ MACs, softmax elements, ·V MACs) on {t['embedded_processors_available']} embedded processor(s)",
         f"- host: {_names(t['host_layers'])}"]
    if not fixed:
        L.append("- float file: no bit widths (export with `--precision fixed` for Loihi's integer parameters)")
    L += ["", "| # | layer | type | shape | neurons | fan-in | fan-out | synapses | non-zero | "
          "weight bits (exp) | threshold bits | bias bits (exp) | V range (θ) | message bits | runs on | cores |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rep["layers"]:
        wb = f"{r['weight_bits']} ({r['weight_exp']:+d})" if "weight_bits" in r else "—"
        bb = f"{r['bias_bits']} ({r['bias_exp']})" if "bias_bits" in r else "—"
        tb = str(r["threshold_bits"]) if "threshold_bits" in r else "—"
        vr = f"{r['voltage_range_thresholds']:g}" if "voltage_range_thresholds" in r else "—"
        mb = str(r["message_bits"]) if "message_bits" in r else "—"
        shape = "×".join(str(s) for s in r["shape"])
        L.append(f"| {r['index']} | {r['name']} | {r['type']} | {shape} | {_n(r['neurons'])} | {_n(r['fan_in'])} | "
                 f"{_n(r['fan_out'])} | {_n(r['synapses'])} | {_n(r['nonzero_synapses'])} | {wb} | {tb} | {bb} | "
                 f"{vr} | {mb} | {r['mapping']} | {r['cores'] or '—'} |")
    L += ["", f"## Per-core limits ({rep['target']}, hw_profiles/{rep['target']}.json)", "",
          "| limit | value | kind | source |", "|---|---|---|---|"]
    for k, v in rep["limit_sources"].items():
        L.append(f"| {k} | {'not published' if v.get('value') is None else v.get('value')} {v.get('unit', '')} | "
                 f"{v.get('kind', '')} | {v.get('source', '')} |")
    L += ["", "Fan-in = synapses into one neuron; fan-out = synapses leaving one presynaptic neuron (largest); "
          "synapses = all connections (a conv's shared kernel counted at every position, as a core stores it); "
          "V range = the 24-bit voltage range in thresholds (2**23 / (vThMant << 6)); message bits = the payload "
          "of the layer's spike messages (0: binary spikes; graded IF_BURST neurons: ceil(log2(B + 1))). "
          "Cores: greedy, one layer "
          "per core; see `mst inspect --help`. An estimate from public limits, not a placement by Intel's "
          "compiler.", ""]
    return "\n".join(L)
