//! Exact acceleration of Lloyd's assignment step at low dimension: the points are cut once into
//! a tree of boxes, and each box keeps only the centroids that can be nearest to one of its
//! points (the filtering algorithm of Kanungo et al. 2002, on a fixed tree), L2 only.
//!
//! The points never move between iterations, so the first call orders them along a kd-tree
//! (median splits along the widest dimension) whose nodes are aligned runs of [`LEVELS`] points,
//! and keeps each node's bounding box (centre `m`, half-widths `h`). Every call then walks the
//! tree: a node's candidates are its parent's (all centroids at the top) minus those a pivot
//! centroid `z` beats everywhere in the box; a leaf's points are scored against the leaf's
//! candidates only, with the brute-force arithmetic. The pivot is the last call's code of a
//! point of the node near its centre (at the first call: the parent's candidate nearest the
//! centre). The state is O(n d): no n x k matrix. The points are kept (a copy) and compared
//! with the caller's at every call, so a tree is never used for other values.
//!
//! Exactness. Brute force ranks `s_j = fma(-2, x.c_j, |c_j|^2)` (float32, `x.c` and `|c|^2`
//! sequential `mul_add` chains); each is within `e_j <= (2d + 4) u (|x|^2 + |c_j|^2)` of the
//! true `S_j = |c_j|^2 - 2 x.c_j` (`u = 2^-24`). For `x` in the box and `w = c_j - z`,
//! `S_j - S_z = Q_j - Q_z - 2 (x - m).w >= G_j = Q_j - Q_z - 2 sum_t h_t |w_t|` with
//! `Q = |c|^2 - 2 m.c`. Candidate `j` is dropped when `G_j` exceeds `e_j + e_z` plus the
//! rounding of its float32 computation: then `s_j > s_z` at every point of the box, so `j` can
//! neither win nor tie there. With `M_t = max(|lo_t|, |hi_t|)` (so `|x|^2, |m|^2 <= |M|^2` and
//! `|h| <= |M|`) and `C` the largest squared centroid norm, `Q` is within `2d u (2C + |M|^2)`,
//! `sum h |w| <= |M|^2 + C` within `(d + 1) u` of that, so the computed `G_j` is within
//! `(10d + 16) u (|M|^2 + C)`, and `e_j + e_z <= (4d + 8) u (|M|^2 + C)`; the margin used is
//! `(16d + 64) u (|M|^2 + 2C)` plus the smallest normal float (underflow). Any centroid may
//! serve as the pivot, and being beaten (a strictly lower computed score) is transitive, so the
//! brute-force winner (the lowest index among the lowest scores) is never dropped at any level.
//! Candidates stay in ascending index order, and a leaf's points are scored exactly as
//! `assign::score_scalar` with ties to the lowest index, so codes and distances are those of
//! `assign_into`, bit for bit. Norms past 2^80 (where products could overflow) fall back to
//! brute force. The kernels perform the same operations at every SIMD level and the jobs are
//! fixed runs of the tree, so nothing depends on the level or the thread count.

#![allow(clippy::needless_range_loop, clippy::too_many_arguments)] // lane loops, kernel args

use super::assign::{assign_batch_at, Codebook};
use super::kmeans_filter_kernels::{filter, near, score, Set, View};
use super::seed_blocks::order_bits;
use super::seed_kernels::norms;
use super::Metric;
use crate::error::{invalid, Error, Result};
use crate::parallel;
use crate::simd::{self, Level};

/// Node sizes of the tree, largest first; every size divides the one before.
pub const LEVELS: [usize; 4] = [1024, 256, 64, 16];
/// Points per leaf: scored together against the leaf's candidates.
pub const LEAF: usize = LEVELS[LEVELS.len() - 1];
/// Top nodes per parallel job (small jobs balance the threads; the scratch is per thread).
const JOB_NODES: usize = 1;
/// Squared norms from which brute force is used (every product stays far from overflow).
const LIMIT: f32 = 1.2089258e24; // 2^80

/// The tree of one set of points (built on the first call, kept for the next ones).
#[derive(Default, Debug)]
pub struct Filter {
    /// `(n, d)` of the points the tree belongs to.
    key: (usize, usize),
    /// Original index of the point at each position of the tree order.
    order: Vec<u32>,
    /// The points, in the caller's order (checked at every call) and in tree order.
    x0: Vec<f32>,
    xs: Vec<f32>,
    /// `dot(x, x)` in tree order (the bits `assign` adds to a score).
    xn: Vec<f32>,
    /// Per level of [`LEVELS`]: the nodes' boxes.
    boxes: Vec<Boxes>,
    max_xn: f32,
    /// The codes of the last call, in tree order (empty before the first): a node's pivot is
    /// the last code of its representative point.
    codes: Vec<u32>,
    /// (point, candidate) pairs scored at the last call (for tests and tuning).
    pub scored: u64,
}

