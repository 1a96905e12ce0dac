import torch

from mst_lava.model.qcfs import QCFS, qcfs, qcfs_reference


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


def test_fused_qcfs_equals_the_reference_graph_values_and_gradients():
    """The hand-written backward gives autograd's gradients of the definition (fp64 and fp32)."""
    g = torch.Generator().manual_seed(0)
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        x = (torch.randn(4096, generator=g, dtype=dtype) * 3).requires_grad_()
        lam = torch.tensor(2.5, dtype=dtype, requires_grad=True)
        w = torch.randn(4096, generator=g, dtype=dtype)
        y_ref = qcfs_reference(x, lam, 16)
        gx_ref, gl_ref = torch.autograd.grad((y_ref * w).sum(), (x, lam))
        y = qcfs(x, lam, 16)
        gx, gl = torch.autograd.grad((y * w).sum(), (x, lam))
        assert torch.equal(y, y_ref)
        assert torch.allclose(gx, gx_ref, atol=tol, rtol=0)
        assert torch.allclose(gl, gl_ref, rtol=tol, atol=tol) and gl.dtype == lam.dtype
    # on the clip bounds (u = 0, u = 1) the input gradient is 0 and dλ is q/L
    x = torch.tensor([0.0, 2.5], requires_grad=True)
    lam = torch.tensor(2.5, requires_grad=True)
    qcfs(x, lam, 16).sum().backward()
    assert x.grad.tolist() == [0.0, 0.0] and lam.grad.item() == 1.0
