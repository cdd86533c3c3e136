"""Every study in one table: its command, config, run, result file, report and printed summary.

The CLI generates each study's command from its entry (``cli/studies.py``: options from the
config dataclass, then run → save JSON → render the report → print the summary, written once),
and ``interplab rerun result.json`` finds the study a result file names and runs its saved
config again. Entries name code by ``"module:attribute"`` so that reading this table (to build
``interplab --help``) imports no study's run code and no torch.
"""

from __future__ import annotations

import importlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from interplab.errors import InterplabError


def _resolve(target: str) -> Callable[..., Any]:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class Study:
    """One study: ``run(config, out_dir, progress)`` returns its result (a
    :class:`~interplab.study.result.StudyResult`), ``report(result, path)`` writes its HTML
    page (``""``: the study has none), ``summary(result)`` gives the lines the command prints.

    ``own_command`` names a study whose command is not generated from this table (``sae train``:
    a sub-command that resumes from its checkpoint and takes executor options); its result
    still re-runs with ``interplab rerun``."""

    name: str
    config: str  # "module:ConfigClass" (torch-free module)
    result: str  # "module:ResultClass"
    run: str
    report: str
    summary: str
    json_name: str
    help: str
    rename: dict[str, str] = field(default_factory=dict)
    exclude: frozenset[str] = frozenset()
    own_command: str = ""

    def config_class(self) -> type:
        return _resolve(self.config)  # type: ignore[return-value]

    def result_class(self) -> type:
        return _resolve(self.result)  # type: ignore[return-value]

    def execute(self, config: Any, out: Path, progress: bool = True
                ) -> tuple[Any, Path, Path | None, list[str]]:
        """Run ``config`` into ``out``: the result, its JSON and HTML paths (None without a
        report), the summary lines. The result file is written before the report, so a failing
        figure loses nothing."""
        out = Path(out)
        validate = getattr(config, "validate", None)
        if validate is not None:  # a refused config leaves no folder behind
            validate()
        made = [p for p in (out, *out.parents) if not p.exists()]
        before = set(out.iterdir()) if out.is_dir() else set()
        out.mkdir(parents=True, exist_ok=True)
        try:
            result = _resolve(self.run)(config, out, progress)
        except BaseException:
            # refused once running (bad data, Ctrl-C before any write): what it kept stays
            _remove_empty(out, before, made)
            raise
        json_path = result.to_json(out / self.json_name)
        html_path = _resolve(self.report)(result, out / "report.html") if self.report else None
        return result, json_path, html_path, list(_resolve(self.summary)(result))


def _remove_empty(out: Path, before: set[Path], made: list[Path]) -> None:
    """Remove the folders a failed run created and wrote no file in: its new sub-folders of
    ``out`` and, when ``out`` is left empty, the folders it made (``made``: ``out`` first, then
    the parents it needed). A folder that holds a file is kept whole."""
    for p in set(out.iterdir()) - before if out.is_dir() else ():
        if p.is_dir() and not any(q.is_file() for q in p.rglob("*")):
            shutil.rmtree(p, ignore_errors=True)
    for folder in made:
        try:
            folder.rmdir()
        except OSError:  # not empty (or gone): keep it and everything above it
            return


# -- how each study runs into a folder (its cache, checkpoints) --------------------------------

def run_truth_into(config: Any, out: Path, progress: bool) -> Any:
    from interplab.studies.truth.run import run_truth

    # Harvested activations stay in the output folder: a re-run (or a run that failed after the
    # harvest) reuses them instead of running the model again.
    return run_truth(config, progress=progress, cache_dir=out / "activations")


def run_xor_into(config: Any, out: Path, progress: bool) -> Any:
    from interplab.studies.xor.run import run_xor

    return run_xor(config, cache_dir=out / "activations", progress=progress)


def run_belief_into(config: Any, out: Path, progress: bool) -> Any:
    from interplab.studies.belief import run_belief_study

    return run_belief_study(config, out_dir=out, progress=progress)


def run_causal_into(config: Any, out: Path, progress: bool) -> Any:
    from interplab.studies.causal.run import run_causal

    return run_causal(config, progress=progress, cache_dir=out / "activations")


def run_plain(target: str) -> Callable[[Any, Path, bool], Any]:
    def run(config: Any, out: Path, progress: bool) -> Any:
        return _resolve(target)(config)

    return run


