import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# One intra-op thread per test process (and its subprocesses), set before torch is imported.
# The suite must pass on a busy machine: when other processes hold the cores, OpenMP workers
# wait at every barrier for a descheduled sibling, and the small matrix products of these tests
# ran 3.7x slower with two threads than with one (6 SAEs x 30 steps: 39 s vs 11 s, 2 cores shared
# with ~7 other busy processes). Results do not depend on it: tests compare with tolerances.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import pytest  # noqa: E402

# `make test` (and so CI) sets INTERPLAB_STRICT_TESTS=1: there the set-up installs the embedded
# model and a browser, so a missing one is a set-up failure, not a reason to skip.
STRICT = os.environ.get("INTERPLAB_STRICT_TESTS") == "1"


def skip_unless_strict(reason: str):
    """Skip a test whose optional resource is missing — or fail it under strict mode."""
    if STRICT:
        pytest.fail(f"{reason} (INTERPLAB_STRICT_TESTS=1: the test set-up should provide it)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def tiny_models():
    from interplab.models import load

    return {name: load(name, seed=0) for name in ("tiny-llama", "tiny-qwen2", "tiny-gpt2", "tiny-neox")}


@pytest.fixture
def atomic_writes(monkeypatch):
    """File names written through ``interplab.fileio.atomic_write`` during the test, in order."""
    from pathlib import Path

    import interplab.fileio

    written: list[str] = []
    real = interplab.fileio.atomic_write

    def spy(path, write):
        written.append(Path(path).name)
        return real(path, write)

    monkeypatch.setattr(interplab.fileio, "atomic_write", spy)
    return written


@pytest.fixture(scope="session")
def smollm():
    from interplab.errors import InterplabError
    from interplab.models import load

    try:
        return load("smollm2-135m")
    except InterplabError as exc:  # pragma: no cover - CI installs it
        skip_unless_strict(f"embedded model unavailable: {exc}")


TEXTS = [
    "The city of Lisbon sits on seven hills.",
    "Bees dance.",
    "A probe is a small classifier trained on activations; its accuracy means little alone.",
    "Seventy-one is larger than fifty-two.",
    "Gold is a soft yellow metal.",
]


def identity_sae(d: int):
    """A genuine ReLU SAE that reconstructs exactly: features relu(x), relu(−x); x̂ = f₊ − f₋."""
    import torch

    from interplab.sae import SAEConfig, create_sae

    sae = create_sae(SAEConfig("relu", d, 2 * d))
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], 1))
        sae.W_dec.copy_(torch.cat([eye, -eye], 0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae.eval()
