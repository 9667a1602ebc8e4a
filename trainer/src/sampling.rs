//! Which task, and which of its batches, each micro-batch trains on.
//!
//! Everything is a pure function of (seed, epoch, position), so a run resumed from a
//! checkpoint sees exactly the batches the uninterrupted run would have seen: the only
//! sampler state a checkpoint needs is the global micro-batch counter.
//!
//! - `proportional` (the original's): each epoch visits every batch of every task once, in
//!   a shuffled order, so a task's share of steps is its share of batches.
//! - `uniform` / `temperature`: each position draws a task with probability proportional to
//!   `batches^(1/T)` (T = ∞ for uniform); a task that runs out of batches starts a fresh
//!   shuffle of its data.

use mtl_crds::{SamplingSpec, SamplingStrategy};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A batch to train on: the task and the indices of its examples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub task: usize,
    pub examples: Vec<usize>,
}

#[derive(Debug, Clone)]
pub struct Sampler {
    strategy: SamplingStrategy,
    temperature: f64,
    seed: u64,
    batch_size: usize,
    sizes: Vec<usize>,
    /// (epoch, task per position) of the last epoch planned.
    cache: Option<(u64, Vec<usize>)>,
}

fn rng(parts: &[u64]) -> ChaCha8Rng {
    // Mix the parts into one 64-bit seed (splitmix64 steps) so distinct tuples give
    // independent streams.
    let mut h = 0x9E37_79B9_7F4A_7C15u64;
    for &p in parts {
        h ^= p
            .wrapping_add(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(h << 6)
            .wrapping_add(h >> 2);
        h = (h ^ (h >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        h = (h ^ (h >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        h ^= h >> 31;
    }
    ChaCha8Rng::seed_from_u64(h)
}

impl Sampler {
    /// `sizes`: examples per task.
    pub fn new(spec: &SamplingSpec, seed: u64, batch_size: usize, sizes: Vec<usize>) -> Self {
        Self {
            strategy: spec.strategy,
            temperature: spec.temperature.unwrap_or(1.0),
            seed,
            batch_size: batch_size.max(1),
            sizes,
            cache: None,
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
        let n: Vec<f64> = (0..self.sizes.len())
            .map(|t| self.batches_of(t) as f64)
            .collect();
        let w: Vec<f64> = match self.strategy {
            SamplingStrategy::Proportional => n,
            SamplingStrategy::Uniform => {
                n.iter().map(|&x| if x > 0.0 { 1.0 } else { 0.0 }).collect()
            }
            SamplingStrategy::Temperature => {
                n.iter().map(|x| x.powf(1.0 / self.temperature)).collect()
            }
        };
        let total: f64 = w.iter().sum();
        w.iter().map(|x| x / total).collect()
    }

    fn epoch_tasks(&mut self, epoch: u64) -> &[usize] {
        if self.cache.as_ref().is_none_or(|(e, _)| *e != epoch) {
            let mut r = rng(&[self.seed, epoch, 0xA11]);
            let tasks = match self.strategy {
                SamplingStrategy::Proportional => {
                    let mut v: Vec<usize> = (0..self.sizes.len())
                        .flat_map(|t| std::iter::repeat_n(t, self.batches_of(t)))
                        .collect();
                    v.shuffle(&mut r);
                    v
                }
                _ => {
                    let cumulative: Vec<f64> = self
                        .probabilities()
                        .iter()
                        .scan(0.0, |acc, p| {
                            *acc += p;
                            Some(*acc)
                        })
                        .collect();
                    (0..self.batches_per_epoch())
                        .map(|_| {
                            let u: f64 = r.random();
                            cumulative
                                .iter()
                                .position(|&c| u < c)
                                .unwrap_or(cumulative.len() - 1)
                        })
                        .collect()
                }
            };
            self.cache = Some((epoch, tasks));
        }
        self.cache.as_ref().map_or(&[], |(_, t)| t.as_slice())
    }

    /// The batch at global micro-batch index `micro`.
    pub fn plan(&mut self, micro: u64) -> Planned {
        let per_epoch = self.batches_per_epoch().max(1) as u64;
        let (epoch, pos) = (micro / per_epoch, (micro % per_epoch) as usize);
        let tasks = self.epoch_tasks(epoch);
        let task = tasks[pos];
        // How many times this task appeared earlier in the epoch picks its batch.
        let k = tasks[..pos].iter().filter(|&&t| t == task).count();
        let per_task = self.batches_of(task);
        let (cycle, b) = (k / per_task, k % per_task);
        let mut order: Vec<usize> = (0..self.sizes[task]).collect();
        order.shuffle(&mut rng(&[self.seed, epoch, task as u64, cycle as u64]));
        let start = b * self.batch_size;
        let end = (start + self.batch_size).min(order.len());
        Planned {
            task,
            examples: order[start..end].to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(strategy: SamplingStrategy, t: Option<f64>) -> SamplingSpec {
        SamplingSpec {
            strategy,
            temperature: t,
        }
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
        let mut seen: Vec<Vec<usize>> = sizes.iter().map(|_| Vec::new()).collect();
        for m in 0..20 {
            let p = s.plan(m);
            seen[p.task].extend(p.examples);
        }
        for (t, mut v) in seen.into_iter().enumerate() {
            v.sort();
            assert_eq!(v, (0..sizes[t]).collect::<Vec<_>>(), "task {t}");
        }
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
    fn deterministic_for_a_seed_and_position_independent() {
        let sp = spec(SamplingStrategy::Temperature, Some(2.0));
        let mut a = Sampler::new(&sp, 3, 4, vec![40, 10, 90]);
        let mut b = Sampler::new(&sp, 3, 4, vec![40, 10, 90]);
        let seq_a: Vec<_> = (0..100).map(|m| a.plan(m)).collect();
        // b starts in the middle, as a resumed run does.
        let tail_b: Vec<_> = (60..100).map(|m| b.plan(m)).collect();
        assert_eq!(seq_a[60..], tail_b[..]);
        let mut c = Sampler::new(&sp, 4, 4, vec![40, 10, 90]);
        let seq_c: Vec<_> = (0..100).map(|m| c.plan(m)).collect();
        assert_ne!(seq_a, seq_c);
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
        // Empirical uniform shares over many epochs.
        let mut s = Sampler::new(&spec(SamplingStrategy::Uniform, None), 9, 1, vec![100, 25]);
        let n = 20_000;
        let first = (0..n).filter(|&m| s.plan(m).task == 0).count() as f64 / n as f64;
        assert!((first - 0.5).abs() < 0.02, "{first}");
    }

    #[test]
    fn uniform_cycles_a_small_task_through_fresh_shuffles() {
        let mut s = Sampler::new(&spec(SamplingStrategy::Uniform, None), 5, 2, vec![100, 4]);
        let small: Vec<_> = (0..52).map(|m| s.plan(m)).filter(|p| p.task == 1).collect();
        assert!(small.len() > 2);
        for p in &small {
            assert!(!p.examples.is_empty() && p.examples.iter().all(|&i| i < 4));
        }
    }
}
