//! Typed access to a node's attributes, with the ONNX defaults supplied by each op's builder.

use super::proto::attribute_proto::AttributeType;
use super::proto::{AttributeProto, NodeProto, TensorProto};

/// A node's attributes. Accessors return `Err(message)` when an attribute has the wrong kind;
/// absent attributes give the caller's default.
pub(crate) struct Attrs<'a> {
    attrs: &'a [AttributeProto],
}

impl<'a> Attrs<'a> {
    pub fn of(node: &'a NodeProto) -> Attrs<'a> {
        Attrs { attrs: &node.attribute }
    }

    pub fn get(&self, name: &str) -> Option<&'a AttributeProto> {
        self.attrs.iter().find(|a| a.name() == name)
    }

    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The attribute's kind: its declared `type`, or, when an exporter left that out, the field
    /// that holds a value.
    fn kind(a: &AttributeProto) -> AttributeType {
        let declared = a.r#type();
        if declared != AttributeType::Undefined {
            return declared;
        }
        if a.i.is_some() {
            AttributeType::Int
        } else if a.f.is_some() {
            AttributeType::Float
        } else if a.s.is_some() {
            AttributeType::String
        } else if a.t.is_some() {
            AttributeType::Tensor
        } else if a.g.is_some() {
            AttributeType::Graph
        } else if !a.ints.is_empty() {
            AttributeType::Ints
        } else if !a.floats.is_empty() {
            AttributeType::Floats
        } else if !a.strings.is_empty() {
            AttributeType::Strings
        } else {
            AttributeType::Undefined
        }
    }

    fn typed(&self, name: &str, want: AttributeType) -> Result<Option<&'a AttributeProto>, String> {
        match self.get(name) {
            None => Ok(None),
            Some(a) if a.ref_attr_name.is_some() => {
                Err(format!("attribute '{name}' refers to a function attribute, which only functions may do"))
            }
            Some(a) => {
                let kind = Attrs::kind(a);
                // An empty INTS/FLOATS list may carry no declared type and no elements.
                let empty_list_ok = kind == AttributeType::Undefined
                    && matches!(want, AttributeType::Ints | AttributeType::Floats | AttributeType::Strings);
                if kind == want || empty_list_ok {
                    Ok(Some(a))
                } else {
                    Err(format!(
                        "attribute '{name}' must be {}, got {}",
                        want.as_str_name().to_lowercase(),
                        kind.as_str_name().to_lowercase()
                    ))
                }
            }
        }
    }

    pub fn int(&self, name: &str, default: i64) -> Result<i64, String> {
        Ok(self.typed(name, AttributeType::Int)?.map_or(default, |a| a.i()))
    }

    pub fn opt_int(&self, name: &str) -> Result<Option<i64>, String> {
        Ok(self.typed(name, AttributeType::Int)?.map(|a| a.i()))
    }

    pub fn req_int(&self, name: &str) -> Result<i64, String> {
        self.opt_int(name)?.ok_or_else(|| format!("missing required attribute '{name}'"))
    }

    pub fn float(&self, name: &str, default: f64) -> Result<f64, String> {
        Ok(self.typed(name, AttributeType::Float)?.map_or(default, |a| a.f() as f64))
    }

    pub fn opt_float(&self, name: &str) -> Result<Option<f64>, String> {
        Ok(self.typed(name, AttributeType::Float)?.map(|a| a.f() as f64))
    }

    pub fn string(&self, name: &str, default: &str) -> Result<String, String> {
        match self.typed(name, AttributeType::String)? {
            None => Ok(default.to_string()),
            Some(a) => String::from_utf8(a.s().to_vec()).map_err(|_| format!("attribute '{name}' is not UTF-8")),
        }
    }

    pub fn opt_ints(&self, name: &str) -> Result<Option<Vec<i64>>, String> {
        Ok(self.typed(name, AttributeType::Ints)?.map(|a| a.ints.clone()))
    }

    pub fn opt_floats(&self, name: &str) -> Result<Option<Vec<f64>>, String> {
        Ok(self.typed(name, AttributeType::Floats)?.map(|a| a.floats.iter().map(|&x| x as f64).collect()))
    }

    pub fn opt_strings(&self, name: &str) -> Result<Option<Vec<String>>, String> {
        let Some(a) = self.typed(name, AttributeType::Strings)? else { return Ok(None) };
        let strings = a.strings.iter().map(|s| String::from_utf8(s.to_vec()));
        Ok(Some(strings.collect::<Result<_, _>>().map_err(|_| format!("attribute '{name}' is not UTF-8"))?))
    }

    /// A subgraph attribute (`If`'s branches, `Loop`'s and `Scan`'s body).
    pub fn req_graph(&self, name: &str) -> Result<&'a super::proto::GraphProto, String> {
        self.typed(name, AttributeType::Graph)?
            .and_then(|a| a.g.as_ref())
            .ok_or_else(|| format!("missing required graph attribute '{name}'"))
    }

    pub fn opt_tensor(&self, name: &str) -> Result<Option<&'a TensorProto>, String> {
        Ok(self.typed(name, AttributeType::Tensor)?.and_then(|a| a.t.as_ref()))
    }
}
