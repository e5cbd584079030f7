// Reading stored quantized weights as the frameworks' GPU kernels do: the packed bytes (`w`, as
// 32-bit words in a buffer or an r32sint/rgba32sint texture), the stored scales and
// zero-points / offsets (`scales`, `zps`) and LUTs (`lut`), dequantized with each framework's
// own arithmetic in T.
//
// PACK: 0 unpacked bytes, 1 nibbles LN=even offset-binary, 2 nibbles LN=even two's complement,
// 3 LSB-first bitstream (BITS, SIGNED), 4 MLX uint32 words (BITS), 5 ggml block_q4_0,
// 6 block_q4_1, 7 block_q8_0, 8 block_q4_K, 9 ExecuTorch Vulkan 4Kx8N blocks.
// FAM: 0 integer zero-point `(q - zp) * s` (PT32: the product in f32, then to T), 1 float
// zero-point `q*s + z`, 2 MLX `s*q + b`, 3 LUT (PCS 1: per-column scale, 2: per-row),
// 4 ggml `q*d`, 5 ggml `u*d + m`, 6 ggml q4_K.
// S_TRANS: the stored scale grid is [G, N] (ExecuTorch Vulkan) instead of [N, G].
// Faults: F_SWAP (other nibble of the byte), F_TRANS (scale grid read transposed), F_DROP (the
// last group of a row contributes nothing).
// Params: N, K, G (groups per row), GL (group length), SR (rows of the scale grid), RPL (rows
// per LUT).

fn word(i: u32) -> u32 {
    return bitcast<u32>(w_ld(i));
}

fn byte_at(b: u32) -> u32 {
    return (word(b / 4u) >> (8u * (b % 4u))) & 0xffu;
}

// `nb` bits of an LSB-first stream starting at bit `bit` (a code may straddle two words).
fn bits_at(bit: u32, nb: u32) -> u32 {
    let wi = bit / 32u;
    let off = bit % 32u;
    var v = word(wi) >> off;
    if (off + nb > 32u) {
        v = v | (word(wi + 1u) << (32u - off));
    }
    return v & ((1u << nb) - 1u);
}

fn sx(v: u32, nb: u32) -> i32 {
    let sh = 32u - nb;
    return bitcast<i32>(v << sh) >> sh;
}

// The fp16 at byte offset `b` (even) of the packed stream.
fn f16_at(b: u32) -> f32 {
    let wd = word(b / 4u);
    return h2f(select(wd & 0xffffu, wd >> 16u, (b % 4u) == 2u));
}

// Shift of a nibble inside its byte, flipped by the nibble-swap fault.
fn nib_sh(sh: u32) -> u32 {
    if (F_SWAP == 1u) {
        return sh ^ 4u;
    }
    return sh;
}

fn code(n: u32, k: u32) -> i32 {
    let idx = n * P.K + k;
    if (PACK == 0u) {
        let v = byte_at(idx);
        if (SIGNED == 1u) {
            return sx(v, 8u);
        }
        return i32(v);
    }
    if (PACK == 1u || PACK == 2u) {
        let rb = (P.K + 1u) / 2u;
        let nib = (byte_at(n * rb + k / 2u) >> nib_sh((k % 2u) * 4u)) & 0xfu;
        if (PACK == 1u) {
            return i32(nib) - 8;
        }
        return sx(nib, 4u);
    }
    if (PACK == 3u || PACK == 4u) {
        var bit = idx * BITS;
        if (PACK == 4u) {
            let rw = (P.K * BITS + 31u) / 32u;
            bit = n * rw * 32u + k * BITS;
        }
        if (BITS == 4u) {
            bit = (bit & ~7u) | nib_sh(bit & 7u);
        }
        let v = bits_at(bit, BITS);
        if (SIGNED == 1u) {
            return sx(v, BITS);
        }
        return i32(v);
    }
    if (PACK == 5u || PACK == 6u) {
        let blk = idx / 32u;
        let j = idx % 32u;
        let base = blk * select(18u, 20u, PACK == 6u) + select(2u, 4u, PACK == 6u);
        let nib = (byte_at(base + j % 16u) >> nib_sh(select(0u, 4u, j >= 16u))) & 0xfu;
        if (PACK == 5u) {
            return i32(nib) - 8;
        }
        return i32(nib);
    }
    if (PACK == 7u) {
        return sx(byte_at((idx / 32u) * 34u + 2u + idx % 32u), 8u);
    }
    if (PACK == 8u) {
        let e = idx % 256u;
        let c = e / 64u;
        let l = e % 32u;
        let b = byte_at((idx / 256u) * 144u + 16u + 32u * c + l);
        return i32((b >> nib_sh(select(0u, 4u, (e % 64u) >= 32u))) & 0xfu);
    }
    // PACK 9: Vulkan 4Kx8N blocks, N-block major, one ivec4 (4 words) per block.
    let k4s = (P.K + 3u) / 4u;
    let nn = n % 8u;
    let nibi = 2u * (k % 4u) + nn / 4u;
    let wd = word(((n / 8u) * k4s + k / 4u) * 4u + nn % 4u);
    return i32((wd >> nib_sh(4u * nibi)) & 0xfu) - 8;
}

