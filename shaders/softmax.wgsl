// softmax.wgsl: row-wise softmax of a row-major [rows x cols] f32 matrix.
//
// One workgroup of 256 invocations per row (rows spill into a 2-D grid).
// Three strided sweeps over the row: the row maximum (tree reduction in
// workgroup memory), the sum of exp(x - max) (tree reduction), then
// dst = exp(x - max) / sum. Subtracting the maximum keeps exp from
// overflowing; any cols >= 1. Rows holding infinities or NaN give NaN.

struct Params {
    rows: u32,
    cols: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;
@group(0) @binding(2) var<storage, read_write> src: array<f32>;

var<workgroup> scratch: array<f32, 256>;

// Tree reduction of scratch; is_max picks max over sum. Returns the result
// to every invocation and leaves scratch free for reuse.
fn reduce_scratch(lid: u32, is_max: bool) -> f32 {
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if lid < s {
            let x = scratch[lid];
            let y = scratch[lid + s];
            scratch[lid] = select(x + y, max(x, y), is_max);
        }
        workgroupBarrier();
    }
    let r = scratch[0];
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = group_index(wg, nwg);
    if row >= params.rows {
        return; // the whole workgroup leaves together
    }
    let cols = params.cols;
    let base = row * cols;
    // Invocations past the end of a short row start from element 0.
    var m = src[base + min(lid, cols - 1u)];
    for (var j = lid; j < cols; j += WG) {
        m = max(m, src[base + j]);
    }
    scratch[lid] = m;
    workgroupBarrier();
    let row_max = reduce_scratch(lid, true);

    var sum = 0.0;
    for (var j = lid; j < cols; j += WG) {
        sum += exp(src[base + j] - row_max);
    }
    scratch[lid] = sum;
    workgroupBarrier();
    let total = reduce_scratch(lid, false);

    for (var j = lid; j < cols; j += WG) {
        dst[base + j] = exp(src[base + j] - row_max) / total;
    }
}
