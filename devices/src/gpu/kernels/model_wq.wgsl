// Quantized weights for model_linear.wgsl and model_dq8ca.wgsl, read from the packed words,
// scales, zero-points and LUTs exactly as the op path stores them (weights.wgsl).
//
// `code4` / `wrow4` decode 4 consecutive weights of a row (k % 4 == 0) with one or two word
// fetches and one fetch of each qparam, where `code` / `deq` would fetch them per element: the 4
// codes share a group (GL % 4 == 0), and for every packing they lie in at most 4 consecutive
// bytes or 4·BITS consecutive bits. The arithmetic is `deq`'s, formula for formula, per element.
// Palettized weights, groups of other lengths and the fault flags take `deq` itself.

// The 4 bytes from byte offset `b` (any alignment; the words carry a trailing zero word).
fn bytes4(b: u32) -> u32 {
    let sh = 8u * (b % 4u);
    let w0 = word(b / 4u);
    if (sh == 0u) {
        return w0;
    }
    return (w0 >> sh) | (word(b / 4u + 1u) << (32u - sh));
}

fn sx4(v: vec4<u32>, nb: u32) -> vec4<i32> {
    return vec4<i32>(sx(v.x, nb), sx(v.y, nb), sx(v.z, nb), sx(v.w, nb));
}

fn bytes_of(v: u32) -> vec4<u32> {
    return vec4<u32>(v & 0xffu, (v >> 8u) & 0xffu, (v >> 16u) & 0xffu, v >> 24u);
}

fn fast4() -> bool {
    return FAM != 3u && F_SWAP == 0u && F_DROP == 0u && F_TRANS == 0u && P.GL % 4u == 0u && P.K % 4u == 0u;
}

// Codes (n, k .. k+3), as `code` returns them.
fn code4(n: u32, k: u32) -> vec4<i32> {
    let idx = n * P.K + k;
    if (!fast4()) {
        return vec4<i32>(code(n, k), code(n, k + 1u), code(n, k + 2u), code(n, k + 3u));
    }
    if (PACK == 0u) {
        let v = bytes_of(word(idx / 4u));
        if (SIGNED == 1u) {
            return sx4(v, 8u);
        }
        return vec4<i32>(v);
    }
    if (PACK == 1u || PACK == 2u) {
        let rb = (P.K + 1u) / 2u;
        let v = bytes4(n * rb + k / 2u);
        let nib = vec4<u32>(v & 0xfu, (v >> 4u) & 0xfu, (v >> 8u) & 0xfu, (v >> 12u) & 0xfu);
        if (PACK == 1u) {
            return vec4<i32>(nib) - 8;
        }
        return sx4(nib, 4u);
    }
    if (PACK == 3u || PACK == 4u) {
        var bit = idx * BITS;
        if (PACK == 4u) {
            let rw = (P.K * BITS + 31u) / 32u;
            bit = n * rw * 32u + k * BITS;
        }
        var c: vec4<u32>;
        if (BITS == 8u) {
            c = bytes_of(bytes4(bit / 8u));
        } else {
            let v = bits_at(bit, 4u * BITS);
            let m = (1u << BITS) - 1u;
            c = vec4<u32>(v & m, (v >> BITS) & m, (v >> (2u * BITS)) & m, (v >> (3u * BITS)) & m);
        }
        if (SIGNED == 1u) {
            return sx4(c, BITS);
        }
        return vec4<i32>(c);
    }
    if (PACK == 5u || PACK == 6u) {
        let blk = idx / 32u;
        let j = idx % 32u;
        let base = blk * select(18u, 20u, PACK == 6u) + select(2u, 4u, PACK == 6u);
        let v = bytes_of(bytes4(base + j % 16u)) >> vec4<u32>(select(0u, 4u, j >= 16u));
        let nib = vec4<i32>(v & vec4<u32>(0xfu));
        if (PACK == 5u) {
            return nib - 8;
        }
        return nib;
    }
    if (PACK == 7u) {
        return sx4(bytes_of(bytes4((idx / 32u) * 34u + 2u + idx % 32u)), 8u);
    }
    if (PACK == 8u) {
        let e = idx % 256u;
        let b = (idx / 256u) * 144u + 16u + 32u * (e / 64u) + e % 32u;
        let v = bytes_of(bytes4(b)) >> vec4<u32>(select(0u, 4u, (e % 64u) >= 32u));
        return vec4<i32>(v & vec4<u32>(0xfu));
    }
    // PACK 9: the 4 codes of k .. k+3 share one word of the 4Kx8N block.
    let k4s = (P.K + 3u) / 4u;
    let nn = n % 8u;
    let wd = word(((n / 8u) * k4s + k / 4u) * 4u + nn % 4u);
    let sh = 4u * (nn / 4u);
    let v = vec4<u32>(wd >> sh, wd >> (8u + sh), wd >> (16u + sh), wd >> (24u + sh)) & vec4<u32>(0xfu);
    return vec4<i32>(v) - 8;
}

