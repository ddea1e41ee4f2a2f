//! Shared test harness: compile kernel graphs to a shared object, load it, run each kernel on
//! random inputs, and compare with the reference interpreter.

#![allow(dead_code)]

use tessera_codegen::{compile_cpu, KernelSource};
use tessera_ir::dtype::DType;
use tessera_ir::graph::Graph;
use tessera_ir::random::{uniform_tensor, SplitMix64};
use tessera_ir::tensor::Tensor;

/// A loaded shared object; the temporary directory holding it lives as long as the library.
pub struct Loaded {
    library: libloading::Library,
    _dir: tempfile::TempDir,
}

pub fn load(shared_object: &[u8]) -> Loaded {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("kernels.so");
    std::fs::write(&path, shared_object).expect("write the shared object");
    // SAFETY: the library is ours, built by compile_cpu; it has no initializers.
    let library = unsafe { libloading::Library::new(&path) }.expect("dlopen");
    Loaded { library, _dir: dir }
}

/// A buffer in the kernel ABI's memory layout.
enum AbiBuffer {
    F32(Vec<f32>),
    I64(Vec<i64>),
    U8(Vec<u8>),
}

impl AbiBuffer {
    fn of(t: &Tensor) -> AbiBuffer {
        if t.dtype.is_float() {
            AbiBuffer::F32(t.to_f64_vec().iter().map(|&x| x as f32).collect())
        } else if t.dtype == DType::Bool {
            AbiBuffer::U8(t.to_i64_vec().iter().map(|&x| x as u8).collect())
        } else {
            AbiBuffer::I64(t.to_i64_vec())
        }
    }

    fn zeros(dtype: DType, n: usize) -> AbiBuffer {
        if dtype.is_float() {
            AbiBuffer::F32(vec![0.0; n])
        } else if dtype == DType::Bool {
            AbiBuffer::U8(vec![0; n])
        } else {
            AbiBuffer::I64(vec![0; n])
        }
    }

    fn ptr(&mut self) -> *mut u8 {
        match self {
            AbiBuffer::F32(v) => v.as_mut_ptr() as *mut u8,
            AbiBuffer::I64(v) => v.as_mut_ptr() as *mut u8,
            AbiBuffer::U8(v) => v.as_mut_ptr(),
        }
    }

    fn to_tensor(&self, dtype: DType, shape: Vec<usize>) -> Tensor {
        match self {
            AbiBuffer::F32(v) => Tensor::from_f64(dtype, shape, v.iter().map(|&x| x as f64).collect()),
            AbiBuffer::I64(v) => Tensor::from_i64(dtype, shape, v.clone()),
            AbiBuffer::U8(v) => Tensor::from_i64(dtype, shape, v.iter().map(|&x| x as i64).collect()),
        }
    }
}

fn concrete(g: &Graph, v: tessera_ir::graph::ValueId) -> (DType, Vec<usize>) {
    let ty = &g.value(v).ty;
    let shape = ty.static_shape().expect("static").into_iter().map(|d| d as usize).collect();
    (ty.dtype, shape)
}

/// A kernel with its argument buffers in ABI layout, ready to run repeatedly.
pub struct Prepared {
    kernel: unsafe extern "C" fn(*const *mut u8),
    buffers: Vec<AbiBuffer>,
    args: Vec<*mut u8>,
    outputs: Vec<(DType, Vec<usize>)>,
    n_inputs: usize,
}

impl Prepared {
    /// Binds kernel `symbol` of `lib` (compiled from `g`) to copies of `inputs` and zeroed outputs.
    pub fn new(lib: &Loaded, symbol: &str, g: &Graph, inputs: &[Tensor]) -> Prepared {
        let mut buffers: Vec<AbiBuffer> = inputs.iter().map(AbiBuffer::of).collect();
        let outputs: Vec<(DType, Vec<usize>)> = g.outputs().iter().map(|&v| concrete(g, v)).collect();
        for (dtype, shape) in &outputs {
            buffers.push(AbiBuffer::zeros(*dtype, shape.iter().product()));
        }
        let args: Vec<*mut u8> = buffers.iter_mut().map(AbiBuffer::ptr).collect();
        // SAFETY: the symbol is a kernel entry point with the ABI signature.
        let kernel = unsafe {
            *lib.library.get::<unsafe extern "C" fn(*const *mut u8)>(symbol.as_bytes()).expect("kernel symbol")
        };
        Prepared { kernel, buffers, args, outputs, n_inputs: inputs.len() }
    }

