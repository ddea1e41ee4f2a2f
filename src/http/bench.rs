//! `tessera bench serve`: a load generator for an OpenAI-compatible completions server.
//! Requests arrive as a Poisson process (exponential gaps from a seeded generator; an
//! infinite rate sends them all at once), at most `concurrency` in flight; each streams its
//! tokens, and the report has the fields vLLM's `benchmark_serving` prints: request and token
//! throughput, time to first token (TTFT), time per output token after the first (TPOT) and
//! inter-token latency (ITL, the gaps between streamed chunks), each as mean, median and p99.

use super::client;
use anyhow::{bail, Result};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tessera_ir::random::SplitMix64;

/// Token ids of the synthetic prompts lie below this (every servable model has at least 256).
const PROMPT_ID_LIMIT: u64 = 256;

/// The load to generate.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// `host:port` of the server.
    pub address: String,
    pub model: Option<String>,
    pub requests: usize,
    /// Requests per second (infinite: all at once).
    pub rate: f64,
    pub input_len: usize,
    pub output_len: usize,
    /// Requests in flight at most.
    pub concurrency: usize,
    pub seed: u64,
}

/// What one request measured.
#[derive(Debug, Clone, Default)]
struct Measured {
    ok: bool,
    error: Option<String>,
    ttft: f64,
    latency: f64,
    /// Gaps between streamed chunks after the first.
    itl: Vec<f64>,
    output_tokens: usize,
    input_tokens: usize,
}

/// The benchmark's results (vLLM `benchmark_serving`'s fields; times in milliseconds).
#[derive(Debug, Clone)]
pub struct BenchReport {
    pub completed: usize,
    pub failed: usize,
    pub first_error: Option<String>,
    pub duration_s: f64,
    pub total_input_tokens: usize,
    pub total_output_tokens: usize,
    pub request_throughput: f64,
    pub output_throughput: f64,
    pub total_token_throughput: f64,
    pub ttft_ms: Summary,
    pub tpot_ms: Summary,
    pub itl_ms: Summary,
}

/// Mean, median and 99th percentile.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Summary {
    pub mean: f64,
    pub median: f64,
    pub p99: f64,
}

impl Summary {
    /// Of `values` (0 for none); percentiles interpolate linearly, as numpy's do.
    pub fn of(values: &[f64]) -> Summary {
        if values.is_empty() {
            return Summary::default();
        }
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let percentile = |p: f64| {
            let at = p / 100.0 * (sorted.len() - 1) as f64;
            let (low, high) = (at.floor() as usize, at.ceil() as usize);
            sorted[low] + (sorted[high] - sorted[low]) * (at - low as f64)
        };
        Summary {
            mean: sorted.iter().sum::<f64>() / sorted.len() as f64,
            median: percentile(50.0),
            p99: percentile(99.0),
        }
    }
}

/// Runs the benchmark against a live server.
pub fn run(config: &BenchConfig) -> Result<BenchReport> {
    if config.requests == 0 || config.input_len == 0 || config.output_len == 0 || config.concurrency == 0 {
        bail!("--requests, --input-len, --output-len and --concurrency must be positive");
    }
    if config.rate.is_nan() || config.rate <= 0.0 {
        bail!("--rate must be positive (inf sends every request at once)");
    }
    let mut rng = SplitMix64::new(config.seed);
    let mut arrivals = Vec::with_capacity(config.requests);
    let mut at = 0.0;
    for _ in 0..config.requests {
        arrivals.push(at);
        if config.rate.is_finite() {
            at += -(1.0 - rng.next_f64()).ln() / config.rate;
        }
    }
    let prompts: Vec<Vec<u64>> = (0..config.requests)
        .map(|_| (0..config.input_len).map(|_| rng.next_u64() % PROMPT_ID_LIMIT).collect())
        .collect();
    // One runtime thread drives every client: a thread per client would take the cores the
    // server being measured runs on.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (results, elapsed) =
        runtime.block_on(async {
            let slots = Arc::new(tokio::sync::Semaphore::new(config.concurrency));
            let started = tokio::time::Instant::now();
            let mut tasks = Vec::new();
            for (arrival, prompt) in arrivals.into_iter().zip(prompts) {
                tokio::time::sleep_until(started + Duration::from_secs_f64(arrival)).await;
                let Ok(slot) = slots.clone().acquire_owned().await else { break };
                let body = request_body(config, &prompt);
                let address = config.address.clone();
                tasks.push(tokio::spawn(async move {
                    let measured = one_request(&address, &body, prompt.len()).await;
                    drop(slot);
                    measured
                }));
            }
            let mut results = Vec::with_capacity(tasks.len());
            for task in tasks {
                results.push(task.await.unwrap_or_else(|_| Measured {
                    error: Some("a client task panicked".into()),
                    ..Default::default()
                }));
            }
            (results, started.elapsed())
        });
    Ok(report(&results, elapsed.as_secs_f64()))
}

