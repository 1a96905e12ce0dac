"""Masked Spiking Transformer: a Swin-style transformer with QCFS activations and BatchNorm.

Tensors on the residual stream are token grids ``(B, H, W, C)``. Every LayerNorm of
Swin is a BatchNorm over channels (the final norm included), every GELU/activation a
QCFS site. The ten sites of a block, named as in the paper:

    SC1   QCFS(BN1(x))                      input of the attention
    Q,K,V QCFS of the three qkv projections
    A     QCFS(Q·Kᵀ·scale)                  then + relative-position bias (+ shift mask), softmax
    AV    QCFS(softmax(A)·V)                "soft(A)·V"
    Proj  QCFS(proj(AV))                    added to the residual stream
    SC2   QCFS(BN2(x))                      input of the MLP
    MLP1  QCFS(fc1(SC2))
    MLP2  QCFS(fc2(MLP1))                   added to the residual stream

plus ``embed`` (patch embedding: conv + BN + QCFS) and ``merge`` (patch merging:
2×2 gather + BN + linear + QCFS) outside the blocks. Blocks are numbered globally
(0 .. sum(depths)-1); a merge site carries the index of the stage it feeds.

The config fields ``mlp_norm``, ``mlp_skip_norm`` and ``final_layernorm`` (all off by default)
build the topology of the paper's own code instead, for its released checkpoints
(``mst import-official``, docs/official-mst.md).
"""
from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import torch
from torch import nn

from mst_lava.errors import MSTError
from mst_lava.model.qcfs import QCFS


@dataclass
class MSTConfig:
    img_size: int = 32
    in_chans: int = 3
    num_classes: int = 10
    patch_size: int = 2
    embed_kernel: int = 0          # patch-embedding conv kernel; 0 = patch_size (non-overlapping)
    embed_dim: int = 96
    depths: tuple = (2, 2, 6, 2)
    heads: tuple = (3, 6, 12, 24)
    window: int = 4
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    L: int = 16
    lam_init: float = 3.0
    # the topology of the paper's own code (docs/official-mst.md); all off = this project's MST
    mlp_norm: bool = False          # BatchNorm after fc1 and after fc2 (the official ImageNet MLP)
    mlp_skip_norm: bool = False     # the MLP output is added to BN2(x), not to x (the official block)
    final_layernorm: bool = False   # LayerNorm, not BatchNorm, before the pooling and the head
    preset: str = field(default="custom")

    def __post_init__(self):
        check_field_types(self)
        check_range(self, "img_size", 1, MAX_SIDE)
        check_range(self, "in_chans", 1, MAX_CHANNELS)
        check_range(self, "num_classes", 1, MAX_CLASSES)
        check_range(self, "patch_size", 1, self.img_size)
        check_range(self, "embed_kernel", 0, self.img_size)
        check_range(self, "embed_dim", 1, MAX_CHANNELS)
        check_range(self, "window", 1, MAX_SIDE)
        check_range(self, "L", 1, MAX_LEVELS)
        check_range(self, "mlp_ratio", 0.0, 64.0, low_open=True)
        check_range(self, "lam_init", 0.0, 1e6, low_open=True)
        if not 1 <= len(self.depths) <= MAX_STAGES:
            raise MSTError(f"config: depths needs 1 to {MAX_STAGES} entries (blocks per stage), not {len(self.depths)}")
        if len(self.depths) != len(self.heads):
            raise MSTError(f"config: depths and heads need one entry per stage, not {len(self.depths)} and "
                           f"{len(self.heads)}")
        for name in ("depths", "heads"):
            bad = [v for v in getattr(self, name) if not 1 <= v <= MAX_BLOCKS]
            if bad:
                raise MSTError(f"config: every entry of {name} must be an integer in [1, {MAX_BLOCKS}], not {bad[0]}")
        if sum(self.depths) > MAX_BLOCKS:
            raise MSTError(f"config: depths sum to {sum(self.depths)} blocks; at most {MAX_BLOCKS} are supported")
        if self.embed_dim * 2 ** (len(self.depths) - 1) > MAX_CHANNELS:
            raise MSTError(f"config: embed_dim {self.embed_dim} doubled over {len(self.depths)} stages exceeds "
                           f"{MAX_CHANNELS} channels")
        if int(self.embed_dim * 2 ** (len(self.depths) - 1) * self.mlp_ratio) > MAX_CHANNELS:
            raise MSTError(f"config: mlp_ratio {self.mlp_ratio} makes an MLP wider than {MAX_CHANNELS} channels")
        if self.embed_kernel and (self.embed_kernel < self.patch_size or (self.embed_kernel - self.patch_size) % 2):
            raise MSTError(f"config: embed_kernel {self.embed_kernel} must be 0 or patch_size {self.patch_size} plus "
                           "an even number (symmetric padding)")
        if self.img_size % self.patch_size:
            raise MSTError(f"config: img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")
        res = self.img_size // self.patch_size
        for s in range(len(self.depths)):
            dim = self.embed_dim * 2 ** s
            if int(dim * self.mlp_ratio) < 1:
                raise MSTError(f"config: mlp_ratio {self.mlp_ratio} leaves stage {s} an MLP of width 0")
            if self.heads[s] > dim or dim % self.heads[s]:
                raise MSTError(f"config: stage {s} width {dim} is not divisible by {self.heads[s]} heads")
            w = min(self.window, res)
            if res % w:
                raise MSTError(f"config: stage {s} grid {res}x{res} is not a multiple of window {w}")
            if s + 1 < len(self.depths):
                if res % 2:
                    raise MSTError(f"config: stage {s} grid {res} cannot be merged 2x2")
                res //= 2

    def to_dict(self) -> dict:
        """The config as a plain dict (what a checkpoint stores)."""
        d = asdict(self)
        d["depths"], d["heads"] = list(self.depths), list(self.heads)
        for k in OFFICIAL_TOPOLOGY:   # written only when on: files of this project's MST stay as they were
            if not d[k]:
                del d[k]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "MSTConfig":
        """A config from a checkpoint's dict (unknown keys refused)."""
        return config_from_dict(cls, d, "model config")


