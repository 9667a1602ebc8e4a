//! Which task, and which of its examples, each micro-batch trains on.
//!
//! The plan is a function of (seed, position) alone: a run resumed from a checkpoint sees
//! exactly the batches the uninterrupted run would have seen, and the only sampler state a
//! checkpoint needs is the global micro-batch counter. Planning a step costs the same
//! whatever the size of the tasks: an example's place in a shuffled order comes from a
//! seeded bijection of the index range ([`Shuffle`]), computed for the batch's own examples
//! only, never from a materialised permutation.
//!
//! - `proportional` (the original's): each epoch visits every batch of every task once, in a
//!   shuffled order, so a task's share of steps is its share of batches.
//! - `uniform` / `temperature`: each position draws a task with probability proportional to
//!   `batches^(1/T)` (T = ∞ for uniform). Each task goes on through one pass over its data
//!   after another, every example once per pass, however the other tasks' epochs fall: the
//!   sampler keeps one cursor per task (how many of its batches were drawn before), which
//!   it recomputes from the position when asked to start elsewhere (a resume).

use mtl_crds::{SamplingSpec, SamplingStrategy};

/// A batch to train on: the task and the indices of its examples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub task: usize,
    pub examples: Vec<usize>,
}

/// splitmix64's finaliser: a bijective 64-bit mix.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One 64-bit value from a tuple, so distinct tuples give independent streams.
fn hash(parts: &[u64]) -> u64 {
    parts.iter().fold(0x9E37_79B9_7F4A_7C15, |h, &p| {
        mix(h ^ p.wrapping_add(0x9E37_79B9_7F4A_7C15).wrapping_add(h << 6))
    })
}

const ROUNDS: usize = 4;

/// A seeded pseudo-random permutation of `0..n`: a balanced Feistel network over the smallest
/// even number of bits that covers `n`, walking cycles until the image falls inside `0..n`.
/// No memory beyond its keys; each [`Shuffle::at`] costs a few rounds of hashing.
#[derive(Debug, Clone)]
pub struct Shuffle {
    n: u64,
    half_bits: u32,
    keys: [u64; ROUNDS],
}

impl Shuffle {
    pub fn new(n: u64, key: &[u64]) -> Self {
        let bits = 64 - n.saturating_sub(1).leading_zeros();
        let half_bits = bits.div_ceil(2).max(1);
        let base = hash(key);
        Self {
            n,
            half_bits,
            keys: std::array::from_fn(|r| hash(&[base, r as u64])),
        }
    }

    fn round(&self, x: u64) -> u64 {
        let mask = (1u64 << self.half_bits) - 1;
        let (mut l, mut r) = (x >> self.half_bits, x & mask);
        for k in self.keys {
            let f = mix(r ^ k) & mask;
            (l, r) = (r, l ^ f);
        }
        (l << self.half_bits) | r
    }

    /// The element at position `i` (< n) of the shuffled order.
    pub fn at(&self, i: u64) -> u64 {
        debug_assert!(i < self.n);
        if self.n <= 1 {
            return 0;
        }
        let mut x = self.round(i);
        // The domain is at most 4n, so this ends after four rounds on average.
        while x >= self.n {
            x = self.round(x);
        }
        x
    }
}

#[derive(Debug, Clone)]
pub struct Sampler {
    strategy: SamplingStrategy,
    seed: u64,
    batch_size: usize,
    sizes: Vec<usize>,
    /// First slot of each task in an epoch's batches (proportional).
    starts: Vec<u64>,
    /// Cumulative sampling probabilities (uniform, temperature).
    cumulative: Vec<f64>,
    /// Uniform/temperature: the position the cursors stand at, and each task's batches drawn
    /// before it.
    position: u64,
    cursors: Vec<u64>,
    /// Shuffled positions computed so far (the work planning did).
    pub work: u64,
}

impl Sampler {
    /// `sizes`: examples per task.
    pub fn new(spec: &SamplingSpec, seed: u64, batch_size: usize, sizes: Vec<usize>) -> Self {
        let batch_size = batch_size.max(1);
        let batches: Vec<u64> = sizes
            .iter()
            .map(|n| n.div_ceil(batch_size) as u64)
            .collect();
        let starts = batches
            .iter()
            .scan(0, |acc, b| {
                let s = *acc;
                *acc += b;
                Some(s)
            })
            .collect();
        let temperature = spec.temperature.unwrap_or(1.0);
        let weights: Vec<f64> = batches
            .iter()
            .map(|&b| match spec.strategy {
                SamplingStrategy::Proportional => b as f64,
                SamplingStrategy::Uniform => f64::from(u8::from(b > 0)),
                SamplingStrategy::Temperature => (b as f64).powf(1.0 / temperature),
            })
            .collect();
        let total: f64 = weights.iter().sum();
        let cumulative = weights
            .iter()
            .scan(0.0, |acc, w| {
                *acc += w / total;
                Some(*acc)
            })
            .collect();
        Self {
            strategy: spec.strategy,
            seed,
            batch_size,
            cursors: vec![0; sizes.len()],
            sizes,
            starts,
            cumulative,
            position: 0,
            work: 0,
        }
    }

