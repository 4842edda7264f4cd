// f32_to_f16.wgsl: f32 -> IEEE binary16, round to nearest even.
//
// src: n f32. dst: ceil(n / 2) words, element 2w in the low half of word w;
// for odd n the high half of the last word (padding) is written as 0.
// Overflow gives infinity, NaN stays NaN (quiet), like half::f16::from_f32.
// One invocation per destination word (2 elements).

struct Params {
    n: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> dst: array<u32>;
@group(0) @binding(2) var<storage, read_write> src: array<f32>;

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let w = group_index(wg, nwg) * WG + lid;
    if w >= ceil_div(params.n, 2u) {
        return;
    }
    let lo = f32_to_f16(src[2u * w]);
    var hi = 0u;
    if 2u * w + 1u < params.n {
        hi = f32_to_f16(src[2u * w + 1u]);
    }
    dst[w] = lo | (hi << 16u);
}
