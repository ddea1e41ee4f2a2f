//! `tessera serve` through a real socket: greedy completions identical to `transformers` with
//! requests of mixed lengths in flight together (streamed and not, with preemption forced by
//! a small KV cache), 64 concurrent streams, the KV-cache bound read from `/metrics` while
//! they run, every kind of bad request refused with an OpenAI-style 4xx, cancellation on
//! hang-up, `tessera bench serve`, SIGTERM ending the server with exit 0 after it
//! finishes what is in flight, and a failing tensor-parallel rank failing its request (500)
//! while a panicking one stops the server (503, exit 1).

use crate::serve_reference::{checkpoint, reference, Case};
use crate::support::{repo_root, tessera};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tessera::http::client;
use tessera::http::metrics::sample;
use tessera_runtime::serve::tokenizer::TextTokenizer;

fn reference_cases(model: &str) -> Vec<Case> {
    reference().models[model].clone()
}

/// A `tessera serve` child process (or `mpirun` running them); killed if a test fails before
/// it stops.
pub(crate) struct Server {
    child: Child,
    pub(crate) address: String,
    stderr: Arc<Mutex<String>>,
}

impl Server {
    /// Starts the server on a free port and waits for the address line on its stdout.
    fn start(model: &str, extra: &[&str]) -> Server {
        Server::start_with_env(model, extra, &[])
    }

    /// [`Server::start`] with variables `env` set for the server.
    fn start_with_env(model: &str, extra: &[&str], env: &[(&str, &str)]) -> Server {
        Server::start_path(&checkpoint(model), extra, env)
    }

    /// [`Server::start_with_env`] on any model path (a compiled serving directory).
    fn start_path(path: &std::path::Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tessera"));
        command
            .args(["serve", path.to_str().expect("a UTF-8 path"), "--port", "0"])
            .args(extra)
            .envs(env.iter().copied());
        Server::spawn(command)
    }

    /// Runs `command` (which starts a server on port 0) and waits for the address line.
    pub(crate) fn spawn(mut command: Command) -> Server {
        let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("tessera serve starts");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("stderr is piped");
        let collected = stderr.clone();
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            collected.lock().expect("stderr lock").push_str(&text);
        });
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout is piped")).read_line(&mut line).expect("stdout reads");
        let address = line
            .trim()
            .rsplit("http://")
            .next()
            .filter(|a| a.contains(':'))
            .unwrap_or_else(|| panic!("no address in {line:?}; stderr: {}", stderr.lock().expect("lock")))
            .to_string();
        Server { child, address, stderr }
    }

    fn post(&self, body: &Value) -> client::HttpResponse {
        client::request(&self.address, "POST", "/v1/completions", body.to_string().as_bytes())
            .expect("the request goes through")
    }

    fn metrics(&self) -> String {
        let response = client::request(&self.address, "GET", "/metrics", b"").expect("GET /metrics");
        assert_eq!(response.status, 200);
        response.text()
    }

    /// The process id of the child (`tessera serve`, or `mpirun`).
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn metric(&self, name: &str) -> f64 {
        let text = self.metrics();
        sample(&text, name).unwrap_or_else(|| panic!("no {name} in\n{text}"))
    }

    /// Sends SIGTERM and waits for the exit code.
    pub(crate) fn terminate(mut self) -> i32 {
        let pid = i32::try_from(self.child.id()).expect("a pid fits in i32");
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        self.wait_exit(Duration::from_secs(60), "after SIGTERM")
    }

    /// Waits at most `limit` for the server to exit on its own; its exit code.
    pub(crate) fn wait_exit(&mut self, limit: Duration, why: &str) -> i32 {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "the server did not exit {why}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the server wrote to stderr, once it has exited.
    pub(crate) fn stderr_text(&self) -> String {
        // The reader thread appends once the pipe closes, just after the exit.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = self.stderr.lock().expect("stderr lock").clone();
            if !text.is_empty() || Instant::now() >= deadline {
                return text;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
            eprintln!("server stderr:\n{}", self.stderr.lock().map(|s| s.clone()).unwrap_or_default());
        }
    }
}

