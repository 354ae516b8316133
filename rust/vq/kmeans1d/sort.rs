//! Loading one row: the values sorted by an LSD radix sort on order-preserving integer keys,
//! equal values merged, and the prefix sums the DP reads.
//!
//! Why a radix sort: sorting `(f32, f32)` pairs with a float comparator cost about as much as
//! the whole fast fit; three counting passes over integer items are several times cheaper for
//! rows of a few thousand values. The fit only needs the sorted values (codes come from
//! thresholds in the row's own order, `assign.rs`), so an unweighted row sorts bare `u32` keys
//! and a weighted row `u64` items carrying the weight's bits in the low half. Only the rare
//! fallback of `assign.rs` sorts `key << 32 | position`.

/// Rows at most this long are sorted by `sort_unstable` (histograms would dominate).
const SMALL: usize = 256;

/// Bits a radix pass sorts on (shift within the 32-bit key, width): 11, 11 and 10 (four passes
/// of 8 bits measured slower on rows of 4096).
const RADIX: [(u32, usize); 3] = [(0, 11), (11, 11), (22, 10)];

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

/// An item the radix sort orders by a 32-bit key.
pub trait Item: Copy + Default + Ord {
    fn key(self) -> u32;
}

impl Item for u32 {
    #[inline(always)]
    fn key(self) -> u32 {
        self
    }
}

/// `key << 32 | payload`, ordered by the key (among equal keys: the input order for a radix
/// sort, the payload's for a short row).
impl Item for u64 {
    #[inline(always)]
    fn key(self) -> u32 {
        (self >> 32) as u32
    }
}

/// Buffers reused for every row of a chunk.
#[derive(Default)]
pub struct Scratch {
    /// The row's sorted keys (unweighted rows).
    pub keys: Vec<u32>,
    /// The row's sorted `key << 32 | weight bits` (weighted rows) or `key << 32 | position`
    /// ([`Scratch::sort_positions`]).
    pub items: Vec<u64>,
    tmp32: Vec<u32>,
    tmp64: Vec<u64>,
    hist: Vec<u32>,
    /// Distinct sorted values of positive weight, shifted by `shift`, and their summed weights.
    pub u: Vec<f64>,
    pub c: Vec<f64>,
    pub shift: f64,
    /// Prefix sums (length `m + 1`) of `c`, `c*u`, `c*u^2`.
    pub pw: Vec<f64>,
    pub ps: Vec<f64>,
    pub pq: Vec<f64>,
    /// Whether some weight `c` is below `4 m eps` times the row's weight: then a run's weight,
    /// a difference of prefix sums, can be lost to rounding, and the DP caps run costs at zero
    /// (`dp.rs`, `cost`).
    pub tiny: bool,
    /// Run boundaries `b[0] = 0 < b[1] < ... < b[kk] = m`.
    pub bounds: Vec<usize>,
    pub cent: Vec<f64>,
    /// The row's smallest and largest value (zero-weight values included).
    pub lo: f32,
    pub hi: f32,
    /// The code thresholds of the row's codebook (`codes.rs`).
    pub thr: Vec<f32>,
}

/// Sorts `items` by key: `sort_unstable` for short rows (items are distinct or equal as a
/// whole, so the order is the stable one), else a stable LSD radix sort (`tmp`, `hist`: scratch).
#[inline(always)]
pub fn sort_items<T: Item>(items: &mut Vec<T>, tmp: &mut Vec<T>, hist: &mut Vec<u32>) {
    let n = items.len();
    if n <= SMALL {
        items.sort_unstable();
        return;
    }
    hist.clear();
    hist.resize(3 << 11, 0);
    for &v in items.iter() {
        let k = v.key() as usize;
        hist[k & 0x7ff] += 1;
        hist[(1 << 11) + (k >> 11 & 0x7ff)] += 1;
        hist[(2 << 11) + (k >> 22)] += 1;
    }
    tmp.resize(n, T::default()); // every slot is written by a pass
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
        for &v in items.iter() {
            let d = (v.key() >> shift) as usize & ((1 << bits) - 1);
            tmp[h[d] as usize] = v;
            h[d] += 1;
        }
        std::mem::swap(items, tmp);
    }
}

