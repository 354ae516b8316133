//! Criterion benches of the kernels, each SIMD level beside the scalar baseline.
//! `cargo bench --bench kernels` (single thread: the chunks here fit one task).

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use quantpress::scalar::gguf_legacy::{self, LegacyType};
use quantpress::scalar::rtn::{self, RtnSpec, ScaleDtype, Scheme};
use quantpress::simd;

const N: usize = 1 << 17; // 128 Ki floats: one parallel chunk, so one thread

fn data() -> Vec<f32> {
    let mut s = 0x9E3779B97F4A7C15u64;
    (0..N)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
        })
        .collect()
}

fn legacy(c: &mut Criterion) {
    let x = data();
    for t in LegacyType::ALL {
        let mut g = c.benchmark_group(format!("gguf_{}", t.name()));
        g.throughput(Throughput::Bytes((N * 4) as u64));
        for level in simd::available_levels() {
            simd::force_level(level).unwrap();
            let mut q = vec![0u8; t.quantized_len(N)];
            g.bench_function(format!("quantize/{}", level.name()), |b| {
                b.iter(|| gguf_legacy::quantize_into(t, black_box(&x), N, &mut q).unwrap())
            });
            let mut y = vec![0f32; N];
            g.bench_function(format!("dequantize/{}", level.name()), |b| {
                b.iter(|| gguf_legacy::dequantize_into(t, black_box(&q), &mut y).unwrap())
            });
        }
        g.finish();
    }
}

fn rtn_int4(c: &mut Criterion) {
    let x = data();
    let spec = RtnSpec { bits: 4, group_size: 128, scheme: Scheme::Affine, scale_dtype: ScaleDtype::F16 };
    let mut g = c.benchmark_group("rtn_int4_g128");
    g.throughput(Throughput::Bytes((N * 4) as u64));
    for level in simd::available_levels() {
        simd::force_level(level).unwrap();
        let (mut codes, mut s, mut z) = (vec![0u8; N / 2], vec![0f32; N / 128], vec![0f32; N / 128]);
        g.bench_function(format!("quantize/{}", level.name()), |b| {
            b.iter(|| rtn::quantize_into(&spec, black_box(&x), &mut codes, &mut s, &mut z).unwrap())
        });
        let mut y = vec![0f32; N];
        g.bench_function(format!("dequantize/{}", level.name()), |b| {
            b.iter(|| rtn::dequantize_into(&spec, black_box(&codes), &s, &z, &mut y).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, legacy, rtn_int4);
criterion_main!(benches);