# Config fields that switch on the official code's topology (docs/official-mst.md)
OFFICIAL_TOPOLOGY = ("mlp_norm", "mlp_skip_norm", "final_layernorm")

# Fields that change what the model computes: a checkpoint's config must give every one of them; a missing
# one is refused naming it (mst_lava.checkpoint), never rebuilt with the default (a file without L would
# otherwise quantize at 16 levels, one without img_size would read 32x32 inputs). Every shipped checkpoint
# (export/*.pt) and every file `mst train`/`mst import-official` wrote has all of them. Not required:
# lam_init (only the initial λ; the weights hold the trained λ), preset (a label) and OFFICIAL_TOPOLOGY
# (written only when on: absent means off).
REQUIRED_IN_CHECKPOINT = ("img_size", "in_chans", "num_classes", "patch_size", "embed_kernel", "embed_dim",
                          "depths", "heads", "window", "mlp_ratio", "qkv_bias", "L")


def official_topology(cfg: MSTConfig) -> list[str]:
    """The official-topology fields a config switches on (empty for this project's own MST)."""
    return [k for k in OFFICIAL_TOPOLOGY if getattr(cfg, k, False)]


# Plausibility limits of a model config: far beyond any real model, small enough that shapes cannot overflow.
MAX_SIDE = 16384          # image side, window side
MAX_CHANNELS = 1 << 20    # any channel width
MAX_CLASSES = 1 << 20
MAX_STAGES = 16
MAX_BLOCKS = 1024         # blocks per stage, heads per stage, blocks in all
MAX_LEVELS = 1 << 16      # QCFS quantization levels L


def _show(v) -> str:
    r = repr(v)
    return (r if len(r) <= 40 else r[:37] + "...") + f" ({type(v).__name__})"


def check_field_types(obj) -> None:
    """Check every field of a config dataclass against its annotated type (int, float, bool, str,
    tuple of ints) and normalize it; an MSTError names the field. Booleans are not integers here."""
    for f in fields(obj):
        v, t = getattr(obj, f.name), f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
        if t == "int":
            if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                raise MSTError(f"config: {f.name} must be an integer, not {_show(v)}")
            v = int(v)
        elif t == "float":
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(float(v)):
                raise MSTError(f"config: {f.name} must be a finite number, not {_show(v)}")
            v = float(v)
        elif t == "bool":
            if not isinstance(v, (bool, np.bool_)):
                raise MSTError(f"config: {f.name} must be true or false, not {_show(v)}")
            v = bool(v)
        elif t == "str":
            if not isinstance(v, str) or len(v) > 200:
                raise MSTError(f"config: {f.name} must be a short string, not {_show(v)}")
        elif t == "tuple":
            if not isinstance(v, (list, tuple)) or len(v) > MAX_BLOCKS or \
                    any(isinstance(e, bool) or not isinstance(e, numbers.Integral) for e in v):
                raise MSTError(f"config: {f.name} must be a list of integers (one per stage), not {_show(v)}")
            v = tuple(int(e) for e in v)
        setattr(obj, f.name, v)


