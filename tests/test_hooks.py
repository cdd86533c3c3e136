"""Hook points: parsed once into ``HookPoint``, validated by one function."""

import dataclasses
import json

import pytest
import torch

from interplab.activations import harvest, harvest_to_store
from interplab.activations.store import identity_differences
from interplab.errors import InterplabError
from interplab.models import (
    KINDS,
    HookNameError,
    HookPoint,
    LanguageModel,
    edit_hooks,
    resolve_hooks,
)
from tests.conftest import TEXTS


# ------------------------------------------------------------------------------- parsing
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("layer", [0, 7, 31])
def test_parse_round_trips_and_matches_the_constructor(layer, kind):
    name = f"blocks.{layer}.hook_{kind}"
    hp = HookPoint.parse(name)
    assert (hp.layer, hp.kind) == (layer, kind)
    assert hp.name == str(hp) == name
    assert HookPoint.parse(hp.name) == hp and HookPoint.parse(hp) is hp
    assert getattr(HookPoint, kind)(layer) == hp
    assert hash(hp) == hash(HookPoint(layer, kind))


def test_parse_ignores_surrounding_spaces():
    assert HookPoint.parse("  blocks.3.hook_mlp_out\n") == HookPoint.mlp_out(3)


def test_hook_point_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        HookPoint.resid_post(1).layer = 2


def test_order_is_layer_then_forward_order_within_a_block():
    shuffled = [HookPoint.resid_pre(10), HookPoint.resid_post(0), HookPoint.mlp_out(2),
                HookPoint.attn_out(0), HookPoint.resid_pre(0), HookPoint.mlp_out(0)]
    assert sorted(shuffled) == [
        HookPoint.resid_pre(0), HookPoint.attn_out(0), HookPoint.mlp_out(0),
        HookPoint.resid_post(0), HookPoint.mlp_out(2), HookPoint.resid_pre(10),  # 10 after 2
    ]
    assert HookPoint.resid_post(1) > HookPoint.attn_out(1) >= HookPoint.attn_out(1)
    with pytest.raises(TypeError):
        _ = HookPoint.resid_post(1) < "blocks.2.hook_resid_post"


# ------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("bad", ["blocks.0.resid", "blocks.x.hook_resid_post",
                                 "layers.0.hook_resid_post", "blocks.0.hook_resid_mid",
                                 "blocks.-1.hook_resid_post", "blocks.0.hook_resid_post.x", ""])
def test_malformed_name_names_the_accepted_forms(bad):
    with pytest.raises(HookNameError) as e:
        HookPoint.parse(bad)
    msg = str(e.value)
    assert repr(bad) in msg and "blocks.<layer>.hook_<kind>" in msg
    assert all(k in msg for k in KINDS)
    assert isinstance(e.value, InterplabError)  # the CLI prints it as a one-line error


@pytest.mark.parametrize("bad", [3, None, ["blocks.0.hook_resid_post"]])
def test_non_string_names_the_type(bad):
    with pytest.raises(HookNameError, match=type(bad).__name__):
        HookPoint.parse(bad)


@pytest.mark.parametrize("layer, kind, match", [(-1, "resid_post", "non-negative integer"),
                                                (True, "resid_post", "non-negative integer"),
                                                ("1", "resid_post", "non-negative integer"),
                                                (1, "hook_resid_post", "unknown hook kind"),
                                                (1, "resid", "unknown hook kind")])
def test_constructor_rejects_bad_fields(layer, kind, match):
    with pytest.raises(HookNameError, match=match):
        HookPoint(layer, kind)


def test_layer_out_of_range_for_this_model(tiny_models):
    lm = tiny_models["tiny-llama"]  # 4 blocks
    with pytest.raises(HookNameError, match="out of range") as e:
        lm.parse_hook(HookPoint.resid_post(4))
    assert "layers run from 0 to 3" in str(e.value) and lm.name in str(e.value)


def test_no_hooks_at_all():
    with pytest.raises(HookNameError, match="no hooks given"):
        resolve_hooks([], 4)


# ------------------------------------------------------------------------------- one validation
def test_resolve_parses_checks_deduplicates_and_sorts():
    got = resolve_hooks(["blocks.1.hook_resid_post", HookPoint.resid_pre(1),
                         " blocks.1.hook_resid_post", "blocks.0.hook_mlp_out"], 4)
    assert got == [HookPoint.mlp_out(0), HookPoint.resid_pre(1), HookPoint.resid_post(1)]
    assert resolve_hooks("blocks.2.hook_attn_out", 4) == [HookPoint.attn_out(2)]
    assert resolve_hooks(HookPoint.attn_out(2), 4) == [HookPoint.attn_out(2)]


