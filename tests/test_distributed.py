"""Executors, sharded harvests and distributed SAE sweeps: a Ray run equals a local run.

The Ray tests share one local cluster (``ray.init(num_cpus=2)``, started once for the module);
without Ray installed they are skipped, except under INTERPLAB_STRICT_TESTS=1 (CI installs it).
"""

import os
import re
from pathlib import Path

import pytest
import torch

from interplab.activations import ActivationStore, harvest_to_store
from interplab.activations.exclusion import ExclusionRule
from interplab.activations.positions import Positions
from interplab.activations.to_store import plan_shards
from interplab.distributed import (
    LocalExecutor,
    ModelSpec,
    RayExecutor,
    make_executor,
    plan_sweep,
    run_sweep,
)
from interplab.errors import InterplabError
from interplab.sae import SAEConfig, SAETrainer, TrainerConfig, load_sae
from tests._ray_models import DiesOnceSpec, OtherWeightsSpec
from tests.conftest import TEXTS, skip_unless_strict

MODEL = "tiny-llama"
HOOKS = ["blocks.1.hook_resid_post", "blocks.0.hook_mlp_out"]
CORPUS = [f"{t} ({i})" for i in range(10) for t in TEXTS]  # 50 texts
SETTINGS = {"batch_size": 4, "rows_per_shard": 120, "texts_per_chunk": 4, "progress": False}


