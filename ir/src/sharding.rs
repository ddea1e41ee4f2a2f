//! Device meshes and per-value shardings, in the model of GSPMD, Shardy and MLIR's `shard`
//! dialect.
//!
//! A [`Mesh`] is an ordered list of named axes (`dp=2,tp=4`); ranks are numbered row-major over
//! the axes (the last axis varies fastest). A [`Sharding`] says, per tensor dimension, which mesh
//! axes split it (major to minor: `[{dp, tp}]` splits a dimension into `dp * tp` blocks and rank
//! coordinates `(d, t)` hold block `d * tp + t`), and optionally that the local values are
//! partial sums (or maxima) over some axes still to be reduced. Axes not named anywhere replicate.
//!
//! Text forms (documented in `docs/ARCHITECTURE.md`): a mesh is `dp=2,tp=4`; a sharding is
//! `[{dp}, {}]`, `[{}, {tp}] partial_sum{dp}`, `[]` for a replicated scalar. Per-rank programs
//! print shardings in `//` comments, which MLIR ignores, so the program text still parses in MLIR.
//!
//! [`ShardingRule`] is how an op states its sharding behaviour (Shardy's "op sharding rule"):
//! every operand and result dimension maps to a factor or to nothing (must be replicated);
//! factors shared by operands and results are parallel, factors only in operands are reductions
//! whose sharding makes the results partial.

use crate::ops::Op;
use crate::tensor::Tensor;
use crate::types::{Dim, TensorType};
use std::fmt;

/// One named axis of a device mesh.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MeshAxis {
    pub name: String,
    pub size: u64,
}

/// A named device mesh: ordered axes, ranks numbered row-major over them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Mesh {
    axes: Vec<MeshAxis>,
}

/// A mesh text that does not parse: the 1-based column (in characters) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("mesh '{text}', column {column}: {message}")]
pub struct MeshError {
    pub text: String,
    pub column: usize,
    pub message: String,
}

