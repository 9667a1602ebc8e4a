//! AdamW with decoupled weight decay (the update of `torch.optim.AdamW`), gradient clipping
//! and the linear warmup/decay schedule of HF's `get_linear_schedule_with_warmup`.
//!
//! The optimizer keeps its moments as named tensors so a checkpoint can store and restore
//! them exactly. The update itself is ATen's fused AdamW kernel (`fused`), the one
//! `torch.optim.AdamW(fused=True)` and HF Trainer's default `adamw_torch_fused` run.

mod fused;

use std::collections::BTreeMap;

use tch::{Kind, TchError, Tensor};

/// AdamW hyper-parameters (torch defaults).
#[derive(Debug, Clone, Copy)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

struct ParamState {
    param: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    decay: bool,
}

pub struct AdamW {
    pub config: AdamWConfig,
    /// Optimizer steps taken.
    pub step: u64,
    params: BTreeMap<String, ParamState>,
}

/// Biases and LayerNorm weights take no weight decay (HF Trainer's grouping).
pub fn decays(name: &str) -> bool {
    !(name.ends_with(".bias") || name.contains("LayerNorm") || name.contains("layer_norm"))
}

impl AdamW {
    pub fn new(named: BTreeMap<String, Tensor>, config: AdamWConfig) -> Self {
        let params = named
            .into_iter()
            .map(|(name, param)| {
                let state = ParamState {
                    exp_avg: param.zeros_like(),
                    exp_avg_sq: param.zeros_like(),
                    decay: decays(&name),
                    param,
                };
                (name, state)
            })
            .collect();
        Self {
            config,
            step: 0,
            params,
        }
    }

    /// One update at learning rate `lr`, from the gradients already accumulated.
    pub fn step(&mut self, lr: f64) -> Result<(), TchError> {
        self.step_where(lr, |_| true)
    }

    /// One update of the parameters for which `active(name)` holds. The others are left
    /// alone, as torch leaves parameters whose gradient is None (HF Trainer zeroes gradients
    /// to None, so a task head that took no part in a step is not moved by it).
    pub fn step_where(&mut self, lr: f64, active: impl Fn(&str) -> bool) -> Result<(), TchError> {
        self.step += 1;
        let c = self.config;
        // Two groups, as HF Trainer builds them: with and without weight decay.
        let (mut decay, mut no_decay) = (fused::Group::default(), fused::Group::default());
        for (name, s) in &self.params {
            let grad = s.param.grad();
            if !grad.defined() || !active(name) {
                continue;
            }
            let g = if s.decay && c.weight_decay != 0.0 {
                &mut decay
            } else {
                &mut no_decay
            };
            g.params.push(&s.param);
            g.grads.push(grad);
            g.exp_avgs.push(&s.exp_avg);
            g.exp_avg_sqs.push(&s.exp_avg_sq);
        }
        let Some(first) = self.params.values().next() else {
            return Ok(());
        };
        let step = Tensor::from(self.step as f32).to_device(first.param.device());
        tch::no_grad(|| {
            for (group, weight_decay) in [(&decay, c.weight_decay), (&no_decay, 0.0)] {
                fused::adamw(
                    group,
                    &step,
                    &fused::Update {
                        lr,
                        beta1: c.beta1,
                        beta2: c.beta2,
                        weight_decay,
                        eps: c.eps,
                    },
                )?;
            }
            Ok(())
        })
    }

    pub fn zero_grad(&mut self) {
        for s in self.params.values_mut() {
            let mut g = s.param.grad();
            if g.defined() {
                let _ = g.zero_();
            }
        }
    }

    /// Scales gradients so their global L2 norm is at most `max_norm` (torch's
    /// `clip_grad_norm_`); returns the norm before clipping.
    pub fn clip_grad_norm(&self, max_norm: f64) -> f64 {
        let grads: Vec<Tensor> = self
            .params
            .values()
            .map(|s| s.param.grad())
            .filter(Tensor::defined)
            .collect();
        if grads.is_empty() {
            return 0.0;
        }
        tch::no_grad(|| {
            let norms: Vec<Tensor> = grads
                .iter()
                .map(|g| g.to_kind(Kind::Float).norm().unsqueeze(0))
                .collect();
            let total = Tensor::cat(&norms, 0).norm();
            let total_f = total.double_value(&[]);
            if max_norm > 0.0 {
                let coef = (max_norm / (total_f + 1e-6)).min(1.0);
                if coef < 1.0 {
                    for g in &grads {
                        let mut g = g.shallow_clone();
                        let _ = g.g_mul_scalar_(coef);
                    }
                }
            }
            total_f
        })
    }

