"""How high can MCC go in each regime: the correlation an oracle that knows the true model reaches.

MCC scores a method's per-cell latents against the true ones. With noisy counts the data do not
determine a cell's latents exactly, whatever the method. This script computes, for each regime
of :data:`sparsevae.data.REGIMES`, the posterior mean ``m = E[z | x, a]`` of every cell's latents
under the **true** model: the simulated decoder (``sv.data.true_log_expression``), the true count
noise (Poisson or the negative binomial with its true dispersion), the true prior of a cell of
perturbation ``a`` (``N(shift_a, I)``, with the true shifts) and the true library-size prior
(log-normal; the library is integrated out, not plugged in).

Why it bounds every method: for any estimate ``f`` computed from the data (a cell's counts and
label, and the rest of the screen, which tells nothing more about this cell's latents than the
true parameters do), ``cov(f, z_i) = cov(f, m_i)``, so ``corr(f, z_i) <= corr(m_i, z_i)``. A
method's matched latent ``j`` is such an ``f``; hence its MCC is at most the mean over latents of
``corr(m_i, z_i)`` (up to sampling error of the estimates, about 0.003 at 10,000 cells).
The same bound without the label (``m = E[z | x]``, the prior the mixture of every label's,
weighted by its cells) holds for latents read from a cell's counts alone, as an encoder that
does not see the label reads them; both are reported.

The posterior mean is computed per cell by importance sampling: a multivariate t proposal (10
degrees of freedom) centred at the posterior mode (L-BFGS) with the inverse Hessian as its scale;
the table reports the median effective sample size per cell, so the approximation can be judged.

Usage::

    python benchmarks/regime_ceiling.py                       # every regime, seed 0
    python benchmarks/regime_ceiling.py --regimes weak_effects --cells 5000
    python benchmarks/regime_ceiling.py --merge-only

Runnable in parts: each (regime, seed) is saved to ``results/regime_ceiling_parts/`` and skipped
when there.
"""

from __future__ import annotations

import argparse
import time
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from sparsevae.data._simulate import COMBINATION_DELIMITER

RESULTS = Path(__file__).parent / "results"
PARTS = RESULTS / "regime_ceiling_parts"
#: Degrees of freedom of the proposal's multivariate t.
DF = 10.0


def _decoder(adata, torch):
    """The simulated decoder as a torch function: latents (..., p) -> log gene fractions."""
    spec = adata.uns["true_decoder"]
    scale = float(spec["scale"])
    if spec["kind"] == "mlp":
        weights = [torch.as_tensor(np.asarray(spec[f"weights_{i}"])) for i in range(4)]
        slope = float(spec["negative_slope"])

        def logits(z):
            h = z
            for w in weights[:-1]:
                h = torch.nn.functional.leaky_relu(h @ w, slope)
            return h @ weights[-1]
    else:
        baseline = torch.as_tensor(np.asarray(spec["baseline"]))
        loadings = torch.as_tensor(np.asarray(spec["loadings"]))

        def logits(z):
            return baseline + z @ loadings

    return lambda z: torch.log_softmax(logits(z) / scale, dim=-1)


def _log_likelihood(u, x, log_fraction, log_theta, fixed_log_library):
    """Log p(x | z, library) up to terms free of ``u``.

    ``u``: (latents, log library), shape (..., p + 1); or the latents alone when the library is
    fixed (``fixed_log_library``, the paper's simulation).
    """
    import torch

    if fixed_log_library is None:
        z, log_library = u[..., :-1], u[..., -1:]
    else:
        z, log_library = u, fixed_log_library
    log_mu = log_library + log_fraction(z)
    if log_theta is None:  # Poisson
        return (x * log_mu - log_mu.exp()).sum(-1)
    log_total = torch.logaddexp(log_mu, log_theta)
    return (x * (log_mu - log_total) + log_theta.exp() * (log_theta - log_total)).sum(-1)


def _gaussian_log_prior(u, mean, precision):
    """-(u - mean)ᵀ precision (u - mean) / 2 (up to a constant); ``precision`` is d × d."""
    centred = u - mean
    return -0.5 * ((centred @ precision) * centred).sum(-1)


def _mixture_log_prior(u, means, log_weights, library_mean, library_sd, p):
    """The label-free prior: sum over labels a of w_a N(z; shift_a, I); library log-normal."""
    import torch

    z = u[..., :p]
    squared = (z * z).sum(-1, keepdim=True) - 2 * z @ means.T + (means * means).sum(-1)
    log_prior = torch.logsumexp(log_weights - 0.5 * squared, dim=-1)
    if u.shape[-1] > p:
        log_prior = log_prior - 0.5 * ((u[..., p] - library_mean) / library_sd) ** 2
    return log_prior


def _mixture_target(u, x, likelihood, prior):
    return likelihood(u, x) + prior(u)


