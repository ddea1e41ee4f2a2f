//! Recurrent layers with ONNX semantics: `tsr.lstm`, `tsr.gru` and `tsr.rnn`, one op each over
//! the whole sequence (not unrolled, so the sequence length may stay a symbolic dimension).
//!
//! Layout is ONNX `layout = 0` (time major); the importer transposes around the op for
//! `layout = 1`. Operands, with `D` directions (2 when bidirectional), `G` gates (LSTM 4, GRU 3,
//! RNN 1) and hidden size `H`:
//!
//! | operand | LSTM | GRU / RNN |
//! |---|---|---|
//! | 0 `x` | `[S, N, I]` | `[S, N, I]` |
//! | 1 `w` | `[D, 4H, I]`, gates `i o f c` | `[D, GH, I]`, GRU gates `z r h` |
//! | 2 `r` | `[D, 4H, H]` | `[D, GH, H]` |
//! | 3 `b` | `[D, 8H]` (`Wb` then `Rb`) | `[D, 2GH]` |
//! | 4 `initial_h` | `[D, N, H]` | `[D, N, H]` |
//! | 5 `initial_c` | `[D, N, H]` | (`sequence_lens`) |
//! | 6 `p` | `[D, 3H]`, peepholes `i o f` | |
//! | last, optional | `sequence_lens: [N]` (integers) | |
//!
//! Every ONNX-optional operand but `sequence_lens` is always present (the importer writes the
//! zeros ONNX defaults to); without `sequence_lens` every batch entry runs all `S` steps.
//! Results: `y: [S, D, N, H]`, `y_h: [D, N, H]` and, for LSTM, `y_c: [D, N, H]`.
//!
//! Semantics (ONNX, as onnxruntime computes them): batch entry `n` runs `len = sequence_lens[n]`
//! steps; the forward direction reads `x[0..len]` in order, the reverse direction reads them
//! from `len - 1` down to 0. `y` holds each step's hidden state at the step's time index and
//! zeros at `t >= len`; `y_h` and `y_c` hold the state after the last step (the initial state
//! when `len = 0`). Each gate's pre-activation (input and recurrent projections, both biases,
//! and for LSTM the peephole term) is clipped to `[-clip, clip]` when `clip` is set, then goes
//! through its activation (LSTM's cell state goes into `h` unclipped, as in onnxruntime):
//! - LSTM (`f g h`, default sigmoid, tanh, tanh): `i = f(..)`, `f = f(..)` (or `1 - i` with
//!   `input_forget`), `c~ = g(..)`, `C = f C' + i c~`, `o = f(.. + Po C)`, `H = o h(C)`;
//!   the input and forget gates' peepholes read the previous cell state `C'`.
//! - GRU (`f g`, default sigmoid, tanh): `z = f(..)`, `r = f(..)`,
//!   `h~ = g(x Wh + (r H') Rh + Rbh + Wbh)`, or with `linear_before_reset`
//!   `h~ = g(x Wh + r (H' Rh + Rbh) + Wbh)`; `H = (1 - z) h~ + z H'`.
//! - RNN (`f`, default tanh): `H = f(x W + H' R + Wb + Rb)`.
//!
//! Reference semantics compute in `f64` and round each result once to its dtype. The compiled
//! CPU library call (`runtime::executor::recurrent`) calls the same per-unit functions
//! ([`Cell::lstm_unit`], [`Cell::gru_gates`], [`Cell::gru_candidate`], [`Cell::rnn_unit`]), so
//! the two differ only in how the projections are summed.

use super::elementwise::named_enum;
use super::gradient::GradError;
use super::{ints, num_elements, operand_shape, FlopResult, ShapeResult};
use crate::tensor::Tensor;
use crate::types::{Dim, TensorType};

named_enum!(RecurrentKind { Lstm = "lstm", Gru = "gru", Rnn = "rnn" });

impl RecurrentKind {
    /// Gates per hidden unit: the row blocks of `w` and `r`.
    pub fn gates(self) -> usize {
        match self {
            RecurrentKind::Lstm => 4,
            RecurrentKind::Gru => 3,
            RecurrentKind::Rnn => 1,
        }
    }

    /// Activation functions per direction (LSTM `f g h`, GRU `f g`, RNN `f`).
    pub fn activations_per_direction(self) -> usize {
        match self {
            RecurrentKind::Lstm => 3,
            RecurrentKind::Gru => 2,
            RecurrentKind::Rnn => 1,
        }
    }

