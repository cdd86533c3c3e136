"""Dashboard cards of chosen SAE latents, drawn from the held-out part of the corpus the SAEs
were trained on: the circuit and SHIFT studies show them beside their tables."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from interplab.circuits.splice import SaeSet
from interplab.models import LanguageModel
from interplab.sae.cache import CorpusData
from interplab.sae.dashboard import feature_dashboards


def latent_cards(lm: LanguageModel, saes: SaeSet, corpus: CorpusData,
                 latents: dict[str, list[int]], *, n_texts: int, n_contexts: int, window: int,
                 n_logits: int, batch_size: int) -> list[dict[str, Any]]:
    """One card per latent of ``latents`` (hook → latent indices): ``{"hook", "index",
    "top_contexts", ...}`` from :func:`~interplab.sae.dashboard.feature_dashboards` on the first
    ``n_texts`` held-out sequences of ``corpus`` (``n_contexts`` contexts of ``window`` tokens
    each side, ``n_logits`` promoted tokens), without the activation histogram. No latents: no
    cards, and the corpus is not read."""
    if not any(latents.values()):
        return []
    toks, bos = corpus.tokens(lm, part="held_out")
    toks = toks[:n_texts]
    out = []
    for hook, indices in latents.items():
        dash = feature_dashboards(lm, saes[hook], hook, toks, features=indices,
                                  n_contexts=n_contexts, window=window, n_logits=n_logits,
                                  bos_token_id=bos, batch_size=batch_size)
        for f in dash.features:
            card = asdict(f)
            card.pop("histogram_counts")
            card.pop("histogram_edges")
            out.append({"hook": hook, **card})
    return out
