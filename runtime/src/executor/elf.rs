//! Reads an exported data symbol out of an x86-64 ELF shared object's bytes, and a named section
//! out of a CUDA cubin's, without mapping either.
//!
//! The loader checks `kernels.so`'s signature table ([`tessera_ir::artifact::KERNEL_SIGNATURES_SYMBOL`])
//! before `dlopen`, because `dlopen` already runs the object's initializers: a foreign object must
//! be refused from its bytes. Only what that needs is read: the section headers, the dynamic
//! symbol table and its string table, every offset and size checked against the file.

/// A little-endian reader over the object's bytes whose every read is bounds-checked.
struct Bytes<'a>(&'a [u8]);

impl<'a> Bytes<'a> {
    fn slice(&self, offset: u64, len: u64, what: &str) -> Result<&'a [u8], String> {
        let end = offset.checked_add(len).ok_or_else(|| format!("{what} lies outside the file"))?;
        let (start, end) = (usize::try_from(offset), usize::try_from(end));
        match (start, end) {
            (Ok(start), Ok(end)) if end <= self.0.len() => Ok(&self.0[start..end]),
            _ => Err(format!("{what} lies outside the file")),
        }
    }

    fn u16(&self, offset: u64, what: &str) -> Result<u16, String> {
        let b = self.slice(offset, 2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&self, offset: u64, what: &str) -> Result<u32, String> {
        let b = self.slice(offset, 4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&self, offset: u64, what: &str) -> Result<u64, String> {
        let b = self.slice(offset, 8, what)?;
        Ok(u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
    }
}

/// One section header's fields that the lookups need.
struct Section {
    /// Offset of the name in the section-name string table.
    name: u32,
    kind: u32,
    addr: u64,
    offset: u64,
    size: u64,
    link: u32,
    entry_size: u64,
}

const SHT_DYNSYM: u32 = 11;
const SHT_NOBITS: u32 = 8;
/// The machines this reader accepts: a host kernels object, and a CUDA cubin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Machine {
    X86_64 = 62,
    Cuda = 190,
}
const SECTION_HEADER_BYTES: u64 = 64;
const SYMBOL_BYTES: u64 = 24;
/// More sections than any linker writes for a kernels object; bounds the work on hostile input.
const MAX_SECTIONS: u64 = 1 << 16;

fn sections(elf: &Bytes, machine: Machine) -> Result<Vec<Section>, String> {
    let ident = elf.slice(0, 16, "the ELF header")?;
    if &ident[..4] != b"\x7fELF" {
        return Err("not an ELF file".into());
    }
    // ELFCLASS64, ELFDATA2LSB.
    if ident[4] != 2 || ident[5] != 1 || elf.u16(18, "the ELF header")? != machine as u16 {
        let machine = match machine {
            Machine::X86_64 => "x86-64",
            Machine::Cuda => "CUDA",
        };
        return Err(format!("not a little-endian 64-bit {machine} ELF object"));
    }
    let table = elf.u64(40, "the ELF header")?;
    let entry_size = u64::from(elf.u16(58, "the ELF header")?);
    let count = u64::from(elf.u16(60, "the ELF header")?);
    if entry_size != SECTION_HEADER_BYTES || count > MAX_SECTIONS {
        return Err(format!("unexpected section header table ({count} entries of {entry_size} bytes)"));
    }
    (0..count)
        .map(|i| {
            let at = table
                .checked_add(i * SECTION_HEADER_BYTES)
                .ok_or_else(|| "the section header table lies outside the file".to_string())?;
            let what = "a section header";
            let header = Bytes(elf.slice(at, SECTION_HEADER_BYTES, what)?);
            Ok(Section {
                name: header.u32(0, what)?,
                kind: header.u32(4, what)?,
                addr: header.u64(16, what)?,
                offset: header.u64(24, what)?,
                size: header.u64(32, what)?,
                link: header.u32(40, what)?,
                entry_size: header.u64(56, what)?,
            })
        })
        .collect()
}

/// The bytes of the defined dynamic symbol `name` (its `st_size` bytes at its address, read
/// from the file), `Ok(None)` when the object does not export it, `Err` when the file is not a
/// well-formed x86-64 ELF object as far as the lookup reads it.
pub fn exported_symbol_bytes<'a>(object: &'a [u8], name: &str) -> Result<Option<&'a [u8]>, String> {
    let elf = Bytes(object);
    let sections = sections(&elf, Machine::X86_64)?;
    let Some(dynsym) = sections.iter().find(|s| s.kind == SHT_DYNSYM) else {
        return Err("no dynamic symbol table".into());
    };
    if dynsym.entry_size != SYMBOL_BYTES {
        return Err(format!("dynamic symbols of {} bytes", dynsym.entry_size));
    }
    let strings = sections.get(dynsym.link as usize).ok_or("the dynamic symbol table has no string table")?;
    let strings = elf.slice(strings.offset, strings.size, "the dynamic string table")?;
    let symbols = elf.slice(dynsym.offset, dynsym.size, "the dynamic symbol table")?;
    for symbol in symbols.chunks_exact(SYMBOL_BYTES as usize) {
        let symbol = Bytes(symbol);
        let name_at = symbol.u32(0, "a symbol")? as usize;
        let symbol_name = strings.get(name_at..).and_then(|s| s.split(|&b| b == 0).next());
        if symbol_name != Some(name.as_bytes()) {
            continue;
        }
        let section_index = symbol.u16(6, "a symbol")?;
        let (value, size) = (symbol.u64(8, "a symbol")?, symbol.u64(16, "a symbol")?);
        let section = sections
            .get(usize::from(section_index))
            .filter(|s| section_index != 0 && s.kind != SHT_NOBITS)
            .ok_or_else(|| format!("symbol {name} is not defined in a section with contents"))?;
        let within = value
            .checked_sub(section.addr)
            .filter(|&start| start.checked_add(size).is_some_and(|end| end <= section.size));
        let start = within.ok_or_else(|| format!("symbol {name} lies outside its section"))?;
        let at = section.offset.checked_add(start).ok_or_else(|| format!("symbol {name} lies outside the file"))?;
        return elf.slice(at, size, "a symbol's contents").map(Some);
    }
    Ok(None)
}