    /// The ONNX defaults of the activations, per direction.
    pub fn default_activations(self) -> &'static [ActivationKind] {
        match self {
            RecurrentKind::Lstm => &[ActivationKind::Sigmoid, ActivationKind::Tanh, ActivationKind::Tanh],
            RecurrentKind::Gru => &[ActivationKind::Sigmoid, ActivationKind::Tanh],
            RecurrentKind::Rnn => &[ActivationKind::Tanh],
        }
    }

    /// Operands without `sequence_lens` (see the module docs).
    pub fn required_operands(self) -> usize {
        match self {
            RecurrentKind::Lstm => 7,
            RecurrentKind::Gru | RecurrentKind::Rnn => 5,
        }
    }

    /// Results: `y`, `y_h`, and for LSTM `y_c`.
    pub fn num_results(self) -> usize {
        match self {
            RecurrentKind::Lstm => 3,
            RecurrentKind::Gru | RecurrentKind::Rnn => 2,
        }
    }

    /// The ONNX op type.
    pub fn onnx_name(self) -> &'static str {
        match self {
            RecurrentKind::Lstm => "LSTM",
            RecurrentKind::Gru => "GRU",
            RecurrentKind::Rnn => "RNN",
        }
    }
}

/// Which way the sequence is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Forward,
    Reverse,
    Bidirectional,
}

impl Direction {
    /// The ONNX spelling, which is also the text form's.
    pub fn name(self) -> &'static str {
        match self {
            Direction::Forward => "forward",
            Direction::Reverse => "reverse",
            Direction::Bidirectional => "bidirectional",
        }
    }

    pub fn from_name(name: &str) -> Option<Direction> {
        [Direction::Forward, Direction::Reverse, Direction::Bidirectional].into_iter().find(|d| d.name() == name)
    }

    /// `D`: 2 when bidirectional, else 1.
    pub fn num_directions(self) -> usize {
        if self == Direction::Bidirectional {
            2
        } else {
            1
        }
    }

    /// Whether direction index `d` (0 or 1) reads the sequence backwards.
    pub fn is_reverse(self, d: usize) -> bool {
        self == Direction::Reverse || (self == Direction::Bidirectional && d == 1)
    }
}

/// An activation function of the ONNX recurrent ops; the text names are ONNX's in snake case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActivationKind {
    Relu,
    Tanh,
    Sigmoid,
    /// `alpha x + beta`.
    Affine,
    /// `x` if `x >= 0`, else `alpha x`.
    LeakyRelu,
    /// `x` if `x > alpha`, else 0.
    ThresholdedRelu,
    /// `alpha tanh(beta x)`.
    ScaledTanh,
    /// `min(max(alpha x + beta, 0), 1)`.
    HardSigmoid,
    /// `x` if `x >= 0`, else `alpha (e^x - 1)`.
    Elu,
    /// `x / (1 + |x|)`.
    Softsign,
    /// `ln(1 + e^x)`.
    Softplus,
}

/// Every activation kind with its text name and ONNX name.
const ACTIVATION_NAMES: [(ActivationKind, &str, &str); 11] = [
    (ActivationKind::Relu, "relu", "Relu"),
    (ActivationKind::Tanh, "tanh", "Tanh"),
    (ActivationKind::Sigmoid, "sigmoid", "Sigmoid"),
    (ActivationKind::Affine, "affine", "Affine"),
    (ActivationKind::LeakyRelu, "leaky_relu", "LeakyRelu"),
    (ActivationKind::ThresholdedRelu, "thresholded_relu", "ThresholdedRelu"),
    (ActivationKind::ScaledTanh, "scaled_tanh", "ScaledTanh"),
    (ActivationKind::HardSigmoid, "hard_sigmoid", "HardSigmoid"),
    (ActivationKind::Elu, "elu", "Elu"),
    (ActivationKind::Softsign, "softsign", "Softsign"),
    (ActivationKind::Softplus, "softplus", "Softplus"),
];

impl ActivationKind {
    pub const ALL: [ActivationKind; 11] = [
        ActivationKind::Relu,
        ActivationKind::Tanh,
        ActivationKind::Sigmoid,
        ActivationKind::Affine,
        ActivationKind::LeakyRelu,
        ActivationKind::ThresholdedRelu,
        ActivationKind::ScaledTanh,
        ActivationKind::HardSigmoid,
        ActivationKind::Elu,
        ActivationKind::Softsign,
        ActivationKind::Softplus,
    ];

    pub fn name(self) -> &'static str {
        ACTIVATION_NAMES.iter().find(|(k, _, _)| *k == self).map_or("", |(_, name, _)| name)
    }

    /// The kind an ONNX `activations` entry names; ONNX runtimes compare case-insensitively.
    pub fn from_onnx(name: &str) -> Option<ActivationKind> {
        ACTIVATION_NAMES.iter().find(|(_, _, onnx)| onnx.eq_ignore_ascii_case(name)).map(|(k, _, _)| *k)
    }

    fn from_name(name: &str) -> Option<ActivationKind> {
        ACTIVATION_NAMES.iter().find(|(_, text, _)| *text == name).map(|(k, _, _)| *k)
    }

    /// Whether the function reads `alpha` (and so consumes an ONNX `activation_alpha` entry).
    pub fn uses_alpha(self) -> bool {
        matches!(
            self,
            ActivationKind::Affine
                | ActivationKind::LeakyRelu
                | ActivationKind::ThresholdedRelu
                | ActivationKind::ScaledTanh
                | ActivationKind::HardSigmoid
                | ActivationKind::Elu
        )
    }

    /// Whether the function reads `beta` (and so consumes an ONNX `activation_beta` entry).
    pub fn uses_beta(self) -> bool {
        matches!(self, ActivationKind::Affine | ActivationKind::ScaledTanh | ActivationKind::HardSigmoid)
    }

    /// `(alpha, beta)` when the model gives none: those of the ONNX operator of the same name
    /// (`LeakyRelu` 0.01, `HardSigmoid` 0.2 and 0.5, `Elu` and `ThresholdedRelu` 1), and 1, 0
    /// for `Affine` and 1, 1 for `ScaledTanh` (no ONNX operator of that name has defaults).
    pub fn default_params(self) -> (f64, f64) {
        match self {
            ActivationKind::LeakyRelu => (0.01, 0.0),
            ActivationKind::HardSigmoid => (0.2, 0.5),
            ActivationKind::ScaledTanh => (1.0, 1.0),
            _ if self.uses_alpha() => (1.0, 0.0),
            _ => (0.0, 0.0),
        }
    }
}

