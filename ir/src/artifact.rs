//! The ahead-of-time artifact format: what `tessera compile` writes and `tessera run` executes.
//!
//! An artifact is a directory:
//!
//! ```text
//! DIR/manifest.json          Manifest: format and tool versions, input hash, target, mesh, ranks
//! DIR/rank0/program.json     Program: buffers with their static memory plan, and the steps
//! DIR/rank0/weights.bin      the program's constants, little-endian, at the offsets of the plan
//! DIR/rank0/kernels.so       the fused kernels (CPU target)
//! DIR/rank0/kernels/S.ptx    CUDA targets: one PTX module per kernel S (and S.cubin when ptxas ran)
//! DIR/rank0/graph.mlir       a range artifact (`compile --dim NAME=LO..HI`, format 3): the model's
//!                            symbolic graph in the `tsr` text form, constants included, instead
//!                            of program.json, weights.bin and kernels (see [`DimRange`])
//! DIR/rankR/...              a mesh artifact (`compile --mesh`): the same per rank R, each
//!                            program.json with its RankShard; ranks of one pipeline stage hold
//!                            byte-identical kernels and weights
//! ```
//!
//! The structs live here, not in `codegen`, because the runtime reads them and must not depend
//! on codegen, MLIR or LLVM. The manifest lists every other file with its SHA-256, so a loader
//! checks integrity before it maps code into the process.

use crate::dtype::DType;
use crate::ops::collective::Collective;
use crate::ops::conv::{PoolKind, Window};
use crate::ops::elementwise::{BinaryOp, UnaryOp};
use crate::ops::indexing::ScatterReduction;
use crate::ops::recurrent::{Cell, RecurrentKind};
use crate::ops::Op;
use crate::tensor::{Buffer, Tensor};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Bumped on every change a loader of the previous version would misread. Version 2 added
/// [`Program::kernel_signatures`] and the signature table of `kernels.so`
/// ([`KERNEL_SIGNATURES_SYMBOL`]), which the loader requires. Version 3 added range artifacts:
/// [`Manifest::dims`] and the symbolic program [`SYMBOLIC_PROGRAM_FILE`]. An artifact is written
/// with the oldest version that describes it ([`Manifest::version_for`]): one without ranges is
/// still version 2, byte for byte what it was, and loaders read versions
/// [`FIRST_READABLE_FORMAT_VERSION`] to [`FORMAT_VERSION`].
pub const FORMAT_VERSION: u32 = 3;
/// The oldest format version a loader of this tessera runs (version 1 programs lack the kernel
/// signatures the loader checks).
pub const FIRST_READABLE_FORMAT_VERSION: u32 = 2;
/// A range artifact's program (rank 0, format 3): the graph as `tsr` MLIR text, its symbolic
/// dimensions those of [`Manifest::dims`].
pub const SYMBOLIC_PROGRAM_FILE: &str = "graph.mlir";
/// The oldest format version a tessera artifact directory was ever written with: `compile -o`
/// replaces a complete artifact of any version from this one to [`FORMAT_VERSION`].
pub const FIRST_FORMAT_VERSION: u32 = 1;
/// The exported data symbol of `kernels.so` holding [`signature_table`] of the kernels it was
/// compiled with, which the loader compares with the program's before mapping the object.
pub const KERNEL_SIGNATURES_SYMBOL: &str = "tessera_kernel_signatures";
/// The manifest's file name at the artifact's root.
pub const MANIFEST_FILE: &str = "manifest.json";
/// Offsets of arena and weight buffers are multiples of this (a cache line, and the widest
/// vector load a kernel may use).
pub const ALIGNMENT: u64 = 64;

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    /// The `tessera` version that wrote the artifact.
    pub tessera_version: String,
    /// SHA-256 (hex) of the input model's bytes and the normalized compile options: two compiles
    /// with equal hashes are byte-identical.
    pub input_hash: String,
    /// `cpu`, `cuda:sm_80` or `cuda:sm_90`.
    pub target: String,
    /// The compile options, normalized (sorted, one spelling each).
    pub options: Vec<String>,
    /// Device mesh axes and sizes; empty for one device.
    pub mesh: Vec<MeshAxis>,
    /// One entry per rank, in rank order.
    pub ranks: Vec<RankEntry>,
    /// Range artifacts (format 3): the symbolic dimensions left free and the sizes each may take
    /// at run time, sorted by name; the run binds them from the inputs. Empty (and absent from
    /// the JSON, so older manifests are unchanged) for an artifact of static shapes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dims: Vec<DimRange>,
}

