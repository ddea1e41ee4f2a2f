//! The HTTP front end (axum on a small tokio runtime): routes, the completion handler (a JSON
//! object or server-sent events), and the process's life: bind, wait for the engine, print
//! the address, serve until SIGTERM or SIGINT, drain, exit.

use super::api::{self, ApiError, CompletionHeader, TextChunkParts};
use super::metrics::Metrics;
use super::scheduler::{self, Event, Message, SchedulerConfig, Submission};
use anyhow::{anyhow, bail, Context, Result};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::convert::Infallible;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc::UnboundedReceiver;

/// What `tessera serve` was asked to do.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// A checkpoint directory or zoo spec, also the `model` the responses name.
    pub model: String,
    /// Seed of a zoo model's weights.
    pub seed: u64,
    pub host: String,
    pub port: u16,
    pub scheduler: SchedulerConfig,
    /// How long in-flight requests may run on after SIGTERM before they are aborted.
    pub shutdown_grace: Duration,
}

struct AppState {
    model: String,
    submit: std::sync::mpsc::Sender<Message>,
    metrics: Arc<Mutex<Metrics>>,
    next_id: AtomicU64,
}

/// Runs the server until a signal ends it; an error before serving (the address is taken,
/// the model does not load) ends it non-zero. With `world`, this process is rank 0 of a job
/// of tensor-parallel processes (`tessera_runtime::serve::process`): its engine leads the
/// others.
pub fn serve(options: ServerOptions, world: Option<Arc<dyn tessera_runtime::spmd::Communicator>>) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let address = format!("{}:{}", options.host, options.port);
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(&address))
        .with_context(|| format!("cannot listen on {address}"))?;
    let metrics = Arc::new(Mutex::new(Metrics::default()));
    let (submit, messages) = std::sync::mpsc::channel();
    let (ready_sender, ready) = std::sync::mpsc::channel();
    // The scheduler says here that its engine is lost, which stops the server.
    let (lost_sender, lost) = tokio::sync::oneshot::channel::<String>();
    let scheduler_thread = {
        let (model, seed, config, metrics) = (options.model.clone(), options.seed, options.scheduler, metrics.clone());
        std::thread::Builder::new()
            .name("tessera-scheduler".into())
            .spawn(move || {
                let lost = scheduler::run(&model, seed, config, metrics, messages, ready_sender, world);
                if let Some(reason) = &lost {
                    let _ = lost_sender.send(reason.clone());
                }
                lost
            })
            .context("starting the scheduler thread")?
    };
    let ready = match ready.recv() {
        Ok(Ok(ready)) => ready,
        Ok(Err(message)) => bail!("{}: {message}", options.model),
        Err(_) => bail!("the scheduler thread ended before the engine was ready"),
    };
    let local = listener.local_addr().context("the listening address")?;
    println!("tessera serve: listening on http://{local}");
    std::io::stdout().flush().context("writing to stdout")?;
    let c = options.scheduler;
    eprintln!(
        "{}: max batch {}, context {} tokens, {} KV blocks of {} tokens ({}); compiled and bound in {:.2} s",
        options.model,
        c.max_batch,
        c.max_seq,
        ready.kv_blocks,
        c.kv_block,
        c.kv_dtype.name(),
        ready.setup.as_secs_f64()
    );
    let drain = submit.clone();
    let state = Arc::new(AppState { model: options.model.clone(), submit, metrics, next_id: AtomicU64::new(0) });
    let app = Router::new()
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .route("/metrics", get(metrics_text))
        .fallback(not_found)
        .with_state(state);
    let grace = options.shutdown_grace;
    runtime
        .block_on(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let engine_lost = async {
                        match lost.await {
                            Ok(reason) => reason,
                            // The scheduler ended without losing its engine: only a signal stops.
                            Err(_) => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        signal = shutdown_signal() => {
                            eprintln!(
                                "{signal}: finishing in-flight requests (at most {:.0} s), accepting no more",
                                grace.as_secs_f64()
                            );
                            let _ = drain.send(Message::Drain { deadline: Instant::now() + grace });
                        }
                        reason = engine_lost => eprintln!("tessera serve: stopping: {reason}"),
                    }
                })
                .await
        })
        .context("serving")?;
    // Every sender is gone with the router: the scheduler finishes and returns.
    let lost = scheduler_thread.join().map_err(|_| anyhow!("the scheduler thread panicked"))?;
    if let Some(reason) = lost {
        bail!("{reason}: the server stopped; restart it (a supervisor restarting on a non-zero exit does)");
    }
    eprintln!("tessera serve: stopped");
    Ok(())
}

/// Waits for SIGTERM or SIGINT; returns its name.
async fn shutdown_signal() -> &'static str {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = terminate => "SIGTERM",
        _ = tokio::signal::ctrl_c() => "SIGINT",
    }
}

fn error_response(error: &ApiError) -> Response {
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(error.body())).into_response()
}

