//! The OpenAI completions API's wire format: a `POST /v1/completions` body checked field by
//! field into a [`CompletionParams`] (every refusal an [`ApiError`] naming the field), the
//! error body `{"error":{"message","type","param","code"}}`, and the response and stream
//! chunk objects.

use serde_json::{json, Map, Value};
use tessera_runtime::serve::sampling::SamplingParams;

/// Stop strings a request may give at most (OpenAI's limit).
pub const MAX_STOP_STRINGS: usize = 4;

/// `max_tokens` when the request does not say (OpenAI's default for completions).
pub const DEFAULT_MAX_TOKENS: usize = 16;

/// A refused request: the HTTP status and OpenAI's error fields.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    /// `invalid_request_error`, `server_error`, ...
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
}

impl ApiError {
    /// A 400 about `param` (None for the body as a whole).
    pub fn invalid(param: Option<&str>, message: impl Into<String>) -> ApiError {
        ApiError {
            status: 400,
            message: message.into(),
            kind: "invalid_request_error",
            param: param.map(str::to_string),
            code: None,
        }
    }

    pub fn with_code(mut self, code: &'static str) -> ApiError {
        self.code = Some(code);
        self
    }

    pub fn server(status: u16, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into(), kind: "server_error", param: None, code: None }
    }

    /// The body OpenAI's clients parse.
    pub fn body(&self) -> Value {
        json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}})
    }
}

/// What the prompt is before tokenization.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    Text(String),
    Ids(Vec<u32>),
}

/// A completions request whose fields all have the right types and ranges (what needs the
/// model, such as the prompt's length in tokens, is checked later).
#[derive(Debug, Clone, PartialEq)]
pub struct CompletionParams {
    pub model: Option<String>,
    pub prompt: Prompt,
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    pub stop: Vec<String>,
    pub stream: bool,
    /// `stream_options.include_usage`: a last chunk with the usage counts.
    pub stream_usage: bool,
}

/// Parses a request body (bytes as received: not UTF-8 or not JSON is a 400 as well).
pub fn parse_completion(body: &[u8]) -> Result<CompletionParams, ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|e| ApiError::invalid(None, format!("the request body is not valid UTF-8: {e}")))?;
    let value: Value = serde_json::from_str(text)
        .map_err(|e| ApiError::invalid(None, format!("the request body is not valid JSON: {e}")))?;
    let Value::Object(fields) = value else {
        return Err(ApiError::invalid(None, "the request body must be a JSON object"));
    };
    let model = optional(&fields, "model", |v| v.as_str().map(str::to_string), "a string")?;
    let prompt = prompt(&fields)?;
    let max_tokens = match optional(&fields, "max_tokens", Value::as_i64, "an integer")? {
        None => DEFAULT_MAX_TOKENS,
        Some(n) if n >= 1 => usize::try_from(n).unwrap_or(usize::MAX),
        Some(n) => {
            return Err(ApiError::invalid(Some("max_tokens"), format!("max_tokens must be at least 1, got {n}")))
        }
    };
    let temperature = optional(&fields, "temperature", Value::as_f64, "a number")?.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::invalid(
            Some("temperature"),
            format!("temperature must be in [0, 2], got {temperature}"),
        ));
    }
    let top_p = optional(&fields, "top_p", Value::as_f64, "a number")?.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::invalid(Some("top_p"), format!("top_p must be in (0, 1], got {top_p}")));
    }
    let seed = optional(&fields, "seed", |v| v.as_i64().map(|n| n as u64).or(v.as_u64()), "an integer")?.unwrap_or(0);
    let stop = stop(&fields)?;
    let stream = optional(&fields, "stream", Value::as_bool, "a boolean")?.unwrap_or(false);
    let stream_usage = match fields.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(Value::Object(options)) => {
            optional(options, "include_usage", Value::as_bool, "a boolean")?.unwrap_or(false)
        }
        Some(_) => return Err(ApiError::invalid(Some("stream_options"), "stream_options must be an object")),
    };
    if let Some(n) = optional(&fields, "n", Value::as_i64, "an integer")? {
        if n != 1 {
            return Err(ApiError::invalid(Some("n"), "this server returns one choice per request (n = 1)"));
        }
    }
    Ok(CompletionParams {
        model,
        prompt,
        max_tokens,
        sampling: SamplingParams { temperature, top_p, seed },
        stop,
        stream,
        stream_usage,
    })
}