// The dequantized weights (n, k .. k+3) in T (returned as their exact f32 values): `deq`'s
// formulas with the group's qparams fetched once.
fn wrow4(n: u32, c: u32) -> vec4<f32> {
    let k = 4u * c;
    if (!fast4()) {
        return vec4<f32>(deq(n, k), deq(n, k + 1u), deq(n, k + 2u), deq(n, k + 3u));
    }
    let g = k / P.GL;
    let q = vec4<f32>(code4(n, k));
    if (FAM == 0u) {
        let s = f32(scales_ld(sidx(n, g)));
        var zp = 0.0;
        if (HAS_ZP == 1u) {
            zp = f32(zps_ld(zidx(n, g)));
        }
        let cz = q - zp;
        if (PT32 == 1u) {
            let p = cz * s;
            return vec4<f32>(f32(to_t(p.x)), f32(to_t(p.y)), f32(to_t(p.z)), f32(to_t(p.w)));
        }
        let st = T(s);
        return vec4<f32>(f32(rt(T(cz.x) * st)), f32(rt(T(cz.y) * st)), f32(rt(T(cz.z) * st)), f32(rt(T(cz.w) * st)));
    }
    if (FAM == 1u || FAM == 2u) {
        let s = T(f32(scales_ld(sidx(n, g))));
        let z = T(f32(zps_ld(zidx(n, g))));
        // FAM 1 `rt(nc(rt(q·s)) + z)`, FAM 2 `rt(nc(rt(s·q)) + b)`: the same products.
        return vec4<f32>(
            f32(rt(nc(rt(T(q.x) * s)) + z)),
            f32(rt(nc(rt(T(q.y) * s)) + z)),
            f32(rt(nc(rt(T(q.z) * s)) + z)),
            f32(rt(nc(rt(T(q.w) * s)) + z)),
        );
    }
    let sblk = sidx(n, g);
    let blk = n * P.G + g;
    if (FAM == 4u) {
        let bs = select(18u, 34u, PACK == 7u);
        return q * f16_at(sblk * bs);
    }
    if (FAM == 5u) {
        // d and m are the block's first word (no transpose fault here, so sblk == blk).
        let dm = word(blk * 5u);
        let d = h2f(dm & 0xffffu);
        let m = h2f(dm >> 16u);
        return vec4<f32>(ncf(q.x * d) + m, ncf(q.y * d) + m, ncf(q.z * d) + m, ncf(q.w * d) + m);
    }
    let d = q4k_sm(sblk).x;
    let m = q4k_sm(blk).y;
    return vec4<f32>(ncf(d * q.x) - m, ncf(d * q.y) - m, ncf(d * q.z) - m, ncf(d * q.w) - m);
}

// ---- 16 weights at a time (model_linear.wgsl with QUAD = 1): texels c .. c+3 of a row.
// The host sets QUAD only where the 16 codes share a group (GL % 16 == 0, K % 16 == 0) and the
// packing keeps them in 16 consecutive bytes (or 16·BITS aligned bits), so one or two texel
// fetches bring them all; the qparams are fetched once.

fn w_words(t: u32) -> vec4<u32> {
    return bitcast<vec4<u32>>(w_ld4(t));
}

// Word i (0..7) of the 8 words a, b.
fn pick8(a: vec4<u32>, b: vec4<u32>, i: u32) -> u32 {
    if (i < 4u) {
        return a[i];
    }
    return b[i - 4u];
}

