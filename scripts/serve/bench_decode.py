"""Decode tokens/s at batch 1: `tessera generate` and `transformers` on the same checkpoint
directory, rounds interleaved so that both see the same machine load. Both are measured the
same way: greedy from the same prompt, the time of the tokens after the first (the prefill)
divided into their count (`tessera generate --json` reports exactly that; for transformers it
is generate(N) minus generate(1)). Prints one line per round and the medians.

Usage (with the model corpus's venv, .cache/model-corpus/venv/bin/python):
  bench_decode.py TESSERA_BIN CHECKPOINT_DIR PROMPT_TEXT NEW_TOKENS [ROUNDS [TORCH_THREADS]]
"""

import json
import statistics
import subprocess
import sys

import torch
from tokenizers import Tokenizer

from hf_timing import decode_rate, load_model, timed_generate


def tessera_rate(binary, path, prompt, new_tokens):
    out = subprocess.run([binary, "generate", path, "--prompt", prompt, "--max-new-tokens", str(new_tokens), "--json"],
                         check=True, capture_output=True, text=True)
    result = json.loads(out.stdout)
    return result["decode_tokens_per_second"], result["generated_ids"]


def main():
    binary, path, prompt, new_tokens = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    rounds = int(sys.argv[5]) if len(sys.argv) > 5 else 5
    if len(sys.argv) > 6:
        torch.set_num_threads(int(sys.argv[6]))
    tok = Tokenizer.from_file(f"{path}/tokenizer.json")
    ids = torch.tensor([tok.encode(prompt).ids])
    model = load_model(path)
    rates = {"tessera": [], "transformers": []}
    with torch.inference_mode():
        timed_generate(model, ids, new_tokens)  # warm-up
        for i in range(rounds):
            t_rate, t_tokens = tessera_rate(binary, path, prompt, new_tokens)
            h_rate, h_tokens = decode_rate(model, ids, new_tokens)
            assert t_tokens == h_tokens, "greedy tokens differ"
            rates["tessera"].append(t_rate)
            rates["transformers"].append(h_rate)
            print(f"round {i}: tessera {t_rate:.1f} tokens/s, transformers {h_rate:.1f} tokens/s")
    t, h = statistics.median(rates["tessera"]), statistics.median(rates["transformers"])
    print(f"median decode tokens/s at batch 1 over {rounds} rounds of {new_tokens} tokens: "
          f"tessera {t:.1f}, transformers {h:.1f} (torch threads {torch.get_num_threads()}); ratio {t / h:.2f}x")


if __name__ == "__main__":
    main()
