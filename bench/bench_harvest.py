"""Harvest benchmarks on the embedded model, against honest baselines in the same process.

Every figure is a ratio between contenders run on the same batches in one process, interleaved
chunk by chunk (the order of the contenders rotates every chunk), so a change in the machine's
load hits all of them alike. Each contender's tokens/s, CPU time ÷ wall time, tokens per
CPU-second and thread counts are reported, with the load average before and after. By default
(``--threads auto``) every contender runs at the thread count interplab's policy picks.

Sections (``--section``):
  windows     fixed-length windows of the packaged sample text, positions ``all`` at one hook:
              full forward (the old baseline with an all-ones mask, the same without the mask, and
              with eager attention), a hand-written forward hook that raises after the block,
              nnsight ``.trace()`` with ``.stop()``, and ``interplab.activations.harvest_tokens``.
  statements  the truth study's statement datasets read back from CSV exports, last token, at 7 or
              30 layers, with or without log-probabilities, same baselines, each batched in file
              order and sorted by length (the fastest honest alternative).
  load        the harvest idle and beside busy-loop neighbours, for the thread policies given
              (each in its own process); throughput ÷ CPU share against the idle run.
  store       harvest into an ActivationStore vs in memory, and peak RSS for 100k / 1M tokens.
  passes      the cost of one pass of the shapes the statements section runs, at 1 and 2 threads
              (run it beside busy neighbours to see what a thread too many costs per pass).

Usage: python bench/bench_harvest.py --section windows [--out x.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psutil
import torch

LAYER = 15


class _Stop(Exception):
    pass


# ----------------------------------------------------------------------------------- data
def corpus_windows(lm, n_seq: int, seq_len: int, seed: int = 0) -> list[list[int]]:
    """``n_seq`` windows of ``seq_len`` real tokens from the packaged sample text (repeated)."""
    from importlib import resources

    text = resources.files("interplab.data").joinpath("sample.txt").read_text("utf-8")
    ids = lm.tokenizer(text)["input_ids"]
    while len(ids) < n_seq * seq_len:
        ids = ids + ids
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, len(ids) - seq_len, n_seq)
    return [ids[s : s + seq_len] for s in starts]


STATEMENT_SETS = ["cities", "neg_cities", "sp_en_trans", "neg_sp_en_trans", "larger_than",
                  "smaller_than", "cities_conj", "cities_disj", "chem_symbols", "neg_chem_symbols",
                  "capitals", "neg_capitals"]


def statement_csvs(folder: Path, names: list[str], max_per: int | None) -> list[Path]:
    """Export the generated datasets as CSV files (statement,label,...) into ``folder``."""
    from interplab.datasets import load_dataset

    return [load_dataset(n, max_size=max_per).to_csv(folder / f"{n}.csv") for n in names]


def padded(batch: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(t) for t in batch)
    ids = torch.full((len(batch), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, t in enumerate(batch):
        ids[i, : len(t)] = torch.tensor(t)
        mask[i, : len(t)] = 1
    return ids, mask


# ----------------------------------------------------------------------------- contenders
def full_forward(lm, masked: bool, model=None) -> Callable:
    model = model if model is not None else lm.hf

    def run(batch):
        ids, mask = padded(batch, lm.tokenizer.pad_token_id)
        kw = {"attention_mask": mask} if masked or not bool(mask.all()) else {}
        with torch.inference_mode():
            return model(input_ids=ids, use_cache=False, **kw).logits

    return run


def hook_stop(lm, layers: list[int], last_only: bool, logprobs: bool = False) -> Callable:
    """The hand-written baseline: forward hooks copy the blocks' outputs, the last one raises."""

    def run(batch):
        ids, mask = padded(batch, lm.tokenizer.pad_token_id)
        last = mask.sum(1) - 1
        out: dict[int, torch.Tensor] = {}

        def grab(layer: int):
            def fn(_m, _i, o):
                h = o[0] if isinstance(o, tuple) else o
                out[layer] = h[torch.arange(len(h)), last].clone() if last_only else h.clone()
                if layer == max(layers) and not logprobs:
                    raise _Stop
            return fn

        handles = [lm.blocks[la].register_forward_hook(grab(la)) for la in layers]
        try:
            with torch.inference_mode():
                if logprobs:
                    logits = lm.hf(input_ids=ids, attention_mask=mask, use_cache=False).logits
                    lp = torch.log_softmax(logits[:, :-1].float(), -1)
                    tok = lp.gather(-1, ids[:, 1:, None])[..., 0]
                    out[-1] = (tok * (mask[:, 1:] * mask[:, :-1])).sum(-1)
                else:
                    with contextlib.suppress(_Stop):
                        lm.base(input_ids=ids, attention_mask=mask, use_cache=False)
        finally:
            for h in handles:
                h.remove()
        return out

    return run


