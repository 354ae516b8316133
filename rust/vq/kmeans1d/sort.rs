//! Loading one row: the values sorted (with their original positions) by an LSD radix sort on
//! order-preserving integer keys, equal values merged, and the prefix sums the DP reads.
//!
//! Why a radix sort: sorting `(f32, f32)` pairs with a float comparator cost about as much as
//! the whole fast fit; three counting passes over `u64` items (key in the high half, position
//! in the low half, so the sort is stable and the position comes along) are several times
//! cheaper for rows of a few thousand values.

/// Rows at most this long are sorted by `sort_unstable` (histograms would dominate).
const SMALL: usize = 256;

/// Bits a radix pass sorts on: 11, 11 and 10 cover the 32-bit key.
const RADIX: [(u32, usize); 3] = [(32, 11), (43, 11), (54, 10)];

/// The order-preserving integer of a non-NaN `f32` (-0.0 must be turned into +0.0 before).
#[inline(always)]
pub fn key(v: f32) -> u32 {
    let b = v.to_bits();
    if b >> 31 == 1 {
        !b
    } else {
        b | 0x8000_0000
    }
}

/// The inverse of [`key`].
#[inline(always)]
pub fn unkey(k: u32) -> f32 {
    f32::from_bits(if k >> 31 == 1 { k & 0x7fff_ffff } else { !k })
}

/// Buffers reused for every row of a chunk.
#[derive(Default)]
pub struct Scratch {
    /// `key(x) << 32 | position` for every element, ascending after [`Scratch::load`].
    pub keys: Vec<u64>,
    tmp: Vec<u64>,
    hist: Vec<u32>,
    /// Distinct sorted values of positive weight, shifted by `shift`, and their summed weights.
    pub u: Vec<f64>,
    pub c: Vec<f64>,
    pub shift: f64,
    /// Prefix sums (length `m + 1`) of `c`, `c*u`, `c*u^2`.
    pub pw: Vec<f64>,
    pub ps: Vec<f64>,
    pub pq: Vec<f64>,
    /// Run boundaries `b[0] = 0 < b[1] < ... < b[kk] = m`.
    pub bounds: Vec<usize>,
    pub cent: Vec<f64>,
}

/// Stable LSD radix sort of `keys` by their high 32 bits (`tmp`, `hist`: scratch).
#[inline(always)]
fn radix_sort(keys: &mut Vec<u64>, tmp: &mut Vec<u64>, hist: &mut Vec<u32>) {
    let n = keys.len();
    hist.clear();
    hist.resize(3 << 11, 0);
    for &v in keys.iter() {
        for (p, &(shift, bits)) in RADIX.iter().enumerate() {
            hist[(p << 11) + ((v >> shift) as usize & ((1 << bits) - 1))] += 1;
        }
    }
    tmp.clear();
    tmp.resize(n, 0);
    for (p, &(shift, bits)) in RADIX.iter().enumerate() {
        let h = &mut hist[p << 11..(p << 11) + (1 << bits)];
        if h.iter().any(|&c| c as usize == n) {
            continue; // every key has the same digit: nothing to move
        }
        let mut sum = 0u32;
        for c in h.iter_mut() {
            let t = *c;
            *c = sum;
            sum += t;
        }
        for &v in keys.iter() {
            let d = (v >> shift) as usize & ((1 << bits) - 1);
            tmp[h[d] as usize] = v;
            h[d] += 1;
        }
        std::mem::swap(keys, tmp);
    }
}

impl Scratch {
    /// Sorts the row (`keys`), merges equal values of positive weight (all of them, with unit
    /// weights, when every weight is zero) and builds the prefix sums. Returns `m >= 1`.
    #[inline(always)]
    pub fn load(&mut self, x: &[f32], w: &[f32]) -> usize {
        let all_zero = w.iter().all(|&v| v == 0.0);
        self.keys.clear();
        // `+ 0.0` turns -0.0 into +0.0 so the two merge.
        self.keys.extend(x.iter().enumerate().map(|(i, &v)| (key(v + 0.0) as u64) << 32 | i as u64));
        if self.keys.len() <= SMALL {
            self.keys.sort_unstable();
        } else {
            radix_sort(&mut self.keys, &mut self.tmp, &mut self.hist);
        }
        self.merge(w, all_zero);
        self.prefix_sums()
    }

    #[inline(always)]
    fn merge(&mut self, w: &[f32], all_zero: bool) {
        self.u.clear();
        self.c.clear();
        let mut last = u64::MAX; // above every 32-bit key: the first value is new
        for &kv in &self.keys {
            let wi = if all_zero { 1.0 } else { w[kv as u32 as usize] };
            if wi > 0.0 {
                if kv >> 32 == last {
                    *self.c.last_mut().expect("u and c grow together") += wi as f64;
                } else {
                    last = kv >> 32;
                    self.u.push(unkey(last as u32) as f64);
                    self.c.push(wi as f64);
                }
            }
        }
    }

    #[inline(always)]
    fn prefix_sums(&mut self) -> usize {
        let m = self.u.len();
        self.shift = self.u[m / 2];
        let shift = self.shift;
        self.u.iter_mut().for_each(|v| *v -= shift);
        for p in [&mut self.pw, &mut self.ps, &mut self.pq] {
            p.clear();
            p.push(0.0);
        }
        let (mut sw, mut ss, mut sq) = (0.0f64, 0.0f64, 0.0f64);
        for (&ui, &ci) in self.u.iter().zip(&self.c) {
            sw += ci;
            ss += ci * ui;
            sq += ci * ui * ui;
            self.pw.push(sw);
            self.ps.push(ss);
            self.pq.push(sq);
        }
        m
    }
}
