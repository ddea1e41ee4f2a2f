//! The paged KV cache and the attention that reads it: keys and values live in fixed-size
//! blocks, a sequence's block table lists its blocks in order, and attention reads each key
//! and value through that table (vLLM's PagedAttention), so no sequence's cache is ever copied
//! or kept contiguous.
//!
//! Layout per layer: `[blocks, kv_heads, block_size, head_dim]` for keys and for values, so
//! one head's keys within a block are contiguous. Grouped-query attention reads key/value head
//! `h / (heads / kv_heads)` for query head `h`. Scores, softmax and the weighted sum are f32
//! (as `transformers` computes attention in an f32 model); query heads of all rows run in
//! parallel on rayon's pool.

use super::blocks::BlockId;
use rayon::prelude::*;
use tessera_ir::serving::KvDtype;

/// Keys and values of every layer, in blocks.
pub struct KvCache {
    pub block_size: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    layers: usize,
    keys: Store,
    values: Store,
}

/// One of keys or values of every layer, in the cache's element type.
enum Store {
    F32(Vec<Vec<f32>>),
    /// The upper halves of the f32 values, rounded to nearest even.
    Bf16(Vec<Vec<u16>>),
    /// `data * scales[block * kv_heads + head]` per layer.
    Int8 {
        data: Vec<Vec<i8>>,
        scales: Vec<Vec<f32>>,
    },
}

/// One row (token) of an attention call: where its sequence's blocks are and its position;
/// it attends to positions `0..=position` of its sequence.
#[derive(Debug, Clone, Copy)]
pub struct AttentionRow<'a> {
    pub blocks: &'a [BlockId],
    pub position: usize,
}

/// bfloat16 bits of `x`, rounded to nearest even (NaN stays a quiet NaN).
pub fn bf16_bits(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) as u16) | 0x40;
    }
    let rounding = 0x7fff + ((bits >> 16) & 1);
    (bits.wrapping_add(rounding) >> 16) as u16
}

pub fn bf16_value(bits: u16) -> f32 {
    f32::from_bits(u32::from(bits) << 16)
}

/// A stored row read back as f32 weights for attention: either the values themselves or
/// `scale * element`.
trait Elements: Copy + Send + Sync {
    fn value(self) -> f32;
}

impl Elements for f32 {
    fn value(self) -> f32 {
        self
    }
}

impl Elements for u16 {
    fn value(self) -> f32 {
        bf16_value(self)
    }
}

impl Elements for i8 {
    fn value(self) -> f32 {
        f32::from(self)
    }
}

/// Lanes of [`dot`]'s partial sums: one AVX2 vector, or two SSE ones.
const DOT_LANES: usize = 8;

/// `q . k` as [`DOT_LANES`] interleaved partial sums added at the end: the sum in one chain
/// waits on each add's latency and cannot be vectorized, and at 16 decode rows that chain was
/// a sixth of the engine's CPU time (`perf` of `tessera serve`, gpt2-mid; BENCHMARKS.md).
fn dot<T: Elements>(q: &[f32], k: &[T]) -> f32 {
    let (q_lanes, k_lanes) = (q.chunks_exact(DOT_LANES), k.chunks_exact(DOT_LANES));
    let tail: f32 = q_lanes.remainder().iter().zip(k_lanes.remainder()).map(|(a, b)| a * b.value()).sum();
    let mut lanes = [0.0f32; DOT_LANES];
    for (qs, ks) in q_lanes.zip(k_lanes) {
        for j in 0..DOT_LANES {
            lanes[j] += qs[j] * ks[j].value();
        }
    }
    lanes.iter().sum::<f32>() + tail
}

impl Store {
    fn new(dtype: KvDtype, layers: usize, per_layer: usize, scales_per_layer: usize) -> Store {
        match dtype {
            KvDtype::F32 => Store::F32(vec![vec![0.0; per_layer]; layers]),
            KvDtype::Bf16 => Store::Bf16(vec![vec![0; per_layer]; layers]),
            KvDtype::Int8 => Store::Int8 {
                data: vec![vec![0; per_layer]; layers],
                scales: vec![vec![0.0; scales_per_layer]; layers],
            },
        }
    }

    fn dtype(&self) -> KvDtype {
        match self {
            Store::F32(_) => KvDtype::F32,
            Store::Bf16(_) => KvDtype::Bf16,
            Store::Int8 { .. } => KvDtype::Int8,
        }
    }

