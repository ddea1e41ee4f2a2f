//! The op table: every [`Op`] variant's text mnemonic, operand and result arity, and
//! attributes, declared once; [`Op::mnemonic`], [`Op::all_mnemonics`], [`Op::signature`] (the
//! IRDL arity), [`Op::attrs`] and [`Op::from_parts`] are generated from it.
//!
//! An attribute is an op field whose text name is the field's name; its type says how it is
//! written and read ([`AttrCodec`]), so a row names fields, never spellings or kinds. A field
//! may stand for several attributes (`window` is `strides`, `pads` and `dilations`; an
//! optimizer's hyper-parameters are one attribute each). The enum itself stays hand-written
//! in [`super`] (its docs and serde tags); every generated `match` is exhaustive, so a variant
//! without a row does not compile.

use super::attr::{Attr, AttrMap};
use super::collective::{self, Collective};
use super::conv::{PoolKind, Window};
use super::elementwise::{BinaryOp, CompareOp, UnaryOp};
use super::indexing::ScatterReduction;
use super::optim::{AdamW, Sgd};
use super::recurrent::{Cell, Direction, RecurrentKind};
use super::reduce::ReduceKind;
use super::Op;
use crate::dtype::DType;
use crate::tensor::Tensor;
use crate::types::{Dim, TensorType};

/// How many operands or results an op has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arity {
    Fixed(usize),
    /// Any number, fixed per node (`concat`'s operands, `split`'s results).
    Variadic,
}

/// How an op field is written as attributes and read back. `name` is the field's name; a
/// field that stands for several attributes writes and reads those under their own names.
pub trait AttrCodec: Sized {
    fn write(&self, name: &'static str, out: &mut Vec<(&'static str, Attr)>);
    fn read(attrs: &mut AttrMap, name: &str) -> Result<Self, String>;
}

impl AttrCodec for i64 {
    fn write(&self, name: &'static str, out: &mut Vec<(&'static str, Attr)>) {
        out.push((name, Attr::Int(*self)));
    }
    fn read(attrs: &mut AttrMap, name: &str) -> Result<i64, String> {
        attrs.int(name)
    }
}

impl AttrCodec for f64 {
    fn write(&self, name: &'static str, out: &mut Vec<(&'static str, Attr)>) {
        out.push((name, Attr::Float(*self)));
    }
    fn read(attrs: &mut AttrMap, name: &str) -> Result<f64, String> {
        attrs.float(name)
    }
}

/// Flags are optional in the text and default to `false`.
impl AttrCodec for bool {
    fn write(&self, name: &'static str, out: &mut Vec<(&'static str, Attr)>) {
        out.push((name, Attr::Bool(*self)));
    }
    fn read(attrs: &mut AttrMap, name: &str) -> Result<bool, String> {
        attrs.bool_or(name, false)
    }
}

impl AttrCodec for Vec<i64> {
    fn write(&self, name: &'static str, out: &mut Vec<(&'static str, Attr)>) {
        out.push((name, Attr::Ints(self.clone())));
    }
    fn read(attrs: &mut AttrMap, name: &str) -> Result<Vec<i64>, String> {
        attrs.ints(name)
    }
}

impl<const N: usize> AttrCodec for [i64; N] {
    fn write(&self, name: &'static str, out: &mut Vec<(&'static str, Attr)>) {
        out.push((name, Attr::Ints(self.to_vec())));
    }
    fn read(attrs: &mut AttrMap, name: &str) -> Result<[i64; N], String> {
        super::fixed(attrs.ints(name)?, name)
    }
}

impl AttrCodec for Tensor {
    fn write(&self, name: &'static str, out: &mut Vec<(&'static str, Attr)>) {
        out.push((name, Attr::Dense(self.clone())));
    }
    fn read(attrs: &mut AttrMap, name: &str) -> Result<Tensor, String> {
        attrs.dense(name)
    }
}

impl AttrCodec for ScatterReduction {
    fn write(&self, name: &'static str, out: &mut Vec<(&'static str, Attr)>) {
        out.push((name, Attr::Str(self.mnemonic().to_string())));
    }
    fn read(attrs: &mut AttrMap, name: &str) -> Result<ScatterReduction, String> {
        let text = attrs.string(name)?;
        ScatterReduction::from_mnemonic(&text)
            .ok_or_else(|| format!("unknown scatter reduction '{text}' (expected none or add)"))
    }
}