impl Manifest {
    /// The format version an artifact with these `dims` is written with: the oldest that can
    /// describe it (2 without ranges, 3 with).
    pub fn version_for(dims: &[DimRange]) -> u32 {
        if dims.is_empty() {
            2
        } else {
            FORMAT_VERSION
        }
    }
}

/// A symbolic dimension a range artifact leaves free: every size in `lo..=hi` runs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DimRange {
    pub name: String,
    pub lo: u64,
    pub hi: u64,
}

impl DimRange {
    /// Whether `size` is in the range.
    pub fn contains(&self, size: u64) -> bool {
        (self.lo..=self.hi).contains(&size)
    }
}

impl std::fmt::Display for DimRange {
    /// `name=lo..hi`, the spelling of `tessera compile --dim`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}..{}", self.name, self.lo, self.hi)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeshAxis {
    pub name: String,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RankEntry {
    pub rank: u32,
    /// The rank's program, relative to the artifact root (`rank0/program.json`).
    pub program: String,
    /// Every file of the rank (the program included), relative to the artifact root.
    pub files: Vec<FileEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    pub bytes: u64,
    /// Lowercase hex SHA-256 of the content.
    pub sha256: String,
}

/// How a buffer's elements are laid out in memory: the kernel ABI's storage types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    /// Every float dtype computes and is stored as `f32`.
    F32,
    /// Every integer dtype is stored as `i64`.
    I64,
    /// Booleans, one byte each (0 or 1).
    U8,
}

impl Storage {
    pub fn of(dtype: DType) -> Storage {
        if dtype.is_float() {
            Storage::F32
        } else if dtype == DType::Bool {
            Storage::U8
        } else {
            Storage::I64
        }
    }

    /// The dtype a program computes in for values of this storage.
    pub fn compute_dtype(self) -> DType {
        match self {
            Storage::F32 => DType::F32,
            Storage::I64 => DType::I64,
            Storage::U8 => DType::Bool,
        }
    }

    /// The spelling in JSON and in the kernels' signature table.
    pub fn name(self) -> &'static str {
        match self {
            Storage::F32 => "f32",
            Storage::I64 => "i64",
            Storage::U8 => "u8",
        }
    }

    pub fn element_bytes(self) -> u64 {
        match self {
            Storage::F32 => 4,
            Storage::I64 => 8,
            Storage::U8 => 1,
        }
    }
}

/// Where a buffer lives: in the per-run arena (activations, inputs, outputs) or in the
/// read-only weights image (constants).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "region")]
pub enum Location {
    Arena { offset: u64 },
    Weights { offset: u64 },
}

/// One tensor of the program. Buffers that alias (a reshape's result and its operand) share a
/// location.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BufferDesc {
    /// The SSA name of the value it holds, for diagnostics.
    pub name: String,
    pub storage: Storage,
    pub shape: Vec<u64>,
    pub location: Location,
}

impl BufferDesc {
    pub fn elements(&self) -> u64 {
        self.shape.iter().product()
    }

    pub fn bytes(&self) -> u64 {
        self.elements() * self.storage.element_bytes()
    }
}

/// A graph input or output: its name, the dtype the model declares (what `.npy` files hold) and
/// the buffer (an index into [`Program::buffers`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IoBinding {
    pub name: String,
    pub dtype: DType,
    pub buffer: u32,
    /// An input the model declares a trained parameter (weights): what a serving runtime binds
    /// once and keeps resident across runs (`tessera run --repeat`). Absent (false) for
    /// activations, outputs, and artifacts written before the field existed.
    #[serde(default, skip_serializing_if = "is_false")]
    pub parameter: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Work the runtime does itself rather than through a generated kernel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "call")]
