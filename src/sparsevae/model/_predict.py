"""Counterfactual prediction: the given cells' expression under another perturbation.

Each cell's latent mean from the encoder loses the shift of its own perturbation (set) and gains
the shift of the requested one; the decoder's mean expression of that latent is the prediction.
A combination's shift is the sum of its singles'. Shifts come from one of two sources:

- ``"empirical"`` (default): the perturbation's own latent shift, the mean posterior mean of its
  cells minus control's (without control cells: minus the per-latent median of the
  perturbations' means; the one definition of :mod:`sparsevae._shifts`, computed in
  :class:`~sparsevae.model.ModelKnowledge`); every effect the encoder sees.
- ``"prior"``: the prior's evaluation readout (:meth:`~sparsevae.SparseVAE.get_perturbation_shifts`,
  ``mu`` where ``pi > 0.5`` for sVAE+): only the effects that the sparse graph keeps.

:meth:`PredictionMixin.get_treatment_effect` compares predictions on the statistic an analyst
computes from counts (``statistic="sampled"``: mean ``log1p`` counts per 10,000 of counts drawn
from the model at the cells' library sizes), so that it can be held against the observed change
of real cells; ``"expected"`` takes the decoder's expected expression instead.
"""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np
import pandas as pd
import torch
from anndata import AnnData

from sparsevae._constants import REGISTRY_KEYS
from sparsevae._normalize import log1p_cp10k, mean_log_expression
from sparsevae._validation import validate_indices

from ._combinations import parse_perturbation
from ._matching import check_known_perturbations, warn_unknown_perturbations

#: obs column and uns key of :meth:`PredictionMixin.predict`'s AnnData naming the perturbation.
PREDICTED_KEY = "predicted_perturbation"
#: Where a prediction's latent shifts come from (see the module docstring).
SHIFT_SOURCES = ("empirical", "prior")
#: How :meth:`PredictionMixin.get_treatment_effect` summarises predicted expression.
STATISTICS = ("sampled", "expected")
#: Library sizes of drawn counts: the depth model (each perturbation's change of mean log
#: library size, composed in log space) or the cells' observed ones.
DEPTHS = ("model", "observed")
#: The reference side of a treatment effect: the model's prediction under the reference label
#: (default) or the observed statistic of the given cells.
REFERENCE_STATISTICS = ("model", "observed")
#: Cells per block when counts are drawn for the sampled statistic.
_SAMPLE_BLOCK = 256
#: Largest Poisson rate drawn (numpy refuses rates near 1e19).
_MAX_RATE = 1e12


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is unknown; choose one of {list(choices)}.")


