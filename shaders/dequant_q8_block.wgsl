// dequant_q8_block.wgsl: Q8Block -> f32.
//
// src (bytes): B = ceil(n / 32) f16 scales d[b], zero padding to a multiple
// of 4 bytes (so the values start at word ceil(B / 2)), then 32 i8 values per
// block. dst: n f32, element i = 32 b + j is q[b][j] * d[b]. A non-finite
// scale decodes as 0 (the CPU decoder rejects it).
// One invocation per value word (4 elements, always within one block).

struct Params {
    n: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;
@group(0) @binding(2) var<storage, read_write> src: array<u32>;

// The scale of block b, read from the f16 table at the start of src.
fn block_scale(b: u32) -> f32 {
    let h = (src[b / 2u] >> (16u * (b % 2u))) & 0xffffu;
    return select(0.0, f16_to_f32(h), f16_is_finite(h));
}

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let w = group_index(wg, nwg) * WG + lid;
    if w >= ceil_div(params.n, 4u) {
        return;
    }
    let blocks = ceil_div(params.n, 32u);
    let values_at = ceil_div(blocks, 2u);
    let d = block_scale(w / 8u);
    let word = src[values_at + w];
    for (var k = 0u; k < 4u; k++) {
        let i = w * 4u + k;
        if i < params.n {
            dst[i] = f32(i8_at(word, k)) * d;
        }
    }
}
