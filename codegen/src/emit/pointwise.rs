//! Pointwise ops computed inline: the scalar code of elementwise math, comparisons, `where`
//! and casts, and the index maps of the layout ops (broadcast, reshape, transpose, slice,
//! concat, split, gather, rope) and `iota`'s coordinate.

use super::{compute_type, shape_of, FnEmitter};
use crate::error::CodegenError;
use tessera_ir::dtype::DType;
use tessera_ir::graph::NodeId;
use tessera_ir::ops::elementwise::{BinaryOp, CompareOp, UnaryOp};
use tessera_ir::ops::layout::slice_extent;
use tessera_ir::ops::reduce::normalize_axes;
use tessera_ir::ops::Op;
use tessera_ir::tensor::Buffer as Storage;
use tessera_ir::tensor::Tensor;
use tessera_ir::types::normalize_axis;

impl FnEmitter<'_> {
    /// Result `result` of pointwise node `node` at `idx` (its result's index space).
    pub(crate) fn pointwise(&mut self, node: NodeId, result: usize, idx: &[String]) -> Result<String, CodegenError> {
        let g = self.g;
        let n = g.node(node);
        let out_ty = &g.value(n.outputs[result]).ty;
        let input = |i: usize| n.inputs[i];
        let in_dtype = |i: usize| g.value(n.inputs[i]).ty.dtype;
        let in_shape = |i: usize| shape_of(&g.value(n.inputs[i]).ty);
        let out_shape = shape_of(out_ty)?;
        // Exhaustive on purpose (no `_` arm): a new op must be given a pointwise form or be
        // refused here. The ops that run on the interpreter are `kernels::template`'s pattern.
        match &n.op {
            Op::Constant(t) => self.constant_at(t, idx),
            Op::Unary(u) => {
                let x = self.value_at(input(0), idx)?;
                self.unary(*u, out_ty.dtype, &x)
            }
            Op::Binary(b) => {
                let a = self.value_at(input(0), idx)?;
                if let (BinaryOp::Pow, DType::F32, Some(power)) = (b, out_ty.dtype, small_power(g, input(1))) {
                    return Ok(self.power(&a, power));
                }
                let c = self.value_at(input(1), idx)?;
                Ok(self.binary(*b, out_ty.dtype, &a, &c))
            }
            Op::Compare(c) => {
                let a = self.value_at(input(0), idx)?;
                let b = self.value_at(input(1), idx)?;
                Ok(self.compare(*c, in_dtype(0), &a, &b))
            }
            Op::Where => {
                let c = self.value_at(input(0), idx)?;
                let a = self.value_at(input(1), idx)?;
                let b = self.value_at(input(2), idx)?;
                let ty = compute_type(out_ty.dtype);
                let r = self.fresh();
                self.line(format!("{r} = arith.select {c}, {a}, {b} : {ty}"));
                Ok(r)
            }
            Op::Cast { to } => {
                let x = self.value_at(input(0), idx)?;
                Ok(self.cast(&x, in_dtype(0), *to))
            }
            Op::Broadcast { .. } => {
                let src = in_shape(0)?;
                let lead = out_shape.len() - src.len();
                let zero = self.index(0);
                let mapped: Vec<String> = src
                    .iter()
                    .enumerate()
                    .map(|(d, &n)| if n == 1 { zero.clone() } else { idx[d + lead].clone() })
                    .collect();
                self.value_at(input(0), &mapped)
            }
            Op::Reshape { .. } => {
                let mapped = self.reshape_index(&out_shape, &in_shape(0)?, idx);
                self.value_at(input(0), &mapped)
            }
            // An identity on one device (its layout is `shard`'s business).
            Op::ShardingConstraint { .. } => self.value_at(input(0), idx),
            Op::Transpose { perm } => {
                // out.shape[d] = in.shape[perm[d]], so the input index at perm[d] is idx[d].
                let mut mapped = vec![String::new(); idx.len()];
                for (d, &p) in perm.iter().enumerate() {
                    mapped[p as usize] = idx[d].clone();
                }
                self.value_at(input(0), &mapped)
            }
            Op::Slice { starts, ends, steps } => {
                let src = in_shape(0)?;
                let mut mapped = Vec::with_capacity(idx.len());
                for d in 0..src.len() {
                    let (start, _) = slice_extent(src[d] as i64, starts[d], ends[d], steps[d]);
                    mapped.push(self.affine(&idx[d], steps[d], start));
                }
                self.value_at(input(0), &mapped)
            }
            Op::Concat { axis } => {
                let ax = normalize_axis(*axis, out_shape.len()).ok_or_else(|| bad_axis(*axis))?;
                let mut offsets = Vec::with_capacity(n.inputs.len());
                let mut at = 0;
                for i in 0..n.inputs.len() {
                    offsets.push(at);
                    at += in_shape(i)?[ax];
                }
                let ty = compute_type(out_ty.dtype);
                self.concat_at(&n.inputs, &offsets, ax, 0, idx, ty)
            }
            Op::Split { axis, .. } => {
                let ax = normalize_axis(*axis, out_shape.len()).ok_or_else(|| bad_axis(*axis))?;
                let mut offset = 0;
                for &v in &n.outputs[..result] {
                    offset += shape_of(&g.value(v).ty)?[ax];
                }
                let mut mapped = idx.to_vec();
                mapped[ax] = self.affine(&idx[ax], 1, offset as i64);
                self.value_at(input(0), &mapped)
            }
            Op::Gather { axis } => {
                let data = in_shape(0)?;
                let indices_rank = in_shape(1)?.len();
                let ax = normalize_axis(*axis, data.len()).ok_or_else(|| bad_axis(*axis))?;
                let k = self.value_at(input(1), &idx[ax..ax + indices_rank])?;
                let position = self.gather_position(&k, in_dtype(1), data[ax]);
                let mut mapped = idx[..ax].to_vec();
                mapped.push(position);
                mapped.extend_from_slice(&idx[ax + indices_rank..]);
                self.value_at(input(0), &mapped)
            }
            Op::Rope { interleaved } => self.rope_at(node, *interleaved, idx),
            Op::Iota { axis } => {
                let ax = normalize_axis(*axis, out_shape.len()).ok_or_else(|| bad_axis(*axis))?;
                let coordinate = self.fresh();
                self.line(format!("{coordinate} = arith.index_cast {} : index to i64", idx[ax]));
                Ok(self.cast(&coordinate, DType::I64, out_ty.dtype))
            }
            Op::MatMul
            | Op::Softmax { .. }
            | Op::LayerNorm { .. }
            | Op::RmsNorm { .. }
            | Op::Reduce { .. }
            | Op::ArgMax { .. }
            | Op::Scatter { .. }
            | Op::Conv2d { .. }
            | Op::Pool2d { .. }
            | tessera_kernels::interpreter_only_ops!() => {
                Err(CodegenError::Internal(format!("tsr.{} is not pointwise", n.op.mnemonic())))
            }
        }
    }

    /// `i * scale + offset` on an index.
    pub(crate) fn affine(&mut self, i: &str, scale: i64, offset: i64) -> String {
        let mut r = i.to_string();
        if scale != 1 {
            let s = self.constant(&scale.to_string(), "index");
            r = self.op("arith.muli", &[&r, &s], "index");
        }
        if offset != 0 {
            let o = self.constant(&offset.to_string(), "index");
            r = self.op("arith.addi", &[&r, &o], "index");
        }
        r
    }

    /// Maps an index of the reshaped result to the operand's index. Leading dimensions the two
    /// shapes share map one to one; the rest go through the linear offset.
    fn reshape_index(&mut self, out: &[usize], src: &[usize], idx: &[String]) -> Vec<String> {
        let common = out.iter().zip(src).take_while(|(a, b)| a == b).count();
        let mut mapped = idx[..common].to_vec();
        let mut linear = self.index(0);
        for d in common..out.len() {
            let n = self.index(out[d]);
            let scaled = self.op("arith.muli", &[&linear, &n], "index");
            linear = self.op("arith.addi", &[&scaled, &idx[d]], "index");
        }
        let mut rest = Vec::with_capacity(src.len() - common);
        for d in (common..src.len()).rev() {
            if d == common {
                rest.push(linear.clone());
            } else {
                let n = self.index(src[d]);
                rest.push(self.op("arith.remui", &[&linear, &n], "index"));
                linear = self.op("arith.divui", &[&linear, &n], "index");
            }
        }
        rest.reverse();
        mapped.extend(rest);
        mapped
    }

    /// The element of `concat(inputs[from..])` at `idx`, choosing the input by `idx[axis]`.
    fn concat_at(
        &mut self,
        inputs: &[tessera_ir::graph::ValueId],
        offsets: &[usize],
        axis: usize,
        from: usize,
        idx: &[String],
        ty: &str,
    ) -> Result<String, CodegenError> {
        let shifted = |e: &mut Self, i: usize| {
            let mut mapped = idx.to_vec();
            mapped[axis] = e.affine(&idx[axis], 1, -(offsets[i] as i64));
            mapped
        };
        if from + 1 == inputs.len() {
            let mapped = shifted(self, from);
            return self.value_at(inputs[from], &mapped);
        }
        let bound = self.index(offsets[from + 1]);
        let cond = self.fresh();
        self.line(format!("{cond} = arith.cmpi ult, {}, {bound} : index", idx[axis]));
        self.if_else(
            &cond,
            ty,
            |e| {
                let mapped = shifted(e, from);
                e.value_at(inputs[from], &mapped)
            },
            |e| e.concat_at(inputs, offsets, axis, from + 1, idx, ty),
        )
    }

    /// An index into a gather's data from index value `k`: negative counts from the end.
    /// Out-of-range indices (an error in the reference) are clamped so the kernel never reads
    /// outside its buffer.
    fn gather_position(&mut self, k: &str, dtype: DType, n: usize) -> String {
        let k64 = if dtype == DType::I64 {
            k.to_string()
        } else {
            let t = self.fresh();
            self.line(format!("{t} = arith.extsi {k} : {} to i64", compute_type(dtype)));
            t
        };
        let zero = self.int(0, "i64");
        let len = self.int(n as i64, "i64");
        let negative = self.fresh();
        self.line(format!("{negative} = arith.cmpi slt, {k64}, {zero} : i64"));
        let wrapped = self.op("arith.addi", &[&k64, &len], "i64");
        let resolved = self.fresh();
        self.line(format!("{resolved} = arith.select {negative}, {wrapped}, {k64} : i64"));
        let last = self.int((n as i64 - 1).max(0), "i64");
        let low = self.op("arith.maxsi", &[&resolved, &zero], "i64");
        let clamped = self.op("arith.minsi", &[&low, &last], "i64");
        let r = self.fresh();
        self.line(format!("{r} = arith.index_cast {clamped} : i64 to index"));
        r
    }

    /// `rope(x, cos, sin)` at `idx` of `[..., seq, head_dim]`.
    fn rope_at(&mut self, node: NodeId, interleaved: bool, idx: &[String]) -> Result<String, CodegenError> {
        let g = self.g;
        let n = g.node(node);
        let dtype = g.value(n.outputs[0]).ty.dtype;
        let shape = shape_of(&g.value(n.inputs[0]).ty)?;
        let rank = shape.len();
        let half = shape[rank - 1] / 2;
        let d = &idx[rank - 1];
        let (pair, first, partner_a, partner_b) = if interleaved {
            // Pair i holds elements 2i and 2i + 1; d is the first of its pair when even.
            let two = self.index(2);
            let i = self.op("arith.divui", &[d, &two], "index");
            let parity = self.op("arith.remui", &[d, &two], "index");
            let zero = self.index(0);
            let first = self.fresh();
            self.line(format!("{first} = arith.cmpi eq, {parity}, {zero} : index"));
            let a = self.op("arith.muli", &[&i, &two], "index");
            let b = self.affine(&a, 1, 1);
            (i, first, a, b)
        } else {
            let h = self.index(half);
            let first = self.fresh();
            self.line(format!("{first} = arith.cmpi ult, {d}, {h} : index"));
            let shifted = self.op("arith.subi", &[d, &h], "index");
            let i = self.fresh();
            self.line(format!("{i} = arith.select {first}, {d}, {shifted} : index"));
            let b = self.affine(&i, 1, half as i64);
            (i.clone(), first, i, b)
        };
        let mut at = idx.to_vec();
        at[rank - 1] = partner_a;
        let a = self.value_at(n.inputs[0], &at)?;
        at[rank - 1] = partner_b;
        let b = self.value_at(n.inputs[0], &at)?;
        let table = [idx[rank - 2].clone(), pair];
        let c = self.value_at(n.inputs[1], &table)?;
        let s = self.value_at(n.inputs[2], &table)?;
        // (a c - b s, a s + b c), in f64 and rounded once by the reference; f32 here.
        let ac = self.op("arith.mulf", &[&a, &c], "f32");
        let bs = self.op("arith.mulf", &[&b, &s], "f32");
        let re = self.op("arith.subf", &[&ac, &bs], "f32");
        let as_ = self.op("arith.mulf", &[&a, &s], "f32");
        let bc = self.op("arith.mulf", &[&b, &c], "f32");
        let im = self.op("arith.addf", &[&as_, &bc], "f32");
        let r = self.fresh();
        self.line(format!("{r} = arith.select {first}, {re}, {im} : f32"));
        Ok(self.round(r, dtype))
    }

    /// A literal tensor at `idx`: an inline constant when every element is equal, else a load
    /// from a module-level constant buffer.
    fn constant_at(&mut self, t: &Tensor, idx: &[String]) -> Result<String, CodegenError> {
        let ty = compute_type(t.dtype);
        let splat = (0..t.len()).all(|i| same_element(t, 0, i));
        if splat {
            return Ok(match &t.data {
                Storage::Float(v) => self.f32(v.first().copied().unwrap_or(0.0)),
                Storage::F32(v) => self.f32(v.first().copied().map_or(0.0, f64::from)),
                Storage::F16(v) => self.f32(v.first().copied().map_or(0.0, f64::from)),
                Storage::BF16(v) => self.f32(v.first().copied().map_or(0.0, f64::from)),
                Storage::Int(v) => self.int(v.first().copied().unwrap_or(0), ty),
            });
        }
        let memref = super::memref_type(t.dtype, &t.shape);
        let elements: Vec<String> = match &t.data {
            Storage::Float(v) => v.iter().map(|&x| format!("0x{:08X}", (x as f32).to_bits())).collect(),
            Storage::F32(v) => v.iter().map(|&x| format!("0x{:08X}", x.to_bits())).collect(),
            // Kernels compute 2-byte floats in f32 (the kernel ABI); they widen exactly.
            Storage::F16(v) => v.iter().map(|&x| format!("0x{:08X}", x.to_f32().to_bits())).collect(),
            Storage::BF16(v) => v.iter().map(|&x| format!("0x{:08X}", x.to_f32().to_bits())).collect(),
            Storage::Int(v) => v.iter().map(|x| x.to_string()).collect(),
        };
        let mut literal = format!("dense<[{}]>", elements.join(", "));
        if t.shape.len() != 1 {
            // A flat list with a shape needs the nested form; build it row by row.
            literal = format!("dense<{}>", nest(&elements, &t.shape));
        }
        let buffer_name = self.global(&memref, &literal);
        let buffer = super::Buffer { name: buffer_name, ty: memref };
        Ok(self.load(&buffer, t.dtype, idx))
    }

    // -----------------------------------------------------------------------------------------
    // Scalar code

    pub(crate) fn unary(&mut self, u: UnaryOp, dtype: DType, x: &str) -> Result<String, CodegenError> {
        let ty = compute_type(dtype);
        if !dtype.is_float() {
            return Ok(match u {
                UnaryOp::Neg => {
                    let zero = self.int(0, ty);
                    self.op("arith.subi", &[&zero, x], ty)
                }
                UnaryOp::Abs => {
                    let zero = self.int(0, ty);
                    let neg = self.op("arith.subi", &[&zero, x], ty);
                    self.op("arith.maxsi", &[x, &neg], ty)
                }
                UnaryOp::Relu => {
                    let zero = self.int(0, ty);
                    self.op("arith.maxsi", &[x, &zero], ty)
                }
                UnaryOp::Not => {
                    let t = self.int(1, "i1");
                    self.op("arith.xori", &[x, &t], "i1")
                }
                _ => return Err(CodegenError::Internal(format!("'{}' on {dtype}", u.mnemonic()))),
            });
        }
        let one = self.f32(1.0);
        let half = self.f32(0.5);
        let r = match u {
            UnaryOp::Neg => self.op("arith.negf", &[x], ty),
            UnaryOp::Abs => self.op("math.absf", &[x], ty),
            UnaryOp::Exp => self.exp(x),
            UnaryOp::Log => self.op("math.log", &[x], ty),
            UnaryOp::Sqrt => self.op("math.sqrt", &[x], ty),
            UnaryOp::Rsqrt => {
                let s = self.op("math.sqrt", &[x], ty);
                self.op("arith.divf", &[&one, &s], ty)
            }
            UnaryOp::Reciprocal => self.op("arith.divf", &[&one, x], ty),
            UnaryOp::Tanh => self.tanh(x),
            UnaryOp::Sigmoid => self.sigmoid(x),
            UnaryOp::Relu => {
                // `x < 0` is false for NaN, so NaN passes through as in the reference.
                let zero = self.f32(0.0);
                let negative = self.fresh();
                self.line(format!("{negative} = arith.cmpf olt, {x}, {zero} : f32"));
                let r = self.fresh();
                self.line(format!("{r} = arith.select {negative}, {zero}, {x} : f32"));
                r
            }
            UnaryOp::Gelu => {
                let k = self.f32(std::f64::consts::FRAC_1_SQRT_2);
                let scaled = self.op("arith.mulf", &[x, &k], ty);
                let erf = self.erf(&scaled);
                let sum = self.op("arith.addf", &[&one, &erf], ty);
                let hx = self.op("arith.mulf", &[&half, x], ty);
                self.op("arith.mulf", &[&hx, &sum], ty)
            }
            UnaryOp::GeluTanh => {
                let k = self.f32(0.797_884_560_802_865_4);
                let c = self.f32(0.044715);
                let x2 = self.op("arith.mulf", &[x, x], ty);
                let x3 = self.op("arith.mulf", &[&x2, x], ty);
                let cx3 = self.op("arith.mulf", &[&c, &x3], ty);
                let inner = self.op("arith.addf", &[x, &cx3], ty);
                let arg = self.op("arith.mulf", &[&k, &inner], ty);
                let t = self.tanh(&arg);
                let sum = self.op("arith.addf", &[&one, &t], ty);
                let hx = self.op("arith.mulf", &[&half, x], ty);
                self.op("arith.mulf", &[&hx, &sum], ty)
            }
            UnaryOp::Silu => {
                let s = self.sigmoid(x);
                self.op("arith.mulf", &[x, &s], ty)
            }
            UnaryOp::Erf => self.erf(x),
            UnaryOp::Sin => self.op("math.sin", &[x], ty),
            UnaryOp::Cos => self.op("math.cos", &[x], ty),
            UnaryOp::Softsign => {
                let a = self.op("math.absf", &[x], ty);
                let d = self.op("arith.addf", &[&one, &a], ty);
                self.op("arith.divf", &[x, &d], ty)
            }
            UnaryOp::Acos => self.op("math.acos", &[x], ty),
            UnaryOp::Asin => self.op("math.asin", &[x], ty),
            UnaryOp::Atan => self.op("math.atan", &[x], ty),
            UnaryOp::Ceil => self.op("math.ceil", &[x], ty),
            UnaryOp::Floor => self.op("math.floor", &[x], ty),
            // `math.roundeven`: halves to even (`math.round` takes them away from zero).
            UnaryOp::Round => self.op("math.roundeven", &[x], ty),
            UnaryOp::Not => return Err(CodegenError::Internal(format!("'not' on {dtype}"))),
            // `supports` refuses bitwise ops before emission.
            UnaryOp::BitNot => return Err(CodegenError::Internal(format!("'bitwise_not' on {dtype}"))),
        };
        Ok(self.round(r, dtype))
    }

    /// `tanh` as Eigen's rational approximation (`generic_fast_tanh_float`): `x p(x²) / q(x²)`
    /// on `x` clamped to ±7.90531 (where f32 `tanh` is ±1), and `x` itself below 4e-4. A few
    /// ulp from libm's `tanhf`, and branch- and call-free, so LLVM vectorizes loops using it
    /// (GPT-2's `gelu_tanh` is the largest elementwise op of the model).
    fn tanh(&mut self, x: &str) -> String {
        let alpha = [
            4.893_524_558_917_86e-3,
            6.372_619_288_754_36e-4,
            1.485_722_357_179_79e-5,
            5.122_297_090_371_14e-8,
            -8.604_671_522_137_35e-11,
            2.000_187_904_824_77e-13,
            -2.760_768_477_423_55e-16,
        ];
        let beta = [4.893_525_185_543_85e-3, 2.268_434_632_439e-3, 1.185_347_056_866_54e-4, 1.198_258_394_667_02e-6];
        let r = self.odd_rational(x, 7.905_311_107_635_498, &alpha, &beta);
        let abs = self.op("math.absf", &[x], "f32");
        let tiny = self.f32(4e-4);
        let small = self.fresh();
        self.line(format!("{small} = arith.cmpf olt, {abs}, {tiny} : f32"));
        let out = self.fresh();
        self.line(format!("{out} = arith.select {small}, {x}, {r} : f32"));
        out
    }

    /// The odd rational form both `tanh` and `erf` use: `c p(c²) / q(c²)` with `c` the input
    /// clamped to ±`bound` (where the function is ±1 in f32).
    fn odd_rational(&mut self, x: &str, bound: f64, alpha: &[f64], beta: &[f64]) -> String {
        let upper = self.f32(bound);
        let lower = self.f32(-bound);
        let low = self.op("arith.maximumf", &[x, &lower], "f32");
        let c = self.op("arith.minimumf", &[&low, &upper], "f32");
        let c2 = self.op("arith.mulf", &[&c, &c], "f32");
        let p = self.horner(alpha, &c2);
        let p = self.op("arith.mulf", &[&p, &c], "f32");
        let q = self.horner(beta, &c2);
        self.op("arith.divf", &[&p, &q], "f32")
    }

    /// `p(x)` by Horner's rule on f32 `coeffs` (lowest degree first).
    fn horner(&mut self, coeffs: &[f64], x: &str) -> String {
        let mut acc = self.f32(coeffs[coeffs.len() - 1]);
        for &k in coeffs[..coeffs.len() - 1].iter().rev() {
            let m = self.op("arith.mulf", &[&acc, x], "f32");
            let kk = self.f32(k);
            acc = self.op("arith.addf", &[&m, &kk], "f32");
        }
        acc
    }

    /// `exp(x)` in f32. On the CPU, Cephes' `expf` inline (`math.exp` would be a call to libm's
    /// `expf`, which keeps LLVM from vectorizing the loop): `x = n ln2 + r` with `|r| <= ln2/2`
    /// (ln2 in two parts, so `r` is exact), a degree-7 polynomial for `exp(r)`, and `2^n` built
    /// from exponent bits as two factors, so the whole range works without branches: results
    /// that overflow become infinity, ones below the smallest subnormal 0 (x is clamped to
    /// [-104, 88.73] first), NaN stays NaN. Within 1 ulp of the exact value (0.72 measured, test
    /// `exp_approximation_is_within_one_ulp`). On the GPU, `math.exp` (libdevice's `expf`).
    pub(crate) fn exp(&mut self, x: &str) -> String {
        if self.is_gpu() {
            return self.op("math.exp", &[x], "f32");
        }
        let low = self.f32(-104.0);
        let high = self.f32(88.73);
        // maxnumf turns NaN into the bound, so no NaN reaches the integer conversion below.
        let c = self.op("arith.maxnumf", &[x, &low], "f32");
        let c = self.op("arith.minnumf", &[&c, &high], "f32");
        let log2e = self.f32(std::f64::consts::LOG2_E);
        let half = self.f32(0.5);
        let t = self.fresh();
        self.line(format!("{t} = math.fma {c}, {log2e}, {half} : f32"));
        let n = self.op("math.floor", &[&t], "f32");
        let ln2_hi = self.f32(-0.693_359_375);
        let ln2_lo = self.f32(2.121_944_4e-4);
        let r = self.fresh();
        self.line(format!("{r} = math.fma {n}, {ln2_hi}, {c} : f32"));
        let r2 = self.fresh();
        self.line(format!("{r2} = math.fma {n}, {ln2_lo}, {r} : f32"));
        let p = self.horner(
            &[
                5.000_000_120_1e-1,
                1.666_666_545_9e-1,
                4.166_579_589_4e-2,
                8.333_451_907_3e-3,
                1.398_199_950_7e-3,
                1.987_569_150_0e-4,
            ],
            &r2,
        );
        let z = self.op("arith.mulf", &[&r2, &r2], "f32");
        let one = self.f32(1.0);
        let pz = self.fresh();
        self.line(format!("{pz} = math.fma {p}, {z}, {r2} : f32"));
        let e = self.op("arith.addf", &[&pz, &one], "f32");
        // 2^n = 2^h * 2^(n-h) with h = floor(n/2): n is in [-150, 128], each factor normal.
        let ni = self.fresh();
        self.line(format!("{ni} = arith.fptosi {n} : f32 to i32"));
        let one_i = self.int(1, "i32");
        let h = self.op("arith.shrsi", &[&ni, &one_i], "i32");
        let rest = self.op("arith.subi", &[&ni, &h], "i32");
        let bias = self.int(127, "i32");
        let shift = self.int(23, "i32");
        let mut scaled = e;
        for k in [h, rest] {
            let biased = self.op("arith.addi", &[&k, &bias], "i32");
            let bits = self.op("arith.shli", &[&biased, &shift], "i32");
            let factor = self.fresh();
            self.line(format!("{factor} = arith.bitcast {bits} : i32 to f32"));
            scaled = self.op("arith.mulf", &[&scaled, &factor], "f32");
        }
        let nan = self.fresh();
        self.line(format!("{nan} = arith.cmpf uno, {x}, {x} : f32"));
        let out = self.fresh();
        self.line(format!("{out} = arith.select {nan}, {x}, {scaled} : f32"));
        out
    }

    /// `erf(x)` in f32. On the CPU, Eigen's rational approximation (`generic_fast_erf_float`):
    /// `x p(x²) / q(x²)` on `x` clamped to ±4 (where f32 `erf` is ±1), branch- and call-free so
    /// loops using it (GPT-2's `gelu`) vectorize; within 4 ulp (2.8 measured, test
    /// `erf_approximation_is_within_a_few_ulp`). On the GPU, `math.erf` (libdevice).
    pub(crate) fn erf(&mut self, x: &str) -> String {
        if self.is_gpu() {
            return self.op("math.erf", &[x], "f32");
        }
        let alpha = [
            -1.609_603_332_624_15e-2,
            -2.954_599_808_540_25e-3,
            -7.349_906_303_268_55e-4,
            -5.692_506_394_623_46e-5,
            -2.101_024_020_825_08e-6,
            2.770_681_424_959_02e-8,
            -2.726_142_258_013_06e-10,
        ];
        let beta = [
            -1.426_473_905_141_89e-2,
            -7.373_329_167_204_68e-3,
            -1.682_826_974_382_03e-3,
            -2.133_740_552_789_05e-4,
            -1.456_607_184_649_96e-5,
        ];
        self.odd_rational(x, 4.0, &alpha, &beta)
    }

    /// `x^power` for a small positive integer power, as repeated multiplication (square and
    /// multiply): `math.powf` is a call to libm's `powf`, which keeps LLVM from vectorizing the
    /// loop, and GPT-2's GELU spells its cube as `pow(x, 3)` (5% of a one-thread run in `powf`,
    /// its kernel scalar: 9% of the run). Within 2 ulp of the correctly rounded power.
    fn power(&mut self, x: &str, power: u32) -> String {
        let mut result: Option<String> = None;
        let mut square = x.to_string();
        let mut rest = power;
        loop {
            if rest & 1 == 1 {
                result = Some(match result {
                    None => square.clone(),
                    Some(r) => self.op("arith.mulf", &[&r, &square], "f32"),
                });
            }
            rest >>= 1;
            if rest == 0 {
                break;
            }
            square = self.op("arith.mulf", &[&square, &square], "f32");
        }
        result.unwrap_or_else(|| self.f32(1.0))
    }

    /// `1 / (1 + exp(-x))`: for large negative `x` the exponential overflows to infinity and
    /// the quotient is 0, the correctly rounded `f32` result.
    fn sigmoid(&mut self, x: &str) -> String {
        let one = self.f32(1.0);
        let neg = self.op("arith.negf", &[x], "f32");
        let e = self.exp(&neg);
        let d = self.op("arith.addf", &[&one, &e], "f32");
        self.op("arith.divf", &[&one, &d], "f32")
    }

    pub(crate) fn binary(&mut self, b: BinaryOp, dtype: DType, x: &str, y: &str) -> String {
        let ty = compute_type(dtype);
        if dtype.is_float() {
            let r = match b {
                BinaryOp::Add => self.op("arith.addf", &[x, y], ty),
                BinaryOp::Sub => self.op("arith.subf", &[x, y], ty),
                BinaryOp::Mul => self.op("arith.mulf", &[x, y], ty),
                BinaryOp::Div => self.op("arith.divf", &[x, y], ty),
                BinaryOp::Pow => self.op("math.powf", &[x, y], ty),
                BinaryOp::Max => self.op("arith.maximumf", &[x, y], ty),
                BinaryOp::Min => self.op("arith.minimumf", &[x, y], ty),
                BinaryOp::And | BinaryOp::Or => {
                    let zero = self.f32(0.0);
                    let p = self.fresh();
                    self.line(format!("{p} = arith.cmpf une, {x}, {zero} : f32"));
                    let q = self.fresh();
                    self.line(format!("{q} = arith.cmpf une, {y}, {zero} : f32"));
                    let op = if b == BinaryOp::And { "arith.andi" } else { "arith.ori" };
                    let both = self.op(op, &[&p, &q], "i1");
                    let r = self.fresh();
                    self.line(format!("{r} = arith.uitofp {both} : i1 to f32"));
                    r
                }
                // Not defined on floats; the verifier rejects them before codegen.
                BinaryOp::BitAnd | BinaryOp::BitOr | BinaryOp::BitXor | BinaryOp::ShiftLeft | BinaryOp::ShiftRight => {
                    self.op("arith.mulf", &[x, y], ty)
                }
            };
            return self.round(r, dtype);
        }
        match b {
            BinaryOp::Add => self.op("arith.addi", &[x, y], ty),
            BinaryOp::Sub => self.op("arith.subi", &[x, y], ty),
            BinaryOp::Mul => self.op("arith.muli", &[x, y], ty),
            BinaryOp::Div => self.int_div(x, y, ty),
            // Not defined on integers; the verifier rejects it before codegen.
            BinaryOp::Pow => self.op("arith.muli", &[x, y], ty),
            BinaryOp::Max => self.op("arith.maxsi", &[x, y], ty),
            BinaryOp::Min => self.op("arith.minsi", &[x, y], ty),
            BinaryOp::And | BinaryOp::Or if ty == "i1" => {
                self.op(if b == BinaryOp::And { "arith.andi" } else { "arith.ori" }, &[x, y], ty)
            }
            BinaryOp::And | BinaryOp::Or => {
                let zero = self.int(0, ty);
                let p = self.fresh();
                self.line(format!("{p} = arith.cmpi ne, {x}, {zero} : {ty}"));
                let q = self.fresh();
                self.line(format!("{q} = arith.cmpi ne, {y}, {zero} : {ty}"));
                let both = self.op(if b == BinaryOp::And { "arith.andi" } else { "arith.ori" }, &[&p, &q], "i1");
                let r = self.fresh();
                self.line(format!("{r} = arith.extui {both} : i1 to {ty}"));
                r
            }
            BinaryOp::BitAnd => self.op("arith.andi", &[x, y], ty),
            BinaryOp::BitOr => self.op("arith.ori", &[x, y], ty),
            BinaryOp::BitXor => self.op("arith.xori", &[x, y], ty),
            // Shift amounts of the width or more are poison in MLIR but 0 in the reference, so
            // `supports` refuses shifts; these lines are never reached through it.
            BinaryOp::ShiftLeft => self.op("arith.shli", &[x, y], ty),
            BinaryOp::ShiftRight => self.op("arith.shrui", &[x, y], ty),
        }
    }

    /// Integer division truncating toward zero without the two traps of x86 `idiv`: a zero
    /// divisor (an error in the reference; here the quotient by 1) and `MIN / -1` (wraps to
    /// `MIN`, as the reference's wrapping division does).
    fn int_div(&mut self, x: &str, y: &str, ty: &str) -> String {
        let zero = self.int(0, ty);
        let one = self.int(1, ty);
        let minus_one = self.int(-1, ty);
        let is_zero = self.fresh();
        self.line(format!("{is_zero} = arith.cmpi eq, {y}, {zero} : {ty}"));
        let is_minus_one = self.fresh();
        self.line(format!("{is_minus_one} = arith.cmpi eq, {y}, {minus_one} : {ty}"));
        let unsafe_divisor = self.op("arith.ori", &[&is_zero, &is_minus_one], "i1");
        let divisor = self.fresh();
        self.line(format!("{divisor} = arith.select {unsafe_divisor}, {one}, {y} : {ty}"));
        let q = self.op("arith.divsi", &[x, &divisor], ty);
        let negated = self.op("arith.subi", &[&zero, x], ty);
        let r = self.fresh();
        self.line(format!("{r} = arith.select {is_minus_one}, {negated}, {q} : {ty}"));
        r
    }

    pub(crate) fn compare(&mut self, c: CompareOp, dtype: DType, x: &str, y: &str) -> String {
        let ty = compute_type(dtype);
        let r = self.fresh();
        if dtype.is_float() {
            // Ordered predicates are false for NaN; `ne` is unordered, true for NaN.
            let p = match c {
                CompareOp::Eq => "oeq",
                CompareOp::Ne => "une",
                CompareOp::Lt => "olt",
                CompareOp::Le => "ole",
                CompareOp::Gt => "ogt",
                CompareOp::Ge => "oge",
            };
            self.line(format!("{r} = arith.cmpf {p}, {x}, {y} : {ty}"));
        } else {
            // Booleans compare as 0 < 1 (unsigned); integers signed.
            let signed = dtype != DType::Bool;
            let p = match (c, signed) {
                (CompareOp::Eq, _) => "eq",
                (CompareOp::Ne, _) => "ne",
                (CompareOp::Lt, true) => "slt",
                (CompareOp::Le, true) => "sle",
                (CompareOp::Gt, true) => "sgt",
                (CompareOp::Ge, true) => "sge",
                (CompareOp::Lt, false) => "ult",
                (CompareOp::Le, false) => "ule",
                (CompareOp::Gt, false) => "ugt",
                (CompareOp::Ge, false) => "uge",
            };
            self.line(format!("{r} = arith.cmpi {p}, {x}, {y} : {ty}"));
        }
        r
    }

    /// `cast` with the reference semantics: float→int truncates toward zero and saturates
    /// (NaN gives 0) before wrapping to the width, anything→bool is `!= 0`, int→float rounds.
    pub(crate) fn cast(&mut self, x: &str, from: DType, to: DType) -> String {
        let (fty, tty) = (compute_type(from), compute_type(to));
        if from.is_float() && to.is_float() {
            return self.round(x.to_string(), to);
        }
        if from.is_float() {
            if to == DType::Bool {
                let zero = self.f32(0.0);
                let r = self.fresh();
                self.line(format!("{r} = arith.cmpf une, {x}, {zero} : f32"));
                return r;
            }
            // Rust's `as i64`: saturating, NaN to 0; fptosi alone is poison out of range.
            let low = self.f32(-(2f64.powi(63)));
            let high = self.f32(2f64.powi(63));
            let min = self.int(i64::MIN, "i64");
            let max = self.int(i64::MAX, "i64");
            let zero = self.int(0, "i64");
            let raw = self.fresh();
            self.line(format!("{raw} = arith.fptosi {x} : f32 to i64"));
            let below = self.fresh();
            self.line(format!("{below} = arith.cmpf olt, {x}, {low} : f32"));
            let above = self.fresh();
            self.line(format!("{above} = arith.cmpf oge, {x}, {high} : f32"));
            let nan = self.fresh();
            self.line(format!("{nan} = arith.cmpf uno, {x}, {x} : f32"));
            let a = self.fresh();
            self.line(format!("{a} = arith.select {below}, {min}, {raw} : i64"));
            let b = self.fresh();
            self.line(format!("{b} = arith.select {above}, {max}, {a} : i64"));
            let c = self.fresh();
            self.line(format!("{c} = arith.select {nan}, {zero}, {b} : i64"));
            return self.int_resize(&c, "i64", tty);
        }
        // From an integer or a boolean.
        if to.is_float() {
            let op = if from == DType::Bool { "arith.uitofp" } else { "arith.sitofp" };
            let r = self.fresh();
            self.line(format!("{r} = {op} {x} : {fty} to f32"));
            return self.round(r, to);
        }
        if to == DType::Bool {
            let zero = self.int(0, fty);
            let r = self.fresh();
            self.line(format!("{r} = arith.cmpi ne, {x}, {zero} : {fty}"));
            return r;
        }
        if from == DType::Bool {
            let r = self.fresh();
            self.line(format!("{r} = arith.extui {x} : i1 to {tty}"));
            return r;
        }
        self.int_resize(x, fty, tty)
    }

    /// Sign-extends or truncates (wraps) an integer between widths.
    fn int_resize(&mut self, x: &str, from: &str, to: &str) -> String {
        let width = |t: &str| t.trim_start_matches('i').parse::<u32>().unwrap_or(64);
        let r = self.fresh();
        match width(from).cmp(&width(to)) {
            std::cmp::Ordering::Equal => return x.to_string(),
            std::cmp::Ordering::Less => self.line(format!("{r} = arith.extsi {x} : {from} to {to}")),
            std::cmp::Ordering::Greater => self.line(format!("{r} = arith.trunci {x} : {from} to {to}")),
        }
        r
    }
}