    pub fn batches_of(&self, task: usize) -> usize {
        self.sizes[task].div_ceil(self.batch_size)
    }

    /// Micro-batches in one epoch: every batch of every task once.
    pub fn batches_per_epoch(&self) -> usize {
        (0..self.sizes.len()).map(|t| self.batches_of(t)).sum()
    }

    /// Sampling probability of each task.
    pub fn probabilities(&self) -> Vec<f64> {
        let mut prev = 0.0;
        self.cumulative
            .iter()
            .map(|&c| {
                let p = c - prev;
                prev = c;
                p
            })
            .collect()
    }

    /// Batch `b` of `task` in the shuffled order of its pass `pass`.
    fn batch(&mut self, task: usize, pass: u64, b: u64) -> Vec<usize> {
        let n = self.sizes[task] as u64;
        let order = Shuffle::new(n, &[self.seed, 0xDA7A, task as u64, pass]);
        let start = b * self.batch_size as u64;
        let end = (start + self.batch_size as u64).min(n);
        self.work += end - start;
        (start..end).map(|i| order.at(i) as usize).collect()
    }

    /// The task drawn at `position` (uniform, temperature).
    fn draw(&self, position: u64) -> usize {
        let u = (hash(&[self.seed, 0xD4A3, position]) >> 11) as f64 / (1u64 << 53) as f64;
        self.cumulative
            .iter()
            .position(|&c| u < c)
            .unwrap_or(self.cumulative.len() - 1)
    }

    /// Moves the cursors to `position` (from 0 if it lies behind them): one draw per position
    /// passed over, no example is touched.
    fn seek(&mut self, position: u64) {
        if position < self.position {
            self.position = 0;
            self.cursors.iter_mut().for_each(|c| *c = 0);
        }
        while self.position < position {
            let t = self.draw(self.position);
            self.cursors[t] += 1;
            self.position += 1;
        }
    }

