//! Iteration-level scheduling (continuous batching, as in Orca and vLLM) on the one thread
//! that owns the [`Engine`] (its CPU executors are not `Send`). Requests arrive over a
//! channel; each iteration
//! 1. drops requests whose client went away (their blocks return to the free list),
//! 2. admits waiting requests, oldest first, while the batch has room and the free blocks
//!    cover their tokens beside what the running sequences still need,
//! 3. plans one engine step: one decode token for every sequence that has its whole context
//!    cached, then prefill chunks of the others within the step's token budget (chunked
//!    prefill, so a long prompt never stalls the decodes for more than one step),
//! 4. when the step needs more blocks than are free, preempts the newest running sequence by
//!    recompute (its blocks are freed; it waits again with its generated tokens, and is
//!    prefilled anew when readmitted, continuing where it stopped),
//! 5. runs the step, samples each finished item's next token, streams its text (holding back
//!    what could still become a stop string) and finishes it on end-of-sequence, a stop
//!    string or `max_tokens`.
//!
//! A failed step (a program error, on any tensor-parallel rank) leaves the engine as it was
//! before it; its requests get a 500 naming the rank and the others go on. A lost engine (a
//! tensor-parallel rank panicked or is gone: `ServeError::is_fatal`) can run nothing more:
//! every request gets a 503 saying so and [`run`] returns the reason, on which the server
//! stops and exits 1 (a supervisor restarts it). On [`Message::Drain`] the scheduler refuses new requests,
//! finishes the ones it has, and after the deadline aborts what is left.

use super::api::{ApiError, CompletionParams, FinishReason, Prompt, Usage};
use super::metrics::Metrics;
use crate::serve::{build_serving_engine, open_model, row_buckets, ServedModel};
use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tessera_ir::serving::{KvDtype, ServeShape};
use tessera_runtime::serve::engine::{SeqId, ServingEngine};
use tessera_runtime::serve::process::LeaderEngine;
use tessera_runtime::serve::sampling::Sampler;
use tessera_runtime::serve::tokenizer::StreamDecoder;
use tessera_runtime::serve::ServeError;
use tessera_runtime::spmd::Communicator;
use tokio::sync::mpsc::UnboundedSender;

/// The server's limits, from the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Sequences in one decode step at most (the programs' rows).
    pub max_batch: u64,
    /// Tokens a sequence holds at most (prompt and completion).
    pub max_seq: u64,
    /// Tokens per KV-cache block.
    pub kv_block: u64,
    /// What the KV cache stores keys and values in.
    pub kv_dtype: KvDtype,
    /// Blocks in the KV cache.
    pub kv_blocks: u64,
    /// Tokens one step runs at most (decodes first, prefill chunks in what is left).
    pub step_tokens: usize,
    /// Tensor-parallel ranks (`--mesh tp=N`), stepped in lockstep by this one scheduler.
    pub tp: u64,
}

/// What the front end tells a request's handler.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The request passed the model's checks and is queued.
    Accepted {
        prompt_tokens: usize,
    },
    /// Final text, in order.
    Text(String),
    Finished {
        reason: FinishReason,
        usage: Usage,
    },
    /// Refused or aborted: no more events follow.
    Failed(ApiError),
}

/// A request as the front end hands it over.
pub struct Submission {
    pub params: CompletionParams,
    pub events: UnboundedSender<Event>,
    pub arrived: Instant,
}

/// What reaches the scheduler thread.
pub enum Message {
    Submit(Submission),
    /// Shutting down: refuse new requests, finish the others until `deadline`, then abort them.
    Drain {
        deadline: Instant,
    },
}

/// What the front end learns once the engine is ready.
#[derive(Debug, Clone)]
pub struct Ready {
    pub kv_blocks: usize,
    pub setup: Duration,
}

/// One request through its life: waiting, running (with a sequence), finished.
struct Request {
    /// Arrival order: the newest running request is preempted first.
    order: u64,
    events: UnboundedSender<Event>,
    arrived: Instant,
    prompt_len: usize,
    /// The prompt and the tokens generated so far.
    tokens: Vec<u32>,
    max_tokens: usize,
    stop: Vec<String>,
    sampler: Sampler,
    decoder: StreamDecoder,
    text: String,
    /// Bytes of `text` sent to the client.
    emitted: usize,
    /// The engine sequence while running.
    seq: Option<SeqId>,
    /// Tokens of `tokens` whose keys and values the sequence holds.
    cached: usize,
    last_token_at: Option<Instant>,
    done: bool,
}