def test_harvest_and_store_share_the_one_validation(tiny_models, tmp_path, monkeypatch):
    lm = tiny_models["tiny-gpt2"]
    calls = []
    original = LanguageModel.resolve_hooks

    def counting(self, hooks):
        calls.append(hooks)
        return original(self, hooks)

    monkeypatch.setattr(LanguageModel, "resolve_hooks", counting)
    bad = ["blocks.0.hook_resid_post", "blocks.9.hook_mlp_out"]
    with pytest.raises(HookNameError) as in_memory:
        harvest(lm, TEXTS[:2], bad, progress=False)
    with pytest.raises(HookNameError) as to_store:
        harvest_to_store(lm, TEXTS[:2], bad, tmp_path / "s", progress=False)
    assert str(in_memory.value) == str(to_store.value)
    assert not (tmp_path / "s").exists()  # refused before the folder is created
    assert len(calls) == 2


def test_harvest_paths_return_hooks_deduplicated_in_forward_order(tiny_models, tmp_path):
    lm = tiny_models["tiny-gpt2"]
    asked = ["blocks.2.hook_resid_post", HookPoint.mlp_out(1), "blocks.2.hook_resid_post",
             HookPoint.resid_pre(1)]
    want = ["blocks.1.hook_resid_pre", "blocks.1.hook_mlp_out", "blocks.2.hook_resid_post"]
    mem = harvest(lm, TEXTS[:3], asked, "all", batch_size=2, progress=False)
    by_name = harvest(lm, TEXTS[:3], want, "all", batch_size=2, progress=False)
    assert mem.hooks == want
    for h in want:
        assert torch.equal(mem[h], by_name[h]) and torch.equal(mem[HookPoint.parse(h)], mem[h])
    st = harvest_to_store(lm, TEXTS[:3], asked, tmp_path / "s", "all", batch_size=2,
                          progress=False)
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["hooks"] == want and st.hooks == want  # still plain names on disk
    for h in want:
        assert torch.equal(st.load(h), mem[h])


def test_store_written_with_hooks_in_another_order_still_resumes():
    old = {"hooks": ["blocks.2.hook_resid_post", "blocks.1.hook_mlp_out"]}
    new = {"hooks": ["blocks.1.hook_mlp_out", "blocks.2.hook_resid_post"]}
    assert identity_differences(old, new) == []
    assert identity_differences(old, {"hooks": ["blocks.1.hook_mlp_out"]})


def test_edit_hooks_take_hook_points(tiny_models):
    lm = tiny_models["tiny-llama"]
    ids = torch.tensor([lm.tokenize([TEXTS[1]])[0]])
    with torch.inference_mode():
        with edit_hooks(lm, {"blocks.1.hook_mlp_out": torch.zeros_like}):
            by_name = lm.hf(input_ids=ids).logits
        with edit_hooks(lm, {HookPoint.mlp_out(1): torch.zeros_like}):
            by_point = lm.hf(input_ids=ids).logits
        with pytest.raises(HookNameError), edit_hooks(lm, {HookPoint.mlp_out(9): torch.zeros_like}):
            pass
    assert torch.equal(by_name, by_point)


def test_naming_hook_points_does_not_import_transformers():
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys; from interplab.compmech.transformer import GPTConfig; "
            "names = GPTConfig(vocab_size=3, n_layers=2).hook_names; "
            "assert names == ['blocks.0.hook_resid_pre', 'blocks.0.hook_resid_post', "
            "'blocks.1.hook_resid_post'], names; "
            "assert 'transformers' not in sys.modules; "
            # SAE training (and its subprocess tests) starts without transformers' import time
            "from interplab.sae import SAETrainer; import interplab.activations; "
            "assert 'transformers' not in sys.modules; "
            "from interplab.models import load; assert 'transformers' in sys.modules")
    src = str(Path(__file__).resolve().parents[1] / "src")
    subprocess.run([sys.executable, "-c", code], check=True,
                   env={**os.environ, "PYTHONPATH": src})


def test_per_head_hook_names():
    from interplab.models import HookPoint

    hp = HookPoint.parse("blocks.2.attn.hook_z")
    assert hp == HookPoint.z(2) and hp.per_head and hp.name == "blocks.2.attn.hook_z"
    assert HookPoint.resid_pre(2) < hp < HookPoint.attn_out(2)  # the order they fire in
    for bad in ("blocks.2.hook_z", "blocks.2.attn.hook_resid_post"):
        with pytest.raises(HookNameError, match="attn.hook_z"):
            HookPoint.parse(bad)
