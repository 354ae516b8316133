//! Runtime SIMD dispatch.
//!
//! The best level the CPU supports is detected once (`OnceLock`); every public kernel reads
//! [`level()`] once per call and runs one implementation for the whole call, never choosing per
//! element. The scalar kernels in [`scalar`] are always compiled and are the oracle the SIMD
//! kernels are tested against. Tests (and users chasing a bug) can force a lower level with
//! [`force_level`] or the `QUANTPRESS_SIMD` environment variable (`scalar`, `avx2`, `avx512`,
//! `neon`), read once at first use; a level above what the CPU supports is refused.
//!
//! [`Level::Avx512`] only has kernels of its own where 512-bit registers pay (`x86_avx512`);
//! everywhere else it runs the AVX2 kernels.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

use crate::error::{invalid, Result};

#[cfg(target_arch = "aarch64")]
pub mod aarch64_neon;
#[cfg(all(test, target_arch = "x86_64"))]
mod avx2_tests;
#[cfg(test)]
mod level_tests;
#[cfg(target_arch = "aarch64")]
pub mod neon_assign;
#[cfg(all(test, target_arch = "aarch64"))]
mod neon_tests;
pub mod scalar;
#[cfg(target_arch = "x86_64")]
pub mod x86_avx2;
#[cfg(target_arch = "x86_64")]
pub mod x86_avx512;

/// How a group's scale and zero point follow from its range (the rules of `crate::scalar::rtn`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GridParams {
    pub symmetric: bool,
    /// Largest code, `2^bits - 1`.
    pub top: f32,
    /// Symmetric only: largest code magnitude `2^(bits-1) - 1`, and the implicit zero `2^(bits-1)`.
    pub qm: f32,
    pub offset: f32,
    /// Scales are stored as float16 (rounded up to it) rather than float32.
    pub f16: bool,
}

/// `grids(mins, maxs, params, scales, zeros, inverses) -> no scale overflowed`.
pub type GridsFn = fn(&[f32], &[f32], &GridParams, &mut [f32], &mut [f32], &mut [f32]) -> bool;

/// One level's kernels. Every level module exports the same functions, with the contract of
/// the scalar ones; [`kernels`] picks a table once per call.
pub struct Kernels {
    pub quantize_q8_0: fn(&[f32], &mut [u8]) -> bool,
    pub quantize_q4_0: fn(&[f32], &mut [u8]) -> bool,
    pub quantize_q4_1: fn(&[f32], &mut [u8]) -> bool,
    pub quantize_q5_0: fn(&[f32], &mut [u8]) -> bool,
    pub quantize_q5_1: fn(&[f32], &mut [u8]) -> bool,
    pub dequantize_q8_0: fn(&[u8], &mut [f32]),
    pub dequantize_q4_0: fn(&[u8], &mut [f32]),
    pub dequantize_q4_1: fn(&[u8], &mut [f32]),
    pub dequantize_q5_0: fn(&[u8], &mut [f32]),
    pub dequantize_q5_1: fn(&[u8], &mut [f32]),
    pub group_range: fn(&[f32]) -> (f32, f32, bool),
    pub group_codes: fn(&[f32], f32, f32, f32, f32, &mut [u8]),
    pub group_values: fn(&[u8], f32, f32, &mut [f32]),
    pub grids: GridsFn,
    pub pack_nibbles: fn(&[u8], &mut [u8]),
    pub unpack_nibbles: fn(&[u8], &mut [u8]),
    pub nf4_codes: fn(&[f32], f32, &mut [u8]),
    pub nf4_values: fn(&[u8], f32, &mut [f32]),
}