@pytest.fixture(scope="module")
def ray_cluster():
    try:
        import ray
    except ImportError:
        skip_unless_strict("Ray is not installed (pip install 'interplab[ray]')")
    from interplab.distributed.executor import init_local_ray

    init_local_ray(ray, num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


def _files(folder: Path) -> dict[str, bytes]:
    """Every file of a folder (a store's manifest included), but not a store writer's lock."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())
            if p.is_file() and p.name != ".lock"}


def _harvest(out: Path, executor=None, model: ModelSpec | None = None, **kw):
    lm = ModelSpec(MODEL).load()
    args = {**SETTINGS, **kw}
    return harvest_to_store(lm, CORPUS, HOOKS, out, "all", executor=executor,
                            worker_model=model or ModelSpec(MODEL), command="interplab harvest …",
                            **args)


# ------------------------------------------------------------------------------- no Ray needed


def test_local_cluster_workers_keep_the_driver_priority(ray_cluster):
    """Ray's default worker niceness (15) starves tasks on a busy machine; ours start at 0."""
    import os

    @ray_cluster.remote
    def niceness() -> int:
        return os.nice(0)

    assert ray_cluster.get(niceness.remote()) == os.nice(0)


def test_shard_plan_ends_at_chunk_boundaries_once_rows_reach_the_shard_size():
    ids = [[1] * n for n in (3, 5, 2, 7, 1, 4, 6)]  # 28 tokens
    bounds = plan_shards(ids, Positions.parse("all"), True, 0, chunk=2, rows_per_shard=9)
    assert bounds == [(0, 4), (4, 7)]  # rows 3+5+2+7=17 ≥ 9 after chunk 2; then the rest
    assert plan_shards(ids, Positions.parse("last"), True, 0, chunk=2, rows_per_shard=3) == [
        (0, 4), (4, 7)]
    # resuming from a chunk boundary plans the same remaining shards
    assert plan_shards(ids, Positions.parse("all"), True, 4, 2, 9) == [(4, 7)]


def test_local_executor_writes_the_store_the_default_loop_writes(tmp_path):
    default = _harvest(tmp_path / "default")
    looped = _harvest(tmp_path / "looped", executor=LocalExecutor(threads_per_task=1))
    assert len(default.shards) >= 3
    assert _files(tmp_path / "default") == _files(tmp_path / "looped")
    assert looped.complete


def test_executor_flags_are_checked():
    with pytest.raises(InterplabError, match="unknown executor 'dask'"):
        make_executor("dask")
    with pytest.raises(InterplabError, match="need --executor ray"):
        make_executor("local", workers=4)
    with pytest.raises(InterplabError, match="positive integer"):
        RayExecutor(workers=0)
    with pytest.raises(InterplabError, match="--workers must be ≥ 0"):
        make_executor("ray", workers=-1)
    assert isinstance(make_executor("ray", workers=2), RayExecutor)


def test_ray_executor_without_ray_says_how_to_install_it(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray → ImportError
    with pytest.raises(InterplabError, match=r"pip install 'interplab\[ray\]'"):
        list(RayExecutor(workers=1).run(abs, [1]))


def test_remote_executor_needs_a_worker_model(tmp_path):
    lm = ModelSpec(MODEL).load()

    class Remote(LocalExecutor):
        remote = True

    with pytest.raises(InterplabError, match="pass worker_model"):
        harvest_to_store(lm, CORPUS, HOOKS, tmp_path / "s", executor=Remote(), **SETTINGS)
    assert not (tmp_path / "s").exists()  # refused before the folder was created


def test_each_sae_of_a_sweep_equals_the_sae_trained_alone_resampling_included():
    g = torch.Generator().manual_seed(1)
    data = [torch.randn(32, 16, generator=g) for _ in range(30)]
    configs = [SAEConfig("topk", 16, 32, k=4, seed=3),
               SAEConfig("relu", 16, 32, sparsity_coefficient=10.0, seed=3),
               SAEConfig("relu", 16, 32, sparsity_coefficient=3.0, seed=3)]

    def train(cfgs):
        tcfg = TrainerConfig(total_steps=30, lr=3e-2, seed=3, resample_every_steps=6,
                             dead_window_tokens=64, log_every_steps=6, init_sample_size=64,
                             scale_estimation_tokens=256)
        return SAETrainer(cfgs, tcfg).fit(data)

    joint = train(configs)
    resampled = [sum(r["saes"][i]["n_resampled"] for r in joint.log_history) for i in range(3)]
    assert resampled[1] > 0 and resampled[2] > 0  # both ReLUs drew from their streams
    for i, sae in enumerate(joint.finalized_saes()):
        alone = train([configs[i]]).finalized_saes()[0]
        for name, tensor in sae.state_dict().items():
            assert torch.equal(tensor, alone.state_dict()[name]), (i, name)


def test_a_sweep_plan_run_again_resumes_and_changes_nothing_finished(tmp_path):
    store, configs, tcfg = _sweep_inputs(tmp_path)
    plan = plan_sweep(store.path, HOOKS[0], configs[:2], tcfg, batch_size=32,
                      out=tmp_path / "saes", exclusion=ExclusionRule(), n_rows=store.n_rows)
    first = run_sweep(plan)
    files = {r["name"]: _files(Path(r["path"])) for r in first}
    again = run_sweep(plan, LocalExecutor())
    assert [r["steps"] for r in again] == [30, 30]
    for r in again:
        now = _files(Path(r["path"]))
        assert now["weights.safetensors"] == files[r["name"]]["weights.safetensors"]
        assert now["train_log.jsonl"] == files[r["name"]]["train_log.jsonl"]  # not repeated


# ------------------------------------------------------------------------------------ on Ray


def test_ray_harvest_is_byte_identical_to_the_local_one(ray_cluster, tmp_path):
    for_sae = {"exclusion": ExclusionRule()}
    local = _harvest(tmp_path / "local", **for_sae)
    ray_store = _harvest(tmp_path / "ray", executor=RayExecutor(workers=2), **for_sae)
    assert len(local.shards) >= 3 and ray_store.complete
    assert ray_store.manifest["sae_exclusion_count"]["n_excluded"] >= len(CORPUS)  # position 0
    assert _files(tmp_path / "local") == _files(tmp_path / "ray")


def test_ray_resumes_a_local_store_and_the_result_is_identical(ray_cluster, tmp_path):
    full = _harvest(tmp_path / "full")
    # an interrupted harvest: the first shard's texts only, as a killed local run leaves it
    part = tmp_path / "part"
    _harvest(part)
    m = ActivationStore(part).manifest
    for sh in m["shards"][1:]:
        (part / sh["file"]).unlink()
    import json

    from interplab.fileio import atomic_write_bytes
    first = m["shards"][0]
    m.update(shards=[first], n_rows=first["n_rows"], texts_done=first["text_end"], complete=False)
    atomic_write_bytes(part / "manifest.json", json.dumps(m, indent=1, sort_keys=True).encode())
    _harvest(part, executor=RayExecutor(workers=2))
    assert full.complete and _files(tmp_path / "full") == _files(part)


def test_a_task_whose_worker_dies_is_retried_and_the_store_is_identical(ray_cluster, tmp_path):
    marker = tmp_path / "died"
    local = _harvest(tmp_path / "local")
    spec = DiesOnceSpec(MODEL, marker=str(marker))
    _harvest(tmp_path / "ray", executor=RayExecutor(workers=2, max_retries=2), model=spec)
    assert marker.exists() and int(marker.read_text()) != os.getpid()  # a worker did die
    assert local.complete and _files(tmp_path / "local") == _files(tmp_path / "ray")


def test_a_worker_that_dies_beyond_the_retries_is_one_clear_error(ray_cluster, tmp_path):
    spec = DiesOnceSpec(MODEL, marker=str(tmp_path / "died"))
    with pytest.raises(InterplabError, match="worker process died 1 time"):
        _harvest(tmp_path / "s", executor=RayExecutor(workers=1, max_retries=0), model=spec)
    assert not ActivationStore(tmp_path / "s").complete  # and the same command resumes it
    assert _harvest(tmp_path / "s", executor=RayExecutor(workers=2), model=spec).complete


def test_a_worker_with_other_weights_is_refused(ray_cluster, tmp_path):
    with pytest.raises(InterplabError, match="other weights"):
        _harvest(tmp_path / "s", executor=RayExecutor(workers=2), model=OtherWeightsSpec(MODEL))
    assert not ActivationStore(tmp_path / "s").complete


def _sweep_inputs(tmp_path):
    store = _harvest(tmp_path / "store", exclusion=ExclusionRule())
    d = store.d_model
    configs = [SAEConfig("topk", d, 64, k=4, hook=HOOKS[0], seed=3),
               SAEConfig("relu", d, 64, sparsity_coefficient=10.0, hook=HOOKS[0], seed=3),
               SAEConfig("relu", d, 64, sparsity_coefficient=3.0, hook=HOOKS[0], seed=3)]
    tcfg = TrainerConfig(total_steps=30, lr=3e-2, seed=3, resample_every_steps=6,
                         dead_window_tokens=64, scale_estimation_tokens=256, init_sample_size=64,
                         log_every_steps=6)
    return store, configs, tcfg


def test_ray_sweep_gives_the_saes_of_one_local_sweep_bit_for_bit(ray_cluster, tmp_path):
    from interplab.activations.exclusion import ExclusionCount, ordinary_batches

    store, configs, tcfg = _sweep_inputs(tmp_path)
    batch = 32
    plan = plan_sweep(store.path, HOOKS[0], configs, tcfg, batch_size=batch,
                      out=tmp_path / "saes", exclusion=ExclusionRule(), n_rows=store.n_rows)
    results = run_sweep(plan, RayExecutor(workers=2))
    # the reference: one trainer for the whole sweep, one pass over the store, in this process
    epochs = plan[0].epochs
    batches = ordinary_batches(store.iter_batches(batch, HOOKS[0], seed=tcfg.seed, epochs=epochs,
                                                  drop_last=True, with_position=True),
                               ExclusionRule(), ExclusionCount())
    with torch.inference_mode(False):
        joint = SAETrainer(configs, tcfg).fit(batches)
    resampled = [sum(r["saes"][i]["n_resampled"] for r in joint.log_history) for i in range(3)]
    assert resampled[0] == 0 and resampled[1] > 0 and resampled[2] > 0  # both ReLUs resampled
    for sae, result in zip(joint.finalized_saes(), results, strict=True):
        ray_sae = load_sae(result["path"])
        assert result["steps"] == 30
        for name, tensor in sae.state_dict().items():
            assert torch.equal(tensor, ray_sae.state_dict()[name]), (result["name"], name)
    # the local executor runs the same plan to the same files
    local = run_sweep(plan_sweep(store.path, HOOKS[0], configs, tcfg, batch_size=batch,
                                 out=tmp_path / "local", exclusion=ExclusionRule(),
                                 n_rows=store.n_rows), LocalExecutor(threads_per_task=1))
    for a, b in zip(results, local, strict=True):
        assert (Path(a["path"]) / "weights.safetensors").read_bytes() == (
            Path(b["path"]) / "weights.safetensors").read_bytes()


def test_a_task_error_is_raised_as_itself(ray_cluster, tmp_path):
    store, configs, tcfg = _sweep_inputs(tmp_path)
    plan = plan_sweep(store.path, "blocks.9.hook_resid_post", configs[:1], tcfg, batch_size=32,
                      out=tmp_path / "saes", exclusion=ExclusionRule(), n_rows=store.n_rows)
    with pytest.raises(InterplabError, match="holds no hook 'blocks.9.hook_resid_post'"):
        run_sweep(plan, RayExecutor(workers=2))


def test_cli_ray_harvest_and_sweep_equal_the_local_commands(ray_cluster, tmp_path, capsys):
    from interplab.cli.main import main

    texts = tmp_path / "t.txt"
    texts.write_text("\n".join(CORPUS) + "\n", encoding="utf-8")
    for name, extra in (("local", []), ("ray", ["--executor", "ray", "--workers", "2"])):
        # the same --out for both (the manifest records it in the resume command), then moved
        assert main(["harvest", "--model", MODEL, "--texts", str(texts), "--hooks", HOOKS[0],
                     "--out", str(tmp_path / "store"), "--batch-size", "4", "--rows-per-shard",
                     "150", "--for-sae", *extra]) == 0
        (tmp_path / "store").rename(tmp_path / name)
        assert main(["sae", "train", "--store", str(tmp_path / name), "--arch", "topk,relu",
                     "--k", "4", "--width", "64", "--steps", "12", "--batch-size", "32",
                     "--out", str(tmp_path / f"saes-{name}"), *extra]) == 0
    assert len(ActivationStore(tmp_path / "local").shards) >= 2
    assert _files(tmp_path / "local") == _files(tmp_path / "ray")
    for run in ("topk_w64_k4", "relu_w64_l1"):
        local, ray_sae = (load_sae(tmp_path / f"saes-{n}" / run) for n in ("local", "ray"))
        for key, tensor in local.state_dict().items():
            assert torch.equal(tensor, ray_sae.state_dict()[key]), (run, key)
    err = " ".join(capsys.readouterr().err.split())
    assert re.search(r"sae sweep \(SAEs\): 2/2 \w+ done", err), err[-800:]  # the Ray path ran
    assert main(["harvest", "--model", MODEL, "--texts", str(texts), "--hooks", HOOKS[0],
                 "--out", str(tmp_path / "x"), "--workers", "2"]) == 2
    assert "need --executor ray" in capsys.readouterr().err