impl Request {
    fn generated(&self) -> usize {
        self.tokens.len() - self.prompt_len
    }

    fn usage(&self) -> Usage {
        Usage { prompt_tokens: self.prompt_len, completion_tokens: self.generated() }
    }
}

/// The scheduler's state; see the module doc.
pub struct Scheduler {
    engine: Box<dyn ServingEngine>,
    model: ServedModel,
    config: SchedulerConfig,
    waiting: VecDeque<Request>,
    running: Vec<Request>,
    metrics: Arc<Mutex<Metrics>>,
    next_order: u64,
    draining: Option<Instant>,
    /// This iteration's tokens as `(first of its request, latency)`, written into the metrics
    /// under one lock at the end of the iteration (not one lock per token).
    latencies: Vec<(bool, f64)>,
    /// Why the engine can run nothing more, once it cannot.
    lost: Option<String>,
}

/// Opens `model`, builds its engine (rank 0's of a job of processes joined by `world`, if
/// given: a [`LeaderEngine`]) and runs the scheduler on the calling thread until
/// `messages` closes or the engine is lost; `ready` learns first whether the engine could be
/// built. Returns why the engine was lost, if it was.
pub fn run(
    model: &str,
    seed: u64,
    config: SchedulerConfig,
    metrics: Arc<Mutex<Metrics>>,
    messages: Receiver<Message>,
    ready: std::sync::mpsc::Sender<Result<Ready, String>>,
    world: Option<Arc<dyn Communicator>>,
) -> Option<String> {
    let built = open_model(model, seed).and_then(|model| {
        let shape = ServeShape {
            kv_dtype: config.kv_dtype,
            ..ServeShape::new(config.max_batch, config.max_seq, config.kv_block)
        };
        if let Some(world) = world {
            // Rank 0 of a job of processes: the others follow its commands.
            let started = std::time::Instant::now();
            let engine = crate::serve::compiled::build_process_rank(&model, config.kv_blocks, world.clone())?;
            let engine: Box<dyn ServingEngine> = Box::new(LeaderEngine::new(engine, world));
            return Ok((model, engine, started.elapsed()));
        }
        let (engine, setup) =
            build_serving_engine(&model, shape, config.kv_blocks, &row_buckets(config.max_batch), config.tp)?;
        Ok((model, engine, setup))
    });
    let (model, engine, setup) = match built {
        Ok(built) => built,
        Err(e) => {
            let _ = ready.send(Err(tessera_rt::error_line(e.as_ref())));
            return None;
        }
    };
    let kv = engine.kv_usage();
    {
        let mut m = metrics.lock().unwrap_or_else(PoisonError::into_inner);
        m.kv = Some(kv);
        m.kv_block_tokens = config.kv_block as usize;
        m.weight_bytes = engine.weight_bytes() as u64;
        m.tp_ranks = config.tp;
    }
    if ready.send(Ok(Ready { kv_blocks: kv.blocks_total, setup })).is_err() {
        return None;
    }
    let mut scheduler = Scheduler {
        engine,
        model,
        config,
        waiting: VecDeque::new(),
        running: Vec::new(),
        metrics,
        next_order: 0,
        draining: None,
        latencies: Vec::new(),
        lost: None,
    };
    scheduler.serve(&messages);
    scheduler.lost
}