/// Field `name` read by `read` (which returns None for the wrong type); absent or null is
/// `Ok(None)`.
fn optional<T>(
    fields: &Map<String, Value>,
    name: &str,
    read: impl Fn(&Value) -> Option<T>,
    expected: &str,
) -> Result<Option<T>, ApiError> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => read(value)
            .map(Some)
            .ok_or_else(|| ApiError::invalid(Some(name), format!("{name} must be {expected}, got {value}"))),
    }
}

/// `prompt`: a string, an array of token ids, or an array holding one of those (a batch of
/// one, as OpenAI's clients send it).
fn prompt(fields: &Map<String, Value>) -> Result<Prompt, ApiError> {
    let invalid = |message: &str| ApiError::invalid(Some("prompt"), message);
    let prompt = match fields.get("prompt") {
        None | Some(Value::Null) => return Err(invalid("prompt is required")),
        Some(Value::String(text)) => Prompt::Text(text.clone()),
        Some(Value::Array(items)) => match &items[..] {
            [Value::String(text)] => Prompt::Text(text.clone()),
            [Value::Array(ids)] => Prompt::Ids(token_ids(ids)?),
            [] => return Err(invalid("prompt is empty")),
            [Value::String(_) | Value::Array(_), ..] => {
                return Err(invalid("this server completes one prompt per request"))
            }
            ids => Prompt::Ids(token_ids(ids)?),
        },
        Some(other) => return Err(invalid(&format!("prompt must be a string or an array of token ids, got {other}"))),
    };
    let empty = match &prompt {
        Prompt::Text(text) => text.is_empty(),
        Prompt::Ids(ids) => ids.is_empty(),
    };
    if empty {
        return Err(invalid("prompt is empty"));
    }
    Ok(prompt)
}

fn token_ids(items: &[Value]) -> Result<Vec<u32>, ApiError> {
    items
        .iter()
        .map(|item| {
            item.as_u64().and_then(|id| u32::try_from(id).ok()).ok_or_else(|| {
                ApiError::invalid(Some("prompt"), format!("token ids must be non-negative integers, got {item}"))
            })
        })
        .collect()
}

/// `stop`: a string or an array of at most [`MAX_STOP_STRINGS`] strings; empty strings are
/// dropped (they would stop before anything).
fn stop(fields: &Map<String, Value>) -> Result<Vec<String>, ApiError> {
    let invalid = |message: String| ApiError::invalid(Some("stop"), message);
    let stops = match fields.get("stop") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| invalid(format!("stop strings must be strings, got {item}")))
            })
            .collect::<Result<_, _>>()?,
        Some(other) => return Err(invalid(format!("stop must be a string or an array of strings, got {other}"))),
    };
    if stops.len() > MAX_STOP_STRINGS {
        return Err(invalid(format!("at most {MAX_STOP_STRINGS} stop strings, got {}", stops.len())));
    }
    Ok(stops.into_iter().filter(|s| !s.is_empty()).collect())
}

/// Why a completion ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// A stop string or the end-of-sequence token.
    Stop,
    /// `max_tokens`, or the end of the context.
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// Token counts of a finished request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
}

impl Usage {
    pub fn to_json(self) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        })
    }
}

/// The fields every completion object (whole or chunk) starts with.
pub struct CompletionHeader<'a> {
    pub id: &'a str,
    pub created: u64,
    pub model: &'a str,
}

impl CompletionHeader<'_> {
    /// A `text_completion` object with one choice; `usage` only when given.
    pub fn object(&self, text: &str, finish: Option<FinishReason>, usage: Option<Usage>) -> Value {
        let mut object = json!({
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": [{
                "index": 0,
                "text": text,
                "logprobs": null,
                "finish_reason": finish.map(FinishReason::as_str),
            }],
        });
        if let Some(usage) = usage {
            object["usage"] = usage.to_json();
        }
        object
    }

    /// A stream's text chunks as the text between two fixed parts: what
    /// [`CompletionHeader::object`] gives for a text without finish reason or usage, serialized
    /// once per request, so a token costs one escaped string rather than building a JSON tree.
    pub fn text_chunk_parts(&self) -> TextChunkParts {
        let text = |value: &str| Value::from(value).to_string();
        TextChunkParts {
            before: format!(
                "{{\"id\":{},\"object\":\"text_completion\",\"created\":{},\"model\":{},\"choices\":[{{\"index\":0,\"text\":",
                text(self.id),
                self.created,
                text(self.model)
            ),
            after: ",\"logprobs\":null,\"finish_reason\":null}]}",
        }
    }

    /// The stream's usage chunk (`stream_options.include_usage`): no choices.
    pub fn usage_chunk(&self, usage: Usage) -> Value {
        json!({
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage.to_json(),
        })
    }
}