pub enum LibraryCall {
    /// Batched matrix product with NumPy broadcasting of batch dimensions (args: a, b, out).
    MatMul,
    /// `a @ transpose(b)` over the last two axes, with `b` given untransposed as `[.., n, k]`
    /// (args: a, b, out): a transpose that only feeds a GEMM folds into the GEMM's strides.
    MatMulTransposedB,
    /// Batched integer matrix product, broadcast like [`LibraryCall::MatMul`], on `i64` storage
    /// (args: a, b, out): products and sums wrap in i64 and the result wraps to `dtype`, as the
    /// interpreter computes it (the GEMM library is f32 only).
    IntegerMatMul { dtype: DType },
    /// Axis permutation (args: input, output).
    Transpose { perm: Vec<u64> },
    /// Rows of `data` selected by `indices` along `axis` (args: data, indices, output).
    Gather { axis: u64 },
    /// Consecutive pieces along `axis` (args: input, outputs...).
    Split { axis: u64 },
    /// Strided window (args: input, output); the output shape gives the extents.
    Slice { starts: Vec<u64>, steps: Vec<u64> },
    /// Joins along `axis` (args: inputs..., output).
    Concat { axis: u64 },
    /// `tsr.conv2d` on f32 NCHW images (args: input, weight, output): im2col per group and a
    /// GEMM, or a direct loop when depthwise.
    Conv2d { window: Window, groups: u64 },
    /// `tsr.max_pool2d` / `tsr.avg_pool2d` on f32 NCHW images (args: input, output).
    Pool2d { kind: PoolKind, kernel: [u64; 2], window: Window },
    /// `tsr.lstm` / `tsr.gru` / `tsr.rnn` on f32 values (args: the op's operands, then its
    /// results): GEMMs for the input and recurrent projections, the reference's per-unit math.
    Recurrent { kind: RecurrentKind, cell: Cell },
    /// Communication with the other ranks of a mesh artifact (`all_reduce`, `all_gather`,
    /// `reduce_scatter`, `all_to_all`, `all_slice`, `send`, `recv`), run over the runtime's
    /// communicator (args: the op's operand, then its result; a `send` has no result, a `recv`
    /// no operand). Mesh axes resolve to ranks through the manifest's mesh.
    Collective { op: Collective },
    /// `tsr.winograd_input` on an f32 NCHW image (args: input, output); the output shape
    /// `[16, T, C]` and `pads` (`[top, left, bottom, right]`) give the tiling.
    WinogradInput { pads: [u64; 4] },
    /// `tsr.winograd_weight` on an f32 `[K, C, 3, 3]` kernel (args: weight, output).
    WinogradWeight,
    /// `tsr.winograd_output` of an f32 `[16, T, K]` product into `[N, K, OH, OW]` (args: input,
    /// output).
    WinogradOutput,
    /// `tsr.cross_entropy`: the mean negative log-likelihood of f32 logits `[.., V]` at i64
    /// targets (args: logits, targets, loss), a numerically stable log-softmax per row summed in
    /// f64 in row order as the interpreter does, so a training step's loss is its loss bit for
    /// bit.
    CrossEntropy,
    /// `tsr.scatter` of f32 `updates` into f32 `data` at i64 `indices` along `axis` (args:
    /// data, indices, updates, output): the output is `data` copied, with every touched
    /// position combined in f64 in update order and rounded once, as the interpreter does. The
    /// embedding gradient (scatter-add of a few hundred rows into a 50,257-row table) touches
    /// only those rows, not the whole table.
    Scatter { axis: u64, reduction: ScatterReduction },
    /// Any other op, evaluated with its reference semantics (`Op::eval`): correct but slow;
    /// the compiler reports how many of these a program has.
    Reference { op: Op },
    /// A GEMM or a convolution (`gemm`: [`LibraryCall::MatMul`],
    /// [`LibraryCall::MatMulTransposedB`] or [`LibraryCall::Conv2d`]) whose result goes through
    /// `epilogue` (bias, activation, residual add: the elementwise fusion group that was its
    /// only reader) block by block, right after each block is computed and while it is in
    /// cache, instead of a separate kernel that re-reads the whole tensor (args: the call's two
    /// operands, then the epilogue's operands, then the output).
    WithEpilogue { gemm: Box<LibraryCall>, epilogue: Epilogue },
}

