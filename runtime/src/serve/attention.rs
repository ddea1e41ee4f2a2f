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

/// Keys and values of every layer, in blocks.
pub struct KvCache {
    pub block_size: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
}

/// One row (token) of an attention call: where its sequence's blocks are and its position;
/// it attends to positions `0..=position` of its sequence.
#[derive(Debug, Clone, Copy)]
pub struct AttentionRow<'a> {
    pub blocks: &'a [BlockId],
    pub position: usize,
}

impl KvCache {
    pub fn new(layers: usize, blocks: usize, block_size: usize, kv_heads: usize, head_dim: usize) -> KvCache {
        let per_layer = blocks * kv_heads * block_size * head_dim;
        KvCache {
            block_size,
            kv_heads,
            head_dim,
            keys: vec![vec![0.0; per_layer]; layers],
            values: vec![vec![0.0; per_layer]; layers],
        }
    }

    /// Bytes of keys and values one cached token takes over all layers.
    pub fn bytes_per_token(&self) -> usize {
        2 * self.keys.len() * self.kv_heads * self.head_dim * std::mem::size_of::<f32>()
    }

    fn offset(&self, block: BlockId, head: usize, slot: usize) -> usize {
        ((block as usize * self.kv_heads + head) * self.block_size + slot) * self.head_dim
    }

    /// Stores the key and value rows (`[kv_heads * head_dim]` each) of the token at `position`
    /// of the sequence whose blocks are `blocks`.
    pub fn write(&mut self, layer: usize, blocks: &[BlockId], position: usize, key: &[f32], value: &[f32]) {
        let (block, slot) = (blocks[position / self.block_size], position % self.block_size);
        let d = self.head_dim;
        for head in 0..self.kv_heads {
            let at = self.offset(block, head, slot);
            self.keys[layer][at..at + d].copy_from_slice(&key[head * d..(head + 1) * d]);
            self.values[layer][at..at + d].copy_from_slice(&value[head * d..(head + 1) * d]);
        }
    }

    /// Causal attention of `rows` over the cache of `layer`: `queries` is `[rows, heads *
    /// head_dim]`, `out` receives the context `[rows, heads * head_dim]` (rows past `rows.len()`
    /// are padding and are zeroed).
    pub fn attend(&self, layer: usize, heads: usize, queries: &[f32], rows: &[AttentionRow], out: &mut [f32]) {
        let d = self.head_dim;
        let group = heads / self.kv_heads;
        let scale = 1.0 / (d as f32).sqrt();
        let (keys, values) = (&self.keys[layer], &self.values[layer]);
        out.par_chunks_mut(d).enumerate().for_each(|(i, ctx)| {
            let (row, head) = (i / heads, i % heads);
            ctx.fill(0.0);
            let Some(r) = rows.get(row) else { return };
            let q = &queries[i * d..(i + 1) * d];
            let kv_head = head / group;
            let at = |position: usize| {
                self.offset(r.blocks[position / self.block_size], kv_head, position % self.block_size)
            };
            let mut scores: Vec<f32> = (0..=r.position)
                .map(|t| {
                    let k = &keys[at(t)..at(t) + d];
                    q.iter().zip(k).map(|(a, b)| a * b).sum::<f32>() * scale
                })
                .collect();
            let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut total = 0.0;
            for s in &mut scores {
                *s = (*s - max).exp();
                total += *s;
            }
            for (t, s) in scores.iter().enumerate() {
                let weight = s / total;
                let v = &values[at(t)..at(t) + d];
                ctx.iter_mut().zip(v).for_each(|(c, x)| *c += weight * x);
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
        let mut cache = KvCache::new(1, 6, block, kv_heads, d);
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
}
