"""Attribution over SAE latents: splicing, closed forms on toy models, planted circuits."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from interplab.circuits.attribute import ERROR, attribute_latents
from interplab.circuits.splice import sae_set, spliced
from interplab.errors import InterplabError
from interplab.interventions import LogitDiff
from interplab.sae.base import SAEConfig, create_sae

ARCHS = ("relu", "topk", "batchtopk", "jumprelu", "gated")
TEXTS = ["The cat sat on the mat today", "A dog ran in the park now", "Bright stars shine"]


def _sae(arch: str, d: int = 64, width: int = 96, seed: int = 0, bias: float = 0.05):
    cfg = SAEConfig(arch, d, width, k=8 if arch in ("topk", "batchtopk") else None, seed=seed)
    sae = create_sae(cfg)
    with torch.no_grad():
        sae.b_enc.fill_(bias)
        if arch == "gated":
            sae.b_gate.fill_(bias)
        if arch == "batchtopk":
            sae.threshold.fill_(0.2)
        if arch == "jumprelu":
            sae.log_threshold.fill_(float(np.log(0.2)))
    return sae.eval()


@pytest.fixture(scope="module")
def llama():
    from interplab.models import load

    return load("tiny-llama", seed=0)


@pytest.fixture(scope="module")
def linear_llama(llama):
    """tiny-llama with every block's output projections zeroed and the final norm removed: each
    hook passes the embedding on unchanged and the logits are ``W_U x`` (linear)."""
    lm = copy.deepcopy(llama)
    with torch.no_grad():
        for block in lm.blocks:
            block.self_attn.o_proj.weight.zero_()
            block.mlp.down_proj.weight.zero_()
    lm.hf.model.norm = torch.nn.Identity()
    return lm


@pytest.mark.parametrize("model", ["tiny-llama", "tiny-gpt2"])
def test_splicing_saes_with_error_nodes_leaves_the_logits_unchanged(model):
    from interplab.models import load

    lm = load(model, seed=0)
    hooks = ["blocks.0.hook_attn_out", "blocks.1.hook_mlp_out", "blocks.1.hook_resid_post",
             "blocks.2.hook_resid_pre", "blocks.3.hook_resid_post"]
    saes = sae_set(lm, {h: _sae(ARCHS[j % len(ARCHS)], seed=j) for j, h in enumerate(hooks)})
    enc = lm.tokenizer(TEXTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        plain = lm.hf(**enc).logits
        with spliced(lm, saes):
            both = lm.hf(**enc).logits
        # the reconstruction alone (no error node) does change them: the check has teeth
        recon = {h: (lambda act, h=h: saes.decode(h, saes.encode(h, act))) for h in saes.hooks}
        from interplab.models import edit_hooks

        with edit_hooks(lm, recon):
            lossy = lm.hf(**enc).logits
    assert torch.allclose(plain, both, atol=1e-4, rtol=1e-4)
    assert float((plain - lossy).abs().max()) > 1e-2


def test_sae_set_refuses_a_wrong_width(llama):
    with pytest.raises(InterplabError, match="d_in=32"):
        sae_set(llama, {"blocks.1.hook_resid_post": _sae("topk", d=32)})


@pytest.mark.parametrize("arch", ["topk", "jumprelu"])
def test_atp_and_ig_equal_exact_patching_when_the_model_is_linear_in_the_latents(
        linear_llama, arch):
    lm = linear_llama
    saes = sae_set(lm, {"blocks.0.hook_resid_post": _sae(arch, seed=1),
                        "blocks.2.hook_resid_post": _sae(arch, seed=2)})
    clean = ["A dog sat in the park", "A dog ran in the park"]
    corrupt = ["A dog sat in the yard", "A dog ran in the yard"]  # equal lengths, last token differs
    r = attribute_latents(lm, saes, clean, corrupt, LogitDiff(5, 9), positions=[-2, -1],
                          ig_steps=3, n_exact=12, n_boot=100)
    assert r.exact.shape[1] >= 12 and np.abs(r.exact).max() > 1e-3
    for m in ("atp", "ig"):
        np.testing.assert_allclose(r.sampled_estimates(m), r.exact, atol=2e-4, rtol=1e-4)
    # closed form: latent i at the last token moves the metric by Δf_i (W_U[5] − W_U[9]) · d_i
    w = (lm.unembed[5] - lm.unembed[9]).detach()
    for j, (h, i, p) in enumerate(r.exact_nodes):
        if i == ERROR or r.offsets[p] != -1:
            continue
        est = r.estimates["atp"][h][:, p, i]
        d_i = saes[h].W_dec[i].detach()
        coef = (est / float(w @ d_i))  # = Δf_i per prompt
        np.testing.assert_allclose(coef * float(w @ d_i), r.exact[:, j], atol=2e-4)


def _toy_pair(lm, down_arch: str, seed: int = 3):
    """A linear model with a ReLU SAE upstream (the nodes) and ``down_arch`` downstream, whose
    error node is frozen: the metric reaches the nodes only through the downstream encoder."""
    up = _sae("relu", seed=seed, bias=0.3)
    down = _sae(down_arch, seed=seed + 1, bias=0.0)
    if down_arch == "topk":  # k = width: TopK is ReLU here (a crossing of its zero threshold)
        down.config.k = down.d_sae
    return sae_set(lm, {"blocks.0.hook_resid_post": up, "blocks.1.hook_resid_post": down})


def _analytic(lm, saes, prompt: str, a: int, b: int, steps: list[int]):
    """Exact, AtP and node-IG(k) of zero-ablating each active upstream latent at the last token,
    in closed form (the model between the hooks is the identity and the logits are linear)."""
    h_up, h_down = saes.hooks
    up, down = saes[h_up], saes[h_down]
    ids = lm.tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        x = lm.embed(ids)[0, -1].double()
        f = up.encode(x.float()[None])[0].double()
        w = (lm.unembed[a] - lm.unembed[b]).double().detach()
        Wd, We = down.W_dec.double().detach(), down.W_enc.double().detach()
        z_r = (x - down.b_dec.double()) @ We + down.b_enc.double()
        theta = (down.threshold.double().detach() if down.config.architecture == "jumprelu"
                 else torch.zeros_like(z_r))

    def act(z):
        return torch.where(z > theta, z, torch.zeros_like(z))

    out = {}
    for i in torch.nonzero(f > 0).flatten().tolist():
        delta = -f[i]
        u = up.W_dec[i].double().detach() @ We
        exact = float(w @ (Wd.T @ (act(z_r + delta * u) - act(z_r))))
        atp = float(delta * (w @ (Wd.T @ ((z_r > theta).double() * u))))
        ig = {}
        for k in steps:
            al = (torch.arange(k, dtype=torch.float64) + 0.5) / k
            on = ((z_r[None] + al[:, None] * delta * u[None]) > theta).double().mean(0)
            ig[k] = float(delta * (w @ (Wd.T @ (on * u))))
        # the limit of IG: the share of the path on which each downstream latent is on,
        # times its slope (z_j moves linearly from z_r,j by c_j = Δ u_j)
        c = delta * u
        t = ((theta - z_r) / torch.where(c == 0, torch.ones_like(c), c)).clamp(0, 1)
        share = torch.where(c > 0, 1 - t, torch.where(c < 0, t, (z_r > theta).double()))
        out[i] = {"exact": exact, "atp": atp, "ig": ig,
                  "ig_limit": float(w @ (Wd.T @ (share * c))),
                  "crosses": bool(((act(z_r + c) > 0) != (act(z_r) > 0)).any())}
    return out


@pytest.mark.parametrize("down_arch", ["relu", "topk"])
def test_ig_converges_to_exact_through_a_relu_and_atp_does_not_where_a_latent_crosses(
        linear_llama, down_arch):
    lm = linear_llama
    saes = _toy_pair(lm, down_arch)
    prompt = "The cat sat on the mat"
    truth = _analytic(lm, saes, prompt, 5, 9, [1, 4, 64])
    crossing = [i for i, v in truth.items() if v["crosses"]]
    assert crossing, "the toy needs an upstream latent whose ablation flips a downstream one"
    nodes = [("blocks.0.hook_resid_post", i, 0) for i in crossing[:4]]
    got = {}
    for k in (1, 4, 64):
        r = attribute_latents(lm, saes, [prompt], None, LogitDiff(5, 9), ablation="zero",
                              errors="frozen", positions=[-1], ig_steps=k, ig_scope="node",
                              nodes=nodes, n_boot=100, batch_size=64)
        got[k] = r
        for j, (_, i, _) in enumerate(nodes):
            assert r.exact[0, j] == pytest.approx(truth[i]["exact"], abs=1e-3)
            assert r.sampled_estimates("atp")[0, j] == pytest.approx(truth[i]["atp"], abs=1e-3)
            assert r.sampled_estimates("ig")[0, j] == pytest.approx(truth[i]["ig"][k], abs=1e-3)
    exact = got[64].exact[0]
    ig_err = {k: np.abs(got[k].sampled_estimates("ig")[0] - exact).max() for k in got}
    atp_err = np.abs(got[64].sampled_estimates("atp")[0] - exact).max()
    assert ig_err[64] < ig_err[1] and ig_err[64] < 0.05 * max(atp_err, 1e-9)
    assert atp_err > 1e-2  # AtP reads the slope at the receiver and misses the crossing


def test_ig_misses_the_jump_of_a_jumprelu_by_exactly_its_height(linear_llama):
    """Gradient-based IG integrates the derivative, which has no mass at a jump: with many steps
    it converges to the exact effect minus the jumps the path crosses, not to the exact effect."""
    lm = linear_llama
    saes = _toy_pair(lm, "jumprelu")
    prompt = "The cat sat on the mat"
    truth = _analytic(lm, saes, prompt, 5, 9, [256])
    crossing = [i for i, v in truth.items() if v["crosses"]]
    assert crossing
    nodes = [("blocks.0.hook_resid_post", i, 0) for i in crossing[:3]]
    r = attribute_latents(lm, saes, [prompt], None, LogitDiff(5, 9), ablation="zero",
                          errors="frozen", positions=[-1], ig_steps=256, ig_scope="node",
                          nodes=nodes, n_boot=100, batch_size=256)
    for j, (_, i, _) in enumerate(nodes):
        ig = r.sampled_estimates("ig")[0, j]
        assert ig == pytest.approx(truth[i]["ig_limit"], abs=2e-2)
        assert r.exact[0, j] == pytest.approx(truth[i]["exact"], abs=1e-3)
    gap = np.abs(r.sampled_estimates("ig")[0] - r.exact[0]).max()
    assert gap > 5e-2  # the jumps are left out


def test_recompute_keeps_the_downstream_sae_off_the_path(linear_llama):
    """With error nodes recomputed the spliced model is the model: the same toy is linear, so
    AtP is exact even where the frozen convention crosses a threshold."""
    lm = linear_llama
    saes = _toy_pair(lm, "jumprelu")
    truth = _analytic(lm, saes, "The cat sat on the mat", 5, 9, [1])
    nodes = [("blocks.0.hook_resid_post", i, 0) for i, v in truth.items() if v["crosses"]][:3]
    r = attribute_latents(lm, saes, ["The cat sat on the mat"], None, LogitDiff(5, 9),
                          ablation="zero", errors="recompute", positions=[-1], ig_steps=1,
                          nodes=nodes, n_boot=100)
    np.testing.assert_allclose(r.sampled_estimates("atp"), r.exact, atol=1e-4)


PROMPTS = ["The cat sat on the mat", "A dog ran in the park", "Bright stars shine at night",
           "We walked along the river", "Rain fell on the old roof", "The bird sang a song",
           "My friend reads many books", "Cold wind blew over hills", "She painted the door",
           "He opened the heavy gate"]


def _planted_sae(w: torch.Tensor, seed: int, width: int = 48):
    """A ReLU SAE whose latents 0 and 1 carry ±ŵ (encoder = decoder), every other latent lives
    in the orthogonal complement of ŵ: the metric w·x is read by latents 0 and 1 alone, and the
    error node is orthogonal to ŵ."""
    d = w.numel()
    sae = _sae("relu", d=d, width=width, seed=seed, bias=0.05)
    w_hat = (w / w.norm()).float()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        rows = torch.randn(width, d, generator=g)
        rows -= (rows @ w_hat)[:, None] * w_hat[None]
        rows /= rows.norm(dim=-1, keepdim=True)
        rows[0], rows[1] = w_hat, -w_hat
        sae.W_dec.copy_(rows)
        sae.W_enc.copy_(rows.T)
        sae.b_enc[:2] = 0.0
        sae.b_dec.zero_()
    return sae.eval()


def test_a_planted_circuit_is_recovered_with_faithfulness_one_and_a_random_one_is_not(
        linear_llama):
    from interplab.circuits.attribute import node_values, reference_values
    from interplab.circuits.circuit import (
        alive_latents,
        edges,
        faithfulness_curve,
        select,
        thresholds_for_sizes,
    )
    from interplab.interventions.prompts import as_prompts

    lm = linear_llama
    a, b = 5, 9
    w = (lm.unembed[a] - lm.unembed[b]).detach()
    hooks = ["blocks.0.hook_resid_post", "blocks.2.hook_resid_post"]
    saes = sae_set(lm, {h: _planted_sae(w, seed=j) for j, h in enumerate(hooks)})
    metric = LogitDiff(a, b)
    train, held_out = PROMPTS[:5], PROMPTS[5:]
    r = attribute_latents(lm, saes, train, None, metric, ablation="mean", reference=PROMPTS,
                          positions=[-1], methods=("atp",), n_exact=6, n_boot=100)
    scores = r.node_scores("atp")
    top4 = select(scores, thresholds_for_sizes(scores, [4])[0])
    assert {h: sorted(v) for h, v in top4.nodes.items()} == {h: [0, 1] for h in hooks}
    means = reference_values(lm, saes, PROMPTS, "mean")
    alive = alive_latents(node_values(lm, saes, as_prompts(lm, train), 8), saes)
    curve = faithfulness_curve(lm, saes, scores, held_out, metric, means, alive, sizes=[4],
                               n_random=4, n_boot=200)
    assert curve.sizes == [4]
    assert curve.faithfulness["value"][0] == pytest.approx(1.0, abs=1e-3)
    assert curve.completeness["value"][0] == pytest.approx(0.0, abs=1e-3)
    assert abs(curve.random["mean"][0]) < 0.2 and max(map(abs, curve.random["draws"][0])) < 0.5
    assert abs(curve.m_full - curve.m_empty) > 0.01  # a real gap to recover
    e = edges(lm, saes, top4, train, None, metric, r.offsets, scores, ablation="mean",
              reference=PROMPTS)
    w01 = e.weights[tuple(hooks)]
    # every path from the first hook to the metric runs through latents 0 and 1 of the second
    # (the error node and the other latents are orthogonal to w): the edges out of a node add up
    # to its attribution, and the second hook's edges to the metric are its attributions
    np.testing.assert_allclose(w01.sum(axis=1), scores[hooks[0]][[0, 1]], rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(e.to_metric, scores[hooks[1]][[0, 1]])
    assert np.abs(w01).max() > 1e-3


def test_mean_ablation_uses_means_over_ordinary_tokens_and_leaves_position_0(linear_llama):
    from interplab.circuits.attribute import node_values, reference_values
    from interplab.circuits.circuit import ablated_metrics
    from interplab.interventions.prompts import as_prompts

    lm = linear_llama
    hook = "blocks.1.hook_resid_post"
    saes = sae_set(lm, {hook: _sae("topk", seed=4)})
    ref = PROMPTS[:6]
    means = reference_values(lm, saes, ref, "mean")
    vals = node_values(lm, saes, as_prompts(lm, ref), 8)
    lengths = torch.as_tensor(as_prompts(lm, ref).lengths)
    ordinary = (torch.arange(vals.f[hook].shape[1])[None] < lengths[:, None])
    ordinary[:, 0] = False  # position 0 (BOS here) is left out of the means
    torch.testing.assert_close(means.f[hook], vals.f[hook][ordinary].mean(0))
    torch.testing.assert_close(means.err[hook], vals.err[hook][ordinary].mean(0))
    # everything ablated: the last token carries dec(mean f) + mean ε, and the metric (linear,
    # read at the last token) follows in closed form; a one-token prompt keeps its only token
    w = (lm.unembed[5] - lm.unembed[9]).detach()
    width = saes.width(hook)
    empty = {hook: np.zeros(width + 1, dtype=bool)}
    full = {hook: np.ones(width + 1, dtype=bool)}
    prompts = as_prompts(lm, PROMPTS[6:])
    m = ablated_metrics(lm, saes, prompts, LogitDiff(5, 9), [full, empty], means)
    with torch.no_grad():
        expected = float(w @ (saes.decode(hook, means.f[hook][None])[0] + means.err[hook]))
    np.testing.assert_allclose(m[1], expected, atol=1e-4)
    plain = torch.stack([lm.embed(torch.tensor(p[-1:])).detach()[0] for p in prompts.ids]) @ w
    np.testing.assert_allclose(m[0], plain.numpy(), atol=1e-4)
    # position 0 is never ablated: read the stream after the edited hook
    from interplab.circuits.circuit import _AblationEdits
    from interplab.interventions.prompts import hidden, make_batch
    from interplab.models import edit_hooks

    batch = make_batch(lm, prompts, np.arange(2))
    seen = {}
    edits = _AblationEdits(saes, [empty], np.zeros(2, dtype=int), means, prompts.lengths)(
        batch, slice(0, 2))
    edits["blocks.2.hook_resid_post"] = lambda act: seen.setdefault("x", act.clone())
    with torch.no_grad(), edit_hooks(lm, edits):
        hidden(lm, prompts, batch)
    x0 = lm.embed(batch.ids[:, 0]).detach()
    torch.testing.assert_close(seen["x"][:, 0], x0)
    with torch.no_grad():
        ablated = saes.decode(hook, means.f[hook][None])[0] + means.err[hook]
    torch.testing.assert_close(seen["x"][:, 1], ablated.expand(2, -1), atol=1e-5, rtol=1e-5)
