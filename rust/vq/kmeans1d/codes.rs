//! Codes and inertia of a fitted row: each element's nearest centroid of the stored f32
//! codebook (`|x - c|` in f64, ties to the lowest index) and the weighted SSE of those codes.
//!
//! Why thresholds: the rule is a step function of `x`, so it is `code = #{c : x >= t_c}` for
//! one f32 threshold per pair of neighbouring centroids, found once a row by bisection with the
//! exact f64 predicate. The elements are then coded in the row's own order, sixteen at a time
//! (compare and count, or a binary search for many thresholds), with no sorted positions and
//! no scatter. This holds when no rounded distance can tie across a centroid ([`thresholds`]'s
//! condition); otherwise (centroids packed within 2^-50 of the row's range, e.g. 0 and 1e-30
//! against 1.0) a tie such as `1 - 0 == 1 - 1e-30` sends `x` below the centroid it has passed,
//! and the row is coded by walking its values sorted with their positions ([`assign_sorted`]).
//!
//! The SSE sums `w * (x - c)^2` in f64 in sixteen lanes (lane = index mod 16), then the lanes in
//! order; the fallback sums in sorted order. Every compilation does the same operations.

use super::sort::{unkey, Scratch};
use super::Code;

/// Elements coded at a time.
const LANES: usize = 16;

/// Up to this many thresholds an element's code is counted by comparing with each; above, it
/// is found by a binary search (the same count).
const COUNT_MAX: usize = 32;

/// Codes of the row `x` (weights `w`, none: unit) for the strictly ascending `cb` into `codes`;
/// returns the weighted SSE. `s`: the row's [`Scratch::load`] (its `lo`, `hi`; scratch space).
#[inline(always)]
pub fn assign<C: Code>(s: &mut Scratch, cb: &[f32], x: &[f32], w: Option<&[f32]>, codes: &mut [C]) -> f64 {
    if thresholds(cb, s.lo, s.hi, &mut s.thr) {
        match w {
            None => assign_row::<C, false>(cb, &s.thr, x, &[], codes),
            Some(w) => assign_row::<C, true>(cb, &s.thr, x, w, codes),
        }
    } else {
        s.sort_positions(x);
        assign_sorted(cb, &s.items, w, codes)
    }
}

