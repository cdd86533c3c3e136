"""The SAE training study: sweep expansion and naming, trainer settings read from TrainerConfig, the
executor seam, and clear errors for configs that cannot run."""

from __future__ import annotations

import json
from dataclasses import fields, replace

import pytest

from interplab.errors import InterplabError
from interplab.sae.config import SAEConfig, TrainerConfig
from interplab.studies.sae import (
    DataSource,
    SaeStudyConfig,
    SaeStudyResult,
    run_sae_study,
    sae_name,
    sweep_configs,
    train_sweep,
    trainer_config,
)
from tests.test_sae_cli_train import HOOK, _harvest


def _data(d_in: int = 16, n_rows: int = 1000) -> DataSource:
    return DataSource(hook=HOOK, d_in=d_in, n_rows=n_rows, identity={"store": "x", "hook": HOOK},
                      model_name="m", context_length=None)


def test_sweep_is_every_architecture_times_its_k_or_lambda():
    cfg = SaeStudyConfig(store="s", arch=["topk", "relu", "batchtopk"], k=[4, 8],
                         sparsity=[0.5, 2.0], width=64)
    rule = cfg.exclusion_rule()
    runs = sweep_configs(cfg, _data(), rule)
    assert [sae_name(c) for c in runs] == [
        "topk_w64_k4", "topk_w64_k8", "relu_w64_l0.5", "relu_w64_l2", "batchtopk_w64_k4",
        "batchtopk_w64_k8"]
    d = SAEConfig("topk", 16, 64)
    for c in runs:  # what the sweep does not set keeps SAEConfig's defaults
        assert c.d_in == 16 and c.hook == HOOK and c.exclusion == rule.to_dict()
        assert (c.aux_k_coefficient, c.jumprelu_bandwidth) == (d.aux_k_coefficient,
                                                               d.jumprelu_bandwidth)
    assert sweep_configs(replace(cfg, width=0, arch=["topk"], k=[4]), _data(), rule)[0].d_sae == 128
    with pytest.raises(InterplabError, match="k=99 is larger than the SAE width d_sae=64"):
        sweep_configs(replace(cfg, k=[99]), _data(), rule)


def test_trainer_settings_come_from_trainer_config(tmp_path):
    cfg = SaeStudyConfig(store="s", batch_size=100)
    tcfg = trainer_config(cfg, _data(n_rows=1000), tmp_path, progress=False)
    assert tcfg.total_steps == 10  # 0 steps: one pass
    assert tcfg.data_identity == {"store": "x", "hook": HOOK, "batch_size": 100}
    assert tcfg.resample_every_steps == 1 and tcfg.dead_window_tokens == 250
    study = {"total_steps", "lr_warmup_steps", "sparsity_warmup_steps", "checkpoint_every_steps",
             "log_path", "checkpoint_dir", "data_identity", "dead_window_tokens",
             "resample_every_steps"}
    library = TrainerConfig(total_steps=1)
    for f in fields(TrainerConfig):
        if f.name not in study:
            assert getattr(tcfg, f.name) == getattr(library, f.name), f.name
    assert trainer_config(replace(cfg, trainer=replace(cfg.trainer, total_steps=7)), _data(),
                          tmp_path, False).total_steps == 7


def test_config_errors_are_clear(tmp_path):
    with pytest.raises(InterplabError, match="exactly one data source"):
        run_sae_study(SaeStudyConfig(), tmp_path)
    with pytest.raises(InterplabError, match="exactly one data source"):
        run_sae_study(SaeStudyConfig(store=tmp_path, model="tiny-llama"), tmp_path)
    with pytest.raises(InterplabError, match=r"unknown architecture\(s\) \['nope'\]"):
        run_sae_study(SaeStudyConfig(store=tmp_path, arch=["nope"]), tmp_path)


