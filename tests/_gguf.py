"""A tiny LLaMA-layout GGUF file written in-process, for tests of GGUF loading and its cache.

The weights are random (a seed), some stored quantised as the embedded model's are (Q4_1, Q8_0)
and some as float16/float32, so loading it exercises transformers' de-quantisation. The
tokenizer is the tiny byte-level BPE of :mod:`interplab.models.tiny`, stored as llama.cpp's
``gpt2`` tokenizer metadata.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

D, LAYERS, HEADS, KV_HEADS, MLP, CTX = 64, 2, 4, 2, 128, 128


def write_tiny_gguf(path: str | Path, seed: int = 0, *, tied: bool = False) -> Path:
    """Write the tiny model to ``path``; ``tied`` leaves out ``output.weight`` (tied embeddings,
    as SmolLM2's are)."""
    import gguf
    from gguf import GGMLQuantizationType as Q

    from interplab.models.tiny import tiny_tokenizer

    tok = tiny_tokenizer(add_bos=True)
    backend = tok.backend_tokenizer
    vocab = backend.get_vocab()
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    merges = [" ".join(m) if isinstance(m, list) else m
              for m in json.loads(backend.to_str())["model"]["merges"]]
    rng = np.random.default_rng(seed)
    path = Path(path)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny-llama-gguf")
    w.add_context_length(CTX)
    w.add_embedding_length(D)
    w.add_block_count(LAYERS)
    w.add_feed_forward_length(MLP)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_rope_dimension_count(D // HEADS)
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([3 if t.startswith("<") and t.endswith(">") else 1 for t in tokens])
    w.add_token_merges(merges)
    w.add_bos_token_id(vocab["<bos>"])
    w.add_eos_token_id(vocab["<eos>"])
    w.add_pad_token_id(vocab["<pad>"])
    w.add_add_bos_token(True)

    def tensor(name: str, shape: tuple[int, ...], kind: Q = Q.F32, scale: float = 0.1,
               offset: float = 0.0) -> None:
        x = (offset + rng.standard_normal(shape) * scale).astype(np.float32)
        if kind == Q.F32:
            w.add_tensor(name, x)
        elif kind == Q.F16:
            w.add_tensor(name, x.astype(np.float16))
        else:
            w.add_tensor(name, gguf.quants.quantize(x, kind), raw_dtype=kind)

    head = D // HEADS
    tensor("token_embd.weight", (len(tokens), D), Q.Q8_0, scale=1.0)
    for i in range(LAYERS):
        tensor(f"blk.{i}.attn_norm.weight", (D,), offset=1.0)
        tensor(f"blk.{i}.attn_q.weight", (HEADS * head, D), Q.Q4_1)
        tensor(f"blk.{i}.attn_k.weight", (KV_HEADS * head, D), Q.Q4_1)
        tensor(f"blk.{i}.attn_v.weight", (KV_HEADS * head, D), Q.Q8_0)
        tensor(f"blk.{i}.attn_output.weight", (D, HEADS * head), Q.F16)
        tensor(f"blk.{i}.ffn_norm.weight", (D,), offset=1.0)
        tensor(f"blk.{i}.ffn_gate.weight", (MLP, D), Q.Q4_1)
        tensor(f"blk.{i}.ffn_up.weight", (MLP, D), Q.Q8_0)
        tensor(f"blk.{i}.ffn_down.weight", (D, MLP), Q.Q4_1)
    tensor("output_norm.weight", (D,), offset=1.0)
    if not tied:
        tensor("output.weight", (len(tokens), D), Q.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