fn is_axis_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Mesh {
    /// Builds a mesh from `(name, size)` pairs; the same checks as [`Mesh::parse`].
    pub fn new(axes: &[(&str, u64)]) -> Result<Mesh, String> {
        let text = axes.iter().map(|(n, s)| format!("{n}={s}")).collect::<Vec<_>>().join(",");
        Mesh::parse(&text).map_err(|e| e.to_string())
    }

    /// Parses `name=size(,name=size)*`; whitespace around tokens is allowed. Errors point at the
    /// offending entry: unknown syntax, a size of zero or not a number, a repeated axis, too many
    /// devices.
    pub fn parse(text: &str) -> Result<Mesh, MeshError> {
        let err = |offset: usize, message: String| MeshError {
            text: text.to_string(),
            column: crate::key_value::column(text, offset),
            message,
        };
        if text.trim().is_empty() {
            return Err(err(0, "expected at least one axis, as in 'dp=2,tp=4'".into()));
        }
        let mut axes: Vec<MeshAxis> = Vec::new();
        let mut devices: u64 = 1;
        for item in crate::key_value::items(text) {
            let at = item.at;
            let Some((name, size_text)) = item.key_value() else {
                return Err(err(at, format!("expected 'name=size', found '{}'", item.text)));
            };
            if !is_axis_name(name) {
                return Err(err(at, format!("'{name}' is not an axis name (letters, digits and '_')")));
            }
            let size_at = item.value_at();
            let size: u64 = size_text.parse().map_err(|_| {
                err(size_at, format!("size of axis '{name}' must be a positive integer, got '{size_text}'"))
            })?;
            if size == 0 {
                return Err(err(size_at, format!("axis '{name}' has size 0")));
            }
            if axes.iter().any(|a| a.name == name) {
                return Err(err(at, format!("axis '{name}' appears twice")));
            }
            devices = devices
                .checked_mul(size)
                .filter(|&d| d <= 1 << 24)
                .ok_or_else(|| err(size_at, "the mesh has more than 16777216 devices".to_string()))?;
            axes.push(MeshAxis { name: name.to_string(), size });
        }
        Ok(Mesh { axes })
    }

    pub fn axes(&self) -> &[MeshAxis] {
        &self.axes
    }

    /// The size of axis `name`, if the mesh has it.
    pub fn axis_size(&self, name: &str) -> Option<u64> {
        self.axes.iter().find(|a| a.name == name).map(|a| a.size)
    }

    fn axis_index(&self, name: &str) -> Result<usize, String> {
        self.axes.iter().position(|a| a.name == name).ok_or_else(|| format!("the mesh {self} has no axis '{name}'"))
    }

    /// Number of devices (the product of the axis sizes; at most 2^24 by construction).
    pub fn num_devices(&self) -> usize {
        self.axes.iter().map(|a| a.size as usize).product()
    }

    /// The coordinates of `rank`, one per axis.
    pub fn coords(&self, rank: usize) -> Vec<u64> {
        let mut rest = rank as u64;
        let mut coords = vec![0; self.axes.len()];
        for (i, a) in self.axes.iter().enumerate().rev() {
            coords[i] = rest % a.size;
            rest /= a.size;
        }
        coords
    }

    /// The rank at `coords` (one per axis, each in range).
    pub fn rank_of(&self, coords: &[u64]) -> usize {
        coords.iter().zip(&self.axes).fold(0u64, |acc, (&c, a)| acc * a.size + c) as usize
    }

    /// Product of the sizes of `axes`.
    pub fn group_size(&self, axes: &[String]) -> Result<u64, String> {
        axes.iter().map(|a| self.axis_index(a).map(|i| self.axes[i].size)).product()
    }

    /// The position of `rank` within its group over `axes`: its coordinates on those axes,
    /// linearized major to minor in the order given.
    pub fn index_in_group(&self, rank: usize, axes: &[String]) -> Result<u64, String> {
        let coords = self.coords(rank);
        let mut index = 0;
        for a in axes {
            let i = self.axis_index(a)?;
            index = index * self.axes[i].size + coords[i];
        }
        Ok(index)
    }

    /// The ranks that share `rank`'s coordinates on every axis outside `axes`, ordered by their
    /// [`Mesh::index_in_group`]: the communicator group of a collective over `axes`.
    pub fn group(&self, rank: usize, axes: &[String]) -> Result<Vec<usize>, String> {
        let indices = axes.iter().map(|a| self.axis_index(a)).collect::<Result<Vec<_>, _>>()?;
        for (i, a) in indices.iter().enumerate() {
            if indices[..i].contains(a) {
                return Err(format!("axis '{}' is named twice in one group", self.axes[*a].name));
            }
        }
        let size: u64 = indices.iter().map(|&i| self.axes[i].size).product();
        let base = self.coords(rank);
        let mut group = Vec::with_capacity(size as usize);
        for mut k in 0..size {
            let mut coords = base.clone();
            for &i in indices.iter().rev() {
                coords[i] = k % self.axes[i].size;
                k /= self.axes[i].size;
            }
            group.push(self.rank_of(&coords));
        }
        Ok(group)
    }

    /// The rank that differs from `rank` only in its coordinate on `axis`, which is `coord`.
    pub fn peer(&self, rank: usize, axis: &str, coord: u64) -> Result<usize, String> {
        let i = self.axis_index(axis)?;
        if coord >= self.axes[i].size {
            return Err(format!("coordinate {coord} is outside axis '{axis}' of size {}", self.axes[i].size));
        }
        let mut coords = self.coords(rank);
        coords[i] = coord;
        Ok(self.rank_of(&coords))
    }
}

impl fmt::Display for Mesh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.axes.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}={}", a.name, a.size)?;
        }
        Ok(())
    }
}

/// How the local values of a partial tensor combine into the global value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PartialKind {
    Sum,
    Max,
}

impl PartialKind {
    pub fn name(self) -> &'static str {
        match self {
            PartialKind::Sum => "sum",
            PartialKind::Max => "max",
        }
    }

    pub fn from_name(s: &str) -> Option<PartialKind> {
        match s {
            "sum" => Some(PartialKind::Sum),
            "max" => Some(PartialKind::Max),
            _ => None,
        }
    }
}

