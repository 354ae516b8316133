//! Asymmetric distance computation (ADC) scan for product quantization: the `k` smallest
//! table-lookup distances of every query against a database of PQ codes, without ever holding the
//! full `nq x n` distance matrix.
//!
//! Inputs: distance tables `(nq, m, ksub)` float32 (entry `[q][j][c]` = distance of query `q`'s
//! sub-vector `j` to codeword `c`) and codes `(n, m)`, `u8` (`ksub <= 256`) or `u16`
//! (`ksub <= 65536`).
//!
//! **Sum order** (the contract the NumPy oracle reproduces): the distance of database vector `i`
//! to query `q` is `((0.0 + T[q][0][c_i0]) + T[q][1][c_i1]) + ... + T[q][m-1][c_i(m-1)]`, in
//! float32, sub-spaces in order.
//!
//! **Ordering**: results are sorted by `(distance, index)`; equal distances go to the lower
//! index. That is a strict total order on the database (tables are checked finite and small
//! enough that no sum overflows), so the top-`k` set is unique: how the work is split (query
//! chunks, database splits, threads) cannot change the result.
//!
//! Speed: the u8 path pads each query's tables to `[f32; 256]` rows so a byte code indexes them
//! without bounds checks, scans the database in blocks of [`BLOCK`] vectors four at a time
//! (independent sums for the out-of-order core), and keeps a bounded max-heap whose top is the
//! admission threshold. Several queries share each block while it is in L1.

use crate::error::{invalid, Error, Result};
use crate::parallel;

/// Database vectors per scanned block (their distances live in a small stack-like buffer).
const BLOCK: usize = 1024;
/// Queries per job: they share every code block while it is hot in cache.
const QUERY_CHUNK: usize = 8;
/// Smallest database split when few queries leave threads idle.
const MIN_SPLIT: usize = 16384;

/// The codes of the database, row-major `(n, m)`.
#[derive(Clone, Copy, Debug)]
pub enum Codes<'a> {
    U8(&'a [u8]),
    U16(&'a [u16]),
}

impl Codes<'_> {
    fn len(&self) -> usize {
        match self {
            Codes::U8(c) => c.len(),
            Codes::U16(c) => c.len(),
        }
    }

    fn max(&self) -> usize {
        match self {
            Codes::U8(c) => c.iter().copied().max().unwrap_or(0) as usize,
            Codes::U16(c) => c.iter().copied().max().unwrap_or(0) as usize,
        }
    }
}

/// One job's candidates: per query of its chunk, `(distance, index)` pairs.
type Candidates = Vec<Vec<(f32, i64)>>;

/// Top-`k` results, row-major `(nq, k)`.
#[derive(Debug, PartialEq)]
pub struct Neighbors {
    pub distances: Vec<f32>,
    pub indices: Vec<i64>,
}

/// Checks shapes, code range and table magnitudes; returns `n`.
fn validate(tables: &[f32], nq: usize, m: usize, ksub: usize, codes: &Codes<'_>, k: usize) -> Result<usize> {
    let limit = match codes {
        Codes::U8(_) => 256,
        Codes::U16(_) => 65536,
    };
    if m == 0 || ksub == 0 || ksub > limit {
        return Err(invalid!("need m >= 1 and 1 <= ksub <= {limit} for these codes, got m={m}, ksub={ksub}"));
    }
    let want = nq.checked_mul(m).and_then(|v| v.checked_mul(ksub));
    if want != Some(tables.len()) {
        return Err(Error::Shape(format!("tables hold {} values, expected nq*m*ksub = {nq}*{m}*{ksub}", tables.len())));
    }
    if !codes.len().is_multiple_of(m) {
        return Err(Error::Shape(format!("codes hold {} values, not a multiple of m={m}", codes.len())));
    }
    let n = codes.len() / m;
    if k == 0 || k > n {
        return Err(invalid!("k must be between 1 and the number of database vectors ({n}), got {k}"));
    }
    if n > 0 && codes.max() >= ksub {
        return Err(invalid!("codes must lie in [0, {ksub}), got a code {}", codes.max()));
    }
    // |each entry| <= f32::MAX / (2m) keeps every partial sum finite.
    let bound = f32::MAX / (2.0 * m as f32);
    if let Some(index) = tables.iter().position(|v| !v.is_finite()) {
        return Err(Error::NonFinite { index });
    }
    if tables.iter().any(|v| v.abs() > bound) {
        return Err(invalid!("distance tables hold values above {bound:e} in magnitude: their sums could overflow"));
    }
    Ok(n)
}