/// One activation function with its parameters (ignored by the kinds that take none).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Activation {
    pub kind: ActivationKind,
    pub alpha: f64,
    pub beta: f64,
}

impl Activation {
    /// The kind with no parameters given.
    pub fn plain(kind: ActivationKind) -> Activation {
        let (alpha, beta) = kind.default_params();
        Activation { kind, alpha, beta }
    }

    pub fn apply(&self, x: f64) -> f64 {
        let (alpha, beta) = (self.alpha, self.beta);
        match self.kind {
            ActivationKind::Relu => x.max(0.0),
            ActivationKind::Tanh => x.tanh(),
            ActivationKind::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            ActivationKind::Affine => alpha * x + beta,
            ActivationKind::LeakyRelu => {
                if x >= 0.0 {
                    x
                } else {
                    alpha * x
                }
            }
            ActivationKind::ThresholdedRelu => {
                if x > alpha {
                    x
                } else {
                    0.0
                }
            }
            ActivationKind::ScaledTanh => alpha * (beta * x).tanh(),
            ActivationKind::HardSigmoid => (alpha * x + beta).clamp(0.0, 1.0),
            ActivationKind::Elu => {
                if x >= 0.0 {
                    x
                } else {
                    alpha * x.exp_m1()
                }
            }
            ActivationKind::Softsign => x / (1.0 + x.abs()),
            // ln(1 + e^x) without overflow for large x.
            ActivationKind::Softplus => x.max(0.0) + (-x.abs()).exp().ln_1p(),
        }
    }

    /// Text form: the name, then the parameters the kind reads in parentheses
    /// (`sigmoid`, `leaky_relu(0.1)`, `affine(2, 0.5)`); floats print in Rust's shortest
    /// round-trip form, so parsing gives back the same bits.
    fn to_text(self) -> String {
        let name = self.kind.name();
        match (self.kind.uses_alpha(), self.kind.uses_beta()) {
            (true, true) => format!("{name}({:?}, {:?})", self.alpha, self.beta),
            (true, false) => format!("{name}({:?})", self.alpha),
            _ => name.to_string(),
        }
    }

    fn from_text(text: &str) -> Result<Activation, String> {
        let text = text.trim();
        let (name, params) = match text.split_once('(') {
            Some((name, rest)) => {
                let inner = rest.strip_suffix(')').ok_or_else(|| format!("activation '{text}' lacks its ')'"))?;
                (name.trim(), inner.split(',').map(str::trim).collect::<Vec<_>>())
            }
            None => (text, Vec::new()),
        };
        let kind = ActivationKind::from_name(name).ok_or_else(|| format!("unknown activation '{name}'"))?;
        let wanted = usize::from(kind.uses_alpha()) + usize::from(kind.uses_beta());
        if params.len() != wanted {
            return Err(format!("activation '{name}' takes {wanted} parameter(s), got '{text}'"));
        }
        let number = |s: &str| s.parse::<f64>().map_err(|_| format!("bad activation parameter '{s}' in '{text}'"));
        let (default_alpha, default_beta) = kind.default_params();
        let alpha = params.first().map_or(Ok(default_alpha), |s| number(s))?;
        let beta = params.get(1).map_or(Ok(default_beta), |s| number(s))?;
        Ok(Activation { kind, alpha, beta })
    }
}

/// The attributes of a recurrent op (its kind is the op's mnemonic).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Cell {
    pub hidden_size: i64,
    pub direction: Direction,
    /// `activations_per_direction` entries per direction, forward direction first.
    pub activations: Vec<Activation>,
    /// Pre-activations are clipped to `[-clip, clip]` when set.
    pub clip: Option<f64>,
    /// LSTM only: the forget gate is `1 - input gate`.
    pub input_forget: bool,
    /// GRU only: apply the reset gate after the recurrent projection of the candidate.
    pub linear_before_reset: bool,
}

