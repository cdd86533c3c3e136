"""Toy transformer: causality, residual stream, save/load, and that training reaches the floor."""

import numpy as np
import pytest
import torch

from interplab.compmech.beliefs import optimal_cross_entropy
from interplab.compmech.presets import golden_mean, mess3
from interplab.compmech.train import TrainConfig, evaluate, train_model
from interplab.compmech.transformer import GPT, GPTConfig, load_model, save_model
from interplab.errors import InterplabError


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny matrices: one thread is several times faster than two on a shared 2-core machine.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def small(**kw):
    base = dict(vocab_size=3, context_length=8, n_layers=2, d_model=16, n_heads=2, d_mlp=32)
    base.update(kw)
    return GPT(GPTConfig(**base))


def test_residual_stream_shapes_and_names():
    torch.manual_seed(0)
    m = small()
    tokens = torch.randint(0, 3, (5, 8))
    logits, res = m(tokens, return_residuals=True)
    assert logits.shape == (5, 8, 3)
    assert len(res) == 3 and all(r.shape == (5, 8, 16) for r in res)
    assert m.cfg.hook_names == [
        "blocks.0.hook_resid_pre",
        "blocks.0.hook_resid_post",
        "blocks.1.hook_resid_post",
    ]
    stacked = m.residuals(tokens, batch_size=2)
    assert stacked.shape == (3, 5, 8, 16)
    torch.testing.assert_close(stacked[-1], res[-1].detach())


def test_model_is_causal():
    torch.manual_seed(0)
    m = small().eval()
    a = torch.randint(0, 3, (4, 8))
    b = a.clone()
    b[:, 5:] = (b[:, 5:] + 1) % 3  # change only the future
    la, ra = m(a, return_residuals=True)
    lb, rb = m(b, return_residuals=True)
    torch.testing.assert_close(la[:, :5], lb[:, :5])
    for x, y in zip(ra, rb, strict=True):
        torch.testing.assert_close(x[:, :5], y[:, :5])
    assert not torch.allclose(la[:, 5:], lb[:, 5:])


def test_save_load_roundtrip(tmp_path):
    torch.manual_seed(0)
    m = small()
    save_model(m, tmp_path / "ckpt", {"step": 3})
    assert (tmp_path / "ckpt" / "model.safetensors").is_file()
    m2 = load_model(tmp_path / "ckpt")
    tokens = torch.randint(0, 3, (3, 8))
    torch.testing.assert_close(m(tokens), m2(tokens))
    with pytest.raises(InterplabError, match="saved model"):
        load_model(tmp_path)


def test_bad_config_and_inputs():
    with pytest.raises(InterplabError, match="divisible"):
        GPTConfig(d_model=10, n_heads=3)
    with pytest.raises(InterplabError, match="context_length"):
        small()(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(InterplabError, match="vocab_size"):
        train_model(small(vocab_size=2), mess3(), TrainConfig(n_steps=1))


def test_training_reaches_the_optimal_floor(tmp_path):
    # Golden mean is Markov order 1: a perfect predictor needs only the last symbol. A tiny model
    # gets close to the floor in a few hundred steps, far below the untrained model's loss.
    torch.manual_seed(0)
    process = golden_mean()
    m = GPT(GPTConfig(vocab_size=2, context_length=6, n_layers=1, d_model=16, d_mlp=32))
    eval_tokens = torch.from_numpy(process.sample(2000, 7, seed=99))
    before = evaluate(m, eval_tokens)[0].mean()
    cfg = TrainConfig(n_steps=150, batch_size=64, lr=1e-2, warmup_steps=10, eval_every=50,
                      eval_sequences=1000, checkpoint_every=100)
    hist = train_model(m, process, cfg, checkpoint_dir=tmp_path, progress=False)
    floor = optimal_cross_entropy(process, 6).mean()
    after = evaluate(m, eval_tokens)[0].mean()
    assert before > floor + 0.15
    assert after < floor * 1.02
    assert hist.eval_steps == [50, 100, 150] and len(hist.eval_loss_per_position[-1]) == 6
    assert hist.tokens_seen == 150 * 64 * 6
    assert (tmp_path / "step-000100").is_dir() and (tmp_path / "final").is_dir()
    assert np.isfinite(hist.train_loss).all()


def test_stopping_rule_stops_at_the_first_evaluation_within_the_target():
    # Golden mean comes within 0.8 % of its floor after ~75 steps here; with a cap of 1000 the
    # rule must stop at the first evaluation at or below the target and say so.
    process = golden_mean()
    floor = optimal_cross_entropy(process, 6).mean()

    def run(**kw):
        torch.manual_seed(0)
        m = GPT(GPTConfig(vocab_size=2, context_length=6, n_layers=1, d_model=16, d_mlp=32))
        cfg = TrainConfig(batch_size=64, lr=1e-2, warmup_steps=10, eval_every=25,
                          eval_sequences=1000, **kw)
        return train_model(m, process, cfg, progress=False)

    hist = run(n_steps=1000, stop_loss=floor * 1.008)
    assert hist.stop_reason == "stop_loss" and hist.steps_run < 1000
    assert hist.eval_steps[-1] == hist.steps_run and hist.train_steps[-1] == hist.steps_run
    assert hist.eval_loss[-1] <= floor * 1.008 < min(hist.eval_loss[:-1])
    assert hist.tokens_seen == hist.steps_run * 64 * 6
    capped = run(n_steps=hist.steps_run, stop_loss=floor * 0.5)  # unreachable: the cap is hit
    assert capped.stop_reason == "step_cap" and capped.steps_run == hist.steps_run
    assert run(n_steps=50).stop_reason == "steps"
    with pytest.raises(InterplabError, match="stop_loss"):
        TrainConfig(stop_loss=0.0)


def test_checkpoint_files_go_through_the_atomic_writer(tmp_path, atomic_writes):
    from safetensors.torch import save

    m = small()
    save_model(m, tmp_path / "ckpt", {"step": 3})
    assert sorted(atomic_writes) == ["config.json", "model.safetensors"]
    state = {k: v.detach().contiguous() for k, v in m.state_dict().items()}
    assert (tmp_path / "ckpt" / "model.safetensors").read_bytes() == save(state)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.json",
                                                                     "model.safetensors"]
