//! The loop nests that write a materialized value into its buffer: a plain nest for pointwise
//! values, and the templates of `tessera_kernels::template` for reductions, argmax, softmax,
//! layer/RMS norm and matmul. Operands are read through [`FnEmitter::value_at`], so pointwise
//! producers (e.g. `mask + scores` before a softmax) fuse into the template's loops.

use super::pointwise::axes_of;
use super::{compute_type, shape_of, Buffer, FnEmitter};
use crate::error::CodegenError;
use tessera_ir::dtype::DType;
use tessera_ir::graph::{NodeId, ValueId};
use tessera_ir::ops::conv::{PoolKind, Window};
use tessera_ir::ops::reduce::ReduceKind;
use tessera_ir::ops::Op;
use tessera_ir::types::normalize_axis;

/// What a kernel template writes: the value of one result of `node`, whose operands are
/// `inputs`, with its static shape and element type, into `dest`. [`FnEmitter::emit_node_into`]
/// reads it once for every template method (one method per template, issue 14).
struct TemplateTarget<'t> {
    node: NodeId,
    inputs: &'t [ValueId],
    out_shape: Vec<usize>,
    dtype: DType,
    dest: &'t Buffer,
}

impl FnEmitter<'_> {
    /// Writes result `result` of `node` into `dest`: through the kernel template of its op, or a
    /// plain loop nest over the output for pointwise values.
    pub(crate) fn emit_node_into(&mut self, node: NodeId, result: usize, dest: &Buffer) -> Result<(), CodegenError> {
        let g = self.g;
        let n = g.node(node);
        if matches!(n.op, Op::MatMul) {
            if let Some(site) = self.plan.attention.iter().find(|s| s.output == node).cloned() {
                return self.emit_attention(&site, dest);
            }
        }
        let (out_shape, dtype) = self.result_layout(node, result)?;
        let t = TemplateTarget { node, inputs: &n.inputs, out_shape, dtype, dest };
        match &n.op {
            Op::Reduce { kind, axes, keepdims } => self.emit_reduce_into(&t, *kind, axes, *keepdims),
            Op::ArgMax { axis, keepdims } => self.emit_argmax_into(&t, *axis, *keepdims),
            Op::Softmax { axis } => self.emit_softmax_into(&t, *axis),
            Op::LayerNorm { axis, epsilon } | Op::RmsNorm { axis, epsilon } => self.emit_norm_into(&t, *axis, *epsilon),
            Op::MatMul => self.emit_matmul_into(&t),
            Op::Conv2d { window, groups } => self.emit_conv2d_into(&t, window, *groups),
            Op::Pool2d { kind, kernel, window } => self.emit_pool2d_into(&t, *kind, *kernel, window),
            _ => self.for_each_index(&t.out_shape, |e, idx| {
                let v = e.pointwise(node, result, idx)?;
                e.store(&v, dest, dtype, idx);
                Ok(())
            }),
        }
    }

    /// Rounds `value` to `dtype` (as the reference does) and stores it at `idx` of `dest`: how
    /// every template ends an output element.
    fn store_rounded(
        &mut self,
        value: String,
        dest: &Buffer,
        dtype: DType,
        idx: &[String],
    ) -> Result<(), CodegenError> {
        let value = self.round(value, dtype);
        self.store(&value, dest, dtype, idx);
        Ok(())
    }

    /// The static shape and the dtype of result `result` of `node`.
    fn result_layout(&self, node: NodeId, result: usize) -> Result<(Vec<usize>, DType), CodegenError> {
        let out_ty = &self.g.value(self.g.node(node).outputs[result]).ty;
        Ok((shape_of(out_ty)?, out_ty.dtype))
    }

    /// Reduces `x` over `axes` (sum, mean, max, ...) into the output buffer.
    fn emit_reduce_into(
        &mut self,
        t: &TemplateTarget,
        kind: ReduceKind,
        axes: &[i64],
        keepdims: bool,
    ) -> Result<(), CodegenError> {
        let g = self.g;
        let (out_shape, dtype, dest) = (&t.out_shape[..], t.dtype, t.dest);
        let x = t.inputs[0];
        let in_ty = &g.value(x).ty;
        let in_shape = shape_of(in_ty)?;
        let axes = axes_of(axes, in_shape.len())?;
        let extents: Vec<usize> = axes.iter().map(|&a| in_shape[a]).collect();
        let count: usize = extents.iter().product();
        let ty = compute_type(dtype);
        self.for_each_index(out_shape, |e, out_idx| {
            let init = e.reduce_identity(kind, dtype);
            let mut body = |e: &mut Self, red: &[String], accs: &[String]| {
                let in_idx = reduced_index(in_shape.len(), &axes, keepdims, out_idx, red);
                let x = e.value_at(x, &in_idx)?;
                Ok(vec![e.reduce_combine(kind, dtype, &accs[0], &x)])
            };
            let acc = e.accumulate(&extents, 0, &[(init, ty)], &mut body)?.remove(0);
            let value = if kind == ReduceKind::Mean {
                let n = e.f32(count as f64);
                e.op("arith.divf", &[&acc, &n], "f32")
            } else {
                acc
            };
            e.store_rounded(value, dest, dtype, out_idx)
        })
    }

    /// The index of the first maximum along `axis` (NaN wins, as in the reference).
    fn emit_argmax_into(&mut self, t: &TemplateTarget, axis: i64, keepdims: bool) -> Result<(), CodegenError> {
        let g = self.g;
        let (out_shape, dest) = (&t.out_shape[..], t.dest);
        let x = t.inputs[0];
        let in_dtype = g.value(x).ty.dtype;
        let in_shape = shape_of(&g.value(x).ty)?;
        let ax = normalize_axis(axis, in_shape.len()).ok_or_else(|| bad_axis(axis))?;
        let ty = compute_type(in_dtype);
        self.for_each_index(out_shape, |e, out_idx| {
            let zero = e.index(0);
            let first_idx = reduced_index(in_shape.len(), &[ax], keepdims, out_idx, std::slice::from_ref(&zero));
            let first = e.value_at(x, &first_idx)?;
            let mut body = |e: &mut Self, red: &[String], accs: &[String]| {
                let in_idx = reduced_index(in_shape.len(), &[ax], keepdims, out_idx, red);
                let v = e.value_at(x, &in_idx)?;
                let beats = e.argmax_beats(in_dtype, &v, &accs[0]);
                let best = e.fresh();
                e.line(format!("{best} = arith.select {beats}, {v}, {} : {ty}", accs[0]));
                let at = e.fresh();
                e.line(format!("{at} = arith.select {beats}, {}, {} : index", red[0], accs[1]));
                Ok(vec![best, at])
            };
            let found = e.accumulate(&[in_shape[ax]], 1, &[(first, ty), (zero.clone(), "index")], &mut body)?;
            let at = e.fresh();
            e.line(format!("{at} = arith.index_cast {} : index to i64", found[1]));
            e.store(&at, dest, DType::I64, out_idx);
            Ok(())
        })
    }

    /// Softmax along `axis`: a max pass, an exponential-sum pass that stores the exponentials, and
    /// a scaling pass.
    fn emit_softmax_into(&mut self, t: &TemplateTarget, axis: i64) -> Result<(), CodegenError> {
        let (out_shape, dtype, dest) = (&t.out_shape[..], t.dtype, t.dest);
        let x = t.inputs[0];
        let ax = normalize_axis(axis, out_shape.len()).ok_or_else(|| bad_axis(axis))?;
        let outer: Vec<usize> = without(out_shape, ax);
        let len = out_shape[ax];
        self.for_each_index(&outer, |e, outer_idx| {
            let at = |j: &str| with(outer_idx, ax, j);
            // The reference's max ignores NaN (f64::max), as arith.maxnumf does.
            let low = e.f32(f64::NEG_INFINITY);
            let mut max_body = |e: &mut Self, j: &[String], accs: &[String]| {
                let v = e.value_at(x, &at(&j[0]))?;
                Ok(vec![e.op("arith.maxnumf", &[&accs[0], &v], "f32")])
            };
            let max = e.accumulate(&[len], 0, &[(low, "f32")], &mut max_body)?.remove(0);
            let zero = e.f32(0.0);
            let mut sum_body = |e: &mut Self, j: &[String], accs: &[String]| {
                let v = e.value_at(x, &at(&j[0]))?;
                let d = e.op("arith.subf", &[&v, &max], "f32");
                let ex = e.exp(&d);
                // The unnormalized exponential goes to the output; the last pass scales it.
                e.store(&ex, dest, DType::F32, &at(&j[0]));
                // On the CPU reassociable, so LLVM vectorizes this loop (partial sums
                // per lane): the softmax of GPT-2's logits spans 50257 elements per row.
                // The order is fixed at compile time, so results stay deterministic.
                let flags = if e.is_gpu() { "" } else { " fastmath<reassoc>" };
                let sum = e.fresh();
                e.line(format!("{sum} = arith.addf {}, {ex}{flags} : f32", accs[0]));
                Ok(vec![sum])
            };
            let sum = e.accumulate(&[len], 0, &[(zero, "f32")], &mut sum_body)?.remove(0);
            let inverse_free = sum.clone();
            e.for_each_index(&[len], |e, j| {
                let ex = e.load(dest, DType::F32, &at(&j[0]));
                let q = e.op("arith.divf", &[&ex, &inverse_free], "f32");
                e.store_rounded(q, dest, dtype, &at(&j[0]))
            })
        })
    }

    /// Layer norm (mean and variance) or RMS norm (mean square) over the axes from `axis` on, then
    /// scale (and bias).
    fn emit_norm_into(&mut self, t: &TemplateTarget, axis: i64, epsilon: f64) -> Result<(), CodegenError> {
        let (out_shape, dtype, dest) = (&t.out_shape[..], t.dtype, t.dest);
        let layer = matches!(self.g.node(t.node).op, Op::LayerNorm { .. });
        let x = t.inputs[0];
        let scale = t.inputs[1];
        let bias = if layer { Some(t.inputs[2]) } else { None };
        let ax = normalize_axis(axis, out_shape.len()).ok_or_else(|| bad_axis(axis))?;
        let (outer, inner) = (out_shape[..ax].to_vec(), out_shape[ax..].to_vec());
        let count: usize = inner.iter().product();
        self.for_each_index(&outer, |e, outer_idx| {
            let full = |inner_idx: &[String]| [outer_idx, inner_idx].concat();
            let zero = e.f32(0.0);
            let n = e.f32(count as f64);
            let mean = if layer {
                let mut body = |e: &mut Self, i: &[String], accs: &[String]| {
                    let v = e.value_at(x, &full(i))?;
                    Ok(vec![e.op("arith.addf", &[&accs[0], &v], "f32")])
                };
                let sum = e.accumulate(&inner, 0, &[(zero.clone(), "f32")], &mut body)?.remove(0);
                Some(e.op("arith.divf", &[&sum, &n], "f32"))
            } else {
                None
            };
            // Sum of squared deviations (layer norm) or of squares (RMS norm).
            let mut body = |e: &mut Self, i: &[String], accs: &[String]| {
                let v = e.value_at(x, &full(i))?;
                let d = match &mean {
                    Some(m) => e.op("arith.subf", &[&v, m], "f32"),
                    None => v,
                };
                let sq = e.op("arith.mulf", &[&d, &d], "f32");
                Ok(vec![e.op("arith.addf", &[&accs[0], &sq], "f32")])
            };
            let squares = e.accumulate(&inner, 0, &[(zero, "f32")], &mut body)?.remove(0);
            let var = e.op("arith.divf", &[&squares, &n], "f32");
            let eps = e.f32(epsilon);
            let shifted = e.op("arith.addf", &[&var, &eps], "f32");
            let root = e.op("math.sqrt", &[&shifted], "f32");
            let one = e.f32(1.0);
            let inv = e.op("arith.divf", &[&one, &root], "f32");
            e.for_each_index(&inner, |e, i| {
                let v = e.value_at(x, &full(i))?;
                let d = match &mean {
                    Some(m) => e.op("arith.subf", &[&v, m], "f32"),
                    None => v,
                };
                let normed = e.op("arith.mulf", &[&d, &inv], "f32");
                let s = e.value_at(scale, i)?;
                let mut r = e.op("arith.mulf", &[&normed, &s], "f32");
                if let Some(bias) = bias {
                    let b = e.value_at(bias, i)?;
                    r = e.op("arith.addf", &[&r, &b], "f32");
                }
                e.store_rounded(r, dest, dtype, &full(i))
            })
        })
    }

    /// Matmul: row by row on the CPU, one accumulation per output element on GPUs.
    fn emit_matmul_into(&mut self, t: &TemplateTarget) -> Result<(), CodegenError> {
        let g = self.g;
        let (out_shape, dtype, dest) = (&t.out_shape[..], t.dtype, t.dest);
        let (a, b) = (t.inputs[0], t.inputs[1]);
        let a_shape = shape_of(&g.value(a).ty)?;
        let b_shape = shape_of(&g.value(b).ty)?;
        let k = a_shape[a_shape.len() - 1];
        let ro = out_shape.len();
        let ty = compute_type(dtype);
        if self.gpu.is_none() {
            return self.matmul_rows(a, b, &a_shape, &b_shape, out_shape, dtype, dest);
        }
        self.for_each_index(out_shape, |e, idx| {
            let batch = &idx[..ro - 2];
            let a_batch = e.broadcast_index(batch, &a_shape[..a_shape.len() - 2]);
            let b_batch = e.broadcast_index(batch, &b_shape[..b_shape.len() - 2]);
            let init = if dtype.is_float() { e.f32(0.0) } else { e.int(0, ty) };
            let (i, j) = (idx[ro - 2].clone(), idx[ro - 1].clone());
            let mut body = |e: &mut Self, kk: &[String], accs: &[String]| {
                let x = e.value_at(a, &[a_batch.clone(), vec![i.clone(), kk[0].clone()]].concat())?;
                let y = e.value_at(b, &[b_batch.clone(), vec![kk[0].clone(), j.clone()]].concat())?;
                Ok(vec![if dtype.is_float() {
                    let p = e.op("arith.mulf", &[&x, &y], ty);
                    e.op("arith.addf", &[&accs[0], &p], ty)
                } else {
                    let p = e.op("arith.muli", &[&x, &y], ty);
                    e.op("arith.addi", &[&accs[0], &p], ty)
                }])
            };
            let acc = e.accumulate(&[k], 0, &[(init, ty)], &mut body)?.remove(0);
            e.store_rounded(acc, dest, dtype, idx)
        })
    }

    /// Grouped 2-D convolution: one accumulation over channels and taps per output element.
    fn emit_conv2d_into(&mut self, t: &TemplateTarget, window: &Window, groups: i64) -> Result<(), CodegenError> {
        let g = self.g;
        let (out_shape, dtype, dest) = (&t.out_shape[..], t.dtype, t.dest);
        let (x, w) = (t.inputs[0], t.inputs[1]);
        let x_shape = shape_of(&g.value(x).ty)?;
        let w_shape = shape_of(&g.value(w).ty)?;
        let (c_per_group, kh, kw) = (w_shape[1], w_shape[2], w_shape[3]);
        let o_per_group = w_shape[0] / groups.max(1) as usize;
        let window = window.clone();
        self.for_each_index(out_shape, |e, idx| {
            let per_group = e.index(o_per_group.max(1));
            let group = e.op("arith.divui", &[&idx[1], &per_group], "index");
            let cpg = e.index(c_per_group);
            let first_channel = e.op("arith.muli", &[&group, &cpg], "index");
            let zero = e.f32(0.0);
            let mut body = |e: &mut Self, k: &[String], accs: &[String]| {
                let (ci, ky, kx) = (&k[0], &k[1], &k[2]);
                let (iy, y_ok) = e.window_tap(&window, 0, &idx[2], ky, x_shape[2]);
                let (ix, x_ok) = e.window_tap(&window, 1, &idx[3], kx, x_shape[3]);
                let ic = e.op("arith.addi", &[&first_channel, ci], "index");
                let v = e.value_at(x, &[idx[0].clone(), ic, iy, ix])?;
                let f = e.value_at(w, &[idx[1].clone(), ci.clone(), ky.clone(), kx.clone()])?;
                let p = e.op("arith.mulf", &[&v, &f], "f32");
                let ok = e.op("arith.andi", &[&y_ok, &x_ok], "i1");
                let term = e.fresh();
                e.line(format!("{term} = arith.select {ok}, {p}, {zero} : f32"));
                Ok(vec![e.op("arith.addf", &[&accs[0], &term], "f32")])
            };
            let acc = e.accumulate(&[c_per_group, kh, kw], 0, &[(zero.clone(), "f32")], &mut body)?.remove(0);
            e.store_rounded(acc, dest, dtype, idx)
        })
    }

    /// Max or average pooling; padding taps are skipped (average: not counted).
    fn emit_pool2d_into(
        &mut self,
        t: &TemplateTarget,
        kind: PoolKind,
        kernel: [i64; 2],
        window: &Window,
    ) -> Result<(), CodegenError> {
        let g = self.g;
        let (out_shape, dtype, dest) = (&t.out_shape[..], t.dtype, t.dest);
        let x = t.inputs[0];
        let x_shape = shape_of(&g.value(x).ty)?;
        let (kh, kw) = (kernel[0].max(0) as usize, kernel[1].max(0) as usize);
        let (max, window) = (kind == PoolKind::Max, window.clone());
        self.for_each_index(out_shape, |e, idx| {
            let init = e.f32(if max { f64::NEG_INFINITY } else { 0.0 });
            let zero = e.f32(0.0);
            let one = e.f32(1.0);
            let mut body = |e: &mut Self, k: &[String], accs: &[String]| {
                let (iy, y_ok) = e.window_tap(&window, 0, &idx[2], &k[0], x_shape[2]);
                let (ix, x_ok) = e.window_tap(&window, 1, &idx[3], &k[1], x_shape[3]);
                let v = e.value_at(x, &[idx[0].clone(), idx[1].clone(), iy, ix])?;
                let ok = e.op("arith.andi", &[&y_ok, &x_ok], "i1");
                if max {
                    let m = e.op("arith.maximumf", &[&accs[0], &v], "f32");
                    let r = e.fresh();
                    e.line(format!("{r} = arith.select {ok}, {m}, {} : f32", accs[0]));
                    Ok(vec![r])
                } else {
                    let term = e.fresh();
                    e.line(format!("{term} = arith.select {ok}, {v}, {zero} : f32"));
                    let counted = e.fresh();
                    e.line(format!("{counted} = arith.select {ok}, {one}, {zero} : f32"));
                    Ok(vec![
                        e.op("arith.addf", &[&accs[0], &term], "f32"),
                        e.op("arith.addf", &[&accs[1], &counted], "f32"),
                    ])
                }
            };
            let inits: Vec<(String, &str)> =
                if max { vec![(init, "f32")] } else { vec![(init, "f32"), (zero.clone(), "f32")] };
            let accs = e.accumulate(&[kh, kw], 0, &inits, &mut body)?;
            let value = if max { accs[0].clone() } else { e.op("arith.divf", &[&accs[0], &accs[1]], "f32") };
            e.store_rounded(value, dest, dtype, idx)
        })
    }

    /// Matmul on the CPU, row by row: `out[i, :] += a[i, kk] * b[kk, :]` for `kk` in order.
    /// The innermost loop runs along a row of `b` and of the output, so LLVM vectorizes it
    /// without reassociating anything: every output element still sums its products in the
    /// order of `kk`, as the per-element form does.
    #[allow(clippy::too_many_arguments)]
    fn matmul_rows(
        &mut self,
        a: tessera_ir::graph::ValueId,
        b: tessera_ir::graph::ValueId,
        a_shape: &[usize],
        b_shape: &[usize],
        out_shape: &[usize],
        dtype: DType,
        dest: &Buffer,
    ) -> Result<(), CodegenError> {
        let ro = out_shape.len();
        let (k, n) = (a_shape[a_shape.len() - 1], out_shape[ro - 1]);
        let ty = compute_type(dtype);
        let float = dtype.is_float();
        self.for_each_index(&out_shape[..ro - 1], |e, rows| {
            let batch = &rows[..ro - 2];
            let i = rows[ro - 2].clone();
            let a_batch = e.broadcast_index(batch, &a_shape[..a_shape.len() - 2]);
            let b_batch = e.broadcast_index(batch, &b_shape[..b_shape.len() - 2]);
            let at = |j: &str| [rows, &[j.to_string()]].concat();
            let zero = if float { e.f32(0.0) } else { e.int(0, ty) };
            e.for_each_index(&[n], |e, j| {
                e.store(&zero, dest, dtype, &at(&j[0]));
                Ok(())
            })?;
            e.for_each_index(&[k], |e, kk| {
                let x = e.value_at(a, &[a_batch.clone(), vec![i.clone(), kk[0].clone()]].concat())?;
                e.for_each_index(&[n], |e, j| {
                    let y = e.value_at(b, &[b_batch.clone(), vec![kk[0].clone(), j[0].clone()]].concat())?;
                    let acc = e.load(dest, if float { DType::F32 } else { dtype }, &at(&j[0]));
                    let sum = if float {
                        let p = e.op("arith.mulf", &[&x, &y], ty);
                        e.op("arith.addf", &[&acc, &p], ty)
                    } else {
                        let p = e.op("arith.muli", &[&x, &y], ty);
                        e.op("arith.addi", &[&acc, &p], ty)
                    };
                    e.store(&sum, dest, if float { DType::F32 } else { dtype }, &at(&j[0]));
                    Ok(())
                })
            })?;
            if matches!(dtype, DType::F16 | DType::BF16) {
                e.for_each_index(&[n], |e, j| {
                    let v = e.load(dest, DType::F32, &at(&j[0]));
                    e.store_rounded(v, dest, dtype, &at(&j[0]))
                })?;
            }
            Ok(())
        })
    }

    /// The input position of window tap `k` of output position `o` along spatial dimension
    /// `d` (0 = height), clamped into `0..n` so the load stays in bounds, and whether the
    /// unclamped position is inside the input (not padding).
    fn window_tap(
        &mut self,
        window: &tessera_ir::ops::conv::Window,
        d: usize,
        o: &str,
        k: &str,
        n: usize,
    ) -> (String, String) {
        let stride = self.constant(&window.strides[d].to_string(), "index");
        let dilation = self.constant(&window.dilations[d].to_string(), "index");
        let pad = self.constant(&window.pads[d].to_string(), "index");
        let a = self.op("arith.muli", &[o, &stride], "index");
        let b = self.op("arith.muli", &[k, &dilation], "index");
        let c = self.op("arith.addi", &[&a, &b], "index");
        let at = self.op("arith.subi", &[&c, &pad], "index");
        let zero = self.index(0);
        let len = self.index(n);
        let last = self.index(n.saturating_sub(1));
        let low = self.fresh();
        self.line(format!("{low} = arith.cmpi sge, {at}, {zero} : index"));
        let high = self.fresh();
        self.line(format!("{high} = arith.cmpi slt, {at}, {len} : index"));
        let inside = self.op("arith.andi", &[&low, &high], "i1");
        let lifted = self.op("arith.maxsi", &[&at, &zero], "index");
        let clamped = self.op("arith.minsi", &[&lifted, &last], "index");
        (clamped, inside)
    }

    /// The index into an operand of shape `src` broadcast (NumPy trailing alignment) to the
    /// index `idx` of the broadcast shape.
    pub(crate) fn broadcast_index(&mut self, idx: &[String], src: &[usize]) -> Vec<String> {
        let lead = idx.len() - src.len();
        let zero = self.index(0);
        src.iter().enumerate().map(|(d, &n)| if n == 1 { zero.clone() } else { idx[d + lead].clone() }).collect()
    }

    fn reduce_identity(&mut self, kind: ReduceKind, dtype: DType) -> String {
        let ty = compute_type(dtype);
        if dtype.is_float() {
            return self.f32(match kind {
                ReduceKind::Sum | ReduceKind::Mean => 0.0,
                ReduceKind::Prod => 1.0,
                ReduceKind::Max => f64::NEG_INFINITY,
                ReduceKind::Min => f64::INFINITY,
            });
        }
        let (min, max) = match dtype {
            DType::I8 => (i8::MIN as i64, i8::MAX as i64),
            DType::I32 => (i32::MIN as i64, i32::MAX as i64),
            _ => (i64::MIN, i64::MAX),
        };
        let v = match kind {
            ReduceKind::Sum | ReduceKind::Mean => 0,
            ReduceKind::Prod => 1,
            ReduceKind::Max => min,
            ReduceKind::Min => max,
        };
        self.int(v, ty)
    }

    fn reduce_combine(&mut self, kind: ReduceKind, dtype: DType, acc: &str, x: &str) -> String {
        let ty = compute_type(dtype);
        let op = match (kind, dtype.is_float()) {
            (ReduceKind::Sum | ReduceKind::Mean, true) => "arith.addf",
            (ReduceKind::Prod, true) => "arith.mulf",
            // NaN propagates, as in the reference's max_f64/min_f64.
            (ReduceKind::Max, true) => "arith.maximumf",
            (ReduceKind::Min, true) => "arith.minimumf",
            (ReduceKind::Sum | ReduceKind::Mean, false) => "arith.addi",
            (ReduceKind::Prod, false) => "arith.muli",
            (ReduceKind::Max, false) => "arith.maxsi",
            (ReduceKind::Min, false) => "arith.minsi",
        };
        self.op(op, &[acc, x], ty)
    }

    /// Whether `v` replaces `best` in argmax: strictly greater, and a NaN wins once and stays.
    fn argmax_beats(&mut self, dtype: DType, v: &str, best: &str) -> String {
        let ty = compute_type(dtype);
        let r = self.fresh();
        if dtype.is_float() {
            let best_ok = self.fresh();
            self.line(format!("{best_ok} = arith.cmpf ord, {best}, {best} : f32"));
            let greater_or_nan = self.fresh();
            self.line(format!("{greater_or_nan} = arith.cmpf ugt, {v}, {best} : f32"));
            self.line(format!("{r} = arith.andi {best_ok}, {greater_or_nan} : i1"));
        } else {
            let p = if dtype == DType::Bool { "ugt" } else { "sgt" };
            self.line(format!("{r} = arith.cmpi {p}, {v}, {best} : {ty}"));
        }
        r
    }
}

/// The input index of a reduction: output indices on the kept axes, `red` on the reduced ones.
fn reduced_index(rank: usize, axes: &[usize], keepdims: bool, out_idx: &[String], red: &[String]) -> Vec<String> {
    let mut out_d = 0;
    let mut red_d = 0;
    (0..rank)
        .map(|d| {
            if axes.contains(&d) {
                if keepdims {
                    out_d += 1;
                }
                red_d += 1;
                red[red_d - 1].clone()
            } else {
                out_d += 1;
                out_idx[out_d - 1].clone()
            }
        })
        .collect()
}

fn without(shape: &[usize], axis: usize) -> Vec<usize> {
    shape.iter().enumerate().filter(|&(d, _)| d != axis).map(|(_, &n)| n).collect()
}

/// `outer` with `j` inserted at `axis`.
fn with(outer: &[String], axis: usize, j: &str) -> Vec<String> {
    let mut idx = outer.to_vec();
    idx.insert(axis, j.to_string());
    idx
}

fn bad_axis(axis: i64) -> CodegenError {
    CodegenError::Internal(format!("axis {axis} is out of range"))
}