// The 16 bytes from byte offset `b` (any alignment), as 4 little-endian words.
fn bytes16(b: u32) -> vec4<u32> {
    let o = b % 16u;
    let a = w_words(b / 16u);
    if (o == 0u) {
        return a;
    }
    let c = w_words(b / 16u + 1u);
    let o4 = o / 4u;
    let v = vec4<u32>(pick8(a, c, o4), pick8(a, c, o4 + 1u), pick8(a, c, o4 + 2u), pick8(a, c, o4 + 3u));
    let sh = 8u * (o % 4u);
    if (sh == 0u) {
        return v;
    }
    let nx = vec4<u32>(v.y, v.z, v.w, pick8(a, c, o4 + 4u));
    return (v >> vec4<u32>(sh)) | (nx << vec4<u32>(32u - sh));
}

// Nibbles of 16 bytes at shift `sh` (0: low, 4: high), element i from byte i.
fn nibbles_of_bytes(v: vec4<u32>, sh: u32) -> array<vec4<i32>, 4> {
    return array<vec4<i32>, 4>(
        vec4<i32>(bytes_of(v.x) >> vec4<u32>(sh) & vec4<u32>(0xfu)),
        vec4<i32>(bytes_of(v.y) >> vec4<u32>(sh) & vec4<u32>(0xfu)),
        vec4<i32>(bytes_of(v.z) >> vec4<u32>(sh) & vec4<u32>(0xfu)),
        vec4<i32>(bytes_of(v.w) >> vec4<u32>(sh) & vec4<u32>(0xfu)),
    );
}

// `nb`-bit fields of a word, 4 of them from bit `at`.
fn fields4(wd: u32, at: u32, nb: u32) -> vec4<u32> {
    let m = (1u << nb) - 1u;
    return vec4<u32>(wd >> at, wd >> (at + nb), wd >> (at + 2u * nb), wd >> (at + 3u * nb)) & vec4<u32>(m);
}

fn signed16(c: array<vec4<u32>, 4>, nb: u32) -> array<vec4<i32>, 4> {
    if (SIGNED == 1u) {
        return array<vec4<i32>, 4>(sx4(c[0], nb), sx4(c[1], nb), sx4(c[2], nb), sx4(c[3], nb));
    }
    return array<vec4<i32>, 4>(vec4<i32>(c[0]), vec4<i32>(c[1]), vec4<i32>(c[2]), vec4<i32>(c[3]));
}

// Codes (n, k .. k+15), k % 16 == 0, as `code` returns them: element [i] holds k + 4i .. k + 4i + 3.
fn code16(n: u32, k: u32) -> array<vec4<i32>, 4> {
    let idx = n * P.K + k;
    if (PACK == 0u) {
        let v = bytes16(idx);
        return signed16(array<vec4<u32>, 4>(bytes_of(v.x), bytes_of(v.y), bytes_of(v.z), bytes_of(v.w)), 8u);
    }
    if (PACK == 1u || PACK == 2u) {
        let v = bytes16(n * ((P.K + 1u) / 2u) + k / 2u);
        let c = array<vec4<u32>, 4>(fields4(v.x, 0u, 4u), fields4(v.x, 16u, 4u), fields4(v.y, 0u, 4u), fields4(v.y, 16u, 4u));
        if (PACK == 1u) {
            return array<vec4<i32>, 4>(vec4<i32>(c[0]) - 8, vec4<i32>(c[1]) - 8, vec4<i32>(c[2]) - 8, vec4<i32>(c[3]) - 8);
        }
        return array<vec4<i32>, 4>(sx4(c[0], 4u), sx4(c[1], 4u), sx4(c[2], 4u), sx4(c[3], 4u));
    }
    if (PACK == 3u || PACK == 4u) {
        // BITS is 2, 4 or 8: the 16·BITS bits are aligned words inside one texel.
        var bit = idx * BITS;
        if (PACK == 4u) {
            bit = n * ((P.K * BITS + 31u) / 32u) * 32u + k * BITS;
        }
        let t = w_words(bit / 128u);
        let w0 = (bit / 32u) % 4u;
        var c: array<vec4<u32>, 4>;
        for (var i = 0u; i < 4u; i = i + 1u) {
            let at = 4u * i * BITS;
            c[i] = fields4(t[w0 + at / 32u], at % 32u, BITS);
        }
        return signed16(c, BITS);
    }
    if (PACK == 5u || PACK == 6u) {
        let base = (idx / 32u) * select(18u, 20u, PACK == 6u) + select(2u, 4u, PACK == 6u);
        let nib = nibbles_of_bytes(bytes16(base), select(0u, 4u, idx % 32u >= 16u));
        if (PACK == 5u) {
            return array<vec4<i32>, 4>(nib[0] - 8, nib[1] - 8, nib[2] - 8, nib[3] - 8);
        }
        return nib;
    }
    if (PACK == 7u) {
        let v = bytes16((idx / 32u) * 34u + 2u + idx % 32u);
        return array<vec4<i32>, 4>(sx4(bytes_of(v.x), 8u), sx4(bytes_of(v.y), 8u), sx4(bytes_of(v.z), 8u), sx4(bytes_of(v.w), 8u));
    }
    if (PACK == 8u) {
        let e = idx % 256u;
        let v = bytes16((idx / 256u) * 144u + 16u + 32u * (e / 64u) + e % 32u);
        return nibbles_of_bytes(v, select(0u, 4u, (e % 64u) >= 32u));
    }
    // PACK 9: one word of each of 4 consecutive 4Kx8N blocks.
    let k4s = (P.K + 3u) / 4u;
    let nn = n % 8u;
    let sh = 4u * (nn / 4u);
    var c: array<vec4<i32>, 4>;
    for (var i = 0u; i < 4u; i = i + 1u) {
        let wd = word(((n / 8u) * k4s + k / 4u + i) * 4u + nn % 4u);
        let v = vec4<u32>(wd >> sh, wd >> (8u + sh), wd >> (16u + sh), wd >> (24u + sh)) & vec4<u32>(0xfu);
        c[i] = vec4<i32>(v) - 8;
    }
    return c;
}

