//! `--fix` knobs: `tp=8,pp=8,dp=..,ep=..,micro_batch=..,interleave=..,recompute=full|selective|none,
//! sp=on|off,zero=0..3,schedule=1f1b|gpipe|deepspeed,grad_accumulation=fused|unfused|bf16_optimizer,
//! layer_partition=time|layers|layers_and_embeddings`.
//! Whatever is fixed, the search does not vary.

use crate::cost::step::{GradAccumulation, LayerPartition, Recompute, Schedule};
use crate::planner::PlanError;

/// Knobs the user fixed; `None` means searched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fixed {
    pub dp: Option<u64>,
    pub tp: Option<u64>,
    pub pp: Option<u64>,
    pub ep: Option<u64>,
    pub micro_batch: Option<u64>,
    pub interleave: Option<u64>,
    pub recompute: Option<Recompute>,
    pub sp: Option<bool>,
    pub zero: Option<u8>,
    pub schedule: Option<Schedule>,
    /// The framework's gradient accumulation (`Parallelism::grad_accumulation`); never
    /// searched (fused unless fixed).
    pub grad_accumulation: Option<GradAccumulation>,
    /// How the framework cuts layers into stages (`Parallelism::layer_partition`); never
    /// searched (by time unless fixed).
    pub layer_partition: Option<LayerPartition>,
}

/// The knob names `--fix` accepts.
pub const KNOBS: [&str; 12] = [
    "dp",
    "tp",
    "pp",
    "ep",
    "micro_batch",
    "interleave",
    "recompute",
    "sp",
    "zero",
    "schedule",
    "grad_accumulation",
    "layer_partition",
];

impl Fixed {
    /// Parses `key=value,...`; errors name the knob.
    pub fn parse(text: &str) -> Result<Fixed, PlanError> {
        let mut fixed = Fixed::default();
        for item in tessera_ir::key_value::non_empty_items(text) {
            let Some((key, value)) = item.key_value() else {
                return Err(bad(item.text, format!("expected knob=value; knobs: {}", KNOBS.join(", "))));
            };
            let count = || -> Result<Option<u64>, PlanError> {
                match value.parse::<u64>() {
                    Ok(n) if n > 0 => Ok(Some(n)),
                    _ => Err(bad(key, format!("'{value}' is not a positive integer"))),
                }
            };
            let twice = match key {
                "dp" => fixed.dp.replace(count()?.unwrap_or(1)).is_some(),
                "tp" => fixed.tp.replace(count()?.unwrap_or(1)).is_some(),
                "pp" => fixed.pp.replace(count()?.unwrap_or(1)).is_some(),
                "ep" => fixed.ep.replace(count()?.unwrap_or(1)).is_some(),
                "micro_batch" | "mb" => fixed.micro_batch.replace(count()?.unwrap_or(1)).is_some(),
                "interleave" => fixed.interleave.replace(count()?.unwrap_or(1)).is_some(),
                "recompute" => {
                    let r = match value {
                        "none" => Recompute::None,
                        "selective" => Recompute::Selective,
                        "full" => Recompute::Full,
                        _ => return Err(bad(key, format!("'{value}' is not one of none, selective, full"))),
                    };
                    fixed.recompute.replace(r).is_some()
                }
                "sp" => fixed.sp.replace(on_off(key, value)?).is_some(),
                "grad_accumulation" => {
                    let Some(g) = GradAccumulation::ALL.into_iter().find(|g| g.name() == value) else {
                        return Err(bad(key, format!("'{value}' is not fused, unfused or bf16_optimizer")));
                    };
                    fixed.grad_accumulation.replace(g).is_some()
                }
                "layer_partition" => {
                    let Some(l) = LayerPartition::ALL.into_iter().find(|l| l.name() == value) else {
                        return Err(bad(key, format!("'{value}' is not time, layers or layers_and_embeddings")));
                    };
                    fixed.layer_partition.replace(l).is_some()
                }
                "zero" => {
                    let z = match value.parse::<u8>() {
                        Ok(z) if z <= 3 => z,
                        _ => return Err(bad(key, format!("'{value}' is not a ZeRO stage 0..3"))),
                    };
                    fixed.zero.replace(z).is_some()
                }
                "schedule" => {
                    let s = match value {
                        "1f1b" => Schedule::OneFOneB,
                        "gpipe" => Schedule::GPipe,
                        "deepspeed" => Schedule::DeepSpeed,
                        _ => return Err(bad(key, format!("'{value}' is not 1f1b, gpipe or deepspeed"))),
                    };
                    fixed.schedule.replace(s).is_some()
                }
                _ => return Err(bad(key, format!("unknown knob; knobs: {}", KNOBS.join(", ")))),
            };
            if twice {
                return Err(bad(key, "is fixed twice".to_string()));
            }
        }
        Ok(fixed)
    }
}

fn on_off(knob: &str, value: &str) -> Result<bool, PlanError> {
    match value {
        "on" | "true" | "1" => Ok(true),
        "off" | "false" | "0" => Ok(false),
        _ => Err(bad(knob, format!("'{value}' is not on or off"))),
    }
}

fn bad(knob: &str, message: String) -> PlanError {
    PlanError::BadFix { knob: knob.to_string(), message }
}
