"""Writes ir/tests/data/dtype-rounding.tsv: float32 values and what NumPy/ml_dtypes make of them
in tessera's narrow element types (non-saturating `astype`, as ONNX Cast with saturate=0 does for
the float8 types; float4e2m1 always saturates). ir/tests/dtype.rs checks DType against it.

Run with the model-corpus venv: .cache/model-corpus/venv/bin/python scripts/dtype-table.py
"""

import ml_dtypes
import numpy as np

TYPES = [
    ("f8E4M3FN", ml_dtypes.float8_e4m3fn),
    ("f8E5M2", ml_dtypes.float8_e5m2),
    ("f8E4M3FNUZ", ml_dtypes.float8_e4m3fnuz),
    ("f8E5M2FNUZ", ml_dtypes.float8_e5m2fnuz),
    ("f4E2M1FN", ml_dtypes.float4_e2m1fn),
    ("i4", ml_dtypes.int4),
    ("ui4", ml_dtypes.uint4),
    ("i2", ml_dtypes.int2),
    ("ui2", ml_dtypes.uint2),
]

special = [0.0, -0.0, 1.0, -1.0, 0.5, 1.5, 2.5, -2.5, 3.0, 6.0, 7.0, 7.5, 8.0, -8.0, -9.0, 15.0, 16.0,
           240.0, 248.0, 256.0, 448.0, 464.0, 480.0, 57344.0, 61440.0, 65536.0, 1e-3, 2.0**-9, 2.0**-10,
           2.0**-16, 2.0**-17, 2.0**-18, 1.0625, 1.1, 1.3, 0.25, 0.75, 5.0, 1e6, -1e6, np.inf, -np.inf,
           np.nan]
rng = np.random.default_rng(2026)
randoms = (rng.standard_normal(160) * np.exp2(rng.integers(-18, 17, 160))).tolist()
values = np.array(special + randoms, dtype=np.float32)

lines = ["# input_f32_bits\t" + "\t".join(name for name, _ in TYPES)]
with np.errstate(all="ignore"):
    for v in values:
        cells = [f"{v.view(np.uint32):08x}"]
        for name, t in TYPES:
            if name.startswith(("i", "ui")) and not np.isfinite(v):
                cells.append("-")  # float -> int of NaN/inf is undefined in NumPy
                continue
            out = np.array([v]).astype(t).astype(np.float32)[0]
            cells.append(f"{out.view(np.uint32):08x}")
        lines.append("\t".join(cells))
with open("ir/tests/data/dtype-rounding.tsv", "w") as f:
    f.write("\n".join(lines) + "\n")
