//! `.npy` reading and writing against the format specification: every supported dtype, both
//! byte orders, Fortran order, versions 1.0 to 3.0, and precise errors for broken files.

use tessera_ir::dtype::DType;
use tessera_ir::tensor::Tensor;
use tessera_runtime::npy::{conform_to, read_npy, read_npy_bytes, write_npy, write_npy_bytes, NpyError};

/// A `.npy` file as NumPy lays it out: magic, version, header length, the dict padded with
/// spaces to a 64-byte boundary and ended by a newline, then `data`.
fn npy_file(version: u8, dict: impl AsRef<[u8]>, data: &[u8]) -> Vec<u8> {
    let dict = dict.as_ref();
    let prefix = if version == 1 { 10 } else { 12 };
    let header_len = (prefix + dict.len() + 1).div_ceil(64) * 64 - prefix;
    let mut out = b"\x93NUMPY".to_vec();
    out.extend_from_slice(&[version, 0]);
    if version == 1 {
        out.extend_from_slice(&(header_len as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&(header_len as u32).to_le_bytes());
    }
    out.extend_from_slice(dict);
    out.extend(std::iter::repeat_n(b' ', header_len - dict.len() - 1));
    out.push(b'\n');
    out.extend_from_slice(data);
    out
}

fn read_err(bytes: &[u8]) -> String {
    match read_npy_bytes(bytes) {
        Err(e) => e.to_string(),
        Ok(t) => panic!("expected an error, read {t:?}"),
    }
}

#[test]
fn every_numpy_dtype_round_trips() {
    let floats = [1.5, -2.25, 0.0, 65504.0, f64::INFINITY, -1e-3];
    let ints = [0, 1, -1, 127, -128, 42];
    let tensors = [
        Tensor::from_f64(DType::F64, vec![2, 3], floats.to_vec()),
        Tensor::from_f64(DType::F32, vec![3, 2], floats.to_vec()),
        Tensor::from_f64(DType::F16, vec![6], floats.to_vec()),
        Tensor::from_i64(DType::I64, vec![2, 3], vec![i64::MIN, i64::MAX, 0, -1, 5, 6]),
        Tensor::from_i64(DType::I32, vec![1, 6], vec![i32::MIN as i64, i32::MAX as i64, 0, -1, 5, 6]),
        Tensor::from_i64(DType::I8, vec![6], ints.to_vec()),
        Tensor::from_i64(DType::I16, vec![6], vec![-32768, 32767, 0, -1, 5, 6]),
        Tensor::from_i64(DType::U8, vec![6], vec![0, 255, 1, 2, 128, 7]),
        Tensor::from_i64(DType::U16, vec![6], vec![0, 65535, 1, 2, 128, 7]),
        Tensor::from_i64(DType::U32, vec![6], vec![0, u32::MAX as i64, 1, 2, 128, 7]),
        Tensor::from_i64(DType::U64, vec![6], vec![0, -1, 1, i64::MIN, 128, 7]),
        Tensor::from_i64(DType::Bool, vec![2, 1, 3], vec![1, 0, 0, 1, 1, 0]),
        Tensor::from_f64(DType::F32, vec![], vec![3.25]),
        Tensor::from_f64(DType::F64, vec![0, 4], vec![]),
    ];
    for t in tensors {
        let bytes = write_npy_bytes(&t);
        assert_eq!(bytes[..8], *b"\x93NUMPY\x01\x00", "version 1.0 for {t:?}");
        let data_start = 10 + u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!(data_start % 64, 0, "data is 64-byte aligned");
        assert_eq!(bytes[data_start - 1], b'\n');
        assert_eq!(bytes.len() - data_start, t.len() * t.dtype.size_bytes());
        assert_eq!(read_npy_bytes(&bytes).expect("read back"), t);
    }
}

#[test]
fn the_header_is_the_dict_numpy_writes() {
    let t = Tensor::from_f64(DType::F64, vec![2, 3], vec![0.0; 6]);
    let bytes = write_npy_bytes(&t);
    let dict = "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }";
    assert_eq!(bytes, npy_file(1, dict, &[0u8; 48]));
    let scalar = write_npy_bytes(&Tensor::from_i64(DType::I8, vec![], vec![-3]));
    assert_eq!(scalar, npy_file(1, "{'descr': '|i1', 'fortran_order': False, 'shape': (), }", &[0xfd]));
    let vector = write_npy_bytes(&Tensor::from_i64(DType::Bool, vec![2], vec![1, 0]));
    assert_eq!(vector, npy_file(1, "{'descr': '|b1', 'fortran_order': False, 'shape': (2,), }", &[1, 0]));
}

#[test]
fn bf16_and_fp8_are_written_as_float32_and_conform_back() {
    for dtype in [DType::BF16, DType::F8E4M3, DType::F8E5M2, DType::F8E4M3Fnuz, DType::F8E5M2Fnuz, DType::F4E2M1] {
        let t = Tensor::from_f64(dtype, vec![3], vec![1.0, -0.5, 3.0]);
        let back = read_npy_bytes(&write_npy_bytes(&t)).expect("read");
        assert_eq!(back, Tensor::from_f64(DType::F32, vec![3], vec![1.0, -0.5, 3.0]));
        assert_eq!(conform_to(back, dtype).expect("conform"), t);
    }
    // Conforming rounds a float32 value that the narrow type cannot hold.
    let wide = Tensor::from_f64(DType::F32, vec![1], vec![1.0 + 1.0 / 128.0 + 1.0 / 1024.0]);
    assert_eq!(conform_to(wide, DType::BF16).expect("conform").to_f64_vec(), [1.0078125]);
}

#[test]
fn four_and_two_bit_integers_travel_one_per_byte() {
    let t = Tensor::from_i64(DType::I4, vec![3], vec![-8, 7, -1]);
    let back = read_npy_bytes(&write_npy_bytes(&t)).expect("read");
    assert_eq!(back, Tensor::from_i64(DType::I8, vec![3], vec![-8, 7, -1]));
    assert_eq!(conform_to(back, DType::I4).expect("conform"), t);
    let too_wide = Tensor::from_i64(DType::U8, vec![1], vec![4]);
    assert!(conform_to(too_wide, DType::U2).is_err(), "4 does not fit ui2");
}

#[test]
fn conform_to_refuses_other_conversions() {
    let f64s = Tensor::from_f64(DType::F64, vec![1], vec![1.0]);
    let same = conform_to(f64s.clone(), DType::F64).expect("same dtype");
    assert_eq!(same, f64s);
    let err = conform_to(f64s, DType::F32).expect_err("f64 to f32");
    assert_eq!(
        err.to_string(),
        "the array is f64 but the input is declared f32 (only f32 arrays convert, to bf16 and the 8- and 4-bit floats, and i1/u1 ones to the 4- and 2-bit integers in range)"
    );
    let ints = Tensor::from_i64(DType::I32, vec![1], vec![1]);
    assert!(matches!(
        conform_to(ints, DType::I64),
        Err(NpyError::DtypeMismatch { declared: DType::I64, given: DType::I32 })
    ));
}

#[test]
fn big_endian_arrays_are_read() {
    let data: Vec<u8> = [1.5f64, -2.0].iter().flat_map(|v| v.to_be_bytes()).collect();
    let t =
        read_npy_bytes(&npy_file(1, "{'descr': '>f8', 'fortran_order': False, 'shape': (2,), }", &data)).expect("f8");
    assert_eq!(t, Tensor::from_f64(DType::F64, vec![2], vec![1.5, -2.0]));
    let data: Vec<u8> = [1i32, -2, 70000].iter().flat_map(|v| v.to_be_bytes()).collect();
    let t =
        read_npy_bytes(&npy_file(1, "{'descr': '>i4', 'fortran_order': False, 'shape': (3,), }", &data)).expect("i4");
    assert_eq!(t.to_i64_vec(), [1, -2, 70000]);
    let data: Vec<u8> = [0x3c00u16, 0xc000].iter().flat_map(|v| v.to_be_bytes()).collect();
    let t =
        read_npy_bytes(&npy_file(1, "{'descr': '>f2', 'fortran_order': False, 'shape': (2,), }", &data)).expect("f2");
    assert_eq!((t.dtype, t.to_f64_vec()), (DType::F16, vec![1.0, -2.0]));
}

#[test]
fn fortran_order_is_transposed_to_row_major() {
    // The 2x3 matrix [[1, 2, 3], [4, 5, 6]] stored column by column.
    let data: Vec<u8> = [1.0f32, 4.0, 2.0, 5.0, 3.0, 6.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    let dict = "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }";
    let t = read_npy_bytes(&npy_file(1, dict, &data)).expect("read");
    assert_eq!(t, Tensor::from_f64(DType::F32, vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]));
    // Rank 3: element [i, j, k] of a [2, 2, 2] array sits at i + 2j + 4k.
    let fortran: Vec<u8> = [0i64, 4, 2, 6, 1, 5, 3, 7].iter().flat_map(|v| v.to_le_bytes()).collect();
    let dict = "{'descr': '<i8', 'fortran_order': True, 'shape': (2, 2, 2), }";
    let t = read_npy_bytes(&npy_file(1, dict, &fortran)).expect("read");
    assert_eq!(t.to_i64_vec(), [0, 1, 2, 3, 4, 5, 6, 7]);
}

#[test]
fn versions_two_and_three_have_a_four_byte_header_length() {
    let data: Vec<u8> = [7i32, 8].iter().flat_map(|v| v.to_le_bytes()).collect();
    let dict = "{'descr': '<i4', 'fortran_order': False, 'shape': (2,), }";
    for version in [2, 3] {
        let t = read_npy_bytes(&npy_file(version, dict, &data)).expect("read");
        assert_eq!(t, Tensor::from_i64(DType::I32, vec![2], vec![7, 8]));
    }
    // Version 3.0 headers are UTF-8, 1.0 and 2.0 latin-1: the bytes C2 A0 are one
    // no-break space (whitespace) in UTF-8 but two characters in latin-1.
    let nbsp = "{'descr': '<i4', 'fortran_order': False, 'shape': (2,), }\u{a0}";
    assert_eq!(read_npy_bytes(&npy_file(3, nbsp, &data)).expect("utf-8").to_i64_vec(), [7, 8]);
    assert_eq!(read_err(&npy_file(2, nbsp, &data)), "malformed .npy header: text after the closing brace at column 58");
    let invalid = [dict.as_bytes(), b"\xff"].concat();
    assert!(read_err(&npy_file(3, invalid, &data)).starts_with("malformed .npy header: not UTF-8"));
    assert_eq!(read_err(&npy_file(4, dict, &data)), "unsupported .npy format version 4.0 (supported: 1.0, 2.0, 3.0)");
}

#[test]
fn headers_in_other_valid_spellings_are_read() {
    // Double quotes, keys in another order, no trailing comma, Python 2 long integers.
    let dict = "{\"shape\": (2L, 1L), \"descr\": \"<i8\", \"fortran_order\": False}";
    let data: Vec<u8> = [3i64, 4].iter().flat_map(|v| v.to_le_bytes()).collect();
    let t = read_npy_bytes(&npy_file(1, dict, &data)).expect("read");
    assert_eq!((t.shape.clone(), t.to_i64_vec()), (vec![2, 1], vec![3, 4]));
}

#[test]
fn broken_files_give_precise_errors() {
    let dict = "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }";
    let good = npy_file(1, dict, &[0u8; 16]);
    assert_eq!(read_err(&good[..good.len() - 8]), "truncated data: expected 16 bytes, got 8");
    assert_eq!(read_err(&good[..40]), "truncated header: expected 128 bytes, got 40");
    assert_eq!(read_err(&good[..4]), "truncated header: expected 10 bytes, got 4");
    let mut extra = good.clone();
    extra.extend_from_slice(&[0, 0, 0]);
    assert_eq!(read_err(&extra), "3 unexpected bytes after the array data");
    assert_eq!(read_err(b"PK\x03\x04 not numpy at all"), "not a .npy file: bad magic (expected \\x93NUMPY)");
    assert_eq!(read_err(b""), "not a .npy file: bad magic (expected \\x93NUMPY)");
    let complex = npy_file(1, "{'descr': '<c16', 'fortran_order': False, 'shape': (), }", &[0; 16]);
    assert_eq!(
        read_err(&complex),
        "unsupported dtype '<c16' (supported: f8, f4, f2, i8, i4, i2, i1, u8, u4, u2, u1, b1)"
    );
    let missing = npy_file(1, "{'descr': '<f8', 'shape': (2,), }", &[0u8; 16]);
    assert_eq!(read_err(&missing), "malformed .npy header: missing key 'fortran_order'");
    let bad_shape = npy_file(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (-2,), }", &[]);
    assert_eq!(
        read_err(&bad_shape),
        "malformed .npy header: expected a non-negative integer in the shape at column 52"
    );
    let unknown = npy_file(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (), 'x': 1}", &[0; 8]);
    assert_eq!(read_err(&unknown), "malformed .npy header: unexpected key 'x' at column 55");
}

#[test]
fn files_are_written_atomically() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = Tensor::from_f64(DType::F32, vec![2], vec![1.0, 2.0]);
    let path = dir.path().join("out.npy");
    write_npy(&path, &t).expect("write");
    assert_eq!(read_npy(&path).expect("read"), t);
    // Overwriting replaces the file whole.
    let u = Tensor::from_i64(DType::I64, vec![1], vec![9]);
    write_npy(&path, &u).expect("overwrite");
    assert_eq!(read_npy(&path).expect("read"), u);
    let entries = |d: &std::path::Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(d)
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into())
            .collect();
        names.sort();
        names
    };
    assert_eq!(entries(dir.path()), ["out.npy"]);
    // A directory in the way is refused before anything is written: no temporary file is left.
    std::fs::create_dir(dir.path().join("taken.npy")).expect("mkdir");
    let err = write_npy(&dir.path().join("taken.npy"), &t).expect_err("directory in the way");
    assert!(matches!(err, NpyError::Write(_)), "{err}");
    assert!(
        err.to_string().ends_with(
            "taken.npy: is a directory, not a regular file; tessera writes only regular files and will not replace it"
        ),
        "{err}"
    );
    assert_eq!(entries(dir.path()), ["out.npy", "taken.npy"]);
    let err = write_npy(&dir.path().join("missing/out.npy"), &t).expect_err("no parent");
    assert!(err.to_string().contains("missing/out.npy"), "{err}");
    let err = read_npy(&dir.path().join("absent.npy")).expect_err("absent");
    assert!(err.to_string().contains("absent.npy: "), "{err}");
}
