"""HDF5 (.net) file → Lava process graph.

    from mst_lava.lava.builder import build_network
    net = build_network("export/digits.net", images, T=32, precision="fixed")
    ...                                   # net.root: a process to run; net.procs: all of them

Each layer of the file becomes one or more *kernels* (:mod:`mst_lava.lava.kernels`): a
synapse (conv/dense/flatten, Q·Kᵀ product, softmax·V) followed by its IF neurons, a
residual accumulation, the readout. How kernels become Lava processes is the
``granularity``:

``"block"`` (default, fast)
    Kernels are fused into wide :class:`~mst_lava.lava.process.Segment` processes, one
    per transformer block (the stem with the first residual node, each patch merging with
    its residual node, likewise). A site with an RSM ratio > 0 gets its own
    :class:`~mst_lava.lava.process.RSM` process between its neurons and their consumers,
    which cuts the block into consecutive segments. A block with Q, K, A masked becomes
    3 segments + 3 RSM processes; an unmasked digits model runs in 8 OS processes.
``"layer"``
    One process per kernel: InputEncoder, Synapse, IFNeuron, RSM, Residual, SpikeProduct,
    SoftmaxAV, Readout (about 3 per layer): the decomposition is visible in Lava, slower.

Delay alignment. Models either are zero-latency (receive step n, send step n: every
node sees its inputs' step-t values, the format's "zero delay across nodes") or add one
step (pipelined segments/synapses, Lava's own Conv). :func:`align_latencies` gives every
process the step at which it computes and delays each shorter input path by a FIFO, so
residual adds and the Q·Kᵀ-vs-V paths of different depth see the same logical step, the
RSM key is the torch step, and the run takes n·T + latency steps. See docs/lava-runtime.md.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

import mst_lava.lava  # noqa: F401  (Python 3.11 shim before any lava import)
from mst_lava import neurons
from mst_lava.errors import MSTError
from mst_lava.export.layers import LAYER_TYPES, rsm_site
from mst_lava.lava import kernels as K
from mst_lava.lava import models as M
from mst_lava.lava import process as P

GRANULARITIES = ("block", "layer")


def load_graph(net):
    """A NetxGraph from a path (validated by ``mst_lava.export.read_network``) or the graph itself."""
    if hasattr(net, "layers"):
        return net
    from mst_lava.export import read_network
    return read_network(net)


# ----------------------------------------------------------------------------------------
# kernels of each layer

@dataclass
class KNode:
    """One kernel in the network's kernel graph."""
    id: int
    kernel: K.Kernel
    inputs: list                 # KNode ids (or ("enc",) for the input encoder)
    shape: tuple                 # output shape
    layer: int                   # file layer index
    role: str                    # synapse | neuron | rsm | residual | qk | softmax_av | readout
    group: str = ""
    level: int = 0


@dataclass
class LavaNetwork:
    """The built process graph and what the runner needs to read results back."""
    graph: object
    precision: str
    T: int
    n_samples: int
    granularity: str
    procs: list
    encoder: object
    readout: object
    knodes: list
    kernel_slots: dict = field(default_factory=dict)   # KNode id → (process, start, stop) in its counts Var
    seed: int = 0
    pipeline: bool = False
    edges: list = field(default_factory=list)          # (src process, port, dst process, port)
    latency: int = 0                                   # Lava steps between input and readout
    delay1: set = field(default_factory=set)           # ids of foreign processes with one step of latency
    derived_synops: dict = field(default_factory=dict)  # layer → (source KNode id, its counter): Lava Conv layers

    def connect(self, src, src_port: str, dst, dst_port: str, transpose=None) -> None:
        """Connect ``src.src_port`` to ``dst.dst_port`` (optionally through a transpose of the port) and record it."""
        out = getattr(src, src_port)
        if transpose is not None:
            out = out.transpose(list(transpose))
        out.connect(getattr(dst, dst_port))
        self.edges.append((src, src_port, dst, dst_port))

    @property
    def total_steps(self) -> int:
        """Lava steps to run all samples through: n·T plus the pipeline latency."""
        return self.n_samples * self.T + self.latency

    @property
    def root(self):
        """The process a Lava run is started from (the readout: every process reaches it)."""
        return self.readout

    def run_config(self, hardware: bool = False):
        """The Lava run configuration mapping this network's processes to our models (Loihi2SimCfg or HwCfg)."""
        return M.run_config(self.procs, self.precision, hardware=hardware)

    def describe(self) -> str:
        """``N Lava processes (k InputEncoder, ...)``: the processes by kind."""
        kinds: dict[str, int] = {}
        for p in self.procs:
            kinds[type(p).__name__] = kinds.get(type(p).__name__, 0) + 1
        return f"{len(self.procs)} Lava processes (" + ", ".join(f"{v} {k}" for k, v in kinds.items()) + ")"


