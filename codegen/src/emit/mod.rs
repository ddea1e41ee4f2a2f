//! Emission of one kernel graph as MLIR text: a `func.func` on static memrefs whose body is
//! `scf.for` loop nests over `arith`/`math` scalar code (upstream dialects only).
//!
//! Why text and memrefs: the kernel graph is tiny and fully static, so printing the loop nests
//! directly is shorter and easier to read (and to snapshot) than building `linalg.generic` ops
//! through melior's builder API and bufferizing them; melior parses and verifies the text, and
//! the pass pipeline in [`crate::mlir`] lowers it. Each value of the graph is either in a buffer
//! (a kernel argument or a temporary, per [`tessera_kernels::schedule`]) or computed inline at
//! the index its consumer asks for (`FnEmitter::value_at`).
//!
//! Memory types follow the kernel ABI: floats are `f32`, integers `i64`, booleans `i8`. Inside
//! the loops integers compute in their own width (`i32` wraps like the reference semantics) and
//! booleans as `i1`; floats compute in `f32` and, for `f16`/`bf16` tensors, round to the dtype
//! after every op as the reference interpreter does.

mod attention;
mod pointwise;
mod templates;

use crate::error::CodegenError;
use std::collections::BTreeMap;
use std::fmt::Write;
use tessera_ir::dtype::DType;
use tessera_ir::graph::{Graph, ValueDef, ValueId};
use tessera_ir::types::TensorType;
use tessera_kernels::schedule::{schedule, Schedule, Storage};

/// The MLIR text of one kernel: module-level globals and the implementation function
/// `@{symbol}__impl`, whose arguments are the graph inputs then outputs as static memrefs.
pub struct KernelText {
    pub globals: String,
    pub function: String,
    /// The memref type of every argument, in order (the ABI wrapper needs the count).
    pub arguments: Vec<String>,
}

/// The name of the implementation function of kernel `symbol`.
pub fn impl_name(symbol: &str) -> String {
    format!("{symbol}__impl")
}

/// Emits kernel `symbol` for `g`, which the caller has checked with [`crate::supports`].
pub fn emit_kernel(symbol: &str, g: &Graph) -> Result<KernelText, CodegenError> {
    let plan = schedule(g);
    let mut e = FnEmitter::new(symbol, g, plan, false)?;
    e.emit_body()?;
    Ok(e.finish())
}

/// The MLIR text of one kernel graph for the GPU: a `gpu.module` with one `gpu.func` per
/// materialized value, each mapping its outermost loop nest to one thread per index.
pub struct GpuKernelText {
    /// `gpu.module @{symbol} { ... }`.
    pub module: String,
    /// The kernels to launch, in order: entry name and number of threads (at least 1).
    pub launches: Vec<(String, usize)>,
    /// Size in elements and memory element type of every temporary buffer, in parameter order
    /// after the arguments.
    pub temporaries: Vec<(usize, &'static str)>,
}

/// Emits kernel graph `g` as the GPU module `symbol`.
pub fn emit_gpu_kernel(symbol: &str, g: &Graph) -> Result<GpuKernelText, CodegenError> {
    let plan = schedule(g);
    let mut e = FnEmitter::new(symbol, g, plan, true)?;
    e.emit_body()?;
    let gpu = e.gpu.take().ok_or_else(|| CodegenError::Internal("GPU state lost".into()))?;
    let mut module = format!(
        "gpu.module @{symbol} {{
{}",
        e.globals
    );
    for (_, text, _) in &gpu.kernels {
        module.push_str(text);
    }
    module.push_str("}\n");
    Ok(GpuKernelText {
        module,
        launches: gpu.kernels.into_iter().map(|(entry, _, threads)| (entry, threads)).collect(),
        temporaries: gpu.temporaries.into_iter().map(|(_, _, n, ty)| (n, ty)).collect(),
    })
}

/// GPU emission state: temporaries are kernel parameters the executor allocates, and each
/// materialized value becomes its own `gpu.func`.
struct GpuEmission {
    /// Value, parameter buffer, element count and memory element type of each temporary.
    temporaries: Vec<(ValueId, Buffer, usize, &'static str)>,
    /// Set when a kernel starts: its first loop nest is the parallel one.
    parallel_pending: bool,
    /// Threads of the kernel being emitted (the parallel nest's index count).
    threads: Option<usize>,
    /// Lines every kernel starts with (the empty stand-ins of zero-element arguments).
    prologue: Vec<String>,
    /// Entry name, text and thread count of every finished kernel.
    kernels: Vec<(String, String, usize)>,
}

/// The concrete shape of a value (the caller checked that every shape is static).
pub(crate) fn shape_of(ty: &TensorType) -> Result<Vec<usize>, CodegenError> {
    let dims = ty.static_shape().ok_or_else(|| CodegenError::Internal(format!("{ty} is not static")))?;
    dims.into_iter()
        .map(|d| usize::try_from(d).map_err(|_| CodegenError::Internal(format!("dimension {d} is too large"))))
        .collect()
}

/// Element type of a buffer of `dtype` (the kernel ABI).
pub(crate) fn memory_type(dtype: DType) -> &'static str {
    if dtype.is_float() {
        "f32"
    } else if dtype == DType::Bool {
        "i8"
    } else {
        "i64"
    }
}

/// Element type of scalar code on `dtype`.
pub(crate) fn compute_type(dtype: DType) -> &'static str {
    match dtype {
        DType::I32 => "i32",
        DType::I8 => "i8",
        DType::I64 => "i64",
        DType::Bool => "i1",
        _ => "f32",
    }
}