/// A streamed completion: its text, finish reason and usage chunk.
struct Streamed {
    text: String,
    finish_reason: Option<String>,
    usage: Option<Value>,
}

fn stream(address: &str, body: &Value) -> Streamed {
    let mut streamed = Streamed { text: String::new(), finish_reason: None, usage: None };
    let response = client::stream_events(address, "/v1/completions", body.to_string().as_bytes(), &mut |data| {
        let chunk: Value = serde_json::from_str(data).unwrap_or_else(|e| panic!("{data}: {e}"));
        assert!(chunk.get("error").is_none(), "{chunk}");
        if let Some(text) = chunk.pointer("/choices/0/text").and_then(Value::as_str) {
            streamed.text.push_str(text);
        }
        if let Some(reason) = chunk.pointer("/choices/0/finish_reason").and_then(Value::as_str) {
            streamed.finish_reason = Some(reason.to_string());
        }
        if let Some(usage) = chunk.get("usage") {
            streamed.usage = Some(usage.clone());
        }
        true
    })
    .expect("the stream reads");
    assert_eq!(response.status, 200, "{}", response.text());
    streamed
}

/// The 8 requests: the three reference prompts in turn, as text or as token ids, streamed or
/// not, all sent at once; each must give transformers' greedy tokens.
pub(crate) fn eight_mixed_requests_match_transformers(server: &Server, model: &str) {
    let cases = reference_cases(model);
    let tokenizer = TextTokenizer::from_file(&checkpoint(model).join("tokenizer.json")).expect("tokenizer.json loads");
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let case = cases[i % cases.len()].clone();
            let address = server.address.clone();
            let want = tokenizer.decode(&case.generated_ids).expect("the reference decodes");
            std::thread::spawn(move || {
                let prompt = if i % 4 < 2 { json!(case.prompt) } else { json!(case.prompt_ids) };
                let streamed = i % 2 == 1;
                let mut body = json!({"prompt": prompt, "max_tokens": case.generated_ids.len(), "temperature": 0});
                let (text, finish, usage) = if streamed {
                    body["stream"] = json!(true);
                    body["stream_options"] = json!({"include_usage": true});
                    let s = stream(&address, &body);
                    (s.text, s.finish_reason, s.usage.expect("a usage chunk"))
                } else {
                    let response = client::request(&address, "POST", "/v1/completions", body.to_string().as_bytes())
                        .expect("POST");
                    assert_eq!(response.status, 200, "{}", response.text());
                    let object = response.json().expect("a JSON body");
                    let text = object.pointer("/choices/0/text").and_then(Value::as_str).expect("text").to_string();
                    let finish = object.pointer("/choices/0/finish_reason").and_then(Value::as_str).map(str::to_string);
                    (text, finish, object["usage"].clone())
                };
                let label = format!("request {i} (prompt of {} tokens, stream {streamed})", case.prompt_ids.len());
                assert_eq!(text, want, "{label}");
                assert_eq!(finish.as_deref(), Some("length"), "{label}");
                assert_eq!(usage["prompt_tokens"], json!(case.prompt_ids.len()), "{label}");
                assert_eq!(usage["completion_tokens"], json!(case.generated_ids.len()), "{label}");
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a request thread passes");
    }
}

/// With a cache too small for four long sequences at once, the server queues and preempts
/// instead of failing, and still gives transformers' tokens.
#[test]
fn llama_completions_equal_transformers_with_preemption() {
    let server = Server::start("llama-tiny", &["--max-batch", "4", "--max-seq", "160", "--kv-blocks", "16"]);
    eight_mixed_requests_match_transformers(&server, "llama-tiny");
    assert!(server.metric("tessera_preemptions_total") >= 1.0, "16 blocks for 8 requests must preempt");
    assert_eq!(server.metric("tessera_kv_blocks_used"), 0.0, "every finished request returned its blocks");
    assert_eq!(server.metric("tessera_requests_finished_total{finish_reason=\"length\"}"), 8.0);
    assert_eq!(server.terminate(), 0);
}

/// `--mesh tp=2`: the one scheduler steps both ranks in lockstep, and the same 8 requests
/// with preemption forced give the same texts as one rank (transformers', the test above);
/// `/metrics` counts the whole mesh: a block once, its bytes over both ranks' key/value heads.
#[test]
fn llama_on_two_ranks_serves_the_same_completions() {
    let server =
        Server::start("llama-tiny", &["--max-batch", "4", "--max-seq", "160", "--kv-blocks", "16", "--mesh", "tp=2"]);
    eight_mixed_requests_match_transformers(&server, "llama-tiny");
    assert!(server.metric("tessera_preemptions_total") >= 1.0, "16 blocks for 8 requests must preempt");
    assert_eq!(server.metric("tessera_tp_ranks"), 2.0);
    assert!(server.metric("tessera_all_reduce_seconds_total") > 0.0, "the ranks all-reduced");
    // 2 layers x 2 key/value heads x 16 tokens x 16 dims x (key, value) x 4 bytes: one rank's
    // block with all the heads, half of them on each rank.
    assert_eq!(server.metric("tessera_kv_block_bytes"), 8192.0);
    assert_eq!((server.metric("tessera_kv_blocks_used"), server.metric("tessera_kv_blocks_free")), (0.0, 16.0));
    assert_eq!(server.terminate(), 0);
}

/// The KV bound of issue 18 from `/metrics`: bytes in use at most the live tokens' bytes plus
/// one block per sequence; and no more running sequences than the batch holds.
fn assert_kv_bound(metrics: &str, max_batch: f64) -> f64 {
    let value = |name: &str| sample(metrics, name).unwrap_or_else(|| panic!("no {name}"));
    let in_use = value("tessera_kv_bytes_in_use");
    let bound = value("tessera_kv_live_token_bytes") + value("tessera_kv_sequences") * value("tessera_kv_block_bytes");
    assert!(in_use <= bound, "KV bytes in use {in_use} > live tokens' bytes + one block per sequence {bound}");
    assert!(value("tessera_requests_running") <= max_batch);
    value("tessera_kv_sequences")
}

/// 64 streaming requests at once all finish with the reference text, while `/metrics` shows
/// the KV bound holding.
fn sixty_four_streams_complete(server: &Server) {
    let cases = reference_cases("gpt2-tiny");
    let tokenizer =
        TextTokenizer::from_file(&checkpoint("gpt2-tiny").join("tokenizer.json")).expect("tokenizer.json loads");
    let new_tokens = 12;
    let threads: Vec<_> = (0..64)
        .map(|i| {
            let case = cases[i % cases.len()].clone();
            let want = tokenizer.decode(&case.generated_ids[..new_tokens]).expect("the reference decodes");
            let address = server.address.clone();
            std::thread::spawn(move || {
                let body = json!({"prompt": case.prompt, "max_tokens": new_tokens, "temperature": 0, "stream": true});
                let streamed = stream(&address, &body);
                assert_eq!(streamed.text, want, "stream {i}");
                assert_eq!(streamed.finish_reason.as_deref(), Some("length"));
            })
        })
        .collect();
    let mut busiest = 0.0f64;
    while !threads.iter().all(|t| t.is_finished()) {
        busiest = busiest.max(assert_kv_bound(&server.metrics(), 8.0));
        std::thread::sleep(Duration::from_millis(5));
    }
    for t in threads {
        t.join().expect("a stream passes");
    }
    assert!(busiest >= 2.0, "the KV bound was checked with several sequences live (at most {busiest} seen)");
    assert_eq!(server.metric("tessera_kv_blocks_used"), 0.0);
    assert!(server.metric("tessera_time_to_first_token_seconds_count") >= 64.0);
}

/// Every malformed request gets its 4xx with OpenAI's error object, and the server goes on.
fn bad_requests_are_refused(server: &Server) {
    let raw: [(&[u8], &str); 3] = [
        (b"{\"prompt\": \"unclosed", "malformed JSON"),
        (b"{\"prompt\":\"\xff\xfe\"}", "invalid UTF-8"),
        (b"[1,2]", "not an object"),
    ];
    let mut cases: Vec<(Vec<u8>, String, Option<&str>)> =
        raw.iter().map(|(body, what)| (body.to_vec(), what.to_string(), None)).collect();
    let long_prompt = vec![1; 300];
    let typed = [
        (json!({"prompt": "hi", "max_tokens": "ten"}), "max_tokens of the wrong type", Some("max_tokens")),
        (json!({"prompt": "hi", "max_tokens": -3}), "negative max_tokens", Some("max_tokens")),
        (json!({"prompt": "hi", "max_tokens": 1_000_000_000u64}), "huge max_tokens", Some("max_tokens")),
        (json!({"prompt": long_prompt, "max_tokens": 1}), "a prompt longer than the context", Some("prompt")),
        (json!({"prompt": "", "max_tokens": 1}), "an empty prompt", Some("prompt")),
        (json!({"prompt": [], "max_tokens": 1}), "an empty token prompt", Some("prompt")),
        (json!({"prompt": [5, 100000], "max_tokens": 1}), "an unknown token id", Some("prompt")),
        (json!({"prompt": "hi", "temperature": "warm"}), "temperature of the wrong type", Some("temperature")),
        (json!({"prompt": "hi", "stream": 1}), "stream of the wrong type", Some("stream")),
        (json!({"prompt": 42}), "a prompt of the wrong type", Some("prompt")),
    ];
    cases.extend(typed.into_iter().map(|(body, what, param)| (body.to_string().into_bytes(), what.to_string(), param)));
    for (body, what, param) in &cases {
        let response = client::request(&server.address, "POST", "/v1/completions", body).expect("POST");
        assert_eq!(response.status, 400, "{what}: {}", response.text());
        let error = response.json().unwrap_or_else(|e| panic!("{what}: {e}: {}", response.text()))["error"].clone();
        for field in ["message", "type", "param", "code"] {
            assert!(error.get(field).is_some(), "{what}: no {field} in {error}");
        }
        assert_eq!(error["type"], json!("invalid_request_error"), "{what}");
        if let Some(param) = param {
            assert_eq!(error["param"], json!(param), "{what}: {error}");
        }
    }
    let missing = client::request(&server.address, "GET", "/v1/nothing", b"").expect("GET");
    assert_eq!(missing.status, 404);
    assert!(missing.json().expect("a JSON body")["error"]["message"].is_string());
    let health = client::request(&server.address, "GET", "/health", b"").expect("GET /health");
    assert_eq!(health.status, 200);
    let after = server.post(&json!({"prompt": "still serving", "max_tokens": 3, "temperature": 0}));
    assert_eq!(after.status, 200, "{}", after.text());
}

/// A stop string ends the completion before it (finish reason `stop`), streamed or not, and
/// a seed reproduces a sampled completion.
fn stop_strings_and_seeds(server: &Server) {
    let case = &reference_cases("gpt2-tiny")[1];
    let tokenizer =
        TextTokenizer::from_file(&checkpoint("gpt2-tiny").join("tokenizer.json")).expect("tokenizer.json loads");
    let full = tokenizer.decode(&case.generated_ids).expect("the reference decodes");
    let chars: Vec<char> = full.chars().collect();
    let stop: String = chars[chars.len() / 2..chars.len() / 2 + 2].iter().collect();
    let want = &full[..full.find(&stop).expect("the stop string is in the text")];
    let body = json!({"prompt": case.prompt, "max_tokens": case.generated_ids.len(), "temperature": 0, "stop": [stop]});
    let object = server.post(&body).json().expect("a JSON body");
    assert_eq!(object.pointer("/choices/0/text"), Some(&json!(want)), "{object}");
    assert_eq!(object.pointer("/choices/0/finish_reason"), Some(&json!("stop")));
    let mut streamed_body = body.clone();
    streamed_body["stream"] = json!(true);
    let streamed = stream(&server.address, &streamed_body);
    assert_eq!((streamed.text.as_str(), streamed.finish_reason.as_deref()), (want, Some("stop")));
    let sampled = |seed: u64| {
        let body = json!({"prompt": case.prompt, "max_tokens": 20, "temperature": 1.0, "top_p": 0.9, "seed": seed});
        server.post(&body).json().expect("a JSON body")["choices"][0]["text"].clone()
    };
    assert_eq!(sampled(11), sampled(11), "the same seed gives the same completion");
    assert_ne!(sampled(11), sampled(12), "another seed another completion (20 tokens from a random model)");
}

/// A client that hangs up mid-stream has its sequence dropped and its blocks freed.
fn hang_up_frees_the_blocks(server: &Server) {
    let aborted_before = server.metric("tessera_requests_aborted_total");
    let mut chunks = 0;
    let body = json!({"prompt": "a long story", "max_tokens": 240, "temperature": 0, "stream": true});
    let response = client::stream_events(&server.address, "/v1/completions", body.to_string().as_bytes(), &mut |_| {
        chunks += 1;
        chunks < 3
    })
    .expect("the stream starts");
    assert_eq!((response.status, chunks), (200, 3), "{}", response.text());
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.metric("tessera_requests_aborted_total") <= aborted_before {
        assert!(Instant::now() < deadline, "the cancelled request was never dropped");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(server.metric("tessera_kv_blocks_used"), 0.0);
    assert_eq!(server.metric("tessera_requests_running"), 0.0);
}

fn bench_serve_reports(server: &Server) {
    let out = tessera(
        &repo_root(),
        &[
            "bench",
            "serve",
            "--url",
            &format!("http://{}", server.address),
            "--requests",
            "8",
            "--rate",
            "100",
            "--input-len",
            "6",
            "--output-len",
            "5",
            "--concurrency",
            "4",
            "--format",
            "json",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let report: Value = serde_json::from_str(out.stdout.trim()).expect("one JSON object");
    assert_eq!((report["completed"].clone(), report["failed"].clone()), (json!(8), json!(0)), "{report}");
    assert_eq!(report["total_output_tokens"], json!(40));
    assert_eq!(report["total_input_tokens"], json!(48));
    for field in
        ["output_throughput", "request_throughput", "mean_ttft_ms", "p99_ttft_ms", "median_itl_ms", "p99_itl_ms"]
    {
        assert!(report[field].as_f64().is_some_and(|x| x > 0.0), "{field} in {report}");
    }
}

/// One GPT-2 server through all of the above, then SIGTERM with a request in flight: the
/// request finishes and the server exits 0.
#[test]
fn gpt2_server_serves_streams_refuses_and_shuts_down() {
    let server = Server::start("gpt2-tiny", &["--max-batch", "8", "--max-seq", "256"]);
    // Programs for 1, 2, 4 and 8 rows, one copy of the weights (f32) between them.
    let config = tessera::serve::open_model(checkpoint("gpt2-tiny").to_str().expect("a UTF-8 path"), 0)
        .expect("the checkpoint opens")
        .config;
    assert_eq!(server.metric("tessera_weight_bytes"), (config.parameter_count() * 4) as f64);
    eight_mixed_requests_match_transformers(&server, "gpt2-tiny");
    sixty_four_streams_complete(&server);
    bad_requests_are_refused(&server);
    stop_strings_and_seeds(&server);
    hang_up_frees_the_blocks(&server);
    bench_serve_reports(&server);
    let address = server.address.clone();
    let in_flight = std::thread::spawn(move || {
        stream(&address, &json!({"prompt": "last words", "max_tokens": 40, "temperature": 0, "stream": true}))
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.metric("tessera_requests_running") < 1.0 {
        assert!(Instant::now() < deadline, "the last request never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(server.terminate(), 0);
    let last = in_flight.join().expect("the in-flight request's thread");
    assert_eq!(last.finish_reason.as_deref(), Some("length"), "the in-flight request finished");
}

/// A directory `tessera compile --serve --mesh tp=2` wrote serves on its own (programs and
/// rank shards, no checkpoint): the 8 mixed requests get transformers' tokens, on two ranks.
#[test]
fn a_compiled_two_rank_directory_serves_the_same_completions() {
    let work = tempfile::tempdir().expect("a temporary directory");
    let dir = work.path().join("llama-tp2");
    let source = checkpoint("llama-tiny");
    let out = tessera(
        &repo_root(),
        &["compile", source.to_str().expect("a UTF-8 path"), "--serve", "--mesh", "tp=2", "--max-batch", "4"]
            .iter()
            .chain(&["--max-seq", "160", "-o", dir.to_str().expect("a UTF-8 path")])
            .copied()
            .collect::<Vec<_>>(),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let server = Server::start_path(&dir, &["--kv-blocks", "16"], &[]);
    eight_mixed_requests_match_transformers(&server, "llama-tiny");
    assert_eq!(server.metric("tessera_tp_ranks"), 2.0);
    assert!(server.metric("tessera_all_reduce_seconds_total") > 0.0, "the ranks all-reduced");
    assert_eq!(server.terminate(), 0);
}

/// Tensor-parallel failures through the socket (the debug-build hook `TESSERA_SERVE_FAULT`):
/// rank 1 failing a step fails that request with an OpenAI-style 500 naming the rank, and the
/// server serves on (transformers' tokens for the next requests, exit 0 on SIGTERM); rank 1
/// panicking fails the request in flight with a 503 naming it, and the server exits 1 at
/// once (not after the 300 s receive deadline) so that a supervisor restarts it.
#[test]
fn a_failing_rank_fails_its_request_and_a_panicking_rank_stops_the_server() {
    let case = reference_cases("llama-tiny")[1].clone();
    let body = json!({"prompt": case.prompt_ids, "max_tokens": case.generated_ids.len(), "temperature": 0});
    let flags = ["--max-batch", "1", "--mesh", "tp=2"];
    let error_of = |response: &client::HttpResponse| {
        let object = response.json().expect("a JSON error body");
        assert_eq!(object["error"]["type"], "server_error", "{object}");
        object["error"]["message"].as_str().expect("a message").to_string()
    };

    let server = Server::start_with_env("llama-tiny", &flags, &[(tessera::fault::SERVE_ENV, "1:2:error")]);
    let failed = server.post(&body);
    assert_eq!(failed.status, 500, "{}", failed.text());
    let message = error_of(&failed);
    assert!(message.contains("tensor-parallel rank 1 failed the step: "), "{message}");
    eight_mixed_requests_match_transformers(&server, "llama-tiny");
    assert_eq!(server.terminate(), 0);

    let mut server = Server::start_with_env("llama-tiny", &flags, &[(tessera::fault::SERVE_ENV, "1:2:panic")]);
    let started = Instant::now();
    let failed = server.post(&body);
    assert_eq!(failed.status, 503, "{}", failed.text());
    let message = error_of(&failed);
    assert!(message.contains("tensor-parallel rank 1 panicked: injected failure"), "{message}");
    assert!(message.contains("the server is exiting"), "{message}");
    assert_eq!(server.wait_exit(Duration::from_secs(30), "after losing a rank"), 1);
    assert!(started.elapsed() < Duration::from_secs(30), "{:?}", started.elapsed());
    let stderr = server.stderr_text();
    assert!(stderr.contains("the server stopped; restart it"), "{stderr}");
}

/// Start-up failures are clear errors with a non-zero exit.
#[test]
fn serve_refuses_a_taken_port_and_a_missing_model() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let port = taken.local_addr().expect("its address").port().to_string();
    let model = checkpoint("gpt2-tiny");
    let out = tessera(&repo_root(), &["serve", model.to_str().expect("a UTF-8 path"), "--port", &port]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("cannot listen on 127.0.0.1:"), "{}", out.stderr);
    let out = tessera(&repo_root(), &["serve", "/nonexistent/checkpoint", "--port", "0"]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.starts_with("error: "), "{}", out.stderr);
}