def _group_of(i: int, L, groups: list) -> str:
    name = L.name or f"layer{i}"
    g = name.split(".")[0]
    if L.type == "mst_residual" and len(L.inputs) == 1 and not g.startswith("block"):
        return groups[L.inputs[0]]            # stage{s}.in joins its embed / merge
    if L.type == "mst_readout":
        return "readout"
    return g


def kernel_graph(graph, precision: str, T: int, seed: int) -> tuple[list[KNode], dict]:
    """The kernel graph of ``graph``: KNodes in topological order, and layer index → output KNode id."""
    fixed = precision == "fixed"
    nodes: list[KNode] = []
    out_of: dict[int, int] = {}
    groups: list[str] = []
    layers = graph.layers

    def add(kernel, inputs, shape, layer, role) -> int:
        nodes.append(KNode(len(nodes), kernel, list(inputs), tuple(int(s) for s in shape), layer, role,
                           groups[layer]))
        return nodes[-1].id

    for i, L in enumerate(layers):
        groups.append(_group_of(i, L, groups))
        shape = tuple(int(s) for s in L.shape)
        ins = [out_of[k] for k in L.inputs]
        where = f"layer {i} ({L.name or L.type})"
        if L.type == "input":
            out_of[i] = -1                               # the encoder
            continue
        lt, kind = LAYER_TYPES.get(L.type), K.KERNELS.get(L.type)
        if lt is None or kind is None:
            raise MSTError(f"{where}: layer type {L.type!r} has no Lava implementation")
        if len(ins) > P.MAX_IN_PORTS:
            raise MSTError(f"{where}: {len(ins)} inputs; a Lava process of this runtime takes at most {P.MAX_IN_PORTS}")
        P_ = lt.params(graph, i, fixed)
        cur = add(kind.from_params(P_, fixed), ins, shape, i, kind.role)
        # neurons of the layer, then RSM
        if not lt.neuron:
            out_of[i] = cur
            continue
        if str(L.neuron.get("type", "IF")) not in neurons.NEURON_TYPES:
            raise MSTError(f"{where}: neuron type {L.neuron.get('type')!r} is not one of the MST's IF neurons "
                           f"({', '.join(neurons.NEURON_TYPES)}); plain netx (CUBA) networks run in lava-dl's "
                           "netx.hdf5.Network")
        vth = L.threshold(precision)
        nrn = add(K.IFKernel(shape, vth, fixed=fixed, bias=lt.neuron_bias(P_, fixed), burst=neurons.burst_of(L.neuron)),
                  [cur], shape, i, "neuron")
        out_of[i] = nrn
        site = rsm_site(L)
        if site is not None:
            rsm = K.RSMKernel(seed=seed, **site, fixed=fixed, cache_steps=T)
            out_of[i] = add(rsm, [nrn], shape, i, "rsm")
    return nodes, out_of


# ----------------------------------------------------------------------------------------
# processes