def check_range(obj, name: str, lo, hi, low_open: bool = False) -> None:
    v = getattr(obj, name)
    if (v <= lo if low_open else v < lo) or v > hi:
        kind = "a number" if isinstance(v, float) else "an integer"
        raise MSTError(f"config: {name} must be {kind} in {'(' if low_open else '['}{lo:g}, {hi}], not {v!r}")


def config_from_dict(cls, d: dict, what: str):
    """``cls(**d)`` for a config dataclass, refusing keys it does not have (a clear MSTError)."""
    if not isinstance(d, dict):
        raise MSTError(f"{what} must be a dict of fields, not {_show(d)}")
    bad = [k for k in d if not isinstance(k, str)]
    if bad:
        raise MSTError(f"{what} has a key that is not a field name: {_show(bad[0])}")
    unknown = set(d) - {f.name for f in fields(cls)}
    if unknown:
        raise MSTError(f"{what} has unknown keys {sorted(unknown)}")
    return cls(**d)


PRESETS: dict[str, MSTConfig] = {
    # 8×8 digits: one pixel per token, so the patch embedding is an overlapping 3×3 conv
    "digits": MSTConfig(img_size=8, in_chans=1, num_classes=10, patch_size=1, embed_kernel=3, embed_dim=32,
                        depths=(2, 2), heads=(2, 4), window=4, mlp_ratio=2.0, preset="digits"),
    "fmnist": MSTConfig(img_size=28, in_chans=1, num_classes=10, patch_size=2, embed_dim=48,
                        depths=(2, 2), heads=(3, 6), window=7, mlp_ratio=4.0, preset="fmnist"),
    # event-camera frames (2 polarity channels) resized to 64×64
    "dvs": MSTConfig(img_size=64, in_chans=2, num_classes=10, patch_size=4, embed_dim=48,
                     depths=(2, 2), heads=(3, 6), window=4, mlp_ratio=4.0, preset="dvs"),
    "cifar": MSTConfig(img_size=32, in_chans=3, num_classes=10, patch_size=2, embed_dim=96,
                       depths=(2, 2, 6, 2), heads=(3, 6, 12, 24), window=4, preset="cifar"),
    "swin-t": MSTConfig(img_size=224, in_chans=3, num_classes=1000, patch_size=4, embed_dim=96,
                        depths=(2, 2, 6, 2), heads=(3, 6, 12, 24), window=7, preset="swin-t"),
}


def build_model(preset: str | MSTConfig = "digits", **overrides) -> "MST":
    """An MST from a preset name (digits, fmnist, cifar, swin-t) or a config, with field overrides."""
    if isinstance(preset, MSTConfig):
        cfg = preset
    else:
        if preset not in PRESETS:
            raise MSTError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
        cfg = PRESETS[preset]
    d = cfg.to_dict()
    d.update(overrides)
    return MST(MSTConfig.from_dict(d))