/// Elementwise f32 work applied to every element of a GEMM's or a convolution's result: a
/// straight-line program over the element `x` at flat index `i` of the result, operands read at
/// indices derived from `i` ([`EpilogueOperand`]). Instruction `j` defines value `j`; every
/// instruction reads only earlier values; the last one is what is stored at `i`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Epilogue {
    /// How each operand (the step inputs after the call's own two) is indexed.
    pub operands: Vec<EpilogueOperand>,
    pub code: Vec<EpilogueOp>,
}

/// How an epilogue operand broadcasts over the result: element `i` of the result reads element
/// `(i / inner) % extent` of the operand. A residual has `inner` 1 and `extent` the result's
/// size, a scalar `extent` 1, a bias over a matmul's columns `inner` 1 and `extent` the columns,
/// a bias over a convolution's channels `inner` the plane size and `extent` the channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpilogueOperand {
    pub inner: u64,
    pub extent: u64,
}

/// One instruction of an [`Epilogue`]; `x`, `a` and `b` name earlier instructions' values.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "op")]
pub enum EpilogueOp {
    /// The call's result at this element.
    Result,
    /// Operand `index` at this element ([`EpilogueOperand`]).
    Operand {
        index: u32,
    },
    Unary {
        unary: UnaryOp,
        x: u32,
    },
    Binary {
        binary: BinaryOp,
        a: u32,
        b: u32,
    },
}

impl Epilogue {
    /// The unary ops an epilogue computes (f32, the generated kernels' approximations).
    pub fn supports_unary(op: UnaryOp) -> bool {
        matches!(
            op,
            UnaryOp::Neg
                | UnaryOp::Abs
                | UnaryOp::Exp
                | UnaryOp::Sqrt
                | UnaryOp::Rsqrt
                | UnaryOp::Reciprocal
                | UnaryOp::Tanh
                | UnaryOp::Sigmoid
                | UnaryOp::Relu
                | UnaryOp::Gelu
                | UnaryOp::GeluTanh
                | UnaryOp::Silu
                | UnaryOp::Erf
                | UnaryOp::Softsign
        )
    }

    /// The binary ops an epilogue computes.
    pub fn supports_binary(op: BinaryOp) -> bool {
        matches!(op, BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div | BinaryOp::Max | BinaryOp::Min)
    }

    /// Why the epilogue is malformed (an instruction reading a later value or a missing
    /// operand, an unsupported op, no instructions), if it is.
    pub fn check(&self) -> Result<(), String> {
        if self.code.is_empty() {
            return Err("an epilogue needs at least one instruction".into());
        }
        for (j, op) in self.code.iter().enumerate() {
            let earlier = |v: u32| (v as usize) < j;
            let ok = match *op {
                EpilogueOp::Result => true,
                EpilogueOp::Operand { index } => (index as usize) < self.operands.len(),
                EpilogueOp::Unary { unary, x } => Self::supports_unary(unary) && earlier(x),
                EpilogueOp::Binary { binary, a, b } => Self::supports_binary(binary) && earlier(a) && earlier(b),
            };
            if !ok {
                return Err(format!("epilogue instruction {j} ({op:?}) is malformed"));
            }
        }
        if self.operands.iter().any(|o| o.inner == 0 || o.extent == 0) {
            return Err("an epilogue operand has an empty extent".into());
        }
        Ok(())
    }
}

impl LibraryCall {
    pub fn name(&self) -> &'static str {
        match self {
            LibraryCall::MatMul => "matmul",
            LibraryCall::MatMulTransposedB => "matmul_transposed_b",
            LibraryCall::IntegerMatMul { .. } => "integer_matmul",
            LibraryCall::Transpose { .. } => "transpose",
            LibraryCall::Gather { .. } => "gather",
            LibraryCall::Split { .. } => "split",
            LibraryCall::Slice { .. } => "slice",
            LibraryCall::Concat { .. } => "concat",
            LibraryCall::Conv2d { .. } => "conv2d",
            LibraryCall::Pool2d { kind, .. } => kind.mnemonic(),
            LibraryCall::Recurrent { kind, .. } => kind.mnemonic(),
            LibraryCall::Collective { op } => op.mnemonic(),
            LibraryCall::WinogradInput { .. } => "winograd_input",
            LibraryCall::WinogradWeight => "winograd_weight",
            LibraryCall::WinogradOutput => "winograd_output",
            LibraryCall::CrossEntropy => "cross_entropy",
            LibraryCall::Scatter { .. } => "scatter",
            LibraryCall::Reference { .. } => "reference",
            LibraryCall::WithEpilogue { gemm, .. } => match **gemm {
                LibraryCall::MatMul => "matmul_epilogue",
                LibraryCall::MatMulTransposedB => "matmul_transposed_b_epilogue",
                LibraryCall::Conv2d { .. } => "conv2d_epilogue",
                _ => "epilogue",
            },
        }
    }
}