def build_network(net, inputs, T: int, *, precision: str | None = None, granularity: str = "block",
                  seed: int | None = None, pipeline: bool = True, lava_synapses: bool = False) -> LavaNetwork:
    """Lava processes for the network file ``net`` (path or NetxGraph) over ``inputs``.

    ``inputs``: ``(n, C, H, W)`` analog images (normalized as in training) or
    ``(n, F, C, H, W)`` event frames. ``precision``: "float" or "fixed" (default: the
    file's). ``seed``: RSM seed (default: the file's ``rsm_seed``). ``pipeline``: segments
    ("block") or synapses ("layer") get one step of latency, so consecutive processes work
    on consecutive steps in parallel; inputs are re-aligned by :func:`align_latencies`.
    ``lava_synapses`` (granularity "layer"): pointwise convolutions fed by spikes run in
    Lava's own ``lava.proc.conv`` Conv process (one step of latency, aligned the same way;
    their IF neurons add bias and exponent; their synaptic ops are counted by the kernel that
    feeds them: its delivered spikes × their non-zero synapses).
    """
    graph = load_graph(net)
    if getattr(graph, "kind", "mst") != "mst":
        raise MSTError(f"{getattr(graph, 'path', 'network')} is a plain lava-dl netx file: run it with "
                       "lava-dl's netx.hdf5.Network; `mst run` runs mst_lava.netx files")
    precision = precision or graph.precision
    if precision not in ("float", "fixed"):
        raise MSTError(f"precision must be 'float' or 'fixed', not {precision!r}")
    if precision == "fixed" and graph.precision != "fixed":
        raise MSTError(f"{getattr(graph, 'path', None) or 'the network'} was exported with --precision float; "
                       "re-export it with `mst-export ... --precision fixed` to run fixed point")
    if granularity not in GRANULARITIES:
        raise MSTError(f"granularity must be one of {GRANULARITIES}, not {granularity!r}")
    if lava_synapses and granularity != "layer":
        raise MSTError("lava_synapses needs granularity 'layer' (one process per synapse)")
    T = int(T)
    if T < 1:
        raise MSTError(f"T must be at least 1, not {T}")
    if lava_synapses and any(neurons.burst_of(L.neuron) > 1 for L in graph.layers):
        raise MSTError("lava_synapses runs binary spikes through Lava's own Conv; this file has graded (IF_BURST) "
                       "neurons: run it without lava_synapses")
    seed = graph.seed if seed is None else int(seed)
    fixed = precision == "fixed"
    x = np.asarray(inputs)
    in_layer = graph.layers[0]
    in_shape = tuple(int(s) for s in in_layer.shape)
    if x.ndim == len(in_shape):
        x = x[None]
    if tuple(x.shape[-len(in_shape):]) != in_shape or x.ndim not in (len(in_shape) + 1, len(in_shape) + 2):
        raise MSTError(f"inputs have shape {tuple(x.shape)}; the network expects (n, {', '.join(map(str, in_shape))})"
                       f" images or (n, frames, {', '.join(map(str, in_shape))}) event frames")
    n = int(x.shape[0])
    if n < 1:
        raise MSTError("no inputs to run")
    enc = LAYER_TYPES["input"]
    data = np.asarray(enc.value(enc.params(graph, 0, fixed), x, fixed), dtype=np.int64 if fixed else np.float64)

    knodes, out_of = kernel_graph(graph, precision, T, seed)
    readouts = [k for k in knodes if k.role == "readout"]
    if len(readouts) != 1:
        raise MSTError(f"the network has {len(readouts)} mst_readout layers; exactly one is needed")
    common = dict(T=T, n_samples=n)
    encoder = P.InputEncoder(data=data, shape=in_shape, T=T, name="input")
    net = LavaNetwork(graph=graph, precision=precision, T=T, n_samples=n, granularity=granularity, procs=[encoder],
                      encoder=encoder, readout=None, knodes=knodes, seed=seed, pipeline=bool(pipeline))
    ro = readouts[0]
    readout = P.Readout(in_shape=knodes[ro.inputs[0]].shape, num_classes=int(np.prod(ro.shape)), kernel=ro.kernel,
                        name="readout", **common)
    net.readout = readout
    net.kernel_slots[ro.id] = (readout, 0, len(ro.kernel.count_names))
    body = [k for k in knodes if k.role != "readout"]

    # where each KNode's output can be taken from: (process, out port name)
    source: dict[int, tuple] = {-1: (encoder, "out")}
    if granularity == "layer":
        # synapse KNodes realized by lava.proc.conv (their neurons apply bias, exponent and wrap)
        via_lava = {k.id: k for k in body if lava_synapses and _lava_conv_fits(k)}
        for k in body:
            if k.role == "neuron" and k.inputs[0] in via_lava:
                syn = via_lava[k.inputs[0]].kernel
                if syn.fixed:                   # the raw accumulation: the neuron applies exponent, wrap, bias
                    b, wexp = k.kernel.bias, syn.weight_exp
                else:
                    b, wexp = (None if syn.bias is None else syn.bias.reshape(-1, 1, 1)), None
                k.kernel = K.IFKernel(k.shape, k.kernel.vth, fixed=k.kernel.fixed, bias=b, weight_exp=wexp,
                                      burst=k.kernel.burst)
        for k in via_lava.values():
            # Lava's Conv has no counters of ours: the kernel feeding it counts the synaptic ops its
            # output events cause there (its non-zero synapses, format §7); set before processes exist
            src = knodes[k.inputs[0]]
            net.derived_synops[k.layer] = (src.id, src.kernel.count_output_synops(k.kernel.fanout))
        for k in body:
            if k.id in via_lava:
                conv = _lava_conv(k, graph)
                net.procs.append(conv)
                net.delay1.add(conv.id)
                sp, sname = source[k.inputs[0]][:2]
                net.connect(sp, sname, conv, "s_in", transpose=(2, 1, 0))     # (C, H, W) → Lava's (W, H, C)
                source[k.id] = (conv, "a_out", (2, 1, 0))
                continue
            proc = _single_process(k, knodes, common, graph, pipeline)
            net.procs.append(proc)
            net.kernel_slots[k.id] = (proc, 0, len(k.kernel.count_names))
            for port, src in zip(_single_in_ports(proc, k), k.inputs):
                sp, sname, *tr = source[src]
                net.connect(sp, sname, proc, port, transpose=tr[0] if tr else None)
            source[k.id] = (proc, _single_out_port(proc))
    else:
        _build_segments(net, body, knodes, source, common)
    net.procs.append(readout)
    sp, sname = source[ro.inputs[0]][:2]
    net.connect(sp, sname, readout, "x_in")
    align_latencies(net)
    return net


