//! Gradients and parameters across ranks: [`GradientSync`] averages a step's gradients so that
//! N ranks with batch B train like one process with batch N×B, and [`broadcast_tensors`] makes
//! parameters (and optimizer state) identical on every rank.
//!
//! # The weighting
//! Each rank's loss is the mean over its own `n_r` examples of the step, so its gradient is
//! `g_r = (1/n_r) Σ_{i∈r} ∇l_i`. One process with the whole batch would compute
//! `g = (1/N) Σ_i ∇l_i` with `N = Σ_r n_r`, that is `g = Σ_r (n_r/N) g_r`. So every rank scales
//! its gradient by `n_r/N` (`N` comes from the first, small allreduce) and the buckets are
//! summed. Uneven shards (the last batch of an epoch) weigh exactly as in one process; a rank
//! with no example in a step contributes zeros; a step with no example anywhere changes
//! nothing.
//!
//! # Unused parameters
//! The same small allreduce carries one flag per parameter: did this rank use it (by default:
//! is its gradient defined; task heads not drawn in a step have none)? A parameter used by no
//! rank is left alone everywhere (its gradient stays undefined, so AdamW skips it, as on one
//! device). A parameter used by some ranks but not this one gets zeros from this rank, and
//! afterwards a gradient on every rank.
//!
//! # Buckets
//! As DDP's reducer does: gradients are flattened into buckets of about `bucket_cap_bytes`
//! (25 MiB by default) in reverse parameter order, one allreduce per bucket, all in flight
//! together; every rank builds the same buckets because the layout depends only on the
//! parameters (checked to be the same on every rank when the [`GradientSync`] is made) and on
//! the flags, which the allreduce made the same everywhere.

use tch::{Device, Kind, Tensor};

use super::group::{ProcessGroup, ReduceOp, count, set_grad};
use crate::{Error, Result};

/// DDP's default bucket size (`bucket_cap_mb=25`).
pub const DEFAULT_BUCKET_CAP_BYTES: usize = 25 * 1024 * 1024;

/// What one tensor takes in a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub bytes: usize,
    pub kind: Kind,
    pub device: Device,
}

/// Groups `order` (indices into `slots`, in reduction order) into buckets as DDP does: a
/// tensor joins the open bucket if it has the bucket's kind and device, and the bucket closes
/// once it holds at least `cap` bytes (so a tensor larger than `cap` has a bucket of its own,
/// and no bucket mixes kinds or devices).
pub fn plan_buckets(slots: &[Slot], order: &[usize], cap: usize) -> Vec<Vec<usize>> {
    let mut buckets: Vec<Vec<usize>> = Vec::new();
    let mut open: Vec<usize> = Vec::new();
    let mut open_bytes = 0usize;
    for &i in order {
        let s = slots[i];
        let other_kind = open
            .first()
            .is_some_and(|&f| (slots[f].kind, slots[f].device) != (s.kind, s.device));
        if other_kind {
            buckets.push(std::mem::take(&mut open));
            open_bytes = 0;
        }
        open.push(i);
        open_bytes += s.bytes;
        if open_bytes >= cap {
            buckets.push(std::mem::take(&mut open));
            open_bytes = 0;
        }
    }
    if !open.is_empty() {
        buckets.push(open);
    }
    buckets
}

/// What one [`GradientSync::average`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct GradStats {
    /// Examples of this step over all ranks (`N`).
    pub global_examples: u64,
    /// Per parameter (in the order given to [`GradientSync::new`]): used by some rank.
    pub used: Vec<bool>,
    /// Buckets allreduced.
    pub buckets: usize,
    /// Bytes allreduced (the flattened buckets).
    pub bytes: usize,
}

/// The fixed list of parameters whose gradients are averaged across ranks, in the same order
/// on every rank.
pub struct GradientSync {
    names: Vec<String>,
    params: Vec<Tensor>,
    slots: Vec<Slot>,
    bucket_cap_bytes: usize,
    /// One flat buffer per (kind, device) that every step's buckets are views into, kept
    /// from step to step (as DDP keeps its bucket buffers): allocating and first touching
    /// hundreds of MiB every step costs more than the copy itself.
    scratch: std::sync::Mutex<Vec<(Kind, Device, Tensor)>>,
}