/// The `k` best `(distance, index)` seen so far: a max-heap, largest at the root.
struct TopK {
    k: usize,
    d: Vec<f32>,
    i: Vec<i64>,
}

impl TopK {
    fn new(k: usize) -> Self {
        TopK { k, d: Vec::with_capacity(k), i: Vec::with_capacity(k) }
    }

    /// Admission threshold: a candidate must be strictly smaller (later indices lose ties).
    #[inline]
    fn threshold(&self) -> f32 {
        if self.d.len() < self.k {
            f32::INFINITY
        } else {
            self.d[0]
        }
    }

    fn greater(&self, a: usize, b: usize) -> bool {
        (self.d[a], self.i[a]) > (self.d[b], self.i[b])
    }

    /// Adds a candidate whose index is above every index already pushed and whose distance is
    /// below [`Self::threshold`] (or the heap is not full): the new pair beats the root.
    fn push(&mut self, d: f32, i: i64) {
        if self.d.len() < self.k {
            self.d.push(d);
            self.i.push(i);
            let mut c = self.d.len() - 1;
            while c > 0 && self.greater(c, (c - 1) / 2) {
                self.d.swap(c, (c - 1) / 2);
                self.i.swap(c, (c - 1) / 2);
                c = (c - 1) / 2;
            }
            return;
        }
        self.d[0] = d;
        self.i[0] = i;
        let (mut p, n) = (0, self.d.len());
        loop {
            let (l, r) = (2 * p + 1, 2 * p + 2);
            let mut big = p;
            if l < n && self.greater(l, big) {
                big = l;
            }
            if r < n && self.greater(r, big) {
                big = r;
            }
            if big == p {
                break;
            }
            self.d.swap(p, big);
            self.i.swap(p, big);
            p = big;
        }
    }

    fn offer_block(&mut self, dist: &[f32], base: usize) {
        let mut thr = self.threshold();
        for (o, &d) in dist.iter().enumerate() {
            if d < thr {
                self.push(d, (base + o) as i64);
                thr = self.threshold();
            }
        }
    }

    fn into_pairs(self) -> Vec<(f32, i64)> {
        self.d.into_iter().zip(self.i).collect()
    }
}

/// Distances of `codes` (rows of `m` bytes) with one query's padded tables `tab` (`m` rows).
fn scan_u8(tab: &[[f32; 256]], codes: &[u8], out: &mut [f32]) {
    let m = tab.len();
    let mut rows = codes.chunks_exact(4 * m);
    let mut outs = out.chunks_exact_mut(4);
    for (c, o) in (&mut rows).zip(&mut outs) {
        let (c0, rest) = c.split_at(m);
        let (c1, rest) = rest.split_at(m);
        let (c2, c3) = rest.split_at(m);
        let mut a = [0f32; 4];
        for ((((t, &x0), &x1), &x2), &x3) in tab.iter().zip(c0).zip(c1).zip(c2).zip(c3) {
            a[0] += t[x0 as usize];
            a[1] += t[x1 as usize];
            a[2] += t[x2 as usize];
            a[3] += t[x3 as usize];
        }
        o.copy_from_slice(&a);
    }
    for (c, o) in rows.remainder().chunks_exact(m).zip(outs.into_remainder()) {
        *o = tab.iter().zip(c).fold(0f32, |acc, (t, &x)| acc + t[x as usize]);
    }
}

/// Distances of `codes` (rows of `m` u16 codes) with one query's tables (`m * ksub`).
fn scan_u16(tab: &[f32], ksub: usize, codes: &[u16], out: &mut [f32]) {
    let m = tab.len() / ksub;
    for (c, o) in codes.chunks_exact(m).zip(out.iter_mut()) {
        *o = tab.chunks_exact(ksub).zip(c).fold(0f32, |acc, (t, &x)| acc + t[x as usize]);
    }
}

/// One query's tables in the layout its scan wants.
enum Prepared {
    U8(Vec<[f32; 256]>),
    U16(Vec<f32>),
}

fn prepare(tables: &[f32], m: usize, ksub: usize, codes: &Codes<'_>) -> Prepared {
    match codes {
        Codes::U8(_) => Prepared::U8(
            tables
                .chunks_exact(ksub)
                .map(|row| {
                    let mut t = [0f32; 256];
                    t[..ksub].copy_from_slice(row);
                    t
                })
                .collect(),
        ),
        Codes::U16(_) => Prepared::U16(tables[..m * ksub].to_vec()),
    }
}

