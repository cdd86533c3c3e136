"""Weight-SVD study: every block matrix's spectrum against the Marchenko–Pastur null, its top
directions as tokens, and the same spectra for the control networks (the permuted-weight reset
network and, where available, a randomly initialised network of the same architecture)."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from interplab import models
from interplab.models import LanguageModel, load
from interplab.studies.weights.config import RESET_NOTE, WeightsConfig, WeightsResult
from interplab.study.result import versions
from interplab.weights import analyse_weights, spectrum_difference
from interplab.weights.spectrum import TW_MARGIN


def _control(lm: LanguageModel, name: str, seed: int) -> LanguageModel | None:
    if name == "reset":
        return models.reset_copy(lm, seed=seed)
    make = getattr(models, "random_init_copy", None)
    return None if make is None else make(lm, seed=seed)


def run_weights(config: WeightsConfig) -> WeightsResult:
    config.validate()
    t0 = time.perf_counter()
    lm = load(config.run.model, device=config.run.device)
    opts = {"top_directions": config.top_directions, "top_tokens": config.top_tokens,
            "seed": config.run.seed}
    networks = {"model": analyse_weights(lm, **opts)}
    notes: list[str] = []
    for name in config.controls:
        control = _control(lm, name, config.run.seed)
        if control is None:
            notes.append(f"control {name} is not available in this version of interplab.models")
            continue
        networks[name] = analyse_weights(control, **opts)
        del control
    diff = None
    if "reset" in networks:
        diff = spectrum_difference(networks["model"], networks["reset"])
        notes.append(RESET_NOTE)
    return WeightsResult(config=asdict(config), versions=versions(), model=lm.identity(), networks=networks,
                         reset_max_spectrum_difference=diff, notes=notes,
                         timings={"total_s": time.perf_counter() - t0},
                         summary=summary(lm.name, networks, diff))


NETWORK_WORDS = {"reset": "the reset network", "random-init": "the randomly initialised network"}


def _count(mats: list[dict[str, Any]], key: str = "n_above") -> int:
    return sum(m[key] for m in mats)


def summary(model: str, networks: dict[str, list[dict[str, Any]]],
            reset_difference: float | None) -> list[str]:
    """The answer in a few findings: how many singular values stand above the random-matrix
    null in the model and in each control network, where (per matrix kind, and how many
    matrices exceed their randomly initialised counterpart), the strongest direction, and why
    the reset network is no null for a spectrum."""
    mats = networks["model"]
    total = sum(m["n_singular"] for m in mats)
    above, both = _count(mats), _count(mats, "n_above_both")
    controls = [n for n in ("random-init", "reset") if n in networks]
    against = "; ".join(f"{NETWORK_WORDS[n]}: {_count(networks[n])}" for n in controls)
    out = [f"{model}: {above} of {total} singular values in {len(mats)} matrices stand above "
           f"the random-matrix null (Marchenko–Pastur edge + {TW_MARGIN:g} Tracy–Widom units), "
           f"{both} of them also above the entry-shuffled matrix's largest"
           + (f"; at the same threshold {against}." if against else "; no control network ran.")]
    kinds = list(dict.fromkeys(m["kind"] for m in mats))
    init = networks.get("random-init")
    per_kind = []
    for kind in kinds:
        ours = [m for m in mats if m["kind"] == kind]
        text = f"{kind} {_count(ours)}"
        if init is not None:
            text += f" (random init {_count([m for m in init if m['kind'] == kind])})"
        per_kind.append(text)
    where = "Per matrix kind: " + ", ".join(per_kind) + "."
    if init is not None:
        more = sum(m["n_above"] > c["n_above"] for m, c in zip(mats, init, strict=True))
        where += (f" {more} of {len(mats)} matrices have more values above the null than the "
                  "same matrix of the randomly initialised network.")
    out.append(where)
    top = max(mats, key=lambda m: m["singular_values"][0] / m["mp_upper"])
    ratio = top["singular_values"][0] / top["mp_upper"]
    line = (f"Largest singular value relative to its edge: block {top['block']} {top['kind']}, "
            f"{ratio:.2f} × the edge (threshold {top['threshold'] / top['mp_upper']:.2f} ×, "
            f"entry-shuffled {top['shuffled_top'] / top['mp_upper']:.2f} ×)")
    if top["directions"]:
        d = top["directions"][0]
        verb = "writes" if top["space"] == "unembedding" else "reads"
        line += (f"; its direction {verb} {' '.join(map(repr, d['plus'][:4]))} against "
                 f"{' '.join(map(repr, d['minus'][:4]))}")
    out.append(line + ".")
    if reset_difference is not None:
        out.append(f"The reset network's singular values equal the model's (largest relative "
                   f"difference {reset_difference:.1e}): permuting columns keeps a spectrum, so "
                   "it is no null here; the random-matrix edge, the entry-shuffled matrices and "
                   "the randomly initialised network are.")
    return out