def align_latencies(net: LavaNetwork) -> None:
    """Give every process its latency and every input its alignment delay.

    A process's *output latency* ℓ is the number of Lava steps by which its outputs lag the
    input encoder's: ℓ = a + π, where π = 1 for a pipelined process (it sends the previous
    step's result, like Lava's Dense) and 0 otherwise, and a = max over its inputs of the
    sources' ℓ is the step at which it computes. An input whose source has ℓ < a is
    delayed by a − ℓ steps (a FIFO in the receiving model), so every process combines
    inputs of the same logical step: residual adds, Q·Kᵀ (through RSM processes) and V
    arrive aligned whatever the depth of their paths. The readout's a is the pipeline
    latency the runner adds to n·T.
    """
    ell: dict[int, int] = {}
    incoming: dict[int, list] = {}
    for src, _sp, dst, dp in net.edges:
        incoming.setdefault(dst.id, []).append((src, dp))
    for p in net.procs:                      # creation order is topological
        ins = incoming.get(p.id, [])
        missing = [s.name for s, _ in ins if s.id not in ell]
        if missing:
            raise MSTError(f"internal error: {p.name} was built before its sources {missing}")
        a = max((ell[s.id] for s, _ in ins), default=0)
        delays = {dp: a - ell[s.id] for s, dp in ins if a - ell[s.id] > 0}
        if isinstance(p, P._Timed):
            p.proc_params.overwrite("latency", a)
            p.proc_params.overwrite("in_delays", delays)
        elif delays:
            raise MSTError(f"internal error: {p.name} ({type(p).__name__}) cannot delay its inputs {delays}")
        step = p.proc_params.get("pipelined", False) if isinstance(p, P._Timed) else p.id in net.delay1
        ell[p.id] = a + (1 if step else 0)
    net.latency = int(net.readout.proc_params["latency"])


