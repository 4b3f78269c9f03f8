//! The in-process vector index: hnsw_rs over L2-normalised vectors, with an exact scan for
//! reference. Derived data: always rebuilt from the store's vectors, never the truth.

use hnsw_rs::prelude::{Distance, Hnsw};

/// Production parameters, shared by the index, its recall test and the benchmark.
pub const MAX_CONNECTIONS: usize = 16;
pub const EF_CONSTRUCTION: usize = 200;
pub const EF_SEARCH: usize = 64;
const MAX_LAYERS: usize = 16;

/// One search result: the chunk id and its cosine similarity to the query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    pub chunk_id: u64,
    pub score: f32,
}

/// Cosine distance for unit vectors. hnsw_rs's own `DistDot` asserts `dot <= 1`, which
/// rounding can break for a vector against itself, so this one clamps instead.
#[derive(Default, Clone, Copy)]
pub struct UnitCosine;

impl Distance<f32> for UnitCosine {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        (1.0 - dot(a, b)).max(0.0)
    }
}

pub struct VectorIndex {
    hnsw: Hnsw<'static, f32, UnitCosine>,
    chunk_ids: Vec<u64>,
}

impl VectorIndex {
    /// Builds the index from (chunk id, vector) pairs, inserting in parallel.
    pub fn build(entries: &[(u64, Vec<f32>)]) -> VectorIndex {
        let hnsw = Hnsw::new(
            MAX_CONNECTIONS,
            entries.len().max(1),
            MAX_LAYERS,
            EF_CONSTRUCTION,
            UnitCosine,
        );
        let data: Vec<(&[f32], usize)> = entries
            .iter()
            .enumerate()
            .map(|(i, (_, v))| (v.as_slice(), i))
            .collect();
        hnsw.parallel_insert_slice(&data);
        let mut hnsw = hnsw;
        hnsw.set_searching_mode(true);
        VectorIndex {
            hnsw,
            chunk_ids: entries.iter().map(|(id, _)| *id).collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.chunk_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.chunk_ids.is_empty()
    }

    /// The `k` nearest chunks to `query`, best first.
    pub fn search(&self, query: &[f32], k: usize) -> Vec<Hit> {
        if self.chunk_ids.is_empty() || k == 0 {
            return Vec::new();
        }
        let ef = EF_SEARCH.max(k * 2);
        let mut hits: Vec<Hit> = self
            .hnsw
            .search(query, k, ef)
            .into_iter()
            .map(|n| Hit {
                chunk_id: self.chunk_ids[n.d_id],
                score: 1.0 - n.distance,
            })
            .collect();
        hits.sort_by(|a, b| b.score.total_cmp(&a.score));
        hits
    }
}

/// Exact top-k by scanning every vector: the reference the index is measured against.
pub fn exact_search(entries: &[(u64, Vec<f32>)], query: &[f32], k: usize) -> Vec<Hit> {
    let mut hits: Vec<Hit> = entries
        .iter()
        .map(|(id, v)| Hit {
            chunk_id: *id,
            score: dot(query, v),
        })
        .collect();
    let k = k.min(hits.len());
    if k == 0 {
        return Vec::new();
    }
    hits.select_nth_unstable_by(k - 1, |a, b| b.score.total_cmp(&a.score));
    hits.truncate(k);
    hits.sort_by(|a, b| b.score.total_cmp(&a.score));
    hits
}

/// Dot product with eight independent accumulators: a plain `sum()` is one serial chain of
/// additions that the compiler may not reorder, so it cannot use SIMD lanes.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; 8];
    let chunks = n / 8 * 8;
    for (ca, cb) in a[..chunks].chunks_exact(8).zip(b[..chunks].chunks_exact(8)) {
        for lane in 0..8 {
            acc[lane] += ca[lane] * cb[lane];
        }
    }
    let tail: f32 = a[chunks..]
        .iter()
        .zip(&b[chunks..])
        .map(|(x, y)| x * y)
        .sum();
    acc.iter().sum::<f32>() + tail
}

/// Fraction of the exact top-k that the approximate results found.
pub fn recall_at_k(exact: &[Hit], approx: &[Hit]) -> f64 {
    if exact.is_empty() {
        return 1.0;
    }
    let found = exact
        .iter()
        .filter(|e| approx.iter().any(|a| a.chunk_id == e.chunk_id))
        .count();
    found as f64 / exact.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: Vec<f32>) -> Vec<f32> {
        let norm = dot(&v, &v).sqrt();
        v.into_iter().map(|x| x / norm).collect()
    }

    #[test]
    fn search_finds_the_vector_itself_first() {
        let mut rng = fastrand::Rng::with_seed(3);
        let entries: Vec<(u64, Vec<f32>)> = (0..500)
            .map(|i| {
                (
                    i as u64 + 10,
                    unit((0..32).map(|_| rng.f32() - 0.5).collect()),
                )
            })
            .collect();
        let index = VectorIndex::build(&entries);
        for (id, v) in entries.iter().step_by(37) {
            let hits = index.search(v, 5);
            assert_eq!(hits[0].chunk_id, *id);
            assert!((hits[0].score - 1.0).abs() < 1e-4);
        }
    }

    #[test]
    fn empty_index_returns_nothing() {
        let index = VectorIndex::build(&[]);
        assert!(index.search(&[1.0, 0.0], 3).is_empty());
    }
}