/// Top-`k` of queries `qs` (their tables, `m * ksub` each) over database rows `lo..hi`.
fn scan_range(tables: &[f32], m: usize, ksub: usize, codes: &Codes<'_>, k: usize, lo: usize, hi: usize) -> Candidates {
    let per = m * ksub;
    let preps: Vec<Prepared> = tables.chunks_exact(per).map(|t| prepare(t, m, ksub, codes)).collect();
    let mut heaps: Vec<TopK> = preps.iter().map(|_| TopK::new(k.min(hi - lo))).collect();
    let mut dist = vec![0f32; BLOCK];
    let mut s = lo;
    while s < hi {
        let e = (s + BLOCK).min(hi);
        let out = &mut dist[..e - s];
        for (prep, heap) in preps.iter().zip(&mut heaps) {
            match (prep, codes) {
                (Prepared::U8(tab), Codes::U8(c)) => scan_u8(tab, &c[s * m..e * m], out),
                (Prepared::U16(tab), Codes::U16(c)) => scan_u16(tab, ksub, &c[s * m..e * m], out),
                _ => unreachable!("tables are prepared for the code type"),
            }
            heap.offer_block(out, s);
        }
        s = e;
    }
    heaps.into_iter().map(TopK::into_pairs).collect()
}

/// How many database splits: one, unless there are fewer query chunks than twice the threads.
fn splits(nq: usize, n: usize) -> usize {
    let chunks = nq.div_ceil(QUERY_CHUNK);
    let want = (2 * parallel::num_threads()).div_ceil(chunks.max(1));
    want.min(n / MIN_SPLIT).max(1)
}

/// The `k` nearest database vectors of every query by ADC (see the module doc for the sum order
/// and tie rule). `tables` is `(nq, m, ksub)`, `codes` `(n, m)` row-major.
pub fn adc_search(tables: &[f32], nq: usize, m: usize, ksub: usize, codes: Codes<'_>, k: usize) -> Result<Neighbors> {
    let n = validate(tables, nq, m, ksub, &codes, k)?;
    let ns = splits(nq, n);
    let bounds: Vec<usize> = (0..=ns).map(|s| s * n / ns).collect();
    let per = m * ksub;
    // One slot per (query chunk, split); every job fills its own.
    let mut slots: Vec<Candidates> = (0..nq.div_ceil(QUERY_CHUNK) * ns).map(|_| Vec::new()).collect();
    let jobs: Vec<(usize, &mut Candidates)> = slots.iter_mut().enumerate().collect();
    parallel::try_for_each(jobs, |(j, slot)| {
        let (qc, sp) = (j / ns, j % ns);
        let q1 = ((qc + 1) * QUERY_CHUNK).min(nq);
        let tabs = &tables[qc * QUERY_CHUNK * per..q1 * per];
        *slot = scan_range(tabs, m, ksub, &codes, k, bounds[sp], bounds[sp + 1]);
        Ok(())
    })?;
    let mut out = Neighbors { distances: Vec::with_capacity(nq * k), indices: Vec::with_capacity(nq * k) };
    for q in 0..nq {
        let (qc, ql) = (q / QUERY_CHUNK, q % QUERY_CHUNK);
        let mut all: Vec<(f32, i64)> = (0..ns).flat_map(|sp| slots[qc * ns + sp][ql].iter().copied()).collect();
        all.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        for &(d, i) in &all[..k] {
            out.distances.push(d);
            out.indices.push(i);
        }
    }
    Ok(out)
}

/// Scalar oracle: every distance in the documented order, then a full sort. Tests only.
#[cfg(test)]
pub fn adc_search_naive(tables: &[f32], nq: usize, m: usize, ksub: usize, codes: &[usize], k: usize) -> Neighbors {
    let n = codes.len() / m;
    let mut out = Neighbors { distances: vec![], indices: vec![] };
    for q in 0..nq {
        let t = &tables[q * m * ksub..(q + 1) * m * ksub];
        let mut all: Vec<(f32, i64)> = (0..n)
            .map(|i| {
                let mut acc = 0f32;
                for j in 0..m {
                    acc += t[j * ksub + codes[i * m + j]];
                }
                (acc, i as i64)
            })
            .collect();
        all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        for &(d, i) in &all[..k] {
            out.distances.push(d);
            out.indices.push(i);
        }
    }
    out
}

#[cfg(test)]
#[path = "adc_tests.rs"]
mod tests;
