"""Sparse rotation of the latent space: an optimisation step for the masked (sparse) priors.

The likelihood and the encoder cannot tell a latent space from any rotation of it: rotating z
by an orthogonal R while the decoder's first layer takes R back leaves p(x | z) and the fit
unchanged. Only the sparse prior prefers one orientation, the one in which each perturbation
shifts few latents. Gradient descent moves towards it slowly (the orientation is held by every
weight of both networks); on the paper's simulation the latent space after the KL warm-up is
already close to a rotation of the true one (Procrustes-aligned MCC ~0.92) while the learned
axes are still mixtures (MCC ~0.5), and 300 more epochs recover only part of the gap.

:func:`sparse_rotation` finds the orthogonal R that makes the perturbations' mean latent
shifts sparsest (smallest L1 norm, the convex surrogate of the number of targets), and
:meth:`~sparsevae.module.SparseShiftVAE.rotate_latents` applies it without changing the
networks' function. Training then continues on the same objective.

The shifts are the package's one mean latent shift (:mod:`sparsevae._shifts`): from the control
cells' mean, or, without control cells, from the per-latent median of the perturbations' means
(the sparsest origin), to which the rotation then also moves the latent origin
(:func:`shift_origin`, :func:`sparsest_origin`).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from sparsevae._constants import REGISTRY_KEYS
from sparsevae._shifts import latent_shifts, shift_reference


@torch.no_grad()
def latent_shift_sums(module, batches: Iterable[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    """Sums and counts of the posterior means of cells, per perturbation.

    Rows 0 .. n_perturbations - 1 hold the cells with exactly one perturbation (combinations
    are left out), the last row control cells. Returned as sums, so that several processes'
    shares of the data can be added before :func:`mean_shifts` divides. Batch normalisation
    and dropout follow the module's mode: call ``eval()`` first.
    """
    prior = module.prior
    n_rows = prior.n_perturbations + 1
    device = prior.is_perturbed.device
    sums = torch.zeros(n_rows, module.n_latent, dtype=torch.float64, device=device)
    counts = torch.zeros(n_rows, dtype=torch.float64, device=device)
    for tensors in batches:
        x = tensors[REGISTRY_KEYS.X_KEY].to(device)
        raw = tensors[REGISTRY_KEYS.PERTURBATION_KEY].to(device)
        codes, weight = prior._codes(raw)
        n_perturbed = weight.sum(dim=1)
        row = codes.gather(1, weight.argmax(dim=1, keepdim=True)).squeeze(1)
        row = torch.where(n_perturbed == 0, n_rows - 1, row)
        keep = n_perturbed <= 1
        qz = module.encode(x[keep], raw[keep])
        sums.index_add_(0, row[keep], qz.loc.double())
        counts.index_add_(0, row[keep], torch.ones_like(sums[row[keep], 0]))
    return sums, counts


def _category_means(
    sums: torch.Tensor, counts: torch.Tensor
) -> tuple[np.ndarray, np.ndarray | None]:
    """The perturbations' mean latents (NaN rows: no cells) and control's (``None``: no cells)."""
    means = (sums / counts.clamp(min=1).unsqueeze(-1)).detach().cpu().numpy()
    perturbed = np.where((counts[:-1] > 0).cpu().numpy()[:, None], means[:-1], np.nan)
    return perturbed, (means[-1] if counts[-1] > 0 else None)


def mean_shifts(sums: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each perturbation's mean latent shift, and which rows have cells.

    The package's one definition (:func:`sparsevae._shifts.latent_shifts`): the mean of the
    perturbation's cells minus control's, or, without control cells, minus the per-latent
    median of the perturbations' means (:func:`shift_origin`). ``sums`` and ``counts`` are
    those of :func:`latent_shift_sums`. Returns ``(shifts, rows)`` with shapes
    (n_perturbations, n_latent) and (n_perturbations,), on the device and in the dtype of
    ``sums``; rows without cells have shift 0.
    """
    means, control = _category_means(sums, counts)
    shifts = np.nan_to_num(latent_shifts(means, control), nan=0.0)
    rows = counts[:-1] > 0
    return torch.as_tensor(shifts, dtype=sums.dtype, device=sums.device), rows


