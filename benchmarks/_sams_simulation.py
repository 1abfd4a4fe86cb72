"""Port of SAMS-VAE's own simulation (Bereket & Karaletsos, NeurIPS 2023), as an AnnData of counts.

Reference: github.com/insitro/sams-vae at commit 10d781c (local mirror
``/work/.mirror/insitro+sams-vae/repo``), file ``sams_vae/data/simulations/sams_vae_simulation.py``
(``simulate_data_sams_vae``, lines 10-143; decoder ``get_decoder`` 146-166, ``init_decoder_layer``
169-175). Defaults are the reference's (lines 11-26, repeated by ``SAMSVAESimulationDataModule``,
``sams_vae/data/simulations/data_module.py`` lines 26-42): 15 latents, 100 perturbations, 100
phenotypes, 4 hidden layers of 50, mask prob 2/15, |effect| ~ N(5, 0.5), 500/100/100 cells per
perturbation for train/val/test, 20% of each phenotype's variance from noise.

Steps (same torch calls in the same order under ``torch.manual_seed(seed)``, so with
``noise="gaussian"`` the draws equal the reference's bit for bit; checked against the reference
function for seeds 0 and 1):

1. mask ~ Bernoulli(mask_prob), (K, p)                              ref. line 83
2. |E| ~ N(effect_mean, effect_std); sign ~ 2 Bernoulli(0.5) - 1      ref. lines 84-88
3. latent effects = mask * sign * |E|                                ref. line 89
4. random decoder: 4 x [Linear(bias=False) + LeakyReLU(0.2)] + Linear, orthogonal init
                                                                     ref. lines 92-99, 146-175
5. D = one-hot, cell i has perturbation i % K; z_basal ~ N(0, I)     ref. lines 102-108
6. z = z_basal + D @ effects; mean = decoder(z) / its sd per phenotype over all cells
                                                                     ref. lines 109-114
7. noise: ``gaussian`` = x ~ N(mean, v) with v = f var(mean) / (1 - f) per phenotype
                                                                     ref. lines 119-123
8. split labels: first K*500 cells train, next K*100 val, last K*100 test   ref. lines 125-128

Differences from the reference (all deliberate):

- ``noise="poisson"`` (the default here, because sparsevae models integer counts): the
  reference draws Gaussian phenotypes, real-valued and often negative. Here the standardised mean
  is exponentiated (the reference's own ``decoder_exp_output=True`` branch, lines 116-117) and
  counts are drawn as ``x ~ Poisson(s_g * exp(mean))``. The per-gene scale ``s_g = (1-f)/f *
  E_g/V_g`` (E_g, V_g = mean and variance of exp(mean) over cells) makes Poisson noise exactly the
  fraction ``f`` of each gene's variance, like line 119. Depth follows from ``f``: about 2-3
  counts per gene per cell at f = 0.2. ``noise="gaussian"`` reproduces the reference exactly
  (X is then not counts).
- Labels: ``obs['perturbation']`` is ``P00``..``P99`` (reference: ``"0"``..``"99"``, kept in
  ``obs['reference_label']``). The reference has no control cells (every cell has exactly one
  perturbation; its ATE code uses perturbation ``"0"``, which has its own effect, as the
  reference, data_module.py line 161) and no combinations. ``controls=True`` adds unshifted
  cells labelled ``control`` (as many per split as one perturbation has), drawn after the
  reference's z_basal so the reference cells are unchanged; they do enter step 6's scaling.
- The caller's torch RNG state is restored afterwards (the reference reseeds the global RNG).

Ground truth: ``uns['sams_simulation']`` holds ``mask`` (K, p) bool, ``perturbation_names``,
``embedding`` (K, p, signed, before masking), ``latent_effects`` (mask * embedding) and the
settings; ``obsm['z_true']`` is z, ``obsm['z_basal']`` the basal part; ``layers['mean']`` the
noiseless mean. ``obs['split']`` is the reference's split.

Usage::

    from benchmarks._sams_simulation import simulate_sams
    adata = simulate_sams(seed=0)
    python benchmarks/_sams_simulation.py          # prints shapes and a summary
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from torch.distributions import Bernoulli, Normal

REFERENCE = "insitro/sams-vae@10d781c:sams_vae/data/simulations/sams_vae_simulation.py"


def _decoder(n_latent: int, n_genes: int, n_layers: int, n_hidden: int) -> torch.nn.Sequential:
    """The reference's random decoder (get_decoder, lines 146-166, orthogonal init 169-171)."""
    layers, dim = [], n_latent
    for _ in range(n_layers):
        layer = torch.nn.Linear(dim, n_hidden, bias=False)  # default init draws too (kept)
        torch.nn.init.orthogonal_(layer.weight)
        layers += [layer, torch.nn.LeakyReLU(negative_slope=0.2)]
        dim = n_hidden
    layer = torch.nn.Linear(dim, n_genes, bias=False)
    torch.nn.init.orthogonal_(layer.weight)
    return torch.nn.Sequential(*layers, layer)