impl GradientSync {
    /// `named` in a fixed order (e.g. sorted by name). Checks with one broadcast that every
    /// rank has the same names, shapes and kinds, so that a mismatch is an error naming the
    /// first parameter that differs, not a hang or garbage.
    pub fn new(
        pg: &ProcessGroup,
        named: &[(&str, &Tensor)],
        bucket_cap_bytes: usize,
    ) -> Result<Self> {
        let mut names = Vec::with_capacity(named.len());
        let mut params = Vec::with_capacity(named.len());
        let mut slots = Vec::with_capacity(named.len());
        for (name, p) in named {
            names.push((*name).to_string());
            params.push(p.shallow_clone());
            slots.push(Slot {
                bytes: p.numel() * p.kind().elt_size_in_bytes(),
                kind: p.kind(),
                device: p.device(),
            });
        }
        let sync = Self {
            names,
            params,
            slots,
            bucket_cap_bytes: bucket_cap_bytes.max(1),
            scratch: std::sync::Mutex::new(Vec::new()),
        };
        sync.check_same_everywhere(pg)?;
        Ok(sync)
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Averages the gradients across ranks, weighted by `local_examples` (this rank's examples
    /// in the step; see the module docs). A parameter counts as used on this rank when its
    /// gradient is defined.
    pub fn average(&self, pg: &ProcessGroup, local_examples: u64) -> Result<GradStats> {
        self.average_where(pg, local_examples, |_, p| p.grad().defined())
    }

    /// [`average`](Self::average) with `used(name, param)` telling which parameters this rank
    /// used in the step (e.g. when gradients are zeroed in place rather than dropped, so that
    /// a defined gradient says nothing). A used parameter must have a gradient. Gradients of
    /// parameters no rank used are left as they are.
    pub fn average_where(
        &self,
        pg: &ProcessGroup,
        local_examples: u64,
        used: impl Fn(&str, &Tensor) -> bool,
    ) -> Result<GradStats> {
        self.reduce(pg, Some(local_examples), used)
    }

    /// Sums the gradients across ranks, unweighted: for callers that already weighted each
    /// rank's loss (the trainer scales every micro-batch's loss by its share of the global
    /// micro-batch). Parameters no rank used keep no gradient; `global_examples` is 0.
    pub fn sum(&self, pg: &ProcessGroup) -> Result<GradStats> {
        self.reduce(pg, None, |_, p| p.grad().defined())
    }

    fn reduce(
        &self,
        pg: &ProcessGroup,
        local_examples: Option<u64>,
        used: impl Fn(&str, &Tensor) -> bool,
    ) -> Result<GradStats> {
        let n = self.params.len();
        let local_used: Vec<bool> = self
            .names
            .iter()
            .zip(&self.params)
            .map(|(name, p)| used(name, p))
            .collect();
        for (i, &u) in local_used.iter().enumerate() {
            if u && !self.params[i].grad().defined() {
                return Err(Error::Dist(format!(
                    "parameter {} is marked used on rank {} but has no gradient",
                    self.names[i],
                    pg.rank()
                )));
            }
        }
        // One small allreduce: a flag per parameter and the example count.
        let mut flags: Vec<f64> = local_used.iter().map(|&u| f64::from(u8::from(u))).collect();
        flags.push(local_examples.unwrap_or(0) as f64);
        pg.allreduce_f64_as(
            "allreduce of the step's parameter flags and example count",
            &mut flags,
            ReduceOp::Sum,
        )?;
        let global_examples = flags[n] as u64;
        let used_anywhere: Vec<bool> = flags[..n].iter().map(|&f| f > 0.0).collect();
        let mut stats = GradStats {
            global_examples,
            used: used_anywhere.clone(),
            buckets: 0,
            bytes: 0,
        };
        let weight = match local_examples {
            None => 1.0,
            Some(_) if global_examples == 0 => return Ok(stats),
            Some(n) => n as f64 / global_examples as f64,
        };
        if !used_anywhere.iter().any(|&u| u) {
            return Ok(stats);
        }
        // Reverse parameter order, as DDP: the order gradients become ready in backward.
        let order: Vec<usize> = (0..n).rev().filter(|&i| used_anywhere[i]).collect();
        let buckets = plan_buckets(&self.slots, &order, self.bucket_cap_bytes);
        tch::no_grad(|| -> Result<()> {
            let flats = self.bucket_views(&buckets)?;
            for (bucket, flat) in buckets.iter().zip(&flats) {
                self.flatten_into(bucket, &local_used, weight, flat)?;
            }
            let refs: Vec<&Tensor> = flats.iter().collect();
            stats.buckets = flats.len();
            stats.bytes = buckets.iter().flatten().map(|&i| self.slots[i].bytes).sum();
            let what = format!(
                "allreduce of {} ({}, {:.1} MiB)",
                count(buckets.len(), "gradient bucket"),
                count(order.len(), "parameter"),
                stats.bytes as f64 / (1024.0 * 1024.0)
            );
            pg.allreduce_as(&what, &refs, ReduceOp::Sum)?;
            for (bucket, flat) in buckets.iter().zip(&flats) {
                self.unflatten(bucket, flat)?;
            }
            Ok(())
        })?;
        Ok(stats)
    }

    /// A flat view for each bucket, laid out one after another in the persistent buffer of
    /// its kind and device (grown when a step needs more).
    fn bucket_views(&self, buckets: &[Vec<usize>]) -> Result<Vec<Tensor>> {
        let numel = |i: usize| self.params[i].numel() as i64;
        let key = |b: &[usize]| (self.slots[b[0]].kind, self.slots[b[0]].device);
        let mut scratch = self
            .scratch
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut need: Vec<(Kind, Device, i64)> = Vec::new();
        for b in buckets {
            let (kind, device) = key(b);
            let len: i64 = b.iter().map(|&i| numel(i)).sum();
            match need.iter_mut().find(|(k, d, _)| (*k, *d) == (kind, device)) {
                Some(n) => n.2 += len,
                None => need.push((kind, device, len)),
            }
        }
        for (kind, device, len) in need {
            let have = scratch
                .iter()
                .position(|(k, d, _)| (*k, *d) == (kind, device));
            match have {
                Some(at) if scratch[at].2.numel() as i64 >= len => {}
                Some(at) => scratch[at].2 = Tensor::f_empty([len], (kind, device))?,
                None => scratch.push((kind, device, Tensor::f_empty([len], (kind, device))?)),
            }
        }
        let mut offsets: Vec<(Kind, Device, i64)> = Vec::new();
        let mut views = Vec::with_capacity(buckets.len());
        for b in buckets {
            let (kind, device) = key(b);
            let len: i64 = b.iter().map(|&i| numel(i)).sum();
            let off = match offsets
                .iter_mut()
                .find(|(k, d, _)| (*k, *d) == (kind, device))
            {
                Some(o) => {
                    let at = o.2;
                    o.2 += len;
                    at
                }
                None => {
                    offsets.push((kind, device, len));
                    0
                }
            };
            let buf = &scratch
                .iter()
                .find(|(k, d, _)| (*k, *d) == (kind, device))
                .ok_or_else(|| Error::Dist("gradient bucket buffer missing".into()))?
                .2;
            views.push(buf.f_narrow(0, off, len)?);
        }
        Ok(views)
    }

    /// Fills a bucket's flat view with this rank's gradients (zeros where it did not use the
    /// parameter) scaled by `weight`.
    fn flatten_into(
        &self,
        bucket: &[usize],
        local_used: &[bool],
        weight: f64,
        flat: &Tensor,
    ) -> Result<()> {
        let mut offset = 0i64;
        for &i in bucket {
            let p = &self.params[i];
            let numel = p.numel() as i64;
            let mut part = flat.f_narrow(0, offset, numel)?;
            offset += numel;
            if local_used[i] && weight != 0.0 {
                part.f_copy_(&p.grad().f_reshape([-1])?)?;
            } else {
                let _ = part.f_zero_()?;
            }
        }
        if weight != 1.0 {
            let mut flat = flat.shallow_clone();
            let _ = flat.f_mul_scalar_(weight)?;
        }
        Ok(())
    }

    /// Writes an allreduced bucket back into the gradients, giving one to parameters that had
    /// none on this rank.
    fn unflatten(&self, bucket: &[usize], flat: &Tensor) -> Result<()> {
        let mut offset = 0i64;
        for &i in bucket {
            let p = &self.params[i];
            let numel = p.numel() as i64;
            let part = flat.narrow(0, offset, numel).reshape(p.size());
            offset += numel;
            let mut grad = p.grad();
            if grad.defined() {
                grad.f_copy_(&part)?;
            } else {
                set_grad(p, Some(&part.copy()))?;
            }
        }
        Ok(())
    }

    /// Every rank must hold the same parameter list; rank 0's description is broadcast and
    /// compared, and the verdict allreduced so that every rank fails together.
    fn check_same_everywhere(&self, pg: &ProcessGroup) -> Result<()> {
        let describe = |i: usize| {
            let p = &self.params[i];
            format!("{} {:?} {:?}", self.names[i], p.size(), p.kind())
        };
        let text: String = (0..self.params.len()).map(|i| describe(i) + "\n").collect();
        let mut len = [text.len() as f64];
        pg.allreduce_f64_as(
            "allreduce of the parameter list's length",
            &mut len,
            ReduceOp::Max,
        )?;
        let mut bytes = text.clone().into_bytes();
        bytes.resize(len[0] as usize, 0);
        let buf = Tensor::from_slice(&bytes).to_device(pg.device());
        pg.broadcast_as("broadcast of rank 0's parameter list", &[&buf], 0)?;
        let root: Vec<u8> = Vec::try_from(&buf.to_device(Device::Cpu))?;
        let root = String::from_utf8_lossy(&root);
        let root = root.trim_end_matches('\0');
        let mismatch = if root == text {
            None
        } else {
            let ours: Vec<&str> = text.lines().collect();
            let theirs: Vec<&str> = root.lines().collect();
            let at = (0..ours.len().max(theirs.len()))
                .find(|&k| ours.get(k) != theirs.get(k))
                .unwrap_or(0);
            Some(format!(
                "parameter {} differs from rank 0: {:?} here, {:?} on rank 0",
                at,
                ours.get(at).unwrap_or(&"(none)"),
                theirs.get(at).unwrap_or(&"(none)")
            ))
        };
        let any_mismatch = pg.any(mismatch.is_some())?;
        match (mismatch, any_mismatch) {
            (Some(m), _) => Err(Error::Dist(format!("rank {}: {m}", pg.rank()))),
            (None, true) => Err(Error::Dist(
                "another rank's parameters differ from rank 0's".into(),
            )),
            (None, false) => Ok(()),
        }
    }
}

/// Makes `tensors` identical on every rank: rank 0's values are broadcast, bucketed as the
/// gradients are (about `bucket_cap_bytes` per collective). For parameters after init or
/// resume, and optimizer state (`AdamW::state_tensors`). Every rank passes tensors of the same
/// shapes, kinds and order.
pub fn broadcast_tensors(
    pg: &ProcessGroup,
    tensors: &[&Tensor],
    bucket_cap_bytes: usize,
) -> Result<()> {
    let slots: Vec<Slot> = tensors
        .iter()
        .map(|t| Slot {
            bytes: t.numel() * t.kind().elt_size_in_bytes(),
            kind: t.kind(),
            device: t.device(),
        })
        .collect();
    let order: Vec<usize> = (0..tensors.len()).collect();
    let buckets = plan_buckets(&slots, &order, bucket_cap_bytes.max(1));
    tch::no_grad(|| -> Result<()> {
        let flats: Vec<Tensor> = buckets
            .iter()
            .map(|b| {
                let parts: Vec<Tensor> = b.iter().map(|&i| tensors[i].reshape([-1])).collect();
                Tensor::cat(&parts, 0)
            })
            .collect();
        let refs: Vec<&Tensor> = flats.iter().collect();
        let bytes: usize = slots.iter().map(|s| s.bytes).sum();
        let what = format!(
            "broadcast from rank 0 of {} in {} ({:.1} MiB)",
            count(tensors.len(), "tensor"),
            count(buckets.len(), "bucket"),
            bytes as f64 / (1024.0 * 1024.0)
        );
        pg.broadcast_as(&what, &refs, 0)?;
        if pg.rank() != 0 {
            for (bucket, flat) in buckets.iter().zip(&flats) {
                let mut offset = 0i64;
                for &i in bucket {
                    let mut t = tensors[i].shallow_clone();
                    let numel = t.numel() as i64;
                    t.f_copy_(&flat.narrow(0, offset, numel).reshape(t.size()))?;
                    offset += numel;
                }
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(bytes: usize) -> Slot {
        Slot {
            bytes,
            kind: Kind::Float,
            device: Device::Cpu,
        }
    }

    #[test]
    fn buckets_close_once_they_reach_the_cap() {
        let slots: Vec<Slot> = [4, 4, 4, 10, 1, 1, 2].map(slot).to_vec();
        let order: Vec<usize> = (0..slots.len()).rev().collect();
        // Reverse order 6,5,4,3,2,1,0 with cap 8: [2,1,1,10] reaches 14 ≥ 8 at index 3;
        // then [4,4] = 8 closes; [4] is left open.
        assert_eq!(
            plan_buckets(&slots, &order, 8),
            vec![vec![6, 5, 4, 3], vec![2, 1], vec![0]]
        );
        // A cap below every tensor: one bucket each.
        assert_eq!(plan_buckets(&slots, &order, 1).len(), slots.len());
        // A cap above the total: one bucket.
        assert_eq!(plan_buckets(&slots, &order, 1000), vec![order.clone()]);
        assert!(plan_buckets(&slots, &[], 8).is_empty());
    }

    #[test]
    fn buckets_never_mix_kinds() {
        let mut slots: Vec<Slot> = [4, 4, 4].map(slot).to_vec();
        slots[1].kind = Kind::Half;
        assert_eq!(
            plan_buckets(&slots, &[0, 1, 2], 100),
            vec![vec![0], vec![1], vec![2]]
        );
    }
}
