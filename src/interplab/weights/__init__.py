"""Weight SVD with a random-matrix null: per block, the singular values of the attention-output
and MLP matrices against the Marchenko–Pastur edge for the same shape and entry variance, and the
top singular directions read through the embedding and unembedding as tokens."""

from interplab.weights.analyse import analyse_matrix, analyse_weights, spectrum_difference
from interplab.weights.matrices import KINDS, BlockMatrix, block_matrices
from interplab.weights.spectrum import (
    above_edge,
    entry_std,
    mp_edges,
    mp_quantiles,
    mp_threshold,
    shuffled_top,
    tracy_widom_scale,
)

__all__ = [
    "KINDS",
    "BlockMatrix",
    "above_edge",
    "analyse_matrix",
    "analyse_weights",
    "block_matrices",
    "entry_std",
    "mp_edges",
    "mp_quantiles",
    "mp_threshold",
    "shuffled_top",
    "spectrum_difference",
    "tracy_widom_scale",
]
