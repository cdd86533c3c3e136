"""Saving and loading SAEs: our folder format, SAELens folders, dictionary_learning checkpoints.

- **interplab**: a folder with ``config.json`` (the :class:`SAEConfig`, plus ``"format":
  "interplab-sae"``; SAEs trained by ``interplab.studies.sae`` record there the model identity,
  hook and training data they belong to) and ``weights.safetensors`` (parameters and buffers),
  each written atomically. Normalisation is always folded into the saved weights. Never pickle.
- **SAELens**: a folder with ``cfg.json`` and ``sae_weights.safetensors`` holding ``W_enc [d_in,
  d_sae]``, ``b_enc``, ``W_dec [d_sae, d_in]``, ``b_dec`` (+ ``threshold`` for jumprelu; ``b_gate``,
  ``r_mag``, ``b_mag`` for gated). ``apply_b_dec_to_input=false`` SAEs are converted exactly by
  moving ``b_dec W_enc`` into the encoder bias.
- **dictionary_learning**: ``ae.pt`` (a state dict; read with ``torch.load(weights_only=True)``,
  which refuses arbitrary pickled objects) and ``config.json`` (``trainer.dict_class``,
  ``activation_dim``, ``dict_size``, ``k``, ``lm_name``, ``layer``, ``submodule_name``).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file

from interplab.errors import InterplabError
from interplab.fileio import atomic_write_safetensors, atomic_write_text
from interplab.sae.base import SAEConfig, SparseAutoencoder, create_sae

__all__ = [
    "save_sae",
    "load_sae",
    "load_saelens",
    "export_saelens",
    "load_dictionary_learning",
    "check_compatible",
]

FORMAT = "interplab-sae"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"


def save_sae(sae: SparseAutoencoder, path: str | os.PathLike) -> Path:
    """Write ``sae`` to the folder ``path`` (created): ``config.json`` + ``weights.safetensors``."""
    from interplab import __version__

    d = Path(path)
    d.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in sae.state_dict().items()}
    # Atomic writes: a full disk raises OSError naming the file and leaves no half-written one.
    atomic_write_safetensors(d / WEIGHTS_FILE, tensors, metadata={"format": FORMAT})
    cfg = {"format": FORMAT, "format_version": 1, "interplab_version": __version__,
           **sae.config.to_dict()}
    atomic_write_text(d / CONFIG_FILE, json.dumps(cfg, indent=2))
    return d


def load_sae(path: str | os.PathLike, device: str | torch.device = "cpu") -> SparseAutoencoder:
    """Load an SAE saved by :func:`save_sae`, or detect and load a SAELens / dictionary_learning
    folder. Returns the SAE in eval mode."""
    d = Path(path)
    if not d.is_dir():
        raise InterplabError(f"SAE folder {d} does not exist; pass the folder written by save_sae")
    if (d / CONFIG_FILE).exists() and (d / WEIGHTS_FILE).exists():
        raw = _read_json(d / CONFIG_FILE)
        if raw.pop("format", None) != FORMAT:
            raise InterplabError(f"{d / CONFIG_FILE} is not an interplab SAE config")
        raw.pop("format_version", None)
        raw.pop("interplab_version", None)
        sae = create_sae(SAEConfig.from_dict(raw, where=d / CONFIG_FILE))
        state = _read_safetensors(d / WEIGHTS_FILE)
        _load_state(sae, state, d)
        return sae.to(device).eval()
    if (d / "cfg.json").exists() and (d / "sae_weights.safetensors").exists():
        return load_saelens(d, device=device)
    if (d / "ae.pt").exists() and (d / "config.json").exists():
        return load_dictionary_learning(d, device=device)
    raise InterplabError(
        f"{d} holds no known SAE layout: expected config.json + weights.safetensors (interplab), "
        "cfg.json + sae_weights.safetensors (SAELens) or ae.pt + config.json (dictionary_learning)"
    )


def _read_json(path: Path) -> dict:
    """A JSON object from ``path``, or one clear error naming the file."""
    try:
        data = json.loads(path.read_text("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InterplabError(f"{path} is not valid JSON ({exc}); restore the file or re-save "
                             "the SAE") from None
    if not isinstance(data, dict):
        raise InterplabError(f"{path} holds a JSON {type(data).__name__}, not an object; "
                             "restore the file or re-save the SAE")
    return data


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file, refusing a damaged file and non-finite weights."""
    try:
        state = load_file(str(path))
    except Exception as exc:  # truncated/garbled files raise several exception types
        raise InterplabError(f"{path} is not a readable safetensors file ({exc}); restore it "
                             "or re-save the SAE") from None
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise InterplabError(f"{path} holds NaN/inf values in {bad}; this SAE is unusable "
                             "(its training diverged): retrain it")
    return state