def nnsight_stop(lm, layers: list[int], last_only: bool, logprobs: bool = False) -> Callable:
    import warnings

    from nnsight import LanguageModel as NNLanguageModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nn_model = NNLanguageModel(lm.hf, tokenizer=lm.tokenizer)

    def run(batch):
        ids, mask = padded(batch, lm.tokenizer.pad_token_id)
        last = mask.sum(1) - 1
        rows = torch.arange(len(batch))
        saved: list = []  # filled inside the trace (nnsight runs its body apart from this frame)
        logits = None
        with torch.inference_mode():
            with nn_model.trace({"input_ids": ids, "attention_mask": mask},
                                use_cache=False) as tracer:
                for la in layers:
                    h = nn_model.model.layers[la].output
                    saved.append((h[rows, last] if last_only else h).save())
                if logprobs:
                    saved.append(nn_model.lm_head.output.save())
                else:
                    tracer.stop()
            if logprobs:
                logits = saved.pop()
                lp = torch.log_softmax(logits[:, :-1].float(), -1)
                tok = lp.gather(-1, ids[:, 1:, None])[..., 0]
                saved.append((tok * (mask[:, 1:] * mask[:, :-1])).sum(-1))
        assert len(saved) == len(layers) + logprobs, "nnsight returned no saved values"
        return saved

    return run


def ours(lm, layers: list[int], positions: str, logprobs: bool = False,
         batch_size: int = 32, share_prefixes: bool = True) -> Callable:
    from interplab.activations import harvest_tokens

    hooks = [f"blocks.{la}.hook_resid_post" for la in layers]

    def run(batch):
        return harvest_tokens(lm, batch, hooks, positions, batch_size=batch_size,
                              with_logprobs=logprobs, progress=False,
                              share_prefixes=share_prefixes)

    return run


# ------------------------------------------------------------------------------- the timer
BY_LENGTH = ", sorted by length"


# --threads: "auto" runs the baselines under interplab's thread policy too (the same count, so
# the engines are compared alone); "defaults" leaves them at torch's count (what each gives out
# of the box); a number N runs every contender at N threads.
THREADS = "auto"


def baseline_pool():
    from interplab.threads import AdaptiveThreads

    return AdaptiveThreads("auto") if THREADS == "auto" else contextlib.nullcontext()