/// Axes a partial value still has to be reduced over, and how.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Partial {
    pub kind: PartialKind,
    pub axes: Vec<String>,
}

/// How one value is laid out over a mesh: per dimension the axes splitting it (major to minor),
/// and whether the local values are partial.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Sharding {
    pub dims: Vec<Vec<String>>,
    pub partial: Option<Partial>,
}

impl Sharding {
    /// Fully replicated over every axis.
    pub fn replicated(rank: usize) -> Sharding {
        Sharding { dims: vec![Vec::new(); rank], partial: None }
    }

    pub fn is_replicated(&self) -> bool {
        self.partial.is_none() && self.dims.iter().all(Vec::is_empty)
    }

    /// Every axis the sharding uses, dims first, then partial axes.
    pub fn used_axes(&self) -> impl Iterator<Item = &String> {
        self.dims.iter().flatten().chain(self.partial.iter().flat_map(|p| &p.axes))
    }

    /// The sharding without its partial state.
    pub fn without_partial(&self) -> Sharding {
        Sharding { dims: self.dims.clone(), partial: None }
    }

    /// Parses the text form (`[{dp}, {}] partial_sum{tp}`).
    pub fn parse(text: &str) -> Result<Sharding, String> {
        let text = text.trim();
        let (dims_text, rest) = match (text.find('['), text.find(']')) {
            (Some(0), Some(close)) => (&text[1..close], text[close + 1..].trim()),
            _ => return Err(format!("sharding '{text}' must start with '[' and have a matching ']'")),
        };
        let braced = |s: &str| -> Result<Vec<String>, String> {
            let s = s.trim();
            let inner = s
                .strip_prefix('{')
                .and_then(|s| s.strip_suffix('}'))
                .ok_or_else(|| format!("expected '{{axes}}', found '{s}'"))?;
            inner
                .split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(|a| if is_axis_name(a) { Ok(a.to_string()) } else { Err(format!("'{a}' is not an axis name")) })
                .collect()
        };
        let dims = if dims_text.trim().is_empty() {
            Vec::new()
        } else {
            // Split at the commas between braces, not those inside them.
            let mut dims = Vec::new();
            let mut depth = 0;
            let mut start = 0;
            for (i, c) in dims_text.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        dims.push(braced(&dims_text[start..i])?);
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            dims.push(braced(&dims_text[start..])?);
            dims
        };
        let partial = if rest.is_empty() {
            None
        } else {
            let kind_text = rest
                .strip_prefix("partial_")
                .and_then(|r| r.split_once('{').map(|(k, _)| k))
                .ok_or_else(|| format!("expected 'partial_sum{{axes}}' or 'partial_max{{axes}}', found '{rest}'"))?;
            let kind =
                PartialKind::from_name(kind_text).ok_or_else(|| format!("unknown partial kind '{kind_text}'"))?;
            let axes = braced(&rest["partial_".len() + kind_text.len()..])?;
            if axes.is_empty() {
                return Err("a partial sharding needs at least one axis".into());
            }
            Some(Partial { kind, axes })
        };
        let sharding = Sharding { dims, partial };
        let used: Vec<&String> = sharding.used_axes().collect();
        for (i, a) in used.iter().enumerate() {
            if used[..i].contains(a) {
                return Err(format!("axis '{a}' is used twice in sharding '{text}'"));
            }
        }
        Ok(sharding)
    }

    /// Checks the sharding against a mesh and the value's global type: rank, known axes used at
    /// most once, and every sharded dimension static and divisible by its axes.
    pub fn check(&self, mesh: &Mesh, ty: &TensorType) -> Result<(), String> {
        if self.dims.len() != ty.rank() {
            return Err(format!(
                "sharding {self} has {} dimensions but the type {ty} has {}",
                self.dims.len(),
                ty.rank()
            ));
        }
        let used: Vec<&String> = self.used_axes().collect();
        for (i, a) in used.iter().enumerate() {
            if used[..i].contains(a) {
                return Err(format!("axis '{a}' is used twice in sharding {self}"));
            }
            mesh.group_size(std::slice::from_ref(a))?;
        }
        for (d, (axes, dim)) in self.dims.iter().zip(&ty.dims).enumerate() {
            if axes.is_empty() {
                continue;
            }
            let parts = mesh.group_size(axes)?;
            match dim {
                Dim::Static(n) if n % parts == 0 => {}
                Dim::Static(n) => {
                    return Err(format!("dimension {d} of {ty} ({n}) is not divisible by {parts} (axes {axes:?})"))
                }
                Dim::Symbolic(s) => {
                    return Err(format!("dimension {d} of {ty} is symbolic ('{s}') and cannot be split"))
                }
            }
        }
        Ok(())
    }

