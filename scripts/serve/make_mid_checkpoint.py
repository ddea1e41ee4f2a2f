"""Writes a mid-size random-init GPT-2 checkpoint for serving benchmarks, where a step of the
model is real work (the test checkpoints of make_checkpoints.py are so small that a step costs
about as much as the bookkeeping around it): hidden 512, 8 layers, 8 heads, 256 positions,
the test tokenizer (vocab 384), f32, about 25M parameters. With --llama, a Llama of the same
size instead: hidden 512, 8 layers, 8 query heads sharing 4 key/value heads (GQA), SwiGLU of
1536, untied head, about 27M parameters. Not used by tests.

Usage: make_mid_checkpoint.py OUT_DIR [--llama]   (writes OUT_DIR/gpt2-mid or OUT_DIR/llama-mid)
"""

import sys
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_checkpoints import VOCAB, tokenizer  # noqa: E402


def main():
    if "--llama" in sys.argv[2:]:
        return llama(Path(sys.argv[1]) / "llama-mid")
    out = Path(sys.argv[1]) / "gpt2-mid"
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=VOCAB, n_positions=256, n_embd=512, n_layer=8, n_head=8,
        activation_function="gelu_new", layer_norm_epsilon=1e-5,
        bos_token_id=None, eos_token_id=None, tie_word_embeddings=True,
    )
    GPT2LMHeadModel(config).eval().save_pretrained(out, safe_serialization=True)
    tokenizer().save(str(out / "tokenizer.json"))
    print(out)


def llama(out):
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=512, intermediate_size=1536, num_hidden_layers=8,
        num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=256,
        rms_norm_eps=1e-5, tie_word_embeddings=False,
        bos_token_id=None, eos_token_id=None, pad_token_id=None, rope_theta=10000.0,
    )
    LlamaForCausalLM(config).eval().save_pretrained(out, safe_serialization=True)
    tokenizer().save(str(out / "tokenizer.json"))
    print(out)


if __name__ == "__main__":
    main()
