"""Library calls leave process-wide state alone: the global torch generator, matplotlib's
backend and open figures, and thread counts (restored also when the body raises)."""

import matplotlib
import numpy as np
import pytest
import torch

from interplab.compmech.transformer import GPT, GPTConfig
from interplab.sae import SAEConfig, create_sae
from interplab.threads import limit_threads


def _global_draw_after(make) -> torch.Tensor:
    torch.manual_seed(1234)
    make()
    return torch.rand(8)


def test_create_sae_leaves_the_global_generator_alone_and_follows_its_seed():
    untouched = _global_draw_after(lambda: None)
    assert torch.equal(_global_draw_after(lambda: create_sae(SAEConfig("relu", 8, 16, seed=3))),
                       untouched)
    a, b = (create_sae(SAEConfig("topk", 8, 16, k=2, seed=3)) for _ in range(2))
    assert torch.equal(a.W_dec, b.W_dec)
    assert not torch.equal(a.W_dec, create_sae(SAEConfig("topk", 8, 16, k=2, seed=4)).W_dec)
    # the weights do not depend on the state the global generator happens to be in
    torch.manual_seed(99)
    assert torch.equal(create_sae(SAEConfig("topk", 8, 16, k=2, seed=3)).W_dec, a.W_dec)


def test_seeded_toy_gpt_leaves_the_global_generator_alone():
    cfg = GPTConfig(vocab_size=3, context_length=4, n_layers=1, d_model=8, n_heads=2, d_mlp=16)
    untouched = _global_draw_after(lambda: None)
    assert torch.equal(_global_draw_after(lambda: GPT(cfg, seed=5)), untouched)
    torch.manual_seed(5)  # the weights are those the study drew before (manual_seed, then GPT)
    reference = GPT(cfg).state_dict()
    torch.manual_seed(0)
    seeded = GPT(cfg, seed=5).state_dict()
    assert all(torch.equal(reference[k], seeded[k]) for k in reference)


def test_limit_threads_restores_the_counts_when_the_body_raises():
    from threadpoolctl import threadpool_info

    before_torch = torch.get_num_threads()
    before_blas = [d["num_threads"] for d in threadpool_info()]
    target = 1 if before_torch != 1 else 2
    with pytest.raises(RuntimeError, match="boom"), limit_threads(target):
        assert torch.get_num_threads() == target
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before_torch
    assert [d["num_threads"] for d in threadpool_info()] == before_blas


@pytest.fixture
def svg_backend():
    import matplotlib.pyplot as plt

    old = matplotlib.get_backend()
    matplotlib.use("svg", force=True)  # stands for a notebook's own backend
    open_before = plt.get_fignums()
    yield plt, open_before
    matplotlib.use(old, force=True)


def test_sae_dashboard_keeps_the_users_matplotlib_backend(svg_backend, tmp_path):
    from interplab.report.sae_dashboard import render_dashboard
    from interplab.sae.dashboard import DashboardData, FeatureDashboard

    plt, open_before = svg_backend
    counts, edges = [3, 5, 2], list(np.linspace(0.0, 1.5, 4))
    feature = FeatureDashboard(0, 0.1, 10, 1.5, counts, edges)
    data = DashboardData("tiny", "blocks.0.hook_resid_post", {"architecture": "relu", "d_sae": 16, "k": None}, 100,
                         [feature])
    html = render_dashboard(data, tmp_path / "d.html").read_text()
    assert "data:image/png;base64," in html  # the histogram was drawn
    assert matplotlib.get_backend() == "svg"
    assert plt.get_fignums() == open_before  # no pyplot figure left open