def shift_origin(sums: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """The point that :func:`mean_shifts` measures from, in the latents' coordinates.

    Control's mean latent, or without control cells the per-latent median of the
    perturbations' means (:func:`sparsevae._shifts.shift_reference`). Shape (n_latent,), on
    the device and in the dtype of ``sums``.
    """
    means, control = _category_means(sums, counts)
    return torch.as_tensor(shift_reference(means, control), dtype=sums.dtype, device=sums.device)


def sparsest_origin(shifts: torch.Tensor) -> torch.Tensor:
    """The origin of the latent space that makes the shifts sparsest: their median per latent.

    Without control cells nothing in the data places the origin (the decoder's first-layer bias
    can absorb any translation, as its weights absorb any rotation), and a latent whose origin
    sits off the unshifted perturbations' mean gives every perturbation a small shift: an edge
    for each under a cost that the data can pay. The per-latent median minimises the L1 norm
    of ``shifts - c``, so the perturbations that leave a latent alone (most of them, in a
    sparse graph) share its origin. It is the reference of the package's one shift definition
    without control cells (:func:`sparsevae._shifts.shift_reference`). ``shifts``:
    (n_perturbations, n_latent); returns (n_latent,), on the device and in the dtype of
    ``shifts``.
    """
    median = shift_reference(shifts.detach().cpu().numpy())
    return torch.as_tensor(median, dtype=shifts.dtype, device=shifts.device)


#: From this many latents on, :func:`sparse_rotation` differentiates the matrix exponential
#: through an eigendecomposition (:class:`_SkewExp`) instead of torch's default. Below it, the
#: rotation is reproducible to round-off and keeps torch's arithmetic (every figure measured
#: at the default p = 15 stays bitwise); from about 50 latents on, its result already moves
#: with round-off (a 1e-15 change of the shifts moves R visibly: benchmarks/scaling.py
#: --part rotation), and torch's backward, an exponential of a 2p × 2p matrix, makes the
#: rotation the largest one-off cost of a fit (about 4 minutes at p = 200, 20,000 cells).
EIGH_BACKWARD_FROM = 50


class _SkewExp(torch.autograd.Function):
    """``torch.linalg.matrix_exp`` of real skew-symmetric matrices, differentiated exactly.

    The forward is torch's. The backward (the adjoint of the Fréchet derivative at G) uses the
    eigendecomposition of the Hermitian ``iX``, ``X = U diag(i theta) U^H``:
    ``Re U (conj(F) * (U^H G U)) U^H``, with F the divided differences of exp at ``i theta``,
    ``exp(i (a + b) / 2) sinc((a - b) / 2)`` (continuous where eigenvalues coincide). Exact to
    round-off and about 3x faster than torch's at p = 200; ``tests/test_rotation_backward.py``
    checks it against torch's gradient.
    """

    @staticmethod
    def forward(ctx, skew: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(skew)
        return torch.linalg.matrix_exp(skew)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (skew,) = ctx.saved_tensors
        eigenvalues, vectors = torch.linalg.eigh(1j * skew.to(torch.complex128))
        theta = -eigenvalues
        half_sum = 0.5 * (theta.unsqueeze(-1) + theta.unsqueeze(-2))
        half_difference = 0.5 * (theta.unsqueeze(-1) - theta.unsqueeze(-2))
        divided = torch.polar(torch.sinc(half_difference / torch.pi), half_sum)
        inner = vectors.mH @ grad.to(vectors.dtype) @ vectors
        return (vectors @ (divided.conj() * inner) @ vectors.mH).real.to(grad.dtype)


def sparse_rotation(
    shifts: torch.Tensor,
    n_starts: int = 8,
    n_steps: int = 500,
    lr: float = 0.02,
    seed: int = 0,
) -> torch.Tensor:
    """Orthogonal R minimising ``|shifts @ R|_1`` (sum of absolute values).

    Parameters
    ----------
    shifts
        Shape (n_perturbations, n_latent): each perturbation's mean latent shift from control.
    n_starts
        Local optimisations: one from the identity, the others from seeded random rotations;
        the one with the smallest L1 norm is returned.
    n_steps, lr
        Adam steps and learning rate on the skew-symmetric generator A, ``R = exp(A - A^T)``
        (differentiated through an eigendecomposition from :data:`EIGH_BACKWARD_FROM` latents
        on).
    seed
        Seed of the random starts (the result is deterministic).

    Returns
    -------
    (n_latent, n_latent) orthogonal matrix in the dtype and device of ``shifts``; the rotated
    shifts are ``shifts @ R``. Of the equally sparse solutions (any signed permutation of the
    latents) it is the one closest to the identity.
    """
    target = shifts.detach().to(torch.float64)
    n_latent = target.shape[1]
    generator = torch.Generator(device="cpu").manual_seed(seed)
    # All starts are optimised together, as one batch of generators: the summed norm's
    # gradient with respect to each start's generator is that start's own, and Adam works
    # element by element, so every start follows the path it would alone, in one loop.
    starts = torch.zeros(n_starts, n_latent, n_latent, dtype=torch.float64)
    for start in range(1, n_starts):
        starts[start] = 0.5 * torch.randn(
            n_latent, n_latent, dtype=torch.float64, generator=generator
        )
    skew = starts.to(target.device).requires_grad_(True)
    optimizer = torch.optim.Adam([skew], lr=lr)
    exp = _SkewExp.apply if n_latent >= EIGH_BACKWARD_FROM else torch.linalg.matrix_exp
    with torch.enable_grad():
        for _ in range(n_steps):
            optimizer.zero_grad()
            norms = (target @ exp(skew - skew.mT)).abs().sum(dim=(1, 2))
            norms.sum().backward()
            optimizer.step()
    rotations = torch.linalg.matrix_exp(skew.detach() - skew.detach().mT)
    norms = (target @ rotations).abs().sum(dim=(1, 2))
    best = rotations[int(norms.argmin())]  # the first of equal minima, as a loop would
    return _closest_to_identity(best).to(device=shifts.device, dtype=shifts.dtype)


def _closest_to_identity(rotation: torch.Tensor) -> torch.Tensor:
    """The same rotation up to a signed permutation of its columns.

    A signed permutation changes no L1 norm; it is chosen so that each latent keeps as much of its
    old axis as it can: latents are not renamed or flipped for nothing.
    """
    rows, cols = linear_sum_assignment(rotation.abs().cpu().numpy(), maximize=True)
    return signed_permutation(rotation, torch.as_tensor(cols[rows.argsort()]))


def signed_permutation(rotation: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """``rotation``'s columns in ``order``, each signed so that its diagonal entry is >= 0."""
    permuted = rotation[:, order.to(rotation.device)]
    diagonal = torch.diagonal(permuted)
    return permuted * torch.sign(diagonal).where(diagonal != 0, torch.ones_like(diagonal))
