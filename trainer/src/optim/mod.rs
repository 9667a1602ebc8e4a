//! AdamW with decoupled weight decay (the update of `torch.optim.AdamW`), gradient clipping
//! and the linear warmup/decay schedule of HF's `get_linear_schedule_with_warmup`.
//!
//! As in torch, every parameter has its own state (moments and a step count for the bias
//! correction), and a parameter whose gradient is undefined takes no part in a step: after
//! each update the gradients are reset to undefined (`zero_grad(set_to_none=True)`, HF
//! Trainer's default), so a task head that took no part in a step is neither moved nor
//! decayed, and its first update has the bias correction of a first step. The update itself
//! is ATen's fused AdamW kernel, the one `torch.optim.AdamW(fused=True)` and HF Trainer's
//! default `adamw_torch_fused` run.

use std::collections::BTreeMap;

use mtl_crds::TrainingSpec;
use tch::{Kind, TchError, Tensor};

use crate::aten::{self, AdamWGroup, AdamWUpdate};

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
    /// Updates this parameter has taken: a float scalar on its device, as torch keeps it.
    step: Tensor,
    decay: bool,
}

pub struct AdamW {
    pub config: AdamWConfig,
    params: BTreeMap<String, ParamState>,
}

/// Biases and LayerNorm weights take no weight decay (HF Trainer's grouping).
pub fn decays(name: &str) -> bool {
    !(name.ends_with(".bias") || name.contains("LayerNorm") || name.contains("layer_norm"))
}

/// Prefixes of the tensors of the optimizer state in `optimizer.safetensors`.
const EXP_AVG: &str = "exp_avg.";
const EXP_AVG_SQ: &str = "exp_avg_sq.";
const STEP: &str = "step.";

impl AdamW {
    pub fn new(named: BTreeMap<String, Tensor>, config: AdamWConfig) -> Self {
        let params = named
            .into_iter()
            .map(|(name, param)| {
                let state = ParamState {
                    exp_avg: param.zeros_like(),
                    exp_avg_sq: param.zeros_like(),
                    step: Tensor::zeros([], (Kind::Float, param.device())),
                    decay: decays(&name),
                    param,
                };
                (name, state)
            })
            .collect();
        Self { config, params }
    }

    /// Parameters whose gradient is defined, by name.
    pub fn with_grads(&self) -> impl Iterator<Item = (&str, Tensor)> {
        self.params.iter().filter_map(|(n, s)| {
            let g = s.param.grad();
            g.defined().then_some((n.as_str(), g))
        })
    }