def draw_counts(mean: np.ndarray, theta: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Negative binomial counts of mean ``mean`` and inverse dispersion ``theta`` (per gene).

    Drawn as a gamma-Poisson mixture. A tiny theta (a very overdispersed gene) can draw a rate
    beyond what Poisson sampling takes; no count that large is real, so rates are capped.
    """
    rate = np.minimum(rng.gamma(theta, mean / theta), _MAX_RATE)
    return rng.poisson(rate).astype(np.float64)


def sampled_mean_log_expression(
    proportions: np.ndarray,
    library: np.ndarray,
    theta: np.ndarray,
    n_samples: int,
    random_state: int,
) -> np.ndarray:
    """Mean ``log1p(counts per 10,000)`` per gene of negative binomial counts drawn per cell.

    Cell c's counts are drawn ``n_samples`` times from NB(mean ``library[c] *
    proportions[c]``, inverse dispersion ``theta``) as a gamma-Poisson mixture, normalised to
    10,000 by their own total and log1p-transformed (:func:`sparsevae._normalize.log1p_cp10k`),
    exactly as :func:`sparsevae.evaluate.mean_log_expression` treats observed counts (draws
    without counts are skipped). The same ``random_state`` gives the same draws, so two
    predictions on the same cells share their random numbers and their difference is less
    noisy.
    """
    rng = np.random.default_rng(random_state)
    proportions, theta = np.asarray(proportions, np.float64), np.asarray(theta, np.float64)
    total, n_kept = np.zeros(proportions.shape[1]), 0
    for start in range(0, proportions.shape[0], _SAMPLE_BLOCK):
        mean = proportions[start : start + _SAMPLE_BLOCK] * library[start : start + _SAMPLE_BLOCK]
        counts = draw_counts(np.broadcast_to(mean, (n_samples, *mean.shape)), theta, rng)
        values, keep = log1p_cp10k(counts)
        total += values[keep].sum(axis=0)
        n_kept += int(keep.sum())
    if n_kept == 0:
        raise ValueError("Every drawn cell had no counts: there is no mean expression to take.")
    return total / n_kept


class PredictionMixin:
    """Counterfactual getters of :class:`~sparsevae.SparseVAE`.

    Shifts of labels, predicted expression and treatment effects.
    """

    def _shift_table(self, source: str) -> pd.DataFrame:
        """Shift of every perturbation from ``source``, perturbations × latents (NaN: none)."""
        _check_choice("source", source, SHIFT_SOURCES)
        if source == "prior":
            return self.get_perturbation_shifts()
        return self.knowledge.frame(self.knowledge.empirical_shifts())

    def _own_category_shifts(self, source: str) -> torch.Tensor:
        """Shift of every registered category (control and unknown rows: 0), (n_categories, L)."""
        return torch.as_tensor(self.knowledge.per_category(self._shift_table(source)))

    def _decoded_means(
        self,
        adata,
        indices,
        batch_size,
        library_size,
        latent_change=None,
        libraries=None,
        log_library_change=None,
    ):
        """Decoder means at each cell's posterior mean, (n_cells, n_genes).

        Gene proportions times ``library_size``; the posterior mean is moved by
        ``latent_change(tensors, device)`` if given. Each cell's observed library size (total
        counts), times ``exp(log_library_change(tensors))`` if given, is appended to the list
        ``libraries`` if one is given.
        """
        validate_indices(indices)
        module = self.module
        module.eval()
        device = next(module.parameters()).device
        loader = self._make_data_loader(adata=adata, indices=indices, batch_size=batch_size)
        chunks = []
        for tensors in loader:
            if libraries is not None:
                library = tensors[REGISTRY_KEYS.X_KEY].sum(dim=1).numpy().astype(np.float64)
                if log_library_change is not None:
                    library = library * np.exp(log_library_change(tensors))
                libraries.append(library)
            x = tensors[REGISTRY_KEYS.X_KEY].to(device)
            codes = tensors[REGISTRY_KEYS.PERTURBATION_KEY].to(device)
            z = module.encode(x, codes).loc
            if latent_change is not None:
                z = z + latent_change(tensors, device)
            batch = tensors.get(REGISTRY_KEYS.BATCH_KEY)
            batch = None if module.n_batch <= 1 or batch is None else batch.to(device)
            proportions = module.decode(z, batch).exp()
            chunks.append((proportions * library_size).cpu().numpy())
        return np.concatenate(chunks, axis=0)

    def _predicted_means(
        self,
        adata,
        perturbation,
        indices,
        batch_size,
        library_size,
        source,
        libraries=None,
        depth: str = "observed",
    ) -> np.ndarray:
        """:meth:`predict`'s values on a validated ``adata`` (see :meth:`_decoded_means`).

        With ``libraries``, each cell's library size is appended: observed (``depth=
        "observed"``) or moved by the depth model (``"model"``, :meth:`_library_swap`).
        """
        target = torch.as_tensor(
            self.get_combination_shift(perturbation, source=source).to_numpy(dtype=np.float32)
        )
        own_shifts = self._own_category_shifts(source)

        def swap_shift(tensors, device) -> torch.Tensor:
            codes = tensors[REGISTRY_KEYS.PERTURBATION_KEY].to(device)
            codes = codes.reshape(codes.shape[0], -1).long()
            shifts = own_shifts.to(device)
            valid = (codes >= 0).unsqueeze(-1).to(shifts.dtype)
            own = (shifts[codes.clamp(min=0)] * valid).sum(dim=1)
            return target.to(device) - own

        library_swap = None
        if libraries is not None and depth == "model":
            library_swap = self._library_swap(perturbation)
        return self._decoded_means(
            adata,
            indices,
            batch_size,
            library_size,
            swap_shift,
            libraries=libraries,
            log_library_change=library_swap,
        )

    def _library_swap(self, perturbation: str):
        """Per cell: the depth model's log library change from its own label to ``perturbation``.

        The sum of the singles' changes in log space, see
        :meth:`~sparsevae.model.ModelKnowledge.library_shifts`.
        """
        shifts = self.knowledge.library_shifts()
        known, delimiter = self.perturbation_names, self.combination_delimiter
        singles = parse_perturbation(perturbation, known, delimiter, self.control)
        categories = self.knowledge.categories
        missing = [name for name in singles if np.isnan(shifts[categories.index(name)])]
        if missing:
            raise ValueError(
                f"perturbation={perturbation!r}: {missing} have no cells of their own, so the "
                "depth model has no library size for them. Pass depth='observed'."
            )
        target = float(sum(shifts[categories.index(name)] for name in singles))
        per_category = np.nan_to_num(shifts, nan=0.0)

        def change(tensors) -> np.ndarray:
            codes = tensors[REGISTRY_KEYS.PERTURBATION_KEY].numpy()
            codes = codes.reshape(codes.shape[0], -1).astype(np.int64)
            own = np.where(codes >= 0, per_category[np.clip(codes, 0, None)], 0.0).sum(axis=1)
            return target - own

        return change

    @torch.inference_mode()
    def get_normalized_expression(
        self,
        adata: AnnData | None = None,
        indices: np.ndarray | None = None,
        *,
        library_size: float = 1.0,
        batch_size: int | None = None,
        return_numpy: bool = False,
    ) -> pd.DataFrame | np.ndarray:
        """Each cell's expected expression: the decoder's mean at its posterior mean.

        The decoder's gene proportions at the encoder's posterior mean of z, times
        ``library_size`` (1: proportions; :data:`~sparsevae._constants.TARGET_SUM`: counts per
        10,000, the scale of scanpy's ``normalize_total``). It is :meth:`predict` with each
        cell's own perturbation. The encoder reads counts only, so cells of perturbations the
        model has not learned work too (with a warning naming them).

        Parameters
        ----------
        adata
            Cells (default: the model's), with the model's genes.
        indices
            Subset of cells of ``adata``.
        library_size
            Scale of the output.
        batch_size
            Cells per minibatch.
        return_numpy
            Return an array instead of a DataFrame cells × genes.

        Returns
        -------
        DataFrame (cells × genes, indexed by ``obs_names`` and ``var_names``) or ndarray.
        """
        self._check_if_trained(warn=True)
        adata = self._validate_anndata(adata)
        warn_unknown_perturbations(self, adata, "get_normalized_expression")
        values = self._decoded_means(adata, indices, batch_size, library_size)
        if return_numpy:
            return values
        cells = np.arange(adata.n_obs) if indices is None else np.asarray(indices)
        return pd.DataFrame(values, index=adata.obs_names[cells], columns=adata.var_names)

    def get_combination_shift(
        self, perturbation: str, *, source: Literal["empirical", "prior"] = "empirical"
    ) -> pd.Series:
        """Latent shift of a perturbation label: the sum of its singles' shifts.

        Parameters
        ----------
        perturbation
            A single (``"A"``), a combination of known singles joined by the setup's
            ``combination_delimiter`` (``"A+B"``), or the control label (zero shift).
        source
            ``"empirical"``: each single's own latent shift (mean posterior mean of its cells
            minus control's, on the training data; after :meth:`transfer`, on the transfer
            cells). ``"prior"``: the prior's shifts (:meth:`get_perturbation_shifts`; for
            sVAE+ only the edges of the sparse graph).

        Raises
        ------
        ValueError
            Naming every single of ``perturbation`` that the model has not learned, or (with
            ``source="empirical"``) that has no cells of its own.
        """
        self._check_if_trained(warn=True)
        singles = parse_perturbation(
            perturbation, self.perturbation_names, self.combination_delimiter, self.control
        )
        shifts = self._shift_table(source)
        missing = [name for name in singles if shifts.loc[name].isna().any()]
        if missing:
            raise ValueError(
                f"perturbation={perturbation!r}: {missing} have no cells of their own (they "
                "occur only in combinations), so they have no empirical latent shift. Use "
                "source='prior'."
            )
        if not singles:  # control: no shift
            return pd.Series(0.0, index=shifts.columns, name=str(perturbation))
        return shifts.loc[singles].sum(axis=0).rename(str(perturbation))

    @torch.inference_mode()
    def predict(
        self,
        adata: AnnData | None = None,
        perturbation: str | None = None,
        *,
        indices: np.ndarray | None = None,
        batch_size: int | None = None,
        library_size: float = 1.0,
        source: Literal["empirical", "prior"] = "empirical",
    ) -> AnnData:
        """Expected expression of the given cells had they received ``perturbation``.

        For each cell, the encoder's posterior mean of z loses the shift of the cell's own
        perturbation (set) and gains that of ``perturbation`` (:meth:`get_combination_shift`
        with ``source``);
        the decoder's mean gene proportions of that latent, times ``library_size``, are the
        prediction. With ``perturbation`` equal to the cells' own, this is the model's
        reconstruction of them (decoder mean at the posterior mean). Pairs of trained singles
        are predicted zero-shot when the setup has a ``combination_delimiter``.

        Parameters
        ----------
        adata
            Cells to perturb in silico (default: the model's), typically control cells; their
            own perturbations must be known to the model.
        perturbation
            Label to apply: a known single, a combination of known singles (``"A+B"``), or the
            control label.
        indices
            Subset of cells of ``adata``.
        batch_size
            Cells per minibatch.
        library_size
            Scale of the output: 1 gives proportions (rows sum to 1), 1e4 counts per 10,000.
        source
            Where shifts come from: ``"empirical"`` (each perturbation's own latent shift,
            every effect the encoder sees) or ``"prior"`` (the prior's sparse shifts); see
            :meth:`get_combination_shift`.

        Returns
        -------
        AnnData cells × genes with the expected normalised expression in ``X``, the cells'
        ``obs`` plus ``obs["predicted_perturbation"]``, and ``uns["predicted_perturbation"]``.

        Examples
        --------
        >>> control = adata[adata.obs["perturbation"] == "control"].copy()
        >>> predicted = model.predict(control, perturbation="A+B")
        """
        if perturbation is None:
            raise ValueError(
                "predict needs perturbation=... : a known single, a combination of known "
                "singles, or the control label."
            )
        self._check_if_trained(warn=True)
        adata = self._validate_anndata(adata)
        check_known_perturbations(self, adata)
        values = self._predicted_means(
            adata, perturbation, indices, batch_size, library_size, source
        )
        cells = np.arange(adata.n_obs) if indices is None else np.asarray(indices)
        obs = adata.obs.iloc[cells].copy()
        obs[PREDICTED_KEY] = str(perturbation)
        return AnnData(
            X=values,
            obs=obs,
            var=pd.DataFrame(index=adata.var_names.copy()),
            uns={PREDICTED_KEY: str(perturbation), "library_size": float(library_size)},
        )

    @torch.inference_mode()
    def get_treatment_effect(
        self,
        adata: AnnData | None = None,
        perturbation: str | None = None,
        *,
        reference: str | None = None,
        indices: np.ndarray | None = None,
        batch_size: int | None = None,
        statistic: Literal["sampled", "expected"] = "sampled",
        source: Literal["empirical", "prior"] = "empirical",
        n_samples: int = 10,
        random_state: int = 0,
        library_size: float | None = None,
        log1p: bool | None = None,
        depth: Literal["model", "observed"] = "model",
        reference_statistic: Literal["model", "observed"] = "model",
    ) -> pd.Series:
        """Average treatment effect per gene: ``perturbation`` minus ``reference``, same cells.

        Both sides are :meth:`predict` on the cells of ``adata`` (typically control cells), so
        the difference is the model's effect alone; with ``reference_statistic="observed"``
        the reference side is instead the observed statistic of those cells (they must all
        carry the ``reference`` label), the predicted perturbed cells against the real control
        cells.

        Counterfactual: each given cell's posterior mean loses its own perturbation's latent
        shift and gains ``perturbation``'s; the decoder's expected proportions of that latent,
        at the cell's library size changed by the depth model (``depth="model"``: the
        perturbation's change of mean log library size from its training cells, a
        combination's singles adding in log space) or at the cell's observed library size
        (``"observed"``), give the negative binomial counts that are drawn.

        Parameters
        ----------
        adata
            Cells to perturb in silico (default: the model's).
        perturbation
            Label to apply (see :meth:`predict`).
        reference
            Label of the baseline (default: control).
        indices
            Subset of cells of ``adata``.
        batch_size
            Cells per minibatch.
        statistic
            ``"sampled"`` (default): the change of mean ``log1p(counts per 10,000)`` of counts
            drawn from the model (negative binomial, ``n_samples`` draws per cell at the cell's
            observed library size): the statistic computed from observed counts
            (:func:`sparsevae.evaluate.mean_log_expression`), so the two can be compared.
            ``"expected"``: the change of the mean expected expression (decoder mean times
            ``library_size``, ``log1p`` of it if ``log1p``), a smoother quantity that shrinks
            low-expressed genes less than counts do.
        source
            Where shifts come from: ``"empirical"`` or ``"prior"`` (see
            :meth:`get_combination_shift`).
        n_samples
            Draws per cell for ``statistic="sampled"``.
        random_state
            Seed of the draws (both sides use the same random numbers).
        library_size, log1p
            Only for ``statistic="expected"``: scale of the expression (default 1: proportions)
            and whether to average ``log1p`` of it (default ``False``).
        depth
            Library sizes of the drawn counts (``statistic="sampled"``): ``"model"`` (default)
            or ``"observed"`` (each cell's own, the behaviour before 0.3); see above.
            Perturbed cells of the bundled Norman subset hold 0.56 to 3.37 times control's
            counts over its 250 genes, a change of expression that the latent shift alone
            does not carry.
        reference_statistic
            ``"model"`` (default): the model's prediction under ``reference``, the same
            statistic as the treated side, so the model's errors on the given cells cancel.
            ``"observed"``: the mean ``log1p(counts per 10,000)`` of the given cells
            (:func:`sparsevae.evaluate.mean_log_expression`; needs ``statistic="sampled"``
            and every cell labelled ``reference``). Scored against an observed change from the
            same control cells, ``"observed"`` shares their sampling noise with the target and
            scores higher for that reason alone; against independent control cells, or where
            the model reconstructs control with a bias, it scores lower
            (``benchmarks/results/prediction_diagnosis_5seeds.md``).

        Returns
        -------
        Series indexed by gene.

        Warns
        -----
        UserWarning
            When ``perturbation`` and ``reference`` are the same perturbation (the same set of
            singles): the effect is zero by construction.

        Examples
        --------
        >>> control = adata[adata.obs["perturbation"] == "control"].copy()
        >>> effect = model.get_treatment_effect(control, perturbation="A+B")
        """
        if perturbation is None:
            raise ValueError("get_treatment_effect needs perturbation=... (see predict).")
        _check_choice("statistic", statistic, STATISTICS)
        if statistic == "sampled" and (library_size is not None or log1p is not None):
            raise ValueError(
                "library_size and log1p apply to statistic='expected'; statistic='sampled' is "
                "always log1p counts per 10,000 of drawn counts. Pass statistic='expected' to "
                "set them."
            )
        if n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}.")
        _check_choice("depth", depth, DEPTHS)
        _check_choice("reference_statistic", reference_statistic, REFERENCE_STATISTICS)
        if reference is None:
            if self.control is None:
                raise ValueError(
                    "The model has no control label, so there is no default reference: pass "
                    "reference=... (a perturbation the effect is measured against)."
                )
            reference = self.control
        known, delimiter = self.perturbation_names, self.combination_delimiter
        same = sorted(parse_perturbation(perturbation, known, delimiter, self.control)) == sorted(
            parse_perturbation(reference, known, delimiter, self.control)
        )
        if same:
            warnings.warn(
                f"perturbation={perturbation!r} and reference={reference!r} are the same "
                "perturbation, so the effect is zero by construction. Pass the perturbation to "
                "measure and, as reference, another one (by default the control label).",
                UserWarning,
                stacklevel=3,
            )
        self._check_if_trained(warn=True)
        adata = self._validate_anndata(adata)
        check_known_perturbations(self, adata)
        observed = self._observed_reference(
            adata, indices, reference, statistic, reference_statistic
        )
        sides = []
        for side, label in enumerate((perturbation, reference)):
            if side == 1 and observed is not None:
                sides.append(observed)
            elif statistic == "expected":
                scale = 1.0 if library_size is None else float(library_size)
                values = self._predicted_means(adata, label, indices, batch_size, scale, source)
                sides.append((np.log1p(values) if log1p else values).mean(axis=0))
            else:
                sides.append(
                    self._sampled_statistic(
                        adata, label, indices, batch_size, source, n_samples, random_state, depth
                    )
                )
        treated, untreated = sides
        return pd.Series(treated - untreated, index=adata.var_names, name=str(perturbation))

    def _observed_reference(
        self, adata, indices, reference, statistic, reference_statistic
    ) -> np.ndarray | None:
        """The observed reference statistic of the given cells, or ``None`` (the model's)."""
        if reference_statistic == "model":
            return None
        cells = np.arange(adata.n_obs) if indices is None else np.asarray(indices)
        labels = adata.obs[self.knowledge.perturbation_key].astype(str).to_numpy()[cells]
        if not (statistic == "sampled" and bool(len(labels)) and (labels == reference).all()):
            raise ValueError(
                "reference_statistic='observed' takes the observed statistic of the given "
                f"cells as the reference, so it needs statistic='sampled' and every cell "
                f"labelled reference={reference!r} (got statistic={statistic!r}, labels "
                f"{sorted(set(labels))[:5]}). Pass cells of the reference (e.g. control "
                "cells) or reference_statistic='model'."
            )
        layer = self.registry_["setup_args"].get("layer")
        return mean_log_expression(adata[cells], layer)

    def _sampled_statistic(
        self, adata, label, indices, batch_size, source, n_samples, random_state, depth
    ) -> np.ndarray:
        """Mean log1p counts per 10,000 of counts drawn under ``label`` (see ``depth``)."""
        libraries: list[np.ndarray] = []
        proportions = self._predicted_means(
            adata, label, indices, batch_size, 1.0, source, libraries=libraries, depth=depth
        )
        library = np.concatenate(libraries)[:, None]
        theta = torch.exp(self.module.log_theta()).detach().cpu().numpy()
        return sampled_mean_log_expression(proportions, library, theta, n_samples, random_state)
