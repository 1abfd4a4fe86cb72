"""Small torch building blocks."""

from ._gumbel import gumbel_sigmoid

__all__ = ["gumbel_sigmoid"]
