//! Builders for small ONNX models made of the prost types, and a helper that runs an imported
//! graph through the reference interpreter; shared by the ONNX test files.

#![allow(dead_code)]

use tessera_frontend::onnx::proto::attribute_proto::AttributeType;
use tessera_frontend::onnx::proto::tensor_proto::DataType;
use tessera_frontend::onnx::proto::tensor_shape_proto::{dimension, Dimension};
use tessera_frontend::onnx::proto::{
    type_proto, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto,
    TypeProto, ValueInfoProto,
};
use tessera_ir::dtype::DType;
use tessera_ir::graph::Graph;
use tessera_ir::tensor::Tensor;

/// A dimension of a value's declared shape: a size or a `dim_param` name.
pub enum D {
    N(i64),
    P(&'static str),
}

pub fn value(name: &str, elem: DataType, dims: &[D]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                D::N(n) => dimension::Value::DimValue(*n),
                D::P(p) => dimension::Value::DimParam(p.to_string()),
            }),
            ..Dimension::default()
        })
        .collect();
    ValueInfoProto {
        name: Some(name.to_string()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(elem as i32),
                shape: Some(TensorShapeProto { dim }),
            })),
            ..TypeProto::default()
        }),
        ..ValueInfoProto::default()
    }
}

pub fn f32_value(name: &str, dims: &[D]) -> ValueInfoProto {
    value(name, DataType::Float, dims)
}

pub fn node(op: &str, name: &str, inputs: &[&str], outputs: &[&str], attrs: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        name: Some(name.to_string()),
        op_type: Some(op.to_string()),
        attribute: attrs,
        ..NodeProto::default()
    }
}

pub fn attr_str(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::String as i32),
        s: Some(v.as_bytes().to_vec().into()),
        ..Default::default()
    }
}

pub fn attr_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(v),
        ..Default::default()
    }
}

pub fn attr_float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Float as i32),
        f: Some(v),
        ..Default::default()
    }
}

pub fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Ints as i32),
        ints: v.to_vec(),
        ..Default::default()
    }
}

pub fn attr_tensor(name: &str, t: TensorProto) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Tensor as i32),
        t: Some(t),
        ..Default::default()
    }
}

/// A float32 initializer stored in `raw_data`.
pub fn f32_raw(name: &str, shape: &[usize], values: &[f64]) -> TensorProto {
    tessera_frontend::onnx::tensor::encode(name, &Tensor::from_f64(DType::F32, shape.to_vec(), values.to_vec()))
}

/// A float32 initializer stored in the typed `float_data` field.
pub fn f32_typed(name: &str, shape: &[i64], values: &[f32]) -> TensorProto {
    TensorProto {
        dims: shape.to_vec(),
        data_type: Some(DataType::Float as i32),
        name: Some(name.into()),
        float_data: values.to_vec(),
        ..TensorProto::default()
    }
}

pub fn i64_typed(name: &str, shape: &[i64], values: &[i64]) -> TensorProto {
    TensorProto {
        dims: shape.to_vec(),
        data_type: Some(DataType::Int64 as i32),
        name: Some(name.into()),
        int64_data: values.to_vec(),
        ..TensorProto::default()
    }
}

pub fn model(
    nodes: Vec<NodeProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    initializers: Vec<TensorProto>,
    opset: i64,
) -> ModelProto {
    ModelProto {
        ir_version: Some(9),
        opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(opset) }],
        graph: Some(GraphProto {
            node: nodes,
            name: Some("test".into()),
            initializer: initializers,
            input: inputs,
            output: outputs,
            ..GraphProto::default()
        }),
        ..ModelProto::default()
    }
}

/// `y = relu(x @ W + B)` with `x: [batch, 3]`, W as raw data and B as typed floats.
pub fn mlp_model() -> ModelProto {
    model(
        vec![
            node("MatMul", "mm", &["x", "W"], &["xw"], vec![]),
            node("Add", "add", &["xw", "B"], &["pre"], vec![]),
            node("Relu", "relu", &["pre"], &["y"], vec![]),
        ],
        vec![f32_value("x", &[D::P("batch"), D::N(3)])],
        vec![f32_value("y", &[D::P("batch"), D::N(2)])],
        vec![f32_raw("W", &[3, 2], &[1.0, 0.0, 0.0, 1.0, 1.0, -1.0]), f32_typed("B", &[2], &[0.5, -0.5])],
        17,
    )
}

/// Runs `g` through the reference interpreter on inputs given in graph-input order.
pub fn run(g: &Graph, inputs: Vec<Tensor>) -> Vec<Tensor> {
    let named: Vec<(String, Tensor)> =
        g.inputs().iter().zip(inputs).map(|(&v, t)| (g.value(v).name.clone(), t)).collect();
    match tessera_runtime::interpreter::run(g, &named) {
        Ok(outs) => outs.into_iter().map(|(_, t)| t).collect(),
        Err(e) => panic!("interpreter failed: {e}"),
    }
}

/// Asserts dtype, shape and values within `tol`.
pub fn assert_close(t: &Tensor, dtype: DType, shape: &[usize], expected: &[f64], tol: f64) {
    assert_eq!((t.dtype, t.shape.as_slice()), (dtype, shape), "dtype and shape");
    let got = t.to_f64_vec();
    for (i, (g, e)) in got.iter().zip(expected).enumerate() {
        assert!((g - e).abs() <= tol, "element {i}: got {g}, expected {e}; all: {got:?}");
    }
    assert_eq!(got.len(), expected.len());
}
