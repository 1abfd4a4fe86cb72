"""Predicted cells as counts, beside the control cells: the AnnData the field's scorers read.

:meth:`PredictedCellsMixin.predict_perturbations` draws one cell of counts per base cell and
requested perturbation from the prediction of :mod:`sparsevae.model._predict` (its latent shifts,
decoder means and depth model); :func:`sparsevae.evaluate.score_with_cell_eval` scores them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
import torch
from anndata import AnnData

from sparsevae._validation import unique_values

from ._combinations import parse_perturbation
from ._matching import check_known_perturbations
from ._predict import DEPTHS, _check_choice, draw_counts


class PredictedCellsMixin:
    """:meth:`predict_perturbations` for :class:`~sparsevae.SparseVAE`."""

    @torch.inference_mode()
    def predict_perturbations(
        self,
        perturbations: str | Sequence[str],
        adata: AnnData | None = None,
        *,
        n_cells: int | None = None,
        source: Literal["empirical", "prior"] = "empirical",
        depth: Literal["model", "observed"] = "model",
        include_control: bool = True,
        control_cells: Literal["observed", "predicted"] = "observed",
        random_state: int = 0,
        batch_size: int | None = None,
    ) -> AnnData:
        """Predicted cells of each perturbation as counts, beside the control cells.

        The AnnData that the field's scorers read (e.g. cell-eval,
        :func:`sparsevae.evaluate.score_with_cell_eval`): one block of predicted cells per
        requested perturbation, and the real control cells they were predicted from.

        Counterfactual semantics. The *base cells* are the control cells of ``adata`` (default:
        the model's data); without a control label, every cell of ``adata``. For each
        requested perturbation (a known single, a combination of known singles when the setup
        has a ``combination_delimiter``, or a perturbation learned by
        :meth:`~sparsevae.SparseVAE.transfer`), every base cell (or ``n_cells`` of them,
        drawn with a seed) becomes one predicted cell: its posterior mean loses its own
        perturbation's latent shift and gains the requested one's (``source``, see
        :meth:`get_combination_shift`); the decoder's expected proportions of that latent,
        times the cell's library size (moved by the depth model with ``depth="model"``, the
        perturbation's change of mean log library size from its training cells, singles of a
        combination adding in log space; as observed with ``"observed"``), are the expected
        counts, and one negative binomial draw of them (the model's dispersion, seeded by
        ``random_state``) is the predicted cell.

        Parameters
        ----------
        perturbations
            Labels to predict (one or several, each once; not the control label).
        adata
            Cells whose control cells are the base cells (default: the model's data).
        n_cells
            Predicted cells per perturbation (default: one per base cell). Fewer than the base
            cells: a seeded sample of them; more: drawn with replacement.
        source, depth
            Where latent shifts come from and how library sizes are set (see above).
        include_control
            Add a control group: the base cells (see ``control_cells``).
        control_cells
            ``"observed"`` (default): the control group is the base cells themselves, their
            observed counts (the field's layout: predicted cells beside real control cells,
            so a scorer's predicted change is taken from the real control cells).
            ``"predicted"``: the model's prediction of the base cells under the control label,
            drawn as the predicted cells are (one negative binomial draw each, same depth
            rule), so a scorer's predicted change is the model's own, as in
            :meth:`get_treatment_effect` (``reference_statistic="model"``); the model's
            reconstruction error of control cells then cancels instead of entering the
            change. Needs a control label.
        random_state
            Seed of the sample of base cells and of the counts drawn.
        batch_size
            Cells per minibatch.

        Returns
        -------
        AnnData predicted cells (and control cells) × the model's genes: ``X`` counts
        (float32, integer-valued; observed control cells: their observed counts);
        ``layers["expected"]`` the expected counts (observed control cells: their observed
        counts); ``obs[<perturbation key>]`` the label (control cells: the control label);
        ``obs["predicted"]`` (False for observed control cells); ``obs["base_cell"]`` the
        base cell's name; ``uns["sparsevae_prediction"]`` these settings.

        Examples
        --------
        >>> predicted = model.predict_perturbations(["KLF1", "KLF1+MAP2K6"])
        >>> sv.evaluate.score_with_cell_eval(predicted, real, "perturbation", "control")
        """
        self._check_if_trained(warn=True)
        labels = unique_values(
            perturbations,
            "perturbations",
            example=f"{self.perturbation_names[:2]!r}",
            why="each label would be predicted twice",
        )
        labels = [str(label) for label in labels]
        if self.control is not None and self.control in labels:
            raise ValueError(
                f"perturbations includes the control label {self.control!r}: the control "
                "cells are the base of every prediction and are added as they are "
                "(include_control=True). Leave it out."
            )
        known, delimiter = self.perturbation_names, self.combination_delimiter
        for label in labels:
            parse_perturbation(label, known, delimiter, self.control)  # raises for unknown
        _check_choice("depth", depth, DEPTHS)
        _check_choice("control_cells", control_cells, ("observed", "predicted"))
        if control_cells == "predicted" and self.control is None:
            raise ValueError(
                "control_cells='predicted' predicts the base cells under the control label, "
                "and this model has none; use control_cells='observed'."
            )
        if n_cells is not None and (isinstance(n_cells, bool) or not int(n_cells) >= 1):
            raise ValueError(
                f"n_cells={n_cells!r} must be a positive integer (predicted cells per "
                "perturbation), or None for one per base cell."
            )
        data = self._validate_anndata(adata)
        check_known_perturbations(self, data)
        key = self.knowledge.perturbation_key
        own = data.obs[key].astype(str).to_numpy()
        base = np.flatnonzero(own == self.control) if self.control else np.arange(data.n_obs)
        if len(base) == 0:
            raise ValueError(
                f"adata has no control cells (label {self.control!r}) to predict from; pass "
                "adata with control cells."
            )
        rng = np.random.default_rng(random_state)
        theta = torch.exp(self.module.log_theta()).detach().cpu().numpy().astype(np.float64)
        blocks, expected_blocks, obs_blocks = [], [], []
        for label in labels:
            cells = base
            if n_cells is not None:
                cells = np.sort(rng.choice(base, size=int(n_cells), replace=n_cells > len(base)))
            libraries: list[np.ndarray] = []
            proportions = self._predicted_means(
                data, label, cells, batch_size, 1.0, source, libraries=libraries, depth=depth
            )
            expected = proportions * np.concatenate(libraries)[:, None]
            blocks.append(draw_counts(expected, theta, rng))
            expected_blocks.append(expected)
            obs_blocks.append(
                pd.DataFrame(
                    {key: label, "predicted": True, "base_cell": data.obs_names[cells]},
                    index=[f"{label}:{name}" for name in data.obs_names[cells]],
                )
            )
        if include_control and control_cells == "predicted":
            libraries = []
            proportions = self._predicted_means(
                data,
                self.control,
                base,
                batch_size,
                1.0,
                source,
                libraries=libraries,
                depth=depth,
            )
            expected = proportions * np.concatenate(libraries)[:, None]
            blocks.append(draw_counts(expected, theta, rng))
            expected_blocks.append(expected)
            names = data.obs_names[base]
            obs_blocks.append(
                pd.DataFrame(
                    {key: self.control, "predicted": True, "base_cell": names},
                    index=[f"{self.control}:{name}" for name in names],
                )
            )
        elif include_control:
            layer = self.registry_["setup_args"].get("layer")
            counts = (data.X if layer is None else data.layers[layer])[base]
            counts = counts.toarray() if hasattr(counts, "toarray") else np.asarray(counts)
            blocks.append(counts)
            expected_blocks.append(counts)
            names = data.obs_names[base]
            # without a control label: the base cells under their own labels
            control_labels = own[base] if self.control is None else self.control
            obs_blocks.append(
                pd.DataFrame(
                    {key: control_labels, "predicted": False, "base_cell": names},
                    index=[f"observed:{name}" for name in names],
                )
            )
        obs = pd.concat(obs_blocks)
        obs[key] = pd.Categorical(obs[key], categories=list(dict.fromkeys(obs[key])))
        return AnnData(
            X=np.concatenate(blocks).astype(np.float32),
            obs=obs,
            var=pd.DataFrame(index=data.var_names.copy()),
            layers={"expected": np.concatenate(expected_blocks).astype(np.float32)},
            uns={
                "sparsevae_prediction": {
                    "perturbations": labels,
                    "source": source,
                    "depth": depth,
                    "control_cells": control_cells if include_control else "none",
                    "n_cells": -1 if n_cells is None else int(n_cells),
                    "random_state": int(random_state),
                    "counts": "one negative binomial draw per predicted cell",
                }
            },
        )