def _lava_conv_fits(k: KNode) -> bool:
    """A pointwise conv fed by 0/1 spikes: Lava's Conv computes it exactly (fixed: no 24-bit clamp)."""
    kern = k.kernel
    return (k.role == "synapse" and isinstance(kern, K.SynapseKernel) and kern.kind == "conv"
            and kern.spike_input and kern.pointwise and np.ndim(kern.weight_exp) == 0)


def _lava_conv(k: KNode, graph):
    """lava.proc.conv's Conv for a synapse kernel: weight in Lava's (out, x, y, in) order, flipped
    (Lava convolves, torch correlates); its ``a_out`` is the raw accumulation W ⋆ s."""
    from lava.proc.conv.process import Conv
    kern = k.kernel
    w = kern.weight[:, :, ::-1, ::-1].transpose(0, 3, 2, 1)
    w = w.astype(np.int32) if kern.fixed else w.astype(np.float64)
    C, H, W = kern.in_shape
    return Conv(weight=w, input_shape=(W, H, C), stride=kern.stride[::-1], padding=kern.padding[::-1],
                groups=kern.groups, num_message_bits=0, name=f"{_name(graph, k)}.lava_conv")


def _name(graph, k: KNode) -> str:
    L = graph.layers[k.layer]
    return f"{L.name or f'layer{k.layer}'}.{k.role}"


def _single_process(k: KNode, knodes, common, graph, pipeline: bool = False):
    name = _name(graph, k)
    kern = k.kernel
    shp = lambda j: knodes[j].shape if j >= 0 else tuple(int(s) for s in graph.layers[0].shape)  # noqa: E731
    if k.role == "synapse" and isinstance(kern, K.SourceSynapseKernel):
        return P.SourceSynapse(kernel=kern, name=name, pipelined=pipeline, **common)
    if k.role == "synapse":
        return P.Synapse(kernel=kern, name=name, pipelined=pipeline, **common)
    if k.role == "neuron":
        return P.IFNeuron(shape=k.shape, vth=kern.vth, fixed=kern.fixed, name=name, kernel=kern, **common)
    if k.role == "rsm":
        return P.RSM(shape=k.shape, seed=kern.seed, site_id=kern.site_id, block=kern.block,
                     threshold=kern.threshold, index=kern.index, fixed=kern.fixed, name=name, kernel=kern, **common)
    if k.role == "residual":
        return P.Residual(kernel=kern, shape=k.shape, in_shapes=[shp(j) for j in k.inputs], name=name, **common)
    if k.role == "qk":
        return P.SpikeProduct(kernel=kern, in_shape=shp(k.inputs[0]), out_shape=k.shape, name=name, **common)
    if k.role == "softmax_av":
        return P.SoftmaxAV(kernel=kern, a_shape=shp(k.inputs[0]), v_shape=shp(k.inputs[1]), name=name, **common)
    raise MSTError(f"no Lava process for kernel role {k.role!r}")


def _single_in_ports(proc, k: KNode) -> list:
    if isinstance(proc, (P.Residual, P.SourceSynapse)):
        return [f"in{i}" for i in range(len(k.inputs))]
    if isinstance(proc, P.SpikeProduct):
        return ["q_in", "k_in"]
    if isinstance(proc, P.SoftmaxAV):
        return ["a_in", "v_in"]
    if isinstance(proc, P.IFNeuron):
        return ["a_in"]
    return ["s_in"]


