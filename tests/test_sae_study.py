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
    with pytest.raises(InterplabError, match="k=99 is larger than the width 64"):
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
    again = json.loads(result.save(tmp_path / "result.json").read_text())
    assert again["config"]["store"] == str(store) and again["runs"][1]["name"] == "relu_w32_l1"