/// One step of a program; `args` are buffer indices, inputs first, then outputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Step {
    /// A generated kernel: `extern "C" fn symbol(args: *const *mut u8)`.
    Kernel {
        symbol: String,
        inputs: Vec<u32>,
        outputs: Vec<u32>,
    },
    Library {
        call: LibraryCall,
        inputs: Vec<u32>,
        outputs: Vec<u32>,
    },
}

impl Step {
    pub fn inputs(&self) -> &[u32] {
        match self {
            Step::Kernel { inputs, .. } | Step::Library { inputs, .. } => inputs,
        }
    }

    pub fn outputs(&self) -> &[u32] {
        match self {
            Step::Kernel { outputs, .. } | Step::Library { outputs, .. } => outputs,
        }
    }
}

/// A rank's `program.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Program {
    pub name: String,
    pub target: String,
    /// Bytes of the per-run arena (the high-water mark of the memory plan).
    pub arena_bytes: u64,
    /// The weights image, relative to the rank's directory, and its size.
    pub weights_file: String,
    pub weights_bytes: u64,
    /// The kernel code, relative to the rank's directory (`kernels.so`, `kernels.ptx`); absent
    /// when the program has no kernels.
    pub kernels_file: Option<String>,
    pub buffers: Vec<BufferDesc>,
    pub inputs: Vec<IoBinding>,
    pub outputs: Vec<IoBinding>,
    pub steps: Vec<Step>,
    /// What every generated kernel is called with: one per distinct symbol, in the order the
    /// kernels were compiled. The loader checks every kernel step against it (arity and the
    /// storage of each operand) and, on the CPU, checks it equals the table the shared object
    /// exports, so no kernel is ever called with buffers it was not compiled for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kernel_signatures: Vec<KernelSignature>,
    /// CUDA targets: the kernels' PTX files and launches, the cuBLAS GEMMs and the scratch
    /// memory; absent for the CPU target (whose JSON is unchanged by this field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<GpuProgram>,
    /// Mesh artifacts: which part of the partitioned model this rank's program is, and how its
    /// inputs and outputs are cut from the model's; absent for a one-device program (whose JSON
    /// is unchanged by this field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<RankShard>,
    /// Indices into `steps` (ascending) of the steps that read only parameter inputs,
    /// constants and earlier such steps' results: weight-only subexpressions (a merged QKV
    /// weight, a batch-norm scale folded into a convolution's weights). The memory plan pins
    /// their results like inputs, so an executor that holds every parameter resident may run
    /// them once when it binds the parameters instead of on every run (the CPU executor does).
    /// Absent when there are none (that program's JSON is unchanged by this field).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bind_steps: Vec<u32>,
}

/// A rank's place in a mesh artifact (see [`Program::shard`]). Every rank of a pipeline stage
/// runs the same steps (collectives name mesh axes, never ranks), on its own blocks of the
/// inputs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RankShard {
    pub rank: u32,
    /// The pipeline stage the rank belongs to, of `stages`.
    pub stage: u32,
    pub stages: u32,
    /// Per program input, in [`Program::inputs`] order: the model input it is a block of.
    pub inputs: Vec<ShardedIo>,
    /// Per program output, in [`Program::outputs`] order.
    pub outputs: Vec<ShardedIo>,
    /// This rank returns the model's outputs (whole): the first rank of the last stage.
    pub writes_outputs: bool,
}

/// How a program input or output is a block of the model's tensor of the same name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardedIo {
    pub name: String,
    /// The model tensor's shape (the program's buffer holds this rank's block of it).
    pub global_shape: Vec<u64>,
    /// The sharding in `ir::sharding`'s text form (`[{dp}, {}]`).
    pub sharding: String,
}

