"""Weight-SVD study: every block matrix's spectrum against the Marchenko–Pastur null, its top
directions as tokens, and the same spectra for the control networks (the permuted-weight reset
network and, where available, a randomly initialised network of the same architecture)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from interplab.errors import InterplabError
from interplab.studies.config import JsonResult

# The reset network permutes the last axis of every parameter: for a weight [out, in] that is
# W·P with P a permutation (orthogonal), so its singular values equal the model's exactly.
RESET_NOTE = ("the reset network permutes the columns of every matrix (W·P, P orthogonal), so its "
              "singular values equal the model's exactly: it is no null for a spectrum (only its "
              "token readings differ). The random-matrix edge, the entry-shuffled matrices and a "
              "randomly initialised network are the nulls here.")


@dataclass
class WeightsConfig:
    """Everything that defines a weight-SVD run (saved with the result)."""

    model: str = field(default="smollm2-135m",
        metadata={"help": "Model: registry name, HF folder or .gguf file."})
    top_directions: int = field(default=3,
        metadata={"help": "Top singular directions per matrix read out as tokens."})
    top_tokens: int = field(default=8,
        metadata={"help": "Tokens listed at each end of a direction."})
    controls: tuple[str, ...] = field(default=("reset", "random-init"),
        metadata={"help": "Control networks whose spectra are computed too (reset, random-init)."})
    seed: int = field(default=0,
        metadata={"help": "Seed of the control networks and the shuffled-entries null."})
    device: str | None = field(default=None, metadata={"help": "Device (none: auto)."})

    def validate(self) -> None:
        if self.top_directions < 0 or self.top_tokens < 1:
            raise InterplabError("top_directions must be ≥ 0 and top_tokens ≥ 1")
        bad = [c for c in self.controls if c not in ("reset", "random-init")]
        if bad:
            raise InterplabError(f"unknown control(s) {bad}; choose from reset, random-init")


@dataclass
class WeightsResult(JsonResult):
    """``networks[name]`` is a list of per-matrix analyses (see
    :func:`interplab.weights.analyse_matrix`) for ``model`` and each control that ran."""

    config: dict[str, Any]
    model: dict[str, Any]
    networks: dict[str, list[dict[str, Any]]]
    reset_max_spectrum_difference: float | None
    notes: list[str]
    timings: dict[str, float]


def _control(lm: Any, name: str, seed: int) -> Any | None:
    from interplab import models

    if name == "reset":
        return models.reset_copy(lm, seed=seed)
    make = getattr(models, "random_init_copy", None)
    return None if make is None else make(lm, seed=seed)


def run_weights(config: WeightsConfig) -> WeightsResult:
    from interplab.models import load
    from interplab.weights import analyse_weights, spectrum_difference

    config.validate()
    t0 = time.perf_counter()
    lm = load(config.model, device=config.device)
    opts = {"top_directions": config.top_directions, "top_tokens": config.top_tokens,
            "seed": config.seed}
    networks = {"model": analyse_weights(lm, **opts)}
    notes: list[str] = []
    for name in config.controls:
        control = _control(lm, name, config.seed)
        if control is None:
            notes.append(f"control {name} is not available in this version of interplab.models")
            continue
        networks[name] = analyse_weights(control, **opts)
        del control
    diff = None
    if "reset" in networks:
        diff = spectrum_difference(networks["model"], networks["reset"])
        notes.append(RESET_NOTE)
    return WeightsResult(config=asdict(config), model=lm.identity(), networks=networks,
                         reset_max_spectrum_difference=diff, notes=notes,
                         timings={"total_s": time.perf_counter() - t0})
