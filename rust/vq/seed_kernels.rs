//! The per-point kernels of k-means++ seeding (`kmeans_init`).
//!
//! Points sit in groups of [`GROUP`] (16), transposed (`xt[(g * d + t) * 16 + q]` = coordinate
//! `t` of point `16 g + q`), 16 groups to a block, 16 blocks to a chunk. A kernel call handles
//! one centre against one chunk: it tests the 16 block boxes, then the group boxes of the
//! blocks left (`reach16`: box distances in float32, with the margins of [`threshold`]), and only the groups the
//! centre may come nearer to are touched. A distance is `max(0, (|c|^2 - 2 x.c) + |x|^2)` with
//! `x.c` a sequential `mul_add` chain, exactly as `assign` ranks.
//!
//! The float64 sums have one fixed order: point `q` of every group of a block adds its term to
//! partial `q`, in group order, and the 16 partials are added as a tree ([`fold16`]); blocks
//! are added in order by the caller. A group the box test skips would add exact zeros (no
//! point of it comes nearer), so skipping changes no bit. The plain bodies ([`Plain`],
//! `per_level!`) and the AVX2 and AVX-512 ones (`seed_kernels_x86.rs`) perform the same IEEE
//! operations, so the results depend on neither the SIMD level nor the number of threads.

// Lane loops index several same-length arrays at once (the shape the vectoriser wants), and the
// kernels take a block's slices one by one.
#![allow(clippy::needless_range_loop, clippy::too_many_arguments)]

use crate::simd::per_level;

/// Points per group (the width of the transposed layout and of a ball test).
pub const GROUP: usize = 16;
/// Groups per block, and blocks per chunk.
pub const FAN: usize = 16;
/// Points per block.
pub const BLOCK: usize = GROUP * FAN;

#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).fold(0.0f32, |acc, (x, y)| x.mul_add(*y, acc))
}

/// Squared distance from a dot product and the two squared norms (clamped at 0).
#[inline(always)]
pub fn l2(dot: f32, cn: f32, xn: f32) -> f32 {
    let v = (-2.0f32).mul_add(dot, cn) + xn;
    if v > 0.0 {
        v
    } else {
        0.0
    }
}

/// The sum of 16 float64 terms as a fixed tree: `t[i] + t[i + 8]`, then halves again.
#[inline(always)]
fn fold16(t: &[f64; GROUP]) -> f64 {
    let mut s = [0f64; 8];
    for i in 0..8 {
        s[i] = t[i] + t[i + 8];
    }
    for i in 0..4 {
        s[i] += s[i + 4];
    }
    for i in 0..2 {
        s[i] += s[i + 2];
    }
    s[0] + s[1]
}

/// A centre as the kernels take it: coordinates and squared norm.
pub struct Centre<'a> {
    pub c: &'a [f32],
    pub cn: f32,
}

/// The points and boxes of one chunk (16 blocks of 16 groups of 16 points): `xt`, `xn` and `w`
/// over its points; the group boxes (a set of 16 per block, `seed_blocks::Boxes`) and the block
/// boxes (one set).
pub struct Chunk<'a> {
    pub d: usize,
    pub xt: &'a [f32],
    pub xn: &'a [f32],
    pub w: Option<&'a [f32]>,
    pub gboxes: &'a [f32],
    pub bboxes: &'a [f32],
    /// The error bound of a computed distance to any centre (`seed_blocks::margin`).
    pub err: f64,
}

/// A group some candidate would lower: the candidate's lane, the group (counted in its chunk)
/// and the group's `closest` with the candidate added. Kept while scoring, so that adding the
/// chosen candidate is a copy (`apply`), not a second pass.
#[derive(Clone, Copy)]
pub struct Update {
    pub lane: u32,
    pub group: u32,
    pub closest: [f32; GROUP],
}

/// Where [`gain`] writes: one candidate's gains per block (`gains[b * stride]`), the number of
/// blocks it scored, and the groups it would lower (tagged with `lane`).
pub struct Out<'a> {
    pub gains: &'a mut [f64],
    pub stride: usize,
    pub scored: usize,
    pub lane: u32,
    pub updates: &'a mut Vec<Update>,
}

/// What the seeder keeps per box: the largest `closest` inside it, its potential, and the
/// squared distance beyond which a centre cannot reach it ([`threshold`]).
pub struct BallState<'a> {
    pub maxd: &'a mut [f32],
    pub pot: &'a mut [f64],
    pub thr: &'a mut [f32],
}