/// A generated kernel's ABI: its symbol and what each pointer of its argument array points to
/// (inputs, then outputs). Kernels are specialized to their operands' shapes, so the shapes are
/// part of the signature: a kernel called on a smaller buffer would read or write past it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelSignature {
    pub symbol: String,
    pub inputs: Vec<KernelOperand>,
    pub outputs: Vec<KernelOperand>,
}

/// One argument of a kernel: the storage and shape of the buffer it must be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelOperand {
    pub storage: Storage,
    pub shape: Vec<u64>,
}

/// The text of the signature table a CPU `kernels.so` exports as [`KERNEL_SIGNATURES_SYMBOL`]:
/// one line per kernel, `symbol(f32[2,3],i64[])->(f32[2,3])`. The loader compares it byte for
/// byte with the table of the program's signatures, so a foreign or mismatched object is refused.
pub fn signature_table(signatures: &[KernelSignature]) -> String {
    let list = |operands: &[KernelOperand]| {
        let spell = |o: &KernelOperand| {
            let dims: Vec<String> = o.shape.iter().map(u64::to_string).collect();
            format!("{}[{}]", o.storage.name(), dims.join(","))
        };
        operands.iter().map(spell).collect::<Vec<_>>().join(",")
    };
    signatures.iter().map(|k| format!("{}({})->({})\n", k.symbol, list(&k.inputs), list(&k.outputs))).collect()
}

/// What a CUDA executor needs beyond the target-independent [`Program`]: the device runs the
/// same steps over a device arena laid out by the same memory plan (buffer offsets are device
/// arena offsets), with the weights image uploaded once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuProgram {
    /// `sm_80` or `sm_90`.
    pub arch: String,
    /// Bytes of the device scratch region that kernel temporaries live in (steps run one after
    /// another on one stream, so all kernels share it).
    pub scratch_bytes: u64,
    /// One per kernel step's symbol, in step order.
    pub kernels: Vec<GpuKernel>,
    /// One per GEMM library step (`matmul`, `matmul_transposed_b`), in step order.
    pub gemms: Vec<GpuGemm>,
}

