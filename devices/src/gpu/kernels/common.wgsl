// Shared helpers for every qdiff kernel. The generated header before this file declares
// `T` (the compute dtype: f32, or native f16 under `enable f16`), `T_IS_F16`, `T_IS_BF16`,
// `WG`, the specialization constants, the `Params` uniform `P` and the resource accessors.

// fp32 -> bf16 with round-to-nearest-even on the bits (PyTorch c10 / MLX), NaN -> 0x7FC0.
fn bf16r(x: f32) -> f32 {
    let u = bitcast<u32>(x);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        return bitcast<f32>(0x7fc00000u);
    }
    return bitcast<f32>((u + 0x7fffu + ((u >> 16u) & 1u)) & 0xffff0000u);
}

// fp32 -> fp16 value with round-to-nearest-even, subnormals kept, overflow to inf, computed
// with integer ops: Vulkan leaves the rounding of an fp32->fp16 conversion to the
// implementation, the frameworks (torch, numpy, ggml) round to nearest even.
fn f16r(x: f32) -> f32 {
    let u = bitcast<u32>(x);
    let sign = u & 0x80000000u;
    let a = u & 0x7fffffffu;
    if (a >= 0x7f800000u || a == 0u) {
        return x;
    }
    // |x| <= 2^-25 rounds to zero (2^-25 itself is a tie, and 0 is even).
    if (a <= 0x33000000u) {
        return bitcast<f32>(sign);
    }
    let e = i32(a >> 23u) - 127;
    let m = (a & 0x7fffffu) | 0x800000u;
    let sh = u32(13 + max(0, -14 - e));
    let half = 1u << (sh - 1u);
    let rem = m & ((1u << sh) - 1u);
    var r = m >> sh;
    if (rem > half || (rem == half && (r & 1u) == 1u)) {
        r = r + 1u;
    }
    var v = ldexp(f32(r), i32(sh) + e - 23);
    if (v > 65504.0) {
        v = bitcast<f32>(0x7f800000u);
    }
    return bitcast<f32>(bitcast<u32>(v) | sign);
}

// fp16 bits -> f32 (exact, subnormals decoded without relying on the driver).
fn h2f(h: u32) -> f32 {
    let s = (h >> 15u) & 1u;
    let e = (h >> 10u) & 0x1fu;
    let m = h & 0x3ffu;
    var bits: u32;
    if (e == 0u) {
        let v = f32(m) * 5.9604645e-8;
        bits = bitcast<u32>(v);
    } else if (e == 31u) {
        bits = 0x7f800000u | (m << 13u);
    } else {
        bits = ((e + 112u) << 23u) | (m << 13u);
    }
    return bitcast<f32>(bits | (s << 31u));
}

// Round an f32 value to the compute dtype (exact RNE) and return it as T.
fn to_t(x: f32) -> T {
    if (T_IS_F16) {
        return T(f16r(x));
    }
    if (T_IS_BF16) {
        return T(bf16r(x));
    }
    return T(x);
}

// The result of a T operation, rounded where T is emulated (bf16 is f32 arithmetic rounded
// after every operation: exact, since f32 has more than 2p+2 bits for p = 8).
fn rt(x: T) -> T {
    if (T_IS_BF16) {
        return T(bf16r(f32(x)));
    }
    return x;
}

// An opaque identity: keeps the driver from contracting `a*b + c` into one fma where the
// framework rounds the product first (SPIR-V lets drivers fuse unless told otherwise).
fn nc(x: T) -> T {
    return select(x, T(0.0), P.nc_key == 0x5eedu);
}
fn ncf(x: f32) -> f32 {
    return select(x, 0.0, P.nc_key == 0x5eedu);
}

// Round half away from zero, exactly (C roundf, Metal round, GLSL round on ties-away drivers):
// `x - trunc(x)` is exact, so no addition can create or destroy a tie.
fn rhaz(x: f32) -> f32 {
    let t = trunc(x);
    return select(t, t + sign(x), abs(x - t) >= 0.5);
}

// Veltkamp split of an f32 into two halves of at most 12 significant bits each.
fn split12(a: f32) -> vec2<f32> {
    let c = ncf(4097.0 * a);
    let hi = ncf(c - ncf(c - a));
    return vec2<f32>(hi, a - hi);
}

// The exact rounding error of p = fl(a*b) (Dekker's two-product): every partial product is
// exact, and the sums are exact by Dekker's argument. Written without fma because a driver's
// `fma` need not be fused (lavapipe's is not: see the `probe.fma_fused` device feature), and
// with `ncf` so that no product is contracted into the following add.
fn two_prod_err(a: f32, b: f32, p: f32) -> f32 {
    let x = split12(a);
    let y = split12(b);
    let e1 = ncf(ncf(x.x * y.x) - p);
    let e2 = ncf(e1 + ncf(x.x * y.y));
    let e3 = ncf(e2 + ncf(x.y * y.x));
    return e3 + ncf(x.y * y.y);
}

// The product a*b rounded to odd in f32 (the exact product's f32 neighbour with an odd last bit
// when it is inexact), so that one more rounding to a narrower dtype is the correctly rounded
// product (f32 has at least p+2 bits over f16/bf16).
fn mul_rto(a: f32, b: f32) -> f32 {
    let p = ncf(a * b);
    let e = two_prod_err(a, b, p);
    let u = bitcast<u32>(p);
    if (e == 0.0 || (u & 1u) == 1u || p == 0.0) {
        return p;
    }
    if ((e > 0.0) == (p > 0.0)) {
        return bitcast<f32>(u + 1u);
    }
    return bitcast<f32>(u - 1u);
}

// Linear invocation index over a (possibly 2-D) dispatch.
fn flat(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * WG;
}

// `a*b` (both f32) correctly rounded once to T: the f32 product for f32, the rounded-to-odd
// product rounded again to f16/bf16 (one correct rounding of the exact product).
fn mul_t(a: f32, b: f32) -> T {
    if (T_IS_F16 || T_IS_BF16) {
        return to_t(mul_rto(a, b));
    }
    return T(a * b);
}

fn is_nan(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u;
}

// A rounded code clamped to [lo, hi] and made an integer the way the frameworks' casts do
// (numpy's astype / Rust's `as`: NaN becomes 0; an integer carries no sign of zero).
fn to_code(r: f32, lo: f32, hi: f32) -> i32 {
    if (is_nan(r)) {
        return 0;
    }
    return i32(clamp(r, lo, hi));
}