    /// The type one rank holds: every sharded dimension divided by its axes' sizes.
    pub fn local_type(&self, mesh: &Mesh, ty: &TensorType) -> Result<TensorType, String> {
        self.check(mesh, ty)?;
        let dims = ty
            .dims
            .iter()
            .zip(&self.dims)
            .map(|(dim, axes)| match dim {
                Dim::Static(n) if !axes.is_empty() => mesh.group_size(axes).map(|p| Dim::Static(n / p)),
                _ => Ok(dim.clone()),
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(TensorType::new(ty.dtype, dims))
    }

    /// The block of the global tensor `t` that `rank` holds. A partial sharding cannot be cut
    /// from a global value, so it is an error.
    pub fn shard_tensor(&self, mesh: &Mesh, rank: usize, t: &Tensor) -> Result<Tensor, String> {
        if self.partial.is_some() {
            return Err(format!("cannot cut a partial sharding ({self}) from a global tensor"));
        }
        let ty = t.tensor_type();
        let local = self.local_type(mesh, &ty)?;
        if local == ty {
            return Ok(t.clone());
        }
        let mut starts = Vec::with_capacity(ty.rank());
        let mut ends = Vec::with_capacity(ty.rank());
        let mut shape = Vec::with_capacity(ty.rank());
        for (axes, (&global, dim)) in self.dims.iter().zip(t.shape.iter().zip(&local.dims)) {
            let n = dim.as_static().unwrap_or(global as u64) as i64;
            let block = if axes.is_empty() { 0 } else { mesh.index_in_group(rank, axes)? as i64 };
            starts.push(block * n);
            ends.push(block * n + n);
            shape.push(n as u64);
        }
        let steps = vec![1; ty.rank()];
        let op = Op::Slice { starts, ends, steps };
        let mut out = op.eval(&[t], &[TensorType::of_static(t.dtype, &shape)])?;
        out.pop().ok_or_else(|| "slice gave no result".to_string())
    }
}

impl fmt::Display for Sharding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let braced = |axes: &[String]| format!("{{{}}}", axes.join(", "));
        let dims: Vec<String> = self.dims.iter().map(|a| braced(a)).collect();
        write!(f, "[{}]", dims.join(", "))?;
        if let Some(p) = &self.partial {
            write!(f, " partial_{}{}", p.kind.name(), braced(&p.axes))?;
        }
        Ok(())
    }
}

/// An op's sharding behaviour as factors (Shardy's op sharding rule). Each operand and result
/// dimension is either a factor index or `None` (that dimension must be replicated). A factor
/// appearing in a result is parallel: splitting it splits every dimension it labels the same way.
/// A factor in operands only is a reduction of kind `reduction`: splitting it leaves the results
/// partial. `factor_sizes` are the extents the mesh axes must divide; `None` for a symbolic extent,
/// which is never split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardingRule {
    pub operands: Vec<Vec<Option<usize>>>,
    pub results: Vec<Vec<Option<usize>>>,
    pub factor_sizes: Vec<Option<u64>>,
    /// How reduction factors combine; `None` when the op has no splittable reduction factor.
    pub reduction: Option<PartialKind>,
}

impl ShardingRule {
    /// No dimension may be split: operands and results replicated.
    pub fn replicated(operands: &[&TensorType], results: &[TensorType]) -> ShardingRule {
        ShardingRule {
            operands: operands.iter().map(|t| vec![None; t.rank()]).collect(),
            results: results.iter().map(|t| vec![None; t.rank()]).collect(),
            factor_sizes: Vec::new(),
            reduction: None,
        }
    }