/// One kernel step's code and launches. Every launch gets as parameters one device pointer per
/// kernel input, then per output, then per temporary, in the step's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuKernel {
    /// The step's symbol (the kernel graph's name).
    pub symbol: String,
    /// The PTX module, relative to the rank's directory.
    pub ptx_file: String,
    /// The module assembled by `ptxas` for [`GpuProgram::arch`], when ptxas was available at
    /// compile time; a loader prefers it (no JIT at load time).
    pub cubin_file: Option<String>,
    /// In order, on one stream.
    pub launches: Vec<GpuLaunch>,
    /// Offsets of the kernel's temporaries in the scratch region.
    pub temporaries: Vec<GpuTemporary>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuLaunch {
    /// The `.entry` name in the PTX.
    pub entry: String,
    pub grid: [u32; 3],
    pub block: [u32; 3],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuTemporary {
    pub scratch_offset: u64,
    pub bytes: u64,
}

/// A row-major matmul step as cuBLAS `sgemm_strided_batched` calls, already in cuBLAS's
/// column-major terms: row-major `C = A·op(B)` is column-major `Cᵀ = op(B)ᵀ·Aᵀ`, so cuBLAS's
/// first operand is the step's `b` and its second the step's `a`. Offsets are element offsets
/// from each buffer's start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuGemm {
    /// Index of the library step in [`Program::steps`].
    pub step: u32,
    /// cuBLAS's `transa` (applies to the step's `b`) and `transb` (to the step's `a`).
    pub trans_b: bool,
    pub trans_a: bool,
    /// cuBLAS's m (columns of the row-major result), n (its rows) and k.
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub ld_b: u32,
    pub ld_a: u32,
    pub ld_c: u32,
    /// One strided-batched call per entry (NumPy broadcasting that no single stride pattern
    /// expresses takes several).
    pub calls: Vec<GemmBatch>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GemmBatch {
    pub batch: u32,
    pub offset_a: u64,
    pub offset_b: u64,
    pub offset_c: u64,
    /// Element strides between consecutive matrices of the batch (0: the same matrix).
    pub stride_a: u64,
    pub stride_b: u64,
    pub stride_c: u64,
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    sha256_hex_of_parts(&[bytes])
}

/// Lowercase hex SHA-256 of the concatenation of `parts`, hashed in place: a model's bytes are
/// not copied into one buffer first (for a 650 MB model that copy was 650 MB of peak memory).
pub fn sha256_hex_of_parts(parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    parts.iter().for_each(|part| hasher.update(part));
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// A `std::io::Write` sink that SHA-256-hashes what is written to it: for content produced by
/// a writer (a weights image encoded piece by piece) that is never held whole in memory.
#[derive(Default)]
pub struct Sha256Writer {
    hasher: Sha256,
}

impl Sha256Writer {
    /// The lowercase hex digest of everything written, as [`sha256_hex`] gives it.
    pub fn finish_hex(self) -> String {
        self.hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl std::io::Write for Sha256Writer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.hasher.update(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Lowercase hex SHA-256 of `prefix`, then everything `reader` yields, then `suffix`, read in
/// 1 MiB pieces: a model file is hashed without holding it in memory.
pub fn sha256_hex_of_stream(
    prefix: &[&[u8]],
    mut reader: impl std::io::Read,
    suffix: &[&[u8]],
) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    prefix.iter().for_each(|part| hasher.update(part));
    let mut piece = vec![0u8; 1 << 20];
    loop {
        match reader.read(&mut piece) {
            Ok(0) => break,
            Ok(n) => hasher.update(&piece[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    suffix.iter().for_each(|part| hasher.update(part));
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// A tensor's elements in their storage type, little-endian.
pub fn encode(t: &Tensor) -> Vec<u8> {
    let mut out = Vec::with_capacity(t.len() * Storage::of(t.dtype).element_bytes() as usize);
    encode_into(t, &mut out);
    out
}

/// [`encode`], appended to `out` (a weights image) without a temporary per tensor.
pub fn encode_into(t: &Tensor, out: &mut Vec<u8>) {
    encode_range_into(t, 0..t.len(), out);
}

/// The bytes [`encode`] gives `t`'s elements `elements` (row-major indices), appended to `out`:
/// a large constant is written to a file piece by piece, never encoded whole in memory.
pub fn encode_range_into(t: &Tensor, elements: std::ops::Range<usize>, out: &mut Vec<u8>) {
    let storage = Storage::of(t.dtype);
    out.reserve(elements.len() * storage.element_bytes() as usize);
    match (&t.data, storage) {
        (Buffer::Float(v), _) => v[elements].iter().for_each(|&x| out.extend_from_slice(&(x as f32).to_le_bytes())),
        (Buffer::F32(v), _) => v[elements].iter().for_each(|&x| out.extend_from_slice(&x.to_le_bytes())),
        // Every float is stored as f32 in an artifact (the kernel ABI); f16 and bf16 widen exactly.
        (Buffer::F16(v), _) => v[elements].iter().for_each(|&x| out.extend_from_slice(&x.to_f32().to_le_bytes())),
        (Buffer::BF16(v), _) => v[elements].iter().for_each(|&x| out.extend_from_slice(&x.to_f32().to_le_bytes())),
        (Buffer::Int(v), Storage::U8) => out.extend(v[elements].iter().map(|&x| u8::from(x != 0))),
        (Buffer::Int(v), _) => v[elements].iter().for_each(|&x| out.extend_from_slice(&x.to_le_bytes())),
    }
}

/// The number of bytes [`encode`] gives `t`.
pub fn encoded_len(t: &Tensor) -> u64 {
    t.len() as u64 * Storage::of(t.dtype).element_bytes()
}

/// Reads `shape`'s elements of `storage` from `bytes` (little-endian) as a tensor of `dtype`,
/// rounding or wrapping to it; `None` when `bytes` has the wrong length.
pub fn decode(bytes: &[u8], storage: Storage, dtype: DType, shape: &[usize]) -> Option<Tensor> {
    let n: usize = shape.iter().product();
    if bytes.len() != n * storage.element_bytes() as usize {
        return None;
    }
    let shape = shape.to_vec();
    Some(match storage {
        Storage::F32 => {
            let values = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64).collect();
            Tensor::from_f64(dtype, shape, values)
        }
        Storage::I64 => {
            let values = bytes
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect();
            Tensor::from_i64(dtype, shape, values)
        }
        Storage::U8 => Tensor::from_i64(dtype, shape, bytes.iter().map(|&b| i64::from(b != 0)).collect()),
    })
}

/// `n` rounded up to [`ALIGNMENT`].
pub fn align(n: u64) -> u64 {
    n.div_ceil(ALIGNMENT) * ALIGNMENT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_without_ranges_stay_format_2_and_print_no_dims() {
        let mut manifest = Manifest {
            format_version: Manifest::version_for(&[]),
            tessera_version: "0".into(),
            input_hash: String::new(),
            target: "cpu".into(),
            options: Vec::new(),
            mesh: Vec::new(),
            ranks: Vec::new(),
            dims: Vec::new(),
        };
        assert_eq!(manifest.format_version, 2);
        let json = serde_json::to_string(&manifest).expect("json");
        assert!(!json.contains("dims"), "{json}");
        let ranges = vec![DimRange { name: "seq".into(), lo: 1, hi: 512 }];
        manifest.format_version = Manifest::version_for(&ranges);
        manifest.dims = ranges;
        assert_eq!(manifest.format_version, FORMAT_VERSION);
        let json = serde_json::to_string(&manifest).expect("json");
        assert!(json.contains(r#""dims":[{"name":"seq","lo":1,"hi":512}]"#), "{json}");
        assert_eq!(serde_json::from_str::<Manifest>(&json).expect("parse"), manifest);
        assert_eq!(manifest.dims[0].to_string(), "seq=1..512");
        assert!(manifest.dims[0].contains(1) && manifest.dims[0].contains(512) && !manifest.dims[0].contains(513));
    }

    #[test]
    fn encode_decode_round_trip_by_storage() {
        let f = Tensor::from_f64(DType::F32, vec![3], vec![1.5, -2.0, 0.1]);
        let bytes = encode(&f);
        assert_eq!(bytes.len(), 12);
        assert_eq!(decode(&bytes, Storage::F32, DType::F32, &[3]), Some(f));
        let i = Tensor::from_i64(DType::I64, vec![2], vec![-7, 1 << 40]);
        assert_eq!(decode(&encode(&i), Storage::I64, DType::I64, &[2]), Some(i));
        let b = Tensor::from_i64(DType::Bool, vec![3], vec![1, 0, 1]);
        assert_eq!(encode(&b), vec![1, 0, 1]);
        assert_eq!(decode(&[1, 0, 1], Storage::U8, DType::Bool, &[3]), Some(b));
        assert_eq!(decode(&[1, 0], Storage::U8, DType::Bool, &[3]), None);
    }

    #[test]
    fn signature_table_lists_each_kernel_on_a_line() {
        let operand = |storage, shape: &[u64]| KernelOperand { storage, shape: shape.to_vec() };
        let signatures = [
            KernelSignature {
                symbol: "k0".into(),
                inputs: vec![operand(Storage::F32, &[2, 3]), operand(Storage::I64, &[])],
                outputs: vec![operand(Storage::F32, &[2, 3])],
            },
            KernelSignature { symbol: "k1".into(), inputs: vec![], outputs: vec![operand(Storage::U8, &[4])] },
        ];
        assert_eq!(signature_table(&signatures), "k0(f32[2,3],i64[])->(f32[2,3])\nk1()->(u8[4])\n");
        let json = serde_json::to_string(&signatures[1]).expect("json");
        assert_eq!(json, r#"{"symbol":"k1","inputs":[],"outputs":[{"storage":"u8","shape":[4]}]}"#);
    }

    #[test]
    fn sha256_of_known_text() {
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn steps_serialize_with_readable_tags() {
        let step = Step::Library { call: LibraryCall::Gather { axis: 0 }, inputs: vec![1, 2], outputs: vec![3] };
        let json = serde_json::to_string(&step).expect("json");
        assert_eq!(json, r#"{"kind":"library","call":{"call":"gather","axis":0},"inputs":[1,2],"outputs":[3]}"#);
        assert_eq!(serde_json::from_str::<Step>(&json).expect("parse"), step);
    }
}
