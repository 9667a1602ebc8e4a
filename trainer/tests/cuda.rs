//! CUDA tests, for a machine with an NVIDIA GPU: `bench/gpu_check.sh` runs them with
//! `--ignored` on a CUDA build. Elsewhere they are listed as ignored, never silently passed.

mod common;

use mtl_crds::Precision;
use mtl_trainer::checkpoint;
use mtl_trainer::io;
use mtl_trainer::precision::GradScaler;
use mtl_trainer::state::TrainerState;
use mtl_trainer::train::{self, RunOptions};
use tch::{Device, Kind, Tensor};

use common::{TINY_BERT, job, tiny_model_with, torch_rng};

fn run(precision: Precision, device: Device, steps: u64, dir: &std::path::Path) -> TrainerState {
    let model = tiny_model_with(dir, &TINY_BERT.replace("0.1", "0.0"));
    let _rng = torch_rng();
    let out = dir.join(format!("run-{precision:?}-{device:?}"));
    let mut spec = job(&model, &out);
    spec.training.precision = precision;
    spec.training.max_steps = Some(steps);
    spec.training.log_every_steps = 1;
    spec.checkpoints.every_steps = steps;
    let opts = RunOptions {
        device,
        ..RunOptions::cpu(dir.join("cache"))
    };
    let o = train::train(&spec, &opts).unwrap();
    assert_eq!(o.step, steps);
    io::read_json(
        &out.join(format!("checkpoint-{steps}"))
            .join(checkpoint::STATE_FILE),
    )
    .unwrap()
}

#[test]
#[ignore = "needs a CUDA GPU: bench/gpu_check.sh runs it"]
fn fp32_on_the_gpu_trains_as_on_the_cpu() {
    assert!(tch::Cuda::is_available(), "no CUDA device visible");
    let tmp = tempfile::tempdir().unwrap();
    let cpu = run(Precision::Fp32, Device::Cpu, 10, tmp.path());
    let gpu = run(Precision::Fp32, Device::Cuda(0), 10, tmp.path());
    for (a, b) in cpu.log_history.iter().zip(&gpu.log_history) {
        let rel = (a.loss - b.loss).abs() / a.loss.abs().max(1e-9);
        assert!(
            rel < 1e-3,
            "step {}: CPU loss {} vs GPU {}",
            a.step,
            a.loss,
            b.loss
        );
    }
}

#[test]
#[ignore = "needs a CUDA GPU: bench/gpu_check.sh runs it"]
fn bf16_and_fp16_steps_are_finite_and_learn_on_the_gpu() {
    assert!(tch::Cuda::is_available(), "no CUDA device visible");
    let tmp = tempfile::tempdir().unwrap();
    for precision in [Precision::Bf16, Precision::Fp16] {
        let state = run(precision, Device::Cuda(0), 60, tmp.path());
        let losses: Vec<f64> = state.log_history.iter().map(|e| e.loss).collect();
        assert!(
            losses.iter().all(|l| l.is_finite()),
            "{precision:?}: {losses:?}"
        );
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        assert!(
            mean(&losses[50..]) < 0.9 * mean(&losses[..10]),
            "{precision:?}: loss did not fall: {losses:?}"
        );
        match precision {
            Precision::Fp16 => assert!(state.loss_scale.is_some_and(|s| s.scale > 0.0)),
            _ => assert!(state.loss_scale.is_none()),
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU: bench/gpu_check.sh runs it"]
fn the_loss_scaler_skips_an_overflow_on_the_gpu() {
    assert!(tch::Cuda::is_available(), "no CUDA device visible");
    let mut s = GradScaler::new(Device::Cuda(0)).unwrap();
    let g = Tensor::from_slice(&[1.0f32, f32::INFINITY]).to_device(Device::Cuda(0));
    s.unscale(&[g]).unwrap();
    assert!(s.found_inf().unwrap());
    s.update().unwrap();
    assert_eq!(s.scale_value().unwrap(), 32768.0);
    let half = Tensor::ones([2], (Kind::Half, Device::Cuda(0)));
    assert_eq!(half.sum(Kind::Float).double_value(&[]), 2.0);
}