    /// Moments by name (`exp_avg.<param>`, `exp_avg_sq.<param>`), for checkpoints.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        self.params
            .iter()
            .flat_map(|(n, s)| {
                [
                    (format!("exp_avg.{n}"), s.exp_avg.shallow_clone()),
                    (format!("exp_avg_sq.{n}"), s.exp_avg_sq.shallow_clone()),
                ]
            })
            .collect()
    }

    /// Restores moments saved by [`AdamW::state_tensors`]; returns the name of the first
    /// missing or mis-shaped tensor as an error.
    pub fn load_state(
        &mut self,
        saved: &BTreeMap<String, Tensor>,
        step: u64,
    ) -> Result<(), String> {
        for (n, s) in self.params.iter_mut() {
            for (key, dst) in [
                (format!("exp_avg.{n}"), &mut s.exp_avg),
                (format!("exp_avg_sq.{n}"), &mut s.exp_avg_sq),
            ] {
                let src = saved.get(&key).ok_or_else(|| format!("missing {key}"))?;
                if src.size() != dst.size() {
                    return Err(format!(
                        "{key} has shape {:?}, expected {:?}",
                        src.size(),
                        dst.size()
                    ));
                }
                tch::no_grad(|| dst.copy_(&src.to_device(dst.device())));
            }
        }
        self.step = step;
        Ok(())
    }
}

/// Linear warmup from 0 to `lr` over `warmup` steps, then linear decay to 0 at `total`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct LinearSchedule {
    pub lr: f64,
    pub warmup: u64,
    pub total: u64,
}

impl LinearSchedule {
    /// Learning rate for the update that follows `step` completed updates.
    pub fn at(&self, step: u64) -> f64 {
        let factor = if step < self.warmup {
            step as f64 / self.warmup.max(1) as f64
        } else {
            let rest = self.total.saturating_sub(self.warmup).max(1) as f64;
            (self.total.saturating_sub(step) as f64 / rest).max(0.0)
        };
        self.lr * factor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_zero() {
        let s = LinearSchedule {
            lr: 1.0,
            warmup: 10,
            total: 110,
        };
        assert_eq!(s.at(0), 0.0);
        assert_eq!(s.at(5), 0.5);
        assert_eq!(s.at(10), 1.0);
        assert_eq!(s.at(60), 0.5);
        assert_eq!(s.at(110), 0.0);
        assert_eq!(s.at(200), 0.0);
    }

    #[test]
    fn decay_groups_follow_hf() {
        assert!(decays("bert.encoder.layer.0.attention.self.query.weight"));
        assert!(!decays("bert.encoder.layer.0.attention.self.query.bias"));
        assert!(!decays("bert.embeddings.LayerNorm.weight"));
    }

    #[test]
    fn one_step_matches_the_adamw_formula() {
        let p = Tensor::from_slice(&[1.0f32, -2.0]).set_requires_grad(true);
        let loss = (&p * &p).sum(Kind::Float);
        loss.backward();
        let mut opt = AdamW::new(
            BTreeMap::from([("w".to_string(), p.shallow_clone())]),
            AdamWConfig {
                weight_decay: 0.1,
                ..Default::default()
            },
        );
        opt.step(0.01).unwrap();
        // First step: m̂ = g, v̂ = g², so the update is lr * g / (|g| + eps) after decay.
        let got: Vec<f32> = Vec::try_from(&p.detach()).unwrap();
        let want = |w: f32, g: f32| w * (1.0 - 0.01 * 0.1) - 0.01 * g / (g.abs() + 1e-8);
        assert!((got[0] - want(1.0, 2.0)).abs() < 1e-6, "{got:?}");
        assert!((got[1] - want(-2.0, -4.0)).abs() < 1e-6, "{got:?}");
    }
}
