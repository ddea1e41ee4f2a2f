"""Exports a full-size GPT-2 small (124 M parameters, random init) as a user would, for the import
benchmark of issue 15 item 6 (`tessera bench import`, BENCHMARKS.md "GPT-2 small: import and
compile").

Usage (with the model-corpus venv, read-only; writes only OUT_DIR):

    .cache/model-corpus/venv/bin/python scripts/bench/gpt2_small_export.py target/tmp/gpt2-small

Writes OUT_DIR/gpt2-small.onnx (plus OUT_DIR/gpt2-small.onnx.data when the exporter chooses
external data: the weights are about 500 MB of float32, near protobuf's 2 GB limit only for larger
models, so the TorchScript exporter normally writes one file). `GPT2LMHeadModel(GPT2Config())` is
the default configuration: 12 layers, 768 wide, 12 heads, 50,257-token vocabulary, 1,024
positions. Weights are seeded (torch.manual_seed(7)), so two runs give the same model for one set
of pinned packages. Batch and sequence are dynamic axes named `batch` and `sequence`, the way the
transformers documentation exports; `use_cache=False` and the attention mask as an input, as in
scripts/model-corpus/generate.py.
"""

import os
import sys
import warnings

import torch
from transformers import GPT2Config, GPT2LMHeadModel

SEED = 7


class LogitsOnly(torch.nn.Module):
    """Returns the logits tensor alone (the ONNX graph's one output)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def main():
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "gpt2-small.onnx")
    torch.manual_seed(SEED)
    model = GPT2LMHeadModel(GPT2Config(use_cache=False)).eval()
    params = sum(p.numel() for p in model.parameters())
    example = (torch.randint(0, 50257, (1, 8)), torch.ones(1, 8, dtype=torch.int64))
    axes = {0: "batch", 1: "sequence"}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            LogitsOnly(model),
            example,
            path,
            input_names=["input_ids", "attention_mask"],
            output_names=["logits"],
            dynamic_axes={"input_ids": axes, "attention_mask": axes},
            dynamo=False,
        )
    sizes = {f: os.path.getsize(os.path.join(out_dir, f)) for f in os.listdir(out_dir)}
    print(f"parameters: {params}; files: {sizes}")


if __name__ == "__main__":
    main()
