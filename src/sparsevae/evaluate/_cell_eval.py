"""Scoring predicted cells with cell-eval, the Virtual Cell Challenge's scorer (optional extra).

`cell-eval <https://github.com/ArcInstitute/cell-eval>`_ compares predicted cells with real
ones, perturbation by perturbation, each against its own side's control cells: Pearson delta,
DE-gene overlap and precision, discrimination scores, errors of the pseudobulk and more. It is
not a dependency of sparsevae; ``pip install "sparsevae[eval]"`` adds it (``cell-eval`` 0.8).
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from scipy.stats import ConstantInputWarning

from sparsevae._normalize import log1p_cp10k
from sparsevae._validation import did_you_mean

#: Metric profiles of cell-eval 0.8 (``MetricsEvaluator.compute(profile=...)``).
CELL_EVAL_PROFILES = ("full", "minimal", "vcc", "de", "anndata", "pds")
_INSTALL = 'pip install "sparsevae[eval]"'
_SHOWN = 5


def _labels(adata: AnnData, perturbation_key: str, side: str) -> np.ndarray:
    if perturbation_key not in adata.obs.columns:
        raise KeyError(
            f"{side}.obs has no column {perturbation_key!r} (perturbation_key)."
            f"{did_you_mean(perturbation_key, adata.obs.columns)} Columns: "
            f"{list(adata.obs.columns)[:10]}. Pass the column that holds each cell's "
            "perturbation label."
        )
    column = adata.obs[perturbation_key]
    if column.isna().any():
        raise ValueError(
            f"{side}.obs[{perturbation_key!r}] has {int(column.isna().sum())} missing labels; "
            "label every cell (or drop the unlabelled ones) before scoring."
        )
    return column.astype(str).to_numpy()


def _check_counts(adata: AnnData, side: str) -> None:
    values = adata.X.data if sp.issparse(adata.X) else np.asarray(adata.X)
    if values.size and not np.isfinite(values).all():
        raise ValueError(f"{side}.X has NaN or infinite values; it must hold counts.")
    if values.size and values.min() < 0:
        raise ValueError(
            f"{side}.X has negative values (min {values.min():g}); it must hold counts, "
            "not log-normalised or scaled expression: pass the raw counts, this function "
            "normalises both sides itself."
        )


def _checked_inputs(
    predicted: AnnData, real: AnnData, perturbation_key: str, control: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels of both sides and the column order that puts ``predicted``'s genes in ``real``'s."""
    pred_labels = _labels(predicted, perturbation_key, "predicted")
    real_labels = _labels(real, perturbation_key, "real")
    for side, labels in (("predicted", pred_labels), ("real", real_labels)):
        if control not in labels:
            raise ValueError(
                f"The control label {control!r} is not in {side}.obs[{perturbation_key!r}]."
                f"{did_you_mean(control, set(labels))} Labels there: "
                f"{sorted(set(labels))[:_SHOWN]}. cell-eval measures every effect from the "
                f"control cells: pass the label of the unperturbed cells as control, and put "
                "the real control cells in both AnnData objects."
            )
    perturbations = set(pred_labels) - {control}
    if not perturbations:
        raise ValueError(
            f"predicted has only control cells ({control!r}); there is nothing to score."
        )
    unknown = sorted(perturbations - set(real_labels))
    if unknown:
        raise ValueError(
            f"{len(unknown)} perturbation(s) of predicted are not in real.obs"
            f"[{perturbation_key!r}]: {unknown[:_SHOWN]}. Each predicted perturbation is "
            "scored against real cells of the same label: drop those predictions, or add "
            "their real cells."
        )
    pred_genes, real_genes = predicted.var_names, real.var_names
    if not pred_genes.is_unique or not real_genes.is_unique:
        raise ValueError(
            "Gene names (var_names) must be unique on both sides; call var_names_make_unique()."
        )
    if set(pred_genes) != set(real_genes):
        missing = [g for g in real_genes if g not in set(pred_genes)]
        extra = [g for g in pred_genes if g not in set(real_genes)]
        raise ValueError(
            f"predicted and real have different genes: {len(missing)} of real's "
            f"{real.n_vars} are not in predicted (e.g. {missing[:_SHOWN]}), and "
            f"{len(extra)} of predicted's are not in real (e.g. {extra[:_SHOWN]}). "
            "Predict the same genes as the real data, e.g. predicted[:, real.var_names]."
        )
    return pred_labels, real_labels, pred_genes.get_indexer(real_genes)


