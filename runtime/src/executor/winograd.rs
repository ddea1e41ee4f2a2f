//! The Winograd F(2x2, 3x3) transforms of CPU programs (`tsr.winograd_input`,
//! `tsr.winograd_weight`, `tsr.winograd_output`): the reference's generic transforms
//! ([`tessera_ir::ops::winograd`]) run on the f32 buffers directly, after the shapes are checked
//! against each other. The batched matmul between them is an ordinary `matmul` step.

use super::library::{f32s, f32s_mut, In, Out};
use tessera_ir::artifact::{BufferDesc, Storage};
use tessera_ir::ops::winograd::{self, Tiling, POSITIONS};

fn dims<const R: usize>(d: &BufferDesc, what: &str) -> Result<[usize; R], String> {
    if d.storage != Storage::F32 {
        return Err(format!("{what} computes in f32 only; buffer {} has {:?} storage", d.name, d.storage));
    }
    let shape: Vec<usize> = d.shape.iter().map(|&n| n as usize).collect();
    <[usize; R]>::try_from(shape.as_slice()).map_err(|_| format!("{what} must be rank {R}, got {shape:?}"))
}

/// `winograd_input`: image `[N, C, H, W]` to `[16, T, C]`.
pub fn input(x: &In, out: &mut Out, pads: [u64; 4]) -> Result<(), String> {
    let image = dims::<4>(x.desc, "winograd_input")?;
    let result = dims::<3>(out.desc, "winograd_input")?;
    let pads = pads.map(|p| i64::try_from(p).unwrap_or(i64::MAX));
    let tiling = Tiling::new(image, pads)?;
    if result != [POSITIONS, tiling.tiles(), tiling.c] {
        return Err(format!("winograd_input shapes {image:?} -> {result:?} do not agree with pads {pads:?}"));
    }
    let (xv, vv) = (f32s(x.bytes)?, f32s_mut(out.bytes)?);
    if xv.len() != image.iter().product::<usize>() || vv.len() != result.iter().product::<usize>() {
        return Err("winograd_input buffer sizes do not match their shapes".into());
    }
    winograd::input_transform(xv, &tiling, 0..tiling.c, vv);
    Ok(())
}

/// `winograd_weight`: kernel `[K, C, 3, 3]` to `[16, C, K]`.
pub fn weight(w: &In, out: &mut Out) -> Result<(), String> {
    let [k, c, kh, kw] = dims::<4>(w.desc, "winograd_weight")?;
    let result = dims::<3>(out.desc, "winograd_weight")?;
    if (kh, kw) != (3, 3) || result != [POSITIONS, c, k] {
        return Err(format!("winograd_weight shapes {:?} -> {result:?} do not agree", [k, c, kh, kw]));
    }
    let (wv, uv) = (f32s(w.bytes)?, f32s_mut(out.bytes)?);
    if wv.len() != k * c * 9 || uv.len() != POSITIONS * c * k {
        return Err("winograd_weight buffer sizes do not match their shapes".into());
    }
    winograd::weight_transform(wv, k, c, uv);
    Ok(())
}

/// `winograd_output`: product `[16, T, K]` to `[N, K, OH, OW]`.
pub fn output(m: &In, out: &mut Out) -> Result<(), String> {
    let product = dims::<3>(m.desc, "winograd_output")?;
    let result = dims::<4>(out.desc, "winograd_output")?;
    let tiling = winograd::output_tiling(&product, &result)?;
    let (mv, yv) = (f32s(m.bytes)?, f32s_mut(out.bytes)?);
    if mv.len() != product.iter().product::<usize>() || yv.len() != result.iter().product::<usize>() {
        return Err("winograd_output buffer sizes do not match their shapes".into());
    }
    let k = result[1];
    winograd::output_transform(mv, &tiling, k, 0..k, yv);
    Ok(())
}
