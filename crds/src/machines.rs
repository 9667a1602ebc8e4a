//! The Compute Engine machine type a Vertex AI job runs on when `vertexAI.machineType` is
//! unset: Vertex AI takes each GPU only on its machine family, so the default follows the
//! accelerator and its count (the table in docs/vertex.md). Pure: tested in `tests.rs`.

use crate::VertexAiSpec;

/// The machine type of jobs without an accelerator, and of T4, V100, P100 and P4 jobs.
pub const DEFAULT_MACHINE_TYPE: &str = "n1-standard-8";

/// Accelerator (API name) → (GPUs per machine, machine type), as Vertex AI's "Configure
/// compute resources for custom training" lists them.
const MACHINES: &[(&str, &[(u32, &str)])] = &[
    (
        "NVIDIA_L4",
        &[
            (1, "g2-standard-8"),
            (2, "g2-standard-24"),
            (4, "g2-standard-48"),
            (8, "g2-standard-96"),
        ],
    ),
    (
        "NVIDIA_TESLA_A100",
        &[
            (1, "a2-highgpu-1g"),
            (2, "a2-highgpu-2g"),
            (4, "a2-highgpu-4g"),
            (8, "a2-highgpu-8g"),
            (16, "a2-megagpu-16g"),
        ],
    ),
    (
        "NVIDIA_A100_80GB",
        &[
            (1, "a2-ultragpu-1g"),
            (2, "a2-ultragpu-2g"),
            (4, "a2-ultragpu-4g"),
            (8, "a2-ultragpu-8g"),
        ],
    ),
    (
        "NVIDIA_H100_80GB",
        &[
            (1, "a3-highgpu-1g"),
            (2, "a3-highgpu-2g"),
            (4, "a3-highgpu-4g"),
            (8, "a3-highgpu-8g"),
        ],
    ),
    ("NVIDIA_H100_MEGA_80GB", &[(8, "a3-megagpu-8g")]),
    ("NVIDIA_H200_141GB", &[(8, "a3-ultragpu-8g")]),
];

/// GPUs that attach to N1 machines, any count Vertex allows.
const N1_ACCELERATORS: [&str; 4] = [
    "NVIDIA_TESLA_T4",
    "NVIDIA_TESLA_V100",
    "NVIDIA_TESLA_P100",
    "NVIDIA_TESLA_P4",
];

/// An accelerator name as the API spells it (`nvidia-l4` → `NVIDIA_L4`).
pub fn accelerator_api_name(name: &str) -> String {
    name.trim().to_ascii_uppercase().replace('-', "_")
}

impl VertexAiSpec {
    /// The machine type the job runs on: `machineType`, or the one that comes with
    /// `acceleratorType` × `acceleratorCount`. The error names the field and what would do.
    pub fn effective_machine_type(&self) -> Result<String, String> {
        if let Some(m) = self
            .machine_type
            .as_deref()
            .filter(|m| !m.trim().is_empty())
        {
            return Ok(m.to_string());
        }
        let Some(accel) = self.accelerator_type.as_deref() else {
            return Ok(DEFAULT_MACHINE_TYPE.into());
        };
        let accel = accelerator_api_name(accel);
        if N1_ACCELERATORS.contains(&accel.as_str()) {
            return Ok(DEFAULT_MACHINE_TYPE.into());
        }
        let Some((_, sizes)) = MACHINES.iter().find(|(a, _)| *a == accel) else {
            return Err(format!(
                "spec.vertexAI.machineType: required for acceleratorType {accel:?} (no default machine type for it)"
            ));
        };
        let count = self.accelerator_count.max(1);
        sizes
            .iter()
            .find(|(n, _)| *n == count)
            .map(|(_, m)| (*m).to_string())
            .ok_or_else(|| {
                let counts: Vec<String> = sizes.iter().map(|(n, _)| n.to_string()).collect();
                format!(
                    "spec.vertexAI.acceleratorCount: {accel} comes {} per machine, not {count} (or set machineType)",
                    counts.join(", ")
                )
            })
    }
}
