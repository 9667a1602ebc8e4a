//! Command-line tools of `mtl-operator` that need no cluster: [`vertex`] is
//! `mtl-operator vertex submit|status|cancel job.yaml`, the Vertex AI backend run by hand.

pub mod vertex;