/// The contents of the section called `name` in an ELF object for `machine`, `Ok(None)` when it
/// has none, `Err` when the file is not well-formed as far as the lookup reads it.
pub fn section_named<'a>(object: &'a [u8], machine: Machine, name: &str) -> Result<Option<&'a [u8]>, String> {
    let elf = Bytes(object);
    let sections = sections(&elf, machine)?;
    let names =
        sections.get(usize::from(elf.u16(62, "the ELF header")?)).ok_or("the section-name string table is missing")?;
    let names = elf.slice(names.offset, names.size, "the section-name string table")?;
    for section in &sections {
        let section_name = names.get(section.name as usize..).and_then(|s| s.split(|&b| b == 0).next());
        if section_name == Some(name.as_bytes()) && section.kind != SHT_NOBITS {
            return elf.slice(section.offset, section.size, "a section's contents").map(Some);
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_elf_and_truncated_inputs_are_errors_not_panics() {
        assert_eq!(exported_symbol_bytes(b"hello", "x"), Err("the ELF header lies outside the file".to_string()));
        assert_eq!(exported_symbol_bytes(&[0u8; 64], "x"), Err("not an ELF file".to_string()));
        let mut header = vec![0u8; 64];
        header[..4].copy_from_slice(b"\x7fELF");
        header[4] = 2;
        header[5] = 1;
        header[18] = 62;
        header[58] = 64;
        header[60] = 3;
        header[40..48].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(exported_symbol_bytes(&header, "x"), Err("a section header lies outside the file".to_string()));
    }
}
