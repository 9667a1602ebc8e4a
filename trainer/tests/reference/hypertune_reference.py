"""Checks a hypertune metrics file written by mtl-trainer against what the real
cloudml-hypertune library writes for the same reports: the same keys, every value a string
but `timestamp`, the same trial, steps and values.

Usage: python hypertune_reference.py METRICS_FILE TAG TRIAL_ID
"""

import json
import os
import sys
import tempfile


def main(path, tag, trial):
    ours = [json.loads(l) for l in open(path) if l.strip()]
    assert ours, "no reports"
    with tempfile.TemporaryDirectory() as d:
        ref_path = os.path.join(d, "hp", "output.metrics")
        os.environ["CLOUD_ML_HP_METRIC_FILE"] = ref_path
        os.environ["CLOUD_ML_TRIAL_ID"] = trial
        import hypertune

        ht = hypertune.HyperTune()
        for line in ours:
            ht.report_hyperparameter_tuning_metric(
                hyperparameter_metric_tag=tag,
                metric_value=float(line[tag]),
                global_step=int(line["global_step"]),
                checkpoint_path=line["checkpoint_path"],
            )
        ref = [json.loads(l) for l in open(ref_path) if l.strip()]
    assert len(ref) == len(ours), (len(ref), len(ours))
    for a, b in zip(ours, ref):
        assert sorted(a) == sorted(b), (sorted(a), sorted(b))
        for k in b:
            assert type(a[k]) is type(b[k]), (k, a[k], b[k])
            if k != "timestamp":
                assert a[k] == b[k], (k, a[k], b[k])
    print(f"{len(ours)} reports match cloudml-hypertune's format")


if __name__ == "__main__":
    main(*sys.argv[1:4])