def _load_state(sae: SparseAutoencoder, state: dict[str, torch.Tensor], where: Path) -> None:
    expected = {k: tuple(v.shape) for k, v in sae.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if expected != got:
        raise InterplabError(
            f"weights in {where} do not match the config: expected {expected}, found {got}"
        )
    sae.load_state_dict(state)


# -- SAELens ---------------------------------------------------------------------------------

_SAELENS_ARCH = {"relu": "standard", "relu_decnorm": "standard", "topk": "topk",
                 "jumprelu": "jumprelu", "gated": "gated", "batchtopk": "jumprelu"}


def export_saelens(sae: SparseAutoencoder, path: str | os.PathLike) -> Path:
    """Write ``sae`` as a SAELens folder (``cfg.json`` + ``sae_weights.safetensors``).

    BatchTopK exports as ``jumprelu`` with its global threshold broadcast to every feature (the
    inference-time equivalent, as SAELens itself does).
    """
    c = sae.config
    arch = c.architecture
    w = {"W_enc": sae.W_enc, "W_dec": sae.W_dec, "b_dec": sae.b_dec}
    if arch == "gated":
        w.update(b_gate=sae.b_gate, r_mag=sae.r_mag, b_mag=sae.b_mag)
    else:
        w["b_enc"] = sae.b_enc
    if arch == "jumprelu":
        w["threshold"] = sae.threshold
    if arch == "batchtopk":
        if float(sae.threshold) < 0:
            raise InterplabError("this BatchTopK SAE has no learned threshold yet; train it first")
        w["threshold"] = sae.threshold.expand(c.d_sae)
    tensors = {k: v.detach().float().contiguous().cpu() for k, v in w.items()}
    d = Path(path)
    d.mkdir(parents=True, exist_ok=True)
    atomic_write_safetensors(d / "sae_weights.safetensors", tensors)
    layer = _layer_of(c.hook)
    cfg = {
        "architecture": _SAELENS_ARCH[arch],
        "d_in": c.d_in,
        "d_sae": c.d_sae,
        "dtype": "float32",
        "device": "cpu",
        "model_name": c.model,
        "hook_name": c.hook,
        "hook_layer": layer,
        "hook_head_index": None,
        "activation_fn_str": "topk" if arch == "topk" else "relu",
        "activation_fn_kwargs": {"k": c.k} if arch == "topk" else {},
        "apply_b_dec_to_input": True,
        "finetuning_scaling_factor": False,
        "context_size": c.context_length,
        "prepend_bos": True,
        "normalize_activations": "none",
        "dataset_path": "",
        "model_from_pretrained_kwargs": {},
        "metadata": {"model_name": c.model, "hook_name": c.hook, "context_size": c.context_length,
                     "prepend_bos": True, "exported_by": "interplab"},
    }
    if arch == "topk":
        cfg["k"] = c.k
    atomic_write_text(d / "cfg.json", json.dumps(cfg, indent=2))
    return d


def _layer_of(hook: str | None) -> int | None:
    if hook and hook.startswith("blocks."):
        try:
            return int(hook.split(".")[1])
        except ValueError:
            return None
    return None


def load_saelens(
    path: str | os.PathLike, device: str | torch.device = "cpu", d_in: int | None = None
) -> SparseAutoencoder:
    """Load a SAELens folder (``cfg.json`` + ``sae_weights.safetensors``), any SAELens version.

    ``d_in``: if given, the expected input dimension (a mismatch is an error).
    """
    d = Path(path)
    cfg = _read_json(d / "cfg.json")
    meta = cfg.get("metadata") or {}
    w = _read_safetensors(d / "sae_weights.safetensors")
    missing = [k for k in ("W_enc", "W_dec", "b_dec") if k not in w]
    if missing:
        raise InterplabError(f"{d / 'sae_weights.safetensors'} lacks {missing}; is this a "
                             "SAELens SAE folder?")
    arch = cfg.get("architecture", "standard")
    act_fn = cfg.get("activation_fn_str") or cfg.get("activation_fn") or "relu"
    kwargs = cfg.get("activation_fn_kwargs") or {}
    k = cfg.get("k") or kwargs.get("k")
    if arch == "standard" and act_fn == "topk":
        arch = "topk"
    norm = cfg.get("normalize_activations", "none") or "none"
    if norm not in ("none", None):
        raise InterplabError(
            f"SAELens SAE in {d} uses normalize_activations={norm!r}, whose scale is not stored in "
            "the weights; fold the scaling factor into the weights first, or export it with "
            "normalize_activations='none'"
        )
    if cfg.get("finetuning_scaling_factor"):
        raise InterplabError(f"SAELens SAE in {d} uses a finetuning scaling factor (unsupported)")
    ours = {"standard": "relu", "topk": "topk", "jumprelu": "jumprelu", "gated": "gated",
            "batchtopk": "batchtopk"}.get(arch)
    if ours is None:
        raise InterplabError(f"SAELens architecture {arch!r} in {d} is not supported; "
                             "supported: standard, topk, batchtopk, jumprelu, gated")
    W_enc, W_dec, b_dec = w["W_enc"].float(), w["W_dec"].float(), w["b_dec"].float()
    _check_shapes(W_enc, W_dec, b_dec, d, transposed=False)
    n_in, n_sae = W_enc.shape
    if d_in is not None and n_in != d_in:
        raise InterplabError(f"SAE in {d} has d_in={n_in} but the target hook has d={d_in}; "
                             "load the SAE trained for this model/hook")
    config = SAEConfig(
        architecture=ours, d_in=n_in, d_sae=n_sae, k=int(k) if k else None,
        hook=cfg.get("hook_name") or meta.get("hook_name"),
        model=cfg.get("model_name") or meta.get("model_name"),
        context_length=cfg.get("context_size") or meta.get("context_size"),
        extra={"source": "saelens", "saelens_architecture": arch},
    )
    sae = create_sae(config)
    apply_bdec = cfg.get("apply_b_dec_to_input", True)
    with torch.no_grad():
        sae.W_enc.copy_(W_enc)
        sae.W_dec.copy_(W_dec)
        sae.b_dec.copy_(b_dec)
        # Our encoders always see (x − b_dec); without it, z = x W + b = (x − b_dec) W + (b + b_dec W).
        shift = 0.0 if apply_bdec else b_dec @ W_enc
        if ours == "gated":
            sae.b_gate.copy_(w["b_gate"].float() + shift)
            sae.r_mag.copy_(w["r_mag"].float())
            mag_shift = 0.0 if apply_bdec else b_dec @ (W_enc * w["r_mag"].float().exp())
            sae.b_mag.copy_(w["b_mag"].float() + mag_shift)
        else:
            sae.b_enc.copy_(w["b_enc"].float() + shift)
        if ours == "jumprelu":
            sae.log_threshold.copy_(w["threshold"].float().clamp_min(1e-30).log())
        if ours == "batchtopk":
            sae.threshold.copy_(w["threshold"].float().reshape(-1)[0])
    return sae.to(device).eval()


def _check_shapes(W_enc, W_dec, b_dec, where, transposed: bool) -> None:
    n_in, n_sae = W_enc.shape
    if tuple(W_dec.shape) != (n_sae, n_in) or tuple(b_dec.shape) != (n_in,):
        raise InterplabError(
            f"inconsistent SAE weights in {where}: W_enc {tuple(W_enc.shape)}, "
            f"W_dec {tuple(W_dec.shape)}, b_dec {tuple(b_dec.shape)}"
        )


# -- dictionary_learning ---------------------------------------------------------------------

_DL_CLASSES = {
    "AutoEncoder": "relu",
    "AutoEncoderNew": "relu_decnorm",
    "AutoEncoderTopK": "topk",
    "BatchTopKSAE": "batchtopk",
    "GatedAutoEncoder": "gated",
    "JumpReluAutoEncoder": "jumprelu",
}


def load_dictionary_learning(
    path: str | os.PathLike, device: str | torch.device = "cpu", d_in: int | None = None
) -> SparseAutoencoder:
    """Load a dictionary_learning checkpoint folder (``ae.pt`` + ``config.json``).

    ``ae.pt`` is read with ``torch.load(weights_only=True)``: only tensors, never code.
    """
    d = Path(path)
    cfg = _read_json(d / "config.json")
    trainer = cfg.get("trainer", cfg)
    cls_name = trainer.get("dict_class")
    if cls_name not in _DL_CLASSES:
        raise InterplabError(f"dictionary_learning dict_class {cls_name!r} in {d} is not supported; "
                             f"supported: {sorted(_DL_CLASSES)}")
    try:
        with warnings.catch_warnings():  # torch warns before refusing a newer pickle protocol
            warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
            sd = torch.load(d / "ae.pt", map_location="cpu", weights_only=True)
    except Exception as exc:  # pickled objects beyond tensors are refused here
        from interplab.models.loading import pickle_refusal

        refused = pickle_refusal(d / "ae.pt", exc, "convert it where you trust it: re-save the "
                                 "state dict of tensors alone with torch.save(ae.state_dict(), "
                                 "'ae.pt')")
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InterplabError(refused or f"{d / 'ae.pt'} is not a readable PyTorch state dict "
                             f"({first}); restore the file") from None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise InterplabError(f"{d / 'ae.pt'} holds a {type(sd).__name__}, not a state dict of "
                             "tensors; re-save it with torch.save(ae.state_dict(), 'ae.pt')")
    arch = _DL_CLASSES[cls_name]
    g = lambda key: sd[key].float()  # noqa: E731
    shift_from_bdec = False
    if arch in ("relu", "relu_decnorm"):
        W_enc, b_enc = g("encoder.weight").t(), g("encoder.bias")
        W_dec = g("decoder.weight").t()
        b_dec = g("bias") if "bias" in sd else torch.zeros(W_enc.shape[0])
        shift_from_bdec = arch == "relu_decnorm"  # AutoEncoderNew encodes x, not x − b
        if arch == "relu_decnorm" and "decoder.bias" in sd:
            b_dec = g("decoder.bias")
    elif arch in ("topk", "batchtopk"):
        W_enc, b_enc = g("encoder.weight").t(), g("encoder.bias")
        W_dec, b_dec = g("decoder.weight").t(), g("b_dec")
    elif arch == "gated":
        W_enc, W_dec, b_dec = g("encoder.weight").t(), g("decoder.weight").t(), g("decoder_bias")
        b_enc = None
    else:  # jumprelu
        W_enc, b_enc, W_dec, b_dec = g("W_enc"), g("b_enc"), g("W_dec"), g("b_dec")
        shift_from_bdec = not trainer.get("apply_b_dec_to_input", False)
    _check_shapes(W_enc, W_dec, b_dec, d, transposed=True)
    n_in, n_sae = W_enc.shape
    if trainer.get("activation_dim") not in (None, n_in) or trainer.get("dict_size") not in (None, n_sae):
        raise InterplabError(
            f"{d}/config.json says activation_dim={trainer.get('activation_dim')}, dict_size="
            f"{trainer.get('dict_size')} but ae.pt holds [{n_in} → {n_sae}]"
        )
    if d_in is not None and n_in != d_in:
        raise InterplabError(f"SAE in {d} has d_in={n_in} but the target hook has d={d_in}; "
                             "load the SAE trained for this model/hook")
    k = trainer.get("k")
    if k is None and "k" in sd:
        k = int(sd["k"])
    from interplab.models.hooks import HookPoint

    layer = trainer.get("layer")
    config = SAEConfig(
        architecture=arch, d_in=n_in, d_sae=n_sae, k=int(k) if k is not None else None,
        model=trainer.get("lm_name"),
        hook=HookPoint.resid_post(int(layer)).name if layer is not None else None,
        context_length=(cfg.get("buffer") or {}).get("ctx_len"),
        extra={"source": "dictionary_learning", "dict_class": cls_name,
               "submodule_name": trainer.get("submodule_name")},
    )
    sae = create_sae(config)
    with torch.no_grad():
        sae.W_enc.copy_(W_enc)
        sae.W_dec.copy_(W_dec)
        sae.b_dec.copy_(b_dec)
        shift = b_dec @ W_enc if shift_from_bdec else 0.0
        if arch == "gated":
            r_mag = g("r_mag")
            sae.b_gate.copy_(g("gate_bias"))
            sae.r_mag.copy_(r_mag)
            sae.b_mag.copy_(g("mag_bias"))
        else:
            sae.b_enc.copy_(b_enc + shift)
        if arch == "jumprelu":
            sae.log_threshold.copy_(g("threshold").clamp_min(1e-30).log())
        if arch == "batchtopk" and "threshold" in sd:
            sae.threshold.copy_(g("threshold").reshape(-1)[0])
    return sae.to(device).eval()


def check_compatible(sae: SparseAutoencoder, d_model: int, hook: str | None = None,
                     hook_names: list[str] | None = None) -> None:
    """Raise a clear error when ``sae`` cannot act on ``hook`` of a model with width ``d_model``."""
    if hook_names is not None and hook is not None and hook not in hook_names:
        raise InterplabError(f"hook {hook!r} does not exist on this model; choose one of "
                             f"{hook_names[:4]}… ({len(hook_names)} hooks)")
    if sae.d_in != d_model:
        raise InterplabError(
            f"dimension mismatch: the SAE takes d_in={sae.d_in} but hook {hook!r} has "
            f"d={d_model}; use an SAE trained on this model/hook"
        )
    if sae.config.hook and hook and sae.config.hook != hook:
        # Same width, different hook: allowed (e.g. transfer studies) but never silent.
        import warnings

        warnings.warn(f"SAE was trained on {sae.config.hook!r}, applying it at {hook!r}",
                      stacklevel=2)

