//! Reads the `.entry` declarations of a PTX module and checks them against the program: every
//! launch's entry exists once, with one 64-bit pointer parameter per kernel input, output and
//! temporary, in that order (what the CUDA executor passes).
//!
//! The parameter list a kernel expects is recorded in the artifact twice over: its
//! [`tessera_ir::artifact::KernelSignature`] (inputs and outputs) and its
//! [`tessera_ir::artifact::GpuKernel::temporaries`]. A PTX module whose entry takes another
//! number of parameters (or other types) would read past the parameter buffer or treat a pointer
//! as a number; it is refused at load, before any module reaches the driver.

use tessera_ir::artifact::{GpuKernel, Program};
use tessera_ir::quote::clip;

/// One `.entry` of a PTX module: its name and its parameters' declarations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub params: Vec<Param>,
}

/// One `.param` of an entry: its state-space type (`u64`, `b32`, ...; `b8` for a byte array)
/// and whether it is an array (`.param .align 8 .b8 p[16]`, a by-value struct).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    pub type_name: String,
    pub array: bool,
}

/// The text with comments and string literals blanked out (each byte to a space, so offsets
/// stay), so neither can hide an entry from this reader or show it one the driver would not see.
fn code_only(text: &[u8]) -> Vec<u8> {
    let mut out = text.to_vec();
    let mut i = 0;
    while i < text.len() {
        let blank_until = match (text[i], text.get(i + 1)) {
            (b'/', Some(b'/')) => text[i..].iter().position(|&b| b == b'\n').map_or(text.len(), |n| i + n),
            (b'/', Some(b'*')) => text[i + 2..].windows(2).position(|w| w == b"*/").map_or(text.len(), |n| i + n + 4),
            (b'"', _) => {
                let mut j = i + 1;
                while j < text.len() && text[j] != b'"' {
                    j += if text[j] == b'\\' { 2 } else { 1 };
                }
                (j + 1).min(text.len())
            }
            _ => {
                i += 1;
                continue;
            }
        };
        out[i..blank_until].fill(b' ');
        i = blank_until;
    }
    out
}

fn is_identifier_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'$' | b'%')
}

/// Every `.entry` declaration of `ptx`, in order. An error names what is malformed (an entry
/// without a name or with an unclosed parameter list, a parameter without a type).
pub fn entries(ptx: &[u8]) -> Result<Vec<Entry>, String> {
    let code = code_only(ptx);
    let mut found = Vec::new();
    let mut at = 0;
    while let Some(n) = code[at..].windows(6).position(|w| w == b".entry") {
        let start = at + n;
        at = start + 6;
        // A whole token: not `.entryfoo`, not `x.entry`.
        let before_ok = start == 0 || !is_identifier_byte(code[start - 1]) && code[start - 1] != b'.';
        if !before_ok || code.get(at).is_some_and(|&b| is_identifier_byte(b)) {
            continue;
        }
        while code.get(at).is_some_and(u8::is_ascii_whitespace) {
            at += 1;
        }
        let name_len = code[at..].iter().take_while(|&&b| is_identifier_byte(b)).count();
        if name_len == 0 {
            return Err(format!("an .entry without a name at byte {start}"));
        }
        let name = String::from_utf8_lossy(&code[at..at + name_len]).into_owned();
        at += name_len;
        while code.get(at).is_some_and(u8::is_ascii_whitespace) {
            at += 1;
        }
        let mut params = Vec::new();
        if code.get(at) == Some(&b'(') {
            let close = code[at..].iter().position(|&b| b == b')');
            let close =
                close.map(|c| at + c).ok_or_else(|| format!("entry {}: unclosed parameter list", clip(&name)))?;
            let list = String::from_utf8_lossy(&code[at + 1..close]).into_owned();
            at = close + 1;
            for declaration in list.split(',').map(str::trim).filter(|d| !d.is_empty()) {
                params.push(param(declaration).ok_or_else(|| {
                    format!("entry {}: parameter '{}' is not a .param of a type", clip(&name), clip(declaration))
                })?);
            }
        }
        found.push(Entry { name, params });
    }
    Ok(found)
}

/// `.param [.align N] .TYPE [.ptr ...] NAME[N]?` → its type and whether it is an array.
fn param(declaration: &str) -> Option<Param> {
    let mut words = declaration.split_whitespace();
    if words.next() != Some(".param") {
        return None;
    }
    const TYPES: [&str; 17] = [
        "u8", "u16", "u32", "u64", "s8", "s16", "s32", "s64", "b8", "b16", "b32", "b64", "f16", "f32", "f64", "pred",
        "bf16",
    ];
    let type_name = words.filter_map(|w| w.strip_prefix('.')).find(|w| TYPES.contains(w))?.to_string();
    Some(Param { type_name, array: declaration.contains('[') })
}

