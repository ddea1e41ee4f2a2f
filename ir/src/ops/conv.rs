//! Convolution and pooling over NCHW images: `tsr.conv2d`, `tsr.max_pool2d`, `tsr.avg_pool2d`.
//!
//! Padding is `[top, left, bottom, right]` (ONNX order). Average pooling divides by the number
//! of non-padding elements in the window (ONNX `count_include_pad = 0`).

use super::elementwise::named_enum;
use super::{expect_arity, ShapeResult};
use crate::types::{Dim, TensorType};

named_enum!(PoolKind { Max = "max_pool2d", Avg = "avg_pool2d" });

/// Window geometry shared by convolution and pooling.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Window {
    pub strides: [i64; 2],
    /// `[top, left, bottom, right]`.
    pub pads: [i64; 4],
    pub dilations: [i64; 2],
}

impl Window {
    pub fn check(&self) -> Result<(), String> {
        if self.strides.iter().chain(&self.dilations).any(|&v| v < 1) {
            return Err("strides and dilations must be positive".into());
        }
        if self.pads.iter().any(|&p| p < 0) {
            return Err("pads must be non-negative".into());
        }
        Ok(())
    }

    /// Output extent of spatial dimension `d` (0 = height, 1 = width) for input extent `n` and
    /// kernel extent `k`.
    pub fn output_extent(&self, d: usize, n: i64, k: i64) -> Result<i64, String> {
        let padded = n + self.pads[d] + self.pads[d + 2];
        let span = self.dilations[d] * (k - 1) + 1;
        if padded < span {
            return Err(format!("window of extent {span} does not fit the padded input extent {padded}"));
        }
        Ok((padded - span) / self.strides[d] + 1)
    }
}

fn spatial(x: &TensorType, what: &str) -> Result<[i64; 2], String> {
    if x.rank() != 4 {
        return Err(format!("{what} must be NCHW (rank 4), got {x}"));
    }
    let h = x.dims[2].as_static().ok_or_else(|| format!("{what} height must be static in {x}"))?;
    let w = x.dims[3].as_static().ok_or_else(|| format!("{what} width must be static in {x}"))?;
    Ok([h as i64, w as i64])
}

/// `conv2d(x: [N, C, H, W], w: [O, C / groups, KH, KW]) -> [N, O, OH, OW]`.
pub fn infer_conv2d(inputs: &[&TensorType], window: &Window, groups: i64) -> ShapeResult {
    expect_arity(inputs, 2)?;
    let (x, w) = (inputs[0], inputs[1]);
    window.check()?;
    let [h, wd] = spatial(x, "input")?;
    let [kh, kw] = spatial(w, "weight")?;
    if x.dtype != w.dtype || !x.dtype.is_float() {
        return Err(format!("input {x} and weight {w} must share a float element type"));
    }
    let c = x.dims[1].as_static().ok_or_else(|| format!("channel dimension of {x} must be static"))? as i64;
    let o = w.dims[0].as_static().ok_or_else(|| format!("output channels of {w} must be static"))? as i64;
    let c_per_group = w.dims[1].as_static().unwrap_or(0) as i64;
    if groups < 1 || c % groups != 0 || o % groups != 0 || c_per_group * groups != c {
        return Err(format!("groups = {groups} does not fit {c} input and {o} output channels of weight {w}"));
    }
    let oh = window.output_extent(0, h, kh)?;
    let ow = window.output_extent(1, wd, kw)?;
    let dims = vec![x.dims[0].clone(), Dim::Static(o as u64), Dim::Static(oh as u64), Dim::Static(ow as u64)];
    Ok(vec![TensorType::new(x.dtype, dims)])
}

/// `max_pool2d` / `avg_pool2d` with a `kernel` window: `[N, C, H, W] -> [N, C, OH, OW]`.
pub fn infer_pool2d(inputs: &[&TensorType], kernel: [i64; 2], window: &Window) -> ShapeResult {
    expect_arity(inputs, 1)?;
    let x = inputs[0];
    window.check()?;
    if kernel.iter().any(|&k| k < 1) {
        return Err("kernel extents must be positive".into());
    }
    if !x.dtype.is_float() {
        return Err(format!("pooling needs a float input, got {x}"));
    }
    let [h, w] = spatial(x, "input")?;
    let oh = window.output_extent(0, h, kernel[0])?;
    let ow = window.output_extent(1, w, kernel[1])?;
    let dims = vec![x.dims[0].clone(), x.dims[1].clone(), Dim::Static(oh as u64), Dim::Static(ow as u64)];
    Ok(vec![TensorType::new(x.dtype, dims)])
}
