//! Which examples of a step's global micro-batch each rank trains on.
//!
//! Any split gives the one-process gradient (each rank weights its mean loss by its share of
//! the examples), so the split is chosen for speed: the ranks wait for the slowest at the
//! allreduce, and each pads its shard to its own longest sequence. Examples are dealt out
//! longest first in snake order (0, 1, …, N−1, N−1, …, 0, …), so every rank gets ⌊n/N⌋ or
//! ⌈n/N⌉ examples and about the same padded work. Pure, deterministic: every rank computes
//! every rank's shard the same way.

/// The positions (into a micro-batch whose examples have `lengths`) that `rank` of `ranks`
/// trains on, in batch order. Empty when the batch has fewer examples than ranks and this
/// rank's turn does not come.
pub fn shard(lengths: &[usize], rank: usize, ranks: usize) -> Vec<usize> {
    let ranks = ranks.max(1);
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    // Longest first; ties in batch order, so the deal does not depend on the sort.
    order.sort_by(|&a, &b| lengths[b].cmp(&lengths[a]).then(a.cmp(&b)));
    let mut mine: Vec<usize> = order
        .iter()
        .enumerate()
        .filter(|&(k, _)| {
            let (round, seat) = (k / ranks, k % ranks);
            let dealt = if round % 2 == 0 {
                seat
            } else {
                ranks - 1 - seat
            };
            dealt == rank
        })
        .map(|(_, &i)| i)
        .collect();
    mine.sort_unstable();
    mine
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_the_batch_once_and_balance_counts() {
        for n in 0..20 {
            for ranks in 1..5 {
                let lengths: Vec<usize> = (0..n).map(|i| (i * 7919) % 13 + 1).collect();
                let shards: Vec<Vec<usize>> =
                    (0..ranks).map(|r| shard(&lengths, r, ranks)).collect();
                let mut all: Vec<usize> = shards.iter().flatten().copied().collect();
                all.sort_unstable();
                assert_eq!(all, (0..n).collect::<Vec<_>>(), "n {n}, ranks {ranks}");
                for s in &shards {
                    assert!(
                        s.len() == n / ranks || s.len() == n.div_ceil(ranks),
                        "n {n}, ranks {ranks}: {shards:?}"
                    );
                    assert!(s.windows(2).all(|w| w[0] < w[1]), "batch order");
                }
            }
        }
    }

    #[test]
    fn the_longest_examples_are_spread_over_the_ranks() {
        // Contiguous halves would give rank 0 both long examples: 2 × 100 + 2 × 10 tokens
        // padded to 100 against 4 × 10.
        let lengths = [100, 100, 10, 10, 10, 10, 10, 10];
        assert_eq!(shard(&lengths, 0, 2), [0, 3, 4, 7]);
        assert_eq!(shard(&lengths, 1, 2), [1, 2, 5, 6]);
        let padded = |s: &[usize]| s.iter().map(|&i| lengths[i]).max().unwrap() * s.len();
        assert_eq!(
            padded(&shard(&lengths, 0, 2)),
            padded(&shard(&lengths, 1, 2))
        );
        // Fewer examples than ranks: the last ranks get none.
        assert_eq!(shard(&[5, 9], 0, 3), [1]);
        assert_eq!(shard(&[5, 9], 1, 3), [0]);
        assert!(shard(&[5, 9], 2, 3).is_empty());
    }
}