impl Filter {
    pub fn new() -> Filter {
        Filter::default()
    }

    /// Whether the tree was built for `x` (same shape and values, bit for bit).
    fn holds(&self, x: &[f32], d: usize) -> bool {
        let same = |a: &[f32], b: &[f32]| a.iter().zip(b).fold(0, |m, (u, v)| m | (u.to_bits() ^ v.to_bits())) == 0;
        if self.key != (x.len() / d, d) || self.x0.len() != x.len() {
            return false;
        }
        let jobs: Vec<_> = x.chunks(1 << 16).zip(self.x0.chunks(1 << 16)).collect();
        parallel::try_for_each(jobs, |(a, b)| if same(a, b) { Ok(()) } else { Err(Error::Shape(String::new())) }).is_ok()
    }

    fn build(x: &[f32], d: usize) -> Result<Filter> {
        if let Some(index) = x.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite { index });
        }
        let n = x.len() / d;
        let (order, xs) = tree_order(x, d)?;
        // `dot(x, x)` (a `mul_add` chain, the same bits at every level).
        let mut xn = vec![0f32; n];
        norms(simd::level(), &xs, d, &mut xn);
        let mut boxes = vec![Boxes::leaves(&xs, d, LEAF)?];
        for w in LEVELS.windows(2).rev() {
            let b = Boxes::parents(boxes.last().expect("the leaves"), &xs, d, w[0] / w[1]);
            boxes.push(b);
        }
        boxes.reverse();
        let max_xn = xn.iter().fold(0f32, |m, &v| m.max(v));
        Ok(Filter { key: (n, d), order, x0: x.to_vec(), xs, xn, boxes, max_xn, codes: Vec::new(), scored: 0 })
    }
}

/// Bounding boxes of the aligned runs of one node size, as a centre and half-widths.
#[derive(Default, Debug)]
struct Boxes {
    lo: Vec<f32>,
    hi: Vec<f32>,
    /// `-2 mid`, `mid` the box's centre (what the filter multiplies by).
    m2: Vec<f32>,
    /// Half-widths, rounded up: every point of the node lies in `mid +- half`.
    half: Vec<f32>,
    /// `sum_t max(lo_t^2, hi_t^2)` (float64): no point of the box has a larger squared norm.
    reach: Vec<f64>,
    /// The tree position of a point of the node near its centre.
    rep: Vec<u32>,
}

impl Boxes {
    /// The boxes of the leaves (`size` points each) from their points; `rep` the point nearest
    /// the centre (the first on ties).
    fn leaves(xs: &[f32], d: usize, size: usize) -> Result<Boxes> {
        let nodes = (xs.len() / d).div_ceil(size);
        let mut b = Boxes { lo: vec![0.0; nodes * d], hi: vec![0.0; nodes * d], rep: vec![0; nodes], ..Boxes::default() };
        let per = 256; // nodes per job
        let jobs: Vec<_> = xs
            .chunks(per * size * d)
            .zip(b.lo.chunks_mut(per * d))
            .zip(b.hi.chunks_mut(per * d))
            .zip(b.rep.chunks_mut(per))
            .enumerate()
            .collect();
        parallel::try_for_each(jobs, |(job, (((pts, lo), hi), rep))| {
            for (q, node) in pts.chunks(size * d).enumerate() {
                let (lo, hi) = (&mut lo[q * d..(q + 1) * d], &mut hi[q * d..(q + 1) * d]);
                lo.fill(f32::INFINITY);
                hi.fill(f32::NEG_INFINITY);
                for p in node.chunks_exact(d) {
                    for t in 0..d {
                        lo[t] = if p[t] < lo[t] { p[t] } else { lo[t] };
                        hi[t] = if p[t] > hi[t] { p[t] } else { hi[t] };
                    }
                }
                rep[q] = ((job * per + q) * size + nearest(node, d, lo, hi)) as u32;
            }
            Ok(())
        })?;
        b.finish(d);
        Ok(b)
    }

