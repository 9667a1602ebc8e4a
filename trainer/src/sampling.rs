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
//! - `annealed` ("BERT and PALs", Stickland & Murray 2019): as `temperature` with the exponent
//!   moving over the run: position `s` of `S` micro-batches draws task `t` with probability
//!   `b_t^α(s) / Σ_u b_u^α(s)`, `α(s) = 1 − (1 − annealTo) · s / S` (proportional at the start,
//!   `annealTo` at the end; `b_t` the task's batches).
//!
//! An *epoch* is, for `proportional`, every batch of every task once; for the other strategies
//! a pass over the largest task (as jiant counts it): the micro-batches in which that task is
//! drawn, on average, as many times as it has batches (`b_max / p_max`, with `p_max` averaged
//! over the anneal for `annealed`). Smaller tasks then make several passes, or fewer, as their
//! probability says.

use mtl_crds::{SamplingSpec, SamplingStrategy};

/// A batch to train on: the task and the indices of its examples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub task: usize,
    pub examples: Vec<usize>,
}

/// Each task's share, from cumulative shares.
fn shares(cumulative: &[f64]) -> Vec<f64> {
    let mut prev = 0.0;
    cumulative
        .iter()
        .map(|&c| {
            let p = c - prev;
            prev = c;
            p
        })
        .collect()
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
struct Anneal {
    batches: Vec<f64>,
    to: f64,
    horizon: u64,
}

impl Anneal {
    /// α at `position`.
    fn alpha(&self, position: u64) -> f64 {
        let progress = if self.horizon == 0 {
            0.0
        } else {
            (position as f64 / self.horizon as f64).min(1.0)
        };
        1.0 - (1.0 - self.to) * progress
    }

    /// Cumulative probabilities at exponent `alpha`.
    fn cumulative(&self, alpha: f64) -> Vec<f64> {
        cumulative(
            self.batches
                .iter()
                .map(|&b| if b > 0.0 { b.powf(alpha) } else { 0.0 }),
        )
    }
}

/// Cumulative shares of `weights`.
fn cumulative(weights: impl Iterator<Item = f64> + Clone) -> Vec<f64> {
    let total: f64 = weights.clone().sum();
    weights
        .scan(0.0, |acc, w| {
            *acc += w / total;
            Some(*acc)
        })
        .collect()
}

#[derive(Debug, Clone)]
pub struct Sampler {
    strategy: SamplingStrategy,
    seed: u64,
    batch_size: usize,
    sizes: Vec<usize>,
    /// First slot of each task in an epoch's batches (proportional).
    starts: Vec<u64>,
    /// Cumulative sampling probabilities (uniform, temperature; annealed: at the start).
    cumulative: Vec<f64>,
    /// Annealed: each task's batches, the exponent reached at the end, and the micro-batches
    /// the anneal spans (the run's; 0 until [`Sampler::with_horizon`]).
    anneal: Option<Anneal>,
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
                SamplingStrategy::Proportional | SamplingStrategy::Annealed => b as f64,
                SamplingStrategy::Uniform => f64::from(u8::from(b > 0)),
                SamplingStrategy::Temperature => (b as f64).powf(1.0 / temperature),
            })
            .collect();
        let cumulative = cumulative(weights.iter().copied());
        let anneal = (spec.strategy == SamplingStrategy::Annealed).then(|| Anneal {
            batches: batches.iter().map(|&b| b as f64).collect(),
            to: spec.anneal_to(),
            horizon: 0,
        });
        Self {
            anneal,
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

    /// The annealed strategy's schedule spans `micro_batches` (the run's); other strategies
    /// ignore it.
    pub fn with_horizon(mut self, micro_batches: u64) -> Self {
        if let Some(anneal) = &mut self.anneal {
            anneal.horizon = micro_batches;
        }
        self
    }

    /// Micro-batches in one epoch: every batch of every task once (proportional); a pass over
    /// the largest task, on average, for the other strategies (see the module's doc).
    pub fn batches_per_epoch(&self) -> usize {
        let all: usize = (0..self.sizes.len()).map(|t| self.batches_of(t)).sum();
        if self.strategy == SamplingStrategy::Proportional || self.sizes.is_empty() {
            return all;
        }
        let (largest, batches) = (0..self.sizes.len())
            .map(|t| (t, self.batches_of(t)))
            .max_by_key(|&(_, b)| b)
            .unwrap_or((0, 0));
        let share = match &self.anneal {
            // The mean over the anneal (α linear in the position) by the midpoint rule.
            Some(anneal) => {
                const POINTS: usize = 256;
                (0..POINTS)
                    .map(|i| {
                        let alpha = 1.0 - (1.0 - anneal.to) * (i as f64 + 0.5) / POINTS as f64;
                        shares(&anneal.cumulative(alpha))[largest]
                    })
                    .sum::<f64>()
                    / POINTS as f64
            }
            None => self.probabilities()[largest],
        };
        if share <= 0.0 {
            return all;
        }
        (batches as f64 / share).round().max(1.0) as usize
    }

    /// Sampling probability of each task (annealed: at position 0).
    pub fn probabilities(&self) -> Vec<f64> {
        shares(&self.cumulative)
    }

    /// Sampling probability of each task at micro-batch `position`.
    pub fn probabilities_at(&self, position: u64) -> Vec<f64> {
        match &self.anneal {
            Some(anneal) => shares(&anneal.cumulative(anneal.alpha(position))),
            None => self.probabilities(),
        }
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

    /// The task drawn at `position` (uniform, temperature, annealed).
    fn draw(&self, position: u64) -> usize {
        let u = (hash(&[self.seed, 0xD4A3, position]) >> 11) as f64 / (1u64 << 53) as f64;
        let annealed;
        let cumulative = match &self.anneal {
            Some(anneal) => {
                annealed = anneal.cumulative(anneal.alpha(position));
                &annealed
            }
            None => &self.cumulative,
        };
        cumulative
            .iter()
            .position(|&c| u < c)
            .unwrap_or(cumulative.len() - 1)
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
            SamplingStrategy::Uniform
            | SamplingStrategy::Temperature
            | SamplingStrategy::Annealed => {
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
            anneal_to: None,
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
            SamplingStrategy::Annealed,
        ] {
            let sp = spec(strategy, Some(2.0));
            let mut a = Sampler::new(&sp, 3, 4, vec![40, 10, 90]).with_horizon(100);
            let mut b = Sampler::new(&sp, 3, 4, vec![40, 10, 90]).with_horizon(100);
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

    /// Annealed sampling draws as the formula says: position s of S draws task t with
    /// probability b_t^α / Σ b_u^α, α = 1 − (1 − annealTo)·s/S. Checked in ten windows of the
    /// run against the formula's mean over each window, within 4.5 binomial standard errors.
    #[test]
    fn annealed_frequencies_follow_the_formula() {
        let sizes = vec![9000, 1000, 100];
        let sp = SamplingSpec {
            strategy: SamplingStrategy::Annealed,
            temperature: None,
            anneal_to: Some(0.1),
        };
        let horizon = 100_000u64;
        let mut s = Sampler::new(&sp, 11, 1, sizes.clone()).with_horizon(horizon);
        let batches: Vec<f64> = sizes.iter().map(|&n| n as f64).collect();
        let formula = |pos: u64| {
            let alpha = 1.0 - 0.9 * pos as f64 / horizon as f64;
            let w: Vec<f64> = batches.iter().map(|b| b.powf(alpha)).collect();
            let total: f64 = w.iter().sum();
            w.into_iter().map(|x| x / total).collect::<Vec<f64>>()
        };
        assert!(
            (s.probabilities_at(0)[0] - 9000.0 / 10100.0).abs() < 1e-12,
            "proportional at the start"
        );
        let window = horizon / 10;
        for k in 0..10 {
            let (from, to) = (k * window, (k + 1) * window);
            let mut counts = [0u64; 3];
            let mut expected = [0.0f64; 3];
            for pos in from..to {
                counts[s.plan(pos).task] += 1;
                for (e, p) in expected.iter_mut().zip(formula(pos)) {
                    *e += p;
                }
                assert!((s.probabilities_at(pos)[2] - formula(pos)[2]).abs() < 1e-12);
            }
            for t in 0..3 {
                let p = expected[t] / window as f64;
                let sd = (window as f64 * p * (1.0 - p)).sqrt();
                assert!(
                    (counts[t] as f64 - expected[t]).abs() < 4.5 * sd + 1.0,
                    "window {k} task {t}: drew {} times, the formula expects {:.0}",
                    counts[t],
                    expected[t]
                );
            }
        }
        // Past the horizon α stays at annealTo.
        for (p, q) in s.probabilities_at(horizon * 2).iter().zip(formula(horizon)) {
            assert!((p - q).abs() < 1e-12, "{p} {q}");
        }
    }

    /// An epoch is a pass over every batch (proportional) or, for the other strategies, over
    /// the largest task on average: b_max / p_max micro-batches.
    #[test]
    fn epochs_are_a_pass_over_the_largest_task_unless_proportional() {
        let sizes = vec![100, 25];
        let with = |strategy, t: Option<f64>, to: Option<f64>| {
            let sp = SamplingSpec {
                strategy,
                temperature: t,
                anneal_to: to,
            };
            Sampler::new(&sp, 0, 1, sizes.clone()).batches_per_epoch()
        };
        assert_eq!(with(SamplingStrategy::Proportional, None, None), 125);
        assert_eq!(with(SamplingStrategy::Uniform, None, None), 200);
        // T = 2: p_0 = 10/15.
        assert_eq!(with(SamplingStrategy::Temperature, Some(2.0), None), 150);
        // Annealing to 1 is proportional throughout: 100 / 0.8.
        assert_eq!(with(SamplingStrategy::Annealed, None, Some(1.0)), 125);
        // Annealing to 0 averages p_0 over α from 1 to 0: ∫ 4^α/(4^α+1) dα = log2(5/2)/... by
        // the midpoint rule; between the proportional and the uniform epoch.
        let annealed = with(SamplingStrategy::Annealed, None, Some(0.0));
        let mean_p: f64 = (0..100_000)
            .map(|i| {
                let a = 1.0 - (i as f64 + 0.5) / 100_000.0;
                let w = 4f64.powf(a);
                w / (w + 1.0)
            })
            .sum::<f64>()
            / 100_000.0;
        assert_eq!(annealed, (100.0 / mean_p).round() as usize);
        assert!(125 < annealed && annealed < 200, "{annealed}");
    }
}
