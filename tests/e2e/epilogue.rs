//! Epilogue fusion (issue 16): the elementwise group after a GEMM or a convolution (bias,
//! activation, residual add) compiles into the library call's epilogue, one step instead of a
//! library call and a kernel, and the compiled outputs equal the interpreter's, for every kind
//! of epilogue and GEMM path (one GEMM over a folded batch, one per batch, split over threads,
//! transposed weight, im2col convolution, depthwise convolution).

use tessera_codegen::artifact::{compile, write_artifact, CompileOptions, Target};
use tessera_ir::artifact::{LibraryCall, Program, Step};
use tessera_ir::dtype::DType;
use tessera_ir::graph::ValueId;
use tessera_ir::graph::{Graph, InputRole};
use tessera_ir::ops::conv::Window;
use tessera_ir::ops::elementwise::{BinaryOp, UnaryOp};
use tessera_ir::ops::Op;
use tessera_ir::random::{uniform_tensor, SplitMix64};
use tessera_ir::tensor::Tensor;
use tessera_ir::types::{Dim, TensorType};
use tessera_runtime::executor::cpu::CpuExecutor;
use tessera_runtime::executor::load::load;

/// Graph-building shorthands over f32 values.
struct Build {
    g: Graph,
}

impl Build {
    fn new(name: &str) -> Build {
        Build { g: Graph::new(name) }
    }

    fn input(&mut self, name: &str, shape: &[u64], role: InputRole) -> ValueId {
        self.g.add_input(name, TensorType::of_static(DType::F32, shape), role)
    }

    fn op(&mut self, op: Op, inputs: &[ValueId]) -> ValueId {
        self.g.add(op, inputs).expect("the test graph's op")
    }

    fn scalar(&mut self, value: f64, shape: &[u64]) -> ValueId {
        let c = self.op(Op::Constant(Tensor::from_f64(DType::F32, vec![1], vec![value])), &[]);
        self.broadcast(c, shape)
    }

    fn broadcast(&mut self, v: ValueId, shape: &[u64]) -> ValueId {
        self.op(Op::Broadcast { shape: shape.iter().map(|&n| Dim::Static(n)).collect() }, &[v])
    }

    fn unary(&mut self, op: UnaryOp, x: ValueId) -> ValueId {
        self.op(Op::Unary(op), &[x])
    }

    fn binary(&mut self, op: BinaryOp, a: ValueId, b: ValueId) -> ValueId {
        self.op(Op::Binary(op), &[a, b])
    }

    /// `min(max(x, lo), hi)` as ONNX `Clip` imports.
    fn clip(&mut self, x: ValueId, lo: f64, hi: f64, shape: &[u64]) -> ValueId {
        let lo = self.scalar(lo, shape);
        let hi = self.scalar(hi, shape);
        let low = self.binary(BinaryOp::Max, x, lo);
        self.binary(BinaryOp::Min, low, hi)
    }

    fn finish(mut self, output: ValueId) -> Graph {
        self.g.set_outputs(vec![output]);
        self.g
    }
}

fn compile_program(g: &Graph, epilogues: bool, dir: &std::path::Path) -> CpuExecutor {
    let options = CompileOptions {
        target: Target::Cpu,
        dims: Default::default(),
        graph_options: Vec::new(),
        epilogues,
        pinned_outputs: false,
    };
    let compiled = compile(g, g.name.as_bytes(), &options).expect("compile");
    let path = dir.join(if epilogues { "fused" } else { "unfused" });
    write_artifact(&path, &compiled.files).expect("write");
    CpuExecutor::new(load(&path).expect("load")).expect("executor")
}

fn epilogue_calls(p: &Program) -> Vec<&'static str> {
    p.steps
        .iter()
        .filter_map(|s| match s {
            Step::Library { call: call @ LibraryCall::WithEpilogue { .. }, .. } => Some(call.name()),
            _ => None,
        })
        .collect()
}

fn kernel_steps(p: &Program) -> usize {
    p.steps.iter().filter(|s| matches!(s, Step::Kernel { .. })).count()
}

