"""Side-by-side training throughput: `tessera train` (compiled and reference executors) against
PyTorch eager (and, with --torch-compile, `torch.compile`) on the same GPT shapes, optimizer and
byte-level text, in one invocation.

Usage (with the interpreter of the venv scripts/model-corpus/setup.sh builds, which has torch,
after `cargo build --release`):

    .cache/model-corpus/venv/bin/python scripts/bench/train_vs_torch.py \
        [--tessera target/release/tessera] [--model tiny|gpt2] [--steps 60] [--threads 2] \
        [--rounds 4] [--reference] [--torch-compile]
    .cache/model-corpus/venv/bin/python scripts/bench/train_vs_torch.py --agreement 300

`--model tiny` (the default) is the issue's tiny GPT, `gpt:layers=2,hidden=64,heads=4,seq=64,
vocab=256,dtype=f32,tied=false,dropout=0`: learned positions, pre-norm blocks (LayerNorm,
causal attention with biases, a 4x GELU MLP), a final LayerNorm and an untied head; batch 4.
`--model gpt2` is the zoo's GPT-2 small at seq 128 (`gpt2:seq=128,dtype=f32,dropout=0`: 12
layers, hidden 768, 12 heads, vocabulary 50257, the head tied to the token table); batch 1
unless `--batch` says otherwise. AdamW with lr 3e-3 (tessera's default) on windows of `--data`
(Debian's GPL-3 text by default) as byte tokens.

`--threads N` is both sides' thread count: PyTorch's intra-op threads and tessera's rayon pool
(`RAYON_NUM_THREADS`). Each side reports the median tokens/s of its steps after the first
--warmup ones (compilation and allocation warm-up left out), by wall clock and by the process's
CPU time (tessera's `cpu_time_s` per step, PyTorch's `time.process_time`); on a shared machine
at one thread the CPU column is the one that waiting for a core does not inflate. A round runs
tessera compiled, PyTorch eager, then (if asked) the tessera reference and torch.compile, so a
noisy machine loads them alike; with `--rounds N` the summary gives each ratio's median and
range over the rounds (above 1: tessera is faster).

`--agreement N` runs N steps on each executor instead and prints the largest relative
difference between the compiled step's losses and the reference interpreter's.
"""

import argparse
import json
import math
import os
import statistics
import subprocess
import time

# name: (tessera spec, layers, hidden, heads, seq, vocab, tied head, default batch)
MODELS = {
    "tiny": ("gpt:layers=2,hidden=64,heads=4,seq=64,vocab=256,dtype=f32,tied=false,dropout=0",
             2, 64, 4, 64, 256, False, 4),
    "gpt2": ("gpt2:seq=128,dtype=f32,dropout=0", 12, 768, 12, 128, 50257, True, 1),
}


def tessera_steps(binary, spec, executor, steps, batch, data, threads):
    """The `(step, loss, wall s, cpu s)` records of one `tessera train --format json` run."""
    cmd = [binary, "train", spec, "--steps", str(steps), "--batch", str(batch), "--data", data,
           "--format", "json", "--executor", executor]
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    records = []
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("{"):
            r = json.loads(line)
            if "loss" in r:
                records.append((r["step"], r["loss"], r["step_time_s"], r.get("cpu_time_s", math.nan)))
    return records


def tessera_rates(binary, spec, executor, steps, batch, seq, data, warmup, threads):
    """Median (wall, CPU) tokens/s of tessera's steps after the warm-up ones."""
    kept = [r for r in tessera_steps(binary, spec, executor, steps, batch, data, threads) if r[0] > warmup]
    if not kept:
        raise SystemExit(f"tessera train ({executor}) reported no steps after {warmup}")
    tokens = batch * seq
    return (statistics.median(tokens / r[2] for r in kept), statistics.median(tokens / r[3] for r in kept))