impl Cell {
    /// The ONNX defaults for `kind`: forward, default activations, no clipping.
    pub fn new(kind: RecurrentKind, hidden_size: i64, direction: Direction) -> Cell {
        let activations = (0..direction.num_directions())
            .flat_map(|_| kind.default_activations().iter().map(|&k| Activation::plain(k)))
            .collect();
        Cell { hidden_size, direction, activations, clip: None, input_forget: false, linear_before_reset: false }
    }

    /// The `activations` attribute's text: the functions joined by `;`.
    pub fn activations_text(&self) -> String {
        self.activations.iter().map(|a| a.to_text()).collect::<Vec<_>>().join("; ")
    }

    pub fn parse_activations(text: &str) -> Result<Vec<Activation>, String> {
        text.split(';').map(Activation::from_text).collect()
    }

    /// Checks the attributes against `kind`.
    pub fn check(&self, kind: RecurrentKind) -> Result<(), String> {
        let name = kind.mnemonic();
        if self.hidden_size < 1 {
            return Err(format!("{name} hidden_size must be positive, got {}", self.hidden_size));
        }
        let wanted = kind.activations_per_direction() * self.direction.num_directions();
        if self.activations.len() != wanted {
            return Err(format!(
                "{name} {} needs {wanted} activations, got {}",
                self.direction.name(),
                self.activations.len()
            ));
        }
        if let Some(clip) = self.clip {
            if clip.is_nan() || clip <= 0.0 {
                return Err(format!("{name} clip must be positive, got {clip}"));
            }
        }
        if self.input_forget && kind != RecurrentKind::Lstm {
            return Err(format!("input_forget is an LSTM attribute, not one of {name}"));
        }
        if self.linear_before_reset && kind != RecurrentKind::Gru {
            return Err(format!("linear_before_reset is a GRU attribute, not one of {name}"));
        }
        Ok(())
    }

    fn act(&self, kind: RecurrentKind, direction: usize, which: usize, x: f64) -> f64 {
        let x = match self.clip {
            Some(c) => x.clamp(-c, c),
            None => x,
        };
        self.activations[direction * kind.activations_per_direction() + which].apply(x)
    }

    /// One LSTM unit: `pre` holds the `i o f c` pre-activations without peepholes, `peephole`
    /// the `i o f` peephole weights; returns `(H, C)`.
    pub fn lstm_unit(&self, direction: usize, pre: [f64; 4], peephole: [f64; 3], c_prev: f64) -> (f64, f64) {
        let act = |which: usize, x: f64| self.act(RecurrentKind::Lstm, direction, which, x);
        let i = act(0, pre[0] + peephole[0] * c_prev);
        let f = if self.input_forget { 1.0 - i } else { act(0, pre[2] + peephole[2] * c_prev) };
        let candidate = act(1, pre[3]);
        let c = f * c_prev + i * candidate;
        let o = act(0, pre[1] + peephole[1] * c);
        // The cell state itself is not clipped on its way into h (onnxruntime's reading; the
        // spec's "input of activations" would include it).
        let h = self.activations[direction * RecurrentKind::Lstm.activations_per_direction() + 2].apply(c);
        (o * h, c)
    }

    /// The GRU update and reset gates `(z, r)` from their pre-activations.
    pub fn gru_gates(&self, direction: usize, pre_z: f64, pre_r: f64) -> (f64, f64) {
        (self.act(RecurrentKind::Gru, direction, 0, pre_z), self.act(RecurrentKind::Gru, direction, 0, pre_r))
    }

    /// The GRU candidate `h~` from its pre-activation; then `H = (1 - z) h~ + z H'`.
    pub fn gru_candidate(&self, direction: usize, pre: f64) -> f64 {
        self.act(RecurrentKind::Gru, direction, 1, pre)
    }

    /// One RNN unit: `H` from its pre-activation.
    pub fn rnn_unit(&self, direction: usize, pre: f64) -> f64 {
        self.act(RecurrentKind::Rnn, direction, 0, pre)
    }
}

/// Recurrent ops have no gradient rule yet: differentiating through one is this error, never
/// a silent zero.
pub fn no_gradient(kind: RecurrentKind) -> GradError {
    GradError::Unsupported {
        op: kind.mnemonic(),
        message: format!("no gradient for tsr.{} (recurrent ops have no gradient rule yet)", kind.mnemonic()),
    }
}

/// Checks that `t` has the dimensions `want`, naming the operand otherwise.
fn expect_dims(t: &TensorType, want: &[Dim], what: &str) -> Result<(), String> {
    if t.dims != want {
        let dims: Vec<String> = want.iter().map(Dim::to_string).collect();
        return Err(format!("{what} must be [{}], got {t}", dims.join(", ")));
    }
    Ok(())
}