def simulate_sams(
    seed: int = 0,
    n_latent: int = 15,
    n_perturbations: int = 100,
    n_genes: int = 100,
    n_hidden_layers: int = 4,
    n_hidden: int = 50,
    mask_prob: float = 2 / 15,
    effect_mean: float = 5.0,
    effect_std: float = 0.5,
    n_cells_train: int = 500,
    n_cells_val: int = 100,
    n_cells_test: int = 100,
    frac_var_noise: float = 0.2,
    noise: str = "poisson",
    controls: bool = False,
) -> AnnData:
    """Simulate the SAMS-VAE paper-code dataset; see the module docstring for every step."""
    if noise not in ("poisson", "gaussian"):
        raise ValueError(f"noise must be 'poisson' or 'gaussian', got {noise!r}")
    K, p, f = n_perturbations, n_latent, frac_var_noise
    per_split = {"train": n_cells_train, "val": n_cells_val, "test": n_cells_test}
    n_per = sum(per_split.values())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mask = Bernoulli(mask_prob).sample((K, p))  # ref. 83
        embedding = Normal(effect_mean, effect_std).sample((K, p))  # ref. 84-86
        embedding = (2 * Bernoulli(0.5).sample((K, p)) - 1) * embedding  # ref. 87-88
        effects = mask * embedding  # ref. 89
        decoder = _decoder(p, n_genes, n_hidden_layers, n_hidden)  # ref. 92-99
        D = torch.eye(K).repeat((n_per, 1))  # ref. 107
        z_basal = Normal(0, 1).sample((D.shape[0], p))  # ref. 108
        if controls:  # not in the reference: unshifted cells, drawn after its draws
            D = torch.cat([D, torch.zeros(n_per, K)])
            z_basal = torch.cat([z_basal, Normal(0, 1).sample((n_per, p))])
        with torch.no_grad():
            z = z_basal + D @ effects  # ref. 110
            mean = decoder(z)  # ref. 111
            sd = mean.std(0)
            sd[sd == 0] = 1
            mean = mean / sd  # ref. 112-114
        if noise == "gaussian":
            var = f * mean.var(0) / (1 - f)  # ref. 119-121
            var[var == 0] = 1  # ref. 122
            x = Normal(mean, var.sqrt()).sample()  # ref. 123
        else:
            rate = mean.exp()  # ref. 116-117 (decoder_exp_output=True)
            scale = (1 - f) / f * rate.mean(0) / rate.var(0).clamp_min(1e-12)
            mean = rate * scale
            x = torch.poisson(mean)
    names = np.array([f"P{i:0{len(str(K - 1))}d}" for i in range(K)])
    ref_idx = np.tile(np.arange(K), n_per)  # ref. 107: cell i has perturbation i % K
    split = np.concatenate([[s] * (n * K) for s, n in per_split.items()])  # ref. 125-128
    labels, ref_labels = names[ref_idx].astype(object), ref_idx.astype(str).astype(object)
    if controls:
        labels = np.concatenate([labels, ["control"] * n_per])
        ref_labels = np.concatenate([ref_labels, ["none"] * n_per])
        split = np.concatenate([split, np.concatenate([[s] * n for s, n in per_split.items()])])
    obs = pd.DataFrame(
        {"perturbation": labels, "split": split, "reference_label": ref_labels},
        index=[f"cell{i}" for i in range(len(labels))],
    )
    for col in ("perturbation", "split"):
        obs[col] = obs[col].astype("category")
    truth = {
        "mask": mask.numpy().astype(bool),
        "perturbation_names": names,
        "embedding": embedding.numpy(),
        "latent_effects": effects.numpy(),
        "reference": REFERENCE,
        "settings": {
            "seed": seed,
            "n_latent": p,
            "n_perturbations": K,
            "n_genes": n_genes,
            "n_hidden_layers": n_hidden_layers,
            "n_hidden": n_hidden,
            "mask_prob": mask_prob,
            "effect_mean": effect_mean,
            "effect_std": effect_std,
            "n_cells_train": n_cells_train,
            "n_cells_val": n_cells_val,
            "n_cells_test": n_cells_test,
            "frac_var_noise": f,
            "noise": noise,
            "controls": controls,
        },
    }
    return AnnData(
        X=x.numpy().astype(np.float32),
        obs=obs,
        var=pd.DataFrame(index=[f"G{j:03d}" for j in range(n_genes)]),
        obsm={"z_true": z.numpy(), "z_basal": z_basal.numpy()},
        layers={"mean": mean.numpy().astype(np.float32)},
        uns={"sams_simulation": truth},
    )


if __name__ == "__main__":
    torch.set_num_threads(1)
    for kwargs in ({}, {"controls": True}, {"noise": "gaussian"}):
        a = simulate_sams(seed=0, **kwargs)
        t = a.uns["sams_simulation"]
        per_cell = a.X.sum(1)
        print(
            f"\n{kwargs or 'defaults'}: {a.shape[0]} cells x {a.shape[1]} genes; "
            f"z_true {a.obsm['z_true'].shape}; mask {t['mask'].shape}"
        )
        print(
            f"  perturbations {a.obs['perturbation'].nunique()} "
            f"(control: {'control' in set(a.obs['perturbation'])}); "
            f"split {a.obs['split'].value_counts().to_dict()}"
        )
        print(
            f"  mask on: {t['mask'].mean():.3f}; per perturbation "
            f"{np.bincount(t['mask'].sum(1), minlength=5)[:6].tolist()} (0,1,2,.. latents); "
            f"no-effect perturbations {(t['mask'].sum(1) == 0).sum()}"
        )
        print(
            f"  X integer: {np.allclose(a.X, np.round(a.X))}, min {a.X.min():.2f}; "
            f"per cell total: median {np.median(per_cell):.0f}, "
            f"5-95% {np.percentile(per_cell, 5):.0f}-{np.percentile(per_cell, 95):.0f}; "
            f"per gene mean {a.X.mean():.2f}; zeros {np.mean(a.X == 0):.2f}"
        )
