"""Does an SAE belong where it is applied? Its recorded model and hook against a store's or a model's.

An SAE applied to activations of another model, or of another hook of the same width, still
produces numbers (an FVE, a dashboard), and nothing in them says they are meaningless. The study
that trains SAEs records in each SAE's config the model's identity (``model_identity``: name,
architecture, width, depth, variant, config and weights sha256) and what the training rows were
(``data``: a store's path and fingerprint, or a corpus part). :func:`check_identity` compares
them with the target before evaluation or a dashboard runs: a difference is refused, naming both
sides, unless the caller allows it (then it is recorded in the output). An SAE without a recorded
identity (from an older version, SAELens or dictionary_learning) is allowed with a note.

No torch import at module level.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from interplab.errors import InterplabError

__all__ = ["IdentityCheck", "check_identity", "describe_model", "model_differences",
           "model_identity_of", "same_training_store"]

# Identity fields compared (where both sides record them); the name is not one of them: a local
# folder and a registry name can hold the same model, which the hashes decide.
MODEL_KEYS = ("architecture", "d_model", "n_layers", "variant", "config_sha256", "weights_sha256")


def describe_model(identity: dict | None) -> str:
    """``"tiny-llama (LlamaForCausalLM, config f6ff71c04343, weights 506544b5e893)"``."""
    if not identity:
        return "an unrecorded model"
    parts = [str(identity["architecture"])] if identity.get("architecture") else []
    if identity.get("variant") not in (None, "original"):
        parts.append(f"variant {identity['variant']}")
    for key, label in (("config_sha256", "config"), ("weights_sha256", "weights")):
        if identity.get(key):
            parts.append(f"{label} {str(identity[key])[:12]}")
    return f"{identity.get('name', '?')} ({', '.join(parts)})" if parts else str(
        identity.get("name", "?"))


def model_differences(recorded: dict | None, actual: dict | None) -> list[str]:
    """The :data:`MODEL_KEYS` both identities record with different values."""
    if not recorded or not actual:
        return []
    return [k for k in MODEL_KEYS
            if recorded.get(k) is not None and actual.get(k) is not None
            and recorded[k] != actual[k]]


def model_identity_of(lm: Any, config: Any = None) -> dict:
    """The identity of the loaded model ``lm`` to check an SAE against: ``lm.identity()``, plus
    the sha256 of its weights when the SAE ``config`` records one to compare (hashing reads every
    weight, so it is skipped when there is nothing to compare it with)."""
    identity = lm.identity()
    if config is None or (getattr(config, "model_identity", None) or {}).get("weights_sha256"):
        from interplab.models.loading import weights_sha256

        identity["weights_sha256"] = weights_sha256(lm.hf)
    return identity


def same_training_store(sae_data: dict | None, fingerprint: str | None) -> bool | None:
    """Whether the store with ``fingerprint`` is the one the SAE was trained on (None: the SAE
    does not say)."""
    if not sae_data or sae_data.get("kind") != "store" or not fingerprint:
        return None
    return sae_data.get("fingerprint") == fingerprint


@dataclass
class IdentityCheck:
    """The outcome of :func:`check_identity` (JSON-serialisable; recorded in results)."""

    target: str  # what the SAE was checked against, e.g. "store acts/" or "model tiny-gpt2"
    sae_model: str  # describe_model of the SAE's recorded identity
    target_model: str
    sae_hook: str | None
    hook: str | None  # where the SAE is applied
    mismatches: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    allowed: bool = False  # mismatches present and allowed by the caller (--allow-mismatch)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_identity(config: Any, *, sae: str, target: str, model: dict | None,
                   hook: str | None, allow_mismatch: bool = False,
                   flag: str = "--allow-mismatch") -> IdentityCheck:
    """Compare the SAE ``config`` (an :class:`~interplab.sae.config.SAEConfig`; ``sae`` names
    it in messages) with ``target``: a model identity (``model``, e.g. a store manifest's
    ``model`` or ``lm.identity()`` with ``weights_sha256``) and the ``hook`` it is applied at.
    Raises :class:`InterplabError` naming both sides of every difference unless
    ``allow_mismatch``; notes say what could not be checked."""
    recorded = getattr(config, "model_identity", None)
    source = (getattr(config, "extra", None) or {}).get("source")
    check = IdentityCheck(target=target, sae_model=describe_model(recorded),
                          target_model=describe_model(model), sae_hook=config.hook, hook=hook)
    if not recorded:
        origin = f"a {source} SAE" if source else "an SAE saved by an older version"
        check.notes.append(f"the SAE records no model identity ({origin}): it cannot be checked "
                           f"to belong to {target}")
    elif not model:
        check.notes.append(f"{target} records no model identity to check the SAE against")
    else:
        diffs = model_differences(recorded, model)
        if diffs:
            check.mismatches.append(f"model: SAE trained on {describe_model(recorded)}; "
                                    f"{target}: {describe_model(model)} (they differ in "
                                    f"{', '.join(diffs)})")
    if config.hook is None:
        check.notes.append(f"the SAE records no hook; it is applied at {hook}")
    elif hook is not None and hook != config.hook:
        check.mismatches.append(f"hook: SAE trained at {config.hook}; {target}: {hook}")
    if check.mismatches and not allow_mismatch:
        raise InterplabError(
            f"the SAE {sae} does not match {target}: {'; '.join(check.mismatches)}. Use the SAE "
            f"trained for this model and hook, or pass {flag} if the mismatch is intended (it is "
            "then recorded in the output)")
    check.allowed = bool(check.mismatches)
    return check
