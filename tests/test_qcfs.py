import torch

from mst_lava.model.qcfs import QCFS, qcfs


def hand_qcfs(x: float, lam: float, L: int) -> float:
    import math
    level = math.floor(x * L / lam + 0.5)
    return lam / L * min(max(level, 0), L)


def test_values_at_every_level_boundary():
    lam, L = 3.0, 16
    step = lam / L
    xs = []
    for k in range(-2, L + 3):
        b = (k - 0.5) * step                      # boundary between level k-1 and k
        xs += [b - 1e-4, b + 1e-4]
    x = torch.tensor(xs, dtype=torch.float64)
    y = qcfs(x, torch.tensor(lam, dtype=torch.float64), L)
    expected = torch.tensor([hand_qcfs(v, lam, L) for v in xs], dtype=torch.float64)
    assert torch.equal(y, expected)
    # below a boundary is one level under above it (inside the range)
    assert y[2 * 3 + 1] - y[2 * 3] == step


def test_clip_and_levels():
    y = qcfs(torch.tensor([-5.0, 0.0, 100.0, 3.0]), torch.tensor(3.0), 16)
    assert y.tolist() == [0.0, 0.0, 3.0, 3.0]
    y = qcfs(torch.linspace(-1, 4, 1001), torch.tensor(3.0), 16)
    assert len(torch.unique(y)) == 17


def test_gradient_reaches_lambda_and_input():
    m = QCFS("Q", 0)
    x = torch.tensor([0.4, 1.3, 5.0, -1.0], requires_grad=True)
    m(x).sum().backward()
    assert m.lam.grad is not None and m.lam.grad.item() != 0.0
    # straight-through: d/dx is 1 inside (0, λ), 0 where clipped
    assert x.grad.tolist() == [1.0, 1.0, 0.0, 0.0]
    # a clipped input (x > λ) outputs λ exactly: d/dλ = 1 for it alone
    m.lam.grad = None
    m(torch.tensor([5.0])).sum().backward()
    assert m.lam.grad.item() == 1.0


def test_initial_lambda_and_levels_default():
    m = QCFS("K", 2)
    assert m.lam.item() == 3.0 and m.L == 16 and m.site == "K" and m.block == 2