/// The squared distance between a centre and a box, as [`reach16_body`] computes it in
/// float32, beyond which no point of the box (largest `closest` `maxd`) can come nearer to the
/// centre. The true bound is `T = maxd + err`; the float32 sum of `d` squared gaps, each gap
/// rounded once and each square added by a fused multiply-add, is at most `(1 + (d + 2) 2^-24)`
/// times the true squared distance to the box, so `T` is raised by `(2d + 8) 2^-23` (and
/// `1e-9` for the float64 arithmetic here) and rounded up to float32. Infinite while `maxd` is.
#[inline(always)]
pub fn threshold(maxd: f32, err: f64, d: usize) -> f32 {
    let t = (maxd as f64 + err) * (1.0 + (2 * d + 8) as f64 * (-23f64).exp2() + 1e-9);
    let t32 = t as f32;
    if (t32 as f64) < t {
        t32.next_up()
    } else {
        t32
    }
}

/// Bit `q` set unless box `q` of 16 (a set of `seed_blocks::Boxes`) lies beyond its threshold
/// from the centre: `acc = fma(g, g, acc)` over `t`, with the gap
/// `g = max(max(lo - c, c - hi), 0)` (`max(a, b)` meaning `if a > b { a } else { b }`).
#[inline(always)]
#[allow(clippy::neg_cmp_op_on_partial_ord)]
fn reach16_body(boxes: &[f32], thr: &[f32], c: &[f32]) -> u32 {
    let thr: &[f32; GROUP] = thr.try_into().unwrap();
    let mut acc = [0f32; GROUP];
    for (t, &ct) in c.iter().enumerate() {
        let lo: &[f32; GROUP] = boxes[t * 32..t * 32 + 16].try_into().unwrap();
        let hi: &[f32; GROUP] = boxes[t * 32 + 16..t * 32 + 32].try_into().unwrap();
        for q in 0..GROUP {
            let (a, b) = (lo[q] - ct, ct - hi[q]);
            let g = if a > b { a } else { b };
            let g = if g > 0.0 { g } else { 0.0 };
            acc[q] = g.mul_add(g, acc[q]);
        }
    }
    // Branch-free per lane, packed into bits at the end; `!(a > b)` so that NaN counts as near.
    let mut near = [false; GROUP];
    for q in 0..GROUP {
        near[q] = !(acc[q] > thr[q]);
    }
    near.iter().enumerate().fold(0, |m, (q, &f)| m | ((f as u32) << q))
}

/// The 16 points' dot products with the centre (`xg`: one transposed group).
#[inline(always)]
fn dots16(xg: &[f32], c: &[f32]) -> [f32; GROUP] {
    let mut acc = [0f32; GROUP];
    for (row, &ct) in xg.chunks_exact(GROUP).zip(c) {
        let row: &[f32; GROUP] = row.try_into().unwrap();
        acc = std::array::from_fn(|q| row[q].mul_add(ct, acc[q]));
    }
    acc
}

/// The weights of the 16 points from `at` (1 without weights).
#[inline(always)]
fn weights16(w: Option<&[f32]>, at: usize) -> [f64; GROUP] {
    let mut out = [1f64; GROUP];
    if let Some(w) = w {
        let w: &[f32; GROUP] = w[at..at + GROUP].try_into().unwrap();
        for q in 0..GROUP {
            out[q] = w[q] as f64;
        }
    }
    out
}

/// The set bits of a mask, lowest first.
#[inline(always)]
fn bits(mut mask: u32) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        (mask != 0).then(|| {
            let q = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            q
        })
    })
}

/// The per-group operations: plain ([`Plain`]: the oracle, and every level without kernels of
/// its own) or with AVX2 or AVX-512 intrinsics (`seed_kernels_x86.rs`); all perform the same
/// IEEE operations in the same order.
///
/// # Safety
/// Every method may use the instructions of its implementation's level: call them only where
/// that level is available (the plain ones need nothing). Slices are read within their lengths
/// (the implementations assert what they do not get from array types).
trait Ops {
    /// 16 float64 partial sums, one per point position in a group.
    type Acc: Copy;
    unsafe fn zero() -> Self::Acc;
    /// [`fold16`] of the partials.
    unsafe fn fold(acc: Self::Acc) -> f64;
    /// See [`reach16_body`].
    unsafe fn reach16(boxes: &[f32], thr: &[f32], c: &[f32]) -> u32;
    /// Adds a group's terms `w * (closest - min(closest, dist))` to the partials, point `q` to
    /// partial `q`; when some point comes nearer (`dist < closest`), writes
    /// `min(closest, dist)` to `lowered` and returns true.
    unsafe fn gain(
        acc: &mut Self::Acc,
        xg: &[f32],
        xn: &[f32; GROUP],
        cl: &[f32; GROUP],
        w: Option<&[f32; GROUP]>,
        c: &Centre,
        lowered: &mut [f32; GROUP],
    ) -> bool;
    /// `closest = min(closest, dist)` over a group; whether any fell.
    unsafe fn lower(xg: &[f32], xn: &[f32; GROUP], cl: &mut [f32; GROUP], c: &Centre) -> bool;
}