fn request_body(config: &BenchConfig, prompt: &[u64]) -> Vec<u8> {
    let mut body = json!({
        "prompt": prompt,
        "max_tokens": config.output_len,
        "temperature": 0,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    if let Some(model) = &config.model {
        body["model"] = json!(model);
    }
    body.to_string().into_bytes()
}

/// One streaming request, timed from just before it is sent.
async fn one_request(address: &str, body: &[u8], input_tokens: usize) -> Measured {
    let started = Instant::now();
    let mut measured = Measured { input_tokens, ..Default::default() };
    let mut last: Option<Instant> = None;
    let mut error = None;
    let outcome = client::stream_events_async(address, "/v1/completions", body, &mut |data| {
        let now = Instant::now();
        let Ok(chunk) = serde_json::from_str::<Value>(data) else {
            error = Some(format!("not JSON: {data}"));
            return false;
        };
        if let Some(e) = chunk.get("error") {
            error = Some(e.to_string());
            return false;
        }
        if let Some(tokens) = chunk.pointer("/usage/completion_tokens").and_then(Value::as_u64) {
            measured.output_tokens = tokens as usize;
        }
        let has_text = chunk.pointer("/choices/0/text").and_then(Value::as_str).is_some_and(|t| !t.is_empty());
        if has_text {
            match last {
                None => measured.ttft = (now - started).as_secs_f64(),
                Some(previous) => measured.itl.push((now - previous).as_secs_f64()),
            }
            last = Some(now);
        }
        true
    })
    .await;
    measured.latency = started.elapsed().as_secs_f64();
    match outcome {
        Ok(response) if response.status != 200 => {
            error = Some(format!("HTTP {}: {}", response.status, response.text()))
        }
        Ok(_) if error.is_none() && measured.output_tokens == 0 => error = Some("no usage chunk".into()),
        Ok(_) => {}
        Err(e) => error = Some(e.to_string()),
    }
    measured.ok = error.is_none();
    measured.error = error;
    measured
}

fn report(results: &[Measured], duration_s: f64) -> BenchReport {
    let ok: Vec<&Measured> = results.iter().filter(|m| m.ok).collect();
    let total_input_tokens: usize = ok.iter().map(|m| m.input_tokens).sum();
    let total_output_tokens: usize = ok.iter().map(|m| m.output_tokens).sum();
    let ttft: Vec<f64> = ok.iter().map(|m| m.ttft * 1e3).collect();
    let tpot: Vec<f64> = ok
        .iter()
        .filter(|m| m.output_tokens > 1)
        .map(|m| (m.latency - m.ttft) / (m.output_tokens - 1) as f64 * 1e3)
        .collect();
    let itl: Vec<f64> = ok.iter().flat_map(|m| m.itl.iter().map(|s| s * 1e3)).collect();
    BenchReport {
        completed: ok.len(),
        failed: results.len() - ok.len(),
        first_error: results.iter().find_map(|m| m.error.clone()),
        duration_s,
        total_input_tokens,
        total_output_tokens,
        request_throughput: ok.len() as f64 / duration_s,
        output_throughput: total_output_tokens as f64 / duration_s,
        total_token_throughput: (total_input_tokens + total_output_tokens) as f64 / duration_s,
        ttft_ms: Summary::of(&ttft),
        tpot_ms: Summary::of(&tpot),
        itl_ms: Summary::of(&itl),
    }
}

impl BenchReport {
    /// The report as vLLM's `benchmark_serving --save-result` names its fields.
    pub fn to_json(&self) -> Value {
        let mut object = json!({
            "completed": self.completed,
            "failed": self.failed,
            "duration": self.duration_s,
            "total_input_tokens": self.total_input_tokens,
            "total_output_tokens": self.total_output_tokens,
            "request_throughput": self.request_throughput,
            "output_throughput": self.output_throughput,
            "total_token_throughput": self.total_token_throughput,
        });
        for (name, summary) in [("ttft", self.ttft_ms), ("tpot", self.tpot_ms), ("itl", self.itl_ms)] {
            object[format!("mean_{name}_ms")] = json!(summary.mean);
            object[format!("median_{name}_ms")] = json!(summary.median);
            object[format!("p99_{name}_ms")] = json!(summary.p99);
        }
        if let Some(error) = &self.first_error {
            object["first_error"] = json!(error);
        }
        object
    }

    /// The report as vLLM's `benchmark_serving` prints it.
    pub fn to_text(&self) -> String {
        let mut lines = vec![format!("{:=^50}", " Serving Benchmark Result ")];
        let mut row = |name: &str, value: String| lines.push(format!("{name:<40}{value:<10}"));
        row("Successful requests:", self.completed.to_string());
        row("Failed requests:", self.failed.to_string());
        row("Benchmark duration (s):", format!("{:.2}", self.duration_s));
        row("Total input tokens:", self.total_input_tokens.to_string());
        row("Total generated tokens:", self.total_output_tokens.to_string());
        row("Request throughput (req/s):", format!("{:.2}", self.request_throughput));
        row("Output token throughput (tok/s):", format!("{:.2}", self.output_throughput));
        row("Total Token throughput (tok/s):", format!("{:.2}", self.total_token_throughput));
        for (title, name, s) in [
            ("Time to First Token", "TTFT", self.ttft_ms),
            ("Time per Output Token (excl. 1st token)", "TPOT", self.tpot_ms),
            ("Inter-token Latency", "ITL", self.itl_ms),
        ] {
            lines.push(format!("{:-^50}", format!(" {title} ")));
            lines.push(format!("{:<40}{:<10.2}", format!("Mean {name} (ms):"), s.mean));
            lines.push(format!("{:<40}{:<10.2}", format!("Median {name} (ms):"), s.median));
            lines.push(format!("{:<40}{:<10.2}", format!("P99 {name} (ms):"), s.p99));
        }
        lines.push("=".repeat(50));
        if let Some(error) = &self.first_error {
            lines.push(format!("first error: {error}"));
        }
        lines.join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_like_numpy() {
        let s = Summary::of(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!((s.mean, s.median), (2.5, 2.5));
        assert!((s.p99 - 3.97).abs() < 1e-12, "{}", s.p99);
        assert_eq!(Summary::of(&[]), Summary::default());
    }
}
