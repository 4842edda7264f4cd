// f16_to_f32.wgsl: IEEE binary16 -> f32, exact.
//
// src: n f16 values, 2 per word (element 2w in the low half of word w),
// padded to a multiple of 4 bytes. dst: n f32.
// One invocation per source word (2 elements).

struct Params {
    n: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;
@group(0) @binding(2) var<storage, read_write> src: array<u32>;

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
    let word = src[w];
    dst[2u * w] = f16_to_f32(word & 0xffffu);
    if 2u * w + 1u < params.n {
        dst[2u * w + 1u] = f16_to_f32(word >> 16u);
    }
}
