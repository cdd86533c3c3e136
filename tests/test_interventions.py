"""Interventions on tiny models with planted ground truth: each method where it must work and a
control where it must fail."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from interplab.errors import InterplabError
from interplab.interventions import (
    HookNeverFiredError,
    InterventionNoOpError,
    InterventionResult,
    LogitDiff,
    Prompts,
    ablate,
    attribute,
    patch,
    steer,
)
from interplab.models import load

A, B = 10, 20  # the two answer tokens of the planted metric
LAST = "blocks.3.hook_resid_post"
DOSES = [-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0]


def _linear_lm(act: str | None = None):
    """tiny-llama without its final norm: logits are linear in the last residual stream."""
    lm = load("tiny-llama", seed=0)
    lm.hf.model.norm = torch.nn.Identity()
    if act == "relu":
        for block in lm.blocks:
            block.mlp.act_fn = torch.nn.ReLU()
    return lm


def _pairs(n: int = 6, length: int = 10, corrupt_at: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    ids = [[1] + rng.integers(5, 300, length - 1).tolist() for _ in range(n)]
    bad = [list(t) for t in ids]
    for t in bad:
        t[corrupt_at] = 7 if t[corrupt_at] != 7 else 8
    return Prompts(ids, [], True), Prompts(bad, [], True)


def _prompts(n: int = 12, seed: int = 1) -> Prompts:
    rng = np.random.default_rng(seed)  # lengths 6..12: padding is exercised
    return Prompts([[1] + rng.integers(5, 300, int(rng.integers(5, 12))).tolist()
                    for _ in range(n)], [], True)


@pytest.fixture(scope="module")
def linear_lm():
    return _linear_lm()


@pytest.fixture(scope="module")
def planted(linear_lm):
    W = linear_lm.unembed.detach()
    return (W[A] - W[B]).double().numpy()


def test_planted_direction_steers_with_its_slope_and_the_null_does_not(linear_lm, planted):
    r = steer(linear_lm, _prompts(), planted, DOSES, LogitDiff(A, B), hooks=[LAST], n_null=20,
              batch_size=64)
    # logit difference = (W_A − W_B)·h, so adding s·(W_A − W_B) moves it by s‖W_A − W_B‖².
    expected = float(planted @ planted)
    assert r.summary["slope"] == pytest.approx(expected, rel=1e-3)
    assert r.summary["slope_lo"] > 0 and r.summary["wrong_way"] == 0.0
    assert np.allclose(r.summary["mean"], np.asarray(DOSES) * expected, rtol=1e-3, atol=1e-4)
    assert r.null["k"] == 20 and r.null["at_floor"] and r.null["p"] == 1 / 21
    # Control: random directions of the same norm move the metric far less, either way.
    assert abs(r.null["mean"]) < 0.2 * r.null["effect"]
    assert min(r.null["values"]) < 0 < max(r.null["values"])
    assert r.proof[LAST]["fires"] > 0 and r.proof[LAST]["n_edited"] == 12 * (6 + 20)
    assert r.side_effects["kl_mean"][DOSES.index(0.0)] == 0.0
    assert r.side_effects["kl_mean"][-1] > r.side_effects["kl_mean"][-2] > 0
    back = InterventionResult.from_dict(json.loads(json.dumps(r.to_dict())))
    assert back.effects == r.effects


def test_signs_flip_the_push_and_the_effect(linear_lm, planted):
    signs = [1.0, -1.0] * 6
    r = steer(linear_lm, _prompts(), planted, [0.0, 1.0], LogitDiff(A, B), hooks=[LAST],
              signs=signs, n_null=0)
    assert r.summary["slope"] == pytest.approx(float(planted @ planted), rel=1e-3)
    assert r.null is None


def test_left_and_right_padding_and_a_cached_prefix_agree():
    lm = load("tiny-llama", seed=0)
    rng = np.random.default_rng(3)
    direction = rng.standard_normal(lm.d_model)
    texts = ["The cat sat.", "A much longer sentence about the weather today.", "Dogs bark",
             "Seven is larger than three, they say."]
    kw = {"hooks": ["blocks.1.hook_resid_post"], "positions": "index:-2", "n_null": 2}
    right = steer(lm, texts, direction, [0.0, 1.0], LogitDiff(A, B), **kw)
    left = steer(lm, texts, direction, [0.0, 1.0], LogitDiff(A, B), padding_side="left", **kw)
    assert np.allclose(right.effects, left.effects, atol=1e-4)
    prefix = "Once upon a time there was a test. "
    cached = steer(lm, texts, direction, [0.0, 1.0], LogitDiff(A, B), prefix=prefix, **kw)
    joined = Prompts([lm.tokenize([prefix])[0] + lm.tokenizer(t, add_special_tokens=False)
                      ["input_ids"] for t in texts], [], True)
    full = steer(lm, joined, direction, [0.0, 1.0], LogitDiff(A, B), **kw)
    assert np.allclose(cached.effects, full.effects, atol=1e-4)
    assert np.allclose(cached.baseline, full.baseline, atol=1e-4)


def test_patching_a_position_the_read_token_cannot_see_gives_zero():
    lm = load("tiny-llama", seed=0)
    clean, corrupted = _pairs(corrupt_at=6)
    # Read at token 4; tokens 6+ differ but the causal mask hides them from token 4.
    r = patch(lm, clean, corrupted, ["blocks.0.hook_resid_post", "blocks.2.hook_mlp_out"],
              LogitDiff(A, B), positions=[6, 7, 8], read="index:4", n_null=0)
    assert np.abs(np.asarray(r.effects)).max() <= 1e-6
    assert all(p["n_edited"] > 0 and p["mean_delta_norm"] > 0 for p in r.proof.values())
    # Control: read at the last token, which sees them, and the same patches matter.
    r = patch(lm, clean, corrupted, ["blocks.0.hook_resid_post"], LogitDiff(A, B),
              positions=[6], n_null=0)
    assert np.abs(np.asarray(r.effects)).max() > 1e-3


def test_whole_residual_patch_at_the_last_layer_reproduces_the_corrupted_output():
    lm = load("tiny-llama", seed=0)
    clean, corrupted = _pairs()
    r = patch(lm, clean, corrupted, [LAST], LogitDiff(A, B), mode="whole", direction="noise",
              n_null=3, null_nodes=1)
    gap = np.asarray(r.info["donor_metric"]) - np.asarray(r.info["receiver_metric"])
    assert np.abs(gap).max() > 1e-3
    assert np.allclose(np.asarray(r.effects)[:, 0], gap, atol=1e-5)
    assert r.info["fraction_restored"][0] == pytest.approx(1.0, abs=1e-5)
    # A single earlier position does not: its patch only partly reproduces the output.
    r2 = patch(lm, clean, corrupted, ["blocks.0.hook_resid_post"], LogitDiff(A, B),
               positions=[3], direction="noise", n_null=0)
    assert not np.allclose(np.asarray(r2.effects)[:, 0], gap, atol=1e-3)


def test_per_position_sweep_batched_equals_one_run_per_patch():
    lm = load("tiny-gpt2", seed=0)
    clean, corrupted = _pairs(n=3, corrupt_at=2)
    hooks = ["blocks.1.hook_attn_out", "blocks.2.hook_resid_pre"]
    batched = patch(lm, clean, corrupted, hooks, LogitDiff(A, B), positions=[2, 5, -1],
                    n_null=0, batch_size=64)
    single = patch(lm, clean, corrupted, hooks, LogitDiff(A, B), positions=[2, 5, -1],
                   n_null=0, batch_size=1)
    assert np.allclose(batched.effects, single.effects, atol=1e-5)


def test_attribution_patching_is_exact_on_a_model_linear_in_the_patched_activation(linear_lm):
    clean, corrupted = _pairs()
    hooks = [LAST, "blocks.3.hook_mlp_out"]
    r = attribute(linear_lm, clean, corrupted, hooks, LogitDiff(A, B), n_exact=20, ig_steps=2)
    assert r.agreement["all"]["atp"]["max_abs_error"] < 1e-4
    exact = np.asarray(r.exact).mean(axis=0)
    assert np.abs(exact).max() > 1e-2  # some node matters (the last token's)
    # Control: upstream of a nonlinear block AtP is only an approximation.
    r = attribute(load("tiny-llama", seed=0), clean, corrupted, ["blocks.1.hook_resid_post"],
                  LogitDiff(A, B), positions=[-1, 3], methods=["atp"], n_exact=4)
    assert r.agreement["all"]["atp"]["max_abs_error"] > 1e-3


def test_integrated_gradients_converge_to_exact_patching_on_a_relu_model():
    lm = _linear_lm(act="relu")
    clean, corrupted = _pairs()
    errors, atp_error = [], None
    for k in (1, 8, 64):
        r = attribute(lm, clean, corrupted, ["blocks.1.hook_resid_post"], LogitDiff(A, B),
                      positions=[-1], ig_steps=k, n_exact=1)
        exact = np.asarray(r.exact)[:, 0]
        errors.append(np.abs(np.asarray(r.estimates["ig"])[:, 0] - exact).max())
        atp_error = np.abs(np.asarray(r.estimates["atp"])[:, 0] - exact).max()
    scale = np.abs(exact).max()
    assert scale > 0.1
    # Midpoint sums converge as O(1/k) across ReLU kinks: each 8x more steps cuts the error.
    assert errors[0] > 2 * errors[1] > 4 * errors[2] and errors[2] < 0.01 * scale
    assert atp_error > 10 * errors[2]


def test_a_hook_that_never_fires_raises():
    lm = load("tiny-llama", seed=0)
    # Hooks attach to lm.blocks; copies the model never runs are the classic silent no-op.
    lm.blocks = torch.nn.ModuleList(copy.deepcopy(b) for b in lm.blocks)
    with pytest.raises(HookNeverFiredError, match="never fired"):
        steer(lm, _prompts(4), np.ones(lm.d_model), [0.0, 1.0], LogitDiff(A, B),
              hooks=["blocks.2.hook_resid_post"], n_null=0)
    clean, bad = _pairs(n=2)
    with pytest.raises(HookNeverFiredError, match="never fired"):
        patch(lm, clean, bad, ["blocks.2.hook_resid_post"], LogitDiff(A, B), positions=[3, 4],
              n_null=0)


def test_a_patch_that_changes_nothing_raises():
    lm = load("tiny-llama", seed=0)
    clean, _ = _pairs(n=2)
    with pytest.raises(InterventionNoOpError, match="changed no activation"):
        patch(lm, clean, clean, ["blocks.1.hook_resid_post"], LogitDiff(A, B), n_null=0)
    with pytest.raises(InterplabError, match="all zeros"):
        steer(lm, clean, np.zeros(lm.d_model), [1.0], LogitDiff(A, B), hooks=[LAST])


def test_ablations_with_a_named_reference_set(linear_lm, planted):
    prompts = _prompts(8)
    r = ablate(linear_lm, prompts, [LAST], LogitDiff(A, B), method="directional",
               direction={LAST: planted}, n_null=20)
    # Removing the planted direction zeroes the logit difference (it is linear in it).
    assert np.allclose(np.asarray(r.effects)[:, 0], -np.asarray(r.baseline), atol=1e-4)
    assert r.null["k"] == 20 and r.null["at_floor"]
    with pytest.raises(InterplabError, match="reference set"):
        ablate(linear_lm, prompts, [LAST], LogitDiff(A, B), method="mean")
    ref = ["Some reference text here.", "Another one, a little longer than that."]
    for method in ("zero", "mean", "median", "resample"):
        r = ablate(linear_lm, prompts, ["blocks.1.hook_mlp_out"], LogitDiff(A, B), method=method,
                   reference=ref, n_null=2, neutral_texts=ref)
        assert r.info["reference"] == ("none" if method == "zero" else "2 reference texts")
        assert r.proof["blocks.1.hook_mlp_out"]["n_edited"] == 8 * 3
        assert r.side_effects["delta_ce"][0] != 0.0
    mean_ref = ablate(linear_lm, ["Bees dance.", "Gold is soft."], ["blocks.1.hook_mlp_out"],
                      LogitDiff(A, B), method="mean", reference="evaluated", n_null=0)
    assert mean_ref.info["reference"] == "the evaluated prompts (asked for)"


def test_null_dose_must_be_a_dose_and_defaults_to_the_largest(linear_lm, planted):
    with pytest.raises(InterplabError, match="null_dose"):
        steer(linear_lm, _prompts(2), planted, [0.0, 1.0], LogitDiff(A, B), hooks=[LAST],
              null_dose=3.0)
    r = steer(linear_lm, _prompts(2), planted, [-3.0, 0.0, 1.0], LogitDiff(A, B), hooks=[LAST],
              n_null=20)
    assert r.null["dose"] == -3.0


@pytest.mark.embedded
def test_embedded_model_unembedding_direction_steers_and_last_layer_patch_reproduces(smollm):
    from interplab.interventions import single_token

    lm = smollm
    t, f = single_token(lm, " True"), single_token(lm, " False")
    W = lm.unembed.detach().float()
    last = f"blocks.{lm.n_layers - 1}.hook_resid_post"
    prompts = ["The city of Paris is in France. This statement is:",
               "The city of Lima is in Peru. This statement is:",
               "The city of Oslo is in Chile. This statement is:",
               "The city of Kyoto is in Spain. This statement is:"]
    d = (W[t] - W[f]).numpy()
    r = steer(lm, prompts, d, [-1.0, 0.0, 1.0], LogitDiff(t, f), hooks=[last], n_null=20)
    assert r.summary["slope_lo"] > 0 and r.summary["wrong_way"] == 0.0
    assert r.null["at_floor"]
    clean, bad = prompts[:2], ["The city of Paris is in Peru. This statement is:",
                               "The city of Lima is in France. This statement is:"]
    p = patch(lm, clean, bad, [last], LogitDiff(t, f), mode="whole", direction="noise", n_null=0)
    gap = np.asarray(p.info["donor_metric"]) - np.asarray(p.info["receiver_metric"])
    assert np.allclose(np.asarray(p.effects)[:, 0], gap, atol=1e-3)


PREFIX = "Once upon a time there was a test. "


def _joined_with_prefix(lm):
    """``texts`` → Prompts of PREFIX's tokens followed by each text's, as one prompt each (the
    reference a run through the cached prefix must equal)."""
    pre = lm.tokenize([PREFIX])[0]
    return lambda texts: Prompts(
        [pre + lm.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts], [], True)


def test_attribution_through_a_cached_prefix_equals_the_joined_prompt(linear_lm):
    clean, bad = ["The cat sat on the mat."], ["The cat sat on the hat."]
    prefix, joined = PREFIX, _joined_with_prefix(linear_lm)

    hooks = ["blocks.2.hook_resid_post"]
    cached = attribute(linear_lm, clean, bad, hooks, LogitDiff(A, B), positions=[-3, -2, -1],
                       prefix=prefix, ig_steps=2, n_exact=3)
    full = attribute(linear_lm, joined(clean), joined(bad), hooks, LogitDiff(A, B),
                     positions=[-3, -2, -1], ig_steps=2, n_exact=3)
    for m in ("atp", "ig"):
        assert np.allclose(cached.estimates[m], full.estimates[m], atol=1e-4)
    assert np.allclose(cached.exact, full.exact, atol=1e-4)


def _ig_reference(lm, clean, bad, hook, positions, steps):
    """IG the slow way: one full forward + backward per (pair, step), every block run each time."""
    from interplab.activations.positions import Positions
    from interplab.interventions import engine
    from interplab.interventions.prompts import make_batch, read_logits
    from interplab.models import edit_hooks

    donor = engine.capture(lm, clean, [hook], batch_size=8)[hook]
    out = np.zeros((len(bad), len(positions)))
    for i in range(len(bad)):
        pos = [o % len(bad.ids[i]) for o in positions]
        for s in range(steps):
            alpha, seen = (s + 0.5) / steps, {}

            def fn(act, pos=pos, alpha=alpha, seen=seen, i=i):
                new = act.detach().clone()
                seen["delta"] = donor[i, pos] - new[0, pos]
                new[0, pos] = new[0, pos] + alpha * seen["delta"]
                seen["x"] = new.requires_grad_(True)
                return new

            with torch.enable_grad(), edit_hooks(lm, {hook: fn}):
                logits = read_logits(lm, bad, make_batch(lm, bad, np.array([i])),
                                     Positions.parse("last"))
                (g,) = torch.autograd.grad(LogitDiff(A, B)(logits, torch.tensor([i])).sum(),
                                           [seen["x"]])
            out[i] += ((seen["delta"] * g[0, pos]).sum(-1) / steps).numpy()
    return out


@pytest.mark.parametrize("kind,hook", [
    ("tiny-llama", "blocks.1.hook_resid_pre"), ("tiny-llama", "blocks.2.hook_attn_out"),
    ("tiny-gpt2", "blocks.1.hook_mlp_out"), ("tiny-gpt2", "blocks.3.hook_resid_post"),
    ("tiny-neox", "blocks.2.hook_attn_out"), ("tiny-neox", "blocks.0.hook_mlp_out")])
def test_integrated_gradients_equal_a_full_forward_per_step(kind, hook):
    lm = load(kind, seed=0)
    clean, bad = _pairs(n=3)
    if not lm.bos_token_id:  # GPT-2 style tokenizers add no BOS
        clean, bad = (Prompts([t[1:] for t in p.ids], [], False) for p in (clean, bad))
    positions = [-1, 3, 5, -7]  # -7 and 3 are one token of a 10-token prompt: counted once
    r = attribute(lm, clean, bad, [hook], LogitDiff(A, B), positions=positions, methods=["ig"],
                  ig_steps=5, n_exact=1, batch_size=3)  # 5 steps in groups of 3 and 2
    ref = _ig_reference(lm, clean, bad, hook, positions, 5)
    assert np.abs(ref).max() > 1e-3
    assert np.allclose(r.estimates["ig"], ref, atol=1e-4 * max(1.0, np.abs(ref).max()))


def test_integrated_gradients_run_the_blocks_below_the_hook_once_per_pair():
    lm = load("tiny-llama", seed=0)
    clean, bad = _pairs(n=4)
    rows = {0: 0, 3: 0}

    def counter(layer):
        def fn(module, args, kwargs, output):
            rows[layer] += output[0].shape[0] if isinstance(output, tuple) else output.shape[0]
        return fn

    handles = [lm.blocks[i].register_forward_hook(counter(i), with_kwargs=True) for i in rows]
    try:
        counts = []
        for k in (1, 9):
            rows.update({0: 0, 3: 0})
            attribute(lm, clean, bad, ["blocks.2.hook_resid_post"], LogitDiff(A, B),
                      positions=[-1], methods=["ig"], ig_steps=k, n_exact=1)
            counts.append(dict(rows))
    finally:
        for h in handles:
            h.remove()
    assert counts[1][0] == counts[0][0]  # below the hook: not one row more for 8 more steps
    assert counts[1][3] - counts[0][3] == 4 * 8  # above it: one row per pair and step


def test_attribution_backpropagates_to_activations_only(linear_lm):
    clean, bad = _pairs(n=3)
    flags = []

    def metric(logits, ex):
        if logits.requires_grad:  # the passes that backpropagate
            flags.append(any(p.requires_grad for p in linear_lm.hf.parameters()))
        return LogitDiff(A, B)(logits, ex)

    attribute(linear_lm, clean, bad, [LAST], metric, positions=[-1, -2], ig_steps=2, n_exact=1)
    assert flags and not any(flags)  # no parameter was part of any backward graph
    assert all(p.requires_grad and p.grad is None for p in linear_lm.hf.parameters())


def test_capture_stops_after_the_last_hook():
    from interplab.interventions import engine

    lm = load("tiny-llama", seed=0)
    clean, _ = _pairs(n=2)
    ran = []
    handle = lm.blocks[2].register_forward_hook(lambda *a: ran.append(1))
    try:
        acts = engine.capture(lm, clean, ["blocks.1.hook_resid_post", "blocks.0.hook_mlp_out"],
                              batch_size=8)
    finally:
        handle.remove()
    assert not ran
    from interplab.models import edit_hooks

    full = []
    with torch.no_grad(), edit_hooks(lm, {"blocks.1.hook_resid_post": full.append}):
        lm.hf(torch.tensor(clean.ids))  # the whole model: same activations
    assert torch.allclose(acts["blocks.1.hook_resid_post"], full[0], atol=1e-5)


@pytest.mark.parametrize("kind", ["tiny-llama", "tiny-gpt2", "tiny-neox"])
def test_patching_every_head_of_a_layer_is_patching_its_attention_output(kind):
    lm = load(kind, seed=0)
    clean, bad = _pairs(n=3)
    z, attn_out = "blocks.2.attn.hook_z", "blocks.2.hook_attn_out"
    whole = patch(lm, clean, bad, [z, attn_out], LogitDiff(A, B), positions=[-1, 3, -3],
                  per_head=False, n_null=0)
    e = np.asarray(whole.effects).reshape(3, 2, 3)  # [pair, hook, position]
    assert np.abs(e[:, 1]).max() > 1e-3
    assert np.allclose(e[:, 0], e[:, 1], atol=1e-5)  # o_proj acts on each token alone
    heads = patch(lm, clean, bad, [z], LogitDiff(A, B), positions=[-1], n_null=2, null_nodes=1)
    assert [nd["head"] for nd in heads.info["nodes"]] == list(range(lm.n_heads))
    assert heads.proof[z]["n_edited"] == 3 * lm.n_heads


def test_head_attribution_on_a_model_linear_in_the_heads():
    # Without the last block's MLP, the logits are linear above its o_proj: per-head effects add
    # up, and attribution patching is exact per head.
    linear_lm = _linear_lm()
    with torch.no_grad():
        linear_lm.blocks[3].mlp.down_proj.weight.zero_()
    clean, bad = _pairs(n=4)
    z, attn_out = "blocks.3.attn.hook_z", "blocks.3.hook_attn_out"
    r = attribute(linear_lm, clean, bad, [z, attn_out], LogitDiff(A, B), positions=[-1, 3],
                  n_exact=50, ig_steps=2)
    nodes = r.nodes
    atp, exact = np.asarray(r.estimates["atp"]), np.asarray(r.exact)
    assert len(r.exact_nodes) == len(nodes) == 2 * linear_lm.n_heads + 2
    assert np.allclose(atp, exact, atol=1e-4) and np.allclose(r.estimates["ig"], exact, atol=1e-4)
    for p in (-1, 3):
        per_head = [j for j, nd in enumerate(nodes) if nd["hook"] == z and nd["positions"] == [p]]
        layer = next(j for j, nd in enumerate(nodes) if nd["hook"] == attn_out
                     and nd["positions"] == [p])
        assert len(per_head) == linear_lm.n_heads
        assert np.allclose(exact[:, per_head].sum(1), exact[:, layer], atol=1e-4)
    assert np.abs(exact).max() > 1e-2
    # Control: with the MLP after attention, attribution per head is only an approximation.
    r = attribute(_linear_lm(), clean, bad, [z], LogitDiff(A, B), positions=[-1], methods=["atp"],
                  n_exact=50)
    assert r.agreement["all"]["atp"]["max_abs_error"] > 1e-3


def test_patching_runs_the_blocks_below_a_hook_once_per_pair_and_equals_full_forwards():
    from interplab.activations.positions import Positions
    from interplab.interventions import engine
    from interplab.interventions.prompts import make_batch, read_logits
    from interplab.models import edit_hooks

    lm = load("tiny-llama", seed=0)
    clean, bad = _pairs(n=3)
    hooks = ["blocks.1.attn.hook_z", "blocks.2.hook_resid_post"]
    rows = {0: 0, 3: 0}

    def counter(layer):
        def fn(module, args, output):
            rows[layer] += output[0].shape[0] if isinstance(output, tuple) else output.shape[0]
        return fn

    handles = [lm.blocks[i].register_forward_hook(counter(i)) for i in rows]
    try:
        r = patch(lm, clean, bad, hooks, LogitDiff(A, B), positions=[2, 3, -1], n_null=0)
    finally:
        for h in handles:
            h.remove()
    nodes = r.info["nodes"]
    assert len(nodes) == 3 * lm.n_heads + 3
    # capture (ends before block 3), receiver and donor runs: 3 rows each; the sweep: block 0
    # once per pair and hook, block 3 once per pair and node.
    assert rows == {0: 3 * 3 + 3 * 2, 3: 3 * 2 + 3 * len(nodes)}
    donor = engine.capture(lm, clean, hooks, batch_size=8)
    d_head = lm.d_model // lm.n_heads
    for i in range(3):
        batch = make_batch(lm, bad, np.array([i]))
        for j, nd in enumerate(nodes):
            p = nd["positions"][0] % 10
            f = slice(None) if "head" not in nd else slice(nd["head"] * d_head,
                                                          (nd["head"] + 1) * d_head)

            def fn(act, h=nd["hook"], p=p, f=f, i=i):
                act = act.clone()
                act[0, p, f] = donor[h][i, p, f]
                return act

            with torch.no_grad(), edit_hooks(lm, {nd["hook"]: fn}):
                m = LogitDiff(A, B)(read_logits(lm, bad, batch, Positions.parse("last")),
                                    torch.tensor([i]))
            assert float(m[0]) - r.baseline[i] == pytest.approx(r.effects[i][j], abs=1e-5)


def test_patching_through_a_cached_prefix_equals_the_joined_prompt(linear_lm):
    clean, bad = ["The cat sat on the mat."], ["The cat sat on the hat."]
    prefix, joined = PREFIX, _joined_with_prefix(linear_lm)

    hooks = ["blocks.1.hook_resid_pre", "blocks.2.attn.hook_z"]
    kw = {"positions": [-3, -2, -1], "n_null": 2, "null_nodes": 1}
    cached = patch(linear_lm, clean, bad, hooks, LogitDiff(A, B), prefix=prefix, **kw)
    full = patch(linear_lm, joined(clean), joined(bad), hooks, LogitDiff(A, B), **kw)
    assert np.abs(full.effects).max() > 1e-3
    assert np.allclose(cached.effects, full.effects, atol=1e-4)
    assert cached.null["nodes"].keys() == full.null["nodes"].keys()


def test_reference_sets_leave_out_massive_first_tokens_and_say_so(monkeypatch):
    """On a model without BOS, position 0 of every reference text carries a massive activation;
    a few such rows would decide the mean. They are left out by default, counted, and a mean
    still dominated by a few rows is flagged."""
    import importlib
    from types import SimpleNamespace

    from interplab.activations.exclusion import ExclusionRule

    ablate_mod = importlib.import_module("interplab.interventions.ablate")  # not the function

    rng = np.random.default_rng(0)
    n_texts, length, d = 6, 8, 16
    x = rng.standard_normal((n_texts * length, d)).astype(np.float32)
    position = np.tile(np.arange(length), n_texts)
    x[position == 0] *= 1000.0  # the attention-sink rows
    acts = {"h": torch.as_tensor(x)}
    where = torch.as_tensor(position)

    class Acts(dict):  # what harvest returns: rows per hook, with each row's position
        position = where

    monkeypatch.setattr(ablate_mod, "harvest", lambda *a, **k: Acts(acts))
    lm = SimpleNamespace()
    ordinary = x[position != 0]
    ref = ablate_mod._reference(lm, "mean", ["h"], None, ["t"] * n_texts, "all", 8,
                                ExclusionRule())
    assert ref.info["left_out"]["h"] == n_texts and ref.info["rows"]["h"] == len(ordinary)
    np.testing.assert_allclose(ref.values["h"].numpy(), ordinary.mean(0), rtol=1e-5, atol=1e-6)
    assert ref.info["warnings"] == []
    raw = ablate_mod._reference(lm, "mean", ["h"], None, ["t"] * n_texts, "all", 8,
                                ExclusionRule.none())
    assert raw.info["left_out"]["h"] == 0
    assert float(raw.values["h"].norm()) > 50 * float(ref.values["h"].norm())
    assert raw.info["warnings"] and "dominated" in raw.info["warnings"][0]
    med = ablate_mod._reference(lm, "median", ["h"], None, ["t"] * n_texts, "all", 8,
                                ExclusionRule())
    # one median definition: numpy's (the midpoint of the two middle values), as erasure uses
    np.testing.assert_allclose(med.values["h"].numpy(), np.median(ordinary, axis=0), rtol=1e-6)
    assert len(ordinary) % 2 == 0  # an even count, where the lower median would differ
    assert not np.allclose(med.values["h"].numpy(),
                           torch.as_tensor(ordinary).median(0).values.numpy())
