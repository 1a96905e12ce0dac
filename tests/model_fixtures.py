"""Small random models shared by tests (import from a test: pytest puts tests/ on sys.path)."""
import torch

from mst_lava.model import build_model


def small_model(seed: int = 0):
    """Random digits-like MST with non-trivial BN statistics and thresholds; stage 0 has a shifted block."""
    torch.manual_seed(seed)
    m = build_model("digits", embed_dim=16, depths=(2, 1), heads=(2, 2))
    for mod in m.modules():
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
            mod.running_mean.uniform_(-0.3, 0.3)
            mod.running_var.uniform_(0.4, 2.0)
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.uniform_(-0.3, 0.3)
        if hasattr(mod, "lam"):
            mod.lam.data.uniform_(1.0, 3.0)
    return m.eval()


def spiky_mst(seed: int = 0):
    """Float64 digits MST whose every kind of site fires and whose attention matters (simulator tests)."""
    from mst_lava.snn.testing import make_spiky, sharpen_attention
    torch.manual_seed(seed)
    m = build_model("digits", embed_dim=16, heads=(2, 4), mlp_ratio=2.0)
    return sharpen_attention(make_spiky(m, seed=seed), seed=seed).double()


def digits_images(n: int) -> torch.Tensor:
    """The first ``n`` digits test images (float32, normalized as in training)."""
    from mst_lava.data import get_dataset
    ds = get_dataset("digits", None, "test", 8, in_chans=1)
    return torch.stack([torch.as_tensor(ds[i][0]) for i in range(n)]).float()