STUDIES: dict[str, Study] = {s.name: s for s in (
    Study("truth", "interplab.studies.truth.config:TruthConfig",
          "interplab.studies.truth.config:TruthResult",
          "interplab.studies.registry:run_truth_into", "interplab.report.truth:write_truth_report",
          "interplab.report.truth:summary_lines", "truth.json",
          "Run the truth study: probes across layers and datasets, with controls, and a report.",
          rename={"train_sets": "train"}),
    Study("xor", "interplab.studies.xor.config:XorConfig", "interplab.studies.xor.config:XorResult",
          "interplab.studies.registry:run_xor_into", "interplab.report.xor:write_xor_report",
          "interplab.report.xor:summary_lines", "xor.json",
          "XOR study: probes for features, their XORs, controls and the generalization cost.",
          exclude=frozenset({"data.pair_by", "data.group_column"})),
    Study("weights", "interplab.studies.weights.config:WeightsConfig",
          "interplab.studies.weights.config:WeightsResult",
          "interplab.studies.registry:run_weights_into",
          "interplab.report.weights:write_weights_report",
          "interplab.report.weights:summary_lines", "weights.json",
          "SVD of every block's attention-output and MLP matrices against a random-matrix null."),
    Study("erase", "interplab.studies.erasure.config:ErasureConfig",
          "interplab.studies.erasure.config:ErasureResult",
          "interplab.studies.registry:run_erasure_into",
          "interplab.report.erasure:write_erasure_report",
          "interplab.report.erasure:summary_lines", "erasure.json",
          "Erase a concept at one layer with every method; held-out checks with a "
          "random-subspace control, in-model ΔCE/KL, and how many linear directions carry it."),
    Study("nulls", "interplab.studies.nulls.config:NullsConfig",
          "interplab.studies.nulls.config:NullsResult",
          "interplab.studies.registry:run_nulls_into", "interplab.report.nulls:write_nulls_report",
          "interplab.report.nulls:summary_lines", "nulls.json",
          "Run probes and SAEs on real activations and on every null source; report method − "
          "null."),
    Study("belief", "interplab.studies.belief.config:BeliefStudyConfig",
          "interplab.studies.belief.config:BeliefStudyResult",
          "interplab.studies.registry:run_belief_into",
          "interplab.report.belief:render_belief_report",
          "interplab.report.belief:summary_lines", "result.json",
          "Belief-state geometry: process → toy transformer → regression onto beliefs → report.",
          rename={"process_params": "param", "model.context_length": "context",
                  "model.n_layers": "layers", "model.n_heads": "heads", "train.n_steps": "steps",
                  "num_threads": "threads"},
          # set by the study itself: the vocabulary from the process, the training seed from
          # --seed, the stopping loss from --stop-loss-ratio
          exclude=frozenset({"model.vocab_size", "train.seed", "train.stop_loss"})),
    Study("reroute", "interplab.studies.reroute.config:RerouteConfig",
          "interplab.studies.reroute.config:RerouteResult",
          "interplab.studies.reroute.run:run_into",
          "interplab.report.reroute:write_reroute_report",
          "interplab.report.reroute:summary_lines", "reroute.json",
          "Representation rerouting vs LoRA + probe at equal parameters vs a probe: detection, "
          "attacks and retain cost, over several training seeds.",
          exclude=frozenset({"data.pair_by", "data.group_column"})),
    Study("circuit", "interplab.studies.circuit.config:CircuitConfig",
          "interplab.studies.circuit.config:CircuitResult",
          "interplab.studies.circuit.run:run_circuit_into",
          "interplab.report.circuit:write_circuit_report",
          "interplab.report.circuit:summary_lines", "circuit.json",
          "Sparse feature circuit: SAE latents attributed (AtP, IG, exact), faithfulness and "
          "completeness with a random control, edges, and AtP vs IG across SAE architectures.",
          exclude=frozenset({"data.pair_by", "data.group_column"})),
    Study("shift", "interplab.studies.shift.config:ShiftConfig", "interplab.studies.shift.config:ShiftResult",
          "interplab.studies.shift.run:run_shift_into", "interplab.report.shift:write_shift_report",
          "interplab.report.shift:summary_lines", "shift.json",
          "SHIFT: ablate the SAE latents tied to a spurious cue, retrain the probe, and compare "
          "worst-group accuracy with random-latent, LEACE and balanced-data controls.",
          exclude=frozenset({"data.pair_by", "data.group_column"})),
    Study("causal", "interplab.studies.causal.config:CausalConfig",
          "interplab.studies.causal.config:CausalResult",
          "interplab.studies.registry:run_causal_into",
          "interplab.report.causal:write_causal_report", "interplab.report.causal:summary_lines",
          "causal.json",
          "Is the truth direction causal? On a task the model solves (format chosen on "
          "validation), steer with probe directions beside a random-direction null, prompts with "
          "no statement and other datasets; patch true into false statements; compare "
          "attribution methods.",
          rename={"n_steer_layers": "n-layers", "steer_layers": "layers"}),
    Study("sae", "interplab.studies.sae.config:SaeStudyConfig",
          "interplab.studies.sae.config:SaeStudyResult",
          "interplab.studies.sae.run:run_sae_into", "", "interplab.studies.sae.run:summary_lines",
          "sae.json", "Train one SAE or a sweep in one pass over a store or a model's activations.",
          own_command="sae train"),
)}

run_weights_into = run_plain("interplab.studies.weights.run:run_weights")
run_erasure_into = run_plain("interplab.studies.erasure.run:run_erasure")
run_nulls_into = run_plain("interplab.studies.nulls.run:run_nulls")


def study_of(data: dict[str, Any], path: str | Path = "") -> Study:
    """The registry entry of a result file's JSON object."""
    name = data.get("study")
    if name not in STUDIES:
        known = ", ".join(STUDIES)
        raise InterplabError(
            f"{path or 'this result'} does not name a study this version can re-run "
            f"(study: {name!r}; known: {known}); it may predate re-runnable results")
    return STUDIES[name]