    /// One update at learning rate `lr` of every parameter with a defined gradient; the
    /// others (and their step counts) are left alone, as torch leaves parameters whose
    /// gradient is None.
    pub fn step(&mut self, lr: f64) -> Result<(), TchError> {
        let c = self.config;
        // Two groups, as HF Trainer builds them: with and without weight decay.
        let (mut decay, mut no_decay) = (AdamWGroup::default(), AdamWGroup::default());
        for s in self.params.values() {
            let grad = s.param.grad();
            if !grad.defined() {
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
            g.steps.push(&s.step);
        }
        tch::no_grad(|| {
            for (group, weight_decay) in [(&decay, c.weight_decay), (&no_decay, 0.0)] {
                aten::fused_adamw(
                    group,
                    &AdamWUpdate {
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

    /// Resets every gradient to undefined (torch's `zero_grad(set_to_none=True)`).
    pub fn zero_grad(&mut self) -> Result<(), TchError> {
        let params: Vec<&Tensor> = self.params.values().map(|s| &s.param).collect();
        aten::reset_grads(&params)
    }

    /// Scales gradients so their global L2 norm is at most `max_norm` (torch's
    /// `clip_grad_norm_` over the parameters that have a gradient); returns the norm before
    /// clipping (0 when no parameter has a gradient). `max_norm` 0 only measures. As torch's,
    /// a NaN norm makes every gradient NaN (its clamped coefficient is NaN) rather than
    /// leaving them unclipped, and an infinite one zeroes them.
    pub fn clip_grad_norm(&self, max_norm: f64) -> Result<f64, TchError> {
        let grads: Vec<Tensor> = self.with_grads().map(|(_, g)| g).collect();
        if grads.is_empty() {
            return Ok(0.0);
        }
        tch::no_grad(|| {
            let norms = grads
                .iter()
                .map(|g| g.f_to_kind(Kind::Float)?.f_norm()?.f_unsqueeze(0))
                .collect::<Result<Vec<Tensor>, TchError>>()?;
            let total = Tensor::f_cat(&norms, 0)?.f_norm()?.f_double_value(&[])?;
            if max_norm > 0.0 {
                // torch.clamp(coef, max=1) keeps a NaN, where f64::min would drop it.
                let coef = max_norm / (total + 1e-6);
                let coef = if coef.is_nan() { coef } else { coef.min(1.0) };
                if coef < 1.0 || coef.is_nan() {
                    for g in &grads {
                        let mut g = g.shallow_clone();
                        let _ = g.f_mul_scalar_(coef)?;
                    }
                }
            }
            Ok(total)
        })
    }

    /// Moments and step counts by name (`exp_avg.<param>`, `exp_avg_sq.<param>`,
    /// `step.<param>`), for checkpoints.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        self.params
            .iter()
            .flat_map(|(n, s)| {
                [
                    (format!("{EXP_AVG}{n}"), s.exp_avg.shallow_clone()),
                    (format!("{EXP_AVG_SQ}{n}"), s.exp_avg_sq.shallow_clone()),
                    (format!("{STEP}{n}"), s.step.shallow_clone()),
                ]
            })
            .collect()
    }

    /// The step count of each parameter.
    pub fn steps(&self) -> BTreeMap<String, f64> {
        self.params
            .iter()
            .map(|(n, s)| (n.clone(), s.step.double_value(&[])))
            .collect()
    }

    /// Restores the state saved by [`AdamW::state_tensors`]; returns the name of the first
    /// missing or mis-shaped tensor as an error. Checkpoints written before step counts were
    /// kept per parameter have none: each parameter then gets `legacy_step`, the run's global
    /// step (what every parameter's bias correction used in those runs).
    pub fn load_state(
        &mut self,
        saved: &BTreeMap<String, Tensor>,
        legacy_step: u64,
    ) -> Result<(), String> {
        let per_param_steps = saved.keys().any(|k| k.starts_with(STEP));
        for (n, s) in self.params.iter_mut() {
            for (key, dst) in [
                (format!("{EXP_AVG}{n}"), &mut s.exp_avg),
                (format!("{EXP_AVG_SQ}{n}"), &mut s.exp_avg_sq),
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
            let step = if per_param_steps {
                let key = format!("{STEP}{n}");
                let t = saved.get(&key).ok_or_else(|| format!("missing {key}"))?;
                t.f_double_value(&[])
                    .map_err(|e| format!("{key} is not a scalar: {e}"))?
            } else {
                legacy_step as f64
            };
            let _ = tch::no_grad(|| s.step.fill_(step));
        }
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
    /// The schedule of a run of `total` steps: `warmupSteps`, or `warmupRatio` of the run
    /// rounded up.
    pub fn for_run(tr: &TrainingSpec, total: u64) -> Self {
        Self {
            lr: tr.learning_rate,
            warmup: tr
                .warmup_steps
                .unwrap_or_else(|| (tr.warmup_ratio * total as f64).ceil() as u64),
            total,
        }
    }

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

    /// torch 2.13: `clip_grad_norm_` of gradients with a NaN gives a NaN norm and NaN
    /// gradients everywhere; with an inf, zeros where the gradients were finite.
    #[test]
    fn a_nan_gradient_norm_clips_as_torch_does() {
        for (bad, want_nan) in [(f32::NAN, true), (f32::INFINITY, false)] {
            let a = Tensor::from_slice(&[1.0f32, 2.0]).set_requires_grad(true);
            let b = Tensor::from_slice(&[3.0f32]).set_requires_grad(true);
            (&a * Tensor::from_slice(&[bad, 1.0]))
                .sum(Kind::Float)
                .backward();
            (&b * 2.0).sum(Kind::Float).backward();
            let opt = AdamW::new(
                BTreeMap::from([
                    ("a".to_string(), a.shallow_clone()),
                    ("b".to_string(), b.shallow_clone()),
                ]),
                AdamWConfig::default(),
            );
            let norm = opt.clip_grad_norm(1.0).unwrap();
            assert_eq!(norm.is_nan(), want_nan, "{bad}: norm {norm}");
            let gb = Vec::<f32>::try_from(&b.grad()).unwrap()[0];
            if want_nan {
                assert!(gb.is_nan(), "a finite gradient becomes NaN: {gb}");
            } else {
                assert_eq!(gb, 0.0, "inf norm: finite gradients become 0");
            }
        }
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

    #[test]
    fn parameters_without_gradients_are_left_alone_and_count_their_own_steps() {
        let a = Tensor::from_slice(&[1.0f32]).set_requires_grad(true);
        let b = Tensor::from_slice(&[1.0f32]).set_requires_grad(true);
        let mut opt = AdamW::new(
            BTreeMap::from([
                ("a.weight".to_string(), a.shallow_clone()),
                ("b.weight".to_string(), b.shallow_clone()),
            ]),
            AdamWConfig {
                weight_decay: 0.1,
                ..Default::default()
            },
        );
        // Three steps train `a` only: `b` has no gradient, so it neither moves nor decays.
        for _ in 0..3 {
            (&a * 2.0).sum(Kind::Float).backward();
            opt.step(0.01).unwrap();
            opt.zero_grad().unwrap();
            assert!(!a.grad().defined(), "gradients are reset to undefined");
        }
        assert_eq!(Vec::<f32>::try_from(&b.detach()).unwrap(), [1.0]);
        let steps = opt.steps();
        assert_eq!((steps["a.weight"], steps["b.weight"]), (3.0, 0.0));
        // `b`'s first update is a first step: lr * g / |g| after decay, whatever the global step.
        (&b * 2.0).sum(Kind::Float).backward();
        opt.step(0.01).unwrap();
        let got = Vec::<f32>::try_from(&b.detach()).unwrap()[0];
        let want = 1.0 * (1.0 - 0.01 * 0.1) - 0.01 * 2.0 / (2.0 + 1e-8);
        assert!((got - want).abs() < 1e-7, "{got} vs {want}");
        assert_eq!(opt.steps()["b.weight"], 1.0);
    }

    #[test]
    fn state_round_trips_and_old_checkpoints_get_the_global_step() {
        let p = Tensor::from_slice(&[1.0f32, 2.0]).set_requires_grad(true);
        let named = || BTreeMap::from([("w".to_string(), p.shallow_clone())]);
        let mut opt = AdamW::new(named(), AdamWConfig::default());
        for _ in 0..2 {
            (&p * &p).sum(Kind::Float).backward();
            opt.step(0.01).unwrap();
            opt.zero_grad().unwrap();
        }
        let saved: BTreeMap<String, Tensor> = opt.state_tensors().into_iter().collect();
        let mut again = AdamW::new(named(), AdamWConfig::default());
        again.load_state(&saved, 99).unwrap();
        assert_eq!(again.steps()["w"], 2.0);
        // Written before step counts were kept per parameter: no `step.*` tensors.
        let legacy: BTreeMap<String, Tensor> = saved
            .iter()
            .filter(|(k, _)| !k.starts_with(STEP))
            .map(|(k, v)| (k.clone(), v.shallow_clone()))
            .collect();
        let mut old = AdamW::new(named(), AdamWConfig::default());
        old.load_state(&legacy, 7).unwrap();
        assert_eq!(old.steps()["w"], 7.0);
        let mut missing = legacy;
        missing.remove("exp_avg.w");
        let err = AdamW::new(named(), AdamWConfig::default())
            .load_state(&missing, 7)
            .unwrap_err();
        assert!(err.contains("exp_avg.w"), "{err}");
    }
}
