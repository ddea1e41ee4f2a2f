//! Reads the parameter records of a CUDA cubin's entries and checks them against the program: the
//! cubin counterpart of [`super::ptx`]. The CUDA executor loads a kernel's cubin in preference to
//! its PTX, so a cubin whose entry takes other parameters than the program passes is refused at
//! load, as such a PTX is.
//!
//! `ptxas` writes, for each entry `E`, a section `.nv.info.E` of attribute records (what
//! `cuobjdump -elf` prints as `EIATTR_*`): a format byte, an attribute byte, then a 16-bit value
//! (formats 1–3) or a 16-bit size and that many bytes (format 4, `EIFMT_SVAL`). Each parameter is
//! one `EIATTR_KPARAM_INFO` record: index (u32), ordinal (u16), offset in the parameter bank
//! (u16) and a word whose bits 18–31 are the size in bytes.

use super::elf::{section_named, Machine};
use super::ptx::ParameterCount;
use tessera_ir::artifact::{GpuKernel, Program};
use tessera_ir::quote::clip;

const EIFMT_NVAL: u8 = 1;
const EIFMT_BVAL: u8 = 2;
const EIFMT_HVAL: u8 = 3;
const EIFMT_SVAL: u8 = 4;
const EIATTR_KPARAM_INFO: u8 = 0x17;

/// One parameter of an entry as the cubin records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelParam {
    pub ordinal: u16,
    /// Byte offset in the entry's parameter bank.
    pub offset: u16,
    pub size: u16,
}

