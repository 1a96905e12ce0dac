import itertools

import pytest
import torch

from mst_lava.errors import MSTError
from mst_lava.model import PRESETS, build_model, iter_sites
from mst_lava.model.mst import relative_position_index, shift_attention_mask, window_partition, window_reverse
from mst_lava.model.rsm import BLOCK_SITES


def independent_shift_mask(H, W, w, s):
    """Tokens of a shifted window may attend each other iff, along each axis, both or neither
    wrapped around the border in the cyclic shift (original coordinate = shifted + s >= size)."""
    nW = (H // w) * (W // w)
    mask = torch.zeros(nW, w * w, w * w)
    for wi, (by, bx) in enumerate(itertools.product(range(H // w), range(W // w))):
        toks = [(by * w + i, bx * w + j) for i in range(w) for j in range(w)]
        for a, (y1, x1) in enumerate(toks):
            for b, (y2, x2) in enumerate(toks):
                same = ((y1 + s >= H) == (y2 + s >= H)) and ((x1 + s >= W) == (x2 + s >= W))
                mask[wi, a, b] = 0.0 if same else -100.0
    return mask


@pytest.mark.parametrize("H,w,s", [(8, 4, 2), (12, 4, 2), (6, 3, 1), (14, 7, 3)])
def test_shift_mask_matches_independent_computation(H, w, s):
    assert torch.equal(shift_attention_mask(H, H, w, s), independent_shift_mask(H, H, w, s))


def test_window_partition_roundtrip():
    x = torch.randn(2, 8, 8, 5)
    p = window_partition(x, 4)
    assert p.shape == (8, 16, 5)
    assert torch.equal(p[0, 5], x[0, 1, 1])  # window 0, token (1,1)
    assert torch.equal(window_reverse(p, 4, 8, 8), x)


@pytest.mark.parametrize("H,W,w,s", [(8, 8, 4, 2), (12, 8, 4, 2), (6, 9, 3, 1), (14, 14, 7, 3), (56, 56, 7, 3)])
def test_window_helpers_equal_timm_swin(H, W, w, s):
    """Our window partition/reverse, relative-position index and shift mask are timm's Swin ones."""
    swin = pytest.importorskip("timm.models.swin_transformer")
    x = torch.randn(2, H, W, 5)
    ours = window_partition(x, w)
    theirs = swin.window_partition(x, (w, w))                      # (B·nW, w, w, C)
    assert torch.equal(ours, theirs.reshape(-1, w * w, 5))
    assert torch.equal(window_reverse(ours, w, H, W), swin.window_reverse(theirs, (w, w), H, W))
    assert torch.equal(relative_position_index(w), swin.get_relative_position_index(w, w))
    block = swin.SwinTransformerBlock(dim=4, input_resolution=(H, W), num_heads=1, window_size=w, shift_size=s)
    assert block.shift_size == (s, s) and block.attn_mask is not None
    assert torch.equal(shift_attention_mask(H, W, w, s), block.attn_mask)


def test_presets_shapes_and_sites():
    for name, cfg in PRESETS.items():
        if name == "swin-t":
            continue
        m = build_model(name).eval()
        y = m(torch.randn(2, cfg.in_chans, cfg.img_size, cfg.img_size))
        assert y.shape == (2, cfg.num_classes)
    m = build_model("digits")
    sites = [(s.site, s.block) for _, s in iter_sites(m)]
    for b in range(sum(m.cfg.depths)):
        assert sorted(s for s, blk in sites if blk == b and s in BLOCK_SITES) == sorted(BLOCK_SITES)
    assert ("embed", 0) in sites and ("merge", 1) in sites
    # every site is addressable by name and block and all norms are BatchNorm
    assert not any(isinstance(mod, torch.nn.LayerNorm) for mod in m.modules())


def test_swin_t_parameter_count_within_5_percent_of_paper():
    n = sum(p.numel() for p in build_model("swin-t").parameters())
    assert abs(n - 28.5e6) / 28.5e6 < 0.05


def test_bad_config_is_refused():
    with pytest.raises(MSTError, match="unknown preset"):
        build_model("resnet")
    with pytest.raises(MSTError, match="not a multiple of window"):
        build_model("digits", window=3)
