//! The flash-style attention template (`tessera_kernels::attention`): for each output row
//! (batch indices and query `i`), loop over key tiles with an online softmax (running max `m`,
//! running sum `l`, an accumulator row of `v`'s width rescaled by `exp(m_old - m_new)` when the
//! max grows), so the `[queries, keys]` score matrix is never written. Scores are computed
//! inline ([`FnEmitter::matmul_at`]) through the elementwise chain (scale, mask), one key tile
//! at a time into a small per-row buffer. On the GPU the row loop is the thread index space:
//! one thread per (batch, head, query row).

use super::{shape_of, Buffer, FnEmitter};
use crate::error::CodegenError;
use tessera_ir::dtype::DType;
use tessera_ir::graph::NodeId;
use tessera_kernels::attention::AttentionSite;

/// The body of a dynamic-bound loop: induction variable and accumulators in, the next ones out.
type RangeBody<'b, 'g> = dyn FnMut(&mut FnEmitter<'g>, &str, &[String]) -> Result<Vec<String>, CodegenError> + 'b;

/// Keys per tile: the tile's scores live in a per-row buffer of this many floats.
pub(crate) const KEY_TILE: usize = 32;

impl<'g> FnEmitter<'g> {
    /// Writes `site`'s output (`softmax(logits) · v`) into `dest`.
    pub(crate) fn emit_attention(&mut self, site: &AttentionSite, dest: &Buffer) -> Result<(), CodegenError> {
        let g = self.g;
        let out = g.node(site.output);
        let (logits, v) = (site.logits(g), out.inputs[1]);
        let dtype = g.value(out.outputs[0]).ty.dtype;
        let out_shape = shape_of(&g.value(out.outputs[0]).ty)?;
        let v_shape = shape_of(&g.value(v).ty)?;
        let keys = shape_of(&g.value(logits).ty)?.last().copied().unwrap_or(0);
        let (rank, width) = (out_shape.len(), out_shape[out_shape.len() - 1]);
        let tile = KEY_TILE.min(keys.max(1));
        let tiles = keys.div_ceil(tile);
        let rows = &out_shape[..rank - 1];
        self.for_each_index(rows, |e, row| {
            let batch = &row[..rank - 2];
            let i = row[rank - 2].clone();
            let v_batch = e.broadcast_index(batch, &v_shape[..v_shape.len() - 2]);
            let acc = e.scratch(width);
            let scores = e.scratch(tile);
            let zero = e.f32(0.0);
            e.for_each_index(&[width], |e, d| {
                e.line(format!("memref.store {zero}, {}[{}] : {}", acc.name, d[0], acc.ty));
                Ok(())
            })?;
            let low = e.f32(f64::NEG_INFINITY);
            let mut tile_body = |e: &mut Self, t: &[String], state: &[String]| {
                let (m, l) = (state[0].clone(), state[1].clone());
                let size = e.index(tile);
                let first = e.op("arith.muli", &[&t[0], &size], "index");
                let end = e.op("arith.addi", &[&first, &size], "index");
                let all = e.index(keys);
                let end = e.op("arith.minui", &[&end, &all], "index");
                // Pass 1: the tile's logits into the scratch row, and their max.
                let tile_max = e.range(&first, &end, &[(low.clone(), "f32")], &mut |e, j, accs| {
                    let at = [batch.to_vec(), vec![i.clone(), j.to_string()]].concat();
                    let s = e.value_at(logits, &at)?;
                    let slot = e.op("arith.subi", &[j, &first], "index");
                    e.line(format!("memref.store {s}, {}[{slot}] : {}", scores.name, scores.ty));
                    // The reference's max ignores NaN (f64::max), as arith.maxnumf does.
                    Ok(vec![e.op("arith.maxnumf", &[&accs[0], &s], "f32")])
                })?;
                let m_new = e.op("arith.maxnumf", &[&m, &tile_max[0]], "f32");
                let shift = e.op("arith.subf", &[&m, &m_new], "f32");
                let correction = e.exp(&shift);
                e.for_each_index(&[width], |e, d| {
                    let a = e.load(&acc, DType::F32, d);
                    let a = e.op("arith.mulf", &[&a, &correction], "f32");
                    e.store(&a, &acc, DType::F32, d);
                    Ok(())
                })?;
                // Pass 2: weights exp(s - m_new) into the sum and, times v's row, the accumulator.
                let sum = e.range(&first, &end, &[(zero.clone(), "f32")], &mut |e, j, accs| {
                    let slot = e.op("arith.subi", &[j, &first], "index");
                    let s = e.load(&scores, DType::F32, &[slot]);
                    let x = e.op("arith.subf", &[&s, &m_new], "f32");
                    let p = e.exp(&x);
                    e.for_each_index(&[width], |e, d| {
                        let at = [v_batch.clone(), vec![j.to_string(), d[0].clone()]].concat();
                        let y = e.value_at(v, &at)?;
                        let a = e.load(&acc, DType::F32, d);
                        let r = e.fresh();
                        e.line(format!("{r} = math.fma {p}, {y}, {a} : f32"));
                        e.store(&r, &acc, DType::F32, d);
                        Ok(())
                    })?;
                    Ok(vec![e.op("arith.addf", &[&accs[0], &p], "f32")])
                })?;
                let scaled = e.op("arith.mulf", &[&l, &correction], "f32");
                let l_new = e.op("arith.addf", &[&scaled, &sum[0]], "f32");
                Ok(vec![m_new, l_new])
            };
            let state = e.accumulate(&[tiles], 0, &[(low.clone(), "f32"), (zero.clone(), "f32")], &mut tile_body)?;
            let total = state[1].clone();
            e.for_each_index(&[width], |e, d| {
                let a = e.load(&acc, DType::F32, d);
                let q = e.op("arith.divf", &[&a, &total], "f32");
                let q = e.round(q, dtype);
                e.store(&q, dest, dtype, &[row.to_vec(), d.to_vec()].concat());
                Ok(())
            })
        })
    }

    /// Element `idx` of `node`'s matmul result, computed inline (an attention site's scores).
    pub(crate) fn matmul_at(&mut self, node: NodeId, idx: &[String]) -> Result<String, CodegenError> {
        let g = self.g;
        let n = g.node(node);
        let (a, b) = (n.inputs[0], n.inputs[1]);
        let a_shape = shape_of(&g.value(a).ty)?;
        let b_shape = shape_of(&g.value(b).ty)?;
        let dtype = g.value(n.outputs[0]).ty.dtype;
        let ro = idx.len();
        let k = a_shape[a_shape.len() - 1];
        let batch = &idx[..ro - 2];
        let a_batch = self.broadcast_index(batch, &a_shape[..a_shape.len() - 2]);
        let b_batch = self.broadcast_index(batch, &b_shape[..b_shape.len() - 2]);
        let (i, j) = (idx[ro - 2].clone(), idx[ro - 1].clone());
        let zero = self.f32(0.0);
        // Reassociable on the CPU so the dot product vectorizes; the order is fixed at compile
        // time, so results stay deterministic.
        let flags = if self.is_gpu() { "" } else { " fastmath<reassoc,contract>" };
        let mut body = |e: &mut Self, kk: &[String], accs: &[String]| {
            let x = e.value_at(a, &[a_batch.clone(), vec![i.clone(), kk[0].clone()]].concat())?;
            let y = e.value_at(b, &[b_batch.clone(), vec![kk[0].clone(), j.clone()]].concat())?;
            let p = e.fresh();
            e.line(format!("{p} = arith.mulf {x}, {y}{flags} : f32"));
            let s = e.fresh();
            e.line(format!("{s} = arith.addf {}, {p}{flags} : f32", accs[0]));
            Ok(vec![s])
        };
        let acc = self.accumulate(&[k], 0, &[(zero, "f32")], &mut body)?.remove(0);
        Ok(self.round(acc, dtype))
    }

    /// A per-row scratch buffer of `n` floats, allocated once at function (or GPU kernel) entry.
    fn scratch(&mut self, n: usize) -> Buffer {
        let name = self.fresh();
        let ty = format!("memref<{}xf32>", n.max(1));
        self.push_entry_line(format!("{name} = memref.alloca() : {ty}"));
        Buffer { name, ty }
    }

    /// `scf.for j = lower to upper` (dynamic bounds) carrying `inits`; returns the results.
    fn range(
        &mut self,
        lower: &str,
        upper: &str,
        inits: &[(String, &str)],
        body: &mut RangeBody<'_, 'g>,
    ) -> Result<Vec<String>, CodegenError> {
        self.for_carrying(lower, upper, inits, |e, iv, carried| {
            let names: Vec<String> = carried.iter().map(|(v, _)| v.clone()).collect();
            body(e, iv, &names)
        })
    }
}