    /// The boxes of the nodes of `ratio` children each, from the children's; `rep` the
    /// children's representative nearest the centre (the first on ties).
    fn parents(c: &Boxes, xs: &[f32], d: usize, ratio: usize) -> Boxes {
        let nodes = c.rep.len().div_ceil(ratio);
        let mut b = Boxes { lo: vec![f32::INFINITY; nodes * d], hi: vec![f32::NEG_INFINITY; nodes * d], ..Boxes::default() };
        for (j, (cl, ch)) in c.lo.chunks_exact(d).zip(c.hi.chunks_exact(d)).enumerate() {
            let q = j / ratio;
            for t in 0..d {
                b.lo[q * d + t] = b.lo[q * d + t].min(cl[t]);
                b.hi[q * d + t] = b.hi[q * d + t].max(ch[t]);
            }
        }
        b.rep = (0..nodes)
            .map(|q| {
                let reps = &c.rep[q * ratio..((q + 1) * ratio).min(c.rep.len())];
                let pts: Vec<f32> = reps.iter().flat_map(|&r| xs[r as usize * d..(r as usize + 1) * d].iter().copied()).collect();
                reps[nearest(&pts, d, &b.lo[q * d..(q + 1) * d], &b.hi[q * d..(q + 1) * d])]
            })
            .collect();
        b.finish(d);
        b
    }

    /// Centres, half-widths and reaches from the bounds.
    fn finish(&mut self, d: usize) {
        (self.m2, self.half) = (Vec::with_capacity(self.lo.len()), Vec::with_capacity(self.lo.len()));
        for (&l, &h) in self.lo.iter().zip(&self.hi) {
            let m = 0.5 * l + 0.5 * h;
            self.m2.push(-2.0 * m);
            self.half.push(up((m as f64 - l as f64).max(h as f64 - m as f64) * (1.0 + 1e-15)));
        }
        let sq = |v: f32| v as f64 * v as f64;
        self.reach = self
            .lo
            .chunks_exact(d)
            .zip(self.hi.chunks_exact(d))
            .map(|(l, h)| l.iter().zip(h).map(|(&a, &b)| sq(a).max(sq(b))).sum())
            .collect();
    }
}

/// The position of the row of `pts` nearest the centre of `lo..hi` (the first on ties; any
/// rounding will do: only speed depends on the choice).
fn nearest(pts: &[f32], d: usize, lo: &[f32], hi: &[f32]) -> usize {
    let gap = |p: &[f32]| (0..d).fold(0f32, |s, t| s + (p[t] - (0.5 * lo[t] + 0.5 * hi[t])).powi(2));
    pts.chunks_exact(d).map(gap).enumerate().fold((f32::INFINITY, 0), |b, (i, g)| if g < b.0 { (g, i) } else { b }).1
}

/// `v` rounded up to float32.
fn up(v: f64) -> f32 {
    let f = v as f32;
    if (f as f64) < v {
        f.next_up()
    } else {
        f
    }
}

/// Orders the points along a kd-tree: a range longer than a leaf is split along its widest
/// dimension (ties by position in the range) with a left part that is a whole number of nodes of the largest
/// size in [`LEVELS`] below the range's length, so every aligned run of each size is one
/// subtree. Returns the order and the points in it. The rows travel with their indices (every
/// split reads contiguous memory). Ranges are split in parallel, each depending on its own
/// points only (the top ones depth by depth, then whole subtrees of at most [`SUBTREE`]
/// points per job): the order is the same for any thread count.
fn tree_order(x: &[f32], d: usize) -> Result<(Vec<u32>, Vec<f32>)> {
    let n = x.len() / d;
    let (mut idx, mut xs): (Vec<u32>, Vec<f32>) = ((0..n as u32).collect(), x.to_vec());
    let mut ranges = vec![(0, n)];
    // Depth by depth while the ranges are large.
    while ranges.iter().any(|r| r.1 - r.0 > SUBTREE) {
        let mut lefts = vec![0usize; ranges.len()];
        let jobs: Vec<_> = cut(&mut idx, &mut xs, d, &ranges).into_iter().zip(lefts.iter_mut()).collect();
        parallel::try_for_each(jobs, |((ids, rows), left)| {
            if ids.len() > SUBTREE {
                *left = split(ids, rows, d, &mut Bufs::default());
            }
            Ok(())
        })?;
        ranges = ranges
            .iter()
            .zip(&lefts)
            .flat_map(|(&(lo, hi), &l)| if l == 0 { vec![(lo, hi)] } else { vec![(lo, lo + l), (lo + l, hi)] })
            .collect();
    }
    parallel::try_for_each(cut(&mut idx, &mut xs, d, &ranges), |(ids, rows)| {
        subtree(ids, rows, d, &mut Bufs::default());
        Ok(())
    })?;
    Ok((idx, xs))
}