def torch_rates(torch, model_name, steps, batch, data, warmup, compiled):
    """Median (wall, CPU) tokens/s of a PyTorch training loop on the same shapes, optimizer and
    text."""
    _, LAYERS, HIDDEN, HEADS, SEQ, VOCAB, TIED, _ = MODELS[model_name]
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
            if TIED:
                self.head.weight = self.tok.weight

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
    wall, cpu = [], []
    for i in range(1, steps + 1):
        starts = torch.randint(0, len(text) - SEQ - 1, (batch,), generator=generator)
        windows = torch.stack([text[s:s + SEQ + 1] for s in starts.tolist()])
        begin, cpu_begin = time.perf_counter(), time.process_time()
        run(windows[:, :-1], windows[:, 1:]).item()
        elapsed, cpu_elapsed = time.perf_counter() - begin, time.process_time() - cpu_begin
        if i > warmup:
            wall.append(batch * SEQ / elapsed)
            cpu.append(batch * SEQ / cpu_elapsed)
    return statistics.median(wall), statistics.median(cpu)


def agreement(args, spec, batch):
    """The largest relative difference of the compiled step's losses from the interpreter's."""
    runs = {e: tessera_steps(args.tessera, spec, e, args.agreement, batch, args.data, args.threads)
            for e in ("compiled", "reference")}
    pairs = list(zip(runs["compiled"], runs["reference"]))
    if len(pairs) != args.agreement:
        raise SystemExit(f"expected {args.agreement} steps of each executor, got {len(pairs)}")
    worst = max(pairs, key=lambda p: abs(p[0][1] - p[1][1]) / abs(p[1][1]))
    relative = abs(worst[0][1] - worst[1][1]) / abs(worst[1][1])
    first, last = pairs[0][1][1], pairs[-1][1][1]
    print(f"{args.agreement} steps: max relative loss difference {relative:.3e} at step {worst[0][0]} "
          f"(compiled {worst[0][1]:.6f}, reference {worst[1][1]:.6f}); reference loss {first:.4f} -> {last:.4f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tessera", default="target/release/tessera")
    parser.add_argument("--model", choices=sorted(MODELS), default="tiny")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch", type=int, help="sequences per step (tiny: 4, gpt2: 1)")
    parser.add_argument("--threads", type=int, default=2, help="threads of both sides")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--data", default="/usr/share/common-licenses/GPL-3")
    parser.add_argument("--reference", action="store_true", help="also time the tessera reference executor")
    parser.add_argument("--torch-compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--agreement", type=int, metavar="STEPS",
                        help="compare the compiled losses with the interpreter's over STEPS steps instead")
    args = parser.parse_args()
    spec, seq, default_batch = MODELS[args.model][0], MODELS[args.model][4], MODELS[args.model][7]
    batch = args.batch or default_batch
    if args.agreement:
        agreement(args, spec, batch)
        return

    import torch

    torch.set_num_threads(args.threads)
    rounds = []
    for r in range(1, args.rounds + 1):
        load = os.getloadavg()[0]
        results = {"tessera compiled": tessera_rates(
            args.tessera, spec, "compiled", args.steps, batch, seq, args.data, args.warmup, args.threads)}
        results["pytorch eager"] = torch_rates(torch, args.model, args.steps, batch, args.data, args.warmup, False)
        if args.reference:
            results["tessera reference"] = tessera_rates(
                args.tessera, spec, "reference", max(args.warmup + 10, args.steps // 4), batch, seq, args.data,
                args.warmup, args.threads)
        if args.torch_compile:
            results["torch.compile"] = torch_rates(torch, args.model, args.steps, batch, args.data, args.warmup, True)
        eager = results["pytorch eager"]
        print(f"round {r} (load {load:.1f}):")
        for name, (wall, cpu) in results.items():
            print(f"  {name:>18}: {wall:10.0f} tokens/s wall {cpu:10.0f} tokens/s CPU "
                  f"({wall / eager[0]:.2f}x, {cpu / eager[1]:.2f}x eager)")
        rounds.append(results)
    print(f"{args.model}, batch {batch}, {args.steps} steps, {args.threads} threads, torch {torch.__version__}:")
    for name in rounds[0]:
        if name == "pytorch eager":
            continue
        for column, label in ((0, "wall"), (1, "CPU")):
            ratios = [res[name][column] / res["pytorch eager"][column] for res in rounds]
            print(f"  {name} / pytorch eager ({label}): median {statistics.median(ratios):.2f}x, "
                  f"range {min(ratios):.2f}-{max(ratios):.2f}x over {len(ratios)} round(s)")


if __name__ == "__main__":
    main()