def _log_normalised(
    adata: AnnData, labels: np.ndarray, columns: np.ndarray, perturbation_key: str, side: str
) -> AnnData:
    """cell-eval's layout: ``log1p(counts per 10,000)`` in X, labels in obs; cells with counts."""
    in_order = np.array_equal(columns, np.arange(adata.n_vars))
    counts = adata.X if in_order else adata.X[:, columns]
    values, has_counts = log1p_cp10k(counts)
    values = values[has_counts]
    labels = labels[has_counts]
    if sp.issparse(values):
        values = sp.csr_matrix(values, dtype=np.float32)
    else:
        values = np.asarray(values, dtype=np.float32)
    out = AnnData(
        X=values,
        obs=pd.DataFrame(
            {perturbation_key: labels}, index=[f"{side}_{i}" for i in range(labels.size)]
        ),
        var=pd.DataFrame(index=adata.var_names[columns].astype(str)),
    )
    return out


def _import_cell_eval(caller: str = "score_with_cell_eval"):
    try:
        import cell_eval
    except ImportError as error:
        raise ImportError(
            f"{caller} needs cell-eval, which is an optional extra: {_INSTALL} "
            '(or pip install "cell-eval>=0.8,<0.9").'
        ) from error
    return cell_eval


def check_cell_eval_profile(profile: str, caller: str) -> None:
    """Before a long run: ``profile`` is cell-eval's, and cell-eval is installed."""
    if profile not in CELL_EVAL_PROFILES:
        raise ValueError(
            f"cell_eval={profile!r} is not a cell-eval profile; choose one of "
            f"{CELL_EVAL_PROFILES} (or None: no cell-eval scores)."
        )
    _import_cell_eval(caller)


def cells_from_change(
    control: AnnData, change: np.ndarray, label: str, perturbation_key: str
) -> AnnData:
    """A predicted change of mean ``log1p(counts per 10,000)`` as cells, for cell-eval.

    Each control cell's ``log1p(CP10k)`` moved by ``change`` (clipped at 0), returned on the
    CP10k scale (``expm1``), which :func:`score_with_cell_eval` normalises like counts: how a
    baseline that predicts only a mean change (additive, mean of training perturbations)
    becomes cells. Such cells have the control cells' spread around the moved mean.
    """
    values, _ = log1p_cp10k(control.X.toarray() if sp.issparse(control.X) else control.X)
    moved = np.expm1(np.clip(values + np.asarray(change, dtype=float), 0, None))
    obs = pd.DataFrame(
        {perturbation_key: label}, index=[f"{label}:{name}" for name in control.obs_names]
    )
    return AnnData(X=moved.astype(np.float32), obs=obs, var=pd.DataFrame(index=control.var_names))


def cell_eval_columns(
    predicted: AnnData, real: AnnData, perturbation_key: str, control: str, profile: str
) -> dict[str, dict[str, float]]:
    """cell-eval's metrics per perturbation, ``{perturbation: {"cell_eval_<metric>": value}}``.

    The columns of the held-out report (:func:`interventional_nll_report`'s ``cell_eval``).
    """
    table = score_with_cell_eval(predicted, real, perturbation_key, control, profile=profile)
    wide = table.pivot_table(index="perturbation", columns="metric", values="value")
    return {
        str(perturbation): {f"cell_eval_{metric}": float(value) for metric, value in row.items()}
        for perturbation, row in wide.iterrows()
    }


def _long_table(results, registry) -> pd.DataFrame:
    """cell-eval's wide table (perturbation × metric) as rows perturbation, metric, value."""
    wide = results.to_pandas()
    table = wide.melt(id_vars="perturbation", var_name="metric", value_name="value")

    def better(metric: str) -> str:
        name = metric.removesuffix("_real").removesuffix("_pred")
        try:
            best = registry.get_metric(name).best_value.value
        except KeyError:
            best = "none"
        return {"one": "higher", "zero": "lower"}.get(best, "")

    table["value"] = table["value"].astype(float)
    table["better"] = table["metric"].map(better)
    return table.sort_values(["perturbation", "metric"], kind="stable").reset_index(drop=True)