class TokenBN(nn.BatchNorm1d):
    """BatchNorm over the channel (last) dimension of a ``(..., C)`` tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """BatchNorm over the last (channel) dimension of ``x`` (..., C)."""
        shape = x.shape
        return super().forward(x.reshape(-1, shape[-1])).reshape(shape)


def window_partition(x: torch.Tensor, w: int) -> torch.Tensor:
    """(B, H, W, C) → (B·nW, w·w, C), windows of one image contiguous, row-major."""
    B, H, W, C = x.shape
    x = x.view(B, H // w, w, W // w, w, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, w * w, C)


def window_reverse(x: torch.Tensor, w: int, H: int, W: int) -> torch.Tensor:
    """(B·nW, w·w, C) → (B, H, W, C), inverse of :func:`window_partition`."""
    C = x.shape[-1]
    x = x.view(-1, H // w, W // w, w, w, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, H, W, C)


def relative_position_index(w: int) -> torch.Tensor:
    """(w², w²) index into a (2w-1)² bias table: token i attends token j at offset (dy, dx)."""
    ys, xs = torch.meshgrid(torch.arange(w), torch.arange(w), indexing="ij")
    coords = torch.stack([ys.flatten(), xs.flatten()])          # 2, N
    rel = coords[:, :, None] - coords[:, None, :] + (w - 1)     # 2, N, N in [0, 2w-2]
    return rel[0] * (2 * w - 1) + rel[1]


def shift_attention_mask(H: int, W: int, w: int, s: int) -> torch.Tensor:
    """(nW, w², w²) additive mask for shifted windows: -100 between tokens of different regions.

    After a cyclic shift by -s, the last window along each axis mixes tokens from
    opposite borders; the grid is cut into regions [0, H-w), [H-w, H-s), [H-s, H)
    per axis and tokens only attend within their region.
    """
    region = torch.zeros(1, H, W, 1)
    cnt = 0
    for hs in (slice(0, -w), slice(-w, -s), slice(-s, None)):
        for ws in (slice(0, -w), slice(-w, -s), slice(-s, None)):
            region[:, hs, ws, :] = cnt
            cnt += 1
    win = window_partition(region, w).squeeze(-1)              # nW, N
    diff = win[:, None, :] - win[:, :, None]
    return torch.where(diff != 0, torch.tensor(-100.0), torch.tensor(0.0))


class WindowAttention(nn.Module):
    def __init__(self, dim: int, heads: int, w: int, block: int, cfg: MSTConfig):
        super().__init__()
        self.heads, self.w = heads, w
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=cfg.qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.bias_table = nn.Parameter(torch.zeros((2 * w - 1) ** 2, heads))
        nn.init.trunc_normal_(self.bias_table, std=0.02)
        self.register_buffer("rel_index", relative_position_index(w), persistent=False)
        q = lambda site: QCFS(site, block, cfg.L, cfg.lam_init)  # noqa: E731
        self.q_act, self.k_act, self.v_act = q("Q"), q("K"), q("V")
        self.a_act, self.av_act, self.proj_act = q("A"), q("AV"), q("Proj")
        self.products = None     # set by mst_lava.snn: its own scores()/attend() for a spiking run

    def position_bias(self) -> torch.Tensor:
        """The relative-position bias table ``(heads, N, N)`` of a window."""
        N = self.w * self.w
        return self.bias_table[self.rel_index.view(-1)].view(N, N, -1).permute(2, 0, 1)  # h, N, N

    def scores(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """Q·Kᵀ·scale, the input of the A site."""
        return (q @ k.transpose(-2, -1)) * self.scale

    def attend(self, a: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """softmax(a + relative-position bias (+ shift mask)) · v, the input of the AV site."""
        Bn, h, N, _ = a.shape
        a = a + self.position_bias().unsqueeze(0)
        if mask is not None:
            nW = mask.shape[0]
            a = (a.view(-1, nW, h, N, N) + mask.unsqueeze(1)).view(Bn, h, N, N)
        return a.softmax(dim=-1) @ v

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Windowed multi-head attention of windows ``(B·nW, N, C)``, with the shift mask when given."""
        Bn, N, C = x.shape
        h = self.heads
        qkv = self.qkv(x).view(Bn, N, 3, h, C // h).permute(2, 0, 3, 1, 4)
        q, k, v = self.q_act(qkv[0]), self.k_act(qkv[1]), self.v_act(qkv[2])
        p = self if self.products is None else self.products
        a = self.a_act(p.scores(q, k))
        o = self.av_act(p.attend(a, v, mask))
        o = o.transpose(1, 2).reshape(Bn, N, C)
        return self.proj_act(self.proj(o))


class Block(nn.Module):
    """Pre-norm transformer block with (shifted) window attention; BN in place of LN."""

    def __init__(self, dim: int, heads: int, res: int, w: int, shift: int, block: int, cfg: MSTConfig):
        super().__init__()
        self.res, self.w, self.shift, self.index = res, w, shift, block
        self.norm1 = TokenBN(dim)
        self.sc1 = QCFS("SC1", block, cfg.L, cfg.lam_init)
        self.attn = WindowAttention(dim, heads, w, block, cfg)
        self.norm2 = TokenBN(dim)
        self.sc2 = QCFS("SC2", block, cfg.L, cfg.lam_init)
        hidden = int(dim * cfg.mlp_ratio)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc1_norm = TokenBN(hidden) if cfg.mlp_norm else None
        self.mlp1 = QCFS("MLP1", block, cfg.L, cfg.lam_init)
        self.fc2 = nn.Linear(hidden, dim)
        self.fc2_norm = TokenBN(dim) if cfg.mlp_norm else None
        self.mlp2 = QCFS("MLP2", block, cfg.L, cfg.lam_init)
        self.mlp_skip_norm = cfg.mlp_skip_norm
        if shift:
            self.register_buffer("attn_mask", shift_attention_mask(res, res, w, shift), persistent=False)
        else:
            self.attn_mask = None

    def attention_branch(self, x: torch.Tensor) -> torch.Tensor:
        """SC1, (shifted) window attention and Proj of the stream ``(B, H, W, C)``."""
        H = W = self.res
        y = self.sc1(self.norm1(x))
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
        y = self.attn(window_partition(y, self.w), self.attn_mask)
        y = window_reverse(y, self.w, H, W)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        return y

    def mlp_branch(self, x: torch.Tensor, normed: torch.Tensor | None = None) -> torch.Tensor:
        """MLP2(fc2(MLP1(fc1(SC2(BN2(x)))))), with BatchNorm after fc1 and fc2 if ``mlp_norm``;
        ``normed``: BN2(x) when the caller has it already."""
        if self.fc1_norm is None:
            return self.mlp2(self.fc2(self.mlp1(self.fc1(self.sc2(self.norm2(x) if normed is None else normed)))))
        h = self.fc1_norm(self.fc1(self.sc2(self.norm2(x) if normed is None else normed)))
        return self.mlp2(self.fc2_norm(self.fc2(self.mlp1(h))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One transformer block on the stream ``(B, H, W, C)``: attention and MLP branches added to the residual."""
        x = x + self.attention_branch(x)
        if self.mlp_skip_norm:      # the official block: the MLP's skip starts at BN2(x)
            x = self.norm2(x)
            return x + self.mlp_branch(x, normed=x)
        return x + self.mlp_branch(x)


class PatchMerging(nn.Module):
    """2×2 neighbourhood gather (B, H, W, C) → (B, H/2, W/2, 4C), BN, linear 4C → 2C, QCFS.

    The gather order is (0,0), (1,0), (0,1), (1,1) as (row, col) offsets, so the
    linear layer equals a 2×2 stride-2 convolution (see docs/netx-mst-format.md).
    """

    def __init__(self, dim: int, stage: int, cfg: MSTConfig):
        super().__init__()
        self.norm = TokenBN(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.act = QCFS("merge", stage, cfg.L, cfg.lam_init)

    @staticmethod
    def gather(x: torch.Tensor) -> torch.Tensor:
        """(..., H, W, C) → (..., H/2, W/2, 4C): the 2×2 neighbourhoods, channel k·C + c."""
        return torch.cat([x[..., 0::2, 0::2, :], x[..., 1::2, 0::2, :], x[..., 0::2, 1::2, :],
                          x[..., 1::2, 1::2, :]], dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Gather 2×2 tokens, BN and reduce: ``(B, H, W, C)`` → ``(B, H/2, W/2, 2C)``."""
        return self.act(self.reduction(self.norm(self.gather(x))))


class MST(nn.Module):
    def __init__(self, cfg: MSTConfig):
        super().__init__()
        self.cfg = cfg
        C = cfg.embed_dim
        k = cfg.embed_kernel or cfg.patch_size
        self.patch_embed = nn.Conv2d(cfg.in_chans, C, k, cfg.patch_size, padding=(k - cfg.patch_size) // 2)
        self.embed_norm = nn.BatchNorm2d(C)
        self.embed_act = QCFS("embed", 0, cfg.L, cfg.lam_init)
        res = cfg.img_size // cfg.patch_size
        self.stages = nn.ModuleList()
        self.merges = nn.ModuleList()
        b = 0
        for s, (depth, heads) in enumerate(zip(cfg.depths, cfg.heads)):
            dim = C * 2 ** s
            w = min(cfg.window, res)
            shift = w // 2 if res > w else 0
            self.stages.append(nn.ModuleList(
                Block(dim, heads, res, w, shift if i % 2 else 0, b + i, cfg) for i in range(depth)))
            b += depth
            if s + 1 < len(cfg.depths):
                self.merges.append(PatchMerging(dim, s + 1, cfg))
                res //= 2
        self.num_features = C * 2 ** (len(cfg.depths) - 1)
        self.norm = nn.LayerNorm(self.num_features) if cfg.final_layernorm else TokenBN(self.num_features)
        self.head = nn.Linear(self.num_features, cfg.num_classes)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module):
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def blocks(self):
        """Every block of every stage, in forward order."""
        for stage in self.stages:
            yield from stage

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The patch embedding with its BN and QCFS: images ``(B, C, H, W)`` → tokens ``(B, H', W', D)``."""
        return self.embed_act(self.embed_norm(self.patch_embed(x)).permute(0, 2, 3, 1))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The stages and merges on the embedded tokens, then the final norm: the stream before the head."""
        x = self.embed(x)
        for s, stage in enumerate(self.stages):
            for blk in stage:
                x = blk(x)
            if s < len(self.merges):
                x = self.merges[s](x)
        return self.norm(x).mean(dim=(1, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, K)`` of images ``(B, C, H, W)``."""
        return self.head(self.forward_features(x))