impl Scheduler {
    fn serve(&mut self, messages: &Receiver<Message>) {
        loop {
            if self.running.is_empty() && self.waiting.is_empty() {
                match messages.recv_timeout(Duration::from_millis(50)) {
                    Ok(message) => self.receive(message),
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
            loop {
                match messages.try_recv() {
                    Ok(message) => self.receive(message),
                    Err(std::sync::mpsc::TryRecvError::Empty) => break,
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                        self.abort_all("the server stopped");
                        return;
                    }
                }
            }
            if self.draining.is_some_and(|deadline| Instant::now() >= deadline) {
                self.abort_all("the server shut down before the request finished");
            }
            self.iterate();
            if self.lost.is_some() {
                return;
            }
        }
    }

    fn receive(&mut self, message: Message) {
        match message {
            Message::Drain { deadline } => self.draining = Some(deadline),
            Message::Submit(submission) => {
                if self.draining.is_some() {
                    let _ = submission.events.send(Event::Failed(ApiError::server(503, "the server is shutting down")));
                    return;
                }
                match self.admit_checks(&submission.params) {
                    Ok(prompt_ids) => self.enqueue(submission, prompt_ids),
                    Err(e) => {
                        let _ = submission.events.send(Event::Failed(e));
                    }
                }
            }
        }
    }

    /// Tokenizes the prompt and checks what needs the model: token ids, the context, the
    /// cache's capacity.
    fn admit_checks(&self, params: &CompletionParams) -> Result<Vec<u32>, ApiError> {
        let prompt = Some("prompt");
        let ids = match &params.prompt {
            Prompt::Text(text) => self
                .model
                .tokenizer
                .encode(text)
                .map_err(|e| ApiError::invalid(prompt, format!("the prompt does not tokenize: {e}")))?,
            Prompt::Ids(ids) => ids.clone(),
        };
        if ids.is_empty() {
            return Err(ApiError::invalid(prompt, "the prompt has no tokens"));
        }
        let vocab = self.model.config.vocab;
        if let Some(id) = ids.iter().find(|&&id| u64::from(id) >= vocab) {
            return Err(ApiError::invalid(prompt, format!("token id {id} is outside the vocabulary of {vocab}")));
        }
        let context = self.config.max_seq as usize;
        let total = ids.len().saturating_add(params.max_tokens);
        if total > context {
            let message = format!(
                "this server's context is {context} tokens; the request asks for {total} ({} in the prompt, {} in the completion)",
                ids.len(),
                params.max_tokens
            );
            let param = if ids.len() >= context { "prompt" } else { "max_tokens" };
            return Err(ApiError::invalid(Some(param), message).with_code("context_length_exceeded"));
        }
        let blocks = total.div_ceil(self.config.kv_block as usize);
        let capacity = self.engine.kv_usage().blocks_total;
        if blocks > capacity {
            let message =
                format!("the request needs {blocks} KV-cache blocks; the server has {capacity} (--kv-blocks)");
            return Err(ApiError::invalid(Some("max_tokens"), message).with_code("context_length_exceeded"));
        }
        Ok(ids)
    }

    fn enqueue(&mut self, submission: Submission, prompt_ids: Vec<u32>) {
        let params = submission.params;
        if submission.events.send(Event::Accepted { prompt_tokens: prompt_ids.len() }).is_err() {
            return;
        }
        self.lock_metrics().prompt_tokens += prompt_ids.len() as u64;
        self.waiting.push_back(Request {
            order: self.next_order,
            events: submission.events,
            arrived: submission.arrived,
            prompt_len: prompt_ids.len(),
            tokens: prompt_ids,
            max_tokens: params.max_tokens,
            stop: params.stop,
            sampler: Sampler::new(params.sampling),
            decoder: StreamDecoder::default(),
            text: String::new(),
            emitted: 0,
            seq: None,
            cached: 0,
            last_token_at: None,
            done: false,
        });
        self.next_order += 1;
    }

    fn lock_metrics(&self) -> std::sync::MutexGuard<'_, Metrics> {
        self.metrics.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One iteration: see the module doc.
    fn iterate(&mut self) {
        self.drop_cancelled();
        self.admit();
        let work = self.plan_step();
        if !work.is_empty() {
            let items: Vec<(SeqId, &[u32])> = work
                .iter()
                .map(|&(i, n)| {
                    let r = &self.running[i];
                    (r.seq.unwrap_or(SeqId::MAX), &r.tokens[r.cached..r.cached + n])
                })
                .collect();
            match self.engine.step(&items) {
                Ok(logits) => self.advance(&work, &logits),
                Err(e) if e.is_fatal() => {
                    let message = format!("the engine step failed: {e}; the server is exiting");
                    eprintln!("tessera serve: {message}");
                    self.abort_all(&message);
                    self.lost = Some(e.to_string());
                    return;
                }
                Err(e) => self.fail_step(&work, &e),
            }
            self.retire_finished();
        }
        self.publish();
    }

    fn drop_cancelled(&mut self) {
        let before = self.waiting.len() + self.running.len();
        self.waiting.retain(|r| !r.events.is_closed());
        for r in self.running.iter_mut().filter(|r| r.events.is_closed()) {
            r.done = true;
        }
        self.retire_finished();
        let dropped = before - self.waiting.len() - self.running.len();
        self.lock_metrics().aborted += dropped as u64;
    }

    /// Blocks `tokens` tokens fill.
    fn blocks_for(&self, tokens: usize) -> usize {
        tokens.div_ceil(self.config.kv_block as usize)
    }

    fn admit(&mut self) {
        let free = self.engine.kv_usage().blocks_total - self.engine.kv_usage().blocks_used;
        // Blocks the running sequences still need to cache the tokens they know.
        let mut committed: usize =
            self.running.iter().map(|r| self.blocks_for(r.tokens.len() + 1) - self.blocks_for(r.cached)).sum();
        while (self.running.len() as u64) < self.config.max_batch {
            let Some(front) = self.waiting.front() else { break };
            let needed = self.blocks_for(front.tokens.len() + 1);
            if committed + needed > free {
                break;
            }
            committed += needed;
            let Some(mut request) = self.waiting.pop_front() else { break };
            request.seq = Some(self.engine.add_sequence());
            request.cached = 0;
            self.running.push(request);
        }
    }

    /// The step's items `(running index, tokens)`, after preempting what the free blocks
    /// cannot hold.
    fn plan_step(&mut self) -> Vec<(usize, usize)> {
        loop {
            let mut work = Vec::new();
            let mut budget = self.config.step_tokens;
            for (i, r) in self.running.iter().enumerate() {
                if r.tokens.len() - r.cached == 1 {
                    work.push((i, 1));
                    budget = budget.saturating_sub(1);
                }
            }
            for (i, r) in self.running.iter().enumerate() {
                let uncached = r.tokens.len() - r.cached;
                if uncached > 1 && budget > 0 {
                    let n = uncached.min(budget);
                    work.push((i, n));
                    budget -= n;
                }
            }
            let needed: usize = work
                .iter()
                .map(|&(i, n)| {
                    let r = &self.running[i];
                    self.blocks_for(r.cached + n) - self.blocks_for(r.cached)
                })
                .sum();
            let usage = self.engine.kv_usage();
            if needed <= usage.blocks_total - usage.blocks_used || self.running.len() <= 1 {
                return work;
            }
            self.preempt_newest();
        }
    }

    /// Frees the newest running sequence's blocks and queues it again, in arrival order.
    fn preempt_newest(&mut self) {
        let Some(newest) = (0..self.running.len()).max_by_key(|&i| self.running[i].order) else { return };
        let mut request = self.running.swap_remove(newest);
        if let Some(seq) = request.seq.take() {
            self.engine.release(seq);
        }
        request.cached = 0;
        let at = self.waiting.iter().position(|w| w.order > request.order).unwrap_or(self.waiting.len());
        self.waiting.insert(at, request);
        self.lock_metrics().preemptions += 1;
    }

    /// After a successful step: the items whose context is now all cached get their next token.
    fn advance(&mut self, work: &[(usize, usize)], logits: &[Vec<f32>]) {
        let now = Instant::now();
        for (&(i, n), logits) in work.iter().zip(logits) {
            self.running[i].cached += n;
            if self.running[i].cached == self.running[i].tokens.len() {
                let token = self.running[i].sampler.next(logits);
                self.accept_token(i, token, now);
            }
        }
    }

    fn accept_token(&mut self, i: usize, token: u32, now: Instant) {
        let eos = self.model.eos;
        let r = &mut self.running[i];
        let latency = match r.last_token_at {
            None => (now - r.arrived).as_secs_f64(),
            Some(last) => (now - last).as_secs_f64(),
        };
        let first = r.last_token_at.is_none();
        r.last_token_at = Some(now);
        r.tokens.push(token);
        self.latencies.push((first, latency));
        let r = &mut self.running[i];
        if eos == Some(token) {
            return self.finish(i, FinishReason::Stop);
        }
        match r.decoder.push(&self.model.tokenizer, token) {
            Ok(piece) => r.text.push_str(&piece),
            Err(e) => return self.fail(i, ApiError::server(500, format!("detokenizing: {e}"))),
        }
        if let Some(at) = find_stop(&r.text, &r.stop) {
            r.text.truncate(at);
            return self.finish(i, FinishReason::Stop);
        }
        if r.generated() >= r.max_tokens {
            return self.finish(i, FinishReason::Length);
        }
        let held = r.stop.iter().map(|s| s.len() - 1).max().unwrap_or(0);
        let mut safe = r.text.len().saturating_sub(held).max(r.emitted);
        while !r.text.is_char_boundary(safe) {
            safe -= 1;
        }
        if safe > r.emitted {
            let piece = r.text[r.emitted..safe].to_string();
            r.emitted = safe;
            if r.events.send(Event::Text(piece)).is_err() {
                // The client hung up between two iterations.
                r.done = true;
                self.lock_metrics().aborted += 1;
            }
        }
    }

    /// Sends the rest of the text and the finish event; the request leaves at the end of the
    /// iteration.
    fn finish(&mut self, i: usize, mut reason: FinishReason) {
        // The counts a client may read once it has its last event include its tokens.
        self.flush_latencies();
        let r = &mut self.running[i];
        if reason == FinishReason::Length {
            if let Ok(rest) = r.decoder.finish(&self.model.tokenizer) {
                r.text.push_str(&rest);
                if let Some(at) = find_stop(&r.text, &r.stop) {
                    r.text.truncate(at);
                    reason = FinishReason::Stop;
                }
            }
        }
        if r.text.len() > r.emitted {
            let _ = r.events.send(Event::Text(r.text[r.emitted..].to_string()));
            r.emitted = r.text.len();
        }
        r.done = true;
        // A client that has its last event may read `/metrics` at once: by then its blocks are
        // free and its finish is counted (the step that produced its last token is over, so the
        // sequence is not read again; `retire_finished` finds it already released).
        if let Some(seq) = r.seq.take() {
            self.engine.release(seq);
        }
        {
            let mut m = self.metrics.lock().unwrap_or_else(PoisonError::into_inner);
            m.kv = Some(self.engine.kv_usage());
            match reason {
                FinishReason::Stop => m.finished_stop += 1,
                FinishReason::Length => m.finished_length += 1,
            }
        }
        let _ = r.events.send(Event::Finished { reason, usage: r.usage() });
    }

    fn fail(&mut self, i: usize, error: ApiError) {
        let r = &mut self.running[i];
        let _ = r.events.send(Event::Failed(error));
        r.done = true;
        self.lock_metrics().aborted += 1;
    }

    /// A step the engine refused or failed: it changed nothing, so its requests get the error
    /// and every other request goes on.
    fn fail_step(&mut self, work: &[(usize, usize)], error: &ServeError) {
        for &(i, _) in work {
            self.fail(i, ApiError::server(500, format!("the engine step failed: {error}")));
        }
    }

    /// Releases the sequences of finished and cancelled requests.
    fn retire_finished(&mut self) {
        let engine = &mut self.engine;
        self.running.retain_mut(|r| {
            if r.done {
                if let Some(seq) = r.seq.take() {
                    engine.release(seq);
                }
            }
            !r.done
        });
    }

    fn abort_all(&mut self, message: &str) {
        for r in self.waiting.iter_mut().chain(self.running.iter_mut()) {
            let _ = r.events.send(Event::Failed(ApiError::server(503, message)));
            r.done = true;
        }
        let aborted = self.waiting.len() + self.running.len();
        self.waiting.clear();
        self.retire_finished();
        self.lock_metrics().aborted += aborted as u64;
        self.publish();
    }

    /// Writes the tokens of [`Scheduler::latencies`] into the metrics.
    fn flush_latencies(&mut self) {
        if self.latencies.is_empty() {
            return;
        }
        let mut m = self.metrics.lock().unwrap_or_else(PoisonError::into_inner);
        m.generation_tokens += self.latencies.len() as u64;
        for &(first, latency) in &self.latencies {
            if first {
                m.time_to_first_token.observe(latency);
            } else {
                m.inter_token_latency.observe(latency);
            }
        }
        self.latencies.clear();
    }

    fn publish(&mut self) {
        self.flush_latencies();
        let kv = self.engine.kv_usage();
        let all_reduce = self.engine.all_reduce_time();
        let mut m = self.metrics.lock().unwrap_or_else(PoisonError::into_inner);
        m.running = self.running.len();
        m.waiting = self.waiting.len();
        m.kv = Some(kv);
        m.all_reduce_seconds = all_reduce.as_secs_f64();
    }
}

/// Where the first stop string starts in `text`.
fn find_stop(text: &str, stops: &[String]) -> Option<usize> {
    stops.iter().filter_map(|s| text.find(s.as_str())).min()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_earliest_stop_string_wins() {
        let stops = vec!["lo".to_string(), "el".to_string()];
        assert_eq!(find_stop("hello", &stops), Some(1));
        assert_eq!(find_stop("hi", &stops), None);
    }
}
