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

#[cfg(test)]
mod tests {
    use super::super::library::matmul;
    use super::super::test_buffers::{bytes, desc, values};
    use super::*;
    use tessera_ir::dtype::DType;
    use tessera_ir::ops::conv::Window;
    use tessera_ir::ops::Op;
    use tessera_ir::tensor::Tensor;
    use tessera_ir::types::TensorType;

    /// Runs one library call from `inputs` (shape, values) into a zeroed `out_shape` buffer.
    fn call(inputs: &[(&[usize], &[f32])], out_shape: &[usize], f: impl FnOnce(&[In], &mut Out)) -> Vec<f32> {
        let descs: Vec<BufferDesc> = inputs.iter().map(|(shape, _)| desc(shape)).collect();
        let ins: Vec<In> = inputs.iter().zip(&descs).map(|((_, v), d)| In { desc: d, bytes: bytes(v) }).collect();
        let out_desc = desc(out_shape);
        let mut result = vec![0.0f32; out_shape.iter().product()];
        // SAFETY: any bytes are a valid f32; the slice covers exactly `result`.
        let out_bytes = unsafe { std::slice::from_raw_parts_mut(result.as_mut_ptr().cast::<u8>(), 4 * result.len()) };
        f(&ins, &mut Out { desc: &out_desc, bytes: out_bytes });
        result
    }

    /// The three transforms and the batched GEMM between them give the interpreter's direct
    /// convolution within f32 rounding (relative to the output's largest magnitude).
    #[test]
    fn winograd_calls_around_a_matmul_match_the_interpreters_conv2d() {
        for (xs, k, pads) in [([1usize, 8, 9, 9], 6usize, [1i64; 4]), ([2, 3, 6, 5], 4, [0, 1, 2, 0])] {
            let ws = [k, xs[1], 3, 3];
            let (x, w) = (values(xs.iter().product(), 1), values(ws.iter().product(), 2));
            let window = Window { strides: [1, 1], pads, dilations: [1, 1] };
            let tensor = |shape: &[usize], v: &[f32]| {
                Tensor::from_f64(DType::F32, shape.to_vec(), v.iter().map(|&e| e as f64).collect())
            };
            let (xt, wt) = (tensor(&xs, &x), tensor(&ws, &w));
            let conv = Op::Conv2d { window, groups: 1 };
            let types: Vec<TensorType> = [&xt, &wt].iter().map(|t| t.tensor_type()).collect();
            let result_types = conv.infer(&types.iter().collect::<Vec<_>>()).expect("well-typed");
            let want = conv.eval(&[&xt, &wt], &result_types).expect("evaluates").remove(0);
            let want_values = want.floats().expect("floats").to_vec();
            let tiling = Tiling::new(xs, pads).expect("fits");
            let (t, c) = (tiling.tiles(), xs[1]);
            let upads = pads.map(|p| p as u64);
            let v = call(&[(&xs, &x)], &[16, t, c], |ins, out| input(&ins[0], out, upads).expect("input"));
            let u = call(&[(&ws, &w)], &[16, c, k], |ins, out| weight(&ins[0], out).expect("weight"));
            let m = call(&[(&[16, t, c], &v), (&[16, c, k], &u)], &[16, t, k], |ins, out| {
                matmul(&ins[0], &ins[1], out, false).expect("matmul")
            });
            let y = call(&[(&[16, t, k], &m)], &want.shape, |ins, out| output(&ins[0], out).expect("output"));
            let scale = want_values.iter().fold(0.0f64, |a, b| a.max(b.abs()));
            let worst = y.iter().zip(&want_values).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max);
            assert!(worst <= 1e-5 * scale, "max difference {worst} (scale {scale}) for {xs:?} pads {pads:?}");
        }
    }
}
