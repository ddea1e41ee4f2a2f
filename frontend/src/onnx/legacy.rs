//! Opsets 1 to 10 of the default domain (1 to 6 for a few ops only): each node is rewritten into its opset-11 form (the
//! attributes that later became inputs become constant inputs) before its builder sees it, and
//! ops whose older form differs in a way this rewrite does not cover are refused by name.

use super::attrs::Attrs;
use super::import::Importer;
use super::proto::NodeProto;
use tessera_ir::dtype::DType;
use tessera_ir::tensor::Tensor;

/// Ops whose meaning did not change from opset 7 to 11 (only element types were added or
/// broadcasting stated, and tessera's builders already read the older attributes of Softmax,
/// the reductions, Squeeze/Unsqueeze and Split), checked against `onnx.defs.get_schema`'s
/// changelog of onnx 1.20.
const UNCHANGED: &[&str] = &[
    "Abs",
    "Acos",
    "Acosh",
    "Add",
    "And",
    "ArgMax",
    "ArgMin",
    "Asin",
    "Asinh",
    "Atan",
    "Atanh",
    "AveragePool",
    "BatchNormalization",
    "Cast",
    "Ceil",
    "Concat",
    "Constant",
    "ConstantOfShape",
    "Conv",
    "Cos",
    "Cosh",
    "Div",
    "Dropout",
    "Elu",
    "Equal",
    "Erf",
    "Exp",
    "Expand",
    "Flatten",
    "Floor",
    "Gather",
    "Gemm",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "Greater",
    "HardSigmoid",
    "Hardmax",
    "Identity",
    "InstanceNormalization",
    "IsInf",
    "IsNaN",
    "LeakyRelu",
    "Less",
    "Log",
    "LogSoftmax",
    "MatMul",
    "MatMulInteger",
    "Max",
    "MaxPool",
    "Mean",
    "Min",
    "Mod",
    "Mul",
    "Neg",
    "Not",
    "OneHot",
    "Or",
    "PRelu",
    "Pow",
    "Reciprocal",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceMax",
    "ReduceMean",
    "ReduceMin",
    "ReduceProd",
    "ReduceSum",
    "ReduceSumSquare",
    "Relu",
    "Reshape",
    "Selu",
    "Shape",
    "Shrink",
    "Sigmoid",
    "Sign",
    "Sin",
    "Sinh",
    "Size",
    "Softmax",
    "Softplus",
    "Softsign",
    "Split",
    "Sqrt",
    "Squeeze",
    "Sub",
    "Sum",
    "Tan",
    "Tanh",
    "Tile",
    "Transpose",
    "Unsqueeze",
    "Where",
    "Xor",
    // Opset 10's quantized ops take per-tensor parameters, a case of their opset-13 forms.
    "ConvInteger",
    "DequantizeLinear",
    "QLinearConv",
    "QLinearMatMul",
    "QuantizeLinear",
];

/// Ops of opsets before 11 that are imported under another op type.
pub(crate) const RENAMED: &[&str] = &["Scatter", "Upsample"];