def _single_out_port(proc) -> str:
    for nm in ("s_out", "a_out", "out"):
        if hasattr(proc, nm):
            return nm
    raise MSTError(f"process {proc.name} has no output port")


def _build_segments(net: LavaNetwork, body: list, knodes: list, source: dict, common: dict) -> None:
    """Fuse kernels into Segments per (group, level); RSM kernels become RSM processes between them."""
    graph = net.graph
    level: dict[int, int] = {-1: 0}
    for k in body:
        if k.role == "rsm":
            level[k.id] = level[k.inputs[0]]
            continue
        lv = 0
        for j in k.inputs:
            if j < 0:
                continue
            src = knodes[j]
            lv = max(lv, level[j] + (1 if src.role == "rsm" and src.group == k.group else 0))
        k.level = lv
        level[k.id] = lv
    # segments in topological order of their first kernel
    seg_keys: list = []
    members: dict = {}
    for k in body:
        if k.role == "rsm":
            continue
        key = (k.group, k.level)
        if key not in members:
            members[key] = []
            seg_keys.append(key)
        members[key].append(k)
    # values that leave a segment (consumed by another segment, an RSM process or the readout)
    consumers: dict[int, set] = {}
    for k in knodes:
        for j in k.inputs:
            consumers.setdefault(j, set()).add(k.id)
    built: dict = {}
    # walk in topological order of KNodes, creating each segment once all its kernels' inputs exist
    pending = list(seg_keys)
    rsm_nodes = [k for k in body if k.role == "rsm"]
    while pending or rsm_nodes:
        progressed = False
        for key in list(pending):
            ks = members[key]
            ids = {k.id for k in ks}
            ext = []                       # external input KNode ids, in first-use order
            for k in ks:
                for j in k.inputs:
                    if j not in ids and j not in ext:
                        ext.append(j)
            if not all(j in source for j in ext):
                continue
            plan = []
            pos = {}
            for k in ks:
                refs = [("k", pos[j]) if j in ids else ("in", ext.index(j)) for j in k.inputs]
                pos[k.id] = len(plan)
                plan.append((k.kernel, refs))
            outs = [k.id for k in ks if any(c not in ids for c in consumers.get(k.id, ()))]
            in_shapes = [knodes[j].shape if j >= 0 else tuple(int(s) for s in graph.layers[0].shape) for j in ext]
            seg = P.Segment(plan=plan, outputs=[("k", pos[o]) for o in outs], in_shapes=in_shapes,
                            out_shapes=[knodes[o].shape for o in outs], pipelined=net.pipeline,
                            name=f"{key[0]}.{key[1]}" if key[1] else key[0], **common)
            net.procs.append(seg)
            off = 0
            for k in ks:
                c = len(k.kernel.count_names)
                net.kernel_slots[k.id] = (seg, off, off + c)
                off += c
            for i, j in enumerate(ext):
                sp, sname = source[j]
                net.connect(sp, sname, seg, f"in{i}")
            for i, o in enumerate(outs):
                source[o] = (seg, f"out{i}")
            built[key] = seg
            pending.remove(key)
            progressed = True
        for k in list(rsm_nodes):
            if k.inputs[0] not in source:
                continue
            kern = k.kernel
            proc = P.RSM(shape=k.shape, seed=kern.seed, site_id=kern.site_id, block=kern.block,
                         threshold=kern.threshold, index=kern.index, fixed=kern.fixed, name=_name(graph, k),
                         kernel=kern, **common)
            net.procs.append(proc)
            net.kernel_slots[k.id] = (proc, 0, len(kern.count_names))
            sp, sname = source[k.inputs[0]]
            net.connect(sp, sname, proc, "s_in")
            source[k.id] = (proc, "s_out")
            rsm_nodes.remove(k)
            progressed = True
        if not progressed:
            raise MSTError("internal error: the segment graph has a cycle")