def test_run_hands_the_per_run_configs_to_the_executor(tmp_path):
    store = _harvest(tmp_path / "acts", 12)
    seen = []

    def executor(runs, tcfg, data, cfg):
        seen.append((runs, tcfg, data))
        return train_sweep(runs, tcfg, data, cfg)

    cfg = SaeStudyConfig(store=store, arch=["topk", "relu"], k=[4], sparsity=[1.0], width=32,
                         batch_size=32, trainer=replace(SaeStudyConfig().trainer, total_steps=4,
                                                        log_every_steps=2))
    result = run_sae_study(cfg, tmp_path / "out", progress=False, execute=executor)
    (runs, tcfg, data), = seen
    assert [sae_name(c) for c in runs] == ["topk_w32_k4", "relu_w32_l1"] == [
        r.name for r in result.runs]
    assert tcfg.total_steps == 4 == result.steps and data.hook == HOOK
    for r in result.runs:
        saved = json.loads((tmp_path / "out" / r.name / "config.json").read_text())
        assert saved["d_sae"] == 32 and 0 <= r.metrics["fraction_alive"] <= 1
    assert result.tokens_read > 0 and result.tokens_excluded < result.tokens_read
    again = json.loads(result.to_json(tmp_path / "result.json").read_text())
    assert again["config"]["store"] == str(store) and again["runs"][1]["name"] == "relu_w32_l1"
    loaded = SaeStudyResult.from_dict(again)
    assert again["study"] == "sae" and loaded.runs[1].name == "relu_w32_l1"
    assert loaded.config == result.config and loaded.steps == result.steps


# -- --null-control ------------------------------------------------------------------------------

class _RowsStore:
    """What ``DataSource.batches`` reads of a store: seeded shuffled batches with positions."""

    complete = True

    def __init__(self, x):
        import torch

        self.x = torch.as_tensor(x, dtype=torch.float32)

    def iter_batches(self, batch_size, hook, *, seed, epochs, drop_last, with_position):
        import torch

        g = torch.Generator().manual_seed(seed)
        for _ in range(epochs):
            order = torch.randperm(len(self.x), generator=g)
            for i in range(0, len(order) - batch_size + 1, batch_size):
                idx = order[i:i + batch_size]
                yield self.x[idx], idx % 40  # every 40th row is a position 0


def _rows_source(x) -> DataSource:
    return DataSource(hook=HOOK, d_in=x.shape[1], n_rows=len(x), identity={"store": "rows"},
                      model_name=None, context_length=None, store=_RowsStore(x))


def _compare(x, null="gaussian"):
    from interplab.studies.sae import null_comparison

    cfg = SaeStudyConfig(store="rows", arch=["topk", "relu"], k=[4], width=96, null_control=null)
    data = _rows_source(x)
    rule = cfg.exclusion_rule()
    return null_comparison(cfg, data, rule, sweep_configs(cfg, data, rule))


def test_null_control_beats_a_gaussian_null_on_sparse_dictionary_data():
    from interplab.sae.synthetic import random_dictionary, sparse_dictionary_batches

    x = next(sparse_dictionary_batches(random_dictionary(64, 24, seed=0), 3000, 1,
                                       mean_active=3.0, seed=1)).numpy()
    out = _compare(x)
    assert out["null"] == "gaussian" and 2500 < out["n_rows"] < 3000  # position 0 left out
    assert out["n_heldout"] == round(out["n_rows"] * 0.25)
    assert list(out["compared"]) == ["topk_w96_k4"]
    assert "λ" in out["not_compared"]["relu_w96_l1"]
    c = out["compared"]["topk_w96_k4"]
    assert c["model"]["heldout"]["fve"] > 0.7 > c["null"]["heldout"]["fve"]
    assert c["model"]["heldout"]["l0"] <= 4 and c["model"]["train"]["n_features"] == 96
    d = c["model_minus_null"]
    assert d["fve_heldout"]["lo"] > 0.15 and d["fve_train"]["lo"] > 0.15
    assert d["fve_heldout"]["lo"] <= d["fve_heldout"]["value"] <= d["fve_heldout"]["hi"]
    # the planted structure survives the correction across configs and metrics
    assert out["statistics"]["m"] == 3 and out["statistics"]["alpha"] == 0.05
    for key in ("fve_train", "fve_heldout"):
        assert d[key]["verdict"] == "above the null" and d[key]["at_floor"] and d[key]["q_bound"]
        assert out["statistics"]["tests"][f"{key}: topk_w96_k4"]["q"] == d[key]["q"]
    assert out["summary"] == [
        f"topk_w96_k4: held-out FVE {c['model']['heldout']['fve']:.3f} vs null "
        f"{c['null']['heldout']['fve']:.3f}, model − null {d['fve_heldout']['value']:+.3f} "
        f"[{d['fve_heldout']['lo']:+.3f}, {d['fve_heldout']['hi']:+.3f}], above the null after "
        f"correction (q ≤ {d['fve_heldout']['q']:.3f})"]


