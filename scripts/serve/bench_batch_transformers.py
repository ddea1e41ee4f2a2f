"""Decode tokens/s of `transformers` at batch 1 and batch 16 on a checkpoint directory, the
counterpart of `tessera bench serve` at concurrency 1 and 16 (BENCHMARKS.md, issue 18).

Prompts are INPUT_LEN random token ids below 256 from a seeded generator (what `tessera bench
serve` sends); greedy generation of NEW_TOKENS tokens with the end-of-sequence token disabled.
Decode tokens/s = batch x (NEW_TOKENS - 1) / (time of generate(NEW_TOKENS) - time of
generate(1)), the median over ROUNDS rounds: the prefill is taken out, as the TPOT of
`tessera bench serve` takes out the first token.

Usage (with the model corpus's venv, .cache/model-corpus/venv/bin/python):
  bench_batch_transformers.py CHECKPOINT_DIR INPUT_LEN NEW_TOKENS [ROUNDS [TORCH_THREADS]]
"""

import json
import statistics
import sys

import torch

from hf_timing import decode_rate, load_model, timed_generate


def main():
    path, input_len, new_tokens = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 5
    if len(sys.argv) > 5:
        torch.set_num_threads(int(sys.argv[5]))
    model = load_model(path)
    generator = torch.Generator().manual_seed(0)
    result = {"torch_threads": torch.get_num_threads(), "input_len": input_len, "new_tokens": new_tokens}
    with torch.inference_mode():
        for batch in (1, 16):
            ids = torch.randint(0, 256, (batch, input_len), generator=generator)
            timed_generate(model, ids, new_tokens)  # warm-up
            rates = [decode_rate(model, ids, new_tokens)[0] for _ in range(rounds)]
            result[f"decode_tokens_per_second_batch_{batch}"] = statistics.median(rates)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
