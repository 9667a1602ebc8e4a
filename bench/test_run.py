"""Unit tests of bench/run.py's arithmetic (run by `make test`; no benchmark is run)."""

import os
import sys
import types
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402

CFG = types.SimpleNamespace(hidden_size=4, num_hidden_layers=2, intermediate_size=8)
LABELS = {"a": 1, "b": 2}


def step(i, task="a", rows=2, seq_len=3, real=5, sq=13, loss=1.0, data=0.1, compute=0.9, examples=2):
    return {"step": i, "task": task, "rows": rows, "seq_len": seq_len, "real_tokens": real,
            "sum_sq_len": sq, "loss": loss, "data_s": data, "compute_s": compute, "examples": examples}


class TrainFlops(unittest.TestCase):
    def test_counts_real_tokens_and_is_three_forwards(self):
        # layer: 2*5*(4*16 + 2*4*8) + 4*13*4 = 1488; head: 2*2*(16 + 4) = 80
        self.assertEqual(run.train_flops(step(0), CFG, LABELS), 3 * (2 * 1488 + 80))

    def test_padding_costs_nothing(self):
        self.assertEqual(run.train_flops(step(0, seq_len=3), CFG, LABELS),
                         run.train_flops(step(0, seq_len=128), CFG, LABELS))


class Summarize(unittest.TestCase):
    def report(self):
        return {"implementation": "x", "pad_to": None, "warmup": 1, "load_s": 1.0,
                "tokenized_sequences": 100, "steps": [step(0, data=5.0), step(1), step(2)]}

    def test_window_skips_warmup(self):
        s = run.summarize(self.report(), CFG, LABELS, {"flops_per_s": 1e4})
        self.assertEqual(s["steps"], 2)
        self.assertAlmostEqual(s["seconds"], 2.0)
        self.assertAlmostEqual(s["examples_per_s"], 2.0)
        self.assertAlmostEqual(s["padding_share"], 1 - 10 / 12)
        # collation 0.2 s plus reading and tokenization's share for 4 of 100 sequences (0.04 s)
        self.assertAlmostEqual(s["data_share"], 0.24 / 2.04)
        self.assertAlmostEqual(s["mfu"], 2 * run.train_flops(step(1), CFG, LABELS) / 2.0 / 1e4)


class LossAgreement(unittest.TestCase):
    def test_within_tolerance(self):
        a = {"steps": [step(0, loss=2.0), step(1, loss=1.0)]}
        b = {"steps": [step(0, loss=2.0 * (1 + 1e-6)), step(1, loss=1.0)]}
        self.assertTrue(run.loss_agreement(a, b)["ok"])

    def test_a_diverging_loss_fails(self):
        a = {"steps": [step(0, loss=2.0), step(1, loss=1.0)]}
        b = {"steps": [step(0, loss=2.0), step(1, loss=1.1)]}
        self.assertFalse(run.loss_agreement(a, b)["ok"])

    def test_different_batches_fail(self):
        a = {"steps": [step(0, real=5)]}
        b = {"steps": [step(0, real=6)]}
        self.assertFalse(run.loss_agreement(a, b)["ok"])


class Parallel(unittest.TestCase):
    def line(self, step, examples, seconds, allreduce=0.5, reduced=1000.0):
        return {"message": "train", "step": step, "examples": examples, "interval_s": seconds,
                "examples_per_s": examples / seconds, "allreduce_s": allreduce, "reduced_bytes": reduced}

    def test_reads_only_train_lines(self):
        import json
        text = "\n".join([json.dumps(self.line(1, 8, 2.0)), "not json", json.dumps({"message": "eval"}),
                          json.dumps(self.line(2, 8, 1.0))])
        self.assertEqual([l["step"] for l in run.train_lines(text)], [1, 2])

    def test_window_rate_weighs_steps_by_their_examples_and_time(self):
        # A short last batch (1 example) and a heavy step: 9 examples in 6 s, not the mean rate.
        lines = [self.line(1, 8, 30.0), self.line(2, 1, 1.0, allreduce=0.25), self.line(3, 8, 5.0, allreduce=1.25)]
        s = run.parallel_summary(lines, warmup=1)
        self.assertEqual((s["steps"], s["examples"]), (2, 9))
        self.assertAlmostEqual(s["examples_per_s"], 9 / 6)
        self.assertAlmostEqual(s["step_s"], 3.0)
        self.assertAlmostEqual(s["allreduce_s_per_step"], 0.75)
        self.assertAlmostEqual(s["allreduce_share"], 1.5 / 6)
        self.assertAlmostEqual(s["reduced_bytes_per_step"], 1000.0)

    def test_nothing_after_warmup_is_an_error(self):
        with self.assertRaises(SystemExit):
            run.parallel_summary([self.line(1, 8, 1.0)], warmup=1)

    def test_torch_reference_is_read_at_the_nearest_one_rank_throughput(self):
        def ref(lo, hi, one, two):
            return {"tokens": [lo, hi], "1 rank x 2 threads": {"examples_per_s": one},
                    "2 ranks x 1 thread": {"examples_per_s": two}, "ratio": two / one}
        p = {"runs": {"1 rank x 2 threads": {"examples_per_s": 5.0}}, "ratio": 0.7,
             "torch_ddp": [ref(40, 127, 2.0, 1.9), ref(12, 39, 6.0, 3.6)]}
        text = "\n".join(run.torch_ddp_lines(p))
        self.assertIn("| 40-127 | 2.00 | 1.90 | 0.95x |", text)
        # 6.0 is nearer 5.0 than 2.0 is (by ratio): the short sequences are the comparison.
        self.assertIn("At 12-39 tokens", text)
        self.assertIn("torch DDP reaches **0.60x**, mtl-trainer **0.70x**", text)

class Operator(unittest.TestCase):
    def test_reports_requests_per_job_against_the_target_and_by_kind(self):
        def scale(jobs, requests):
            return {"jobs": jobs, "seconds_to_pods": 1.0, "seconds_to_status": 2.0,
                    "peak_rss_bytes": 30 * 2**20, "operator_cpu_ms_per_job": 1.0,
                    "requests_per_job": requests / jobs, "reconciles_per_job": 3.0,
                    "requests_by_kind": [{"verb": "patch", "resource": "pods", "count": jobs},
                                         {"verb": "create", "resource": "events", "count": 2 * jobs}]}
        text = run.markdown({"started": "t", "machine": "m",
                             "operator": [scale(100, 420), scale(1000, 4100)]})
        self.assertIn("At 1000 jobs: **4.1 API requests per job** (target 5)", text)
        # Largest first.
        self.assertLess(text.index("| create | events | 2.00 |"), text.index("| patch | pods | 1.00 |"))


if __name__ == "__main__":
    unittest.main()
