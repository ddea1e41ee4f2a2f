//! The server's counters, gauges and latency histograms, written by the scheduler thread and
//! read by `GET /metrics` as Prometheus text (exposition format 0.0.4).

use std::fmt::Write;
use tessera_runtime::serve::engine::KvUsage;

/// Upper bounds (seconds) of the latency histograms' buckets.
const LATENCY_BUCKETS: [f64; 14] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// A cumulative histogram over [`LATENCY_BUCKETS`].
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    /// Observations at most each bound (not cumulative here; summed when written).
    counts: [u64; LATENCY_BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    pub fn observe(&mut self, seconds: f64) {
        if let Some(i) = LATENCY_BUCKETS.iter().position(|&bound| seconds <= bound) {
            self.counts[i] += 1;
        }
        self.count += 1;
        self.sum += seconds;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    fn write(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, n) in LATENCY_BUCKETS.iter().zip(self.counts) {
            cumulative += n;
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}\n{name}_count {}", self.sum, self.count);
    }
}

/// Everything `/metrics` shows.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub time_to_first_token: Histogram,
    pub inter_token_latency: Histogram,
    pub running: usize,
    pub waiting: usize,
    pub kv: Option<KvUsage>,
    /// Tokens per KV-cache block.
    pub kv_block_tokens: usize,
    /// Bytes of the weights the engine's programs read (one copy for every row count), summed
    /// over the tensor-parallel ranks.
    pub weight_bytes: u64,
    /// Tensor-parallel ranks (`--mesh tp=N`; 1 without). The KV numbers are the whole mesh's:
    /// a block spans every rank's key/value heads, so blocks count once and a block's bytes
    /// are summed over the ranks.
    pub tp_ranks: u64,
    /// Seconds rank 0 has spent in tensor-parallel all-reduces, waiting for its peers
    /// included (0 for one rank).
    pub all_reduce_seconds: f64,
    pub preemptions: u64,
    pub prompt_tokens: u64,
    pub generation_tokens: u64,
    pub finished_stop: u64,
    pub finished_length: u64,
    pub aborted: u64,
}

impl Metrics {
    /// Prometheus text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.time_to_first_token.write(
            &mut out,
            "tessera_time_to_first_token_seconds",
            "Time from a request's arrival to its first generated token.",
        );
        self.inter_token_latency.write(
            &mut out,
            "tessera_inter_token_latency_seconds",
            "Time between consecutive generated tokens of a request.",
        );
        let kv = self.kv.unwrap_or(KvUsage {
            blocks_total: 0,
            blocks_used: 0,
            block_bytes: 0,
            live_tokens: 0,
            sequences: 0,
        });
        let gauges: [(&str, &str, u64); 11] = [
            ("tessera_requests_running", "Requests whose sequences are in the batch.", self.running as u64),
            ("tessera_requests_waiting", "Requests queued for admission (new or preempted).", self.waiting as u64),
            ("tessera_kv_blocks_used", "KV-cache blocks held by sequences.", kv.blocks_used as u64),
            ("tessera_kv_blocks_free", "KV-cache blocks on the free list.", (kv.blocks_total - kv.blocks_used) as u64),
            ("tessera_kv_block_bytes", "Bytes of one KV-cache block (all layers, all tensor-parallel ranks).", kv.block_bytes as u64),
            (
                "tessera_kv_bytes_in_use",
                "Bytes of the KV-cache blocks in use.",
                (kv.blocks_used * kv.block_bytes) as u64,
            ),
            ("tessera_kv_live_tokens", "Tokens whose keys and values are cached.", kv.live_tokens as u64),
            (
                "tessera_kv_live_token_bytes",
                "Bytes the cached tokens' keys and values fill.",
                (kv.live_tokens * kv.block_bytes / self.kv_block_tokens.max(1)) as u64,
            ),
            ("tessera_kv_sequences", "Sequences holding KV-cache blocks.", kv.sequences as u64),
            (
                "tessera_weight_bytes",
                "Bytes of the model weights held for the programs (one copy shared by every row count; summed over the tensor-parallel ranks).",
                self.weight_bytes,
            ),
            ("tessera_tp_ranks", "Tensor-parallel ranks the model is split over.", self.tp_ranks.max(1)),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
        }
        let counters: [(&str, &str, u64); 4] = [
            ("tessera_preemptions_total", "Sequences preempted (blocks freed, recomputed later).", self.preemptions),
            ("tessera_prompt_tokens_total", "Prompt tokens of admitted requests.", self.prompt_tokens),
            ("tessera_generation_tokens_total", "Tokens generated.", self.generation_tokens),
            ("tessera_requests_aborted_total", "Requests cancelled or failed before finishing.", self.aborted),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
        }
        let name = "tessera_all_reduce_seconds_total";
        let _ = writeln!(
            out,
            "# HELP {name} Seconds rank 0 spent in tensor-parallel all-reduces (waiting for its peers included).\n# TYPE {name} counter\n{name} {}",
            self.all_reduce_seconds
        );
        let name = "tessera_requests_finished_total";
        let _ = writeln!(out, "# HELP {name} Requests finished, by finish reason.\n# TYPE {name} counter");
        let _ = writeln!(out, "{name}{{finish_reason=\"stop\"}} {}", self.finished_stop);
        let _ = writeln!(out, "{name}{{finish_reason=\"length\"}} {}", self.finished_length);
        out
    }
}

/// The value of the sample `name` (exactly, labels included) in Prometheus text.
pub fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_gauges_readable() {
        let mut metrics = Metrics { kv_block_tokens: 16, weight_bytes: 4096, ..Default::default() };
        metrics.time_to_first_token.observe(0.003);
        metrics.time_to_first_token.observe(0.2);
        metrics.time_to_first_token.observe(100.0);
        metrics.kv =
            Some(KvUsage { blocks_total: 10, blocks_used: 3, block_bytes: 1024, live_tokens: 40, sequences: 2 });
        let text = metrics.render();
        let ttft = "tessera_time_to_first_token_seconds";
        assert_eq!(sample(&text, &format!("{ttft}_bucket{{le=\"0.005\"}}")), Some(1.0));
        assert_eq!(sample(&text, &format!("{ttft}_bucket{{le=\"0.25\"}}")), Some(2.0));
        assert_eq!(sample(&text, &format!("{ttft}_bucket{{le=\"+Inf\"}}")), Some(3.0));
        assert_eq!(sample(&text, &format!("{ttft}_count")), Some(3.0));
        assert_eq!(sample(&text, "tessera_kv_blocks_free"), Some(7.0));
        assert_eq!(sample(&text, "tessera_kv_bytes_in_use"), Some(3072.0));
        assert_eq!(sample(&text, "tessera_kv_live_token_bytes"), Some(2560.0));
        assert_eq!(sample(&text, "tessera_weight_bytes"), Some(4096.0));
    }
}
