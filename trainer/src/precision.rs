//! Devices and numeric precision: `--device`, autocast for `precision: bf16 | fp16`, the
//! dynamic loss scaling fp16 needs (torch's `GradScaler`), and TF32 on CUDA.
//!
//! | precision | CUDA | CPU |
//! |---|---|---|
//! | `fp32` | float32 (TF32 matmuls with `allowTf32`) | float32 |
//! | `bf16` | autocast to bfloat16 | autocast to bfloat16 |
//! | `fp16` | autocast to float16, dynamic loss scaling | rejected (use `bf16`) |
//!
//! Losses are computed in float32 whatever the autocast type; parameters, gradients and the
//! optimizer state stay float32 (mixed precision, not half-precision training).

use mtl_crds::Precision;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::aten::{self, AutocastDtype};
use crate::{Error, Result};

/// A device by name: `cpu`, `cuda`, `cuda:N`, or `auto` (CUDA when available).
pub fn parse_device(name: &str) -> Result<Device> {
    Ok(match name {
        "auto" => Device::cuda_if_available(),
        "cpu" => Device::Cpu,
        "cuda" => Device::Cuda(0),
        other => match other.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
            Some(n) => Device::Cuda(n),
            None => {
                return Err(Error::Invalid(format!(
                    "--device {other:?}: expected cpu, cuda, cuda:N or auto"
                )));
            }
        },
    })
}

/// How forward passes run and how gradients are scaled, for one precision on one device.
pub struct Amp {
    autocast: Option<(bool, AutocastDtype)>,
    /// Loss scaling (fp16 only).
    pub scaler: Option<GradScaler>,
}

impl Amp {
    /// Checks that `device` can run `precision` and sets it up; `allow_tf32` lets float32
    /// matmuls on CUDA use TF32.
    pub fn new(precision: Precision, device: Device, allow_tf32: bool) -> Result<Self> {
        let cuda = device.is_cuda();
        if cuda {
            aten::set_allow_tf32(allow_tf32)?;
        }
        let (autocast, scaler) = match precision {
            Precision::Fp32 => (None, None),
            Precision::Bf16 => {
                if cuda {
                    check_kind(device, Kind::BFloat16, "bf16")?;
                }
                (Some((cuda, AutocastDtype::BFloat16)), None)
            }
            Precision::Fp16 => {
                if !cuda {
                    return Err(Error::Invalid(
                        "spec.training.precision fp16 needs a CUDA device; on CPU use bf16 (or fp32)"
                            .into(),
                    ));
                }
                check_kind(device, Kind::Half, "fp16")?;
                (
                    Some((true, AutocastDtype::Float16)),
                    Some(GradScaler::new(device)?),
                )
            }
        };
        Ok(Self { autocast, scaler })
    }

    /// Runs `f` (a forward pass) under autocast when the precision asks for it.
    pub fn run<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        match self.autocast {
            Some((cuda, dtype)) => aten::autocast(cuda, dtype, f)?,
            None => f(),
        }
    }
}

/// A matmul in `kind` on `device`, or an error saying the device cannot run `name`.
fn check_kind(device: Device, kind: Kind, name: &str) -> Result<()> {
    let probe = || -> std::result::Result<(), tch::TchError> {
        let a = Tensor::f_ones([8, 8], (kind, device))?;
        a.f_matmul(&a)?.f_sum(Kind::Float)?.f_double_value(&[])?;
        Ok(())
    };
    probe().map_err(|e| {
        Error::Invalid(format!(
            "spec.training.precision {name}: {device:?} cannot compute in {kind:?} ({e}); use fp32"
        ))
    })
}

/// The state of a [`GradScaler`] kept in `trainer_state.json`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LossScale {
    pub scale: f64,
    /// Clean steps since the scale last changed.
    pub growth_tracker: i64,
}

/// Dynamic loss scaling as torch's `GradScaler` does it: the loss is multiplied by the scale
/// before backward; gradients are unscaled before clipping; a step whose gradients hold an
/// inf or NaN is skipped and the scale halved; after `growth_interval` clean steps in a row
/// the scale doubles.
pub struct GradScaler {
    scale: Tensor,
    growth_tracker: Tensor,
    found_inf: Tensor,
    pub growth_factor: f64,
    pub backoff_factor: f64,
    pub growth_interval: i64,
}

impl GradScaler {
    /// torch's defaults: scale 2^16, growth ×2 every 2000 clean steps, backoff ×0.5.
    pub fn new(device: Device) -> Result<Self> {
        Ok(Self {
            scale: Tensor::f_full([], 65536.0, (Kind::Float, device))?,
            growth_tracker: Tensor::f_zeros([], (Kind::Int, device))?,
            found_inf: Tensor::f_zeros([], (Kind::Float, device))?,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 2000,
        })
    }

    pub fn scale_value(&self) -> Result<f64> {
        Ok(self.scale.f_double_value(&[])?)
    }

    /// `loss` × scale.
    pub fn scale_loss(&self, loss: &Tensor) -> Result<Tensor> {
        Ok(loss.f_mul(&self.scale)?)
    }