    /// Writes `row` (one head's `head_dim` values) at element `at` of `layer`, in the slot
    /// `slot` of the block whose scale is `scale_at` (int8). The first slot of a block starts
    /// its scale afresh; a row whose largest magnitude exceeds the block's range so far widens
    /// the scale and requantizes the block's earlier slots (`first..at`), so every stored
    /// element stays within ±127 of its block's scale.
    fn write(&mut self, layer: usize, at: usize, first: usize, scale_at: usize, row: &[f32], stride: usize) {
        let d = row.len();
        match self {
            Store::F32(layers) => layers[layer][at..at + d].copy_from_slice(row),
            Store::Bf16(layers) => {
                layers[layer][at..at + d].iter_mut().zip(row).for_each(|(b, &x)| *b = bf16_bits(x));
            }
            Store::Int8 { data, scales } => {
                let (data, scale) = (&mut data[layer], &mut scales[layer][scale_at]);
                if at == first {
                    *scale = 0.0;
                }
                let absmax = row.iter().fold(0.0f32, |m, x| m.max(x.abs()));
                if absmax > *scale * 127.0 {
                    let wider = absmax / 127.0;
                    let ratio = *scale / wider;
                    for slot in (first..at).step_by(stride) {
                        for q in &mut data[slot..slot + d] {
                            *q = (f32::from(*q) * ratio).round().clamp(-127.0, 127.0) as i8;
                        }
                    }
                    *scale = wider;
                }
                let inverse = if *scale > 0.0 { 1.0 / *scale } else { 0.0 };
                for (q, &x) in data[at..at + d].iter_mut().zip(row) {
                    *q = (x * inverse).round().clamp(-127.0, 127.0) as i8;
                }
            }
        }
    }
}

impl KvCache {
    pub fn new(
        layers: usize,
        blocks: usize,
        block_size: usize,
        kv_heads: usize,
        head_dim: usize,
        dtype: KvDtype,
    ) -> KvCache {
        let per_layer = blocks * kv_heads * block_size * head_dim;
        KvCache {
            block_size,
            kv_heads,
            head_dim,
            layers,
            keys: Store::new(dtype, layers, per_layer, blocks * kv_heads),
            values: Store::new(dtype, layers, per_layer, blocks * kv_heads),
        }
    }

    pub fn dtype(&self) -> KvDtype {
        self.keys.dtype()
    }

    /// Bytes of one block over all layers, keys and values: the elements and, for int8, the
    /// scales (one f32 per head for keys and one for values).
    pub fn block_bytes(&self) -> usize {
        let elements = 2 * self.layers * self.kv_heads * self.block_size * self.head_dim;
        let scales = match self.dtype() {
            KvDtype::Int8 => 2 * self.layers * self.kv_heads * std::mem::size_of::<f32>(),
            KvDtype::F32 | KvDtype::Bf16 => 0,
        };
        elements * self.dtype().element_bytes() + scales
    }

    fn offset(&self, block: BlockId, head: usize, slot: usize) -> usize {
        ((block as usize * self.kv_heads + head) * self.block_size + slot) * self.head_dim
    }

    /// Stores the key and value rows (`[kv_heads * head_dim]` each) of the token at `position`
    /// of the sequence whose blocks are `blocks`. A sequence's tokens are written in position
    /// order (an int8 block's scale restarts at its first slot).
    pub fn write(&mut self, layer: usize, blocks: &[BlockId], position: usize, key: &[f32], value: &[f32]) {
        let (block, slot) = (blocks[position / self.block_size], position % self.block_size);
        let d = self.head_dim;
        for head in 0..self.kv_heads {
            let at = self.offset(block, head, slot);
            let first = self.offset(block, head, 0);
            let scale_at = block as usize * self.kv_heads + head;
            self.keys.write(layer, at, first, scale_at, &key[head * d..(head + 1) * d], d);
            self.values.write(layer, at, first, scale_at, &value[head * d..(head + 1) * d], d);
        }
    }

