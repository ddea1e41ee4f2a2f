"""What the serving benchmarks share about `transformers`: loading a checkpoint directory for
greedy decoding and timing its decode rate (generate(N) minus generate(1), so the prefill is
taken out as `tessera generate` and `tessera bench serve` take it out).

Imported by bench_decode.py, bench_batch_transformers.py and bench_side_by_side.py (run from this
folder's scripts).
"""

import time

import torch
from transformers import AutoModelForCausalLM


def load_model(path):
    """The checkpoint in float32, in eval mode, with the end-of-sequence token disabled so that
    every generate call produces exactly the tokens it is asked for."""
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    model.generation_config.eos_token_id = None
    return model


def timed_generate(model, ids, new_tokens):
    """Seconds of one greedy generate of `new_tokens` tokens after `ids`, and its output."""
    start = time.perf_counter()
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                         min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
    elapsed = time.perf_counter() - start
    assert out.shape[1] == ids.shape[1] + new_tokens
    return elapsed, out


def decode_rate(model, ids, new_tokens):
    """Decode tokens/s over the batch (batch x (new_tokens - 1) / (generate(N) - generate(1)))
    and the tokens generated for the first row."""
    first, _ = timed_generate(model, ids, 1)
    total, out = timed_generate(model, ids, new_tokens)
    return ids.shape[0] * (new_tokens - 1) / (total - first), out[0, ids.shape[1]:].tolist()