    /// Divides `grads` by the scale in place and records whether any holds an inf or NaN.
    pub fn unscale(&mut self, grads: &[Tensor]) -> Result<()> {
        tch::no_grad(|| {
            let _ = self.found_inf.f_zero_()?;
            let inv = self
                .scale
                .f_to_kind(Kind::Double)?
                .f_reciprocal()?
                .f_to_kind(Kind::Float)?;
            aten::unscale_grads(grads, &self.found_inf, &inv)?;
            Ok(())
        })
    }

    /// Whether the last [`GradScaler::unscale`] found an inf or NaN (the step must be skipped).
    pub fn found_inf(&self) -> Result<bool> {
        Ok(self.found_inf.f_double_value(&[])? != 0.0)
    }

    /// Halves the scale after an overflow, else counts a clean step (doubling the scale
    /// after `growth_interval` of them).
    pub fn update(&mut self) -> Result<()> {
        tch::no_grad(|| {
            let _ = self.scale.f_internal_amp_update_scale_(
                &self.growth_tracker,
                &self.found_inf,
                self.growth_factor,
                self.backoff_factor,
                self.growth_interval,
            )?;
            Ok(())
        })
    }

    pub fn state(&self) -> Result<LossScale> {
        Ok(LossScale {
            scale: self.scale.f_double_value(&[])?,
            growth_tracker: self.growth_tracker.f_int64_value(&[])?,
        })
    }

    pub fn load(&mut self, s: &LossScale) -> Result<()> {
        tch::no_grad(|| {
            let _ = self.scale.f_fill_(s.scale)?;
            let _ = self.growth_tracker.f_fill_(s.growth_tracker)?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_overflow_skips_the_step_and_halves_the_scale() {
        let mut s = GradScaler::new(Device::Cpu).unwrap();
        let grads = vec![
            Tensor::from_slice(&[65536.0f32, -131072.0]),
            Tensor::from_slice(&[f32::INFINITY]),
        ];
        s.unscale(&grads).unwrap();
        assert!(s.found_inf().unwrap());
        s.update().unwrap();
        assert_eq!(s.scale_value().unwrap(), 32768.0);
        assert_eq!(s.state().unwrap().growth_tracker, 0);
        // A NaN counts as an overflow too.
        s.unscale(&[Tensor::from_slice(&[f32::NAN])]).unwrap();
        assert!(s.found_inf().unwrap());
        s.update().unwrap();
        assert_eq!(s.scale_value().unwrap(), 16384.0);
    }

    #[test]
    fn clean_steps_unscale_and_grow_the_scale_after_the_interval() {
        let mut s = GradScaler::new(Device::Cpu).unwrap();
        s.growth_interval = 3;
        for step in 1..=3 {
            let g = Tensor::from_slice(&[65536.0f32, 32768.0]);
            s.unscale(std::slice::from_ref(&g)).unwrap();
            assert!(!s.found_inf().unwrap());
            assert_eq!(
                Vec::<f32>::try_from(&g).unwrap(),
                [1.0, 0.5],
                "unscaled in place"
            );
            s.update().unwrap();
            let want = if step < 3 { 65536.0 } else { 131072.0 };
            assert_eq!(s.scale_value().unwrap(), want, "after clean step {step}");
        }
        assert_eq!(s.state().unwrap().growth_tracker, 0);
        // The state survives a checkpoint.
        let saved = s.state().unwrap();
        let mut t = GradScaler::new(Device::Cpu).unwrap();
        t.load(&saved).unwrap();
        assert_eq!(t.state().unwrap(), saved);
    }

    #[test]
    fn fp16_is_rejected_on_cpu_and_bf16_autocasts_there() {
        let err = Amp::new(Precision::Fp16, Device::Cpu, false)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("precision fp16") && err.contains("CUDA"),
            "{err}"
        );
        let amp = Amp::new(Precision::Bf16, Device::Cpu, false).unwrap();
        let a = Tensor::ones([4, 4], (Kind::Float, Device::Cpu));
        let kind = amp.run(|| Ok(a.matmul(&a).kind())).unwrap();
        assert_eq!(kind, Kind::BFloat16);
        // The encoder's projections (linear) and attention run in bf16 too.
        let w = Tensor::ones([3, 4], (Kind::Float, Device::Cpu));
        let kind = amp
            .run(|| Ok(a.f_linear(&w, None::<&Tensor>)?.kind()))
            .unwrap();
        assert_eq!(kind, Kind::BFloat16);
        // Outside `run`, float32 again.
        assert_eq!(a.matmul(&a).kind(), Kind::Float);
        let fp32 = Amp::new(Precision::Fp32, Device::Cpu, false).unwrap();
        assert_eq!(fp32.run(|| Ok(a.matmul(&a).kind())).unwrap(), Kind::Float);
    }

    #[test]
    fn devices_by_name() {
        assert_eq!(parse_device("cpu").unwrap(), Device::Cpu);
        assert_eq!(parse_device("cuda:1").unwrap(), Device::Cuda(1));
        let err = parse_device("tpu").unwrap_err().to_string();
        assert!(err.contains("\"tpu\""), "{err}");
    }
}
