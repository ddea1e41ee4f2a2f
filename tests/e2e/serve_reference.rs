//! The serving tests' data, written by `scripts/serve/setup.sh` to `.cache/serve`: random-init
//! GPT-2 and Llama checkpoints and `transformers`' greedy tokens for each prompt
//! (`reference.json`), read the same way by every serving test.

use crate::support::repo_root;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Deserialize)]
pub struct Reference {
    pub new_tokens: usize,
    pub models: BTreeMap<String, Vec<Case>>,
}

#[derive(Deserialize, Clone)]
pub struct Case {
    pub prompt: String,
    pub prompt_ids: Vec<u32>,
    pub generated_ids: Vec<u32>,
    pub min_logit_gap: f64,
}

/// The directory the set-up script writes.
pub fn cache() -> PathBuf {
    repo_root().join(".cache/serve")
}

/// One checkpoint directory of the cache (`gpt2-tiny`, `llama-tiny`).
pub fn checkpoint(name: &str) -> PathBuf {
    cache().join(name)
}

pub fn reference() -> Reference {
    let path = cache().join("reference.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run scripts/serve/setup.sh (make serve-data)", path.display()));
    serde_json::from_str(&text).expect("reference.json parses")
}