    /// Causal attention of `rows` over the cache of `layer`: `queries` is `[rows, heads *
    /// head_dim]`, `out` receives the context `[rows, heads * head_dim]` (rows past `rows.len()`
    /// are padding and are zeroed). Keys and values are read in the cache's type; the
    /// arithmetic is f32 (for an f32 cache, on the stored values themselves).
    pub fn attend(&self, layer: usize, heads: usize, queries: &[f32], rows: &[AttentionRow], out: &mut [f32]) {
        match (&self.keys, &self.values) {
            (Store::F32(k), Store::F32(v)) => {
                self.attend_in(heads, queries, rows, out, (&k[layer], None), (&v[layer], None))
            }
            (Store::Bf16(k), Store::Bf16(v)) => {
                self.attend_in(heads, queries, rows, out, (&k[layer], None), (&v[layer], None))
            }
            (Store::Int8 { data: k, scales: ks }, Store::Int8 { data: v, scales: vs }) => self.attend_in(
                heads,
                queries,
                rows,
                out,
                (&k[layer], Some(&ks[layer][..])),
                (&v[layer], Some(&vs[layer][..])),
            ),
            _ => unreachable!("keys and values are stored alike (KvCache::new)"),
        }
    }

    /// [`KvCache::attend`] over elements of one type; `scales` (int8) per block and head.
    fn attend_in<T: Elements>(
        &self,
        heads: usize,
        queries: &[f32],
        rows: &[AttentionRow],
        out: &mut [f32],
        (keys, key_scales): (&[T], Option<&[f32]>),
        (values, value_scales): (&[T], Option<&[f32]>),
    ) {
        let d = self.head_dim;
        let group = heads / self.kv_heads;
        let scale = 1.0 / (d as f32).sqrt();
        out.par_chunks_mut(d).enumerate().for_each(|(i, ctx)| {
            let (row, head) = (i / heads, i % heads);
            ctx.fill(0.0);
            let Some(r) = rows.get(row) else { return };
            let q = &queries[i * d..(i + 1) * d];
            let kv_head = head / group;
            let block = |position: usize| r.blocks[position / self.block_size] as usize;
            let at = |position: usize| self.offset(block(position) as BlockId, kv_head, position % self.block_size);
            let block_scale =
                |scales: Option<&[f32]>, position: usize| scales.map(|s| s[block(position) * self.kv_heads + kv_head]);
            let mut scores: Vec<f32> = (0..=r.position)
                .map(|t| {
                    let dot = dot(q, &keys[at(t)..at(t) + d]);
                    match block_scale(key_scales, t) {
                        None => dot * scale,
                        Some(s) => dot * s * scale,
                    }
                })
                .collect();
            let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut total = 0.0;
            for s in &mut scores {
                *s = (*s - max).exp();
                total += *s;
            }
            for (t, s) in scores.iter().enumerate() {
                let weight = match block_scale(value_scales, t) {
                    None => s / total,
                    Some(v) => s / total * v,
                };
                let v = &values[at(t)..at(t) + d];
                ctx.iter_mut().zip(v).for_each(|(c, x)| *c += weight * x.value());
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Attention over blocks scattered through the cache equals dense causal attention over
    /// the same keys and values, with grouped-query heads reading their shared key/value head.
    #[test]
    fn paged_attention_matches_dense_attention() {
        let (heads, kv_heads, d, block, len) = (4, 2, 3, 2, 5);
        let mut cache = KvCache::new(1, 6, block, kv_heads, d, KvDtype::F32);
        let blocks: Vec<BlockId> = vec![4, 1, 3];
        let value = |t: usize, j: usize, salt: usize| ((t * 7 + j * 3 + salt) % 11) as f32 / 5.0 - 1.0;
        let k: Vec<Vec<f32>> = (0..len).map(|t| (0..kv_heads * d).map(|j| value(t, j, 1)).collect()).collect();
        let v: Vec<Vec<f32>> = (0..len).map(|t| (0..kv_heads * d).map(|j| value(t, j, 5)).collect()).collect();
        for t in 0..len {
            cache.write(0, &blocks, t, &k[t], &v[t]);
        }
        let q: Vec<f32> = (0..heads * d).map(|j| value(9, j, 2)).collect();
        let mut out = vec![1.0; 2 * heads * d];
        let rows = [AttentionRow { blocks: &blocks, position: len - 1 }];
        let queries = [q.clone(), vec![0.0; heads * d]].concat();
        cache.attend(0, heads, &queries, &rows, &mut out);
        for h in 0..heads {
            let g = h / (heads / kv_heads);
            let scores: Vec<f64> = (0..len)
                .map(|t| (0..d).map(|j| (q[h * d + j] * k[t][g * d + j]) as f64).sum::<f64>() / (d as f64).sqrt())
                .collect();
            let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let total: f64 = scores.iter().map(|s| (s - max).exp()).sum();
            for j in 0..d {
                let want: f64 = (0..len).map(|t| (scores[t] - max).exp() / total * v[t][g * d + j] as f64).sum();
                assert!((out[h * d + j] as f64 - want).abs() < 1e-5, "head {h} dim {j}: {} vs {want}", out[h * d + j]);
            }
        }
        assert!(out[heads * d..].iter().all(|&x| x == 0.0), "padding rows are zeroed");
    }

    /// The context of `len` random tokens attended by one query, through a cache of `dtype`.
    fn context_through(dtype: KvDtype, len: usize, grow: bool) -> Vec<f32> {
        let (heads, kv_heads, d, block) = (4, 2, 8, 4);
        let mut cache = KvCache::new(1, 8, block, kv_heads, d, dtype);
        let blocks: Vec<BlockId> = vec![6, 2, 7, 0, 3];
        let mut rng = tessera_ir::random::SplitMix64::new(11);
        let mut random = |t: usize| {
            // With `grow`, magnitudes rise along the sequence, so int8 blocks widen their scales.
            let magnitude = if grow { 1.0 + t as f64 } else { 1.0 };
            ((rng.next_f64() * 2.0 - 1.0) * magnitude) as f32
        };
        for t in 0..len {
            let k: Vec<f32> = (0..kv_heads * d).map(|_| random(t)).collect();
            let v: Vec<f32> = (0..kv_heads * d).map(|_| random(t)).collect();
            cache.write(0, &blocks, t, &k, &v);
        }
        let q: Vec<f32> = (0..heads * d).map(|_| random(0)).collect();
        let mut out = vec![0.0; heads * d];
        cache.attend(0, heads, &q, &[AttentionRow { blocks: &blocks, position: len - 1 }], &mut out);
        out
    }

    /// bf16 and int8 caches give the f32 cache's context within their precision (relative to
    /// the largest value): bf16 keeps 8 significant bits, int8 about 7 over a block's range.
    #[test]
    fn bf16_and_int8_caches_attend_close_to_f32() {
        for grow in [false, true] {
            let exact = context_through(KvDtype::F32, 19, grow);
            let largest = exact.iter().fold(0.0f32, |m, x| m.max(x.abs()));
            for (dtype, tolerance) in [(KvDtype::Bf16, 0.02), (KvDtype::Int8, 0.05)] {
                let got = context_through(dtype, 19, grow);
                let error = got.iter().zip(&exact).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max) / largest;
                assert!(error < tolerance, "{dtype:?} (growing {grow}): relative error {error}");
                assert!(error > 0.0, "{dtype:?} stores fewer bits, so the context differs");
            }
        }
    }

    #[test]
    fn bf16_rounds_to_nearest_even() {
        assert_eq!(bf16_value(bf16_bits(1.0)), 1.0);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to the even one, 1.
        assert_eq!(bf16_value(bf16_bits(1.0 + 1.0 / 256.0)), 1.0);
        assert_eq!(bf16_value(bf16_bits(1.0 + 3.0 / 256.0)), 1.0 + 4.0 / 256.0);
        assert!(bf16_value(bf16_bits(f32::NAN)).is_nan());
    }

    /// An int8 block whose later rows are larger widens its scale and requantizes the earlier
    /// rows: every row reads back within half a step of the final scale, and the block's bytes
    /// count the scales.
    #[test]
    fn int8_blocks_widen_their_scale_and_keep_earlier_rows() {
        let (d, block) = (4, 4);
        let mut cache = KvCache::new(1, 1, block, 1, d, KvDtype::Int8);
        let rows: Vec<Vec<f32>> =
            (0..block).map(|t| (0..d).map(|j| (t * 10 + j) as f32 * 0.37 - 1.0).collect()).collect();
        for (t, row) in rows.iter().enumerate() {
            cache.write(0, &[0], t, row, row);
        }
        let Store::Int8 { data, scales } = &cache.keys else { panic!("an int8 cache") };
        let scale = scales[0][0];
        let largest = rows.iter().flatten().fold(0.0f32, |m, x| m.max(x.abs()));
        assert!((scale - largest / 127.0).abs() < 1e-6, "{scale}");
        for (t, row) in rows.iter().enumerate() {
            for (j, &x) in row.iter().enumerate() {
                let back = f32::from(data[0][t * d + j]) * scale;
                // Each widening rounds once more: at most half a step per widening plus the last.
                assert!((back - x).abs() <= 2.0 * scale, "row {t} dim {j}: {back} vs {x}");
            }
        }
        assert_eq!(cache.block_bytes(), 2 * block * d + 2 * 4);
    }
}
