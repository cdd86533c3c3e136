"""Evaluation of an SAE: reconstruction over a stream of activations (uses the metrics module),
and the whole ``sae eval`` job.

:func:`evaluate_reconstruction` counts every row it is given; :func:`evaluate_reconstruction_split`
takes rows with their positions and reports ordinary tokens (an :class:`ExclusionRule` leaves out
position 0 and massive-norm tokens) as the headline, with all tokens beside them.
:func:`evaluate_sae` takes a :class:`~interplab.sae.config.SaeEvalConfig`, checks that the SAE
belongs to the store and model given, and returns a :class:`SaeEvalResult`: reconstruction over
every row of a store and CE loss recovered, CE increase and KL on a corpus's held-out slice.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from interplab.activations.exclusion import ExclusionCount, ExclusionRule
from interplab.errors import InterplabError
from interplab.sae.base import SparseAutoencoder
from interplab.sae.metrics import ReconstructionAccumulator, ReconstructionMetrics

__all__ = ["SaeEvalResult", "SplitReconstruction", "evaluate_reconstruction",
           "evaluate_reconstruction_split", "evaluate_sae"]


@torch.no_grad()
def evaluate_reconstruction(
    sae: SparseAutoencoder,
    batches: Iterable[torch.Tensor],
    max_tokens: int | None = None,
) -> ReconstructionMetrics:
    """Reconstruction/sparsity metrics of ``sae`` over ``batches`` of ``[batch, d_in]`` raw activations.

    Stops after ``max_tokens`` tokens if given. The SAE is put in eval mode (BatchTopK then uses
    its learned threshold).
    """
    was_training = sae.training
    sae.eval()
    device = next(sae.parameters()).device
    acc = ReconstructionAccumulator(sae.d_in, sae.d_sae)
    try:
        for x in batches:
            _check_width(sae, x)
            x = x.reshape(-1, sae.d_in)
            if max_tokens is not None:
                x = x[: max(0, max_tokens - acc.n)]
                if x.shape[0] == 0:
                    break
            x = x.to(device, torch.float32)
            feats = sae.encode(x)
            acc.update(x, sae.decode(feats), feats)
    finally:
        sae.train(was_training)
    return acc.compute()


def _check_width(sae: SparseAutoencoder, x: torch.Tensor) -> None:
    if x.shape[-1] != sae.d_in:
        raise InterplabError(
            f"activations have d={x.shape[-1]} but the SAE expects d_in={sae.d_in}; "
            "evaluate on the hook the SAE was trained on"
        )


@dataclass
class SplitReconstruction:
    """Reconstruction metrics on ordinary tokens (the headline) and on all tokens beside them."""

    ordinary: ReconstructionMetrics
    all_tokens: ReconstructionMetrics
    exclusion: dict  # the rule (ExclusionRule.to_dict()) plus n_seen / n_excluded counts

    def to_dict(self) -> dict:
        return {"ordinary_tokens": self.ordinary.to_dict(),
                "all_tokens": self.all_tokens.to_dict(), "exclusion": self.exclusion}


@torch.no_grad()
def evaluate_reconstruction_split(
    sae: SparseAutoencoder,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    rule: ExclusionRule | None = None,
    max_tokens: int | None = None,
) -> SplitReconstruction:
    """Metrics of ``sae`` over ``(x [batch, d_in], position [batch])`` pairs, split by ``rule``.

    ``ordinary`` counts the tokens ``rule`` keeps (default :class:`ExclusionRule`: not position 0,
    norm ≤ 10 × the batch median); ``all_tokens`` counts every token. ``max_tokens`` limits the
    tokens seen (before exclusion).
    """
    rule = rule if rule is not None else ExclusionRule()
    was_training = sae.training
    sae.eval()
    device = next(sae.parameters()).device
    ordinary = ReconstructionAccumulator(sae.d_in, sae.d_sae)
    every = ReconstructionAccumulator(sae.d_in, sae.d_sae)
    count = ExclusionCount()
    try:
        for x, position in batches:
            _check_width(sae, x)
            if max_tokens is not None:
                room = max(0, max_tokens - every.n)
                x, position = x[:room], position[:room]
                if x.shape[0] == 0:
                    break
            x = x.to(device, torch.float32)
            keep = rule.keep_mask(x, position)
            count.add(keep)
            feats = sae.encode(x)
            x_hat = sae.decode(feats)
            every.update(x, x_hat, feats)
            ordinary.update(x, x_hat, feats, keep)
    finally:
        sae.train(was_training)
    return SplitReconstruction(ordinary.compute(), every.compute(),
                               {**rule.to_dict(), **count.to_dict()})


# -- `sae eval`: the whole evaluation of one SAE from its config -----------------------------------

def plural(n: int, word: str, many: str | None = None) -> str:
    """``"1 position"``, ``"2 positions"`` (``many``: an irregular plural)."""
    return f"{n:,} {word if n == 1 else (many or word + 's')}"


@dataclass
class SaeEvalResult:
    """What ``sae eval`` measured (JSON-serialisable; :meth:`save` writes it atomically).

    ``store``: the store evaluated on (path, completeness, hook, fingerprint, whether it is the
    SAE's training store, what its harvest left out); ``reconstruction``:
    :meth:`SplitReconstruction.to_dict` over every row of the store (up to ``max_tokens``);
    ``ce``: :meth:`CEEvaluation.to_dict` on the held-out slice of the corpus; ``identity``: the
    checks of the SAE against the store and the model (:class:`IdentityCheck` dicts), including
    mismatches allowed by ``allow_mismatch``; ``notes``: what could not be checked."""

    sae: str
    config: dict
    exclusion: dict  # the rule applied here (ExclusionRule.to_dict)
    exclusion_description: str
    identity: list[dict]
    notes: list[str]
    store: dict | None = None
    reconstruction: dict | None = None
    ce: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: str | Path) -> Path:
        from interplab.fileio import atomic_write_json

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return atomic_write_json(path, self.to_dict(), indent=2)

    def mismatches(self) -> list[str]:
        """Mismatches evaluated anyway (``allow_mismatch``)."""
        return [m for c in self.identity for m in c["mismatches"]]

    def headline(self) -> list[tuple[str, list[tuple[str, str, str]]]]:
        """The short table, as ``(computed on, [(metric, value, n), ...])`` sections:
        reconstruction on the store's ordinary tokens, then CE loss recovered, CE increase and KL
        at each context length on the held-out slice."""
        sections: list[tuple[str, list[tuple[str, str, str]]]] = []
        if self.reconstruction is not None and self.store is not None:
            m = self.reconstruction["ordinary_tokens"]
            a = self.reconstruction["all_tokens"]
            n = plural(m["n_tokens"], "row")
            sections.append((f"ordinary tokens of {self.store['described']}", [
                ("FVE", f"{m['fraction_of_variance_explained']:.4f}", n),
                ("MSE", f"{m['mse']:.4g}", n),
                ("L0", f"{m['l0']:.1f}", n),
                ("alive fraction", f"{m['fraction_alive']:.2f} ({m['n_alive']} of "
                 f"{m['n_features']} features fire on those rows)", n),
                ("FVE, all tokens", f"{a['fraction_of_variance_explained']:.4f} (none left "
                 "out)", plural(a["n_tokens"], "row")),
            ]))
        if self.ce is not None:
            rows = []
            for r in self.ce["results"]:
                n = plural(r["n_tokens"], "token")
                L = r["context_length"]
                rows += [
                    (f"CE loss recovered, L={L}", f"{r['loss_recovered_vs_mean']:.4f} (vs mean "
                     "ablation)", n),
                    (f"CE increase, L={L}", f"{r['ce_increase']:+.4f} nats", n),
                    (f"KL, L={L}", f"{r['kl_sae']:.4f} nats", n),
                ]
            sections.append((f"{self.ce['n_sequences']} held-out sequences of "
                             f"{self.ce['data']}", rows))
        return sections

    def exclusion_lines(self) -> list[str]:
        """What was left out, in words: the store's harvest (``--for-sae``) and this evaluation."""
        out = []
        if self.store is not None:
            out.append(f"store harvest: {self.store['harvest_exclusion']}")
        if self.reconstruction is not None:
            e = self.reconstruction["exclusion"]
            out.append(f"this evaluation on the store: {plural(e['n_excluded'], 'token')} of "
                       f"{e['n_seen']:,} left out ({self.exclusion_description})")
        if self.ce is not None:
            for r in self.ce["results"]:
                out.append(f"CE at L={r['context_length']}: "
                           f"{plural(r['n_excluded_positions'], 'position')} left clean and "
                           f"uncounted ({self.exclusion_description}; BOS never patched)")
        return out


def evaluate_sae(cfg: Any, progress: bool = False) -> SaeEvalResult:
    """Evaluate the SAE of ``cfg`` (:class:`~interplab.sae.config.SaeEvalConfig`): reconstruction
    over every row of ``cfg.store`` and/or CE loss recovered, CE increase and KL with the SAE
    spliced into ``cfg.model`` on the held-out slice of ``cfg.corpus``. The SAE's recorded model
    and hook are checked against the store's and the model's first
    (:func:`~interplab.sae.identity.check_identity`): a mismatch raises unless
    ``cfg.allow_mismatch``. Headline numbers are on ordinary tokens, by the exclusion rule the
    SAE was trained with unless ``cfg`` overrides it."""
    from interplab.sae.formats import load_sae
    from interplab.sae.identity import check_identity, model_identity_of

    cfg.validate()
    sae = load_sae(cfg.sae, device=cfg.device)
    rule = cfg.exclusion_rule(sae.config.exclusion)
    hook = cfg.hook or sae.config.hook
    checks, notes = [], []
    st = store_hook = lm = None
    if cfg.store is not None:
        st, store_hook = _open_store(cfg, sae, hook)
        checks.append(check_identity(sae.config, sae=str(cfg.sae), target=f"store {cfg.store}",
                                     model=st.manifest.get("model"), hook=store_hook,
                                     allow_mismatch=cfg.allow_mismatch))
    if cfg.model:
        from interplab.models import load

        lm = load(cfg.model, device=cfg.device)
        if not hook:
            raise InterplabError("the SAE names no hook; pass --hook")
        lm.parse_hook(hook)
        checks.append(check_identity(sae.config, sae=str(cfg.sae), target=f"model {cfg.model}",
                                     model=model_identity_of(lm, sae.config), hook=hook,
                                     allow_mismatch=cfg.allow_mismatch))
    for c in checks:
        notes += [n for n in c.notes if n not in notes]
    result = SaeEvalResult(sae=str(cfg.sae), config=sae.config.to_dict(), exclusion=rule.to_dict(),
                           exclusion_description=rule.describe(),
                           identity=[c.to_dict() for c in checks], notes=notes)
    if st is not None:
        result.store = _store_summary(cfg, st, store_hook, sae)
        split = evaluate_reconstruction_split(
            sae, st.iter_batches(4096, store_hook, shuffle=False, with_position=True), rule,
            max_tokens=cfg.max_tokens or None)
        result.reconstruction = split.to_dict()
    if lm is not None:
        from interplab.datasets.corpus import corpus_split, corpus_tokens
        from interplab.sae.ce_eval import ce_loss_recovered

        lengths = cfg.context_lengths or [sae.config.context_length or 128]
        toks, bos_id = corpus_tokens(lm, cfg.corpus, max(lengths), cfg.n_sequences,
                                     part="held_out")
        ev = ce_loss_recovered(lm, sae, hook, toks, context_lengths=lengths, progress=progress,
                               bos_token_id=bos_id, exclusion=rule)
        result.ce = {**ev.to_dict(), "data": corpus_split(cfg.corpus, "held_out")[1],
                     "n_sequences": int(toks.shape[0])}
    return result


def _open_store(cfg: Any, sae: SparseAutoencoder, hook: str | None) -> tuple[Any, str]:
    """The store of ``cfg`` (complete unless allowed) and the hook to read: the SAE's (or
    ``--hook``) when the store holds it, else the store's only hook (a mismatch the identity
    check reports)."""
    from interplab.activations import ActivationStore

    st = ActivationStore(cfg.store)
    st.require_complete(cfg.allow_incomplete)
    if hook and hook in st.hooks:
        store_hook = hook
    elif len(st.hooks) == 1:
        store_hook = st.hooks[0]
    else:
        raise InterplabError(f"store {cfg.store} holds the hooks {st.hooks}, not {hook!r}; pass "
                             "--hook with the one to evaluate")
    if st.d_model != sae.d_in:
        raise InterplabError(f"store {cfg.store} has d={st.d_model} but the SAE takes "
                             f"d_in={sae.d_in}; use the store of the SAE's model and hook")
    return st, store_hook


def _store_summary(cfg: Any, st: Any, hook: str, sae: SparseAutoencoder) -> dict:
    from interplab.sae.identity import same_training_store

    fingerprint = st.fingerprint()
    same = same_training_store(sae.config.data, fingerprint)
    whose = {True: "the SAE's training store", False: "not the store the SAE was trained on",
             None: "the SAE records no training store to compare"}[same]
    extent = f"the first {cfg.max_tokens:,} rows" if cfg.max_tokens else "every row"
    return {"path": str(cfg.store), "hook": hook, "complete": st.complete,
            "texts_done": st.texts_done, "n_texts": st.n_texts, "n_rows": st.n_rows,
            "fingerprint": fingerprint, "training_store": same,
            "harvest_exclusion": st.exclusion_summary(),
            "described": f"{extent} of store {cfg.store} ({whose})"}
