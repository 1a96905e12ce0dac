"""Graph walk of a trained MST → :class:`NetxGraph` (float, optionally fixed point).

Every QCFS site becomes an IF neuron (threshold λ, reset by subtraction, v0 = λ/2). BatchNorm
is folded into the neighbouring affine maps; λ of the presynaptic site is folded into the
weights so spikes are unary. Layouts and formulas: docs/netx-mst-format.md, section 6.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from mst_lava import __version__, neurons
from mst_lava import netx_ops as ops
from mst_lava.errors import MSTError
from mst_lava.export.graph import Layer, NetxGraph
from mst_lava.export.quantize import quantize_graph
from mst_lava.model.rsm import SITES, drop_threshold, parse_mask_spec, ratio_for

MERGE_OFFSETS = ((0, 0), (1, 0), (0, 1), (1, 1))   # (dy, dx) of PatchMerging's gather, in order


def _np(t) -> np.ndarray:
    return t.detach().cpu().double().numpy()


def bn_fold(bn) -> tuple[np.ndarray, np.ndarray]:
    """BatchNorm (eval) as y = g·x + h per channel."""
    var = _np(bn.running_var)
    mean = _np(bn.running_mean)
    g = 1.0 / np.sqrt(var + bn.eps)
    if bn.weight is not None:
        g = g * _np(bn.weight)
    h = -g * mean
    if bn.bias is not None:
        h = h + _np(bn.bias)
    return g, h


def layer_norm_affine(ln, C: int) -> tuple[np.ndarray, np.ndarray, float]:
    """A LayerNorm over the C channels of a token: (γ, β, eps); the normalization itself is the
    readout's (format §5a), γ and β fold into the head like a BatchNorm's scale and offset."""
    if tuple(ln.normalized_shape) != (C,):
        raise MSTError(f"final LayerNorm normalizes {tuple(ln.normalized_shape)}, not the {C} channels of a token")
    g = _np(ln.weight) if ln.weight is not None else np.ones(C)
    h = _np(ln.bias) if getattr(ln, "bias", None) is not None else np.zeros(C)
    eps = float(ln.eps)
    if not (eps > 0 and math.isfinite(eps)):
        raise MSTError(f"final LayerNorm eps {eps} must be positive and finite")
    return g, h, eps


def _theta(site) -> float:
    lam = float(site.lam.detach())
    if not (lam > 0 and math.isfinite(lam)):
        raise MSTError(f"site {site.site}@{site.block} has threshold λ = {lam}; an IF neuron needs λ > 0")
    return lam




def merge_conv_weight(reduction_w: np.ndarray, g: np.ndarray, C: int) -> np.ndarray:
    """PatchMerging's linear (2C × 4C) with BN scale g (4C) folded → conv weight (2C, C, 2, 2).

    weight[o, c, dy, dx] = R[o, k·C + c] · g[k·C + c] with k the index of (dy, dx) in MERGE_OFFSETS.
    """
    Rg = reduction_w * g[None, :]
    out = np.zeros((Rg.shape[0], C, 2, 2))
    for k, (dy, dx) in enumerate(MERGE_OFFSETS):
        out[:, :, dy, dx] = Rg[:, k * C:(k + 1) * C]
    return out


WEIGHT_EXPONENTS = ("auto", "layer", "channel")


class _Builder:
    def __init__(self, mask: dict, seed: int, burst: int = 1):
        self.layers: list[Layer] = []
        self.mask = mask
        self.seed = seed
        self.burst = int(burst)
        self.neuron_type = neurons.for_burst(self.burst)

    def theta(self, site) -> float:
        """The value of one spike of a site's neurons, folded into its consumers' weights and gains: λ for
        binary neurons, the unit u = λ/B of a burst neuron (whose threshold it also is)."""
        return _theta(site) / self.burst

    def add(self, layer: Layer) -> int:
        depth = 0 if not layer.inputs else 1 + max(int(self.layers[k].mst["depth"]) for k in layer.inputs)
        layer.mst.setdefault("site", "")
        layer.mst.setdefault("block", -1)
        layer.mst.setdefault("site_id", -1)
        layer.mst.setdefault("rsm_ratio", 0.0)
        layer.mst.setdefault("rsm_threshold", 0)
        layer.mst.setdefault("layout", "none")
        layer.mst["depth"] = depth
        self.layers.append(layer)
        return len(self.layers) - 1

    def site(self, layer: Layer, qcfs, layout: str) -> Layer:
        r = ratio_for(self.mask, qcfs.site, qcfs.block)
        layer.mst.update(site=qcfs.site, block=int(qcfs.block), site_id=SITES.index(qcfs.site),
                         rsm_ratio=float(r), rsm_threshold=drop_threshold(r), layout=layout)
        layer.neuron = self.neuron_type.fields(self.theta(qcfs), self.burst)
        return layer

    def conv(self, name, src: int, weight, bias, qcfs, layout, *, stride=1, padding=0, groups=1,
             extra=None) -> int:
        weight = np.asarray(weight, dtype=np.float64)
        Co, Cg, kH, kW = weight.shape
        C, H, W = self.layers[src].shape
        Ho, Wo = (H + 2 * padding - kH) // stride + 1, (W + 2 * padding - kW) // stride + 1
        params = {"weight": weight.astype(np.float32), "bias": np.asarray(bias, dtype=np.float32),
                  "stride": np.array([stride, stride]), "padding": np.array([padding, padding]),
                  "dilation": np.array([1, 1]), "groups": np.int64(groups), "inChannels": np.int64(Cg * groups),
                  "outChannels": np.int64(Co), "kernelSize": np.array([kH, kW])}
        layer = Layer(type="conv", shape=(Co, Ho, Wo), name=name, inputs=[src], output="spikes", params=params,
                      flt={"weight": weight, "bias": np.asarray(bias, dtype=np.float64)}, mst=dict(extra or {}))
        return self.add(self.site(layer, qcfs, layout))

    def source_conv(self, name, srcs: list[int], weights: list, bias, qcfs, layout, *, stride=1) -> int:
        """A conv with one weight set per spike input (format §5b): ``weights[k]`` (out, C, kH, kW) acts on
        ``srcs[k]``; stored side by side on the input-channel axis, ``weight`` (out, S·C, kH, kW)."""
        W = np.concatenate([np.asarray(w, dtype=np.float64) for w in weights], axis=1)
        Co, SC, kH, kW = W.shape
        C, H, Wd = self.layers[srcs[0]].shape
        Ho, Wo = (H - kH) // stride + 1, (Wd - kW) // stride + 1
        params = {"weight": W.astype(np.float32), "bias": np.asarray(bias, dtype=np.float32),
                  "stride": np.array([stride, stride]), "padding": np.array([0, 0]), "dilation": np.array([1, 1]),
                  "groups": np.int64(1), "inChannels": np.int64(SC), "outChannels": np.int64(Co),
                  "kernelSize": np.array([kH, kW])}
        layer = Layer(type="conv", shape=(Co, Ho, Wo), name=name, inputs=list(srcs), output="spikes", params=params,
                      flt={"weight": W, "bias": np.asarray(bias, dtype=np.float64)}, mst={})
        return self.add(self.site(layer, qcfs, layout))

    def residual(self, name, srcs: list[int], gains: list[float], stage: int, scale=None, offset=None) -> int:
        """``Σ_k gains[k] · in_k``; with ``scale``/``offset`` (C,) the first input (graded, gain 1) enters as
        ``scale ⊙ in_0 + offset`` (extension version 2: a BatchNorm on the stream, format §5a)."""
        shape = self.layers[srcs[0]].shape
        flt = {"gain": np.asarray(gains, dtype=np.float64)}
        if scale is not None:
            flt["scale"] = np.asarray(scale, dtype=np.float64).reshape(-1)
            flt["offset"] = np.asarray(offset, dtype=np.float64).reshape(-1)
        layer = Layer(type="mst_residual", shape=tuple(shape), name=name, inputs=list(srcs), output="graded",
                      flt=flt, mst={"stage": stage, "layout": "none"})
        return self.add(layer)


def export_model(model, *, precision: str = "float", mask=None, seed: int = 0,
                 ckpt: dict | None = None, merge_input: str = "graded", burst: int = 1,
                 payload_bits: int = neurons.DEFAULT_MAX_PAYLOAD_BITS, weight_exponents: str = "auto") -> NetxGraph:
    """The network graph of a trained MST (eval mode), in ``precision`` "float" or "fixed".

    ``merge_input``: "graded" (a patch merging reads the graded residual stream, every step) or "events"
    (it reads the spike trains the stream sums, one composed weight set per train: format §5b).
    ``burst`` B > 1: every neuron is a graded ``IF_BURST`` neuron (up to B spikes of λ/B per step, sent as one
    payload of ``ceil(log2(B + 1))`` bits, at most ``payload_bits``); B = the QCFS levels L is lossless at T = 1.
    ``weight_exponents`` (fixed point): "layer" (one per conv), "channel" (one per output channel of a single-input
    conv, extension version 4), "auto" (channel for graded neurons, whose one-step payloads need the precision)."""
    if weight_exponents not in WEIGHT_EXPONENTS:
        raise MSTError(f"weight exponents must be one of {', '.join(WEIGHT_EXPONENTS)}, not {weight_exponents!r}")
    from mst_lava.model.mst import MST
    if precision not in ("float", "fixed"):
        raise MSTError(f"precision must be 'float' or 'fixed', not {precision!r}")
    if merge_input not in ops.MERGE_INPUTS:
        raise MSTError(f"merge input must be one of {', '.join(ops.MERGE_INPUTS)}, not {merge_input!r}")
    if not isinstance(model, MST):
        raise MSTError(f"mst-export exports Masked Spiking Transformers; got {type(model).__name__}")
    mask = parse_mask_spec(mask) if mask else {}
    cfg = model.cfg
    try:
        burst = neurons.check_burst_option(burst, getattr(cfg, "L", None), payload_bits)
    except ValueError as e:
        raise MSTError(str(e)) from None
    from mst_lava.checkpoint import weights_fingerprint
    source_sha256 = weights_fingerprint(model.state_dict())     # before anything reads the model
    b = _Builder(mask, int(seed), burst)
    with torch.no_grad():
        inp = b.add(Layer(type="input", shape=(cfg.in_chans, cfg.img_size, cfg.img_size), name="input",
                          output="graded", mst={"layout": "none"}))
        # patch embedding: conv k = stride = patch, BN folded
        g, h = bn_fold(model.embed_norm)
        W = _np(model.patch_embed.weight) * g[:, None, None, None]
        bias = (_np(model.patch_embed.bias) if model.patch_embed.bias is not None else 0.0) * g + h
        pe = model.patch_embed
        if pe.stride[0] != pe.stride[1] or pe.padding[0] != pe.padding[1] or pe.dilation != (1, 1) or pe.groups != 1:
            raise MSTError(f"patch embedding {pe} is not a square-stride, symmetric-padding plain conv")
        x = b.conv("embed", inp, W, bias, model.embed_act, "grid", stride=int(pe.stride[0]),
                   padding=int(pe.padding[0]))
        theta_x = b.theta(model.embed_act)
        stage = 0
        res = b.residual("stage0.in", [x], [theta_x], stage)
        for s, blocks in enumerate(model.stages):
            for blk in blocks:
                res = _export_block(b, blk, res, stage)
            if s < len(model.merges):
                mg = model.merges[s]
                C = b.layers[res].shape[0]
                g, h = bn_fold(mg.norm)
                R = _np(mg.reduction.weight)
                W = merge_conv_weight(R, g, C)
                bias = R @ h
                if mg.reduction.bias is not None:
                    bias = bias + _np(mg.reduction.bias)
                if merge_input == "events":
                    m = _event_merge(b, f"merge{s + 1}", res, W, bias, mg.act)
                else:
                    m = b.conv(f"merge{s + 1}", res, W, bias, mg.act, "grid", stride=2)
                stage = s + 1
                res = b.residual(f"stage{stage}.in", [m], [b.theta(mg.act)], stage)
        # readout: final BN (or LayerNorm: applied per token and step by the readout, §5a), token mean, head
        Ntok = b.layers[res].shape[1] * b.layers[res].shape[2]
        Wh = _np(model.head.weight)
        ro_mst, ro_flt = {"layout": "none"}, {}
        if isinstance(model.norm, torch.nn.LayerNorm):
            g, h, eps = layer_norm_affine(model.norm, b.layers[res].shape[0])
            ro_mst["token_norm"] = "layer"
            ro_flt["norm_eps"] = eps
        else:
            g, h = bn_fold(model.norm)
        Wr = Wh * g[None, :] / Ntok
        br = Wh @ h + (_np(model.head.bias) if model.head.bias is not None else 0.0)
        ro = Layer(type="mst_readout", shape=(cfg.num_classes,), name="readout", inputs=[res], output="graded",
                   params={"weight": Wr.astype(np.float32), "bias": br.astype(np.float32)},
                   flt={"weight": Wr, "bias": br, **ro_flt}, mst=ro_mst)
        out = b.add(ro)

    attrs = {"precision": precision, "producer": f"mst_lava {__version__}", "rsm_seed": int(seed),
             "num_classes": int(cfg.num_classes), "model_config": cfg.to_dict(),
             "output_layer": int(out), "mask": dict(mask), "tSample": 32,       # dicts: JSON in the file
             "source_sha256": source_sha256}
    if ckpt is not None:
        attrs["dataset"] = str(ckpt.get("dataset") or "")
        attrs["checkpoint_metrics"] = dict(ckpt.get("metrics") or {})
    graph = NetxGraph(layers=b.layers, attrs=attrs, kind="mst")
    if precision == "fixed":
        quantize_graph(graph, per_channel=weight_exponents == "channel" or (weight_exponents == "auto" and burst > 1))
    return graph


def _export_block(b: _Builder, blk, res: int, stage: int) -> int:
    i = blk.index
    attn = blk.attn
    C, H, W = b.layers[res].shape
    h, w, sft = attn.heads, blk.w, blk.shift
    win = {"window": w, "shift": sft, "heads": h, "grid": np.array([H, W])}
    # SC1: BN1 + QCFS on the residual = depthwise 1x1 conv
    g, hb = bn_fold(blk.norm1)
    sc1 = b.conv(f"block{i}.sc1", res, g.reshape(C, 1, 1, 1), hb, blk.sc1, "grid", groups=C)
    t_sc1 = b.theta(blk.sc1)
    Wqkv = _np(attn.qkv.weight)
    bqkv = _np(attn.qkv.bias) if attn.qkv.bias is not None else np.zeros(3 * C)
    qkv = []
    for j, (nm, act) in enumerate((("q", attn.q_act), ("k", attn.k_act), ("v", attn.v_act))):
        Wj = Wqkv[j * C:(j + 1) * C] * t_sc1
        qkv.append(b.conv(f"block{i}.attn.{nm}", sc1, Wj[:, :, None, None], bqkv[j * C:(j + 1) * C], act,
                          "window_heads", extra=win))
    q, k, v = qkv
    nW, N = (H // w) * (W // w), w * w
    t_q, t_k, t_v = b.theta(attn.q_act), b.theta(attn.k_act), b.theta(attn.v_act)
    A = Layer(type="mst_qk", shape=(nW, h, N, N), name=f"block{i}.attn.a", inputs=[q, k], output="spikes",
              flt={"scale": t_q * t_k * float(attn.scale)}, mst=dict(win))
    a = b.add(b.site(A, attn.a_act, "attn"))
    bias_tab = _np(attn.position_bias())                               # h, N, N
    flt = {"theta_a": b.theta(attn.a_act), "theta_v": t_v, "bias": bias_tab}
    if sft:
        flt["mask"] = _np(blk.attn_mask)                               # nW, N, N
    AV = Layer(type="mst_softmax_av", shape=(C, H, W), name=f"block{i}.attn.av", inputs=[a, v],
               output="spikes", flt=flt, mst=dict(win))
    av = b.add(b.site(AV, attn.av_act, "window_heads"))
    t_av = b.theta(attn.av_act)
    Wp = _np(attn.proj.weight) * t_av
    proj = b.conv(f"block{i}.attn.proj", av, Wp[:, :, None, None], _np(attn.proj.bias), attn.proj_act,
                  "window_tokens", extra=win)
    r1 = b.residual(f"block{i}.res1", [res, proj], [1.0, b.theta(attn.proj_act)], stage)
    g, hb = bn_fold(blk.norm2)
    sc2 = b.conv(f"block{i}.sc2", r1, g.reshape(C, 1, 1, 1), hb, blk.sc2, "grid", groups=C)
    W1, b1 = _linear_bn(blk.fc1, blk.fc1_norm, b.theta(blk.sc2))
    m1 = b.conv(f"block{i}.mlp1", sc2, W1[:, :, None, None], b1, blk.mlp1, "grid")
    W2, b2 = _linear_bn(blk.fc2, blk.fc2_norm, b.theta(blk.mlp1))
    m2 = b.conv(f"block{i}.mlp2", m1, W2[:, :, None, None], b2, blk.mlp2, "grid")
    if blk.mlp_skip_norm:
        # the official block: x = BN2(x); x = x + MLP(SC2(x)). The MLP output is added to BN2 of the stream,
        # which the residual applies to its first input (g, hb: BN2 folded, as SC2 uses it above)
        return b.residual(f"block{i}.res2", [r1, m2], [1.0, b.theta(blk.mlp2)], stage, scale=g, offset=hb)
    return b.residual(f"block{i}.res2", [r1, m2], [1.0, b.theta(blk.mlp2)], stage)


def _linear_bn(lin, bn, theta_in: float) -> tuple[np.ndarray, np.ndarray]:
    """A token-wise linear layer on spikes of threshold ``theta_in`` (folded into the weights), with the
    BatchNorm that follows it (the official ImageNet MLP, ``mlp_norm``) folded in: W·g[o], b·g + h."""
    W = _np(lin.weight) * theta_in
    bias = _np(lin.bias) if lin.bias is not None else np.zeros(W.shape[0])
    if bn is not None:
        g, h = bn_fold(bn)
        W, bias = W * g[:, None], bias * g + h
    return W, bias


def stream_sources(layers: list, r: int) -> tuple[list[tuple[int, np.ndarray]], np.ndarray]:
    """The residual stream ``r`` as spike trains: ``x(t) = Σ_k g_k ⊙ s_k(t) + c`` (float, per channel).

    Walks the stage's chain of ``mst_residual`` nodes (graded inputs are earlier residuals, gain 1) and
    returns ``[(spike layer index, g_k (C,))]`` in chain order, each source once, and the constant ``c`` (C,).
    A stream affine (§5a, ``scale ⊙ in_0 + offset``) multiplies the gains of every source under it by
    ``scale`` and adds ``offset`` to the constant: the map stays affine, so the composition is exact."""
    L = layers[r]
    C = int(L.shape[0])
    gains: dict[int, np.ndarray] = {}
    const = np.zeros(C)
    for j, (k, g) in enumerate(zip(L.inputs, np.asarray(L.flt["gain"], dtype=np.float64).reshape(-1))):
        scale, offset = np.full(C, g), np.zeros(C)
        if j == 0 and "scale" in L.flt:
            scale = scale * np.asarray(L.flt["scale"], dtype=np.float64).reshape(-1)
            offset = np.asarray(L.flt["offset"], dtype=np.float64).reshape(-1)
        src = layers[k]
        if src.output == "spikes":
            sub, c = [(k, np.ones(C))], np.zeros(C)
        elif src.type == "mst_residual":
            sub, c = stream_sources(layers, k)
        else:
            raise MSTError(f"residual {L.name}: input {src.name} ({src.type}) is neither spikes nor a residual; the "
                           "stream cannot be written as spike trains (export with --merge-input graded)")
        for kk, gk in sub:
            gains[kk] = gains.get(kk, 0.0) + scale * gk
        const = const + scale * c + offset
    return list(gains.items()), const


def _event_merge(b: _Builder, name: str, res: int, W: np.ndarray, bias: np.ndarray, act) -> int:
    """Patch merging on the spike trains of the stage's stream (format §5b): with ``x = Σ_k g_k ⊙ s_k + c``,
    ``W ⋆ x + bias = Σ_k (W·g_k) ⋆ s_k + (bias + Σ_{c,dy,dx} W[o, c, dy, dx]·c[c])`` (2×2 stride-2 patches
    without padding cover every position, so a constant field adds a constant per output channel). The stage's
    last residual node then feeds nothing and is dropped."""
    srcs, const = stream_sources(b.layers, res)
    weights = [W * g[None, :, None, None] for _, g in srcs]
    bias = np.asarray(bias, dtype=np.float64) + np.einsum("ocyx,c->o", W, const)
    if res == len(b.layers) - 1 and not any(res in L.inputs for L in b.layers):
        b.layers.pop()                       # the merge was its only reader
    return b.source_conv(name, [k for k, _ in srcs], weights, bias, act, "grid", stride=2)


def export_checkpoint(ckpt_path, out_path, *, precision: str = "float", mask=None,
                      seed: int | None = None, merge_input: str = "graded", burst: int = 1,
                      payload_bits: int = neurons.DEFAULT_MAX_PAYLOAD_BITS,
                      weight_exponents: str = "auto") -> NetxGraph:
    """Load a checkpoint, export it and write the .net file (atomic). Returns the graph."""
    from mst_lava.checkpoint import load_checkpoint
    from mst_lava.export.hdf5io import write_network
    model, ckpt = load_checkpoint(ckpt_path)
    if ckpt.get("arch", "mst") != "mst":
        raise MSTError(f"{ckpt_path} holds a {ckpt.get('arch')} model; mst-export exports MST checkpoints only")
    if mask is None:
        mask = ckpt.get("mask") or {}
    graph = export_model(model, precision=precision, mask=mask, seed=0 if seed is None else seed, ckpt=ckpt,
                         merge_input=merge_input, burst=burst, payload_bits=payload_bits,
                         weight_exponents=weight_exponents)
    graph.attrs["source"] = str(ckpt_path)
    write_network(out_path, graph)
    return graph
