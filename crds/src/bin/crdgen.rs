//! Prints the MultiTaskTrainingJob CRD as YAML (`make crds` writes it to crds/).

use kube::CustomResourceExt;
use mtl_crds::MultiTaskTrainingJob;

fn main() -> Result<(), serde_yaml::Error> {
    print!("{}", serde_yaml::to_string(&MultiTaskTrainingJob::crd())?);
    Ok(())
}