struct Plain;

impl Ops for Plain {
    type Acc = [f64; GROUP];

    #[inline(always)]
    unsafe fn zero() -> Self::Acc {
        [0.0; GROUP]
    }

    #[inline(always)]
    unsafe fn fold(acc: Self::Acc) -> f64 {
        fold16(&acc)
    }

    #[inline(always)]
    unsafe fn reach16(boxes: &[f32], thr: &[f32], c: &[f32]) -> u32 {
        reach16_body(boxes, thr, c)
    }

    #[inline(always)]
    unsafe fn gain(
        acc: &mut Self::Acc,
        xg: &[f32],
        xn: &[f32; GROUP],
        cl: &[f32; GROUP],
        w: Option<&[f32; GROUP]>,
        c: &Centre,
        lowered: &mut [f32; GROUP],
    ) -> bool {
        let dots = dots16(xg, c.c);
        let wq = weights16(w.map(|w| &w[..]), 0);
        let (mut m, mut any) = ([0f32; GROUP], false);
        for q in 0..GROUP {
            let dist = l2(dots[q], c.cn, xn[q]);
            any |= dist < cl[q];
            m[q] = if dist < cl[q] { dist } else { cl[q] };
            acc[q] += (cl[q] as f64 - m[q] as f64) * wq[q];
        }
        if any {
            *lowered = m;
        }
        any
    }

    #[inline(always)]
    unsafe fn lower(xg: &[f32], xn: &[f32; GROUP], cl: &mut [f32; GROUP], c: &Centre) -> bool {
        let dots = dots16(xg, c.c);
        let mut lowered = false;
        for q in 0..GROUP {
            let dist = l2(dots[q], c.cn, xn[q]);
            lowered |= dist < cl[q];
            cl[q] = if dist < cl[q] { dist } else { cl[q] };
        }
        lowered
    }
}

/// One candidate over one chunk: for every block it may reach, `out[b * stride]` gets the sum
/// over the block's points of `w * (closest - min(closest, dist))`, what the potential would
/// drop by with the candidate added (the other entries are left as they are): point `q` of
/// every group adds to partial `q` in group order, then [`fold16`]. Counts the blocks scored.
///
/// # Safety
/// `K`'s instructions must be available.
#[inline(always)]
unsafe fn gain_body<K: Ops>(ch: &Chunk, closest: &[f32], gthr: &[f32], bthr: &[f32], c: &Centre, out: &mut Out) {
    let d = ch.d;
    let blocks = K::reach16(ch.bboxes, bthr, c.c);
    let mut lowered = [0f32; GROUP];
    for b in bits(blocks) {
        let mut acc = K::zero();
        let mask = K::reach16(&ch.gboxes[b * 2 * FAN * d..(b + 1) * 2 * FAN * d], &gthr[b * FAN..(b + 1) * FAN], c.c);
        for g in bits(mask).map(|g| b * FAN + g) {
            let at = g * GROUP;
            let (xn, cl) = (ch.xn[at..at + GROUP].try_into().unwrap(), closest[at..at + GROUP].try_into().unwrap());
            let w = ch.w.map(|w| w[at..at + GROUP].try_into().unwrap());
            if K::gain(&mut acc, &ch.xt[at * d..(at + GROUP) * d], xn, cl, w, c, &mut lowered) {
                out.updates.push(Update { lane: out.lane, group: g as u32, closest: lowered });
            }
        }
        out.gains[b * out.stride] = K::fold(acc);
        out.scored += 1;
    }
}

