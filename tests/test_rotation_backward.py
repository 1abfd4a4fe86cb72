"""The rotation's exact backward of the matrix exponential (used from EIGH_BACKWARD_FROM
latents on) gives torch's gradient, and the rotation below that size is torch's, unchanged.
"""

from __future__ import annotations

import torch

from sparsevae.module import _rotation
from sparsevae.module._rotation import EIGH_BACKWARD_FROM, _SkewExp, sparse_rotation


def _gradient(exp, skew: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    skew = skew.clone().requires_grad_(True)
    (exp(skew - skew.mT) * weights).sum().backward()
    return skew.grad


def test_eigh_backward_equals_torchs_gradient():
    generator = torch.Generator().manual_seed(0)
    for p in (3, 15, 60):
        skew = torch.randn(4, p, p, dtype=torch.float64, generator=generator)
        skew[0] = 0.0  # the identity: every eigenvalue equal (the divided difference's limit)
        weights = torch.randn(4, p, p, dtype=torch.float64, generator=generator)
        ours = _gradient(_SkewExp.apply, skew, weights)
        torchs = _gradient(torch.linalg.matrix_exp, skew, weights)
        torch.testing.assert_close(ours, torchs, rtol=1e-9, atol=1e-10)
    generator_matrix = 0.3 * torch.randn(2, 5, 5, dtype=torch.float64, generator=generator)
    skew = (generator_matrix - generator_matrix.mT).requires_grad_(True)  # at a skew point
    assert torch.autograd.gradcheck(_SkewExp.apply, (skew,))


def test_small_rotations_keep_torchs_arithmetic(monkeypatch):
    """Below the threshold the exact backward is never called (figures at p = 15 stay bitwise);
    from it on, it is.
    """
    calls = []
    apply = _SkewExp.apply
    monkeypatch.setattr(_SkewExp, "apply", lambda x: calls.append(x.shape[-1]) or apply(x))
    shifts = torch.randn(30, EIGH_BACKWARD_FROM - 1, dtype=torch.float64)
    sparse_rotation(shifts, n_starts=2, n_steps=3)
    assert calls == []
    shifts = torch.randn(30, EIGH_BACKWARD_FROM, dtype=torch.float64)
    rotation = sparse_rotation(shifts, n_starts=2, n_steps=3)
    assert calls and set(calls) == {EIGH_BACKWARD_FROM}
    identity = torch.eye(EIGH_BACKWARD_FROM, dtype=torch.float64)
    torch.testing.assert_close(rotation.T @ rotation, identity, atol=1e-10, rtol=0)
    assert _rotation.EIGH_BACKWARD_FROM == 50