// Flat index into the stored scale grid for (row n, group g).
fn sidx(n: u32, g: u32) -> u32 {
    let srow = min(n, P.SR - 1u);
    let rows = P.SR;
    var t = S_TRANS == 1u;
    if (F_TRANS == 1u) {
        t = !t;
    }
    if (t) {
        return g * rows + srow;
    }
    return srow * P.G + g;
}

fn zidx(n: u32, g: u32) -> u32 {
    let srow = min(n, P.SR - 1u);
    if (S_TRANS == 1u) {
        return g * P.SR + srow;
    }
    return srow * P.G + g;
}

// q4_K sub-block `s`: (d * sc, dmin * m) from the packed super-block.
fn q4k_sm(s: u32) -> vec2<f32> {
    let sb = s / 8u;
    let j = s % 8u;
    let base = sb * 144u;
    var sc: u32;
    var m: u32;
    if (j < 4u) {
        sc = byte_at(base + 4u + j) & 63u;
        m = byte_at(base + 4u + j + 4u) & 63u;
    } else {
        let b = byte_at(base + 4u + j + 4u);
        sc = (b & 0xfu) | ((byte_at(base + 4u + j - 4u) >> 6u) << 4u);
        m = (b >> 4u) | ((byte_at(base + 4u + j) >> 6u) << 4u);
    }
    return vec2<f32>(f16_at(base) * f32(sc), f16_at(base + 2u) * f32(m));
}

// The dequantized weight (n, k), in T (returned as its exact f32 value).
fn deq(n: u32, k: u32) -> f32 {
    let g = k / P.GL;
    if (F_DROP == 1u && g + 1u == P.G) {
        return 0.0;
    }
    let q = code(n, k);
    if (FAM == 0u) {
        let s = f32(scales_ld(sidx(n, g)));
        var zp = 0.0;
        if (HAS_ZP == 1u) {
            zp = f32(zps_ld(zidx(n, g)));
        }
        let c = f32(q) - zp;
        if (PT32 == 1u) {
            return f32(to_t(c * s));
        }
        return f32(rt(T(c) * T(s)));
    }
    if (FAM == 1u) {
        let s = T(f32(scales_ld(sidx(n, g))));
        let z = T(f32(zps_ld(zidx(n, g))));
        return f32(rt(nc(rt(T(f32(q)) * s)) + z));
    }
    if (FAM == 2u) {
        let s = T(f32(scales_ld(sidx(n, g))));
        let b = T(f32(zps_ld(zidx(n, g))));
        return f32(rt(nc(rt(s * T(f32(q)))) + b));
    }
    if (FAM == 3u) {
        let v = lut[(n / P.RPL) * LEVELS + u32(q)];
        if (PCS == 1u) {
            return f32(rt(T(f32(scales_ld(k))) * T(v)));
        }
        if (PCS == 2u) {
            return f32(rt(T(f32(scales_ld(n))) * T(v)));
        }
        return v;
    }
    // ggml: f32 arithmetic, scales from the blocks. The block of (n, g) for the scale can be
    // moved by the transpose fault; offsets are read from the right block.
    let sblk = sidx(n, g);
    let blk = n * P.G + g;
    if (FAM == 4u) {
        let bs = select(18u, 34u, PACK == 7u);
        return f32(q) * f16_at(sblk * bs);
    }
    if (FAM == 5u) {
        return ncf(f32(q) * f16_at(sblk * 20u)) + f16_at(blk * 20u + 2u);
    }
    let d = q4k_sm(sblk).x;
    let m = q4k_sm(blk).y;
    return ncf(d * f32(q)) - m;
}