def _importance_sample(proposal_log_joint, target_log_joint, x, prior_mean, start, samples: int):
    """Draws (samples × cells × d) and their self-normalised weights (samples × cells).

    Proposal: a multivariate t centred at each cell's mode of ``proposal_log_joint(u, x, mean)``
    and scaled by the inverse Hessian there; weights towards ``target_log_joint(u, x)``.
    """
    import torch
    from torch.func import hessian, vmap

    u = start.clone().requires_grad_(True)
    optimiser = torch.optim.LBFGS(
        [u], max_iter=200, tolerance_grad=1e-9, line_search_fn="strong_wolfe"
    )

    def closure():
        optimiser.zero_grad()
        loss = -proposal_log_joint(u, x, prior_mean).sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    mode = u.detach()
    precision = vmap(hessian(lambda ui, xi, mi: -proposal_log_joint(ui, xi, mi)))(
        mode, x, prior_mean
    )
    eigenvalues, eigenvectors = torch.linalg.eigh(0.5 * (precision + precision.transpose(1, 2)))
    # Floored so that a flat direction stays finite; covariance = root rootᵀ = inverse Hessian.
    sqrt_eigenvalues = eigenvalues.clamp_min(1e-6).sqrt().unsqueeze(1)
    root = eigenvectors / sqrt_eigenvalues
    n_cells, d = mode.shape
    normal = torch.randn(samples, n_cells, d, dtype=torch.float64)
    chi2 = torch.distributions.Chi2(torch.tensor(DF, dtype=torch.float64))
    draws = (
        mode
        + torch.einsum("cij,scj->sci", root, normal)
        * (DF / chi2.sample((samples, n_cells, 1))).sqrt()
    )
    whitened = torch.einsum("cji,scj->sci", eigenvectors * sqrt_eigenvalues, draws - mode)
    # log q up to a per-cell constant (it cancels in the self-normalised weights).
    log_q = -0.5 * (DF + d) * torch.log1p((whitened**2).sum(-1) / DF)
    with torch.no_grad():
        log_p = torch.stack([target_log_joint(draw, x) for draw in draws])
    return draws, torch.softmax(log_p - log_q, dim=0)


def _label_means(labels, shift: pd.DataFrame) -> np.ndarray:
    """Each label's true latent shift: a single's, a pair's sum, 0 for control."""
    means = np.zeros((len(labels), shift.shape[1]))
    for i, label in enumerate(labels):
        for single in label.split(COMBINATION_DELIMITER):
            if single in shift.index:
                means[i] += shift.loc[single].to_numpy()
    return means


def posterior_means(
    adata, cells: np.ndarray, samples: int, prior: str = "label", batch: int = 500, seed: int = 0
):
    """Posterior means of the latents of ``cells`` under the true model, and each cell's ESS.

    ``prior="label"``: a cell's prior is its label's, ``N(shift_a, I)`` (the posterior given the
    counts and the label). ``"mixture"``: the label is not used; the prior is the mixture of
    every label's, weighted by its cells (the posterior given the counts alone: the bound for
    methods whose latents are a function of the counts, e.g. an encoder without the label).
    """
    import torch

    torch.manual_seed(seed)
    sim = adata.uns["simulation"]
    log_fraction = _decoder(adata, torch)
    log_theta = (
        torch.tensor(np.log(float(sim["inverse_dispersion"])))
        if sim["noise"] == "negative_binomial"
        else None
    )
    shift = adata.uns["true_shift"]
    p = shift.shape[1]
    labels = adata.obs["perturbation"].astype(str).to_numpy()
    library_sd = float(sim["library_log_sd"])
    library_mean = np.log(float(sim["library_size"]))
    fixed = None if library_sd > 0 else torch.tensor(library_mean)
    d = p + (fixed is None)
    # Label-free: the mixture of the labels' priors, and a Gaussian with its mean and covariance
    # (the proposal's centre and scale).
    names, counts = np.unique(labels, return_counts=True)
    component_means = torch.as_tensor(_label_means(names, shift))
    log_weights = torch.as_tensor(np.log(counts / counts.sum()))
    cell_means = _label_means(labels, shift)
    precision = torch.eye(d, dtype=torch.float64)
    if fixed is None:
        precision[p, p] = 1.0 / library_sd**2
    if prior == "mixture":
        precision[:p, :p] = torch.linalg.inv(
            torch.eye(p, dtype=torch.float64) + torch.as_tensor(np.cov(cell_means, rowvar=False))
        )
        cell_means = np.broadcast_to(cell_means.mean(0), cell_means.shape)
    elif prior != "label":
        raise ValueError(f"prior must be 'label' or 'mixture', got {prior!r}")
    likelihood = partial(
        _log_likelihood, log_fraction=log_fraction, log_theta=log_theta, fixed_log_library=fixed
    )

    def gaussian_log_joint(u, x, mean):
        return likelihood(u, x) + _gaussian_log_prior(u, mean, precision)

    means, ess = [], []
    for start in range(0, len(cells), batch):
        rows = cells[start : start + batch]
        x = torch.as_tensor(np.asarray(adata.X[rows].todense()), dtype=torch.float64)
        prior_mean = torch.as_tensor(np.array(cell_means[rows]))
        if fixed is None:
            prior_mean = torch.cat([prior_mean, torch.full((len(rows), 1), library_mean)], 1)
        if prior == "label":
            target = partial(gaussian_log_joint, mean=prior_mean)
        else:
            target = partial(
                _mixture_target,
                likelihood=likelihood,
                prior=partial(
                    _mixture_log_prior,
                    means=component_means,
                    log_weights=log_weights,
                    library_mean=library_mean,
                    library_sd=library_sd,
                    p=p,
                ),
            )
        begin = prior_mean.clone()
        if fixed is None:
            begin[:, p] = x.sum(1).log()
        draws, weights = _importance_sample(
            gaussian_log_joint, target, x, prior_mean, begin, samples
        )
        means.append(torch.einsum("sc,sci->ci", weights, draws[..., :p]).numpy())
        ess.append((1.0 / (weights**2).sum(0)).numpy())
    return np.concatenate(means), np.concatenate(ess)