/// The parameters of `entry` in ordinal order, `Ok(None)` when the cubin has no `.nv.info`
/// section for it; `Err` names what is malformed.
pub fn entry_params(cubin: &[u8], entry: &str) -> Result<Option<Vec<KernelParam>>, String> {
    let Some(info) = section_named(cubin, Machine::Cuda, &format!(".nv.info.{entry}"))? else {
        return Ok(None);
    };
    let truncated = || format!("entry {}: a truncated attribute record", clip(entry));
    let mut params = Vec::new();
    let mut at = 0;
    while at < info.len() {
        let record = info.get(at..at + 4).ok_or_else(truncated)?;
        let (format, attribute) = (record[0], record[1]);
        let value = usize::from(u16::from_le_bytes([record[2], record[3]]));
        at += 4;
        match format {
            EIFMT_NVAL | EIFMT_BVAL | EIFMT_HVAL => {}
            EIFMT_SVAL => {
                let data = info.get(at..at + value).ok_or_else(truncated)?;
                at += value;
                if attribute == EIATTR_KPARAM_INFO {
                    let field = |i: usize| data.get(i..i + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
                    let flags = data.get(8..12).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                    let (Some(ordinal), Some(offset), Some(flags)) = (field(4), field(6), flags) else {
                        return Err(format!("entry {}: a parameter record of {} bytes", clip(entry), data.len()));
                    };
                    params.push(KernelParam { ordinal, offset, size: ((flags >> 18) & 0x3fff) as u16 });
                }
            }
            other => return Err(format!("entry {}: unknown attribute record format {other}", clip(entry))),
        }
    }
    params.sort_by_key(|p| p.ordinal);
    Ok(Some(params))
}

/// The cubin of `code` against the program: each launch's entry has its parameter records, one
/// 8-byte parameter per kernel input, output and temporary, at consecutive 8-byte offsets.
pub fn check_kernel_entries(cubin: &[u8], code: &GpuKernel, program: &Program) -> Result<(), String> {
    let symbol = &code.symbol;
    let count = ParameterCount::of(code, program)?;
    for launch in &code.launches {
        let entry = &launch.entry;
        let params = entry_params(cubin, entry)?
            .ok_or_else(|| format!("kernel {symbol}: the cubin has no entry {}", clip(entry)))?;
        if params.len() != count.total() {
            return Err(format!(
                "kernel {symbol}: entry {entry} of the cubin takes {} parameters, the program passes {count}",
                params.len()
            ));
        }
        for (i, p) in params.iter().enumerate() {
            if usize::from(p.ordinal) != i || usize::from(p.offset) != 8 * i || p.size != 8 {
                return Err(format!(
                    "kernel {symbol}: parameter {} of entry {entry} in the cubin is {} bytes at offset {}, \
                     the program passes a 64-bit pointer at offset {}",
                    p.ordinal,
                    p.size,
                    p.offset,
                    8 * i
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal CUDA ELF object: a null section, the section-name table, and `.nv.info.k`
    /// holding `info`.
    fn cubin_with_info(info: &[u8]) -> Vec<u8> {
        let names = b"\0.shstrtab\0.nv.info.k\0";
        let mut out = vec![0u8; 64];
        out[..4].copy_from_slice(b"\x7fELF");
        out[4] = 2;
        out[5] = 1;
        out[18..20].copy_from_slice(&190u16.to_le_bytes());
        let names_at = out.len() as u64;
        out.extend_from_slice(names);
        let info_at = out.len() as u64;
        out.extend_from_slice(info);
        let table = out.len() as u64;
        out[40..48].copy_from_slice(&table.to_le_bytes());
        out[58..60].copy_from_slice(&64u16.to_le_bytes());
        out[60..62].copy_from_slice(&3u16.to_le_bytes());
        out[62..64].copy_from_slice(&1u16.to_le_bytes());
        for (name, offset, size) in
            [(0u32, 0u64, 0u64), (1, names_at, names.len() as u64), (11, info_at, info.len() as u64)]
        {
            let mut header = [0u8; 64];
            header[..4].copy_from_slice(&name.to_le_bytes());
            header[4..8].copy_from_slice(&if name == 1 { 3u32 } else { 0x7000_0000 }.to_le_bytes());
            header[24..32].copy_from_slice(&offset.to_le_bytes());
            header[32..40].copy_from_slice(&size.to_le_bytes());
            out.extend_from_slice(&header);
        }
        out
    }

    fn kparam(ordinal: u16, offset: u16, size: u32) -> Vec<u8> {
        let mut record = vec![EIFMT_SVAL, EIATTR_KPARAM_INFO, 12, 0, 0, 0, 0, 0];
        record.extend_from_slice(&ordinal.to_le_bytes());
        record.extend_from_slice(&offset.to_le_bytes());
        record.extend_from_slice(&((size << 18) | 0x1f500).to_le_bytes());
        record
    }

    #[test]
    fn parameter_records_are_read_in_ordinal_order_past_other_records() {
        // As ptxas writes them: last parameter first, between other attributes.
        let mut info = vec![EIFMT_SVAL, 0x37, 4, 0, 1, 2, 3, 4];
        info.extend(kparam(1, 8, 8));
        info.extend(kparam(0, 0, 8));
        info.extend([EIFMT_HVAL, 0x19, 16, 0]);
        let params = entry_params(&cubin_with_info(&info), "k").expect("parses").expect("entry k");
        let want = [KernelParam { ordinal: 0, offset: 0, size: 8 }, KernelParam { ordinal: 1, offset: 8, size: 8 }];
        assert_eq!(params, want);
        assert_eq!(entry_params(&cubin_with_info(&info), "other"), Ok(None));
    }

    #[test]
    fn malformed_records_are_errors_not_panics() {
        let cubin = cubin_with_info(&[EIFMT_SVAL, EIATTR_KPARAM_INFO, 200, 0, 1]);
        assert_eq!(entry_params(&cubin, "k"), Err("entry k: a truncated attribute record".to_string()));
        let cubin = cubin_with_info(&[9, 0, 0, 0]);
        assert_eq!(entry_params(&cubin, "k"), Err("entry k: unknown attribute record format 9".to_string()));
        let cubin = cubin_with_info(&[EIFMT_SVAL, EIATTR_KPARAM_INFO, 4, 0, 0, 0, 0, 0]);
        assert_eq!(entry_params(&cubin, "k"), Err("entry k: a parameter record of 4 bytes".to_string()));
        // Every truncation of a well-formed cubin, and every byte of it flipped, is an answer.
        let mut info = kparam(0, 0, 8);
        info.extend([EIFMT_HVAL, 0x19, 8, 0]);
        let whole = cubin_with_info(&info);
        for end in 0..whole.len() {
            let _ = entry_params(&whole[..end], "k");
        }
        for at in 0..whole.len() {
            let mut flipped = whole.clone();
            flipped[at] ^= 0xff;
            let _ = entry_params(&flipped, "k");
        }
        let mut host = cubin_with_info(&[]);
        host[18] = 62;
        assert_eq!(entry_params(&host, "k"), Err("not a little-endian 64-bit CUDA ELF object".to_string()));
    }
}
