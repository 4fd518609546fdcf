#!/usr/bin/env python3
"""Writes quantile_cases.json: NumPy's 'linear' quantile on random inputs, the table that
`quantile::tests::quantile_matches_numpy_table` (crate lightpeft-plan) checks bit for bit.

Run it with NumPy 1.25, the version the Light-PEFT reference pins (NumPy 2 computes the
quantile of a float32 array in float32, a different answer). CI never runs this script:
the JSON it writes is committed.

    python3 -m pip install numpy==1.25.2
    python3 backend/plan/tests/data/make_quantile_cases.py

Each case holds the input values as IEEE bit patterns in hex (float32: 8 digits, float64:
16 digits) and, for each q, numpy's tau as a float64 bit pattern plus the number of values
the reference keeps, `(x > np.quantile(x, q, axis=-1, keepdims=True)).sum()`: the same call
shape as the reference's head and FFN pruning, which compares in float64.
"""

import json
import math
import pathlib

import numpy as np

assert np.__version__.startswith("1.25."), f"need NumPy 1.25 (the reference's), found {np.__version__}"

rng = np.random.default_rng(20240624)
FIXED_QS = [0.0, 1.0, 0.333333333, 1 / 3, 0.5, 0.75]


def draw(n, kind):
    """n values of one of several shapes: spread, mask-like, tied, mixed sign."""
    if kind == "spread":
        return rng.standard_normal(n) * 10.0 ** rng.uniform(-3, 3, n)
    if kind == "mask":
        return 1.0 + 0.1 * rng.standard_normal(n)
    if kind == "ties":
        return rng.integers(-2, 3, n) * 0.25
    return rng.standard_normal(n) * 10.0 ** rng.uniform(-1, 1)


def case(values, qs):
    values = np.asarray(values)
    hexes = [format(int(b), "08x" if values.dtype == np.float32 else "016x")
             for b in values.view(np.uint32 if values.dtype == np.float32 else np.uint64)]
    entries = []
    for q in qs:
        tau = np.quantile(values[None, :], q, axis=-1, keepdims=True)
        kept = int((values[None, :] > tau).sum())
        # The plain 1-d call must give the same tau; the Rust function mirrors both.
        assert np.quantile(values, q) == tau[0, 0]
        entries.append([repr(float(q)), format(np.float64(tau[0, 0]).view(np.uint64), "016x"), kept])
    return {"dtype": str(values.dtype), "values": hexes, "q": entries}


def alternatives(values, q):
    """tau under the two plausible misreadings, to check the table tells them apart."""
    v = np.sort(np.asarray(values))
    n = len(v)
    out = []
    for spec_index, f32_diff in [(True, True), (False, False)]:
        g = n * q + (1 - q) - 1 if spec_index else (n - 1) * q
        if g >= n - 1:
            out.append(float(v[-1]))
            continue
        i = math.floor(g)
        t = g - i
        d = float(v[i + 1] - v[i]) if f32_diff else float(v[i + 1]) - float(v[i])
        out.append(float(v[i + 1]) - d * (1 - t) if t >= 0.5 else float(v[i]) + d * t)
    return out


cases = []
kinds = ["spread", "mask", "ties", "mixed"]
for n in range(1, 51):
    qs = FIXED_QS + list(rng.random(2))
    cases.append(case(draw(n, kinds[n % 4]).astype(np.float32), qs))
    if n % 3 == 1:
        cases.append(case(draw(n, kinds[(n // 3) % 4]), qs))
for n, dtype in [(1000, np.float32), (1024, np.float32), (999, np.float64)]:
    cases.append(case(draw(n, "mask").astype(dtype), FIXED_QS + list(rng.random(2))))

differ = {"spec_index": 0, "f64_diff": 0}
for c in cases:
    dt = np.float32 if c["dtype"] == "float32" else np.float64
    vals = np.array([int(h, 16) for h in c["values"]], dtype=np.uint32 if dt == np.float32 else np.uint64).view(dt)
    for q, tau_hex, _ in c["q"]:
        tau = np.uint64(int(tau_hex, 16)).view(np.float64)
        spec, f64d = alternatives(vals, float(q))
        differ["spec_index"] += spec != tau
        if dt == np.float32:
            differ["f64_diff"] += f64d != tau
assert differ["spec_index"] > 0 and differ["f64_diff"] > 0, differ

out = pathlib.Path(__file__).with_name("quantile_cases.json")
# One case per line keeps a regenerated table reviewable as a diff.
lines = ",\n".join(json.dumps(c, separators=(",", ":")) for c in cases)
out.write_text(f'{{"numpy":"{np.__version__}","cases":[\n{lines}\n]}}\n')
print(f"{out}: {len(cases)} cases, {sum(len(c['q']) for c in cases)} quantiles, "
      f"{out.stat().st_size} bytes; taus that differ under n*q+(1-q)-1: {differ['spec_index']}, "
      f"under a float64 neighbour difference: {differ['f64_diff']}")