macro_rules! kernel_table {
    ($m:ident) => {
        Kernels {
            quantize_q8_0: $m::quantize_q8_0,
            quantize_q4_0: $m::quantize_q4_0,
            quantize_q4_1: $m::quantize_q4_1,
            quantize_q5_0: $m::quantize_q5_0,
            quantize_q5_1: $m::quantize_q5_1,
            dequantize_q8_0: $m::dequantize_q8_0,
            dequantize_q4_0: $m::dequantize_q4_0,
            dequantize_q4_1: $m::dequantize_q4_1,
            dequantize_q5_0: $m::dequantize_q5_0,
            dequantize_q5_1: $m::dequantize_q5_1,
            group_range: $m::group_range,
            group_codes: $m::group_codes,
            group_values: $m::group_values,
            grids: $m::grids,
            pack_nibbles: $m::pack_nibbles,
            unpack_nibbles: $m::unpack_nibbles,
            nf4_codes: $m::nf4_codes,
            nf4_values: $m::nf4_values,
        }
    };
}

static SCALAR: Kernels = kernel_table!(scalar);
#[cfg(target_arch = "x86_64")]
static AVX2: Kernels = kernel_table!(x86_avx2);
#[cfg(target_arch = "aarch64")]
static NEON: Kernels = kernel_table!(aarch64_neon);

/// The kernels of the level in force now ([`level`]).
pub fn kernels() -> &'static Kernels {
    kernels_at(level())
}

/// The kernels of `l`, falling back to scalar for a level this build has no kernels for.
pub fn kernels_at(l: Level) -> &'static Kernels {
    match l {
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 | Level::Avx512 => &AVX2,
        #[cfg(target_arch = "aarch64")]
        Level::Neon => &NEON,
        _ => &SCALAR,
    }
}

/// An instruction-set level a kernel can run at, ordered from lowest to highest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Scalar = 0,
    /// x86-64 AVX2 + FMA + F16C.
    Avx2 = 1,
    /// aarch64 NEON (Advanced SIMD).
    Neon = 2,
    /// x86-64 AVX-512 F/BW/VL/DQ on top of [`Level::Avx2`] (whose kernels it runs where it has
    /// none of its own).
    Avx512 = 3,
}

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Level::Scalar => "scalar",
            Level::Avx2 => "avx2",
            Level::Neon => "neon",
            Level::Avx512 => "avx512",
        }
    }

    pub fn from_name(name: &str) -> Result<Level> {
        match name.to_ascii_lowercase().as_str() {
            "scalar" => Ok(Level::Scalar),
            "avx2" => Ok(Level::Avx2),
            "neon" => Ok(Level::Neon),
            "avx512" => Ok(Level::Avx512),
            other => Err(invalid!("unknown SIMD level {other:?}: expected 'scalar', 'avx2', 'avx512' or 'neon'")),
        }
    }

    fn from_u8(v: u8) -> Level {
        match v {
            1 => Level::Avx2,
            2 => Level::Neon,
            3 => Level::Avx512,
            _ => Level::Scalar,
        }
    }
}

/// The best level this CPU supports (kernels for it are compiled into this build).
pub fn detected_level() -> Level {
    static DETECTED: OnceLock<Level> = OnceLock::new();
    *DETECTED.get_or_init(detect)
}

fn detect() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c")
        {
            let avx512 = std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("avx512dq");
            return if avx512 { Level::Avx512 } else { Level::Avx2 };
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if std::arch::is_aarch64_feature_detected!("neon") {
            return Level::Neon;
        }
    }
    Level::Scalar
}

const UNSET: u8 = u8::MAX;
static ACTIVE: AtomicU8 = AtomicU8::new(UNSET);

/// The level kernels run at now: the detected level, unless lowered by [`force_level`] or
/// `QUANTPRESS_SIMD`.
pub fn level() -> Level {
    let v = ACTIVE.load(Ordering::Relaxed);
    if v != UNSET {
        return Level::from_u8(v);
    }
    let chosen = std::env::var("QUANTPRESS_SIMD")
        .ok()
        .and_then(|name| Level::from_name(&name).ok())
        .filter(|l| supported(*l))
        .unwrap_or_else(detected_level);
    ACTIVE.store(chosen as u8, Ordering::Relaxed);
    chosen
}