def interleaved(contenders: dict[str, Callable], chunks: list[list[list[int]]],
                batch_size: int) -> dict[str, dict[str, float]]:
    """Run every contender on every chunk (rotating their order); tokens/s, CPU ÷ wall and
    tokens per CPU-second each, and the thread counts each used.

    A chunk is cut into batches of ``batch_size`` in its own order for the baselines, or, for a
    baseline whose name ends in :data:`BY_LENGTH`, after sorting the chunk by length (the one
    line any user can add); interplab's contenders get the whole chunk and batch it themselves.
    """
    from interplab.threads import pace

    names = list(contenders)
    wall = dict.fromkeys(names, 0.0)
    cpu = dict.fromkeys(names, 0.0)
    used: dict[str, set[int]] = {n: set() for n in names}
    for name in names:  # warm-up on the first chunk's first batch
        contenders[name](chunks[0][:batch_size])
    for k, chunk in enumerate(chunks):
        order = names[k % len(names):] + names[: k % len(names)]
        for name in order:
            fn = contenders[name]
            t, c = time.perf_counter(), time.process_time()
            if name.startswith("interplab"):
                info = getattr(fn(chunk), "info", None) or {}
                used[name].update(info.get("threads", [torch.get_num_threads()]))
            else:
                seq = sorted(chunk, key=len) if name.endswith(BY_LENGTH) else chunk
                with baseline_pool() as pool:
                    for i in range(0, len(seq), batch_size):
                        pace()  # under --threads auto: re-decided as in interplab's loop
                        used[name].add(torch.get_num_threads())
                        fn(seq[i : i + batch_size])
                if pool is not None:
                    used[name].update(pool.used)
            wall[name] += time.perf_counter() - t
            cpu[name] += time.process_time() - c
    n_tok = sum(len(t) for chunk in chunks for t in chunk)
    return {n: {"tok_s": n_tok / wall[n], "cpu_over_wall": cpu[n] / wall[n],
                "tok_per_cpu_s": n_tok / cpu[n], "wall_s": wall[n],
                "threads_used": sorted(used[n])} for n in names}


def ratios(res: dict[str, dict[str, float]], subject: str, refs: list[str],
           key: str = "tok_s") -> dict[str, float]:
    return {f"{subject} / {r}": res[subject][key] / res[r][key] for r in refs if r in res}


def against_fastest(res: dict[str, dict[str, float]], subject: str,
                    refs: list[str]) -> dict[str, float | str]:
    """``subject`` against the fastest of ``refs`` (tokens/s) and the most frugal (tokens per
    CPU-second)."""
    fast = max(refs, key=lambda r: res[r]["tok_s"])
    frugal = max(refs, key=lambda r: res[r]["tok_per_cpu_s"])
    return {"fastest": fast, "tok_s_ratio": res[subject]["tok_s"] / res[fast]["tok_s"],
            "most_frugal": frugal,
            "tok_per_cpu_s_ratio": res[subject]["tok_per_cpu_s"] / res[frugal]["tok_per_cpu_s"]}


def have_nnsight() -> bool:
    try:
        import nnsight  # noqa: F401
    except ImportError:
        return False
    return True


# -------------------------------------------------------------------------------- sections
def section_windows(lm, args) -> dict:
    import copy

    windows = corpus_windows(lm, args.n_seq, args.seq_len)
    bs = args.batch_size
    eager = copy.deepcopy(lm.hf)
    eager.set_attn_implementation("eager")
    contenders = {
        "full forward, all-ones mask (old baseline)": full_forward(lm, masked=True),
        "full forward": full_forward(lm, masked=False),
        "full forward, eager attention": full_forward(lm, masked=True, model=eager),
        "hook that stops": hook_stop(lm, [LAYER], last_only=False),
        "interplab harvest_tokens": ours(lm, [LAYER], "all", batch_size=bs),
    }
    if have_nnsight():
        contenders["nnsight .stop()"] = nnsight_stop(lm, [LAYER], last_only=False)
    chunks = [windows[i : i + bs] for i in range(0, len(windows), bs)]
    first = chunks[0]
    mine = contenders["interplab harvest_tokens"](first)[f"blocks.{LAYER}.hook_resid_post"]
    agree = {"hook that stops": float((contenders["hook that stops"](first)[LAYER].reshape(
        mine.shape) - mine).abs().max())}
    if have_nnsight():
        agree["nnsight .stop()"] = float((contenders["nnsight .stop()"](first)[0].reshape(
            mine.shape) - mine).abs().max())
    res = interleaved(contenders, chunks, bs)
    ref = ["hook that stops", "nnsight .stop()", "full forward",
           "full forward, all-ones mask (old baseline)"]
    return {"per_contender": res, "ratios": ratios(res, "interplab harvest_tokens", ref),
            "full_ratios": ratios(res, "full forward", ["full forward, all-ones mask (old baseline)",
                                                        "full forward, eager attention"]),
            "max_abs_diff_vs_interplab": agree,
            "shape": {"n_seq": args.n_seq, "seq_len": args.seq_len, "batch": bs, "layer": LAYER}}


