//! Named model configurations, from the papers and model cards that define them.
//!
//! `gpt-22b`, `gpt-175b`, `gpt-530b` and `gpt-1t` are the Megatron configurations of Korthikanti
//! et al. 2022 (Table 3; vocabulary padded to 51200, sequence 2048, dropout 0.1), which the
//! cost model is calibrated against. `gpt3-175b` is GPT-3 as published (vocabulary 50257).

use crate::zoo::config::{Family, ModelConfig};

/// Every preset name, in the order `tessera plan --help` lists them.
pub const NAMES: [&str; 12] = [
    "gpt2",
    "gpt3-175b",
    "gpt-22b",
    "gpt-175b",
    "gpt-530b",
    "gpt-1t",
    "llama3-8b",
    "llama3-70b",
    "llama3-405b",
    "mixtral-8x7b",
    "deepseek-v3",
    "bert-base",
];

/// The preset called `name`, if there is one.
pub fn preset(name: &str) -> Option<ModelConfig> {
    let gpt = |layers, hidden, heads| ModelConfig::family_default(Family::Gpt, name, layers, hidden, heads);
    let llama = |layers, hidden, heads, kv_heads, ffn| ModelConfig {
        kv_heads,
        ffn,
        vocab: 128256,
        seq: 8192,
        ..ModelConfig::family_default(Family::Llama, name, layers, hidden, heads)
    };
    let config = match name {
        "gpt2" => ModelConfig { vocab: 50257, seq: 1024, ..gpt(12, 768, 12) },
        // BERT-base (uncased), Devlin et al. 2019: 110M parameters with the pooler, which the
        // encoder graph leaves out.
        "bert-base" => ModelConfig::family_default(Family::Bert, name, 12, 768, 12),
        "gpt3-175b" => ModelConfig { vocab: 50257, ..gpt(96, 12288, 96) },
        "gpt-22b" => gpt(48, 6144, 64),
        "gpt-175b" => gpt(96, 12288, 96),
        "gpt-530b" => gpt(105, 20480, 128),
        // Megatron's 1T configuration (Narayanan et al. 2021, Korthikanti et al. 2022).
        "gpt-1t" => gpt(128, 25600, 160),
        "llama3-8b" => llama(32, 4096, 32, 8, 14336),
        "llama3-70b" => llama(80, 8192, 64, 8, 28672),
        "llama3-405b" => llama(126, 16384, 128, 8, 53248),
        "mixtral-8x7b" => ModelConfig {
            kv_heads: 8,
            ffn: 14336,
            expert_ffn: 14336,
            experts: 8,
            top_k: 2,
            vocab: 32000,
            seq: 4096,
            ..ModelConfig::family_default(Family::Moe, name, 32, 4096, 32)
        },
        // DeepSeek-V3 without its multi-token-prediction module: 671B parameters, 37B active.
        "deepseek-v3" => ModelConfig {
            head_dim: 128,
            ffn: 18432,
            experts: 256,
            top_k: 8,
            expert_ffn: 2048,
            shared_experts: 1,
            dense_layers: 3,
            vocab: 129280,
            seq: 4096,
            q_lora_rank: 1536,
            kv_lora_rank: 512,
            qk_nope_dim: 128,
            qk_rope_dim: 64,
            v_head_dim: 128,
            ..ModelConfig::family_default(Family::Moe, name, 61, 7168, 128)
        },
        _ => return None,
    };
    Some(config)
}
