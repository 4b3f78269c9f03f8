//! The in-process vector index: hnsw_rs over L2-normalised vectors, with an exact scan for
//! reference. Derived data: always rebuilt from the store's vectors, never the truth.
//!
//! hnsw_rs's construction can leave a point that no graph walk reaches, at any `ef`
//! (hnswlib-rs issues 32 and 37: more often under parallel insertion). A chunk that dense
//! search can never return is a silent hole in answers, so every build probes each point
//! with its own vector and keeps the ones the walk misses ("stranded") beside the graph,
//! scanned exactly on every query: each stored vector is findable (a point with four or
//! more exact duplicates counts as reached when they are, so one of them is).

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
    /// (chunk id, vector) of the points a search for their own vector does not reach.
    stranded: Vec<(u64, Vec<f32>)>,
    /// How long the build spent probing for them (the bench reports it).
    probe_time: std::time::Duration,
}

/// How many results a probe asks for: a point tied with duplicates of itself counts as
/// reached when the ties fill the probe.
const PROBE_K: usize = 4;
/// The probe's beam: narrower than a query's (a quarter of the cost), so it may miss a
/// point a query's wider beam reaches, which is then scanned needlessly: a dot product per
/// query (at 100k vectors, 59 such points against 2 at the query's beam; the probe took
/// 10% of the build instead of 24%).
const PROBE_EF: usize = 16;

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
        let probing = std::time::Instant::now();
        let stranded: Vec<(u64, Vec<f32>)> = stranded_points(&hnsw, entries)
            .into_iter()
            .map(|i| entries[i].clone())
            .collect();
        if stranded.len() * 100 > entries.len() {
            tracing::warn!(
                "{} of {} vectors are out of the graph's reach: each query scans them",
                stranded.len(),
                entries.len()
            );
        }
        VectorIndex {
            hnsw,
            chunk_ids: entries.iter().map(|(id, _)| *id).collect(),
            stranded,
            probe_time: probing.elapsed(),
        }
    }

    /// How many points only the exact side scan finds.
    pub fn stranded(&self) -> usize {
        self.stranded.len()
    }

    /// How long the build spent finding them.
    pub fn probe_time(&self) -> std::time::Duration {
        self.probe_time
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
        for (chunk_id, v) in &self.stranded {
            if !hits.iter().any(|h| h.chunk_id == *chunk_id) {
                let score = dot(query, v);
                hits.push(Hit {
                    chunk_id: *chunk_id,
                    score,
                });
            }
        }
        hits.sort_by(|a, b| b.score.total_cmp(&a.score));
        hits.truncate(k);
        hits
    }
}

/// Positions of the points that a search for their own vector misses, probed on every core.
fn stranded_points(
    hnsw: &Hnsw<'static, f32, UnitCosine>,
    entries: &[(u64, Vec<f32>)],
) -> Vec<usize> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_thread = entries.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let probes: Vec<_> = (0..entries.len())
            .step_by(per_thread)
            .map(|start| {
                let end = (start + per_thread).min(entries.len());
                scope.spawn(move || {
                    (start..end)
                        .filter(|&i| !reaches_itself(hnsw, &entries[i].1, i))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        probes
            .into_iter()
            .flat_map(|p| p.join().expect("probe thread"))
            .collect()
    })
}

/// Whether the walk from the entry point finds point `i` from its own vector, or finds
/// only points at least as close (exact duplicates of it).
fn reaches_itself(hnsw: &Hnsw<'static, f32, UnitCosine>, v: &[f32], i: usize) -> bool {
    let found = hnsw.search(v, PROBE_K, PROBE_EF);
    found.iter().any(|n| n.d_id == i)
        || (found.len() == PROBE_K && found.iter().all(|n| n.distance <= 1e-6))
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
        // Several builds, since which point (if any) the graph strands varies between them.
        for _ in 0..8 {
            let index = VectorIndex::build(&entries);
            for (id, v) in &entries {
                let hits = index.search(v, 5);
                assert_eq!(hits[0].chunk_id, *id, "{} stranded", index.stranded());
                // A probe that finds nothing would pass the line above by scanning all.
                assert!(
                    index.stranded() <= entries.len() / 50,
                    "{}",
                    index.stranded()
                );
                assert!((hits[0].score - 1.0).abs() < 1e-4);
                assert_eq!(hits.len(), 5);
            }
        }
    }

    #[test]
    fn a_stranded_point_is_found_by_the_exact_scan_once() {
        let entries: Vec<(u64, Vec<f32>)> = (0..50u64)
            .map(|i| (i, unit(vec![1.0, i as f32 / 50.0, 0.3])))
            .collect();
        let mut index = VectorIndex::build(&entries);
        // Strand a point by hand: a walk does reach it, and the scan must not repeat it.
        index.stranded.push(entries[7].clone());
        let hits = index.search(&entries[7].1, 3);
        assert_eq!(hits[0].chunk_id, 7);
        assert_eq!(hits.iter().filter(|h| h.chunk_id == 7).count(), 1);
        assert_eq!(hits.len(), 3);
        // A point left out of the graph entirely is still found through the scan.
        let far = (99, unit(vec![-1.0, 0.0, 0.2]));
        index.stranded.push(far.clone());
        assert_eq!(index.search(&far.1, 1)[0].chunk_id, 99);
    }

    #[test]
    fn empty_index_returns_nothing() {
        let index = VectorIndex::build(&[]);
        assert!(index.search(&[1.0, 0.0], 3).is_empty());
    }
}