/// The shape rule (see the module docs for the operands).
pub fn infer(inputs: &[&TensorType], kind: RecurrentKind, cell: &Cell) -> ShapeResult {
    let name = kind.mnemonic();
    let required = kind.required_operands();
    if inputs.len() != required && inputs.len() != required + 1 {
        return Err(format!("{name} takes {required} operands and optionally sequence_lens, got {}", inputs.len()));
    }
    cell.check(kind)?;
    let x = inputs[0];
    if x.rank() != 3 || !x.dtype.is_float() {
        return Err(format!("{name} input must be a float [seq, batch, input], got {x}"));
    }
    let (seq, batch, input) = (x.dims[0].clone(), x.dims[1].clone(), x.dims[2].clone());
    let d = Dim::Static(cell.direction.num_directions() as u64);
    let h = cell.hidden_size as u64;
    let gh = Dim::Static(h.saturating_mul(kind.gates() as u64));
    let hd = Dim::Static(h);
    let state = [d.clone(), batch.clone(), hd.clone()];
    let mut expected: Vec<(Vec<Dim>, &str)> = vec![
        (vec![d.clone(), gh.clone(), input], "w"),
        (vec![d.clone(), gh, hd.clone()], "r"),
        (vec![d.clone(), Dim::Static(h.saturating_mul(2 * kind.gates() as u64))], "b"),
        (state.to_vec(), "initial_h"),
    ];
    if kind == RecurrentKind::Lstm {
        expected.push((state.to_vec(), "initial_c"));
        expected.push((vec![d.clone(), Dim::Static(h.saturating_mul(3))], "p"));
    }
    for (i, (dims, what)) in expected.iter().enumerate() {
        let t = inputs[i + 1];
        if t.dtype != x.dtype {
            return Err(format!("{name} {what} must have the input's element type {}, got {t}", x.dtype));
        }
        expect_dims(t, dims, &format!("{name} {what}"))?;
    }
    if let Some(lens) = inputs.get(required) {
        if !lens.dtype.is_int() {
            return Err(format!("{name} sequence_lens must be integers, got {lens}"));
        }
        expect_dims(lens, std::slice::from_ref(&batch), &format!("{name} sequence_lens"))?;
    }
    let y = TensorType::new(x.dtype, vec![seq, d, batch, hd]);
    let state = TensorType::new(x.dtype, state.to_vec());
    Ok(std::iter::once(y).chain(std::iter::repeat_n(state, kind.num_results() - 1)).collect())
}

/// FLOPs: per step, direction and batch entry, the two projections (`2 G H (I + H)`) and a
/// few per gate unit for biases, gating and the state update (counted as `4 G H`); activations
/// count 1 each like other transcendentals. Every step is counted, whatever `sequence_lens`.
pub fn flops(inputs: &[&[u64]], kind: RecurrentKind, cell: &Cell) -> FlopResult {
    let x = operand_shape(inputs, 0)?;
    let [seq, batch, input] =
        <[u64; 3]>::try_from(x).map_err(|_| format!("{} input must be rank 3", kind.mnemonic()))?;
    let h = cell.hidden_size.max(0) as u128;
    let gh = h * kind.gates() as u128;
    let per_unit_step = gh.saturating_mul(2 * (input as u128).saturating_add(h)).saturating_add(4 * gh);
    let steps = num_elements(&[seq, batch, cell.direction.num_directions() as u64]);
    Ok(steps.saturating_mul(per_unit_step))
}

/// The step counts of each batch entry: `sequence_lens`, each in `0..=seq`, or all `seq`.
pub fn step_counts(lens: Option<&Tensor>, seq: usize, batch: usize) -> Result<Vec<usize>, String> {
    let Some(lens) = lens else {
        return Ok(vec![seq; batch]);
    };
    ints(lens)?
        .iter()
        .map(|&n| {
            usize::try_from(n)
                .ok()
                .filter(|&n| n <= seq)
                .ok_or_else(|| format!("sequence length {n} is outside 0..={seq}"))
        })
        .collect()
}