def score_with_cell_eval(
    predicted: AnnData,
    real: AnnData,
    perturbation_key: str = "perturbation",
    control: str = "control",
    *,
    profile: str = "full",
    skip_metrics: list[str] | tuple[str, ...] = (),
    baseline: bool = False,
    outdir: str | os.PathLike | None = None,
    num_threads: int = 1,
) -> pd.DataFrame:
    """Score predicted cells against real ones with cell-eval (the Virtual Cell Challenge scorer).

    Both sides get the same statistic: each cell's counts become ``log1p(counts per 10,000)``
    (the package's normalisation, :func:`log_normalized`; cells without counts are left out),
    and cell-eval scores those values as they are (it normalises only data it finds to be
    integer counts, and then each side to its own median depth, so the normalisation is done
    here once for both). cell-eval compares each perturbation's mean with its own side's
    control mean (Pearson delta, errors of the pseudobulk, discrimination), and tests each
    gene against the control cells on each side (pdex: Mann-Whitney U, FDR 0.05) for the DE
    metrics. Needs the optional extra: ``pip install "sparsevae[eval]"``.

    Parameters
    ----------
    predicted
        Predicted cells: counts in ``X`` (cells × genes; integer-valued draws, or expected
        counts), the same genes as ``real`` (reordered to ``real``'s order if needed), each
        cell's label in ``obs[perturbation_key]``, the control cells (copied from ``real``)
        labelled ``control``. Every perturbation must be in ``real``.
    real
        Observed counts in the same layout. Real cells of perturbations that ``predicted``
        lacks are left out: the table covers the perturbations of ``predicted``.
    perturbation_key
        Column of ``obs`` with the labels, on both sides.
    control
        Label of the control cells, on both sides.
    profile
        cell-eval's set of metrics: ``"full"`` (every metric), ``"minimal"`` (Pearson delta,
        MSE, MAE, L1 discrimination, DE overlap and precision at N, DE gene counts), ``"vcc"``
        (the challenge's three: MAE, L1 discrimination, DE overlap at N), ``"de"``,
        ``"anndata"`` or ``"pds"`` (L1 discrimination only).
    skip_metrics
        Metrics of the profile not to compute (cell-eval's names, e.g.
        ``["clustering_agreement"]``).
    baseline
        Also score cell-eval's base-mean baseline (``cell_eval.build_base_mean_adata``, the
        reference of the challenge's normalised score): every perturbed cell predicted as the
        mean, over the groups of ``real`` scored here (the control and ``predicted``'s
        perturbations), of each group's mean ``log1p(counts per 10,000)``, as many cells per
        perturbation as ``real`` has; controls are ``real``'s. It is built from the real cells
        being scored; to hold a model against a baseline built from training data, call this
        function on that baseline's predicted cells.
    outdir
        Folder for cell-eval's files (``real_de.csv``, ``pred_de.csv``, ``results.csv``,
        ``agg_results.csv``; the baseline's in ``baseline/`` inside it). Default: none are
        kept (a temporary folder).
    num_threads
        Threads of the differential expression (pdex's numba threads; restored afterwards).

    Returns
    -------
    One row per perturbation × metric, sorted by perturbation then metric: ``perturbation``,
    ``metric`` (cell-eval's name; a count metric has ``_real`` and ``_pred`` rows), ``value``
    and ``better`` (``"higher"`` or ``"lower"`` is better; empty for counts), and with
    ``baseline=True`` the base-mean baseline's ``baseline`` value. Metrics that cell-eval
    computes over all perturbations at once (``pearson_edistance``, ``clustering_agreement``,
    ``de_spearman_sig``) repeat their one value on every perturbation's row. A metric's mean
    over perturbations: ``table.groupby("metric")["value"].mean()``. A metric that cell-eval
    cannot compute on the data (``clustering_agreement`` with two perturbations or fewer,
    ``pearson_edistance`` with one) is left out, with a warning that names it and cell-eval's
    error.

    Raises
    ------
    KeyError
        If ``perturbation_key`` is not a column of either side's ``obs``.
    ValueError
        If the control label is absent from either side, a predicted perturbation is not in
        ``real``, the genes differ, or ``X`` holds negative or non-finite values.
    ImportError
        If cell-eval is not installed.

    Examples
    --------
    >>> table = score_with_cell_eval(predicted, real, "perturbation", "control")  # doctest: +SKIP
    >>> table.pivot(index="perturbation", columns="metric", values="value")  # doctest: +SKIP
    """
    if profile not in CELL_EVAL_PROFILES:
        raise ValueError(f"profile={profile!r} is unknown; choose one of {CELL_EVAL_PROFILES}.")
    if int(num_threads) < 1:
        raise ValueError(f"num_threads must be at least 1, got {num_threads}.")
    pred_labels, real_labels, columns = _checked_inputs(predicted, real, perturbation_key, control)
    keep = np.isin(real_labels, np.unique(pred_labels))
    real = real[keep] if not keep.all() else real
    real_labels = real_labels[keep]
    _check_counts(predicted, "predicted")
    _check_counts(real, "real")
    cell_eval = _import_cell_eval()
    import numba

    pred_norm = _log_normalised(predicted, pred_labels, columns, perturbation_key, "pred")
    real_norm = _log_normalised(real, real_labels, np.arange(real.n_vars), perturbation_key, "real")
    for side, norm in (("predicted", pred_norm), ("real", real_norm)):
        missing = sorted(set(np.unique(pred_labels)) - set(norm.obs[perturbation_key]))
        if missing:
            raise ValueError(
                f"Every cell of {missing[:_SHOWN]} in {side} has zero counts; a group needs "
                "cells with counts to be scored."
            )

    threads = numba.get_num_threads()
    try:
        with tempfile.TemporaryDirectory(prefix="sparsevae-cell-eval-") as scratch:
            folder = Path(scratch) / "cell-eval" if outdir is None else Path(outdir)
            run = {
                "perturbation_key": perturbation_key,
                "control": control,
                "profile": profile,
                "skip_metrics": list(skip_metrics),
                "num_threads": int(num_threads),
            }
            table = _run(cell_eval, pred_norm, real_norm, folder, label="prediction", **run)
            if baseline:
                base = cell_eval.build_base_mean_adata(
                    real_norm.copy(), pert_col=perturbation_key, control_pert=control
                )
                base.obs_names = [f"baseline_{i}" for i in range(base.n_obs)]
                with warnings.catch_warnings():
                    # The baseline predicts one profile for every perturbation, so its
                    # energy distances are all equal: pearson_edistance is NaN, not a bug.
                    warnings.simplefilter("ignore", ConstantInputWarning)
                    base_table = _run(
                        cell_eval, base, real_norm, folder / "baseline", label="baseline", **run
                    )
                table = table.merge(
                    base_table[["perturbation", "metric", "value"]].rename(
                        columns={"value": "baseline"}
                    ),
                    on=["perturbation", "metric"],
                    how="left",
                )
    finally:
        numba.set_num_threads(threads)
    return table