def run_one(regime: str, seed: int, n_cells: int, samples: int) -> pd.DataFrame:
    import sparsevae as sv
    from sparsevae.metrics import mean_correlation_coefficient

    start = time.perf_counter()
    adata = sv.data.simulate_regime(regime, random_state=seed)
    rng = np.random.default_rng(seed)
    cells = np.sort(rng.choice(adata.n_obs, size=min(n_cells, adata.n_obs), replace=False))
    z_true = adata.obsm["z_true"][cells].astype(np.float64)
    row = {"regime": regime, "seed": seed, "cells": len(cells), "of_cells": adata.n_obs}
    for prior, name in (("label", "counts_and_label"), ("mixture", "counts_only")):
        means, ess = posterior_means(adata, cells, samples, prior=prior, seed=seed)
        row[f"mcc_{name}"] = mean_correlation_coefficient(z_true, means)
        row[f"weakest_latent_{name}"] = min(
            np.corrcoef(means[:, i], z_true[:, i])[0, 1] for i in range(z_true.shape[1])
        )
        row[f"median_ess_{name}"] = float(np.median(ess))
    row["samples"] = samples
    row["seconds"] = round(time.perf_counter() - start, 1)
    return pd.DataFrame([row])


def main() -> None:
    from _provenance import write_results

    import sparsevae as sv

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--regimes", nargs="+", default=list(sv.data.REGIMES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--cells", type=int, default=10_000, help="cells per regime (random)")
    parser.add_argument("--samples", type=int, default=128, help="importance samples per cell")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--merge-only", action="store_true")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    unknown = set(args.regimes) - set(sv.data.REGIMES)
    if unknown:
        parser.error(f"unknown regimes {sorted(unknown)}; choose from {list(sv.data.REGIMES)}")
    PARTS.mkdir(parents=True, exist_ok=True)
    for regime in args.regimes:
        for seed in args.seeds:
            path = PARTS / f"{regime}__seed{seed}.csv"
            if args.merge_only or path.exists():
                continue
            part = run_one(regime, seed, args.cells, args.samples)
            part.to_csv(path, index=False)
            print(part.to_string(index=False), flush=True)
    files = sorted(PARTS.glob("*.csv"))
    if not files:
        raise SystemExit("no parts yet")
    table = pd.concat([pd.read_csv(f) for f in files], ignore_index=True)
    order = {name: i for i, name in enumerate(sv.data.REGIMES)}
    table = table.sort_values(
        ["regime", "seed"], key=lambda c: c.map(order) if c.name == "regime" else c
    )
    text = write_results(
        RESULTS,
        "regime_ceiling",
        "MCC ceiling of each regime: the true model's posterior means",
        (
            "Per regime and seed (the same simulated data as the regime benchmark's seed of that "
            "number): MCC (Pearson, matched, as in the regime benchmark) of the posterior means "
            "of the latents under the true model, on `cells` random cells of `of_cells`. "
            "`mcc_counts_and_label`: given a cell's counts and its label, the bound for every "
            "method; `mcc_counts_only`: given the counts alone (the label-free mixture prior), "
            "the bound for latents read from a cell's counts, as an encoder that does not see "
            "the label does. No method's latents correlate with the truth better (the script's "
            "docstring says why), up to the sampling error of about 0.003. `weakest_latent_*`: "
            "the lowest correlation of one latent; `median_ess_*`: the importance samples' "
            "median effective size per cell, of `samples`."
        ),
        table,
    )
    print(text)


if __name__ == "__main__":
    main()