    /// One factor per dimension of `ty`, shared by every operand and result of that same shape
    /// (elementwise ops).
    pub fn elementwise(n_operands: usize, ty: &TensorType, n_results: usize) -> ShardingRule {
        let dims: Vec<Option<usize>> = (0..ty.rank()).map(Some).collect();
        ShardingRule {
            operands: vec![dims.clone(); n_operands],
            results: vec![dims; n_results],
            factor_sizes: ty.dims.iter().map(Dim::as_static).collect(),
            reduction: None,
        }
    }

    /// Adds a factor of extent `dim` and returns its index.
    pub fn factor(&mut self, dim: &Dim) -> usize {
        self.factor_sizes.push(dim.as_static());
        self.factor_sizes.len() - 1
    }

    /// Marks dimension `d` of every operand and result labelled `factor` as replicated, by
    /// dropping the factor from the labels (used for axes an op needs whole, like softmax's).
    pub fn forbid(&mut self, factor: usize) {
        for dims in self.operands.iter_mut().chain(self.results.iter_mut()) {
            for d in dims.iter_mut() {
                if *d == Some(factor) {
                    *d = None;
                }
            }
        }
    }

    /// Whether `factor` labels some result dimension.
    pub fn is_parallel(&self, factor: usize) -> bool {
        self.results.iter().flatten().any(|d| *d == Some(factor))
    }
}

/// Shardings a graph's boundary was given, over the one mesh they name: what an importer reads
/// off a model's arguments and results (StableHLO's `sdy.sharding`/`mhlo.sharding`). A side
/// table of [`crate::graph::Graph`]; the `shard` pass seeds inputs from it, exporters write it
/// back. Inputs are keyed by name (passes keep input names), outputs by position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoShardings {
    pub mesh: Mesh,
    pub inputs: Vec<(String, Sharding)>,
    pub outputs: Vec<(usize, Sharding)>,
}

impl IoShardings {
    /// The sharding given to input `name`, if any.
    pub fn input(&self, name: &str) -> Option<&Sharding> {
        self.inputs.iter().find(|(n, _)| n == name).map(|(_, s)| s)
    }

