//! AdamW with decoupled weight decay (the update of `torch.optim.AdamW`), gradient clipping
//! and the linear warmup/decay schedule of HF's `get_linear_schedule_with_warmup`.
//!
//! The optimizer keeps its moments as named tensors so a checkpoint can store and restore
//! them exactly.

use std::collections::BTreeMap;

use tch::{Kind, Tensor};

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
    pub fn step(&mut self, lr: f64) {
        self.step_where(lr, |_| true);
    }

    /// One update of the parameters for which `active(name)` holds. The others are left
    /// alone, as torch leaves parameters whose gradient is None (HF Trainer zeroes gradients
    /// to None, so a task head that took no part in a step is not moved by it).
    pub fn step_where(&mut self, lr: f64, active: impl Fn(&str) -> bool) {
        self.step += 1;
        let c = self.config;
        let bias1 = 1.0 - c.beta1.powi(self.step as i32);
        let bias2_sqrt = (1.0 - c.beta2.powi(self.step as i32)).sqrt();
        let step_size = lr / bias1;
        tch::no_grad(|| {
            for (name, s) in self.params.iter_mut() {
                let grad = s.param.grad();
                if !grad.defined() || !active(name) {
                    continue;
                }
                if s.decay && c.weight_decay != 0.0 {
                    let _ = s.param.g_mul_scalar_(1.0 - lr * c.weight_decay);
                }
                let _ = s.exp_avg.lerp_(&grad, 1.0 - c.beta1);
                let _ = s
                    .exp_avg_sq
                    .g_mul_scalar_(c.beta2)
                    .addcmul_(&grad, &grad.g_mul_scalar(1.0 - c.beta2));
                let denom = (s.exp_avg_sq.sqrt() / bias2_sqrt).g_add_scalar(c.eps);
                let _ = s.param.addcdiv_(&(&s.exp_avg * -step_size), &denom);
            }
        });
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
#[derive(Debug, Clone, Copy, PartialEq)]
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
        opt.step(0.01);
        // First step: m̂ = g, v̂ = g², so the update is lr * g / (|g| + eps) after decay.
        let got: Vec<f32> = Vec::try_from(&p.detach()).unwrap();
        let want = |w: f32, g: f32| w * (1.0 - 0.01 * 0.1) - 0.01 * g / (g.abs() + 1e-8);
        assert!((got[0] - want(1.0, 2.0)).abs() < 1e-6, "{got:?}");
        assert!((got[1] - want(-2.0, -4.0)).abs() < 1e-6, "{got:?}");
    }
}