/// Adds a centre to one chunk: lowers `closest` wherever it reaches, and refreshes the state
/// of every group and block that changed (a block's potential is the sum of its groups', in
/// order).
///
/// # Safety
/// `K`'s instructions must be available.
#[inline(always)]
unsafe fn commit_body<K: Ops>(ch: &Chunk, closest: &mut [f32], groups: &mut BallState, blocks: &mut BallState, c: &Centre) {
    let d = ch.d;
    let reach = K::reach16(ch.bboxes, blocks.thr, c.c);
    for b in bits(reach) {
        let mut changed = false;
        let mask = K::reach16(&ch.gboxes[b * 2 * FAN * d..(b + 1) * 2 * FAN * d], &groups.thr[b * FAN..(b + 1) * FAN], c.c);
        for at in bits(mask).map(|g| (b * FAN + g) * GROUP) {
            let xn = ch.xn[at..at + GROUP].try_into().unwrap();
            let cl: &mut [f32; GROUP] = (&mut closest[at..at + GROUP]).try_into().unwrap();
            if K::lower(&ch.xt[at * d..(at + GROUP) * d], xn, cl, c) {
                refresh_group(ch, closest, groups, at / GROUP);
                changed = true;
            }
        }
        if changed {
            refresh_block(ch, groups, blocks, b);
        }
    }
}

/// Group `g`'s largest `closest`, potential and threshold, from its `closest`.
fn refresh_group(ch: &Chunk, closest: &[f32], groups: &mut BallState, g: usize) {
    let at = g * GROUP;
    (groups.maxd[g], groups.pot[g]) = group_stats(&closest[at..at + GROUP], ch.w.map(|w| &w[at..at + GROUP]));
    groups.thr[g] = threshold(groups.maxd[g], ch.err, ch.d);
}

/// Block `b`'s largest `closest`, potential (its groups' in order) and threshold.
fn refresh_block(ch: &Chunk, groups: &BallState, blocks: &mut BallState, b: usize) {
    let gs = b * FAN..(b + 1) * FAN;
    blocks.maxd[b] = groups.maxd[gs.clone()].iter().fold(0f32, |a, &v| if v > a { v } else { a });
    blocks.pot[b] = groups.pot[gs].iter().fold(0.0, |a, &v| a + v);
    blocks.thr[b] = threshold(blocks.maxd[b], ch.err, ch.d);
}

/// Adds the candidate of lane `lane` to one chunk from the groups its scoring found it lowers
/// (`updates`, in group order): the same state as [`commit`] would leave, without recomputing
/// a distance.
pub fn apply(ch: &Chunk, closest: &mut [f32], groups: &mut BallState, blocks: &mut BallState, updates: &[Update], lane: u32) {
    let mut last_block = None;
    for u in updates.iter().filter(|u| u.lane == lane) {
        let (g, b) = (u.group as usize, u.group as usize / FAN);
        closest[g * GROUP..(g + 1) * GROUP].copy_from_slice(&u.closest);
        refresh_group(ch, closest, groups, g);
        if last_block.is_some_and(|l| l != b) {
            refresh_block(ch, groups, blocks, last_block.unwrap());
        }
        last_block = Some(b);
    }
    if let Some(b) = last_block {
        refresh_block(ch, groups, blocks, b);
    }
}

/// A group's largest `closest` and its potential `fold16(w * closest)`.
#[inline(always)]
fn group_stats(closest: &[f32], w: Option<&[f32]>) -> (f32, f64) {
    let wq = weights16(w, 0);
    let cl: &[f32; GROUP] = closest.try_into().unwrap();
    let mut terms = [0f64; GROUP];
    for q in 0..GROUP {
        terms[q] = cl[q] as f64 * wq[q];
    }
    // The maximum of non-negative values does not depend on the order.
    (cl.iter().fold(0f32, |a, &v| if v > a { v } else { a }), fold16(&terms))
}

#[inline(always)]
fn norms_body(x: &[f32], d: usize, xn: &mut [f32]) {
    for (n, xi) in xn.iter_mut().zip(x.chunks_exact(d)) {
        *n = dot(xi, xi);
    }
}

#[cfg(test)]
#[inline(always)]
fn reach_body(boxes: &[f32], thr: &[f32], c: &[f32], out: &mut u32) {
    *out = reach16_body(boxes, thr, c);
}

#[inline(always)]
fn gain_plain(ch: &Chunk, closest: &[f32], gthr: &[f32], bthr: &[f32], c: &Centre, out: &mut Out) {
    // SAFETY: the plain operations need no instructions beyond the baseline.
    unsafe { gain_body::<Plain>(ch, closest, gthr, bthr, c, out) }
}