def section_statements(lm, args) -> dict:
    from interplab.activations.harvest import PREFIX_KV_BUDGET_BYTES, _kv_slot_bytes
    from interplab.activations.prefixes import plan_prefix_tree
    from interplab.datasets import load_csv, load_dataset

    n = lm.n_layers
    layer_sets = {"7": sorted({min(x, n - 1) for x in (3, 7, 11, 15, 19, 23, 27)}),
                  "30": list(range(n))}
    with tempfile.TemporaryDirectory() as d:
        paths = statement_csvs(Path(d), STATEMENT_SETS, args.max_per)
        sets = [load_csv(p) for p in paths]
    for p, ds in zip(STATEMENT_SETS, sets, strict=True):  # the export reads back identically
        assert ds.statements == load_dataset(p, max_size=args.max_per).statements
    # The datasets one after the other in file order (as a study reads them), cut into chunks of
    # --chunk statements; baselines batch each chunk in that order, interplab sorts it by length.
    ids = [t for ds in sets for t in lm.tokenize(list(ds.statements))]
    chunks = [ids[i : i + args.chunk] for i in range(0, len(ids), args.chunk)]
    lengths = [len(t) for c in chunks for t in c]
    out: dict = {"n_statements": len(lengths), "n_tokens": int(sum(lengths)),
                 "tokens_min_median_max": [min(lengths), float(np.median(lengths)), max(lengths)],
                 "datasets": STATEMENT_SETS, "batch": args.batch_size, "chunk": args.chunk,
                 "our_batch": args.our_batch_size or args.batch_size,
                 "shared_prefix_tokens_saved": sum(
                     plan_prefix_tree(c, [len(t) - 1 for t in c],
                                      max_slots=PREFIX_KV_BUDGET_BYTES // _kv_slot_bytes(lm)
                                      ).saved_tokens for c in chunks),
                 "runs": {}}
    for key in args.layer_sets.split(","):
        layers = layer_sets[key]
        for lp in {"both": (False, True), "no": (False,), "yes": (True,)}[args.logprobs]:
            ours_bs = args.our_batch_size or args.batch_size
            hook_name = "hook that stops" if not lp else "hooks + full logits"
            nn_name = "nnsight .stop()" if not lp else "nnsight + lm_head output"
            contenders = {hook_name: hook_stop(lm, layers, last_only=True, logprobs=lp)}
            contenders[hook_name + BY_LENGTH] = contenders[hook_name]
            contenders["interplab harvest_tokens"] = ours(lm, layers, "last", logprobs=lp,
                                                          batch_size=ours_bs)
            contenders["interplab, no prefix sharing"] = ours(lm, layers, "last", logprobs=lp,
                                                              batch_size=ours_bs,
                                                              share_prefixes=False)
            if have_nnsight():
                contenders[nn_name] = nnsight_stop(lm, layers, last_only=True, logprobs=lp)
                contenders[nn_name + BY_LENGTH] = contenders[nn_name]
            first = chunks[0][: args.batch_size]
            mine = contenders["interplab harvest_tokens"](first)
            theirs = contenders[hook_name](first)
            rel = max(float(((mine[f"blocks.{la}.hook_resid_post"] - theirs[la]).norm(dim=-1)
                             / theirs[la].norm(dim=-1)).max()) for la in layers)
            lp_diff = (float((mine.text_logprob - theirs[-1].double()).abs().max()) if lp
                       else None)
            res = interleaved(contenders, chunks, args.batch_size)
            name = f"{key} layers" + (", log-probabilities" if lp else "")
            baselines = [n for n in contenders if not n.startswith("interplab")]
            out["runs"][name] = {
                "per_contender": res,
                "max_relative_difference_vs_hook": rel,
                "max_abs_logprob_difference_vs_hooks": lp_diff,
                "ratios": ratios(res, "interplab harvest_tokens", baselines),
                "tok_per_cpu_s_ratios": ratios(res, "interplab harvest_tokens", baselines,
                                               "tok_per_cpu_s"),
                "against_fastest_baseline": against_fastest(res, "interplab harvest_tokens",
                                                            baselines),
                "ratios_no_prefix_sharing": ratios(res, "interplab, no prefix sharing", baselines),
                "prefix_sharing_gain": res["interplab harvest_tokens"]["tok_s"]
                / res["interplab, no prefix sharing"]["tok_s"]}
            print(name, json.dumps(out["runs"][name]["against_fastest_baseline"]),
                  json.dumps({n: round(r["tok_s"]) for n, r in res.items()}),
                  file=sys.stderr, flush=True)
    return out


