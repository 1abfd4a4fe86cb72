"""Checks of :meth:`SparseVAE.train` and :meth:`SparseVAE.setup_anndata` against silent no-ops.

Arguments with which training would learn nothing are refused before it starts; training a
trained model again, and registering data again under a model built on it, warn about what
they do (and do not) change.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

from anndata import AnnData


def check_training_arguments(
    n_cells: int, default_epochs: int, max_epochs, batch_size, lr, lr_prior, train_size
) -> None:
    """Raise for arguments with which ``train`` would learn nothing, before it starts.

    ``default_epochs``: what ``max_epochs=None`` gives for these ``n_cells`` cells.
    """
    if not max_epochs >= 1:
        raise ValueError(
            f"max_epochs={max_epochs!r}: training needs at least one epoch (0 would train "
            "nothing yet mark the model trained; Lightning reads -1 as 'never stop'). Pass a "
            "positive number of epochs, or leave max_epochs unset for the default "
            f"({default_epochs} for these {n_cells} cells)."
        )
    if batch_size is not None and not batch_size >= 1:
        raise ValueError(
            f"batch_size={batch_size!r}: a minibatch needs at least one cell; pass a positive "
            "size (default 256)."
        )
    for name, value in (("lr", lr), ("lr_prior", lr_prior)):
        if not value > 0:
            raise ValueError(
                f"{name}={value!r}: with a learning rate that is not positive the parameters "
                "would not learn (or climb the loss); pass a positive rate, e.g. the default."
            )
    if train_size is not None and not 0 < train_size <= 1:
        raise ValueError(
            f"train_size={train_size!r} must be in (0, 1]: the share of cells trained on "
            "(scvi-tools would read 0 as its default, 0.9, and train on 90% of the cells). "
            "Pass e.g. train_size=0.9, or 1.0 to train on every cell."
        )


def warn_if_schedule_restarts(prior, max_epochs: int, warmup, rotate_latents) -> None:
    """Before a trained model trains again: say what the new schedule starts over.

    ``prior``: the model's prior; ``warmup``: the KL warm-up epochs of the new run (``None``:
    none); ``rotate_latents``: the user's argument.
    """
    restarts = []
    if warmup:
        restarts.append(f"the KL weight warms up again from 0 over {warmup} epoch(s)")
    if prior.resolve_rotation(rotate_latents) and max_epochs >= 2:
        restarts.append(
            "the latent space is rotated again when the warm-up ends, and every mask restarts "
            "undecided (pi = 0.5)"
        )
    if not restarts:
        return
    warnings.warn(
        "This model is already trained: train() goes on from its current parameters, but "
        f"under a new schedule: {'; '.join(restarts)}. To only refine the model, pass "
        "n_epochs_kl_warmup=None, rotate_latents=False; to train from scratch, build a new "
        "model with `SparseVAE(adata, ...)`.",
        UserWarning,
        stacklevel=3,  # the caller of train / setup_anndata
    )


def warn_if_models_keep_another_setup(models: Iterable, adata: AnnData, setup_args: dict) -> None:
    """Warn when a model built on ``adata`` has another setup, which this one won't change.

    ``models``: the models alive now. scvi-tools keeps each model's registration: whenever such
    a model reads ``adata``, it registers it again with its own arguments.
    """
    changes = set()
    for model in list(models):
        built = model.registry_["setup_args"]
        if model.adata is adata and built != setup_args:
            names = sorted(k for k in {*built, *setup_args} if built.get(k) != setup_args.get(k))
            changes.add(
                (
                    ", ".join(f"{k}={built.get(k)!r}" for k in names),
                    ", ".join(f"{k}={setup_args.get(k)!r}" for k in names),
                )
            )
    if not changes:
        return
    before, after = sorted(changes)[0]
    warnings.warn(
        f"A SparseVAE built on this adata keeps its own setup ({before}); this setup_anndata "
        f"({after}) does not change it: that model registers adata again with its setup "
        "whenever it reads it. The new setup applies to models built from now on: build one "
        "with `SparseVAE(adata, ...)` to use it.",
        UserWarning,
        stacklevel=3,  # the caller of train / setup_anndata
    )