#[inline(always)]
fn commit_plain(ch: &Chunk, closest: &mut [f32], groups: &mut BallState, blocks: &mut BallState, c: &Centre) {
    // SAFETY: as above.
    unsafe { commit_body::<Plain>(ch, closest, groups, blocks, c) }
}

#[cfg(test)]
per_level!(
    /// See [`reach16_body`].
    reach_at, reach_body, (boxes: &[f32], thr: &[f32], c: &[f32], out: &mut u32));
per_level!(
    /// See [`gain_body`] (every level but AVX-512).
    gain_at, gain_plain, (ch: &Chunk, closest: &[f32], gthr: &[f32], bthr: &[f32], c: &Centre, out: &mut Out));
per_level!(
    /// See [`commit_body`] (every level but AVX-512).
    commit_at, commit_plain, (ch: &Chunk, closest: &mut [f32], groups: &mut BallState, blocks: &mut BallState, c: &Centre));
per_level!(
    /// Squared norms of the rows.
    pub norms, norms_body, (x: &[f32], d: usize, xn: &mut [f32]));

impl Chunk<'_> {
    fn check(&self, closest: usize, gthr: usize, bthr: usize) {
        let d = self.d;
        assert!(self.xt.len() == FAN * BLOCK * d && self.xn.len() == FAN * BLOCK && closest == FAN * BLOCK);
        assert!(self.w.is_none_or(|w| w.len() == FAN * BLOCK));
        assert!(self.gboxes.len() == 2 * FAN * FAN * d && gthr == FAN * FAN);
        assert!(self.bboxes.len() == 2 * FAN * d && bthr == FAN);
    }
}

/// Which of 16 boxes (a set of `seed_blocks::Boxes`, thresholds) the centre may reach.
#[cfg(test)]
pub fn reach(level: crate::simd::Level, boxes: &[f32], thr: &[f32], c: &[f32]) -> u32 {
    assert!(boxes.len() == 2 * GROUP * c.len() && thr.len() == GROUP);
    let mut out = 0;
    reach_at(level, boxes, thr, c, &mut out);
    out
}

/// One candidate over one chunk (see [`gain_body`]): `out.gains` holds 16 blocks' entries,
/// `out.stride` apart.
pub fn gain(level: crate::simd::Level, ch: &Chunk, closest: &[f32], gthr: &[f32], bthr: &[f32], c: &Centre, out: &mut Out) {
    ch.check(closest.len(), gthr.len(), bthr.len());
    assert!(c.c.len() == ch.d && out.gains.len() > (FAN - 1) * out.stride);
    #[cfg(target_arch = "x86_64")]
    {
        use crate::simd::Level;
        // SAFETY: a level is only in force when the CPU supports it (simd::level).
        match level {
            Level::Avx512 => unsafe { x86::avx512::gain(ch, closest, gthr, bthr, c, out) },
            // SAFETY: as above.
            Level::Avx2 => unsafe { x86::avx2::gain(ch, closest, gthr, bthr, c, out) },
            _ => gain_at(level, ch, closest, gthr, bthr, c, out),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    gain_at(level, ch, closest, gthr, bthr, c, out);
}

/// Adds a centre to one chunk (see [`commit_body`]).
pub fn commit(level: crate::simd::Level, ch: &Chunk, closest: &mut [f32], groups: &mut BallState, blocks: &mut BallState, c: &Centre) {
    ch.check(closest.len(), groups.thr.len(), blocks.thr.len());
    assert!(c.c.len() == ch.d && groups.maxd.len() == FAN * FAN && groups.pot.len() == FAN * FAN);
    assert!(blocks.maxd.len() == FAN && blocks.pot.len() == FAN);
    #[cfg(target_arch = "x86_64")]
    {
        use crate::simd::Level;
        // SAFETY: a level is only in force when the CPU supports it (simd::level).
        match level {
            Level::Avx512 => unsafe { x86::avx512::commit(ch, closest, groups, blocks, c) },
            // SAFETY: as above.
            Level::Avx2 => unsafe { x86::avx2::commit(ch, closest, groups, blocks, c) },
            _ => commit_at(level, ch, closest, groups, blocks, c),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    commit_at(level, ch, closest, groups, blocks, c)
}

#[cfg(target_arch = "x86_64")]
#[path = "seed_kernels_x86.rs"]
mod x86;