# Pass shapes (rows x tokens) of the statements section's first chunk: the prefix tree's small
# passes, then text passes.
PASS_SHAPES = [(1, 1), (2, 3), (33, 2), (24, 6), (64, 4), (64, 12)]


def section_passes(lm, args) -> dict:
    """What one pass of each shape costs at 1 and at 2 threads (wall and CPU ms, median of
    ``--reps``; thread counts and shapes interleaved), through block 27 as in the statements
    section's 7-layer case. A cost that does not scale with the tokens is paid per pass."""
    last = min(27, lm.n_layers - 1)
    handle = lm.blocks[last].register_forward_hook(lambda *_: (_ for _ in ()).throw(_Stop()))
    rng = np.random.default_rng(0)
    inputs = {shape: torch.as_tensor(rng.integers(100, 10_000, shape)) for shape in PASS_SHAPES}
    times: dict[str, list[tuple[float, float]]] = {}
    old = torch.get_num_threads()
    try:
        for rep in range(args.reps + 1):  # the first round warms up
            for threads in (1, 2):
                torch.set_num_threads(threads)
                for shape, ids in inputs.items():
                    t, c = time.perf_counter(), time.process_time()
                    with torch.inference_mode(), contextlib.suppress(_Stop):
                        lm.base(input_ids=ids, attention_mask=torch.ones_like(ids),
                                use_cache=False)
                    if rep:
                        times.setdefault(f"{threads} threads, {shape[0]} x {shape[1]}", []).append(
                            ((time.perf_counter() - t) * 1e3, (time.process_time() - c) * 1e3))
    finally:
        torch.set_num_threads(old)
        handle.remove()
    out = {k: {"wall_ms": float(np.median([w for w, _ in v])),
               "cpu_ms": float(np.median([c for _, c in v]))} for k, v in times.items()}
    for b, n in PASS_SHAPES:
        one, two = out[f"1 threads, {b} x {n}"], out[f"2 threads, {b} x {n}"]
        out[f"{b} x {n}: wall 2 threads / 1 thread"] = two["wall_ms"] / one["wall_ms"]
    return {"passes": out, "reps": args.reps, "through_block": last}


def keep_freed_memory() -> None:
    """glibc: serve blocks up to 32 MiB from the heap and never give freed memory back, so the
    same activation buffers are reused batch after batch instead of faulted in again."""
    import ctypes

    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_mmap_threshold = -1, -3
    assert libc.mallopt(m_mmap_threshold, 32 * 2**20) == 1
    assert libc.mallopt(m_trim_threshold, 2**30) == 1