/// `memref<2x3xf32>` (or `memref<f32>` for a scalar).
pub(crate) fn memref_type(dtype: DType, shape: &[usize]) -> String {
    let mut s = String::from("memref<");
    for d in shape {
        let _ = write!(s, "{d}x");
    }
    s.push_str(memory_type(dtype));
    s.push('>');
    s
}

/// The body of an accumulation loop nest: induction variables and accumulators in, the next
/// accumulators out.
pub(crate) type AccumulateBody<'b, 'g> =
    dyn FnMut(&mut FnEmitter<'g>, &[String], &[String]) -> Result<Vec<String>, CodegenError> + 'b;

/// A buffer: its SSA name and memref type.
#[derive(Debug, Clone)]
pub(crate) struct Buffer {
    pub name: String,
    pub ty: String,
}

/// The state of one function being emitted.
pub(crate) struct FnEmitter<'g> {
    pub g: &'g Graph,
    gpu: Option<GpuEmission>,
    symbol: String,
    plan: Schedule,
    /// The function's parameters, in order.
    signature: Vec<Buffer>,
    /// The buffer through which each argument is accessed (the parameter itself, or an empty
    /// stand-in for a zero-element one).
    arguments: Vec<Buffer>,
    /// The buffer of each materialized value, once its loop nest has been emitted.
    buffers: Vec<Option<Buffer>>,
    /// Temporaries to free at the end of the function.
    temporaries: Vec<Buffer>,
    /// `arith.constant`s, hoisted to the function entry and shared: text → SSA name.
    constants: BTreeMap<String, String>,
    constant_lines: Vec<String>,
    globals: String,
    n_globals: usize,
    body: String,
    depth: usize,
    next_ssa: usize,
}