/// See [`CompletionHeader::text_chunk_parts`].
#[derive(Debug, Clone)]
pub struct TextChunkParts {
    before: String,
    after: &'static str,
}

impl TextChunkParts {
    /// Appends the chunk of `text` (its JSON) to `out`.
    pub fn write(&self, text: &str, out: &mut String) {
        out.push_str(&self.before);
        // A `String`'s serialization cannot fail; `Value::to_string` would allocate a tree.
        out.push_str(&serde_json::to_string(text).unwrap_or_default());
        out.push_str(self.after);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The precomposed text chunk is the same JSON as the object built field by field, for
    /// text that needs escaping.
    #[test]
    fn text_chunks_equal_the_built_object() {
        let header = CompletionHeader { id: "cmpl-7", created: 1_700_000_000, model: "a \"model\"" };
        for text in ["", "plain", "quote \" and \\ and \n and \u{1} and é😀"] {
            let mut out = String::new();
            header.text_chunk_parts().write(text, &mut out);
            let parsed: Value = serde_json::from_str(&out).unwrap();
            assert_eq!(parsed, header.object(text, None, None), "{out}");
        }
    }

    fn refused(body: &str) -> ApiError {
        parse_completion(body.as_bytes()).expect_err(body)
    }

    #[test]
    fn a_full_request_parses() {
        let body = r#"{"model":"m","prompt":"hi","max_tokens":5,"temperature":0,"top_p":0.5,"seed":7,
            "stop":["a","b"],"stream":true,"stream_options":{"include_usage":true}}"#;
        let params = parse_completion(body.as_bytes()).unwrap();
        assert_eq!(params.prompt, Prompt::Text("hi".into()));
        assert_eq!((params.max_tokens, params.stream, params.stream_usage), (5, true, true));
        assert_eq!(params.sampling, SamplingParams { temperature: 0.0, top_p: 0.5, seed: 7 });
        assert_eq!(params.stop, vec!["a", "b"]);
    }

    #[test]
    fn token_id_prompts_parse_flat_or_as_a_batch_of_one() {
        for body in [r#"{"prompt":[1,2,3]}"#, r#"{"prompt":[[1,2,3]]}"#] {
            assert_eq!(parse_completion(body.as_bytes()).unwrap().prompt, Prompt::Ids(vec![1, 2, 3]));
        }
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases = [
            (r#"{"prompt":"x","max_tokens":"5"}"#, Some("max_tokens")),
            (r#"{"prompt":"x","max_tokens":-1}"#, Some("max_tokens")),
            (r#"{"prompt":"x","max_tokens":0}"#, Some("max_tokens")),
            (r#"{"prompt":"x","temperature":"hot"}"#, Some("temperature")),
            (r#"{"prompt":"x","temperature":3}"#, Some("temperature")),
            (r#"{"prompt":"x","top_p":0}"#, Some("top_p")),
            (r#"{"prompt":"x","stream":"yes"}"#, Some("stream")),
            (r#"{"prompt":"x","stop":5}"#, Some("stop")),
            (r#"{"prompt":"x","stop":["a","b","c","d","e"]}"#, Some("stop")),
            (r#"{"prompt":"x","n":2}"#, Some("n")),
            (r#"{"prompt":""}"#, Some("prompt")),
            (r#"{"prompt":[]}"#, Some("prompt")),
            (r#"{"prompt":[1,-2]}"#, Some("prompt")),
            (r#"{"prompt":["a","b"]}"#, Some("prompt")),
            (r#"{"prompt":7}"#, Some("prompt")),
            (r#"{}"#, Some("prompt")),
            (r#"[1]"#, None),
            (r#"{"prompt":"x""#, None),
        ];
        for (body, param) in cases {
            let e = refused(body);
            assert_eq!((e.status, e.param.as_deref()), (400, param), "{body}: {e:?}");
        }
    }

    #[test]
    fn invalid_utf8_is_refused_as_such() {
        let e = parse_completion(b"{\"prompt\":\"\xff\"}").unwrap_err();
        assert!(e.message.contains("UTF-8"), "{}", e.message);
    }

    #[test]
    fn the_error_body_has_openais_four_fields() {
        let body = ApiError::invalid(Some("prompt"), "prompt is empty").body();
        assert_eq!(
            body,
            json!({"error": {"message": "prompt is empty", "type": "invalid_request_error", "param": "prompt", "code": null}})
        );
    }
}