def load_child(args) -> dict:
    """One harvest run in this process (thread policy already applied): tokens/s, CPU share."""
    from interplab.activations import harvest_tokens
    from interplab.models import load

    if os.environ.get("BENCH_KEEP_FREED_MEMORY"):
        keep_freed_memory()
    lm = load("smollm2-135m")
    used: set[int] = set()
    lm.blocks[0].register_forward_hook(lambda *_: used.add(torch.get_num_threads()))
    windows = corpus_windows(lm, args.n_seq, args.seq_len, seed=2)
    hook = f"blocks.{LAYER}.hook_resid_post"
    harvest_tokens(lm, windows[:8], hook, "all", batch_size=8, progress=False)
    import resource

    f0 = resource.getrusage(resource.RUSAGE_SELF)
    t0, c0 = time.perf_counter(), os.times()
    harvest_tokens(lm, windows, hook, "all", batch_size=args.batch_size, progress=False)
    wall = time.perf_counter() - t0
    c1 = os.times()
    f1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (c1.user - c0.user) + (c1.system - c0.system)
    n_tok = args.n_seq * args.seq_len
    return {"tok_s": n_tok / wall, "cpu_s": cpu, "wall_s": wall, "cpu_share": cpu / wall,
            "minor_faults_per_token": (f1.ru_minflt - f0.ru_minflt) / n_tok,
            "involuntary_switches": f1.ru_nivcsw - f0.ru_nivcsw,
            "threads_used": sorted(used),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "")}


def section_store(lm, args) -> dict:
    from interplab.activations import harvest_to_store, harvest_tokens

    windows = corpus_windows(lm, args.n_seq, args.seq_len)
    hook = f"blocks.{LAYER}.hook_resid_post"
    with tempfile.TemporaryDirectory() as d:
        k = [0]

        def store(chunk):
            k[0] += 1
            harvest_to_store(lm, None, hook, Path(d) / f"s{k[0]}", "all", token_ids=chunk,
                             batch_size=args.batch_size, progress=False)

        contenders = {"interplab harvest_to_store": store,
                      "in memory": lambda c: harvest_tokens(lm, c, hook, "all",
                                                            batch_size=args.batch_size,
                                                            progress=False)}
        chunks = [windows[i : i + 256] for i in range(0, len(windows), 256)]
        res = interleaved(contenders, chunks, 256)
    rss = []
    for n in [int(x) for x in args.rss_tokens.split(",") if x]:
        with tempfile.TemporaryDirectory() as d:
            out = subprocess.run([sys.executable, __file__, "--rss-child", str(n), "--seq-len",
                                  str(args.seq_len), "--out", str(Path(d) / "s")],
                                 capture_output=True, text=True, check=True)
            rss.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {"per_contender": res,
            "store / in memory": res["interplab harvest_to_store"]["tok_s"]
            / res["in memory"]["tok_s"], "rss": rss}


def rss_child(n_tokens: int, seq_len: int, out: str) -> None:
    """Harvest n_tokens into a store; print peak RSS (MiB) sampled every 50 ms."""
    from interplab.activations import harvest_to_store
    from interplab.models import load

    lm = load("smollm2-135m")
    windows = corpus_windows(lm, n_tokens // seq_len, seq_len, seed=1)
    proc = psutil.Process()
    peak = [proc.memory_info().rss]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.05)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    harvest_to_store(lm, None, f"blocks.{LAYER}.hook_resid_post", out, "all", token_ids=windows,
                     batch_size=32, rows_per_shard=32768, progress=False)
    stop.set()
    th.join()
    print(json.dumps({"tokens": len(windows) * seq_len, "peak_rss_mib": peak[0] / 2**20}))