impl<'g> FnEmitter<'g> {
    fn new(symbol: &str, g: &'g Graph, plan: Schedule, for_gpu: bool) -> Result<FnEmitter<'g>, CodegenError> {
        // A static memref with a zero dimension (other than a 1-D one) has no bare-pointer
        // form in MLIR's calling convention, so such an argument is declared `memref<0xT>`
        // and read through an empty stack buffer of its real shape (no loop touches it).
        let mut signature = Vec::new();
        let mut arguments = Vec::new();
        let mut constant_lines = Vec::new();
        for &v in g.inputs().iter().chain(g.outputs()) {
            let ty = &g.value(v).ty;
            let shape = shape_of(ty)?;
            let name = format!("%arg{}", arguments.len());
            let real = memref_type(ty.dtype, &shape);
            if shape.len() > 1 && shape.contains(&0) {
                let empty = format!("%empty{}", arguments.len());
                constant_lines.push(format!("{empty} = memref.alloca() : {real}"));
                signature.push(Buffer { name, ty: memref_type(ty.dtype, &[0]) });
                arguments.push(Buffer { name: empty, ty: real });
            } else {
                signature.push(Buffer { name: name.clone(), ty: real.clone() });
                arguments.push(Buffer { name, ty: real });
            }
        }
        let mut buffers = vec![None; g.num_values()];
        for &v in g.inputs() {
            if let Storage::Argument(i) = plan.storage_of(v) {
                buffers[v.index()] = Some(arguments[i].clone());
            }
        }
        let gpu = if for_gpu {
            let mut temporaries = Vec::new();
            for (v, value) in g.values() {
                if plan.storage_of(v) == Storage::Temporary {
                    let shape = shape_of(&value.ty)?;
                    let n: usize = shape.iter().product();
                    let ty = memref_type(value.ty.dtype, &shape);
                    let name = format!("%tmp{}", temporaries.len());
                    if shape.len() > 1 && n == 0 {
                        let empty = format!("%emptytmp{}", temporaries.len());
                        constant_lines.push(format!("{empty} = memref.alloca() : {ty}"));
                        signature.push(Buffer { name, ty: memref_type(value.ty.dtype, &[0]) });
                        temporaries.push((v, Buffer { name: empty, ty }, n, memory_type(value.ty.dtype)));
                    } else {
                        signature.push(Buffer { name: name.clone(), ty: ty.clone() });
                        temporaries.push((v, Buffer { name, ty }, n, memory_type(value.ty.dtype)));
                    }
                }
            }
            Some(GpuEmission {
                temporaries,
                parallel_pending: false,
                threads: None,
                prologue: constant_lines.clone(),
                kernels: Vec::new(),
            })
        } else {
            None
        };
        Ok(FnEmitter {
            gpu,
            g,
            symbol: symbol.to_string(),
            plan,
            signature,
            arguments,
            buffers,
            temporaries: Vec::new(),
            constants: BTreeMap::new(),
            constant_lines,
            globals: String::new(),
            n_globals: 0,
            body: String::new(),
            depth: 1,
            next_ssa: 0,
        })
    }

    /// Emits every materialized value in program order, then the pass-through copies.
    fn emit_body(&mut self) -> Result<(), CodegenError> {
        let g = self.g;
        for (id, node) in g.nodes() {
            for (index, &v) in node.outputs.iter().enumerate() {
                let buffer = match self.plan.storage_of(v) {
                    Storage::Inline => continue,
                    Storage::Argument(i) => self.arguments[i].clone(),
                    Storage::Temporary if self.gpu.is_some() => self.gpu_temporary(v)?,
                    Storage::Temporary => {
                        let ty = &g.value(v).ty;
                        let ty = memref_type(ty.dtype, &shape_of(ty)?);
                        let name = self.fresh();
                        self.line(format!("{name} = memref.alloc() {{alignment = 64 : i64}} : {ty}"));
                        let buffer = Buffer { name, ty };
                        self.temporaries.push(buffer.clone());
                        buffer
                    }
                };
                self.start_gpu_kernel();
                self.emit_node_into(id, index, &buffer)?;
                self.finish_gpu_kernel(&format!("n{}_{index}", id.index()))?;
                self.buffers[v.index()] = Some(buffer);
            }
        }
        let n_inputs = g.inputs().len();
        for (position, holder) in self.plan.copies.clone() {
            let v = g.outputs()[position];
            let source = self.arguments[holder].clone();
            let dest = self.arguments[n_inputs + position].clone();
            let shape = shape_of(&g.value(v).ty)?;
            self.start_gpu_kernel();
            self.for_each_index(&shape, |e, idx| {
                let x = e.fresh();
                e.line(format!("{x} = memref.load {}[{}] : {}", source.name, idx.join(", "), source.ty));
                e.line(format!("memref.store {x}, {}[{}] : {}", dest.name, idx.join(", "), dest.ty));
                Ok(())
            })?;
            self.finish_gpu_kernel(&format!("copy{position}"))?;
        }
        for t in std::mem::take(&mut self.temporaries) {
            self.line(format!("memref.dealloc {} : {}", t.name, t.ty));
        }
        Ok(())
    }

    fn gpu_temporary(&self, v: ValueId) -> Result<Buffer, CodegenError> {
        let gpu = self.gpu.as_ref().ok_or_else(|| CodegenError::Internal("not emitting for the GPU".into()))?;
        gpu.temporaries
            .iter()
            .find(|(t, ..)| *t == v)
            .map(|(_, b, ..)| b.clone())
            .ok_or_else(|| CodegenError::Internal(format!("no temporary for %{}", self.g.value(v).name)))
    }

    /// On the GPU, starts a new kernel function: fresh body and constants, and the next loop
    /// nest becomes the thread index space.
    fn start_gpu_kernel(&mut self) {
        if let Some(gpu) = &mut self.gpu {
            gpu.parallel_pending = true;
            gpu.threads = None;
            self.body.clear();
            self.constants.clear();
            self.constant_lines = gpu.prologue.clone();
            self.depth = 2;
        }
    }

    /// On the GPU, wraps the body emitted since [`FnEmitter::start_gpu_kernel`] into a
    /// `gpu.func` taking every argument and temporary, and records its launch.
    fn finish_gpu_kernel(&mut self, suffix: &str) -> Result<(), CodegenError> {
        let Some(gpu) = &mut self.gpu else { return Ok(()) };
        let threads = gpu.threads.take().unwrap_or(1);
        if threads == 0 {
            // An empty index space: nothing to launch.
            return Ok(());
        }
        let entry = format!("{}_{suffix}", self.symbol);
        let params: Vec<String> = self.signature.iter().map(|a| format!("{}: {}", a.name, a.ty)).collect();
        let mut text = format!("  gpu.func @{entry}({}) kernel {{\n", params.join(", "));
        for line in &self.constant_lines {
            let _ = writeln!(text, "    {line}");
        }
        text.push_str(&self.body);
        text.push_str("    gpu.return\n  }\n");
        gpu.kernels.push((entry, text, threads));
        Ok(())
    }

    fn finish(self) -> KernelText {
        let args: Vec<String> = self.signature.iter().map(|a| format!("{}: {}", a.name, a.ty)).collect();
        let mut function = format!("func.func @{}({}) {{\n", impl_name(&self.symbol), args.join(", "));
        for line in &self.constant_lines {
            let _ = writeln!(function, "  {line}");
        }
        function.push_str(&self.body);
        function.push_str("  return\n}\n");
        KernelText { globals: self.globals, function, arguments: self.signature.into_iter().map(|a| a.ty).collect() }
    }

    /// A line at function entry (GPU: kernel entry), where it dominates every use.
    pub(crate) fn push_entry_line(&mut self, line: String) {
        self.constant_lines.push(line);
    }

    /// Whether this function is emitted for the GPU (libdevice has fast math functions there;
    /// the CPU gets inline approximations instead of libm calls).
    pub(crate) fn is_gpu(&self) -> bool {
        self.gpu.is_some()
    }

    // -----------------------------------------------------------------------------------------
    // Text helpers

    /// A fresh SSA name.
    pub fn fresh(&mut self) -> String {
        self.next_ssa += 1;
        format!("%{}", self.next_ssa)
    }

    /// Appends one line to the body at the current depth.
    pub fn line(&mut self, text: String) {
        for _ in 0..self.depth {
            self.body.push_str("  ");
        }
        self.body.push_str(&text);
        self.body.push('\n');
    }

    /// A hoisted constant `arith.constant {literal} : {ty}`.
    pub fn constant(&mut self, literal: &str, ty: &str) -> String {
        let key = format!("{literal} : {ty}");
        if let Some(name) = self.constants.get(&key) {
            return name.clone();
        }
        // Named by content (`%c8`, `%c0x3F800000_f32`, `%cm1_i32`, `%ctrue_i1`) so the text reads
        // well; the key makes the name unique.
        let name = match ty {
            "index" => format!("%c{literal}"),
            _ => format!("%c{}_{ty}", literal.replace('-', "m")),
        };
        // A boolean literal carries its type (`arith.constant true`); a suffix would not parse.
        let value = if ty == "i1" { literal.to_string() } else { key.clone() };
        self.constant_lines.push(format!("{name} = arith.constant {value}"));
        self.constants.insert(key, name.clone());
        name
    }

    pub fn index(&mut self, n: usize) -> String {
        self.constant(&n.to_string(), "index")
    }

    /// An `f32` constant, spelled by its bits so it is exact.
    pub fn f32(&mut self, value: f64) -> String {
        self.constant(&format!("0x{:08X}", (value as f32).to_bits()), "f32")
    }

    /// An integer constant of compute type `ty` (`i1`, `i8`, `i32`, `i64`).
    pub fn int(&mut self, value: i64, ty: &str) -> String {
        let value = match ty {
            "i1" => return self.constant(if value != 0 { "true" } else { "false" }, "i1"),
            "i8" => value as i8 as i64,
            "i32" => value as i32 as i64,
            _ => value,
        };
        self.constant(&value.to_string(), ty)
    }

    /// A module-level constant buffer holding `literal` (a `dense<...>` attribute).
    pub fn global(&mut self, ty: &str, literal: &str) -> String {
        let name = format!("{}__const{}", self.symbol, self.n_globals);
        self.n_globals += 1;
        let _ = writeln!(self.globals, "memref.global \"private\" constant @{name} : {ty} = {literal}");
        let ssa = self.fresh();
        // At function entry, so it dominates every use.
        self.constant_lines.push(format!("{ssa} = memref.get_global @{name} : {ty}"));
        ssa
    }

    /// One line computing `op` on `operands` of type `ty`: `%r = {op} {operands} : {ty}`.
    pub fn op(&mut self, op: &str, operands: &[&str], ty: &str) -> String {
        let r = self.fresh();
        self.line(format!("{r} = {op} {} : {ty}", operands.join(", ")));
        r
    }

    // -----------------------------------------------------------------------------------------
    // Loops

    /// Emits a loop nest over `shape` (row-major, innermost last) and calls `body` with the
    /// induction variables.
    pub fn for_each_index(
        &mut self,
        shape: &[usize],
        body: impl FnOnce(&mut Self, &[String]) -> Result<(), CodegenError>,
    ) -> Result<(), CodegenError> {
        if self.gpu.as_ref().is_some_and(|gpu| gpu.parallel_pending) {
            return self.parallel_index(shape, body);
        }
        let mut idx = Vec::with_capacity(shape.len());
        let zero = self.index(0);
        let one = self.index(1);
        for &n in shape {
            let upper = self.index(n);
            let iv = self.fresh();
            self.line(format!("scf.for {iv} = {zero} to {upper} step {one} {{"));
            self.depth += 1;
            idx.push(iv);
        }
        body(self, &idx)?;
        for _ in shape {
            self.depth -= 1;
            self.line("}".to_string());
        }
        Ok(())
    }

    /// The GPU form of the outermost loop nest: one thread per index of `shape` (a 1-D grid
    /// of 1-D blocks), guarded against the threads of the last block that fall outside.
    fn parallel_index(
        &mut self,
        shape: &[usize],
        body: impl FnOnce(&mut Self, &[String]) -> Result<(), CodegenError>,
    ) -> Result<(), CodegenError> {
        let total: usize = shape.iter().product();
        if let Some(gpu) = &mut self.gpu {
            gpu.parallel_pending = false;
            gpu.threads = Some(total);
        }
        let block = self.fresh();
        self.line(format!("{block} = gpu.block_id x"));
        let size = self.fresh();
        self.line(format!("{size} = gpu.block_dim x"));
        let thread = self.fresh();
        self.line(format!("{thread} = gpu.thread_id x"));
        let base = self.op("arith.muli", &[&block, &size], "index");
        let linear = self.op("arith.addi", &[&base, &thread], "index");
        let bound = self.index(total);
        let inside = self.fresh();
        self.line(format!("{inside} = arith.cmpi ult, {linear}, {bound} : index"));
        self.line(format!("scf.if {inside} {{"));
        self.depth += 1;
        let mut idx = vec![String::new(); shape.len()];
        let mut rest = linear;
        for d in (0..shape.len()).rev() {
            if d == 0 {
                idx[0] = rest.clone();
            } else {
                let n = self.index(shape[d]);
                idx[d] = self.op("arith.remui", &[&rest, &n], "index");
                rest = self.op("arith.divui", &[&rest, &n], "index");
            }
        }
        body(self, &idx)?;
        self.depth -= 1;
        self.line("}".to_string());
        Ok(())
    }

    /// Emits loops over `extents` carrying accumulators (`scf.for ... iter_args`), starting
    /// at `inits` (value, type); `body` gets the induction variables and the current
    /// accumulators and returns the next ones. Returns the final accumulators.
    pub fn accumulate(
        &mut self,
        extents: &[usize],
        first: usize,
        inits: &[(String, &str)],
        body: &mut AccumulateBody<'_, 'g>,
    ) -> Result<Vec<String>, CodegenError> {
        let mut idx = Vec::with_capacity(extents.len());
        self.accumulate_nest(extents, first, inits, &mut idx, body)
    }

    fn accumulate_nest(
        &mut self,
        extents: &[usize],
        first: usize,
        inits: &[(String, &str)],
        idx: &mut Vec<String>,
        body: &mut AccumulateBody<'_, 'g>,
    ) -> Result<Vec<String>, CodegenError> {
        let Some((&n, rest)) = extents.split_first() else {
            let accs: Vec<String> = inits.iter().map(|(v, _)| v.clone()).collect();
            return body(self, idx, &accs);
        };
        let start = self.index(if idx.is_empty() { first } else { 0 });
        let upper = self.index(n);
        self.for_carrying(&start, &upper, inits, |e, iv, carried| {
            idx.push(iv.to_string());
            let next = e.accumulate_nest(rest, first, carried, idx, body)?;
            idx.pop();
            Ok(next)
        })
    }

    /// `scf.for iv = lower to upper step 1` carrying `inits` (value, type) through its
    /// iterations: `body` gets the induction variable and the carried values and returns the
    /// next ones; returns the loop's results.
    pub(crate) fn for_carrying<'t>(
        &mut self,
        lower: &str,
        upper: &str,
        inits: &[(String, &'t str)],
        body: impl FnOnce(&mut Self, &str, &[(String, &'t str)]) -> Result<Vec<String>, CodegenError>,
    ) -> Result<Vec<String>, CodegenError> {
        let one = self.index(1);
        let iv = self.fresh();
        let result = self.fresh();
        let types: Vec<&str> = inits.iter().map(|(_, t)| *t).collect();
        let carried: Vec<(String, &'t str)> = inits.iter().map(|(_, t)| (self.fresh(), *t)).collect();
        let iter_args: Vec<String> =
            carried.iter().zip(inits).map(|((a, _), (init, _))| format!("{a} = {init}")).collect();
        let lhs = if inits.len() == 1 { result.clone() } else { format!("{result}:{}", inits.len()) };
        self.line(format!(
            "{lhs} = scf.for {iv} = {lower} to {upper} step {one} iter_args({}) -> ({}) {{",
            iter_args.join(", "),
            types.join(", ")
        ));
        self.depth += 1;
        let next = body(self, &iv, &carried)?;
        self.line(format!("scf.yield {} : {}", next.join(", "), types.join(", ")));
        self.depth -= 1;
        self.line("}".to_string());
        Ok(if inits.len() == 1 { vec![result] } else { (0..inits.len()).map(|i| format!("{result}#{i}")).collect() })
    }

    /// `scf.if cond -> (ty) { then } else { otherwise }`, each branch emitting its own code.
    pub fn if_else(
        &mut self,
        cond: &str,
        ty: &str,
        then: impl FnOnce(&mut Self) -> Result<String, CodegenError>,
        otherwise: impl FnOnce(&mut Self) -> Result<String, CodegenError>,
    ) -> Result<String, CodegenError> {
        let r = self.fresh();
        self.line(format!("{r} = scf.if {cond} -> ({ty}) {{"));
        self.depth += 1;
        let a = then(self)?;
        self.line(format!("scf.yield {a} : {ty}"));
        self.depth -= 1;
        self.line("} else {".to_string());
        self.depth += 1;
        let b = otherwise(self)?;
        self.line(format!("scf.yield {b} : {ty}"));
        self.depth -= 1;
        self.line("}".to_string());
        Ok(r)
    }

    // -----------------------------------------------------------------------------------------
    // Values

    /// The element of `v` at `idx` in compute type: loaded from its buffer, or computed inline.
    pub fn value_at(&mut self, v: ValueId, idx: &[String]) -> Result<String, CodegenError> {
        if let Some(buffer) = self.buffers[v.index()].clone() {
            return Ok(self.load(&buffer, self.g.value(v).ty.dtype, idx));
        }
        match self.g.value(v).def {
            ValueDef::Result { node, .. }
                if self.plan.storage_of(v) == Storage::Inline
                    && matches!(self.g.node(node).op, tessera_ir::ops::Op::MatMul) =>
            {
                self.matmul_at(node, idx)
            }
            ValueDef::Result { node, index } if self.plan.storage_of(v) == Storage::Inline => {
                self.pointwise(node, index, idx)
            }
            _ => Err(CodegenError::Internal(format!("value %{} is read before it is computed", self.g.value(v).name))),
        }
    }

    /// Loads one element and converts it from memory type to compute type.
    pub fn load(&mut self, buffer: &Buffer, dtype: DType, idx: &[String]) -> String {
        let x = self.fresh();
        self.line(format!("{x} = memref.load {}[{}] : {}", buffer.name, idx.join(", "), buffer.ty));
        match dtype {
            DType::Bool => {
                let zero = self.int(0, "i8");
                let b = self.fresh();
                self.line(format!("{b} = arith.cmpi ne, {x}, {zero} : i8"));
                b
            }
            DType::I32 | DType::I8 => {
                let t = self.fresh();
                self.line(format!("{t} = arith.trunci {x} : i64 to {}", compute_type(dtype)));
                t
            }
            _ => x,
        }
    }

    /// Converts `x` from compute type to memory type and stores it.
    pub fn store(&mut self, x: &str, buffer: &Buffer, dtype: DType, idx: &[String]) {
        let stored = match dtype {
            DType::Bool => {
                let t = self.fresh();
                self.line(format!("{t} = arith.extui {x} : i1 to i8"));
                t
            }
            DType::I32 | DType::I8 => {
                let t = self.fresh();
                self.line(format!("{t} = arith.extsi {x} : {} to i64", compute_type(dtype)));
                t
            }
            _ => x.to_string(),
        };
        self.line(format!("memref.store {stored}, {}[{}] : {}", buffer.name, idx.join(", "), buffer.ty));
    }

    /// Rounds an `f32` result to a narrower float dtype, as the reference does after every op.
    pub fn round(&mut self, x: String, dtype: DType) -> String {
        let narrow = match dtype {
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            _ => return x,
        };
        let t = self.fresh();
        self.line(format!("{t} = arith.truncf {x} : f32 to {narrow}"));
        let r = self.fresh();
        self.line(format!("{r} = arith.extf {t} : {narrow} to f32"));
        r
    }
}
