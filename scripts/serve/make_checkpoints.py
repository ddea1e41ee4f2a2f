"""Writes the serving test data: random-init Hugging Face checkpoints with a tokenizer, and the
greedy tokens `transformers` generates from them (scripts/serve/setup.sh runs it).

Usage: make_checkpoints.py OUT_DIR

OUT_DIR/<name>/ holds config.json, model.safetensors (f32) and tokenizer.json, as
`save_pretrained` writes them, for
- gpt2-tiny: GPT-2 (learned positions, LayerNorm, gelu_new MLP, fused c_attn, tied embeddings);
- llama-tiny: Llama (RMSNorm, SwiGLU, RoPE with llama3 frequency scaling, grouped-query
  attention with 4 query heads over 2 key/value heads, untied head).
OUT_DIR/reference.json lists, per model and prompt, the prompt text, its token ids (1, 7 and 100
tokens) and the 50 tokens `generate(do_sample=False)` appends, and the smallest gap between the
best and second-best logit along the way (how much numeric slack greedy decoding has).

Weights are drawn with a larger initializer range than the models' default (0.02): with tiny
random models the logits are otherwise so flat that the best two tokens differ by less than
float rounding, and greedy decoding would compare rounding, not the model.
"""

import json
import sys
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

VOCAB = 384
NEW_TOKENS = 50
PROMPT_LENGTHS = [1, 7, 100]
# Text the tokenizer is trained on and the prompts are cut from (no downloads).
TEXT = (
    "A dataflow compiler takes a model graph, optimizes it with rewrites, partitions it across "
    "accelerators under memory and bandwidth limits, emits fused kernels and writes an artifact "
    "that a runtime executes on every rank. Serving a language model runs two programs over the "
    "same weights: prefill reads the whole prompt at once and fills the key and value cache, "
    "decode then appends one token per sequence per step, reading the cache through block "
    "tables. The quick brown fox jumps over the lazy dog while the scheduler batches requests "
    "of different lengths, and every token streams back to its client as soon as it exists. "
    "Numbers such as 12345 and 67890, punctuation (like this!) and CamelCase words all appear. "
)


def tokenizer():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([TEXT] * 4, trainer)
    return tok


def prompt_of_length(tok, n):
    """The shortest prefix of TEXT (repeated) that encodes to exactly n tokens."""
    text = TEXT * 3
    for end in range(1, len(text) + 1):
        ids = tok.encode(text[:end]).ids
        if len(ids) == n:
            return text[:end], ids
        if len(ids) > n:
            break
    raise SystemExit(f"no prefix of the text encodes to {n} tokens")


def models_to_write():
    gpt2 = GPT2Config(
        vocab_size=VOCAB, n_positions=256, n_embd=64, n_layer=2, n_head=4,
        activation_function="gelu_new", layer_norm_epsilon=1e-5, initializer_range=0.35,
        bos_token_id=None, eos_token_id=None, tie_word_embeddings=True,
    )
    llama = LlamaConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        rms_norm_eps=1e-5, initializer_range=0.35, tie_word_embeddings=False,
        bos_token_id=None, eos_token_id=None, pad_token_id=None,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
        rope_theta=10000.0,
    )
    return [("gpt2-tiny", GPT2LMHeadModel, gpt2), ("llama-tiny", LlamaForCausalLM, llama)]


def greedy(model, ids):
    """generate(do_sample=False) and the smallest top-1/top-2 logit gap of its steps."""
    input_ids = torch.tensor([ids])
    out = model.generate(
        input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=NEW_TOKENS,
        min_new_tokens=NEW_TOKENS, do_sample=False, output_scores=True, return_dict_in_generate=True,
        pad_token_id=0,
    )
    gaps = [float(s[0].topk(2).values[0] - s[0].topk(2).values[1]) for s in out.scores]
    return out.sequences[0, len(ids):].tolist(), min(gaps)


def main():
    out_dir = Path(sys.argv[1])
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    tok = tokenizer()
    prompts = [prompt_of_length(tok, n) for n in PROMPT_LENGTHS]
    reference = {"new_tokens": NEW_TOKENS, "models": {}}
    for name, cls, config in models_to_write():
        torch.manual_seed(1)
        model = cls(config).to(torch.float32).eval()
        model.generation_config.eos_token_id = None
        model.generation_config.bos_token_id = None
        path = out_dir / name
        model.save_pretrained(path, safe_serialization=True)
        tok.save(str(path / "tokenizer.json"))
        cases = []
        with torch.no_grad():
            for text, ids in prompts:
                new, gap = greedy(model, ids)
                cases.append({"prompt": text, "prompt_ids": ids, "generated_ids": new,
                              "min_logit_gap": gap})
                print(f"serve-data: {name} prompt of {len(ids)} tokens: smallest logit gap {gap:.3g}")
        reference["models"][name] = cases
    (out_dir / "reference.json").write_text(json.dumps(reference, indent=1) + "\n")


if __name__ == "__main__":
    main()
