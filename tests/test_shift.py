"""SHIFT on a planted spurious cue: ablating the cue's latents raises worst-group accuracy,
ablating random latents does not."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from interplab.circuits.shift import (
    GROUPS,
    group_accuracy,
    paired_worst_p,
    probe_inputs,
    run_shift,
    spurious_split,
)
from interplab.circuits.splice import sae_set
from interplab.errors import InterplabError
from interplab.sae.base import SAEConfig, create_sae

HOOK = "blocks.1.hook_resid_post"
LABEL_WORDS = {1: ["red", "green"], 0: ["blue", "black"]}
CUE_WORDS = {1: "Alice", 0: "Bob"}
FILLER = ["house", "river", "garden", "stone", "window", "road", "field", "light"]


def _texts(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    c = rng.integers(0, 2, n)
    texts = []
    for lab, cue in zip(y, c, strict=True):
        word = LABEL_WORDS[int(lab)][int(rng.integers(2))]
        a, b = rng.choice(FILLER, 2, replace=False)
        cw = CUE_WORDS[int(cue)]
        # the cue is said three times: it is the louder of the two signals
        texts.append(f"{cw} {cw} {cw} saw the {word} {a} by the {b}")
    return texts, y, c


@pytest.fixture(scope="module")
def planted():
    """tiny-llama, texts with a label and a louder cue, and a ReLU SAE at the probe hook whose
    latents 0/1 carry ±(cue direction), 2/3 ±(label direction) (mean token differences, the label
    one orthogonal to the cue one) and the rest random directions orthogonal to both."""
    from interplab.interventions.engine import capture
    from interplab.interventions.prompts import as_prompts
    from interplab.models import load

    lm = load("tiny-llama", seed=0)
    texts, y, c = _texts(480)
    prompts = as_prompts(lm, texts)
    x = capture(lm, prompts, [HOOK], batch_size=64)[HOOK]  # [n, W, d]
    lengths = torch.as_tensor(prompts.lengths)
    tok = (torch.arange(x.shape[1])[None] < lengths[:, None]) & (torch.arange(x.shape[1])[None] > 0)

    def mean_of(sel):
        m = tok & torch.as_tensor(sel)[:, None]
        return (x * m[..., None]).sum((0, 1)) / m.sum()

    mu = mean_of(np.ones(len(texts), dtype=bool))
    u_c = mean_of(c == 1) - mean_of(c == 0)
    u_c = u_c / u_c.norm()
    u_l = mean_of(y == 1) - mean_of(y == 0)
    u_l = u_l - (u_l @ u_c) * u_c
    u_l = u_l / u_l.norm()
    d, width = lm.d_model, 40
    sae = create_sae(SAEConfig("relu", d, width, seed=5))
    g = torch.Generator().manual_seed(5)
    rows = torch.randn(width, d, generator=g)
    for u in (u_c, u_l):
        rows -= (rows @ u)[:, None] * u[None]
    rows /= rows.norm(dim=-1, keepdim=True)
    rows[0], rows[1], rows[2], rows[3] = u_c, -u_c, u_l, -u_l
    with torch.no_grad():
        sae.W_dec.copy_(rows)
        sae.W_enc.copy_(rows.T)
        sae.b_enc.zero_()
        sae.b_dec.copy_(mu)
    saes = sae_set(lm, {HOOK: sae.eval()})
    rng = np.random.default_rng(1)
    order = rng.permutation(len(texts))
    parts = SimpleNamespace(train=np.sort(order[:240]), val=np.sort(order[240:360]),
                            test=np.sort(order[360:]))
    return lm, saes, texts, y, c, spurious_split(y, c, parts, seed=0)


def test_spurious_split_is_ambiguous_in_training_and_balanced_elsewhere(planted):
    _, _, _, y, c, split = planted
    assert (y[split.train] == c[split.train]).all() and set(y[split.train]) == {0, 1}
    for rows in (split.val, split.test, split.balanced_train):
        counts = [int(((y[rows] == a) & (c[rows] == b)).sum()) for a, b in GROUPS]
        assert len(set(counts)) == 1 and counts[0] > 0
    assert len(split.balanced_train) == len(split.train)
    assert not set(split.train) & set(split.test)


def test_shift_on_a_planted_cue_raises_worst_group_accuracy_and_random_ablation_does_not(
        planted):
    lm, saes, texts, y, c, split = planted
    out = run_shift(lm, saes, texts, y, c, split, HOOK, pooling="mean", n_candidates=8,
                    min_r=0.3, n_random=3, n_boot=200, seed=0, batch_size=64)
    # the cue's latents are found by their correlation with the cue; the label's +u_l latent is
    # kept (other latents may fire on the cue's tokens and go too)
    assert {0, 1} <= set(out.ablated[HOOK]) and 2 not in out.ablated[HOOK]
    top = sorted(out.candidates, key=lambda r: -r["attribution"])[:2]
    assert {r["latent"] for r in top} == {0, 1}  # the probe leans on the cue most
    cond = out.conditions
    before, after = cond["unablated"]["worst"], cond["shift"]["worst"]
    assert before < 0.75, "the planted probe should lean on the cue"
    assert after > before + 0.15
    for r in cond["random"]:
        assert r["worst"] < before + 0.1
    assert cond["balanced_oracle"]["worst"] > before
    # the ablation makes the cue harder to read (its mean direction is gone; what is left is
    # read from differences in other directions)
    assert cond["unablated"]["cue_accuracy"] > cond["shift"]["cue_accuracy"] + 0.1
    shift_vs_unablated = out.comparisons[0]
    assert shift_vs_unablated["versus"] == "unablated" and shift_vs_unablated["p"] < 0.05


def test_ablating_a_latent_removes_exactly_its_decoder_contribution(planted):
    lm, saes, texts, *_ = planted
    some = texts[:6]
    plain = probe_inputs(lm, saes, some, HOOK, "last")
    cut = probe_inputs(lm, saes, some, HOOK, "last", {HOOK: [0, 1]})
    u_c = saes[HOOK].W_dec[0].detach().double().numpy()
    # zero-ablating latents 0 and 1 (±u_c) removes the component along u_c around b_dec
    mu = saes[HOOK].b_dec.detach().double().numpy()
    np.testing.assert_allclose((cut - mu) @ u_c, 0, atol=1e-4)
    np.testing.assert_allclose(cut - plain, -np.outer((plain - mu) @ u_c, u_c), atol=1e-4)


def test_group_accuracy_and_the_paired_p_value():
    y = np.array([1, 1, 0, 0, 1, 1, 0, 0])
    c = np.array([1, 1, 0, 0, 0, 0, 1, 1])
    good = group_accuracy(np.ones(8), y, c, n_boot=200, seed=0)
    bad = group_accuracy(np.array([1, 1, 1, 1, 0, 0, 1, 0.0]), y, c, n_boot=200, seed=0)
    assert good["worst"] == 1.0 and bad["worst"] == 0.0
    assert bad["worst_group"] == [1, 0]
    diff, p = paired_worst_p(good, bad)
    assert diff == 1.0 and p == pytest.approx(1 / 201)


def test_a_split_without_conflicting_rows_is_refused():
    y = np.array([0, 1] * 20)
    parts = SimpleNamespace(train=np.arange(40), val=np.arange(40), test=np.arange(40))
    with pytest.raises(InterplabError, match="too few rows"):
        spurious_split(y, y.copy(), parts, seed=0)
