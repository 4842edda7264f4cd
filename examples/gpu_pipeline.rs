//! Three processes and a GPU: a producer sends int8-quantized activations
//! over `ipc://`; a worker binds them on the GPU, dequantizes them and
//! multiplies them by a weight matrix, writing the product straight into a
//! loaned output slot; a consumer checks every product against a CPU
//! reference in f64.
//!
//! ```text
//! cargo run --release --features gpu --example gpu_pipeline [-- COUNT]
//! ```
//!
//! The parent is the producer and spawns the worker and the consumer. The
//! worker prints the adapter and the route each binding took (`ZeroCopy`
//! when the driver can import the slab's pages, `Staged` otherwise), the
//! consumer the tensors per second it received. `PSYNE_GPU_ZERO_COPY=0`
//! forces the staged route for comparison.

use std::process::{Command, ExitCode};
use std::time::Instant;

use psyne::gpu::{GpuContext, Route};
use psyne::{QuantKind, Receiver, Sender, Shape};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// Activations: M x K, int8 per tensor; weights K x N f32; product M x N.
const M: usize = 64;
const K: usize = 256;
const N: usize = 128;

/// A small deterministic generator (xorshift), so the consumer can rebuild
/// every input from its sequence number.
fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn weights() -> Vec<f32> {
    values(u64::MAX, K * N)
}

/// Names the channels: the parent's pid, passed to the children.
fn tag() -> String {
    std::env::var("PSYNE_PIPELINE_TAG").unwrap_or_else(|_| std::process::id().to_string())
}

fn uris() -> (String, String) {
    let tag = tag();
    (
        format!("ipc://gpu-pipeline-in-{tag}?capacity=16&slab=16MiB&pattern=spsc"),
        format!("ipc://gpu-pipeline-out-{tag}?capacity=16&slab=16MiB&pattern=spsc"),
    )
}

fn main() -> ExitCode {
    let role = std::env::args().nth(1).unwrap_or_default();
    let r = match role.as_str() {
        "worker" => worker(),
        "consumer" => consumer(),
        _ => producer(),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gpu_pipeline {role}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn count() -> u64 {
    std::env::var("PSYNE_PIPELINE_COUNT")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(200)
}

fn producer() -> Res<()> {
    let count: u64 = std::env::args()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(count);
    let tag = tag();
    let (in_uri, _) = uris();
    let tx = Sender::connect(&in_uri)?;
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let spawn = |role: &str| {
        Command::new(&exe)
            .arg(role)
            .env("PSYNE_PIPELINE_TAG", &tag)
            .env("PSYNE_PIPELINE_COUNT", count.to_string())
            .spawn()
            .map_err(|e| format!("spawning the {role}: {e}"))
    };
    let mut worker = spawn("worker")?;
    let mut consumer = spawn("consumer")?;

    // Message 0: the weights, f32. Then the quantized activations.
    tx.send_copy(&Shape::matrix(K, N)?, &weights())?;
    for seq in 0..count {
        let mut loan = tx.loan_bytes(psyne::tensor::quant::storage_size(
            QuantKind::QInt8,
            &Shape::matrix(M, K)?,
        )?)?;
        loan.write_quantized(&values(seq, M * K), &Shape::matrix(M, K)?, QuantKind::QInt8)?;
        loan.set_seq(seq);
        loan.send()?;
    }
    drop(tx); // the worker stops when it has drained the channel
    println!("producer: sent {count} int8 tensors of {M} x {K}");
    let ok_w = worker
        .wait()
        .map_err(|e| format!("waiting for the worker: {e}"))?;
    let ok_c = consumer
        .wait()
        .map_err(|e| format!("waiting for the consumer: {e}"))?;
    if ok_w.success() && ok_c.success() {
        println!("pipeline: ok");
        Ok(())
    } else {
        Err(format!("worker exited with {ok_w}, consumer with {ok_c}").into())
    }
}

fn worker() -> Res<()> {
    let (in_uri, out_uri) = uris();
    let rx = Receiver::connect(&in_uri)?;
    let tx = Sender::connect(&out_uri)?;
    let ctx = GpuContext::new()?;
    println!("worker: {}", ctx.info());

    // The weights are read by every matmul: copy them to the device once.
    let w_slot = rx.recv()?;
    let w = ctx.to_device(&w_slot)?;
    drop(w_slot);
    let x = ctx.scratch::<f32>(&Shape::matrix(M, K)?)?;
    let mut routes = (None::<Route>, None::<Route>);
    for q_slot in rx.iter() {
        let mut out = tx.loan::<f32>(&Shape::matrix(M, N)?)?;
        out.set_seq(q_slot.meta()?.seq);
        {
            let q = ctx.bind(&q_slot)?;
            let y = ctx.bind_mut(&mut out)?;
            routes = (Some(q.route()), Some(y.route()));
            let mut job = ctx.job();
            job.dequantize(&q, &x)?;
            job.matmul(&x, &w, &y)?;
            job.run()?; // returns once the GPU has written `out`
        }
        out.send()?;
    }
    println!(
        "worker: input bound {:?}, output bound {:?}, weights {:?}",
        routes.0.unwrap_or(Route::Staged),
        routes.1.unwrap_or(Route::Staged),
        w.route()
    );
    Ok(())
}

fn consumer() -> Res<()> {
    let (_, out_uri) = uris();
    let rx = Receiver::connect(&out_uri)?;
    let count = count();
    let w: Vec<f64> = weights().into_iter().map(f64::from).collect();
    let mut worst = 0.0f64;
    let mut start = None;
    for expect in 0..count {
        let slot = rx.recv()?;
        start.get_or_insert_with(Instant::now);
        let meta = slot.meta()?;
        if meta.seq != expect {
            return Err(format!("result {} arrived where {expect} was due", meta.seq).into());
        }
        // The reference: quantize and dequantize on the CPU, multiply in f64.
        let q = psyne::QuantizedTensor::quantize(
            &values(expect, M * K),
            &Shape::matrix(M, K)?,
            QuantKind::QInt8,
        )?;
        let a: Vec<f64> = q.dequantize()?.into_iter().map(f64::from).collect();
        let got = slot.tensor::<f32>()?;
        for i in 0..M {
            for j in 0..N {
                let r: f64 = (0..K).map(|t| a[i * K + t] * w[t * N + j]).sum();
                let scale: f64 = (0..K).map(|t| (a[i * K + t] * w[t * N + j]).abs()).sum();
                let err = (got[i * N + j] as f64 - r).abs() / scale.max(1e-30);
                worst = worst.max(err);
                if err > 1e-5 {
                    return Err(format!(
                        "result {expect} element ({i}, {j}) is {} but should be {r}",
                        got[i * N + j]
                    )
                    .into());
                }
            }
        }
    }
    let secs = start.map_or(0.0, |s| s.elapsed().as_secs_f64());
    println!(
        "consumer: {count} products of {M} x {N} checked (worst error {worst:.1e} of the sum of |terms|), \
         {:.0} tensors/s",
        count as f64 / secs.max(1e-9)
    );
    Ok(())
}