/// A window is three attributes: `strides`, `pads` and `dilations`.
impl AttrCodec for Window {
    fn write(&self, _name: &'static str, out: &mut Vec<(&'static str, Attr)>) {
        self.dilations.write("dilations", out);
        self.pads.write("pads", out);
        self.strides.write("strides", out);
    }
    fn read(attrs: &mut AttrMap, _name: &str) -> Result<Window, String> {
        Ok(Window {
            strides: AttrCodec::read(attrs, "strides")?,
            pads: AttrCodec::read(attrs, "pads")?,
            dilations: AttrCodec::read(attrs, "dilations")?,
        })
    }
}

/// One attribute per hyper-parameter.
impl AttrCodec for Sgd {
    fn write(&self, _name: &'static str, out: &mut Vec<(&'static str, Attr)>) {
        self.lr.write("lr", out);
        self.momentum.write("momentum", out);
        self.weight_decay.write("weight_decay", out);
    }
    fn read(attrs: &mut AttrMap, _name: &str) -> Result<Sgd, String> {
        Ok(Sgd {
            lr: attrs.float("lr")?,
            momentum: attrs.float("momentum")?,
            weight_decay: attrs.float("weight_decay")?,
        })
    }
}

/// One attribute per hyper-parameter.
impl AttrCodec for AdamW {
    fn write(&self, _name: &'static str, out: &mut Vec<(&'static str, Attr)>) {
        self.beta1.write("beta1", out);
        self.beta2.write("beta2", out);
        self.epsilon.write("epsilon", out);
        self.lr.write("lr", out);
        self.weight_decay.write("weight_decay", out);
    }
    fn read(attrs: &mut AttrMap, _name: &str) -> Result<AdamW, String> {
        Ok(AdamW {
            lr: attrs.float("lr")?,
            beta1: attrs.float("beta1")?,
            beta2: attrs.float("beta2")?,
            epsilon: attrs.float("epsilon")?,
            weight_decay: attrs.float("weight_decay")?,
        })
    }
}

/// A recurrent cell is its attributes: `hidden_size`, `direction`, `activations` (one string,
/// see [`Cell::activations_text`]), `clip` when set, and the flags `input_forget` and
/// A sharding as its text, `"[{}, {tp}]"` (see `ops::constraint`).
impl AttrCodec for crate::sharding::Sharding {
    fn write(&self, name: &'static str, out: &mut Vec<(&'static str, Attr)>) {
        out.push((name, Attr::Str(self.to_string())));
    }
    fn read(attrs: &mut AttrMap, name: &str) -> Result<Self, String> {
        crate::sharding::Sharding::parse(&attrs.string(name)?)
    }
}

/// `linear_before_reset` when true.
impl AttrCodec for Cell {
    fn write(&self, _name: &'static str, out: &mut Vec<(&'static str, Attr)>) {
        out.push(("activations", Attr::Str(self.activations_text())));
        if let Some(clip) = self.clip {
            out.push(("clip", Attr::Float(clip)));
        }
        out.push(("direction", Attr::Str(self.direction.name().to_string())));
        out.push(("hidden_size", Attr::Int(self.hidden_size)));
        if self.input_forget {
            out.push(("input_forget", Attr::Bool(true)));
        }
        if self.linear_before_reset {
            out.push(("linear_before_reset", Attr::Bool(true)));
        }
    }
    fn read(attrs: &mut AttrMap, _name: &str) -> Result<Cell, String> {
        let direction = attrs.string("direction")?;
        Ok(Cell {
            hidden_size: attrs.int("hidden_size")?,
            direction: Direction::from_name(&direction).ok_or_else(|| {
                format!("unknown direction '{direction}' (expected forward, reverse or bidirectional)")
            })?,
            activations: Cell::parse_activations(&attrs.string("activations")?)?,
            clip: attrs.float_opt("clip")?,
            input_forget: attrs.bool_or("input_forget", false)?,
            linear_before_reset: attrs.bool_or("linear_before_reset", false)?,
        })
    }
}

/// A field that the result type carries (and the text therefore does not repeat).
trait FromResult {
    fn from_result(t: &TensorType) -> Self;
}

impl FromResult for DType {
    fn from_result(t: &TensorType) -> DType {
        t.dtype
    }
}

impl FromResult for Vec<Dim> {
    fn from_result(t: &TensorType) -> Vec<Dim> {
        t.dims.clone()
    }
}

macro_rules! arity {
    (*) => {
        Arity::Variadic
    };
    ($n:literal) => {
        Arity::Fixed($n)
    };
}