    /// The batch at global micro-batch index `micro`. Cheapest when called for consecutive
    /// positions, as training does.
    pub fn plan(&mut self, micro: u64) -> Planned {
        match self.strategy {
            SamplingStrategy::Proportional => {
                let per_epoch = self.batches_per_epoch().max(1) as u64;
                let (epoch, pos) = (micro / per_epoch, micro % per_epoch);
                let slot = Shuffle::new(per_epoch, &[self.seed, 0xE0C, epoch]).at(pos);
                let task = self.starts.partition_point(|&s| s <= slot) - 1;
                let b = slot - self.starts[task];
                Planned {
                    task,
                    examples: self.batch(task, epoch, b),
                }
            }
            SamplingStrategy::Uniform | SamplingStrategy::Temperature => {
                self.seek(micro);
                let task = self.draw(micro);
                let k = self.cursors[task];
                let per_task = self.batches_of(task).max(1) as u64;
                let examples = self.batch(task, k / per_task, k % per_task);
                self.cursors[task] += 1;
                self.position += 1;
                Planned { task, examples }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn spec(strategy: SamplingStrategy, t: Option<f64>) -> SamplingSpec {
        SamplingSpec {
            strategy,
            temperature: t,
        }
    }

    #[test]
    fn shuffles_are_bijections_and_differ_by_key() {
        for n in [1u64, 2, 3, 7, 64, 65, 1000, 4097] {
            let s = Shuffle::new(n, &[1, 2]);
            let seen: BTreeSet<u64> = (0..n).map(|i| s.at(i)).collect();
            assert_eq!(seen.len() as u64, n, "n = {n}");
            assert!(seen.iter().all(|&x| x < n));
        }
        let (a, b) = (Shuffle::new(1000, &[1]), Shuffle::new(1000, &[2]));
        let moved = (0..1000).filter(|&i| a.at(i) != b.at(i)).count();
        assert!(moved > 900, "{moved}");
        // Not the identity, and not a rotation.
        let fixed = (0..1000).filter(|&i| a.at(i) == i).count();
        assert!(fixed < 20, "{fixed}");
    }

    #[test]
    fn proportional_epoch_visits_every_example_once() {
        let sizes = vec![50, 20, 7];
        let mut s = Sampler::new(
            &spec(SamplingStrategy::Proportional, None),
            7,
            4,
            sizes.clone(),
        );
        assert_eq!(s.batches_per_epoch(), 13 + 5 + 2);
        for epoch in 0..3 {
            let mut seen: Vec<Vec<usize>> = sizes.iter().map(|_| Vec::new()).collect();
            for m in epoch * 20..(epoch + 1) * 20 {
                let p = s.plan(m);
                seen[p.task].extend(p.examples);
            }
            for (t, mut v) in seen.into_iter().enumerate() {
                v.sort();
                assert_eq!(
                    v,
                    (0..sizes[t]).collect::<Vec<_>>(),
                    "epoch {epoch} task {t}"
                );
            }
        }
        // A new epoch, a new order.
        assert_ne!(s.plan(0), s.plan(20));
    }

    #[test]
    fn proportional_shares_equal_batch_shares() {
        let mut s = Sampler::new(
            &spec(SamplingStrategy::Proportional, None),
            1,
            8,
            vec![800, 200],
        );
        let counts = (0..125).fold([0usize; 2], |mut c, m| {
            c[s.plan(m).task] += 1;
            c
        });
        assert_eq!(counts, [100, 25]);
    }

    #[test]
    fn the_plan_at_a_position_is_the_same_after_a_resume() {
        for strategy in [
            SamplingStrategy::Proportional,
            SamplingStrategy::Uniform,
            SamplingStrategy::Temperature,
        ] {
            let sp = spec(strategy, Some(2.0));
            let mut a = Sampler::new(&sp, 3, 4, vec![40, 10, 90]);
            let mut b = Sampler::new(&sp, 3, 4, vec![40, 10, 90]);
            let seq_a: Vec<_> = (0..100).map(|m| a.plan(m)).collect();
            // b starts in the middle, as a resumed run does.
            let tail_b: Vec<_> = (60..100).map(|m| b.plan(m)).collect();
            assert_eq!(seq_a[60..], tail_b[..], "{strategy:?}");
            // And going back replays the same.
            assert_eq!(b.plan(10), seq_a[10], "{strategy:?}");
            let mut c = Sampler::new(&sp, 4, 4, vec![40, 10, 90]);
            let seq_c: Vec<_> = (0..100).map(|m| c.plan(m)).collect();
            assert_ne!(seq_a, seq_c, "{strategy:?}: the seed changes the plan");
        }
    }

    #[test]
    fn temperature_and_uniform_probabilities() {
        let s = Sampler::new(
            &spec(SamplingStrategy::Temperature, Some(2.0)),
            0,
            1,
            vec![100, 25],
        );
        let p = s.probabilities();
        assert!((p[0] - 10.0 / 15.0).abs() < 1e-12, "{p:?}");
        let s = Sampler::new(&spec(SamplingStrategy::Uniform, None), 0, 1, vec![100, 25]);
        assert_eq!(s.probabilities(), vec![0.5, 0.5]);
        let mut s = Sampler::new(&spec(SamplingStrategy::Uniform, None), 9, 1, vec![100, 25]);
        let n = 20_000;
        let first = (0..n).filter(|&m| s.plan(m).task == 0).count() as f64 / n as f64;
        assert!((first - 0.5).abs() < 0.02, "{first}");
    }

    #[test]
    fn uniform_sees_every_example_of_a_large_task_before_any_repeats() {
        // Task 0 is large: under uniform sampling its epochs are much longer than the plan's.
        let sizes = vec![1000, 12];
        let mut s = Sampler::new(&spec(SamplingStrategy::Uniform, None), 5, 4, sizes.clone());
        let mut passes: Vec<Vec<usize>> = vec![Vec::new(), Vec::new()];
        for m in 0..1200 {
            let p = s.plan(m);
            passes[p.task].extend(p.examples);
        }
        for (t, seen) in passes.iter().enumerate() {
            for (k, pass) in seen.chunks(sizes[t]).enumerate() {
                let distinct: BTreeSet<_> = pass.iter().collect();
                assert_eq!(
                    distinct.len(),
                    pass.len(),
                    "task {t} pass {k} repeats an example"
                );
            }
        }
        assert!(passes[0].len() >= 1000, "the large task completed a pass");
        assert!(
            passes[1].len() > 12 * 10,
            "the small task cycled through passes"
        );
    }

    #[test]
    fn planning_does_no_per_example_work() {
        // 10M examples: one permutation of them would touch 10M positions; 1000 steps of
        // batch 8 must touch 8000.
        for strategy in [SamplingStrategy::Proportional, SamplingStrategy::Uniform] {
            let mut s = Sampler::new(&spec(strategy, None), 1, 8, vec![10_000_000, 5_000]);
            let mut examples = 0u64;
            for m in 0..1000 {
                examples += s.plan(m).examples.len() as u64;
            }
            assert_eq!(s.work, examples, "{strategy:?}");
            assert!(s.work <= 8_000, "{strategy:?}: {}", s.work);
            // A resume at a far position costs draws, not examples.
            let before = s.work;
            let p = s.plan(5_000_000);
            assert_eq!(s.work - before, p.examples.len() as u64, "{strategy:?}");
        }
    }
}