/// Whether `l` can run on this CPU with this build.
pub fn supported(l: Level) -> bool {
    l == Level::Scalar || l == detected_level() || (l == Level::Avx2 && detected_level() == Level::Avx512)
}

/// Forces kernels to run at `l` (for tests and debugging). Refuses a level the CPU lacks.
pub fn force_level(l: Level) -> Result<()> {
    if !supported(l) {
        return Err(invalid!("SIMD level {:?} is not available on this CPU (best: {:?})", l.name(), detected_level().name()));
    }
    ACTIVE.store(l as u8, Ordering::Relaxed);
    Ok(())
}

/// Every level that can run here, lowest first (what tests iterate over).
pub fn available_levels() -> Vec<Level> {
    [Level::Scalar, Level::Avx2, Level::Neon, Level::Avx512].into_iter().filter(|l| supported(*l)).collect()
}

/// Defines `fn $name(at: Level, args...)` running `$body(args...)` compiled for the level `at`:
/// plain (the oracle, and non-x86), AVX2+FMA, AVX-512. The same code, so the same IEEE
/// operations (`mul_add` is one fused instruction when FMA is enabled): bit-identical results
/// at every level, with the compiler's vectorisation of each instruction set.
macro_rules! per_level {
    ($(#[$doc:meta])* $vis:vis $name:ident, $body:ident, ($($arg:ident: $ty:ty),*)) => {
        $(#[$doc])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name(at: $crate::simd::Level, $($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
                unsafe fn avx512($($arg: $ty),*) {
                    $body($($arg),*)
                }
                match at {
                    // SAFETY: a level is only in force when the CPU supports it (simd::level).
                    $crate::simd::Level::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: as above.
                    $crate::simd::Level::Avx2 => return unsafe { avx2($($arg),*) },
                    _ => {}
                }
            }
            let _ = at;
            $body($($arg),*)
        }
    };
}
pub(crate) use per_level;

/// `fn pick(metric, d) -> [Tile; ROWS]` of a nearest-codeword search kernel module: its
/// `tile::<M, D, R>` for every row count `R` listed, `M` the module's step kind for the metric
/// (`L2`, `IP` for IP and cosine, `L1`) and the dimension loop unrolled for `d` = 4, 8 and 16
/// (`D = 0`: any `d`). The module defines `tile`, `Tile`, `ROWS` and the three kinds.
macro_rules! assign_tiles {
    ($($r:literal),+) => {
        /// The tile kernels for a metric, with the dimension loop unrolled for the common small `d`.
        fn pick(metric: Metric, d: usize) -> [Tile; ROWS] {
            match (metric, d) {
                (Metric::L2, 4) => [$(tile::<L2, 4, $r> as Tile),+],
                (Metric::L2, 8) => [$(tile::<L2, 8, $r> as Tile),+],
                (Metric::L2, 16) => [$(tile::<L2, 16, $r> as Tile),+],
                (Metric::L2, _) => [$(tile::<L2, 0, $r> as Tile),+],
                (Metric::Ip | Metric::Cosine, 4) => [$(tile::<IP, 4, $r> as Tile),+],
                (Metric::Ip | Metric::Cosine, 8) => [$(tile::<IP, 8, $r> as Tile),+],
                (Metric::Ip | Metric::Cosine, 16) => [$(tile::<IP, 16, $r> as Tile),+],
                (Metric::Ip | Metric::Cosine, _) => [$(tile::<IP, 0, $r> as Tile),+],
                (Metric::L1, 4) => [$(tile::<L1, 4, $r> as Tile),+],
                (Metric::L1, 8) => [$(tile::<L1, 8, $r> as Tile),+],
                (Metric::L1, 16) => [$(tile::<L1, 16, $r> as Tile),+],
                (Metric::L1, _) => [$(tile::<L1, 0, $r> as Tile),+],
            }
        }
    };
}
pub(crate) use assign_tiles;