/// The reference semantics (see the module docs); `results` are the concrete result types.
pub fn eval(
    inputs: &[&Tensor],
    kind: RecurrentKind,
    cell: &Cell,
    results: &[TensorType],
) -> Result<Vec<Tensor>, String> {
    let floats = |i: usize| -> Result<std::borrow::Cow<[f64]>, String> {
        super::floats(inputs.get(i).ok_or_else(|| format!("missing operand {i}"))?)
    };
    let x_t = inputs.first().ok_or("missing operand 0")?;
    let [seq, batch, input] = <[usize; 3]>::try_from(x_t.shape.as_slice()).map_err(|_| "input must be rank 3")?;
    let directions = cell.direction.num_directions();
    let (x, w, r, b, h0) = (floats(0)?, floats(1)?, floats(2)?, floats(3)?, floats(4)?);
    let (x, w, r, b, h0) = (&*x, &*w, &*r, &*b, &*h0);
    let (c0, p) = if kind == RecurrentKind::Lstm { (floats(5)?, floats(6)?) } else { Default::default() };
    let (c0, p) = (&*c0, &*p);
    let lens = step_counts(inputs.get(kind.required_operands()).copied(), seq, batch)?;
    let hd = usize::try_from(cell.hidden_size).map_err(|_| "hidden_size out of range")?;
    let gh = kind.gates() * hd;
    let mut y = vec![0.0; seq * directions * batch * hd];
    let mut y_h = h0.to_vec();
    let mut y_c = c0.to_vec();
    // `pre[k]`: gate row k's input projection plus its input bias; `rec[k]`: the recurrent
    // projection plus the recurrent bias (kept apart for GRU's reset gate).
    let mut pre = vec![0.0; gh];
    let mut rec = vec![0.0; gh];
    let mut h_new = vec![0.0; hd];
    for d in 0..directions {
        let (w, r, b) = (&w[d * gh * input..][..gh * input], &r[d * gh * hd..][..gh * hd], &b[d * 2 * gh..][..2 * gh]);
        for (n, &len) in lens.iter().enumerate() {
            let state = (d * batch + n) * hd;
            for step in 0..len {
                let t = if cell.direction.is_reverse(d) { len - 1 - step } else { step };
                let xt = &x[(t * batch + n) * input..][..input];
                let h_prev = &y_h[state..state + hd];
                for k in 0..gh {
                    pre[k] = dot(&w[k * input..][..input], xt) + b[k];
                    rec[k] = dot(&r[k * hd..][..hd], h_prev) + b[gh + k];
                }
                match kind {
                    RecurrentKind::Lstm => {
                        let gate = |q: usize, j: usize| pre[q * hd + j] + rec[q * hd + j];
                        for j in 0..hd {
                            let peephole = [p[d * 3 * hd + j], p[(d * 3 + 1) * hd + j], p[(d * 3 + 2) * hd + j]];
                            let pre4 = [gate(0, j), gate(1, j), gate(2, j), gate(3, j)];
                            let (h, c) = cell.lstm_unit(d, pre4, peephole, y_c[state + j]);
                            h_new[j] = h;
                            y_c[state + j] = c;
                        }
                    }
                    RecurrentKind::Gru => {
                        let gates: Vec<(f64, f64)> =
                            (0..hd).map(|j| cell.gru_gates(d, pre[j] + rec[j], pre[hd + j] + rec[hd + j])).collect();
                        let reset_h: Vec<f64> = (0..hd).map(|j| gates[j].1 * h_prev[j]).collect();
                        for j in 0..hd {
                            let (z, reset) = gates[j];
                            let recurrent = if cell.linear_before_reset {
                                reset * rec[2 * hd + j]
                            } else {
                                dot(&r[(2 * hd + j) * hd..][..hd], &reset_h) + b[gh + 2 * hd + j]
                            };
                            let candidate = cell.gru_candidate(d, pre[2 * hd + j] + recurrent);
                            h_new[j] = (1.0 - z) * candidate + z * h_prev[j];
                        }
                    }
                    RecurrentKind::Rnn => {
                        for j in 0..hd {
                            h_new[j] = cell.rnn_unit(d, pre[j] + rec[j]);
                        }
                    }
                }
                y_h[state..state + hd].copy_from_slice(&h_new);
                y[((t * directions + d) * batch + n) * hd..][..hd].copy_from_slice(&h_new);
            }
        }
    }
    let dtype = x_t.dtype;
    let mut outs = vec![
        Tensor::from_f64(dtype, vec![seq, directions, batch, hd], y),
        Tensor::from_f64(dtype, vec![directions, batch, hd], y_h),
    ];
    if kind == RecurrentKind::Lstm {
        outs.push(Tensor::from_f64(dtype, vec![directions, batch, hd], y_c));
    }
    if outs.iter().zip(results).any(|(t, want)| t.tensor_type() != *want) || outs.len() != results.len() {
        return Err(format!("{} results do not match their types", kind.mnemonic()));
    }
    Ok(outs)
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{assert_close, eval, eval_err, f32s, f64s, i64s};
    use super::super::Op;
    use super::*;
    use crate::dtype::DType;

    fn op(kind: RecurrentKind, cell: Cell) -> Op {
        Op::Recurrent { kind, cell }
    }

    fn sigmoid(x: f64) -> f64 {
        1.0 / (1.0 + (-x).exp())
    }

    /// A one-unit RNN over two steps, by hand: H1 = tanh(0.5 * 1 + 0.2) and
    /// H2 = tanh(0.5 * -2 + 0.3 * H1 + 0.2) with W = 0.5, R = 0.3, Wb + Rb = 0.1 + 0.1.
    #[test]
    fn rnn_steps_by_hand() {
        let x = f64s(&[2, 1, 1], &[1.0, -2.0]);
        let (w, r, b, h0) =
            (f64s(&[1, 1, 1], &[0.5]), f64s(&[1, 1, 1], &[0.3]), f64s(&[1, 2], &[0.1, 0.1]), f64s(&[1, 1, 1], &[0.0]));
        let rnn = op(RecurrentKind::Rnn, Cell::new(RecurrentKind::Rnn, 1, Direction::Forward));
        let out = eval(&rnn, &[&x, &w, &r, &b, &h0]).expect("rnn");
        let h1 = (0.5f64 + 0.2).tanh();
        let h2 = (-1.0 + 0.3 * h1 + 0.2).tanh();
        assert_close(&out[0], DType::F64, &[2, 1, 1, 1], &[h1, h2], 1e-15);
        assert_close(&out[1], DType::F64, &[1, 1, 1], &[h2], 1e-15);
        // Reverse reads x[1] first; sequence_lens = [1] runs only x[0] and leaves y[1] zero.
        let reverse = op(RecurrentKind::Rnn, Cell::new(RecurrentKind::Rnn, 1, Direction::Reverse));
        let out = eval(&reverse, &[&x, &w, &r, &b, &h0]).expect("reverse");
        let g1 = (-1.0f64 + 0.2).tanh();
        let g2 = (0.5 + 0.3 * g1 + 0.2).tanh();
        assert_close(&out[0], DType::F64, &[2, 1, 1, 1], &[g2, g1], 1e-15);
        let lens = i64s(&[1], &[1]);
        let out = eval(&rnn, &[&x, &w, &r, &b, &h0, &lens]).expect("lens");
        assert_close(&out[0], DType::F64, &[2, 1, 1, 1], &[h1, 0.0], 1e-15);
        assert_close(&out[1], DType::F64, &[1, 1, 1], &[h1], 1e-15);
        // Length 0: no step runs, y_h is the initial state.
        let out = eval(&rnn, &[&x, &w, &r, &b, &f64s(&[1, 1, 1], &[0.25]), &i64s(&[1], &[0])]).expect("empty");
        assert_close(&out[1], DType::F64, &[1, 1, 1], &[0.25], 0.0);
    }

    /// One LSTM step of one unit with peepholes, by hand (gates i o f c).
    #[test]
    fn lstm_step_with_peepholes_by_hand() {
        let x = f64s(&[1, 1, 1], &[1.0]);
        let w = f64s(&[1, 4, 1], &[0.1, 0.2, 0.3, 0.4]);
        let r = f64s(&[1, 4, 1], &[0.5, 0.6, 0.7, 0.8]);
        let b = f64s(&[1, 8], &[0.0; 8]);
        let (h0, c0) = (f64s(&[1, 1, 1], &[1.0]), f64s(&[1, 1, 1], &[2.0]));
        let p = f64s(&[1, 3], &[0.01, 0.02, 0.03]);
        let lstm = op(RecurrentKind::Lstm, Cell::new(RecurrentKind::Lstm, 1, Direction::Forward));
        let out = eval(&lstm, &[&x, &w, &r, &b, &h0, &c0, &p]).expect("lstm");
        let i = sigmoid(0.1 + 0.5 + 0.01 * 2.0);
        let f = sigmoid(0.3 + 0.7 + 0.03 * 2.0);
        let c = f * 2.0 + i * (0.4f64 + 0.8).tanh();
        let o = sigmoid(0.2 + 0.6 + 0.02 * c);
        let h = o * c.tanh();
        assert_close(&out[0], DType::F64, &[1, 1, 1, 1], &[h], 1e-15);
        assert_close(&out[1], DType::F64, &[1, 1, 1], &[h], 1e-15);
        assert_close(&out[2], DType::F64, &[1, 1, 1], &[c], 1e-15);
        // input_forget couples the gates (f = 1 - i); clip bounds every pre-activation.
        let mut cell = Cell::new(RecurrentKind::Lstm, 1, Direction::Forward);
        cell.input_forget = true;
        cell.clip = Some(0.5);
        let out = eval(&op(RecurrentKind::Lstm, cell), &[&x, &w, &r, &b, &h0, &c0, &p]).expect("coupled");
        let i = sigmoid(0.5);
        let c = (1.0 - i) * 2.0 + i * 0.5f64.tanh();
        let o = sigmoid((0.8 + 0.02 * c).min(0.5));
        assert_close(&out[2], DType::F64, &[1, 1, 1], &[c], 1e-15);
        assert_close(&out[1], DType::F64, &[1, 1, 1], &[o * c.tanh()], 1e-15);
    }

    /// One GRU step of one unit, both placements of the reset gate (gates z r h).
    #[test]
    fn gru_step_by_hand() {
        let x = f64s(&[1, 1, 1], &[1.0]);
        let w = f64s(&[1, 3, 1], &[0.1, 0.2, 0.3]);
        let r = f64s(&[1, 3, 1], &[0.4, 0.5, 0.6]);
        let b = f64s(&[1, 6], &[0.0, 0.0, 0.0, 0.0, 0.0, 0.7]);
        let h0 = f64s(&[1, 1, 1], &[2.0]);
        let z = sigmoid(0.1 + 0.8);
        let reset = sigmoid(0.2 + 1.0);
        let mut cell = Cell::new(RecurrentKind::Gru, 1, Direction::Forward);
        for (linear_before_reset, candidate) in
            [(false, 0.3 + 0.6 * reset * 2.0 + 0.7), (true, 0.3 + reset * (1.2 + 0.7))]
        {
            cell.linear_before_reset = linear_before_reset;
            let out = eval(&op(RecurrentKind::Gru, cell.clone()), &[&x, &w, &r, &b, &h0]).expect("gru");
            let h = (1.0 - z) * f64::tanh(candidate) + z * 2.0;
            assert_close(&out[1], DType::F64, &[1, 1, 1], &[h], 1e-15);
        }
    }

    #[test]
    fn activations_follow_onnx() {
        let act = |kind, alpha, beta, x| Activation { kind, alpha, beta }.apply(x);
        use ActivationKind::*;
        assert_eq!(act(Relu, 0.0, 0.0, -1.0), 0.0);
        assert_eq!(act(Affine, 2.0, 0.5, 3.0), 6.5);
        assert_eq!(act(LeakyRelu, 0.1, 0.0, -2.0), -0.2);
        assert_eq!((act(ThresholdedRelu, 1.0, 0.0, 1.0), act(ThresholdedRelu, 1.0, 0.0, 1.5)), (0.0, 1.5));
        assert_eq!(act(ScaledTanh, 2.0, 0.5, 2.0), 2.0 * 1.0f64.tanh());
        assert_eq!((act(HardSigmoid, 0.2, 0.5, 1.0), act(HardSigmoid, 0.2, 0.5, 9.0)), (0.7, 1.0));
        assert_eq!(act(Elu, 2.0, 0.0, -1.0), 2.0 * (-1.0f64).exp_m1());
        assert_eq!(act(Softsign, 0.0, 0.0, -3.0), -0.75);
        assert_eq!(act(Softplus, 0.0, 0.0, 800.0), 800.0);
        assert!((act(Softplus, 0.0, 0.0, 0.0) - 2f64.ln()).abs() < 1e-15);
        let text = "sigmoid; affine(2.5, -0.125); leaky_relu(0.01)";
        let parsed = Cell::parse_activations(text).expect("parse");
        let cell = Cell { activations: parsed, ..Cell::new(RecurrentKind::Lstm, 1, Direction::Forward) };
        assert_eq!(cell.activations_text(), text);
        assert_eq!(
            Cell::parse_activations("affine(1)"),
            Err("activation 'affine' takes 2 parameter(s), got 'affine(1)'".into())
        );
        assert_eq!(Cell::parse_activations("gelu"), Err("unknown activation 'gelu'".into()));
    }

    #[test]
    fn ill_typed_operands_are_named() {
        let rnn = op(RecurrentKind::Rnn, Cell::new(RecurrentKind::Rnn, 2, Direction::Bidirectional));
        let x = f32s(&[3, 2, 4], &[0.0; 24]);
        let w = f32s(&[2, 2, 4], &[0.0; 16]);
        let r = f32s(&[2, 2, 2], &[0.0; 8]);
        let b = f32s(&[2, 4], &[0.0; 8]);
        let h0 = f32s(&[2, 2, 2], &[0.0; 8]);
        let out = eval(&rnn, &[&x, &w, &r, &b, &h0]).expect("well typed");
        assert_eq!(out[0].shape, [3, 2, 2, 2]);
        assert_eq!(eval_err(&rnn, &[&x, &w, &r, &b]), "rnn takes 5 operands and optionally sequence_lens, got 4");
        assert_eq!(eval_err(&rnn, &[&x, &w, &r, &b, &b]), "rnn initial_h must be [2, 2, 2], got tensor<2x4xf32>");
        let lens = f32s(&[2], &[1.0, 1.0]);
        assert_eq!(
            eval_err(&rnn, &[&x, &w, &r, &b, &h0, &lens]),
            "rnn sequence_lens must be integers, got tensor<2xf32>"
        );
        assert_eq!(eval_err(&rnn, &[&x, &w, &r, &b, &h0, &i64s(&[2], &[1, 4])]), "sequence length 4 is outside 0..=3");
        let mut cell = Cell::new(RecurrentKind::Rnn, 2, Direction::Forward);
        cell.activations.push(Activation::plain(ActivationKind::Relu));
        assert_eq!(
            eval_err(&op(RecurrentKind::Rnn, cell.clone()), &[&x, &w, &r, &b, &h0]),
            "rnn forward needs 1 activations, got 2"
        );
        cell.activations.pop();
        cell.input_forget = true;
        assert_eq!(cell.check(RecurrentKind::Rnn), Err("input_forget is an LSTM attribute, not one of rnn".into()));
    }

    #[test]
    fn flops_count_both_projections_per_step() {
        let cell = Cell::new(RecurrentKind::Lstm, 3, Direction::Bidirectional);
        // 5 steps * 2 batch * 2 directions * (2 * 12 * (4 + 3) + 4 * 12).
        let flops = flops(&[&[5, 2, 4]], RecurrentKind::Lstm, &cell).expect("flops");
        assert_eq!(flops, 20 * (168 + 48));
    }

    #[test]
    fn gradients_are_refused_by_name() {
        assert_eq!(
            no_gradient(RecurrentKind::Lstm).to_string(),
            "gradient of tsr.lstm: no gradient for tsr.lstm (recurrent ops have no gradient rule yet)"
        );
    }
}
