// common.wgsl: helpers shared by every kernel. kernels.rs prepends this file
// to each kernel file before compiling it, so the kernel files are not valid
// WGSL on their own.

// Invocations per workgroup of the one-dimensional kernels.
const WG: u32 = 256u;

// The largest finite f32.
const F32_MAX: f32 = 3.40282347e38;

// ceil(a / b) without overflow for any a.
fn ceil_div(a: u32, b: u32) -> u32 {
    return a / b + select(0u, 1u, a % b != 0u);
}

// Linear index of this workgroup in a grid of nwg.x by nwg.y workgroups
// (the host spills over into y when one dimension would exceed the limit).
fn group_index(wg: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wg.y * nwg.x + wg.x;
}

// Byte k (0..3) of a little-endian word, sign-extended.
fn i8_at(word: u32, k: u32) -> i32 {
    return bitcast<i32>(word << (24u - 8u * k)) >> 24u;
}

// Whether an f32 is neither infinite nor NaN (bit test: no reliance on
// float comparisons a compiler might fold away).
fn is_finite(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u;
}

// Whether the low 16 bits hold a finite f16.
fn f16_is_finite(h: u32) -> bool {
    return (h & 0x7c00u) != 0x7c00u;
}

// The f16 in the low 16 bits of h, converted exactly to f32 (subnormals,
// infinities and NaN included). Done with integer operations so that no
// device can flush f16 subnormals.
fn f16_to_f32(h: u32) -> f32 {
    let sign = (h & 0x8000u) << 16u;
    let e = (h >> 10u) & 0x1fu;
    let m = h & 0x3ffu;
    if e == 0u {
        // Zero or subnormal: m * 2^-24, exact and normal in f32.
        return bitcast<f32>(bitcast<u32>(ldexp(f32(m), -24)) | sign);
    }
    if e == 31u {
        return bitcast<f32>(sign | 0x7f800000u | (m << 13u));
    }
    return bitcast<f32>(sign | ((e + 112u) << 23u) | (m << 13u));
}

// x converted to f16 bits (low 16 bits of the result), rounding to nearest
// with ties to even, overflow to infinity, NaN kept as a quiet NaN. Integer
// arithmetic only, so the result does not depend on the device's rounding
// mode for pack2x16float.
fn f32_to_f16(x: f32) -> u32 {
    let b = bitcast<u32>(x);
    let sign = (b >> 16u) & 0x8000u;
    let e = (b >> 23u) & 0xffu;
    let m = b & 0x7fffffu;
    if e == 255u {
        if m == 0u {
            return sign | 0x7c00u;
        }
        return sign | 0x7e00u | (m >> 13u);
    }
    let he = i32(e) - 112; // the f16 biased exponent
    if he >= 31 {
        return sign | 0x7c00u;
    }
    if he <= 0 {
        // An f16 subnormal (or zero): the 24-bit significand shifted right.
        if he < -10 {
            return sign; // below half the smallest subnormal: rounds to zero
        }
        let full = m | 0x800000u;
        let shift = u32(14 - he); // 14..24
        var r = full >> shift;
        let rest = full & ((1u << shift) - 1u);
        let half = 1u << (shift - 1u);
        if rest > half || (rest == half && (r & 1u) == 1u) {
            r += 1u; // may carry into the smallest normal: still correct
        }
        return sign | r;
    }
    var r = (u32(he) << 10u) | (m >> 13u);
    let rest = m & 0x1fffu;
    if rest > 0x1000u || (rest == 0x1000u && (r & 1u) == 1u) {
        r += 1u; // may carry into the exponent, up to infinity: correct
    }
    return sign | r;
}

