"""``random_init_copy``: the architecture with freshly initialised weights, as a control."""

import copy

import pytest
import torch

from interplab.activations import harvest
from interplab.errors import InterplabError
from interplab.models import LanguageModel, load, random_init_copy, reset_copy
from tests.conftest import TEXTS

ARCHS = ["tiny-llama", "tiny-qwen2", "tiny-gpt2", "tiny-neox"]


def _params(lm):
    return {k: v.detach() for k, v in lm.hf.named_parameters()}


def _same_weights(a, b):
    pa, pb = _params(a), _params(b)
    return pa.keys() == pb.keys() and all(torch.equal(pa[k], pb[k]) for k in pa)


@pytest.mark.parametrize("arch", ARCHS)
def test_deterministic_per_seed_and_differs_from_original_and_reset(tiny_models, arch):
    lm = tiny_models[arch]  # built with seed 0
    before = {k: v.clone() for k, v in _params(lm).items()}
    rng = torch.get_rng_state()
    a, b, c = random_init_copy(lm, seed=1), random_init_copy(lm, seed=1), random_init_copy(lm, seed=2)
    assert torch.equal(torch.get_rng_state(), rng)  # the global generator is left as it was
    assert _same_weights(a, b) and not _same_weights(a, c)
    assert all(torch.equal(p, before[k]) for k, p in _params(lm).items())  # original untouched
    reset = reset_copy(lm, seed=1)
    for name, p in _params(a).items():
        if p.numel() > 1 and before[name].unique().numel() > 1:  # norm weights start at 1 anyway
            assert not torch.equal(p, before[name]), name
            assert not torch.equal(p, _params(reset)[name]), name
    assert a.identity()["variant"] == "random-init-seed1"
    assert {**a.identity(), "variant": "original"} == lm.identity()  # same architecture and config
    assert a.tokenizer is lm.tokenizer and a.hf.training is False


@pytest.mark.parametrize("arch", ARCHS)
def test_it_is_the_models_own_initialiser(arch):
    # Tiny models are the architecture's initialiser under their seed: the same seed rebuilds them.
    lm = load(arch, seed=5)
    assert _same_weights(random_init_copy(lm, seed=5), lm)


def test_weight_statistics_follow_the_config_not_the_weights(tiny_models):
    lm = tiny_models["tiny-llama"]
    hf = copy.deepcopy(lm.hf)
    with torch.no_grad():  # a "trained" model: weights far from the init, another init range
        for p in hf.parameters():
            p.mul_(3.0).add_(0.5)
    hf.config.initializer_range = 0.03
    trained = LanguageModel(hf=hf, tokenizer=lm.tokenizer, name=lm.name)
    fresh = random_init_copy(trained, seed=0)
    for name, p in _params(fresh).items():
        if p.ndim == 2:  # linear and embedding weights ~ N(0, initializer_range²)
            assert abs(float(p.std()) / 0.03 - 1) < 0.1, name
            assert abs(float(p.mean())) < 0.01, name
            assert abs(float(_params(trained)[name].std()) / 0.03 - 1) > 1  # the control differs
        else:  # RMSNorm weights start at one
            assert torch.equal(p, torch.ones_like(p)), name


@pytest.mark.parametrize("arch", ARCHS)
def test_every_hook_point_works_on_the_copy(tiny_models, arch):
    lm = tiny_models[arch]
    fresh = random_init_copy(lm, seed=1)
    assert fresh.hook_points == lm.hook_points
    acts = harvest(fresh, TEXTS[:2], fresh.hook_points, "all", progress=False)
    orig = harvest(lm, TEXTS[:2], lm.hook_points, "all", progress=False)
    for i in range(lm.n_layers):
        total = (acts[f"blocks.{i}.hook_resid_pre"] + acts[f"blocks.{i}.hook_attn_out"]
                 + acts[f"blocks.{i}.hook_mlp_out"])
        assert torch.allclose(total, acts[f"blocks.{i}.hook_resid_post"], atol=1e-5)
    last = f"blocks.{lm.n_layers - 1}.hook_resid_post"
    assert acts[last].shape == orig[last].shape
    assert (acts[last] - orig[last]).norm() > 0.1 * orig[last].norm()


def test_seed_must_be_an_integer(tiny_models):
    with pytest.raises(InterplabError, match="seed must be an integer"):
        random_init_copy(tiny_models["tiny-gpt2"], seed=1.5)
