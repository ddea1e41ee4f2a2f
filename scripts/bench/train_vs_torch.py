"""Side-by-side training throughput: `tessera train` (compiled and reference executors) against
PyTorch eager (and, with --torch-compile, `torch.compile`) on the same GPT shapes, optimizer and
byte-level text, in one invocation.

Usage (with the interpreter of the venv scripts/model-corpus/setup.sh builds, which has torch,
after `cargo build --release`):

    .cache/model-corpus/venv/bin/python scripts/bench/train_vs_torch.py \
        [--tessera target/release/tessera] [--steps 60] [--threads 2] [--torch-compile]

The model is the issue's tiny GPT, `gpt:layers=2,hidden=64,heads=4,seq=64,vocab=256,dtype=f32,
tied=false,dropout=0`: learned positions, pre-norm blocks (LayerNorm, causal attention with
biases, a 4x GELU MLP), a final LayerNorm and an untied head; AdamW with lr 3e-3 (tessera's
default); batch 4 windows of 64 bytes of `--data` (Debian's GPL-3 text by default) per step.
Each side reports the median tokens/s of its steps after the first --warmup ones (compilation
and allocation warm-up left out); the last line prints the ratios (above 1: tessera is faster).
The runs alternate tessera compiled, PyTorch eager, tessera reference, torch.compile, so a noisy
shared machine loads them alike; compare ratios, not absolute numbers.
"""

import argparse
import json
import math
import statistics
import subprocess
import time

SPEC = "gpt:layers=2,hidden=64,heads=4,seq=64,vocab=256,dtype=f32,tied=false,dropout=0"
LAYERS, HIDDEN, HEADS, SEQ, VOCAB = 2, 64, 4, 64, 256


def tessera_tokens_per_s(binary, executor, steps, batch, data, warmup):
    """Median tokens/s of `tessera train --format json` steps after the warm-up ones."""
    cmd = [binary, "train", SPEC, "--steps", str(steps), "--batch", str(batch), "--data", data,
           "--format", "json", "--executor", executor]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    rates = []
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("{"):
            record = json.loads(line)
            if "tokens_per_s" in record and record["step"] > warmup:
                rates.append(record["tokens_per_s"])
    if not rates:
        raise SystemExit(f"tessera train ({executor}) reported no steps after {warmup}: {out[:500]}")
    return statistics.median(rates)


def torch_tokens_per_s(torch, steps, batch, data, warmup, compiled):
    """Median tokens/s of a PyTorch training loop on the same shapes, optimizer and text."""
    nn = torch.nn
    F = torch.nn.functional

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1 = nn.LayerNorm(HIDDEN)
            self.qkv = nn.Linear(HIDDEN, 3 * HIDDEN)
            self.proj = nn.Linear(HIDDEN, HIDDEN)
            self.ln2 = nn.LayerNorm(HIDDEN)
            self.fc1 = nn.Linear(HIDDEN, 4 * HIDDEN)
            self.fc2 = nn.Linear(4 * HIDDEN, HIDDEN)

        def forward(self, x):
            b, t, h = x.shape
            q, k, v = self.qkv(self.ln1(x)).split(HIDDEN, dim=2)
            shape = (b, t, HEADS, h // HEADS)
            q, k, v = (z.view(shape).transpose(1, 2) for z in (q, k, v))
            att = (q @ k.transpose(-2, -1)) / math.sqrt(h // HEADS)
            mask = torch.ones(t, t, dtype=torch.bool).tril()
            att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
            y = (att @ v).transpose(1, 2).reshape(b, t, h)
            x = x + self.proj(y)
            return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))

    class Gpt(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok = nn.Embedding(VOCAB, HIDDEN)
            self.pos = nn.Embedding(SEQ, HIDDEN)
            self.blocks = nn.ModuleList(Block() for _ in range(LAYERS))
            self.ln = nn.LayerNorm(HIDDEN)
            self.head = nn.Linear(HIDDEN, VOCAB, bias=False)

        def forward(self, idx):
            x = self.tok(idx) + self.pos(torch.arange(idx.shape[1]))
            for block in self.blocks:
                x = block(x)
            return self.head(self.ln(x))

    torch.manual_seed(0)
    model = Gpt()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    text = torch.tensor(list(open(data, "rb").read()), dtype=torch.long)
    generator = torch.Generator().manual_seed(0)

    def step(x, y):
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), y.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    run = torch.compile(step) if compiled else step
    rates = []
    for i in range(1, steps + 1):
        starts = torch.randint(0, len(text) - SEQ - 1, (batch,), generator=generator)
        windows = torch.stack([text[s:s + SEQ + 1] for s in starts.tolist()])
        begin = time.perf_counter()
        run(windows[:, :-1], windows[:, 1:]).item()
        elapsed = time.perf_counter() - begin
        if i > warmup:
            rates.append(batch * SEQ / elapsed)
    return statistics.median(rates)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tessera", default="target/release/tessera")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2, help="PyTorch intra-op threads")
    parser.add_argument("--data", default="/usr/share/common-licenses/GPL-3")
    parser.add_argument("--torch-compile", action="store_true", help="also time torch.compile")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    results = {}
    results["tessera compiled"] = tessera_tokens_per_s(
        args.tessera, "compiled", args.steps, args.batch, args.data, args.warmup)
    results["pytorch eager"] = torch_tokens_per_s(torch, args.steps, args.batch, args.data, args.warmup, False)
    results["tessera reference"] = tessera_tokens_per_s(
        args.tessera, "reference", max(args.warmup + 10, args.steps // 4), args.batch, args.data, args.warmup)
    if args.torch_compile:
        results["torch.compile"] = torch_tokens_per_s(torch, args.steps, args.batch, args.data, args.warmup, True)
    for name, rate in results.items():
        print(f"{name:>18}: {rate:10.0f} tokens/s")
    eager = results["pytorch eager"]
    ratios = ", ".join(f"{name} / pytorch eager = {rate / eager:.2f}x" for name, rate in results.items()
                       if name != "pytorch eager")
    print(f"ratios: {ratios} (torch {torch.__version__}, {args.threads} threads)")


if __name__ == "__main__":
    main()