/// The opset-11 form of `node` from a model of default-domain `opset` < 11, or why there is none.
/// Constant inputs it adds are defined in `imp` under names derived from the node's first output.
pub(crate) fn modernize(imp: &mut Importer, node: &NodeProto, opset: i64) -> Result<NodeProto, String> {
    let op = node.op_type();
    let attrs = Attrs::of(node);
    let mut out = node.clone();
    let stem = node.output.first().cloned().unwrap_or_default();
    let add_input = |imp: &mut Importer, out: &mut NodeProto, role: &str, t: Tensor| {
        let name = format!("{stem}::opset{opset}_{role}");
        imp.define_constant(&name, t);
        out.input.push(name);
    };
    let ints = |v: &[i64]| Tensor::from_i64(DType::I64, vec![v.len()], v.to_vec());
    match op {
        // Opsets 1-6 differ for most ops (`broadcast` and `consumed_inputs` attributes); these
        // few have kept one meaning since opset 1.
        "Not" | "Identity" | "Shape" | "Transpose" if opset < 7 => {}
        _ if opset < 7 => return Err(format!("{op} at opset {opset} is not imported (before opset 7 only Not, Identity, Shape and Transpose are)")),
        _ if UNCHANGED.contains(&op) => {
            if op == "BatchNormalization" && attrs.int("spatial", 1)? != 1 {
                return Err("BatchNormalization with spatial = 0 (opsets before 9) is not imported".into());
            }
        }
        // Scatter (9-10) is ScatterElements-11 without negative indices.
        "Scatter" => out.op_type = Some("ScatterElements".into()),
        // Slice 1-9: starts, ends and axes are attributes; 10 already has Slice-11's inputs.
        "Slice" if opset < 10 => {
            let starts = attrs.opt_ints("starts")?.ok_or("Slice needs 'starts'")?;
            let ends = attrs.opt_ints("ends")?.ok_or("Slice needs 'ends'")?;
            out.attribute.clear();
            add_input(imp, &mut out, "starts", ints(&starts));
            add_input(imp, &mut out, "ends", ints(&ends));
            if let Some(axes) = attrs.opt_ints("axes")? {
                add_input(imp, &mut out, "axes", ints(&axes));
            }
        }
        "Slice" => {}
        // Upsample 7-9 is Resize with asymmetric coordinates (nearest rounds down); its scales
        // are an attribute at 7 and an input from 9.
        "Upsample" => {
            let mode = attrs.string("mode", "nearest")?;
            let x = node.input.first().cloned().unwrap_or_default();
            let scales = node.input.get(1).cloned();
            let mut resize = NodeProto {
                op_type: Some("Resize".into()),
                output: node.output.clone(),
                name: node.name.clone(),
                input: vec![x, String::new()],
                ..NodeProto::default()
            };
            let string_attr = |name: &str, value: &str| super::proto::AttributeProto {
                name: Some(name.into()),
                s: Some(value.as_bytes().to_vec().into()),
                r#type: Some(super::proto::attribute_proto::AttributeType::String as i32),
                ..Default::default()
            };
            resize.attribute = vec![
                string_attr("mode", &mode),
                string_attr("coordinate_transformation_mode", "asymmetric"),
                string_attr("nearest_mode", "floor"),
            ];
            match (scales, attrs.opt_floats("scales")?) {
                (Some(s), _) if opset >= 9 => resize.input.push(s),
                (_, Some(values)) => {
                    let t = Tensor::from_f64(DType::F32, vec![values.len()], values);
                    add_input(imp, &mut resize, "scales", t);
                }
                _ => return Err("Upsample needs scales".into()),
            }
            return Ok(resize);
        }
        // Pad 2-10: `pads` and `value` are attributes.
        "Pad" => {
            let pads = attrs.opt_ints("pads")?.ok_or("Pad needs 'pads'")?;
            let value = attrs.float("value", 0.0)?;
            let dtype = imp.input_dtype(node, 0).ok_or("Pad's data input is not defined before the node")?;
            out.attribute.retain(|a| a.name() == "mode");
            add_input(imp, &mut out, "pads", ints(&pads));
            add_input(imp, &mut out, "constant_value", Tensor::scalar(dtype, value));
        }
        // Clip 6-10: `min` and `max` are attributes (default: no bound).
        "Clip" => {
            let dtype = imp.input_dtype(node, 0).ok_or("Clip's input is not defined before the node")?;
            let min = attrs.float("min", f64::NEG_INFINITY)?;
            let max = attrs.float("max", f64::INFINITY)?;
            out.attribute.clear();
            add_input(imp, &mut out, "min", Tensor::scalar(dtype, min));
            add_input(imp, &mut out, "max", Tensor::scalar(dtype, max));
        }
        // TopK 1-9: `k` is an attribute; 10 has TopK-11's input (always largest, sorted).
        "TopK" if opset < 10 => {
            let k = attrs.req_int("k")?;
            out.attribute.retain(|a| a.name() == "axis");
            add_input(imp, &mut out, "k", ints(&[k]));
        }
        "TopK" => {}
        // Loop 1-10 has Loop-11's inputs, outputs and body signature (11 widened the types);
        // Scan 9-10 is Scan-11 without negative axes.
        "Loop" => {}
        "Scan" if opset >= 9 => {}
        "Scan" => return Err("Scan-8 (a batch axis and sequence_lens) is not imported; Scan from opset 9 on is".into()),
        _ => {
            return Err(format!(
                "{op} at opset {opset} is not imported (tessera reads opsets before 11 only for ops whose older form it maps onto opset 11)"
            ))
        }
    }
    Ok(out)
}
