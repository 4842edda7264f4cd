// elementwise.wgsl: f32 elementwise kernels, one invocation per element.
//
// scale: dst[i] = src[i] * factor
// add:   dst[i] = src[i] + src_b[i]
// relu:  dst[i] = src[i] if src[i] > 0, else 0 (NaN gives 0)

struct Params {
    n: u32,
    factor: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;
@group(0) @binding(2) var<storage, read_write> src: array<f32>;
@group(0) @binding(3) var<storage, read_write> src_b: array<f32>;

@compute @workgroup_size(256)
fn scale(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = group_index(wg, nwg) * WG + lid;
    if i < params.n {
        dst[i] = src[i] * params.factor;
    }
}

@compute @workgroup_size(256)
fn add(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = group_index(wg, nwg) * WG + lid;
    if i < params.n {
        dst[i] = src[i] + src_b[i];
    }
}

@compute @workgroup_size(256)
fn relu(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = group_index(wg, nwg) * WG + lid;
    if i < params.n {
        let x = src[i];
        dst[i] = select(0.0, x, x > 0.0);
    }
}