/// Generates the per-op functions of [`Op`] from its rows. Sections, by how a variant holds
/// its attributes:
/// - `fields`: every field is an attribute (none for a unit variant);
/// - `payload`: a tuple variant whose one value is the attributes;
/// - `typed`: one field carried by the single result type, printed without attributes;
/// - `family`: a tuple variant of a `named_enum!` family, which gives the mnemonics;
/// - `family_fields`: a family `kind` plus attribute fields.
///
/// Collectives keep their own table in [`collective`].
macro_rules! op_table {
    (
        fields { $($fv:ident $({ $($ff:ident),* })? = $fm:literal ($fi:tt -> $fo:tt);)* }
        payload { $($pv:ident($pf:ident) = $pm:literal ($pi:tt -> $po:tt);)* }
        typed { $($tv:ident { $tf:ident } = $tm:literal ($ti:tt -> $to:tt);)* }
        family { $($yv:ident($yt:ident) ($yi:tt -> $yo:tt);)* }
        family_fields { $($kv:ident { kind: $kt:ident; $($kf:ident),* } ($ki:tt -> $ko:tt);)* }
    ) => {
        impl Op {
            /// The mnemonic after `tsr.` (`matmul`, `reduce_sum`, ...).
            pub fn mnemonic(&self) -> &'static str {
                match self {
                    $(Op::$fv { .. } => $fm,)*
                    $(Op::$pv(_) => $pm,)*
                    $(Op::$tv { .. } => $tm,)*
                    $(Op::$yv(kind) => kind.mnemonic(),)*
                    $(Op::$kv { kind, .. } => kind.mnemonic(),)*
                    Op::Collective(c) => c.mnemonic(),
                    Op::If(_) => "if",
                    Op::Loop(_) => "loop",
                    Op::Trap(_) => "trap",
                }
            }

            /// Every mnemonic, in table order (for the IRDL dialect definition and docs).
            pub fn all_mnemonics() -> Vec<&'static str> {
                let mut names: Vec<&'static str> = vec![$($fm,)* $($pm,)* $($tm,)*];
                $(names.extend($yt::ALL.iter().map(|kind| kind.mnemonic()));)*
                $(names.extend($kt::ALL.iter().map(|kind| kind.mnemonic()));)*
                names.extend(collective::MNEMONICS);
                names.push("if");
                names.push("loop");
                names.push("trap");
                names
            }

            /// Operand and result arity of the op named `mnemonic` (the IRDL signature); the
            /// shape rules' `expect_arity` agrees, which `mlir::check`'s tests check per op.
            pub fn signature(mnemonic: &str) -> Option<(Arity, Arity)> {
                // The recurrent family's result count is fixed per kind (LSTM 3, GRU and RNN
                // 2); only the operands vary (`sequence_lens` is optional). The IRDL check
                // handles one variadic side per op.
                if let Some(kind) = RecurrentKind::from_mnemonic(mnemonic) {
                    return Some((Arity::Variadic, Arity::Fixed(kind.num_results())));
                }
                $(if $yt::from_mnemonic(mnemonic).is_some() {
                    return Some((arity!($yi), arity!($yo)));
                })*
                $(if $kt::from_mnemonic(mnemonic).is_some() {
                    return Some((arity!($ki), arity!($ko)));
                })*
                if mnemonic == "if" || mnemonic == "loop" {
                    return Some((Arity::Variadic, Arity::Variadic));
                }
                if mnemonic == "trap" {
                    return Some((Arity::Fixed(0), Arity::Variadic));
                }
                if let Some((operands, results)) = Collective::signature(mnemonic) {
                    return Some((Arity::Fixed(operands), Arity::Fixed(results)));
                }
                match mnemonic {
                    $($fm => Some((arity!($fi), arity!($fo))),)*
                    $($pm => Some((arity!($pi), arity!($po))),)*
                    $($tm => Some((arity!($ti), arity!($to))),)*
                    _ => None,
                }
            }

            /// The attributes the text form prints, sorted by name (MLIR's order). Attributes
            /// that the result type already carries (`cast`'s dtype, `reshape`'s and
            /// `broadcast`'s shape) are not repeated.
            pub fn attrs(&self) -> Vec<(&'static str, Attr)> {
                let mut attrs: Vec<(&'static str, Attr)> = Vec::new();
                match self {
                    $(Op::$fv $({ $($ff),* })? => { $($(AttrCodec::write($ff, stringify!($ff), &mut attrs);)*)? })*
                    $(Op::$pv($pf) => AttrCodec::write($pf, stringify!($pf), &mut attrs),)*
                    $(Op::$tv { .. } => {})*
                    $(Op::$yv(_) => {})*
                    $(Op::$kv { $($kf,)* .. } => { $(AttrCodec::write($kf, stringify!($kf), &mut attrs);)* })*
                    Op::Collective(c) => attrs = c.attrs(),
                    // The branches are regions, printed after the operands, not attributes.
                    Op::If(_) => {}
                    Op::Loop(regions) => attrs.push(("max_trips", Attr::Int(regions.max_trips as i64))),
                    Op::Trap(trap) => attrs.push(("message", Attr::Str(trap.message.clone()))),
                }
                attrs.sort_by_key(|(name, _)| *name);
                attrs
            }

            /// Builds an op from its mnemonic, its attributes as written and its result types
            /// (which carry the target of `cast`, `reshape` and `broadcast`). Errors are
            /// one-line messages.
            pub fn from_parts(mnemonic: &str, mut attrs: AttrMap, results: &[TensorType]) -> Result<Op, String> {
                let single_result = |what: &str| -> Result<&TensorType, String> {
                    match results {
                        [t] => Ok(t),
                        _ => Err(format!("'{what}' has exactly one result, got {}", results.len())),
                    }
                };
                let op = if let Some(c) = Collective::from_parts(mnemonic, &mut attrs, results) {
                    Op::Collective(c?)
                }
                $(else if let Some(kind) = $yt::from_mnemonic(mnemonic) {
                    Op::$yv(kind)
                })*
                $(else if let Some(kind) = $kt::from_mnemonic(mnemonic) {
                    Op::$kv { kind, $($kf: AttrCodec::read(&mut attrs, stringify!($kf))?),* }
                })*
                else {
                    match mnemonic {
                        $($fm => Op::$fv $({ $($ff: AttrCodec::read(&mut attrs, stringify!($ff))?),* })?,)*
                        $($pm => Op::$pv(AttrCodec::read(&mut attrs, stringify!($pf))?),)*
                        $($tm => Op::$tv { $tf: FromResult::from_result(single_result(mnemonic)?) },)*
                        "if" => return Err("'tsr.if' needs its two regions (then, else)".into()),
                        "loop" => return Err("'tsr.loop' needs its two regions (cond, body)".into()),
                        "trap" => Op::Trap(Box::new(super::control::Trap {
                            message: attrs.string("message")?,
                            types: results.to_vec(),
                        })),
                        _ => return Err(format!("unknown op 'tsr.{mnemonic}'")),
                    }
                };
                attrs.finish()?;
                Ok(op)
            }
        }
    };
}

