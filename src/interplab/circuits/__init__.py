"""Sparse feature circuits: SAEs spliced into the model with error nodes, attribution of a
metric to their latents (AtP, integrated gradients, exact patching), circuits with faithfulness
and completeness, edges between latents, and SHIFT (ablating the latents of a spurious cue).

See ``docs/circuits.md``.
"""