def machine() -> dict:
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "loadavg": os.getloadavg()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--section", default="windows",
                    choices=["windows", "statements", "load", "store", "passes"])
    ap.add_argument("--reps", type=int, default=5, help="passes: repetitions per shape")
    ap.add_argument("--n-seq", type=int, default=256)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-per", type=int, default=200, help="statements per dataset")
    ap.add_argument("--chunk", type=int, default=128, help="statements per interleaved chunk")
    ap.add_argument("--layer-sets", default="7,30")
    ap.add_argument("--logprobs", default="both", choices=["both", "no", "yes"])
    ap.add_argument("--our-batch-size", type=int, default=0,
                    help="statements: interplab's batch size (default: --batch-size)")
    ap.add_argument("--threads", default="auto",
                    help="windows/statements/store: 'auto' (every contender under interplab's "
                         "thread policy), 'defaults' (interplab 'auto', the baselines at torch's "
                         "count) or a number for every contender")
    ap.add_argument("--policies", default="",
                    help="load: comma list of thread policies (e.g. 'fixed:2,auto'), each run "
                         "idle and under load in a child process")
    ap.add_argument("--busy", type=int, default=0, help="load: busy-loop neighbours (default: cores)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--rss-tokens", default="100000,1000000")
    ap.add_argument("--rss-child", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--model", default="smollm2-135m", help="windows/statements/store only")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    if args.rss_child:
        rss_child(args.rss_child, args.seq_len, args.out)
        return
    if args.child:
        print(json.dumps(load_child(args)))
        return
    if args.section == "load":
        res = {"machine_before": machine(), "load": section_load(args)}
    else:
        from interplab.models import load

        global THREADS
        THREADS = args.threads
        if args.threads.isdigit():  # every contender at that count
            torch.set_num_threads(int(args.threads))
            os.environ["INTERPLAB_THREADS"] = args.threads
        else:  # interplab's own policy ("auto"), re-decided as the load changes
            os.environ["INTERPLAB_THREADS"] = "auto"
        res = {"machine_before": machine(), "threads": args.threads}
        lm = load(args.model)
        global LAYER
        LAYER = min(LAYER, lm.n_layers - 1)
        res[args.section] = {"windows": section_windows, "statements": section_statements,
                             "store": section_store, "passes": section_passes}[args.section](lm, args)
    res["loadavg_after"] = os.getloadavg()
    text = json.dumps(res, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


def section_load(args) -> dict:
    """Each thread policy idle, then beside ``--busy`` busy-loop processes, in child processes."""
    busy = args.busy or os.cpu_count() or 1
    out: dict = {"busy_neighbours": busy, "runs": {}}
    for policy in (args.policies or "default").split(","):
        env = {**os.environ}
        threads, *flags = policy.split("+")
        if threads != "default":
            env["INTERPLAB_THREADS"] = threads
        if "passive" in flags:  # e.g. "2+passive": OpenMP workers sleep instead of spinning
            env["OMP_WAIT_POLICY"] = "PASSIVE"
        if "keepmem" in flags:  # e.g. "auto+keepmem": see keep_freed_memory
            env["BENCH_KEEP_FREED_MEMORY"] = "1"
        cmd = [sys.executable, __file__, "--child", "--n-seq", str(args.n_seq), "--seq-len",
               str(args.seq_len), "--batch-size", str(args.batch_size)]
        runs = {}
        for state in ("idle", "under load"):
            pids = []
            if state == "under load":
                pids = [subprocess.Popen([sys.executable, "-c", "while True: pass"]).pid
                        for _ in range(busy)]
            try:
                done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            finally:
                for pid in pids:
                    os.kill(pid, 9)
                    os.waitpid(pid, 0)
            runs[state] = json.loads(done.stdout.strip().splitlines()[-1])
            runs[state]["loadavg_after"] = os.getloadavg()
        idle, loaded = runs["idle"], runs["under load"]
        runs["slowdown"] = idle["tok_s"] / loaded["tok_s"]
        runs["cpu_share_fall"] = idle["cpu_share"] / loaded["cpu_share"]
        runs["(tok/s ÷ cpu share) loaded ÷ idle"] = (
            (loaded["tok_s"] / loaded["cpu_share"]) / (idle["tok_s"] / idle["cpu_share"]))
        out["runs"][policy] = runs
        print(policy, json.dumps(runs), file=sys.stderr, flush=True)
    return out


if __name__ == "__main__":
    main()
