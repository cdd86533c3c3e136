"""Save/load round trips: our format, SAELens folders, dictionary_learning checkpoints."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from safetensors.torch import save_file

from interplab.errors import InterplabError
from interplab.sae import (
    SAEConfig,
    create_sae,
    export_saelens,
    load_dictionary_learning,
    load_sae,
    load_saelens,
    save_sae,
)
from interplab.sae.formats import check_compatible

ARCHS = [
    SAEConfig("relu", 12, 40, sparsity_coefficient=0.1, hook="blocks.3.hook_resid_post"),
    SAEConfig("relu_decnorm", 12, 40),
    SAEConfig("gated", 12, 40),
    SAEConfig("topk", 12, 40, k=5),
    SAEConfig("batchtopk", 12, 40, k=5),
    SAEConfig("jumprelu", 12, 40),
]


def _perturbed(cfg: SAEConfig):
    """An SAE with every parameter (and buffer) moved away from its initial value."""
    sae = create_sae(cfg)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
        if cfg.architecture == "batchtopk":
            sae.threshold.fill_(0.2)
        if cfg.architecture == "jumprelu":
            sae.log_threshold.fill_(-2.0)
    return sae.eval()


X = torch.randn(50, 12, generator=torch.Generator().manual_seed(2)) * 2


@pytest.mark.parametrize("cfg", ARCHS, ids=lambda c: c.architecture)
def test_our_format_round_trip(tmp_path, cfg):
    sae = _perturbed(cfg)
    save_sae(sae, tmp_path / "sae")
    files = sorted(p.name for p in (tmp_path / "sae").iterdir())
    assert files == ["config.json", "weights.safetensors"]  # never a pickle
    back = load_sae(tmp_path / "sae")
    assert back.config == sae.config
    with torch.no_grad():
        assert torch.equal(back.encode(X), sae.encode(X))
        assert torch.equal(back(X), sae(X))


@pytest.mark.parametrize("cfg", ARCHS, ids=lambda c: c.architecture)
def test_saelens_export_round_trip(tmp_path, cfg):
    sae = _perturbed(cfg)
    export_saelens(sae, tmp_path / "lens")
    assert (tmp_path / "lens" / "cfg.json").exists()
    back = load_saelens(tmp_path / "lens")
    with torch.no_grad():
        assert torch.allclose(back(X), sae(X), atol=1e-5)
        assert torch.allclose(back.encode(X), sae.encode(X), atol=1e-5)


def _saelens_reference_standard(w, x, apply_b_dec):
    z = (x - w["b_dec"] * apply_b_dec) @ w["W_enc"] + w["b_enc"]
    return torch.relu(z) @ w["W_dec"] + w["b_dec"]


@pytest.mark.parametrize("apply_b_dec", [True, False])
def test_load_saelens_folder_in_documented_layout(tmp_path, apply_b_dec):
    g = torch.Generator().manual_seed(3)
    w = {"W_enc": torch.randn(12, 30, generator=g), "b_enc": torch.randn(30, generator=g),
         "W_dec": torch.randn(30, 12, generator=g), "b_dec": torch.randn(12, generator=g)}
    save_file(w, str(tmp_path / "sae_weights.safetensors"))
    (tmp_path / "cfg.json").write_text(json.dumps({
        "architecture": "standard", "d_in": 12, "d_sae": 30, "dtype": "float32",
        "model_name": "tiny-llama", "hook_name": "blocks.1.hook_resid_post", "hook_layer": 1,
        "activation_fn_str": "relu", "apply_b_dec_to_input": apply_b_dec,
        "normalize_activations": "none", "context_size": 128}))
    sae = load_sae(tmp_path)  # layout detected
    with torch.no_grad():
        assert torch.allclose(sae(X), _saelens_reference_standard(w, X, apply_b_dec), atol=1e-4)
    assert sae.config.hook == "blocks.1.hook_resid_post" and sae.config.context_length == 128


def test_load_saelens_v6_topk_and_jumprelu(tmp_path):
    g = torch.Generator().manual_seed(4)
    base = {"W_enc": torch.randn(12, 30, generator=g), "b_enc": torch.randn(30, generator=g),
            "W_dec": torch.randn(30, 12, generator=g), "b_dec": torch.randn(12, generator=g)}
    (tmp_path / "t").mkdir()
    save_file(base, str(tmp_path / "t" / "sae_weights.safetensors"))
    (tmp_path / "t" / "cfg.json").write_text(json.dumps({
        "architecture": "topk", "d_in": 12, "d_sae": 30, "k": 4,
        "metadata": {"hook_name": "blocks.0.hook_resid_post", "model_name": "m"}}))
    topk = load_saelens(tmp_path / "t")
    z = (X - base["b_dec"]) @ base["W_enc"] + base["b_enc"]
    v, i = torch.relu(z).topk(4, dim=-1)
    ref = torch.zeros_like(z).scatter(-1, i, v) @ base["W_dec"] + base["b_dec"]
    with torch.no_grad():
        assert torch.allclose(topk(X), ref, atol=1e-4)
    assert topk.config.hook == "blocks.0.hook_resid_post"
    (tmp_path / "j").mkdir()
    thr = torch.rand(30, generator=g) + 0.5
    save_file({**base, "threshold": thr}, str(tmp_path / "j" / "sae_weights.safetensors"))
    (tmp_path / "j" / "cfg.json").write_text(json.dumps(
        {"architecture": "jumprelu", "d_in": 12, "d_sae": 30}))
    jr = load_saelens(tmp_path / "j")
    ref = (z * (z > thr)) @ base["W_dec"] + base["b_dec"]
    with torch.no_grad():
        assert torch.allclose(jr(X), ref, atol=1e-4)


def test_saelens_unsupported_normalisation_is_a_clear_error(tmp_path):
    sae = _perturbed(ARCHS[0])
    export_saelens(sae, tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    cfg["normalize_activations"] = "expected_average_only_in"
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(InterplabError, match="normalize_activations"):
        load_saelens(tmp_path)


def _write_dl(tmp_path, dict_class, sd, **trainer):
    tmp_path.mkdir(exist_ok=True)
    torch.save(sd, tmp_path / "ae.pt")
    (tmp_path / "config.json").write_text(json.dumps({
        "trainer": {"dict_class": dict_class, "lm_name": "tiny-gpt2", "layer": 2, **trainer},
        "buffer": {"ctx_len": 64}}))


def test_load_dictionary_learning_standard_and_topk(tmp_path):
    g = torch.Generator().manual_seed(5)
    enc, dec = torch.nn.Linear(12, 30), torch.nn.Linear(30, 12, bias=False)
    bias = torch.randn(12, generator=g)
    sd = {"encoder.weight": enc.weight.data, "encoder.bias": enc.bias.data,
          "decoder.weight": dec.weight.data, "bias": bias}
    _write_dl(tmp_path / "std", "AutoEncoder", sd, activation_dim=12, dict_size=30)
    sae = load_sae(tmp_path / "std")
    with torch.no_grad():
        ref = dec(torch.relu(enc(X - bias))) + bias  # dictionary_learning's AutoEncoder
        assert torch.allclose(sae(X), ref, atol=1e-5)
    assert sae.config.model == "tiny-gpt2" and sae.config.hook == "blocks.2.hook_resid_post"

    b_dec = torch.randn(12, generator=g)
    sd = {"encoder.weight": enc.weight.data, "encoder.bias": enc.bias.data,
          "decoder.weight": dec.weight.data, "b_dec": b_dec, "k": torch.tensor(3),
          "threshold": torch.tensor(-1.0)}
    _write_dl(tmp_path / "topk", "AutoEncoderTopK", sd, activation_dim=12, dict_size=30, k=3)
    sae = load_dictionary_learning(tmp_path / "topk")
    assert sae.config.k == 3
    with torch.no_grad():
        pre = torch.relu(enc(X - b_dec))
        v, i = pre.topk(3, dim=-1)
        ref = dec(torch.zeros_like(pre).scatter(-1, i, v)) + b_dec
        assert torch.allclose(sae(X), ref, atol=1e-5)


class _Payload:
    """Unpickling this writes a file: the proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _one_line_refusal(exc_info, path) -> str:
    msg = str(exc_info.value)
    assert len(msg.splitlines()) == 1 and "weights_only" not in msg
    assert msg.startswith(f"refused: {path} needs pickle") and "can run code" in msg
    assert "load it yourself if you trust it" in msg
    return msg


