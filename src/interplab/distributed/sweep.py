"""SAE sweeps with one configuration per task, all reading the same activation store.

:func:`plan_sweep` fixes everything a task needs before anything runs: its SAE configuration,
the optimisation settings, the seed (which sets the SAE's initial weights, the data order and
the initialisation sample) and its output folder. :func:`train_sweep_task` opens the store
read-only, reads the batches the local sweep reads (same seed, same order, same exclusion rule),
trains that one SAE and saves it. A one-SAE trainer does for its SAE exactly what a sweep's
trainer does for each of its SAEs, so with one thread per task every SAE is bit-identical to the
one ``SAETrainer(all_configs, ...)`` trains in one local pass, whichever executor ran it.

Each task writes into its own folder ``out/<run name>/``: the SAE (``config.json``,
``weights.safetensors``), ``train_log.jsonl`` and ``checkpoint/``; running the same plan again
resumes every unfinished task from its checkpoint and leaves finished ones as they are.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from interplab.activations.exclusion import ExclusionCount, ExclusionRule, ordinary_batches
from interplab.errors import InterplabError
from interplab.sae.base import SAEConfig
from interplab.sae.trainer import TrainerConfig

__all__ = ["SweepTask", "plan_sweep", "run_sweep", "study_executor", "train_sweep_task"]


@dataclass(frozen=True)
class SweepTask:
    """One SAE of a sweep: everything a worker needs, and nothing it must share."""

    index: int
    store: str  # a path every worker can read (shared storage on a cluster)
    hook: str
    sae_config: SAEConfig
    trainer_config: TrainerConfig
    batch_size: int
    epochs: int
    exclusion: ExclusionRule
    out: str  # this SAE's folder


def plan_sweep(store: str | os.PathLike, hook: str, sae_configs: list[SAEConfig],
               trainer_config: TrainerConfig, *, batch_size: int, out: str | os.PathLike,
               exclusion: ExclusionRule, n_rows: int) -> list[SweepTask]:
    """One task per configuration, in the order given. Every task gets the sweep's seed
    (``trainer_config.seed``) for its data order and initialisation sample, its own log and
    checkpoint folder, and as many epochs over the store as ``total_steps`` batches need."""
    from interplab.sae.sweep import sae_name

    names = [sae_name(c) for c in sae_configs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InterplabError(f"the sweep names the same SAE twice ({', '.join(dupes)}); give "
                             "each configuration once")
    c = trainer_config
    epochs = max(1, -(-c.total_steps * batch_size // max(n_rows, 1)))
    tasks = []
    for i, (config, name) in enumerate(zip(sae_configs, names, strict=True)):
        folder = Path(out).resolve() / name  # absolute: workers may start in another folder
        tcfg = dataclasses.replace(c, log_path=str(folder / "train_log.jsonl"),
                                   checkpoint_dir=str(folder / "checkpoint"), progress=False)
        tasks.append(SweepTask(i, str(Path(store).resolve()), hook, config, tcfg, batch_size,
                               epochs, exclusion, str(folder)))
    return tasks


def train_sweep_task(task: SweepTask) -> dict:
    """Train and save one SAE of a plan; returns its name, folder, step and token counts, input
    scale, exclusion count and last logged metrics (JSON-serialisable)."""
    from interplab.activations import ActivationStore
    from interplab.sae import SAETrainer, save_sae

    store = ActivationStore(task.store)
    count = ExclusionCount()
    seed = task.trainer_config.seed
    batches = ordinary_batches(
        store.iter_batches(task.batch_size, task.hook, seed=seed, epochs=task.epochs,
                           drop_last=True, with_position=True), task.exclusion, count)
    trainer = SAETrainer([task.sae_config], task.trainer_config).fit(batches)
    save_sae(trainer.finalized_saes()[0], task.out)
    last = trainer.log_history[-1]["saes"][0] if trainer.log_history else {}
    return {"name": Path(task.out).name, "path": task.out, "steps": trainer.step,
            "tokens": trainer.tokens_seen, "scale": trainer.scale,
            "scale_tokens": trainer.scale_tokens, "exclusion": count.to_dict(),
            "metrics": last}  # the SAE's last training-log entry ({} if none was logged)


def run_sweep(tasks: list[SweepTask], executor=None) -> list[dict]:
    """Run every task of a plan through ``executor`` (None: one after the other here); the
    results come back in plan order."""
    from interplab.distributed.executor import LocalExecutor

    executor = executor or LocalExecutor()
    results: dict[int, dict] = dict(executor.run(train_sweep_task, tasks,
                                                 description="sae sweep (SAEs)"))
    return [results[i] for i in range(len(tasks))]


def study_executor(executor):
    """An ``execute`` for :func:`interplab.studies.sae.run_sae_study`: the study's runs as one
    task each on ``executor`` (e.g. a ``RayExecutor``), each SAE equal to the one the local
    :func:`~interplab.studies.sae.train_sweep` trains. Needs a store (workers read it by path)."""

    def execute(runs, tcfg, data, cfg):
        from interplab.sae import load_sae
        from interplab.sae.sweep import SweepOutcome

        if data.store is None or cfg.extend_steps:
            raise InterplabError("a distributed sweep trains from a --store (harvest one with "
                                 "`interplab harvest --for-sae --executor ray`), without "
                                 "--extend-steps")
        plan = plan_sweep(data.store.path, data.hook, runs, tcfg, batch_size=cfg.batch_size,
                          out=Path(tcfg.checkpoint_dir).parent, exclusion=cfg.exclusion_rule(),
                          n_rows=data.n_rows)
        results = run_sweep(plan, executor)
        first = results[0]
        return SweepOutcome(
            saes=[load_sae(r["path"]) for r in results],
            last_metrics=[r["metrics"] for r in results], steps=first["steps"],
            tokens_seen=first["tokens"], input_scale=first["scale"],
            scale_tokens=first["scale_tokens"], tokens_read=first["exclusion"]["n_seen"],
            tokens_excluded=first["exclusion"]["n_excluded"])

    return execute
