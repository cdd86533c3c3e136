"""Tiny randomly initialised models for tests, built in-process from a config and a seed.

They need no download: the tokenizer is a byte-level BPE trained in-process on the packaged sample
text, and the weights come from the architecture's own initialiser under a fixed seed.
"""

from __future__ import annotations

import functools
from importlib import resources

import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

TINY_VOCAB = 384
TINY_CTX = 128
_D, _LAYERS, _HEADS, _MLP = 64, 4, 4, 128


@functools.lru_cache(maxsize=2)
def tiny_tokenizer(add_bos: bool) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (vocab 384) trained on the packaged sample text.

    With ``add_bos`` every encoding starts with ``<bos>`` (as LLaMA tokenizers do); without it, none
    (as GPT-2's does).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    text = resources.files("interplab.data").joinpath("sample.txt").read_text("utf-8")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB,
        special_tokens=["<pad>", "<bos>", "<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(text.splitlines(), trainer=trainer)
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(
            single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", 1)]
        )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>"
    )
    fast.model_max_length = TINY_CTX
    return fast


def _config(kind: str, vocab: int) -> object:
    # A wider init than the default 0.02 so activations are O(1-10) and equality tests are meaningful.
    common = {"vocab_size": vocab, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
              "initializer_range": 0.1}
    if kind == "tiny-llama":
        return LlamaConfig(
            hidden_size=_D, intermediate_size=_MLP, num_hidden_layers=_LAYERS,
            num_attention_heads=_HEADS, num_key_value_heads=2, max_position_embeddings=TINY_CTX,
            **common,
        )
    if kind == "tiny-qwen2":
        return Qwen2Config(
            hidden_size=_D, intermediate_size=_MLP, num_hidden_layers=_LAYERS,
            num_attention_heads=_HEADS, num_key_value_heads=2, max_position_embeddings=TINY_CTX,
            **common,
        )
    if kind == "tiny-gpt2":
        return GPT2Config(
            n_embd=_D, n_layer=_LAYERS, n_head=_HEADS, n_inner=_MLP, n_positions=TINY_CTX,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **common,
        )
    if kind == "tiny-neox":
        return GPTNeoXConfig(
            hidden_size=_D, intermediate_size=_MLP, num_hidden_layers=_LAYERS,
            num_attention_heads=_HEADS, max_position_embeddings=TINY_CTX,
            use_parallel_residual=True, **common,
        )
    if kind == "tiny-neox-sequential":
        return GPTNeoXConfig(
            hidden_size=_D, intermediate_size=_MLP, num_hidden_layers=_LAYERS,
            num_attention_heads=_HEADS, max_position_embeddings=TINY_CTX,
            use_parallel_residual=False, **common,
        )
    raise KeyError(kind)


_CLASSES = {
    "tiny-llama": LlamaForCausalLM,
    "tiny-qwen2": Qwen2ForCausalLM,
    "tiny-gpt2": GPT2LMHeadModel,
    "tiny-neox": GPTNeoXForCausalLM,
    "tiny-neox-sequential": GPTNeoXForCausalLM,
}
TINY_MODELS = tuple(_CLASSES)


def build_tiny(kind: str, seed: int = 0) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """Build a tiny model of ``kind`` with weights drawn under ``seed`` (same seed, same weights)."""
    tokenizer = tiny_tokenizer(add_bos=kind in ("tiny-llama", "tiny-qwen2"))
    config = _config(kind, vocab=len(tokenizer))
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        model = _CLASSES[kind](config)
    model.eval()
    return model, tokenizer