def test_dictionary_learning_rejects_pickled_objects(tmp_path):
    _write_dl(tmp_path, "AutoEncoder", {"encoder.weight": torch.zeros(3, 2),
                                        "evil": torch.nn.Linear(2, 2)})
    with pytest.raises(InterplabError) as e:
        load_dictionary_learning(tmp_path)
    assert "torch.nn.modules.linear.Linear" in _one_line_refusal(e, tmp_path / "ae.pt")
    marker = tmp_path / "code-ran"
    for protocol in (2, 4):  # protocol 4 frames fail differently inside torch's reader
        (tmp_path / "ae.pt").write_bytes(pickle.dumps({"w": _Payload(marker)}, protocol=protocol))
        with pytest.raises(InterplabError) as e:
            load_sae(tmp_path)
        _one_line_refusal(e, tmp_path / "ae.pt")
        assert not marker.exists()
    (tmp_path / "ae.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(InterplabError, match=r"ae.pt is not a PyTorch checkpoint \(neither"):
        load_sae(tmp_path)


def test_dimension_mismatch_is_a_clear_error(tmp_path):
    sae = _perturbed(ARCHS[0])
    export_saelens(sae, tmp_path / "lens")
    with pytest.raises(InterplabError, match="d_in=12 but the target hook has d=576"):
        load_saelens(tmp_path / "lens", d_in=576)
    with pytest.raises(InterplabError, match="dimension mismatch"):
        check_compatible(sae, d_model=64, hook="blocks.3.hook_resid_post")
    with pytest.raises(InterplabError, match="does not exist"):
        check_compatible(sae, 12, "blocks.99.hook_resid_post", ["blocks.0.hook_resid_post"])
    check_compatible(sae, 12, "blocks.3.hook_resid_post")  # control: the right one passes
    with pytest.raises(InterplabError, match="no known SAE layout"):
        load_sae(tmp_path)


# -- damaged files: one clear error each ---------------------------------------------------------

def _damage_config(d):
    (d / "config.json").write_text("{not json")


def _drop_d_in(d):
    cfg = json.loads((d / "config.json").read_text())
    del cfg["d_in"]
    (d / "config.json").write_text(json.dumps(cfg))


def _truncate_weights(d):
    w = d / "weights.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])


def _nan_weights(d):
    from safetensors.torch import load_file

    state = load_file(str(d / "weights.safetensors"))
    state["W_dec"][0, 0] = float("nan")
    save_file(state, str(d / "weights.safetensors"))


@pytest.mark.parametrize("damage, message", [
    (_damage_config, "config.json is not valid JSON"),
    (_drop_d_in, r"lacks \['d_in'\]"),
    (_truncate_weights, "is not a readable safetensors file"),
    (_nan_weights, r"NaN/inf values in \['W_dec'\]"),
])
def test_damaged_interplab_folder_is_a_clear_error(tmp_path, damage, message):
    save_sae(_perturbed(ARCHS[3]), tmp_path)
    load_sae(tmp_path)  # control: the undamaged folder loads
    damage(tmp_path)
    with pytest.raises(InterplabError, match=message):
        load_sae(tmp_path)


def test_damaged_saelens_and_dictionary_learning_configs_are_clear_errors(tmp_path):
    export_saelens(_perturbed(ARCHS[0]), tmp_path / "sl")
    (tmp_path / "sl" / "cfg.json").write_text("[1, 2")
    with pytest.raises(InterplabError, match="cfg.json is not valid JSON"):
        load_saelens(tmp_path / "sl")
    export_saelens(_perturbed(ARCHS[0]), tmp_path / "sl2")
    save_file({"W_enc": torch.zeros(12, 40)}, str(tmp_path / "sl2" / "sae_weights.safetensors"))
    with pytest.raises(InterplabError, match=r"lacks \['W_dec', 'b_dec'\]"):
        load_saelens(tmp_path / "sl2")
    _write_dl(tmp_path / "dl", "AutoEncoder", {})
    (tmp_path / "dl" / "config.json").write_text("[]")
    with pytest.raises(InterplabError, match="not an object"):
        load_dictionary_learning(tmp_path / "dl")


def test_config_json_of_older_versions_still_loads(tmp_path):
    """``normalisation_folded`` (always true: saved weights take raw activations) is no longer
    written, and a config.json that still has it loads as before."""
    sae = _perturbed(ARCHS[3])
    save_sae(sae, tmp_path / "sae")
    path = tmp_path / "sae" / "config.json"
    raw = json.loads(path.read_text())
    assert "normalisation_folded" not in raw
    path.write_text(json.dumps({**raw, "normalisation_folded": True}))
    back = load_sae(tmp_path / "sae")
    assert back.config == sae.config
    with torch.no_grad():
        assert torch.equal(back(X), sae(X))
    path.write_text(json.dumps({**raw, "normalisation_fold": True}))  # a real typo still fails
    with pytest.raises(InterplabError, match="unknown fields"):
        load_sae(tmp_path / "sae")
