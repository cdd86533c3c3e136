"""A harvest into an activation store, as a typed config and one function.

``run_harvest(HarvestConfig(...))`` validates the settings, reads the texts, loads the model and
streams the activations of the hooks into the store folder (:func:`~interplab.activations.
harvest_to_store`; re-running the same config resumes it). The config is the single place its
defaults and help texts are written: ``interplab harvest`` derives its options from it, and the
command that resumes a harvest (recorded in the store's manifest) is generated from it.
"""

from __future__ import annotations

from pathlib import Path

from interplab.activations import ActivationStore, harvest_to_store
from interplab.activations.exclusion import ExclusionRule
from interplab.activations.store import parse_dtype
from interplab.activations.texts import read_texts
from interplab.distributed import LocalExecutor, ModelSpec, RayExecutor
from interplab.models import HookPoint
from interplab.studies.harvest.config import HarvestConfig


def run_harvest(cfg: HarvestConfig, *, executor: LocalExecutor | RayExecutor | None = None,
                command: str | None = None, progress: bool = True) -> ActivationStore:
    """Harvest ``cfg`` into its store folder and return the
    :class:`~interplab.activations.ActivationStore`. ``executor``: a remote executor
    (:func:`interplab.distributed.make_executor`) writes one shard per task; ``command`` is
    recorded in the manifest as the command that resumes the harvest."""
    cfg.validate()
    text_list = read_texts(cfg.texts, column=cfg.column)
    hook_list = [HookPoint.parse(h) for h in cfg.hooks if h.strip()]
    stored_dtype = parse_dtype(cfg.dtype)
    compute = parse_dtype(cfg.compute_dtype) if cfg.compute_dtype else None
    local_file = Path(cfg.model).expanduser()
    spec = ModelSpec(str(local_file.resolve()) if local_file.exists() else cfg.model,
                     device=cfg.device or None)  # workers may start in another folder
    lm = spec.load()
    remote = executor is not None and getattr(executor, "remote", False)
    return harvest_to_store(
        lm, text_list, hook_list, cfg.out, cfg.positions,
        batch_size=cfg.batch_size, rows_per_shard=cfg.rows_per_shard, dtype=stored_dtype,
        dataset_name=cfg.texts.name, max_length=cfg.max_length or None,
        truncation="error" if cfg.strict_length else "warn", compute_dtype=compute,
        command=command, exclusion=ExclusionRule() if cfg.for_sae else None,
        executor=executor if remote else None, worker_model=spec, progress=progress,
    )