async fn not_found() -> Response {
    error_response(&ApiError {
        status: 404,
        message: "no such route; this server has POST /v1/completions, GET /v1/models, /health and /metrics".into(),
        kind: "invalid_request_error",
        param: None,
        code: Some("not_found"),
    })
}

async fn health() -> Response {
    Json(serde_json::json!({"status": "ok"})).into_response()
}

async fn models(State(state): State<Arc<AppState>>) -> Response {
    Json(serde_json::json!({
        "object": "list",
        "data": [{"id": state.model, "object": "model", "created": 0, "owned_by": "tessera"}],
    }))
    .into_response()
}

async fn metrics_text(State(state): State<Arc<AppState>>) -> Response {
    let text = state.metrics.lock().unwrap_or_else(PoisonError::into_inner).render();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn completions(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let params = match api::parse_completion(&body) {
        Ok(params) => params,
        Err(e) => return error_response(&e),
    };
    let (stream, stream_usage) = (params.stream, params.stream_usage);
    let (events, mut received) = tokio::sync::mpsc::unbounded_channel();
    let submission = Submission { params, events, arrived: Instant::now() };
    if state.submit.send(Message::Submit(submission)).is_err() {
        return error_response(&ApiError::server(503, "the server is shutting down"));
    }
    match received.recv().await {
        Some(Event::Accepted { .. }) => {}
        Some(Event::Failed(e)) => return error_response(&e),
        _ => return error_response(&ApiError::server(500, "the scheduler dropped the request")),
    }
    let id = format!("cmpl-{}", state.next_id.fetch_add(1, Ordering::Relaxed));
    let created = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let completion = Completion { id, created, model: state.model.clone(), stream_usage };
    if stream {
        completion.stream(received)
    } else {
        completion.collect(received).await
    }
}

/// A completion being answered.
struct Completion {
    id: String,
    created: u64,
    model: String,
    stream_usage: bool,
}

impl Completion {
    fn header(&self) -> CompletionHeader<'_> {
        CompletionHeader { id: &self.id, created: self.created, model: &self.model }
    }

    /// The whole completion as one JSON object.
    async fn collect(self, mut received: UnboundedReceiver<Event>) -> Response {
        let mut text = String::new();
        while let Some(event) = received.recv().await {
            match event {
                Event::Text(piece) => text.push_str(&piece),
                Event::Finished { reason, usage } => {
                    return Json(self.header().object(&text, Some(reason), Some(usage))).into_response()
                }
                Event::Failed(e) => return error_response(&e),
                Event::Accepted { .. } => {}
            }
        }
        error_response(&ApiError::server(500, "the scheduler dropped the request"))
    }

    /// Server-sent events: a chunk per piece of text, a last chunk with the finish reason,
    /// the usage chunk if asked for, then `data: [DONE]`. Whatever events are queued when the
    /// body is polled go out together in one HTTP chunk (one write), and a text chunk is
    /// precomposed JSON around the escaped text, so a token costs little beside its wake-up.
    fn stream(self, received: UnboundedReceiver<Event>) -> Response {
        let parts = self.header().text_chunk_parts();
        let state = (received, self, parts, false);
        let body = futures_util::stream::unfold(state, |(mut received, completion, parts, ended)| async move {
            if ended {
                return None;
            }
            let mut out = String::new();
            let mut event = received.recv().await;
            let mut ended = false;
            loop {
                ended |= completion.write_event(event, &parts, &mut out);
                if ended {
                    break;
                }
                match received.try_recv() {
                    Ok(next) => event = Some(next),
                    Err(_) => break,
                }
            }
            Some((Ok::<_, Infallible>(Bytes::from(out)), (received, completion, parts, ended)))
        });
        let headers = [(header::CONTENT_TYPE, "text/event-stream"), (header::CACHE_CONTROL, "no-cache")];
        (headers, Body::from_stream(body)).into_response()
    }

    /// Appends the server-sent events of `event` (None: the scheduler went away) to `out`;
    /// true when the stream ends with it.
    fn write_event(&self, event: Option<Event>, parts: &TextChunkParts, out: &mut String) -> bool {
        let mut data = |json: &str| {
            out.push_str("data: ");
            out.push_str(json);
            out.push_str("\n\n");
        };
        match event {
            Some(Event::Text(piece)) => {
                out.push_str("data: ");
                parts.write(&piece, out);
                out.push_str("\n\n");
                false
            }
            Some(Event::Finished { reason, usage }) => {
                data(&self.header().object("", Some(reason), None).to_string());
                if self.stream_usage {
                    data(&self.header().usage_chunk(usage).to_string());
                }
                data("[DONE]");
                true
            }
            Some(Event::Failed(e)) => {
                data(&e.body().to_string());
                data("[DONE]");
                true
            }
            Some(Event::Accepted { .. }) => false,
            None => true,
        }
    }
}