op_table! {
    fields {
        Where = "where" (3 -> 1);
        MatMul = "matmul" (2 -> 1);
        Softmax { axis } = "softmax" (1 -> 1);
        LayerNorm { axis, epsilon } = "layer_norm" (3 -> 1);
        RmsNorm { axis, epsilon } = "rms_norm" (2 -> 1);
        ArgMax { axis, keepdims } = "argmax" (1 -> 1);
        Transpose { perm } = "transpose" (1 -> 1);
        Slice { starts, ends, steps } = "slice" (1 -> 1);
        Concat { axis } = "concat" (* -> 1);
        Split { axis, sizes } = "split" (1 -> *);
        Gather { axis } = "gather" (2 -> 1);
        Iota { axis } = "iota" (1 -> 1);
        Scatter { axis, reduction } = "scatter" (3 -> 1);
        Conv2d { window, groups } = "conv2d" (2 -> 1);
        Rope { interleaved } = "rope" (3 -> 1);
        CrossEntropy = "cross_entropy" (2 -> 1);
        WinogradInput { pads } = "winograd_input" (1 -> 1);
        WinogradWeight = "winograd_weight" (1 -> 1);
        ShardingConstraint { sharding } = "sharding_constraint" (1 -> 1);
    }
    payload {
        Constant(value) = "constant" (0 -> 1);
        Sgd(hyper) = "sgd" (3 -> 2);
        AdamW(hyper) = "adamw" (5 -> 3);
    }
    typed {
        Cast { to } = "cast" (1 -> 1);
        Broadcast { shape } = "broadcast" (1 -> 1);
        Reshape { shape } = "reshape" (1 -> 1);
        WinogradOutput { shape } = "winograd_output" (1 -> 1);
    }
    family {
        Unary(UnaryOp) (1 -> 1);
        Binary(BinaryOp) (2 -> 1);
        Compare(CompareOp) (2 -> 1);
    }
    family_fields {
        Reduce { kind: ReduceKind; axes, keepdims } (1 -> 1);
        Pool2d { kind: PoolKind; kernel, window } (1 -> 1);
        Recurrent { kind: RecurrentKind; cell } (* -> *);
    }
}