// The dequantized weights (n, k .. k+15), k = 4c: `deq`'s formulas with the group's qparams
// fetched once; element [i] holds k + 4i .. k + 4i + 3.
fn wrow16(n: u32, c: u32) -> array<vec4<f32>, 4> {
    let k = 4u * c;
    let g = k / P.GL;
    let q = code16(n, k);
    var out: array<vec4<f32>, 4>;
    if (FAM == 0u) {
        let s = f32(scales_ld(sidx(n, g)));
        var zp = 0.0;
        if (HAS_ZP == 1u) {
            zp = f32(zps_ld(zidx(n, g)));
        }
        let st = T(s);
        for (var i = 0u; i < 4u; i = i + 1u) {
            let cz = vec4<f32>(q[i]) - zp;
            if (PT32 == 1u) {
                let p = cz * s;
                out[i] = vec4<f32>(f32(to_t(p.x)), f32(to_t(p.y)), f32(to_t(p.z)), f32(to_t(p.w)));
            } else {
                out[i] = vec4<f32>(f32(rt(T(cz.x) * st)), f32(rt(T(cz.y) * st)), f32(rt(T(cz.z) * st)), f32(rt(T(cz.w) * st)));
            }
        }
        return out;
    }
    if (FAM == 1u || FAM == 2u) {
        let s = T(f32(scales_ld(sidx(n, g))));
        let z = T(f32(zps_ld(zidx(n, g))));
        for (var i = 0u; i < 4u; i = i + 1u) {
            let qf = vec4<f32>(q[i]);
            out[i] = vec4<f32>(
                f32(rt(nc(rt(T(qf.x) * s)) + z)),
                f32(rt(nc(rt(T(qf.y) * s)) + z)),
                f32(rt(nc(rt(T(qf.z) * s)) + z)),
                f32(rt(nc(rt(T(qf.w) * s)) + z)),
            );
        }
        return out;
    }
    let sblk = sidx(n, g);
    let blk = n * P.G + g;
    var d = 0.0;
    var m = 0.0;
    if (FAM == 4u) {
        d = f16_at(sblk * select(18u, 34u, PACK == 7u));
    } else if (FAM == 5u) {
        let dm = word(blk * 5u);
        d = h2f(dm & 0xffffu);
        m = h2f(dm >> 16u);
    } else {
        d = q4k_sm(sblk).x;
        m = q4k_sm(blk).y;
    }
    for (var i = 0u; i < 4u; i = i + 1u) {
        let qf = vec4<f32>(q[i]);
        if (FAM == 4u) {
            out[i] = qf * d;
        } else if (FAM == 5u) {
            out[i] = vec4<f32>(ncf(qf.x * d) + m, ncf(qf.y * d) + m, ncf(qf.z * d) + m, ncf(qf.w * d) + m);
        } else {
            out[i] = vec4<f32>(ncf(d * qf.x) - m, ncf(d * qf.y) - m, ncf(d * qf.z) - m, ncf(d * qf.w) - m);
        }
    }
    return out;
}