def test_null_control_is_about_zero_when_the_data_is_itself_gaussian():
    import numpy as np

    rng = np.random.default_rng(0)
    x = (rng.standard_normal((3000, 24)) * np.linspace(0.5, 2.0, 24) + 1.0).astype(np.float32)
    out = _compare(x)
    d = out["compared"]["topk_w96_k4"]["model_minus_null"]
    for key in ("fve_train", "fve_heldout"):
        assert d[key]["lo"] <= 0 <= d[key]["hi"] and abs(d[key]["value"]) < 0.05, (key, d[key])
        assert d[key]["verdict"] == "not significant" and d[key]["p"] > 0.05
    assert "not significant after correction (q = " in out["summary"][0]


def test_null_control_with_too_few_rows_says_so():
    import numpy as np

    out = _compare(np.random.default_rng(0).standard_normal((200, 24)).astype(np.float32))
    assert out["compared"] == {} and "only" in out["not_compared"]["topk_w96_k4"]


def test_unknown_null_control_is_refused_before_any_training(tmp_path):
    def executor(*args):
        raise AssertionError("trained")

    with pytest.raises(InterplabError, match="unknown --null-control 'reset'; choose one of "
                                             "gaussian, gaussian-mixture, hypercube"):
        run_sae_study(SaeStudyConfig(store=tmp_path, null_control="reset"), tmp_path / "out",
                      execute=executor)
    assert not (tmp_path / "out").exists()


def test_sae_train_null_control_on_a_tiny_store(tmp_path, capsys):
    from interplab.cli.main import main
    from interplab.studies.sae import SaeStudyResult

    store = _harvest(tmp_path / "acts", 20)
    out = tmp_path / "saes"
    assert main(["sae", "train", "--store", str(store), "--out", str(out), "--hook", HOOK,
                 "--arch", "topk,relu", "--k", "4", "--width", "64", "--steps", "4",
                 "--batch-size", "32", "--null-control", "hypercube"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    nc = json.loads((out / "null_control.json").read_text())
    assert nc["null"] == "hypercube" and nc["n_rows"] >= 256
    assert list(nc["compared"]) == ["topk_w64_k4"] and list(nc["not_compared"]) == ["relu_w64_l1"]
    assert set(nc["compared"]["topk_w64_k4"]["model_minus_null"]) == {
        "fve_train", "fve_heldout", "l0_heldout", "features_used_heldout"}
    assert "null control (hypercube" in err and "topk_w64_k4: held-out FVE" in err
    assert "relu_w64_l1: not compared" in err
    # A result written before the field existed still loads, without the section.
    cfg = SaeStudyConfig(store=store, arch=["topk"], k=[4], width=64, batch_size=32,
                         trainer=replace(SaeStudyConfig().trainer, total_steps=2))
    old = run_sae_study(cfg, tmp_path / "plain", progress=False).to_dict()
    assert old.pop("null_control") is None and not (tmp_path / "plain" / "null_control.json").exists()
    assert SaeStudyResult(**old).null_control is None


def test_null_control_on_a_model_source_retrains_batchtopk(tmp_path):
    cfg = SaeStudyConfig(model="tiny-llama", hook=HOOK, corpus="python-docs", context_length=32,
                         max_sequences=40, arch=["batchtopk"], k=[4], width=64, batch_size=32,
                         trainer=replace(SaeStudyConfig().trainer, total_steps=4),
                         null_control="gaussian-mixture")
    nc = run_sae_study(cfg, tmp_path, progress=False).null_control
    assert nc["not_compared"] == {} and list(nc["compared"]) == ["batchtopk_w64_k4"]
    c = nc["compared"]["batchtopk_w64_k4"]
    assert 256 <= nc["n_rows"] <= 40 * 31 and c["model"]["heldout"]["n_rows"] == nc["n_heldout"]
    assert c["null"]["train"]["n_rows"] == nc["n_rows"] - nc["n_heldout"]
    assert json.loads((tmp_path / "null_control.json").read_text()) == json.loads(json.dumps(nc))