    /// The sharding given to output `index`, if any.
    pub fn output(&self, index: usize) -> Option<&Sharding> {
        self.outputs.iter().find(|(i, _)| *i == index).map(|(_, s)| s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;

    #[test]
    fn meshes_parse_print_and_number_ranks_row_major() {
        let mesh = Mesh::parse(" dp = 2, tp=4 ").expect("mesh");
        assert_eq!(mesh.to_string(), "dp=2,tp=4");
        assert_eq!(mesh.num_devices(), 8);
        assert_eq!(mesh.coords(6), vec![1, 2]);
        assert_eq!(mesh.rank_of(&[1, 2]), 6);
        assert_eq!(mesh.group(6, &["tp".into()]), Ok(vec![4, 5, 6, 7]));
        assert_eq!(mesh.group(6, &["dp".into()]), Ok(vec![2, 6]));
        assert_eq!(mesh.group(6, &["tp".into(), "dp".into()]), Ok(vec![0, 4, 1, 5, 2, 6, 3, 7]));
        assert_eq!(mesh.index_in_group(6, &["tp".into(), "dp".into()]), Ok(5));
        assert_eq!(mesh.peer(6, "dp", 0), Ok(2));
    }

    #[test]
    fn bad_meshes_are_located_errors() {
        let err = |t: &str| Mesh::parse(t).expect_err(t).to_string();
        assert_eq!(err("dp=2,tp=0"), "mesh 'dp=2,tp=0', column 9: axis 'tp' has size 0");
        assert_eq!(err("dp=2,dp=4"), "mesh 'dp=2,dp=4', column 6: axis 'dp' appears twice");
        assert_eq!(
            err("dp=2;tp=4"),
            "mesh 'dp=2;tp=4', column 4: size of axis 'dp' must be a positive integer, got '2;tp=4'"
        );
        assert_eq!(err("dp2"), "mesh 'dp2', column 1: expected 'name=size', found 'dp2'");
        assert_eq!(err(""), "mesh '', column 1: expected at least one axis, as in 'dp=2,tp=4'");
        assert_eq!(
            err("dp=2, 9x=2"),
            "mesh 'dp=2, 9x=2', column 7: '9x' is not an axis name (letters, digits and '_')"
        );
        assert!(err("a=65536,b=65536").contains("more than 16777216 devices"));
    }

    #[test]
    fn shardings_round_trip_and_localize() {
        for text in ["[{dp}, {}]", "[{}, {tp}] partial_sum{dp}", "[]", "[{dp, tp}] partial_max{pp, x}"] {
            assert_eq!(Sharding::parse(text).expect(text).to_string(), text);
        }
        assert!(Sharding::parse("[{dp}, {dp}]").expect_err("twice").contains("used twice"));
        assert!(Sharding::parse("[{dp}] partial_min{tp}").expect_err("kind").contains("unknown partial kind"));
        let mesh = Mesh::parse("dp=2,tp=2").expect("mesh");
        let s = Sharding::parse("[{dp}, {tp}]").expect("sharding");
        let ty = TensorType::of_static(DType::F32, &[4, 6]);
        assert_eq!(s.local_type(&mesh, &ty).expect("local").to_string(), "tensor<2x3xf32>");
        let odd = TensorType::of_static(DType::F32, &[3, 6]);
        assert!(s.local_type(&mesh, &odd).expect_err("uneven").contains("not divisible by 2"));
        let values: Vec<f64> = (0..24).map(f64::from).collect();
        let t = Tensor::from_f64(DType::F32, vec![4, 6], values);
        // Rank 3 is (dp=1, tp=1): rows 2..4, columns 3..6.
        let block = s.shard_tensor(&mesh, 3, &t).expect("block");
        assert_eq!(block.to_f64_vec(), vec![15.0, 16.0, 17.0, 21.0, 22.0, 23.0]);
    }

    #[test]
    fn op_rules_name_parallel_and_reduction_factors() {
        use crate::ops::Op;
        let t = |s: &[u64]| TensorType::of_static(DType::F32, s);
        // [b, s, h*d] -> [b, s, h, d]: the major dims of the split group share a factor of gcd(8, 2).
        let (x, out) = (t(&[2, 3, 8]), t(&[2, 3, 2, 4]));
        let rule = Op::Reshape { shape: out.dims.clone() }.sharding_rule(&[&x], std::slice::from_ref(&out));
        assert_eq!(rule.operands, vec![vec![Some(0), Some(1), Some(2)]]);
        assert_eq!(rule.results, vec![vec![Some(0), Some(1), Some(2), None]]);
        assert_eq!(rule.factor_sizes, vec![Some(2), Some(3), Some(2)]);
        // [1, 1, h] -> [h] (a bias gradient): leading unit dims do not hide the split of h.
        let (x, out) = (t(&[1, 1, 8]), t(&[8]));
        let rule = Op::Reshape { shape: out.dims.clone() }.sharding_rule(&[&x], std::slice::from_ref(&out));
        assert_eq!(rule.operands, vec![vec![None, None, Some(0)]]);
        assert_eq!(rule.results, vec![vec![Some(0)]]);
        // matmul [m, k] x [k, n]: m, n parallel, k a sum reduction.
        let rule = Op::MatMul.sharding_rule(&[&t(&[4, 6]), &t(&[6, 8])], &[t(&[4, 8])]);
        assert_eq!(rule.operands, vec![vec![Some(0), Some(2)], vec![Some(2), Some(1)]]);
        assert_eq!(rule.results, vec![vec![Some(0), Some(1)]]);
        assert!(!rule.is_parallel(2) && rule.reduction == Some(PartialKind::Sum));
        // softmax keeps its axis whole.
        let rule = Op::Softmax { axis: -1 }.sharding_rule(&[&t(&[4, 6])], &[t(&[4, 6])]);
        assert_eq!(rule.results, vec![vec![Some(0), None]]);
    }
}