// ---- qparams hoisted per chunk (model_linear.wgsl with HOIST = 1): where a chunk of 32 k's lies
// in one group (GL % 32 == 0), each row's qparams are fetched once per chunk as a pair (a, b)
// and `deq`'s formula is applied to 4 codes at a time.

// The qparams of row n, group g: FAM 0 (s, zp), 1 (s, z), 2 (s, b), 4 (d, 0), 5 (d, m), 6 (d·sc, dmin·m).
fn qpair(n: u32, g: u32) -> vec2<f32> {
    if (FAM == 0u) {
        var zp = 0.0;
        if (HAS_ZP == 1u) {
            zp = f32(zps_ld(zidx(n, g)));
        }
        return vec2<f32>(f32(scales_ld(sidx(n, g))), zp);
    }
    if (FAM == 1u || FAM == 2u) {
        return vec2<f32>(f32(scales_ld(sidx(n, g))), f32(zps_ld(zidx(n, g))));
    }
    let blk = n * P.G + g;
    if (FAM == 4u) {
        return vec2<f32>(f16_at(sidx(n, g) * select(18u, 34u, PACK == 7u)), 0.0);
    }
    if (FAM == 5u) {
        let dm = word(blk * 5u);
        return vec2<f32>(h2f(dm & 0xffffu), h2f(dm >> 16u));
    }
    return vec2<f32>(q4k_sm(sidx(n, g)).x, q4k_sm(blk).y);
}

// `deq`'s formula for 4 codes of one group with its qparams `ab`.
fn deq4_with(qi: vec4<i32>, ab: vec2<f32>) -> vec4<f32> {
    let q = vec4<f32>(qi);
    if (FAM == 0u) {
        let cz = q - ab.y;
        if (PT32 == 1u) {
            let p = cz * ab.x;
            return vec4<f32>(f32(to_t(p.x)), f32(to_t(p.y)), f32(to_t(p.z)), f32(to_t(p.w)));
        }
        let st = T(ab.x);
        return vec4<f32>(f32(rt(T(cz.x) * st)), f32(rt(T(cz.y) * st)), f32(rt(T(cz.z) * st)), f32(rt(T(cz.w) * st)));
    }
    if (FAM == 1u || FAM == 2u) {
        let s = T(ab.x);
        let z = T(ab.y);
        return vec4<f32>(
            f32(rt(nc(rt(T(q.x) * s)) + z)),
            f32(rt(nc(rt(T(q.y) * s)) + z)),
            f32(rt(nc(rt(T(q.z) * s)) + z)),
            f32(rt(nc(rt(T(q.w) * s)) + z)),
        );
    }
    if (FAM == 4u) {
        return q * ab.x;
    }
    if (FAM == 5u) {
        return vec4<f32>(ncf(q.x * ab.x) + ab.y, ncf(q.y * ab.x) + ab.y, ncf(q.z * ab.x) + ab.y, ncf(q.w * ab.x) + ab.y);
    }
    return vec4<f32>(ncf(ab.x * q.x) - ab.y, ncf(ab.x * q.y) - ab.y, ncf(ab.x * q.z) - ab.y, ncf(ab.x * q.w) - ab.y);
}

// The qparams of rows 4·r4 .. 4·r4+3 for the group holding texel c.
fn chunk_qp(r4: u32, c: u32) -> array<vec2<f32>, 4> {
    let g = 4u * c / P.GL;
    return array<vec2<f32>, 4>(qpair(4u * r4, g), qpair(4u * r4 + 1u, g), qpair(4u * r4 + 2u, g), qpair(4u * r4 + 3u, g));
}

// Texel c of rows 4·r4 .. 4·r4+3 with the chunk's qparams.
fn wrow4_qp(r4: u32, c: u32, qp: array<vec2<f32>, 4>) -> array<vec4<f32>, 4> {
    let k = 4u * c;
    return array<vec4<f32>, 4>(
        deq4_with(code4(4u * r4, k), qp[0]),
        deq4_with(code4(4u * r4 + 1u, k), qp[1]),
        deq4_with(code4(4u * r4 + 2u, k), qp[2]),
        deq4_with(code4(4u * r4 + 3u, k), qp[3]),
    );
}