/// The parameters the program passes each entry of a GPU kernel: one 64-bit pointer per input
/// and output of its signature and per temporary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParameterCount {
    pub inputs: usize,
    pub outputs: usize,
    pub temporaries: usize,
}

impl ParameterCount {
    pub fn of(code: &GpuKernel, program: &Program) -> Result<ParameterCount, String> {
        let signature = program.kernel_signatures.iter().find(|k| k.symbol == code.symbol);
        let signature = signature.ok_or_else(|| format!("GPU kernel {} has no signature", clip(&code.symbol)))?;
        Ok(ParameterCount {
            inputs: signature.inputs.len(),
            outputs: signature.outputs.len(),
            temporaries: code.temporaries.len(),
        })
    }

    pub fn total(&self) -> usize {
        self.inputs + self.outputs + self.temporaries
    }
}

impl std::fmt::Display for ParameterCount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ParameterCount { inputs, outputs, temporaries } = self;
        write!(f, "{} ({inputs} inputs, {outputs} outputs, {temporaries} temporaries)", self.total())
    }
}

/// The PTX of `code` against the program: each launch's entry is declared exactly once and takes
/// one 64-bit pointer per kernel input, output and temporary of `code.symbol`'s signature.
pub fn check_kernel_entries(ptx: &[u8], code: &GpuKernel, program: &Program) -> Result<(), String> {
    let symbol = &code.symbol;
    let count = ParameterCount::of(code, program)?;
    let declared = entries(ptx)?;
    for launch in &code.launches {
        let mut matching = declared.iter().filter(|e| e.name == launch.entry);
        let entry = match (matching.next(), matching.next()) {
            (Some(entry), None) => entry,
            (None, _) => return Err(format!("kernel {symbol}: the PTX declares no entry {}", clip(&launch.entry))),
            (Some(_), Some(_)) => {
                return Err(format!("kernel {symbol}: the PTX declares entry {} twice", launch.entry))
            }
        };
        if entry.params.len() != count.total() {
            return Err(format!(
                "kernel {symbol}: entry {} takes {} parameters, the program passes {count}",
                entry.name,
                entry.params.len()
            ));
        }
        let pointer = |p: &Param| !p.array && matches!(p.type_name.as_str(), "u64" | "b64" | "s64");
        if let Some(i) = entry.params.iter().position(|p| !pointer(p)) {
            let p = &entry.params[i];
            return Err(format!(
                "kernel {symbol}: parameter {i} of entry {} is .{}{}, the program passes a 64-bit pointer",
                entry.name,
                p.type_name,
                if p.array { " array" } else { "" }
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODULE: &str = "//\n// Generated by LLVM NVPTX Back-End\n//\n\n.version 8.0\n.target sm_90\n.address_size 64\n\n\t// .globl\tk_0\n\n.visible .entry k_0(\n\t.param .u64 .ptr .align 1 k_0_param_0,\n\t.param .u64 .ptr .align 1 k_0_param_1\n)\n{\n\tret;\n}\n.visible .entry k_1()\n{\n\tret;\n}\n";

    #[test]
    fn entries_are_read_with_their_parameter_types() {
        let u64_pointer = Param { type_name: "u64".into(), array: false };
        assert_eq!(
            entries(MODULE.as_bytes()),
            Ok(vec![
                Entry { name: "k_0".into(), params: vec![u64_pointer.clone(), u64_pointer] },
                Entry { name: "k_1".into(), params: vec![] },
            ])
        );
        let by_value = ".entry s(.param .align 8 .b8 s_param_0[16], .param .f32 s_param_1)";
        assert_eq!(
            entries(by_value.as_bytes()).map(|e| e[0].params.clone()),
            Ok(vec![Param { type_name: "b8".into(), array: true }, Param { type_name: "f32".into(), array: false }])
        );
    }

    #[test]
    fn comments_and_strings_neither_hide_nor_add_entries() {
        let hidden =
            "/* .entry fake(.param .u64 a) */ .file 1 \".entry fake2()\" // .entry fake3()\n.entry real(.param .u32 x)";
        let names: Vec<String> = entries(hidden.as_bytes()).expect("parses").into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["real"]);
    }

    #[test]
    fn malformed_declarations_are_errors() {
        assert_eq!(entries(b".entry k(.param .u64 a"), Err("entry k: unclosed parameter list".to_string()));
        assert_eq!(entries(b".entry (x)"), Err("an .entry without a name at byte 0".to_string()));
        assert_eq!(
            entries(b".entry k(.reg .u64 a)"),
            Err("entry k: parameter '.reg .u64 a' is not a .param of a type".to_string())
        );
    }
}