impl Scratch {
    /// Sorts the row, merges equal values of positive weight (all of them, with unit weights,
    /// when `w` is `None` or all zero) and builds the prefix sums. Returns `m >= 1`.
    #[inline(always)]
    pub fn load(&mut self, x: &[f32], w: Option<&[f32]>) -> usize {
        match w.filter(|w| w.iter().any(|&v| v > 0.0)) {
            None => {
                self.keys.clear();
                // `+ 0.0` turns -0.0 into +0.0 so the two merge.
                self.keys.extend(x.iter().map(|&v| key(v + 0.0)));
                sort_items(&mut self.keys, &mut self.tmp32, &mut self.hist);
                (self.lo, self.hi) = (unkey(self.keys[0]), unkey(self.keys[x.len() - 1]));
                self.merge_unit();
            }
            Some(w) => {
                self.items.clear();
                self.items.extend(x.iter().zip(w).map(|(&v, &wi)| (key(v + 0.0) as u64) << 32 | wi.to_bits() as u64));
                self.u.clear();
                self.c.clear();
                sort_items(&mut self.items, &mut self.tmp64, &mut self.hist);
                (self.lo, self.hi) = (unkey(self.items[0].key()), unkey(self.items[x.len() - 1].key()));
                self.merge_weighted();
            }
        }
        self.prefix_sums()
    }

    /// Sorts `key << 32 | position` of the row into `items` (for `assign::assign_sorted`).
    pub fn sort_positions(&mut self, x: &[f32]) {
        self.items.clear();
        self.items.extend(x.iter().enumerate().map(|(i, &v)| (key(v + 0.0) as u64) << 32 | i as u64));
        sort_items(&mut self.items, &mut self.tmp64, &mut self.hist);
    }

    /// Distinct values of the sorted `keys` and their counts. Branch-free: every key is written
    /// at the next free slot, which only advances on a new value; the counts are the distances
    /// between the first positions of consecutive values (kept in `c` as they come).
    #[inline(always)]
    fn merge_unit(&mut self) {
        let n = self.keys.len();
        // Every slot up to the last value is written: only growing the buffers fills them.
        self.u.resize(n + 1, 0.0);
        self.c.resize(n + 1, 0.0);
        let (u, c) = (&mut self.u[..=n], &mut self.c[..=n]);
        let mut m = 0;
        let mut prev = !self.keys[0]; // differs from the first key: it is new
        for (i, &k) in self.keys.iter().enumerate() {
            let new = (k != prev) as usize;
            u[m] = unkey(k) as f64;
            c[m] = i as f64;
            m += new;
            prev = k;
        }
        // `c[t]`: the first position of value `t`; the slot after the last value may hold a
        // trailing duplicate's position and becomes the end of the row.
        c[m] = n as f64;
        for t in 0..m {
            c[t] = c[t + 1] - c[t];
        }
        self.u.truncate(m);
        self.c.truncate(m);
    }

    /// Distinct values of positive weight of the sorted `items` and their summed weights
    /// (at least one weight is positive).
    #[inline(always)]
    fn merge_weighted(&mut self) {
        let mut last = u32::MAX as u64 + 1; // above every 32-bit key: the first value is new
        for &kv in &self.items {
            let wi = f32::from_bits(kv as u32);
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
            p.resize(m + 1, 0.0); // every entry is written below
            p[0] = 0.0;
        }
        let (mut sw, mut ss, mut sq, mut cmin) = (0.0f64, 0.0f64, 0.0f64, f64::INFINITY);
        for t in 0..m {
            let (ui, ci) = (self.u[t], self.c[t]);
            cmin = if ci < cmin { ci } else { cmin };
            sw += ci;
            ss += ci * ui;
            sq += ci * ui * ui;
            self.pw[t + 1] = sw;
            self.ps[t + 1] = ss;
            self.pq[t + 1] = sq;
        }
        // A prefix sum of `t` positive terms is off by at most `t * eps / 2` times itself, so a
        // difference of two by `m * eps * sw`: run weights of at least four times that keep
        // three quarters of their value.
        self.tiny = cmin < 4.0 * m as f64 * f64::EPSILON * sw;
        m
    }
}