fn bad_axis(axis: i64) -> CodegenError {
    CodegenError::Internal(format!("axis {axis} is out of range"))
}

/// The exponent `v` of a `pow` when it is a constant whose elements all equal one small
/// positive integer ([`crate::power::small_integer_power`]), looking through the broadcasts and
/// reshapes that spread a scalar constant to the operand's shape: such a power is computed by
/// multiplication.
fn small_power(g: &tessera_ir::graph::Graph, v: tessera_ir::graph::ValueId) -> Option<u32> {
    let node = g.node(g.producer(v)?);
    match &node.op {
        Op::Broadcast { .. } | Op::Reshape { .. } => small_power(g, node.inputs[0]),
        Op::Constant(t) => crate::power::small_integer_power(t),
        _ => None,
    }
}

fn same_element(t: &Tensor, i: usize, j: usize) -> bool {
    match &t.data {
        Storage::Float(v) => v[i].to_bits() == v[j].to_bits(),
        Storage::F32(v) => v[i].to_bits() == v[j].to_bits(),
        Storage::F16(v) => v[i].to_bits() == v[j].to_bits(),
        Storage::BF16(v) => v[i].to_bits() == v[j].to_bits(),
        Storage::Int(v) => v[i] == v[j],
    }
}

/// Nested `[[a, b], [c, d]]` form of a row-major element list (`a` alone for rank 0).
fn nest(elements: &[String], shape: &[usize]) -> String {
    match shape.split_first() {
        None => elements.first().cloned().unwrap_or_default(),
        Some((&n, rest)) => {
            let inner: usize = rest.iter().product();
            let parts: Vec<String> = (0..n).map(|i| nest(&elements[i * inner..(i + 1) * inner], rest)).collect();
            format!("[{}]", parts.join(", "))
        }
    }
}

/// Normalized reduction axes (shared with the templates).
pub(crate) fn axes_of(axes: &[i64], rank: usize) -> Result<Vec<usize>, CodegenError> {
    normalize_axes(axes, rank).map_err(CodegenError::Internal)
}