/// Reused buffers of the splits.
#[derive(Default)]
struct Bufs {
    keys: Vec<u64>,
    rows: Vec<f32>,
    ids: Vec<u32>,
    lo: Vec<f32>,
    hi: Vec<f32>,
}

/// Points per job below which a range is ordered whole, serially.
const SUBTREE: usize = 4096;

type Part<'a> = (&'a mut [u32], &'a mut [f32]);

/// The disjoint ranges (in order, covering everything) as slices of indices and rows.
fn cut<'a>(idx: &'a mut [u32], xs: &'a mut [f32], d: usize, ranges: &[(usize, usize)]) -> Vec<Part<'a>> {
    let (mut ri, mut rx) = (idx, xs);
    ranges
        .iter()
        .map(|&(lo, hi)| {
            let (a, b) = std::mem::take(&mut ri).split_at_mut(hi - lo);
            let (c, e) = std::mem::take(&mut rx).split_at_mut((hi - lo) * d);
            (ri, rx) = (b, e);
            (a, c)
        })
        .collect()
}

/// Orders one range whole (see [`tree_order`]).
fn subtree(ids: &mut [u32], rows: &mut [f32], d: usize, b: &mut Bufs) {
    if ids.len() <= LEAF {
        return;
    }
    let left = split(ids, rows, d, b);
    let (li, ri) = ids.split_at_mut(left);
    let (lr, rr) = rows.split_at_mut(left * d);
    subtree(li, lr, d, b);
    subtree(ri, rr, d, b);
}

/// Splits a range of more than [`LEAF`] points (see [`tree_order`]); returns the size of the
/// left part.
fn split(ids: &mut [u32], rows: &mut [f32], d: usize, b: &mut Bufs) -> usize {
    match d {
        2 => split_d::<2>(ids, rows, d, b),
        3 => split_d::<3>(ids, rows, d, b),
        4 => split_d::<4>(ids, rows, d, b),
        8 => split_d::<8>(ids, rows, d, b),
        16 => split_d::<16>(ids, rows, d, b),
        _ => split_d::<0>(ids, rows, d, b),
    }
}

/// [`split`] with the dimension `D` known at compile time (0: `d`), so that the row loops
/// unroll and vectorise.
fn split_d<const D: usize>(ids: &mut [u32], rows: &mut [f32], d: usize, b: &mut Bufs) -> usize {
    let d = if D > 0 { D } else { d };
    let len = ids.len();
    let unit = LEVELS.iter().copied().find(|&s| s < len).unwrap_or(LEAF);
    let left = (len / 2 / unit).max(1) * unit;
    let t = if D > 0 { widest::<D>(rows) } else { widest_dyn(rows, d, b) };
    // (coordinate in an order-preserving integer form, position): plain integer compares.
    b.keys.clear();
    b.keys.extend(rows.chunks_exact(d).enumerate().map(|(q, p)| (order_bits(p[t]) as u64) << 32 | q as u64));
    b.keys.select_nth_unstable(left);
    b.rows.clear();
    b.rows.extend_from_slice(rows);
    b.ids.clear();
    b.ids.extend_from_slice(ids);
    for ((id, row), &k) in ids.iter_mut().zip(rows.chunks_exact_mut(d)).zip(&b.keys) {
        let from = k as u32 as usize;
        *id = b.ids[from];
        row.copy_from_slice(&b.rows[from * d..(from + 1) * d]);
    }
    left
}

/// The dimension of the largest extent of the rows (the first on ties), `D` known: the extents
/// stay in registers.
fn widest<const D: usize>(rows: &[f32]) -> usize {
    let (mut lo, mut hi) = ([f32::INFINITY; D], [f32::NEG_INFINITY; D]);
    for p in rows.chunks_exact(D) {
        for t in 0..D {
            lo[t] = if p[t] < lo[t] { p[t] } else { lo[t] };
            hi[t] = if p[t] > hi[t] { p[t] } else { hi[t] };
        }
    }
    (0..D).fold(0, |w, t| if hi[t] - lo[t] > hi[w] - lo[w] { t } else { w })
}

