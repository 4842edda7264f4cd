// matmul.wgsl: C[m x n] = A[m x k] * B[k x n], row-major f32.
//
// Each workgroup of 16 x 16 invocations computes a 64 x 64 tile of C; each
// invocation a 4 x 4 block of it (rows ty + 16 i, columns tx + 16 j of the
// tile, so neighbouring invocations touch neighbouring columns). The depth is
// walked in steps of 16: a 64 x 16 slice of A and a 16 x 64 slice of B are
// staged in workgroup memory (8 KiB), zero-filled past the edges of A and B,
// so any m, k, n >= 1 work. Each element of C accumulates its k products in
// order of increasing k, in f32.
// Dispatch: (ceil(n / 64), ceil(m / 64), 1) workgroups.

struct Params {
    m: u32,
    k: u32,
    n: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> c: array<f32>;
@group(0) @binding(2) var<storage, read_write> a: array<f32>;
@group(0) @binding(3) var<storage, read_write> b: array<f32>;

// Rows (and columns) of C per workgroup.
const TILE: u32 = 64u;
// Depth of one staged step.
const TK: u32 = 16u;

// a_tile[r * TK + kk] = A[row0 + r][k0 + kk]
var<workgroup> a_tile: array<f32, 1024>;
// b_tile[kk * TILE + col] = B[k0 + kk][col0 + col]
var<workgroup> b_tile: array<f32, 1024>;

@compute @workgroup_size(16, 16)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let m = params.m;
    let k = params.k;
    let n = params.n;
    let row0 = wg.y * TILE;
    let col0 = wg.x * TILE;
    // acc[i][j] is C[row0 + lid.y + 16 i][col0 + lid.x + 16 j].
    var acc: array<vec4<f32>, 4>;
    let steps = ceil_div(k, TK);
    for (var s = 0u; s < steps; s++) {
        let k0 = s * TK;
        // 1024 elements of each slice, 4 per invocation.
        for (var l = 0u; l < 4u; l++) {
            let e = t + 256u * l;
            let ar = row0 + e / TK;
            let ak = k0 + e % TK;
            var av = 0.0;
            if ar < m && ak < k {
                av = a[ar * k + ak];
            }
            a_tile[e] = av;
            let bk = k0 + e / TILE;
            let bc = col0 + e % TILE;
            var bv = 0.0;
            if bk < k && bc < n {
                bv = b[bk * n + bc];
            }
            b_tile[e] = bv;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            let bo = kk * TILE + lid.x;
            let bv = vec4<f32>(b_tile[bo], b_tile[bo + 16u], b_tile[bo + 32u], b_tile[bo + 48u]);
            for (var i = 0u; i < 4u; i++) {
                acc[i] += a_tile[(lid.y + 16u * i) * TK + kk] * bv;
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let row = row0 + lid.y + 16u * i;
        if row < m {
            for (var j = 0u; j < 4u; j++) {
                let col = col0 + lid.x + 16u * j;
                if col < n {
                    c[row * n + col] = acc[i][j];
                }
            }
        }
    }
}
