// dequant_qint8_per_channel.wgsl: per-channel affine int8 -> f32.
//
// src (bytes): n i8 values, zero padding to a multiple of 4, then `channels`
// f32 scales, then `channels` i32 zero points. Element i belongs to channel
// (i / inner) % channels (n = outer * channels * inner, row-major).
// dst: n f32, x = (q - zero_point[c]) * scale[c], clamped to the finite f32
// range. A table entry whose scale is not finite and positive decodes as 0
// (the CPU decoder rejects such tables; the kernel only keeps output finite).
// One invocation per source word (4 elements).

struct Params {
    n: u32,
    outer: u32,
    channels: u32,
    inner: u32,
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
    let words = ceil_div(params.n, 4u);
    let w = group_index(wg, nwg) * WG + lid;
    if w >= words {
        return;
    }
    let word = src[w];
    for (var k = 0u; k < 4u; k++) {
        let i = w * 4u + k;
        if i < params.n {
            let c = (i / params.inner) % params.channels;
            var scale = bitcast<f32>(src[words + c]);
            if !(is_finite(scale) && scale > 0.0) {
                scale = 0.0;
            }
            let zero_point = bitcast<i32>(src[words + params.channels + c]);
            let x = f32(i8_at(word, k) - zero_point) * scale;
            dst[i] = clamp(x, -F32_MAX, F32_MAX);
        }
    }
}