/// [`widest`] for any `d`.
fn widest_dyn(rows: &[f32], d: usize, b: &mut Bufs) -> usize {
    b.lo.clear();
    b.lo.resize(d, f32::INFINITY);
    b.hi.clear();
    b.hi.resize(d, f32::NEG_INFINITY);
    let (lo, hi) = (&mut b.lo[..d], &mut b.hi[..d]);
    for p in rows.chunks_exact(d) {
        for t in 0..d {
            lo[t] = if p[t] < lo[t] { p[t] } else { lo[t] };
            hi[t] = if p[t] > hi[t] { p[t] } else { hi[t] };
        }
    }
    (0..d).fold(0, |w, t| if hi[t] - lo[t] > hi[w] - lo[w] { t } else { w })
}

/// The margin of a box with `reach = |M|^2` (see the module doc), rounded up.
fn margin(d: usize, reach: f64, cmax: f64) -> f32 {
    let m = (16 * d + 64) as f64 * (-24f64).exp2() * (reach + 2.0 * cmax) * (1.0 + 1e-9);
    (m as f32).next_up() + f32::MIN_POSITIVE
}

/// Per-call inputs shared by every job.
struct Walk<'a> {
    level: Level,
    cb: &'a Codebook,
    f: &'a Filter,
    cmax: f64,
    /// Every centroid, the root's candidates.
    all: Set,
}

/// One job's scratch: a candidate set per level, a leaf's padded rows.
struct Scratch {
    sets: Vec<Set>,
    rows: Vec<f32>,
    scored: u64,
}

/// The nearest centroid of every point and its distance, exactly as
/// `assign_into(cb, x, codes, Some(dists))` reports them, using (and building on the first
/// call, or when `x` does not hold the points it was built for) the tree `f`. `cb` must be
/// L2.
pub fn assign_filtered(cb: &Codebook, x: &[f32], f: &mut Filter) -> Result<(Vec<u32>, Vec<f32>)> {
    assign_filtered_at(simd::level(), cb, x, f)
}

/// [`assign_filtered`] at a given SIMD level (one this CPU supports).
pub fn assign_filtered_at(level: Level, cb: &Codebook, x: &[f32], f: &mut Filter) -> Result<(Vec<u32>, Vec<f32>)> {
    if cb.metric != Metric::L2 {
        return Err(invalid!("filtered assignment needs the L2 metric"));
    }
    let d = cb.d;
    if !x.len().is_multiple_of(d) {
        return Err(Error::Shape(format!("x holds {} values, not a multiple of d={d}", x.len())));
    }
    if !f.holds(x, d) {
        *f = Filter::build(x, d)?;
    }
    let cmax = cb.norms.iter().fold(0f32, |m, &v| m.max(v));
    if cmax >= LIMIT || f.max_xn >= LIMIT {
        return brute(level, cb, x, f);
    }
    let (codes, dists, scored, tree_codes) = walk(&Walk { level, cb, f, cmax: cmax as f64, all: Set::all(&cb.data, &cb.norms, d) })?;
    (f.codes, f.scored) = (tree_codes, scored);
    Ok((codes, dists))
}

/// Brute force at `level` (huge norms), in fixed chunks.
fn brute(level: Level, cb: &Codebook, x: &[f32], f: &mut Filter) -> Result<(Vec<u32>, Vec<f32>)> {
    let n = x.len() / cb.d;
    let (mut codes, mut dists) = (vec![0u32; n], vec![0f32; n]);
    let jobs: Vec<_> = x.chunks(4096 * cb.d).zip(codes.chunks_mut(4096)).zip(dists.chunks_mut(4096)).collect();
    parallel::try_for_each(jobs, |((x, c), d)| {
        assign_batch_at(level, cb, x, c, Some(d));
        Ok(())
    })?;
    f.scored = (n * cb.k) as u64;
    Ok((codes, dists))
}

/// Codes and distances in the caller's order, pairs scored, codes in tree order.
type Walked = (Vec<u32>, Vec<f32>, u64, Vec<u32>);

