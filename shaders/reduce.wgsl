// reduce.wgsl: one pass of a sum or max reduction of n f32.
//
// Workgroup g reduces elements [512 g, 512 g + 512) (each invocation
// combines two, then a tree in workgroup memory) and writes dst[g]. The host
// repeats passes over the partial results until one value is left.
// kind: 0 = sum, 1 = max.

struct Params {
    n: u32,
    kind: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;
@group(0) @binding(2) var<storage, read_write> src: array<f32>;

var<workgroup> scratch: array<f32, 256>;

fn combine(x: f32, y: f32) -> f32 {
    return select(x + y, max(x, y), params.kind == 1u);
}

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let g = group_index(wg, nwg);
    let n = params.n;
    if g >= ceil_div(n, 2u * WG) {
        return; // the whole workgroup leaves together
    }
    let base = g * 2u * WG;
    // The identity: 0 for a sum; for a max, the chunk's first element.
    var v = select(0.0, src[base], params.kind == 1u);
    let i0 = base + lid;
    let i1 = i0 + WG;
    if i0 < n {
        v = src[i0];
    }
    if i1 < n {
        v = combine(v, src[i1]);
    }
    scratch[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if lid < s {
            scratch[lid] = combine(scratch[lid], scratch[lid + s]);
        }
        workgroupBarrier();
    }
    if lid == 0u {
        dst[g] = scratch[0];
    }
}