/// Compiles `g` with and without epilogues: with them the program is `expected` epilogue
/// calls and no kernel; without, a kernel remains; both give the interpreter's outputs within
/// 1e-5 relative (absolute near 0).
fn check(g: &Graph, expected: &[&str]) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let feeds: Vec<(String, Tensor)> = g
        .inputs()
        .iter()
        .map(|&v| {
            let value = g.value(v);
            let shape = value.ty.static_shape().expect("static").iter().map(|&n| n as usize).collect();
            (value.name.clone(), uniform_tensor(&mut SplitMix64::for_name(5, &value.name), DType::F32, shape))
        })
        .collect();
    let want = tessera_runtime::interpreter::run(g, &feeds).expect("interpreter");
    for epilogues in [true, false] {
        let executor = compile_program(g, epilogues, tmp.path());
        let program = executor.program();
        if epilogues {
            assert_eq!(epilogue_calls(program), expected, "{}: {:?}", g.name, program.steps);
            assert_eq!(kernel_steps(program), 0, "{}: {:?}", g.name, program.steps);
        } else {
            assert!(epilogue_calls(program).is_empty() && kernel_steps(program) > 0, "{}", g.name);
        }
        let got = executor.run(&feeds).expect("run");
        let (got, want) = (got[0].1.to_f64_vec(), want[0].1.to_f64_vec());
        assert_eq!(got.len(), want.len());
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            let error = (a - b).abs() / b.abs().max(1.0);
            assert!(error < 1e-5, "{} (epilogues {epilogues}): element {i} is {a}, the interpreter gives {b}", g.name);
        }
    }
}

/// `x [m, k] @ w [k, n] + bias [n]`, then `activation`.
fn dense(name: &str, [m, k, n]: [u64; 3], activation: impl FnOnce(&mut Build, ValueId) -> ValueId) -> Graph {
    let mut b = Build::new(name);
    let x = b.input("x", &[m, k], InputRole::Activation);
    let w = b.input("w", &[k, n], InputRole::Parameter);
    let bias = b.input("bias", &[n], InputRole::Parameter);
    let y = b.op(Op::MatMul, &[x, w]);
    let bias = b.broadcast(bias, &[m, n]);
    let y = b.binary(BinaryOp::Add, y, bias);
    let out = activation(&mut b, y);
    b.finish(out)
}

#[test]
fn matmul_bias_and_each_activation_match_the_interpreter() {
    for unary in [UnaryOp::Relu, UnaryOp::Gelu, UnaryOp::GeluTanh, UnaryOp::Sigmoid, UnaryOp::Tanh, UnaryOp::Silu] {
        let g = dense(&format!("dense_{}", unary.mnemonic()), [6, 16, 24], |b, y| b.unary(unary, y));
        check(&g, &["matmul_epilogue"]);
    }
    // Sigmoid times x (SiLU as ONNX exports it), and a clip (ReLU6).
    let g = dense("dense_sigmoid_x", [6, 16, 24], |b, y| {
        let s = b.unary(UnaryOp::Sigmoid, y);
        b.binary(BinaryOp::Mul, y, s)
    });
    check(&g, &["matmul_epilogue"]);
    let g = dense("dense_clip", [6, 16, 24], |b, y| b.clip(y, 0.0, 6.0, &[6, 24]));
    check(&g, &["matmul_epilogue"]);
    // Large enough that the GEMM and the epilogue split over threads.
    let g = dense("dense_threaded", [512, 256, 128], |b, y| b.unary(UnaryOp::GeluTanh, y));
    check(&g, &["matmul_epilogue"]);
}

#[test]
fn residual_adds_and_transposed_weights_match_the_interpreter() {
    // One GEMM per batch (the weight has a batch of its own), each followed by its part of a
    // residual.
    let mut b = Build::new("batched_residual");
    let x = b.input("x", &[3, 6, 16], InputRole::Activation);
    let w = b.input("w", &[3, 16, 24], InputRole::Parameter);
    let residual = b.input("residual", &[3, 6, 24], InputRole::Activation);
    let y = b.op(Op::MatMul, &[x, w]);
    let y = b.binary(BinaryOp::Add, y, residual);
    check(&b.finish(y), &["matmul_epilogue"]);

    // `x @ transpose(w)` with the transpose folded into the GEMM, bias, relu, residual.
    let mut b = Build::new("transposed_bias_relu_residual");
    let x = b.input("x", &[2, 5, 16], InputRole::Activation);
    let w = b.input("w", &[24, 16], InputRole::Parameter);
    let bias = b.input("bias", &[24], InputRole::Parameter);
    let residual = b.input("residual", &[2, 5, 24], InputRole::Activation);
    let wt = b.op(Op::Transpose { perm: vec![1, 0] }, &[w]);
    let y = b.op(Op::MatMul, &[x, wt]);
    let bias = b.broadcast(bias, &[2, 5, 24]);
    let y = b.binary(BinaryOp::Add, y, bias);
    let y = b.unary(UnaryOp::Relu, y);
    let y = b.binary(BinaryOp::Add, y, residual);
    check(&b.finish(y), &["matmul_transposed_b_epilogue"]);
}

