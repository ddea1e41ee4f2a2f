//! The memory budget for allocations whose size comes from the input (a `--dim`, an ONNX
//! `Expand` target, a `.npy` header, a random input's type): such a size is checked here
//! before anything is allocated, so a huge one is a message naming the tensor and its size
//! instead of an aborted process. The limit is `--max-memory`, by default the machine's memory
//! (`MemTotal` of /proc/meminfo; 16 GiB where that cannot be read).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// Every IR tensor holds its elements as 8-byte `f64` or `i64`, whatever the dtype.
pub const IR_ELEMENT_BYTES: u64 = 8;

/// The limit set by [`set_max_memory`]; 0 while unset.
static MAX_MEMORY: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} needs {} ({elements} elements), more than the memory limit of {} (raise it with --max-memory)", human_bytes(*bytes), human_bytes(*limit))]
pub struct BudgetError {
    pub what: String,
    pub elements: u128,
    pub bytes: u128,
    pub limit: u64,
}

/// Sets the limit for this process (the CLI's `--max-memory`).
pub fn set_max_memory(bytes: u64) {
    MAX_MEMORY.store(bytes.max(1), Ordering::Relaxed);
}

/// The limit in bytes: the one set, else the machine's memory.
pub fn max_memory() -> u64 {
    match MAX_MEMORY.load(Ordering::Relaxed) {
        0 => machine_memory(),
        set => set,
    }
}

/// `MemTotal` from /proc/meminfo (read once), or 16 GiB where it cannot be read.
pub fn machine_memory() -> u64 {
    static MEMORY: OnceLock<u64> = OnceLock::new();
    *MEMORY.get_or_init(|| {
        let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|rest| rest.trim().strip_suffix("kB"))
            .and_then(|kb| kb.trim().parse::<u64>().ok())
            .map_or(16 << 30, |kb| kb.saturating_mul(1024))
    })
}

/// Refuses `elements` elements of `bytes_per_element` bytes each for `what` (a tensor's name
/// and role, e.g. `random input %x` or `Expand output 'y'`) when they exceed the limit.
pub fn check(what: &str, elements: u128, bytes_per_element: u64) -> Result<(), BudgetError> {
    let bytes = elements.saturating_mul(u128::from(bytes_per_element));
    let limit = max_memory();
    if bytes > u128::from(limit) {
        return Err(BudgetError { what: what.to_string(), elements, bytes, limit });
    }
    Ok(())
}

/// [`check`] for an IR tensor of `shape` (8 bytes an element in memory).
pub fn check_shape<D: Copy + Into<u128>>(what: &str, shape: &[D]) -> Result<(), BudgetError> {
    let elements = shape.iter().try_fold(1u128, |acc, &d| acc.checked_mul(d.into())).unwrap_or(u128::MAX);
    check(what, elements, IR_ELEMENT_BYTES)
}

/// A size as people write it: bytes, or a number with `K`, `M`, `G` or `T` (powers of 1024,
/// an optional trailing `B` or `iB`).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let t = t.strip_suffix("iB").or_else(|| t.strip_suffix('B')).unwrap_or(t);
    let (digits, shift) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() && !t[..i].is_empty() && t[..i].bytes().all(|b| b.is_ascii_digit()) => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(format!("'{text}': unknown unit '{c}' (use K, M, G or T)")),
            };
            (&t[..i], shift)
        }
        _ => (t, 0),
    };
    let n: u64 = digits.trim().parse().map_err(|_| format!("'{text}' is not a size like 8G, 512M or 1048576"))?;
    n.checked_mul(1u64 << shift)
        .filter(|&b| b > 0)
        .ok_or_else(|| format!("'{text}' is not a positive size that fits 64 bits"))
}

/// `8.0 GiB`, `512.0 MiB`, `100 B`: for messages.
pub fn human_bytes(bytes: impl Into<u128>) -> String {
    let bytes: u128 = bytes.into();
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", units[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("8G"), Ok(8 << 30));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        assert_eq!(parse_size("8X"), Err("'8X': unknown unit 'X' (use K, M, G or T)".to_string()));
        assert_eq!(parse_size("lots"), Err("'lots' is not a size like 8G, 512M or 1048576".to_string()));
        assert!(parse_size("0").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn a_shape_over_the_limit_is_refused_with_its_name_and_size() {
        assert!(machine_memory() > 0);
        let limit = max_memory();
        assert!(check_shape("small", &[4u64, 4]).is_ok());
        let e = check_shape("random input %x", &[1u64 << 40]).expect_err("2^40 elements");
        assert_eq!(e.bytes, 8u128 << 40);
        assert_eq!(
            e.to_string(),
            format!(
                "random input %x needs 8.0 TiB (1099511627776 elements), more than the memory limit of {} (raise it with --max-memory)",
                human_bytes(limit)
            )
        );
        // A product that overflows even u128 is refused, not wrapped.
        assert!(check_shape("huge", &[u64::MAX, u64::MAX, u64::MAX]).is_err());
    }
}