def _run(
    cell_eval,
    pred: AnnData,
    real: AnnData,
    folder: Path,
    *,
    perturbation_key: str,
    control: str,
    profile: str,
    skip_metrics: list[str],
    num_threads: int,
    label: str,
) -> pd.DataFrame:
    """One cell-eval evaluation of log-normalised ``pred`` against ``real``: the long table.

    A metric that fails is left out by cell-eval, which logs the error; those errors are
    collected here and raised as one warning that names each metric.
    """
    evaluator = cell_eval.MetricsEvaluator(
        adata_pred=pred,
        adata_real=real,
        control_pert=control,
        pert_col=perturbation_key,
        num_threads=num_threads,
        outdir=str(folder),
    )
    failures = _MetricFailures()
    pipeline_logger = logging.getLogger(cell_eval.MetricPipeline.__module__)
    pipeline_logger.addHandler(failures)
    try:
        results, _ = evaluator.compute(
            profile=profile,
            skip_metrics=skip_metrics or None,
            write_csv=True,
            break_on_error=False,
        )
    finally:
        pipeline_logger.removeHandler(failures)
    if failures.messages:
        warnings.warn(
            f"cell-eval could not compute {len(failures.messages)} metric(s) on these data, "
            f"left out of the table ({label}): " + "; ".join(failures.messages) + ". Pass "
            "skip_metrics=[...] to leave them out without this warning (e.g. "
            "clustering_agreement and pearson_edistance need several perturbations).",
            UserWarning,
            stacklevel=3,
        )
    return _long_table(results, cell_eval.metrics_registry)


class _MetricFailures(logging.Handler):
    """Collects cell-eval's "Error computing metric ..." log records (and keeps them quiet)."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(
            record.getMessage().removeprefix("Error computing metric ").rstrip(".")
        )