thread_local! {
    static SETS: std::cell::RefCell<Vec<Set>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Every job of the tree.
fn walk(w: &Walk) -> Result<Walked> {
    let (f, d) = (w.f, w.cb.d);
    let n = f.order.len();
    let (mut codes, mut dists) = (vec![0u32; n], vec![0f32; n]);
    let per = JOB_NODES * LEVELS[0];
    let mut stats = vec![0u64; n.div_ceil(per)];
    let jobs: Vec<_> = codes.chunks_mut(per).zip(dists.chunks_mut(per)).zip(stats.iter_mut()).enumerate().collect();
    parallel::try_for_each(jobs, |(j, ((codes, dists), stat))| {
        let start = j * per;
        // The candidate sets of the last call on this thread (their contents never matter).
        let sets = SETS.with(|c| c.take());
        let mut s = Scratch { sets, rows: vec![0.0; LEAF * d], scored: 0 };
        s.sets.resize_with(LEVELS.len(), Set::default);
        let all = w.all.view();
        for node in 0..codes.len().div_ceil(LEVELS[0]) {
            descend(w, &mut s, 0, start / LEVELS[0] + node, all, start, codes, dists);
        }
        *stat = s.scored;
        SETS.with(|c| c.replace(s.sets));
        Ok(())
    })?;
    let (mut out_codes, mut out_dists) = (vec![0u32; n], vec![0f32; n]);
    for ((&i, &c), &v) in f.order.iter().zip(&codes).zip(&dists) {
        out_codes[i as usize] = c;
        out_dists[i as usize] = v;
    }
    Ok((out_codes, out_dists, stats.iter().sum(), codes))
}

/// Node `node` of level `lvl`: its candidates filtered from `parent`, then its children (or its
/// points, at a leaf). `codes`/`dists` are the job's, whose first point is `start`.
fn descend(w: &Walk, s: &mut Scratch, lvl: usize, node: usize, parent: View, start: usize, codes: &mut [u32], dists: &mut [f32]) {
    let (d, f) = (w.cb.d, w.f);
    let b = &f.boxes[lvl];
    let (m2, half) = (&b.m2[node * d..(node + 1) * d], &b.half[node * d..(node + 1) * d]);
    // The pivot: the last code of the node's representative point, else the candidate nearest
    // the centre (any centroid keeps the filter exact; a near one makes it prune).
    let zi = match f.codes.get(b.rep[node] as usize) {
        Some(&c) if (c as usize) < w.cb.k => c as usize,
        _ => {
            let mut at = 0;
            near(w.level, parent, d, m2, &mut at);
            parent.idx.map_or(at, |i| i[at] as usize)
        }
    };
    let z = w.cb.row(zi);
    let dz = z.iter().zip(m2).fold(w.cb.norms[zi], |s, (&a, &b)| a.mul_add(b, s));
    let mut set = std::mem::take(&mut s.sets[lvl]);
    filter(w.level, parent, d, m2, z, dz, half, margin(d, b.reach[node], w.cmax), &mut set);
    let size = LEVELS[lvl];
    let (p0, p1) = (node * size, ((node + 1) * size).min(f.order.len()));
    if lvl + 1 < LEVELS.len() {
        for child in p0.div_ceil(LEVELS[lvl + 1])..p1.div_ceil(LEVELS[lvl + 1]) {
            descend(w, s, lvl + 1, child, set.view(), start, codes, dists);
        }
    } else {
        leaf(w, s, &mut set, p0, p1, &mut codes[p0 - start..p1 - start], &mut dists[p0 - start..p1 - start]);
    }
    s.sets[lvl] = set;
}

/// Scores the points `p0..p1` (tree order) against the leaf's candidates `set`.
fn leaf(w: &Walk, s: &mut Scratch, set: &mut Set, p0: usize, p1: usize, codes: &mut [u32], dists: &mut [f32]) {
    let (d, f) = (w.cb.d, w.f);
    let m = p1 - p0;
    let rows: &[f32] = if m == LEAF {
        &f.xs[p0 * d..p1 * d]
    } else {
        // A short last leaf: its rows padded with copies of its first.
        for r in 0..LEAF {
            let q = p0 + if r < m { r } else { 0 };
            s.rows[r * d..(r + 1) * d].copy_from_slice(&f.xs[q * d..(q + 1) * d]);
        }
        &s.rows
    };
    let (mut best, mut code) = ([0f32; LEAF], [0u32; LEAF]);
    score(w.level, rows, d, set.view(), &mut best, &mut code);
    for r in 0..m {
        codes[r] = set.idx[code[r] as usize];
        // `assign::reported` for L2, with the same `dot(x, x)`.
        dists[r] = (best[r] + f.xn[p0 + r]).max(0.0);
    }
    s.scored += (m * set.len) as u64;
}