/// `conv2d(x [1, c, 9, 9], w) + bias [o, 1, 1]` (a constant, as ONNX initializers import),
/// then `activation`.
fn conv(name: &str, c: u64, o: u64, groups: i64, activation: impl FnOnce(&mut Build, ValueId) -> ValueId) -> Graph {
    let mut b = Build::new(name);
    let x = b.input("x", &[1, c, 9, 9], InputRole::Activation);
    let w = b.input("w", &[o, c / groups as u64, 3, 3], InputRole::Parameter);
    let window = Window { strides: [1, 1], pads: [1, 1, 1, 1], dilations: [1, 1] };
    let y = b.op(Op::Conv2d { window, groups }, &[x, w]);
    let values = (0..o).map(|i| i as f64 * 0.25 - 1.0).collect();
    let bias = b.op(Op::Constant(Tensor::from_f64(DType::F32, vec![o as usize, 1, 1], values)), &[]);
    let bias = b.broadcast(bias, &[1, o, 9, 9]);
    let y = b.binary(BinaryOp::Add, y, bias);
    let out = activation(&mut b, y);
    b.finish(out)
}

#[test]
fn convolution_bias_and_activations_match_the_interpreter() {
    let shape = [1, 8, 9, 9];
    check(&conv("conv_relu6", 3, 8, 1, |b, y| b.clip(y, 0.0, 6.0, &shape)), &["conv2d_epilogue"]);
    // HardSwish as ONNX's decomposition: x * clip(x + 3, 0, 6) / 6.
    let hard_swish = |b: &mut Build, y: ValueId| {
        let three = b.scalar(3.0, &shape);
        let shifted = b.binary(BinaryOp::Add, y, three);
        let gate = b.clip(shifted, 0.0, 6.0, &shape);
        let six = b.scalar(6.0, &shape);
        let scaled = b.binary(BinaryOp::Div, gate, six);
        b.binary(BinaryOp::Mul, y, scaled)
    };
    check(&conv("conv_hard_swish", 3, 8, 1, hard_swish), &["conv2d_epilogue"]);
    // Depthwise: the epilogue runs per plane.
    check(&conv("depthwise_silu", 8, 8, 8, |b, y| b.unary(UnaryOp::Silu, y)), &["conv2d_epilogue"]);
}

/// A group that is not elementwise over the call's result (a softmax), or a result read twice,
/// stays a kernel: fusion only takes what the epilogue can compute.
#[test]
fn groups_an_epilogue_cannot_compute_stay_kernels() {
    let g = dense("dense_softmax", [6, 16, 24], |b, y| b.op(Op::Softmax { axis: -1 }, &[y]));
    let tmp = tempfile::tempdir().expect("tempdir");
    let executor = compile_program(&g, true, tmp.path());
    assert!(epilogue_calls(executor.program()).is_empty());
    assert!(kernel_steps(executor.program()) > 0);

    let mut b = Build::new("read_twice");
    let x = b.input("x", &[6, 16], InputRole::Activation);
    let w = b.input("w", &[16, 24], InputRole::Parameter);
    let y = b.op(Op::MatMul, &[x, w]);
    let r = b.unary(UnaryOp::Relu, y);
    let wt = b.op(Op::Transpose { perm: vec![1, 0] }, &[y]);
    let back = b.op(Op::MatMul, &[r, wt]);
    let executor = compile_program(&b.finish(back), true, tmp.path());
    assert!(epilogue_calls(executor.program()).is_empty(), "{:?}", executor.program().steps);
}