    /// Runs the kernel once on the bound buffers.
    pub fn run(&mut self) {
        // SAFETY: the buffers have the sizes and element types of the kernel's graph.
        unsafe { (self.kernel)(self.args.as_ptr()) }
    }

    pub fn outputs(&self) -> Vec<Tensor> {
        let outputs = self.outputs.iter().enumerate();
        outputs.map(|(i, (dtype, shape))| self.buffers[self.n_inputs + i].to_tensor(*dtype, shape.clone())).collect()
    }
}

/// Runs kernel `symbol` of `lib` (compiled from `g`) on `inputs`.
pub fn call(lib: &Loaded, symbol: &str, g: &Graph, inputs: &[Tensor]) -> Vec<Tensor> {
    let mut prepared = Prepared::new(lib, symbol, g, inputs);
    prepared.run();
    prepared.outputs()
}

/// Random inputs for `g`: floats uniform in [-1, 1), integers in 0..8 and booleans from the shared
/// generator.
pub fn random_inputs(g: &Graph, seed: u64) -> Vec<Tensor> {
    let mut rng = SplitMix64::new(seed);
    g.inputs()
        .iter()
        .map(|&v| {
            let (dtype, shape) = concrete(g, v);
            uniform_tensor(&mut rng, dtype, shape)
        })
        .collect()
}

/// The reference outputs of `g` on `inputs`.
pub fn reference(g: &Graph, inputs: &[Tensor]) -> Vec<Tensor> {
    let named: Vec<(String, Tensor)> =
        g.inputs().iter().zip(inputs).map(|(&v, t)| (g.value(v).name.clone(), t.clone())).collect();
    tessera_runtime::interpreter::run(g, &named).expect("reference run").into_iter().map(|(_, t)| t).collect()
}

/// Relative tolerance of compiled results against the reference, by dtype: the kernels
/// compute in f32 where the reference computes in f64 and rounds per op.
pub fn tolerance(dtype: DType) -> f64 {
    match dtype {
        DType::BF16 => 2e-2,
        DType::F16 => 4e-3,
        _ => 2e-4,
    }
}

/// Asserts that `got` matches `want` (NaN where NaN, integers exactly, floats within the
/// dtype's tolerance relative to the magnitude, at least 1).
pub fn assert_matches(got: &Tensor, want: &Tensor, what: &str) {
    assert_eq!((got.dtype, &got.shape), (want.dtype, &want.shape), "{what}: dtype and shape");
    if want.dtype.is_float() {
        let tol = tolerance(want.dtype);
        for (i, (g, w)) in got.to_f64_vec().iter().zip(want.to_f64_vec()).enumerate() {
            let ok = (g.is_nan() && w.is_nan()) || g == &w || (g - w).abs() <= tol * w.abs().max(1.0);
            assert!(ok, "{what}: element {i}: compiled {g}, reference {w}");
        }
    } else {
        assert_eq!(got.to_i64_vec(), want.to_i64_vec(), "{what}: integer elements");
    }
}

/// Compiles every graph into one shared object and checks each kernel against the reference
/// on random inputs from `seed`.
pub fn check_all(graphs: &[Graph], seed: u64) {
    let kernels: Vec<KernelSource> =
        graphs.iter().enumerate().map(|(i, g)| KernelSource { symbol: format!("k{i}"), graph: g.clone() }).collect();
    let object = compile_cpu(&kernels).unwrap_or_else(|e| {
        let texts: Vec<String> = graphs.iter().map(tessera_ir::mlir::print::print_graph).collect();
        panic!("compile: {e}\n{}", texts.join("\n"))
    });
    let lib = load(&object.shared_object);
    for (i, g) in graphs.iter().enumerate() {
        let inputs = random_inputs(g, seed.wrapping_add(i as u64));
        let want = reference(g, &inputs);
        let got = call(&lib, &format!("k{i}"), g, &inputs);
        for (o, (a, b)) in got.iter().zip(&want).enumerate() {
            assert_matches(a, b, &format!("kernel {i} ({}) output {o}", g.name));
        }
    }
}
