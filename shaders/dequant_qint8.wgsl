// dequant_qint8.wgsl: per-tensor affine int8 -> f32.
//
// src: n i8 values q, packed 4 per word (little-endian), zero padded.
// dst: n f32, x = (q - zero_point) * scale, clamped to the finite f32 range.
// One invocation per source word (4 elements).

struct Params {
    n: u32,
    scale: f32,
    zero_point: i32,
    _pad: u32,
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
    if w >= ceil_div(params.n, 4u) {
        return;
    }
    let word = src[w];
    for (var k = 0u; k < 4u; k++) {
        let i = w * 4u + k;
        if i < params.n {
            let x = f32(i8_at(word, k) - params.zero_point) * params.scale;
            dst[i] = clamp(x, -F32_MAX, F32_MAX);
        }
    }
}