/// The smallest f32 `x` in `(a, b]` that goes to `b` rather than `a` (`a < b`):
/// `x - a > b - x` in f64. The predicate only turns from false (at `a`) to true (at `b`) along
/// the f32 order, so a bisection on the order-preserving keys finds it; the rounded midpoint
/// is almost always the answer and is tried first.
#[inline(always)]
pub fn threshold(a: f32, b: f32) -> f32 {
    let (ad, bd) = (a as f64, b as f64);
    let goes_up = |k: u32| {
        let x = unkey(k) as f64;
        x - ad > bd - x
    };
    let key = |v: f32| super::sort::key(v + 0.0);
    let (mut lo, mut hi) = (key(a), key(b));
    let t = key((0.5 * (ad + bd)) as f32);
    if t > lo && t <= hi && goes_up(t) && !goes_up(t - 1) {
        return unkey(t);
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if goes_up(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    unkey(hi)
}

/// The thresholds of `cb` (strictly ascending) into `thr`, `thr[c]` between `cb[c]` and
/// `cb[c + 1]`; false when the rule is not a count of thresholds for values in `lo..=hi`.
///
/// Condition: every gap `cb[c + 1] - cb[c]` exceeds `2^-50 * D`, `D` the largest distance from
/// a value to a centroid. Then for `cb[j] <= x < cb[j + 1]` every centroid below `j` is farther
/// than `cb[j]` even after rounding (each distance rounds by at most `2^-53 * D`), every one
/// above `j + 1` farther than `cb[j + 1]`, so the code is `j` or `j + 1`, and `j + 1` exactly
/// when `x >= thr[j]`: the code is the number of thresholds at most `x`.
#[inline(always)]
pub fn thresholds(cb: &[f32], lo: f32, hi: f32, thr: &mut Vec<f32>) -> bool {
    let dist = (hi as f64 - cb[0] as f64).max(cb[cb.len() - 1] as f64 - lo as f64);
    let tiny = dist * (-50.0f64).exp2();
    if cb.windows(2).any(|p| p[1] as f64 - p[0] as f64 <= tiny) {
        return false;
    }
    thr.clear();
    thr.extend(cb.windows(2).map(|p| threshold(p[0], p[1])));
    true
}

/// Sixteen elements (`xs`, weights `ws` when `W`): their codes (the number of thresholds at
/// most each) and their terms `w * (x - c)^2` added to `acc`. Few thresholds: compare with
/// each, the centroid following by selection; many: a binary search.
#[inline(always)]
fn group<const W: bool>(cb: &[f32], thr: &[f32], xs: &[f32; LANES], ws: &[f32; LANES], acc: &mut [f64; LANES]) -> [u32; LANES] {
    let mut cnt = [0u32; LANES];
    let mut cent = [cb[0]; LANES];
    if thr.len() <= COUNT_MAX {
        for (&t, &up) in thr.iter().zip(&cb[1..]) {
            for l in 0..LANES {
                let ge = xs[l] >= t;
                cnt[l] += ge as u32;
                cent[l] = if ge { up } else { cent[l] };
            }
        }
    } else {
        for l in 0..LANES {
            cnt[l] = thr.partition_point(|&t| t <= xs[l]) as u32;
            cent[l] = cb[cnt[l] as usize];
        }
    }
    for l in 0..LANES {
        let d = xs[l] as f64 - cent[l] as f64;
        acc[l] += if W { ws[l] as f64 * d * d } else { d * d };
    }
    cnt
}

/// Codes by thresholds and the weighted SSE (`W`: `w` holds the weights, else unit weights and
/// `w` is empty), sixteen elements at a time; the last, partial group pads with weight zero.
#[inline(always)]
fn assign_row<C: Code, const W: bool>(cb: &[f32], thr: &[f32], x: &[f32], w: &[f32], codes: &mut [C]) -> f64 {
    let mut acc = [0.0f64; LANES];
    let n = x.len();
    let full = n - n % LANES;
    let zeros = [0.0f32; LANES];
    for base in (0..full).step_by(LANES) {
        let xs: &[f32; LANES] = x[base..base + LANES].try_into().expect("sixteen values");
        let ws: &[f32; LANES] = if W { w[base..base + LANES].try_into().expect("sixteen weights") } else { &zeros };
        let cnt = group::<W>(cb, thr, xs, ws, &mut acc);
        let out: &mut [C; LANES] = (&mut codes[base..base + LANES]).try_into().expect("sixteen codes");
        for l in 0..LANES {
            out[l] = C::from_index(cnt[l] as usize);
        }
    }
    if full < n {
        let (mut xs, mut ws) = ([cb[0]; LANES], [0.0f32; LANES]);
        xs[..n - full].copy_from_slice(&x[full..]);
        if W {
            ws[..n - full].copy_from_slice(&w[full..]);
        }
        // Padding lanes: x = cb[0] and weight zero (unit-weight rows: distance zero) add +0.
        let cnt = group::<W>(cb, thr, &xs, &ws, &mut acc);
        for (c, &v) in codes[full..].iter_mut().zip(&cnt) {
            *c = C::from_index(v as usize);
        }
    }
    acc.iter().fold(0.0, |a, &v| a + v)
}

/// Nearest centroid of the strictly ascending `cb` for every element (`items`: the sorted row
/// with positions from [`Scratch::sort_positions`]), ties to the lower index; returns
/// `sum w (x - cb[code])^2` in f64, summed in sorted order. Walking the sorted values, the code
/// only moves up: `x` leaves centroid `c` for `c + 1` once `x - cb[c] > cb[c + 1] - x`
/// (distances in f64), the rule of a binary search with ties to the lower index (and a tie of
/// rounded distances with the centroids below goes down to the lowest of them).
#[inline(always)]
pub fn assign_sorted<C: Code>(cb: &[f32], items: &[u64], w: Option<&[f32]>, codes: &mut [C]) -> f64 {
    let mut sse = 0.0f64;
    let mut code = 0;
    let (mut lo, mut hi) = (cb[0] as f64, cb.get(1).map_or(f64::INFINITY, |&v| v as f64));
    for &kv in items {
        let xd = unkey((kv >> 32) as u32) as f64;
        while xd - lo > hi - xd {
            code += 1;
            lo = hi;
            hi = cb.get(code + 1).map_or(f64::INFINITY, |&v| v as f64);
        }
        // Past a centroid the rounded distances to it and to the one below can tie (`1 - 0` and
        // `1 - 1e-30`): the lower index wins, while the walk stays where it is.
        let mut c = code;
        while c > 0 && xd - cb[c - 1] as f64 == (xd - cb[c] as f64).abs() {
            c -= 1;
        }
        let i = kv as u32 as usize;
        codes[i] = C::from_index(c);
        let d = xd - lo;
        sse += w.map_or(1.0, |w| w[i] as f64) * d * d;
    }
    sse
}
