"""`make bench`: mtl-trainer against the Python HuggingFace reference, and the operator at scale.

Everything is measured in this one run on this machine, and reported as ratios:

  1. the rate of a plain libtorch matmul at the model's FFN shape (the MFU denominator);
  2. loss agreement: mtl-trainer and the reference train the same initial weights on the same
     batches with dropout off, and their per-step losses are compared;
  3. throughput: mtl-trainer (per-batch padding, as it trains), mtl-trainer padded to maxLength,
     the reference in `best` mode (dynamic padding, fused AdamW) and in `original` mode
     (padding to maxLength), each in its own process with the same threads, model, batches;
  4. the operator against the Kubernetes API stand-in with 100 and 1000 jobs (mtl-operator's
     `scale` example);
  6. data parallel: `mtl-trainer train` as 2 ranks x 1 thread (Gloo over loopback) against
     1 rank x 2 threads on the same global batch, roberta-base dimensions: examples/s ratio,
     allreduce time per step and its share of the step, bytes reduced per step;
  5. data at scale: generated STS-B-format tasks of 200k and 1M sentence pairs (plus the
     bundled RTE) with MiniLM: tokenization examples/s against HF `datasets`' batched `map`,
     peak RSS and examples/s training on the 1M task against the bundled data, and the time to
     load the data with the token-store cache warm against cold.

Writes bench/results/<UTC time>-<parts run>.{json,md} (e.g. base+data+operator) and
bench/results/latest.md.

Usage: python bench/run.py [--config base|small] [--warmup 2] [--steps 10] [--agree-steps 4]
                           [--threads N] [--jobs 100,1000] [--skip-train] [--skip-operator]
                           [--device cpu|cuda] [--precision fp32|bf16]
                           [--data-sizes 200000,1000000] [--skip-data]
                           [--parallel-steps 8] [--skip-parallel]

On a GPU (`--device cuda --precision bf16`, what bench/gpu_check.sh runs) both sides train in
bf16 autocast on the GPU; the loss agreement then uses a bf16 tolerance.
"""

import argparse
import csv
import datetime
import json
import math
import os
import platform
import random
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = os.path.join(ROOT, "bench", "work")
RESULTS = os.path.join(ROOT, "bench", "results")
MTL_BENCH = os.path.join(ROOT, "target", "release", "mtl-bench")
MTL_TRAINER = os.path.join(ROOT, "target", "release", "mtl-trainer")
SCALE = os.path.join(ROOT, "target", "release", "examples", "scale")
OPERATOR = os.path.join(ROOT, "target", "release", "mtl-operator")
MINILM = os.path.join(ROOT, ".cache", "minilm")

# roberta-base dimensions, and a small encoder for a quick run.
CONFIGS = {
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "small": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024),
}
# The original's task mix at a tenth of its size (STS-B 5749, RTE 2490, CommonsenseQA 9741
# training examples), so proportional sampling picks tasks in the original's proportions.
SIZES = {"stsb": 575, "rte": 249, "csqa": 974}
# Sequence lengths of bench/ddp_reference.py's batches: HF-sized sequences, and short ones
# whose one-rank step costs about what mtl-trainer's step on the bench data costs here.
DDP_TOKENS = ("40-127", "12-39")
LOSS_TOLERANCE = {"fp32": 1e-3, "bf16": 3e-2}  # relative, per step


def sh(cmd, **kw):
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, **kw)


def make_data(out):
    """Benchmark data from the bundled examples, at GLUE-like lengths: RTE premises are several
    sentences long (RTE's average pair is ~70 tokens), STS-B and CommonsenseQA as bundled."""
    rng = random.Random(7)
    src = os.path.join(ROOT, "examples", "data")
    for task in ("stsb", "rte"):
        with open(os.path.join(src, task, "train.tsv"), newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
        pool = [r["sentence1"] for r in rows]
        os.makedirs(os.path.join(out, task), exist_ok=True)
        with open(os.path.join(out, task, "train.tsv"), "w", newline="") as f:
            w = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\", lineterminator="\n")
            w.writerow(["index", "sentence1", "sentence2", "label" if task == "rte" else "score"])
            for i in range(SIZES[task]):
                r = rows[i % len(rows)]
                s1 = r["sentence1"]
                if task == "rte":
                    s1 = " ".join([s1] + rng.sample(pool, 4))
                w.writerow([i, s1, r["sentence2"], r["label" if task == "rte" else "score"]])
    os.makedirs(os.path.join(out, "csqa"), exist_ok=True)
    with open(os.path.join(src, "csqa", "train.jsonl")) as f:
        lines = [l for l in f if l.strip()]
    with open(os.path.join(out, "csqa", "train.jsonl"), "w") as f:
        for i in range(SIZES["csqa"]):
            f.write(lines[i % len(lines)].rstrip("\n") + "\n")


def make_model(out, config):
    """A randomly initialised RoBERTa of the chosen dimensions, with MiniLM's tokenizer."""
    import torch
    from transformers import RobertaConfig, RobertaModel

    os.makedirs(out, exist_ok=True)
    cfg = RobertaConfig(
        vocab_size=50265,
        max_position_embeddings=514,
        type_vocab_size=1,
        pad_token_id=0,  # the tokenizer's [PAD]
        layer_norm_eps=1e-5,
        **CONFIGS[config],
    )
    torch.manual_seed(0)
    RobertaModel(cfg).save_pretrained(out)
    shutil.copy(os.path.join(MINILM, "tokenizer.json"), out)
    return cfg


def write_job(path, model_dir, data_dir, batch_size, precision="fp32"):
    job = {
        "apiVersion": "multitask.dev/v1alpha1",
        "kind": "MultiTaskTrainingJob",
        "metadata": {"name": "bench"},
        "spec": {
            "model": {"pretrained": model_dir, "maxLength": 128},
            "tasks": [
                {"name": "stsb", "type": "regression", "format": "glueTsv",
                 "train": f"{data_dir}/stsb/train.tsv", "textFields": ["sentence1", "sentence2"],
                 "labelField": "score"},
                {"name": "rte", "type": "classification", "format": "glueTsv",
                 "train": f"{data_dir}/rte/train.tsv", "textFields": ["sentence1", "sentence2"],
                 "labelField": "label", "labelNames": ["entailment", "not_entailment"]},
                {"name": "csqa", "type": "multipleChoice", "numChoices": 5, "format": "commonsenseQaJsonl",
                 "train": f"{data_dir}/csqa/train.jsonl", "labelNames": ["A", "B", "C", "D", "E"]},
            ],
            "sampling": {"strategy": "proportional"},
            "training": {"batchSize": batch_size, "learningRate": 1e-5, "warmupRatio": 0.1,
                         "weightDecay": 0.01, "seed": 42, "precision": precision},
            "checkpoints": {"uri": os.path.join(WORK, "checkpoints")},
        },
    }
    with open(path, "w") as f:
        json.dump(job, f, indent=1)


def train_flops(step, cfg, num_labels):
    """Useful model FLOPs of one training step (forward + backward = 3x forward): every matmul
    of the encoder and head over the real tokens, attention over each sequence's real length.
    Padding is not counted, whether or not an implementation computes it; embeddings, norms
    and softmax are not counted either."""
    d, L, dff = cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size
    layer = 2 * step["real_tokens"] * (4 * d * d + 2 * d * dff) + 2 * 2 * step["sum_sq_len"] * d
    head = 2 * step["rows"] * (d * d + d * num_labels[step["task"]])
    return 3 * (L * layer + head)


def summarize(report, cfg, num_labels, matmul):
    window = [s for s in report["steps"] if s["step"] >= report["warmup"]]
    secs = sum(s["data_s"] + s["compute_s"] for s in window)
    data_s = sum(s["data_s"] for s in window)
    rows = sum(s["rows"] for s in window)
    # Reading and tokenizing happen once per dataset: charge the window its share.
    tok_s = report["load_s"] * rows / max(report["tokenized_sequences"], 1)
    flops = sum(train_flops(s, cfg, num_labels) for s in window)
    real = sum(s["real_tokens"] for s in window)
    padded = sum(s["rows"] * s["seq_len"] for s in window)
    return {
        "implementation": report["implementation"],
        "padding": f"to {report['pad_to']}" if report["pad_to"] else "per batch",
        "steps": len(window),
        "seconds": secs,
        "step_s": secs / len(window),
        "examples_per_s": sum(s["examples"] for s in window) / secs,
        "real_tokens_per_s": real / secs,
        "padding_share": 1 - real / padded,
        "model_tflops_per_s": flops / secs / 1e12,  # useful FLOPs (no padding)
        "mfu": flops / secs / matmul["flops_per_s"],
        "data_share": (data_s + tok_s) / (secs + tok_s),
        "load_sequences_per_s": report["tokenized_sequences"] / max(report["load_s"], 1e-9),
        "collate_ms_per_step": 1e3 * data_s / len(window),
    }


def loss_agreement(rust, ref, tolerance=LOSS_TOLERANCE["fp32"]):
    rows = []
    for a, b in zip(rust["steps"], ref["steps"]):
        rows.append({
            "step": a["step"], "task": a["task"], "mtl_trainer": a["loss"], "reference": b["loss"],
            "rel_diff": abs(a["loss"] - b["loss"]) / max(abs(b["loss"]), 1e-6),
            "same_tokens": a["real_tokens"] == b["real_tokens"] and a["seq_len"] == b["seq_len"],
        })
    worst = max(r["rel_diff"] for r in rows)
    return {"steps": rows, "max_rel_diff": worst, "tolerance": tolerance,
            "ok": worst <= tolerance and all(r["same_tokens"] for r in rows)}


def bench_train(args, out):
    from transformers import RobertaConfig  # noqa: F401  (fails early without the venv)

    data_dir, model_dir = os.path.join(WORK, "data"), os.path.join(WORK, f"model-{args.config}")
    make_data(data_dir)
    cfg = make_model(model_dir, args.config)
    job = os.path.join(WORK, "job.json")
    write_job(job, model_dir, data_dir, args.batch_size, args.precision)
    num_labels = {"stsb": 1, "rte": 2, "csqa": 1}
    # Every run reads and tokenizes afresh: a cache left by an earlier run would hide that cost.
    train_cache = os.path.join(WORK, "train-cache")
    shutil.rmtree(train_cache, ignore_errors=True)
    threads = ["--threads", str(args.threads), "--device", args.device]
    ref_args = ["--threads", str(args.threads), "--device", args.device, "--precision", args.precision]
    py = sys.executable
    ref = os.path.join(ROOT, "bench", "reference.py")
    p = lambda name: os.path.join(WORK, name)  # noqa: E731

    d, dff = cfg.hidden_size, cfg.intermediate_size
    kind = "bfloat16" if args.precision == "bf16" else "float"
    sh([MTL_BENCH, "matmul", *threads, "--m", str(args.batch_size * 128), "--k", str(d), "--n", str(dff),
        "--kind", kind, "--out", p("matmul.json")])
    matmul = json.load(open(p("matmul.json")))

    # Loss agreement: same initial weights, same batches, no dropout.
    k = args.agree_steps
    sh([MTL_BENCH, "train", *threads, "--job", job, "--warmup", "0", "--steps", str(k), "--no-dropout",
        "--save-init", p("init.safetensors"), "--cache-dir", train_cache, "--out", p("agree-rust.json")])
    shutil.rmtree(train_cache, ignore_errors=True)
    sh([py, ref, *ref_args, "--job", job, "--plan", p("agree-rust.json"), "--init", p("init.safetensors"),
        "--mode", "best", "--warmup", "0", "--steps", str(k), "--no-dropout", "--out", p("agree-ref.json")])
    agreement = loss_agreement(json.load(open(p("agree-rust.json"))), json.load(open(p("agree-ref.json"))),
                               LOSS_TOLERANCE[args.precision])

    # Throughput, dropout on, each in its own process.
    w, n = str(args.warmup), str(args.steps)
    runs = {}
    sh([MTL_BENCH, "train", *threads, "--job", job, "--warmup", w, "--steps", n,
        "--cache-dir", train_cache, "--out", p("rust.json")])
    shutil.rmtree(train_cache, ignore_errors=True)
    runs["mtl-trainer"] = json.load(open(p("rust.json")))
    sh([MTL_BENCH, "train", *threads, "--job", job, "--warmup", w, "--steps", n, "--pad-to", "128",
        "--cache-dir", train_cache, "--out", p("rust-pad128.json")])
    shutil.rmtree(train_cache, ignore_errors=True)
    runs["mtl-trainer (padded to 128)"] = json.load(open(p("rust-pad128.json")))
    for mode in ("best", "original"):
        sh([py, ref, *ref_args, "--job", job, "--plan", p("rust.json"), "--init", p("init.safetensors"),
            "--mode", mode, "--warmup", w, "--steps", n, "--out", p(f"ref-{mode}.json")])
        runs[f"reference {mode}"] = json.load(open(p(f"ref-{mode}.json")))
    summary = {name: summarize(r, cfg, num_labels, matmul) for name, r in runs.items()}
    ours = summary["mtl-trainer"]["examples_per_s"]
    ratios = {
        "vs_best": ours / summary["reference best"]["examples_per_s"],
        "vs_original": ours / summary["reference original"]["examples_per_s"],
    }
    out["train"] = {
        "config": {"name": args.config, **CONFIGS[args.config], "vocab_size": cfg.vocab_size,
                   "batch_size": args.batch_size, "max_length": 128, "warmup_steps": args.warmup,
                   "measured_steps": args.steps, "threads": args.threads,
                   "task_sizes": SIZES, "device": args.device, "precision": args.precision},
        "matmul": matmul,
        "loss_agreement": agreement,
        "runs": summary,
        "ratios": ratios,
    }


def data_job(path, stsb_train, batch_size=16):
    """The data benchmark's job: MiniLM on an STS-B-format task (`stsb_train`) and the bundled
    RTE, validated on the bundled dev sets."""
    d = os.path.join(ROOT, "examples", "data")
    job = {
        "apiVersion": "multitask.dev/v1alpha1",
        "kind": "MultiTaskTrainingJob",
        "metadata": {"name": "data-bench"},
        "spec": {
            "model": {"pretrained": MINILM, "maxLength": 64},
            "tasks": [
                {"name": "stsb", "type": "regression", "format": "glueTsv", "train": stsb_train,
                 "validation": f"{d}/stsb/dev.tsv", "textFields": ["sentence1", "sentence2"],
                 "labelField": "score"},
                {"name": "rte", "type": "classification", "format": "glueTsv", "train": f"{d}/rte/train.tsv",
                 "validation": f"{d}/rte/dev.tsv", "textFields": ["sentence1", "sentence2"],
                 "labelField": "label", "labelNames": ["entailment", "not_entailment"]},
            ],
            "training": {"batchSize": batch_size, "learningRate": 5e-5, "seed": 42, "logEverySteps": 10},
            "checkpoints": {"uri": os.path.join(WORK, "data-checkpoints"), "everySteps": 100000},
        },
    }
    with open(path, "w") as f:
        json.dump(job, f, indent=1)
    return path


def peak_rss(cmd, env):
    """Runs `cmd` and returns (peak RSS in bytes, seconds) of that process alone."""
    import time

    print("+", " ".join(cmd), flush=True)
    started = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(p.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{cmd[0]} failed with {os.waitstatus_to_exitcode(status)}")
    return usage.ru_maxrss * 1024, time.perf_counter() - started


def bench_data(args, out):
    import large_data

    threads = ["--threads", str(args.threads)]
    p = lambda name: os.path.join(WORK, name)  # noqa: E731
    bundled = data_job(p("data-job-bundled.json"), os.path.join(ROOT, "examples", "data", "stsb", "train.tsv"))
    sizes = []
    for n in args.data_sizes:
        tsv = large_data.write(p(f"stsb-{n}.tsv"), n)
        job = data_job(p(f"data-job-{n}.json"), tsv)
        cache = p(f"data-cache-{n}")
        shutil.rmtree(cache, ignore_errors=True)
        sh([MTL_BENCH, "load", *threads, "--job", job, "--cache-dir", cache, "--out", p(f"load-cold-{n}.json")])
        sh([MTL_BENCH, "load", *threads, "--job", job, "--cache-dir", cache, "--out", p(f"load-warm-{n}.json")])
        hf_cache = p(f"hf-cache-{n}")
        shutil.rmtree(hf_cache, ignore_errors=True)
        sh([sys.executable, os.path.join(ROOT, "bench", "hf_tokenize.py"), "--data", tsv,
            "--tokenizer", os.path.join(MINILM, "tokenizer.json"), "--max-length", "64",
            "--cache-dir", hf_cache, "--out", p(f"hf-{n}.json")])
        shutil.rmtree(hf_cache, ignore_errors=True)
        cold, warm = json.load(open(p(f"load-cold-{n}.json"))), json.load(open(p(f"load-warm-{n}.json")))
        big = next(s for s in cold["stores"] if s["task"] == "stsb" and s["split"] == "train")
        hf = json.load(open(p(f"hf-{n}.json")))
        sizes.append({
            "rows": n, "tsv_bytes": os.path.getsize(tsv), "job": job, "cache": cache,
            "cold": cold, "warm": warm, "hf": hf, "store_bytes": big["bytes"], "tokens": big["tokens"],
            "from_cache_warm": all(s["from_cache"] for s in warm["stores"]),
        })
    largest = sizes[-1]
    # Training on the largest task against the bundled data: peak RSS of the whole process,
    # examples/s of the training steps; the largest task's stores come from the warm cache.
    env = dict(os.environ, MTL_CACHE_DIR=largest["cache"], RUST_LOG="warn")
    rss = {}
    for name, job in (("bundled", bundled), ("large", largest["job"])):
        shutil.rmtree(p("data-checkpoints"), ignore_errors=True)
        rss[name], _ = peak_rss([MTL_TRAINER, "--device", "cpu", *threads, "train", "--job", job,
                                 "--max-steps", str(args.data_steps)], env)
    shutil.rmtree(p("data-checkpoints"), ignore_errors=True)
    speed = {}
    for name, job in (("bundled", bundled), ("large", largest["job"])):
        sh([MTL_BENCH, "train", *threads, "--job", job, "--warmup", "3", "--steps", str(args.data_steps),
            "--cache-dir", largest["cache"], "--out", p(f"data-train-{name}.json")])
        r = json.load(open(p(f"data-train-{name}.json")))
        window = [s for s in r["steps"] if s["step"] >= r["warmup"]]
        speed[name] = sum(s["examples"] for s in window) / sum(s["data_s"] + s["compute_s"] for s in window)
    out["data"] = {
        "sizes": [{k: v for k, v in s.items() if k not in ("job", "cache")} for s in sizes],
        "train_steps": args.data_steps,
        "peak_rss_bytes": rss,
        "examples_per_s": speed,
        "ratios": data_ratios(sizes, rss, speed),
    }


def data_ratios(sizes, rss, speed):
    """The data benchmark's figures against their targets."""
    largest = sizes[-1]
    return {
        "tokenize_vs_datasets": [s["cold"]["examples_per_s"] / s["hf"]["examples_per_s"] for s in sizes],
        "rss_above_bundled_bytes": rss["large"] - rss["bundled"],
        "train_speed_large_over_bundled": speed["large"] / speed["bundled"],
        "restart_warm_s": largest["warm"]["seconds"],
        "restart_cold_s": largest["cold"]["seconds"],
    }


def train_lines(stderr):
    """The trainer's per-step `train` log lines (JSON lines on stderr)."""
    lines = []
    for line in stderr.splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict) and obj.get("message") == "train":
            lines.append(obj)
    return lines


def torch_ddp_lines(p_):
    """The torch DDP reference's table, and the reading of mtl-trainer's ratio against it: at
    the token range whose one-rank throughput is nearest mtl-trainer's, both runs set the same
    compute against the same allreduce."""
    refs = p_["torch_ddp"]
    ours = p_["runs"]["1 rank x 2 threads"]["examples_per_s"]
    lines = [
        "The same comparison for PyTorch's own DistributedDataParallel (Gloo, 25 MiB buckets overlapping "
        "the backward pass, fused AdamW) on the same encoder and global batch, random batches of the "
        "given lengths (`bench/ddp_reference.py`):",
        "",
        "| tokens per sequence | torch 1 rank x 2 threads (examples/s) | torch DDP 2 ranks x 1 thread (examples/s) | ratio |",
        "|---|---|---|---|",
    ]
    for t in refs:
        lines.append(
            f"| {t['tokens'][0]}-{t['tokens'][1]} | {fmt(t['1 rank x 2 threads']['examples_per_s'])} | "
            f"{fmt(t['2 ranks x 1 thread']['examples_per_s'])} | {fmt(t['ratio'])}x |"
        )
    near = min(refs, key=lambda t: abs(math.log(t["1 rank x 2 threads"]["examples_per_s"] / ours)))
    lines += [
        "",
        f"At {near['tokens'][0]}-{near['tokens'][1]} tokens torch's one-rank step costs about what "
        f"mtl-trainer's does ({fmt(near['1 rank x 2 threads']['examples_per_s'])} against {fmt(ours)} "
        f"examples/s): there torch DDP reaches **{fmt(near['ratio'])}x**, mtl-trainer "
        f"**{fmt(p_['ratio'])}x**.",
        "",
    ]
    return lines


def parallel_summary(lines, warmup):
    """Throughput and allreduce figures over the steps after `warmup`, from one-step log lines
    (`examples` and `interval_s` of each step: steps differ in examples and cost)."""
    window = [l for l in lines if l["step"] > warmup]
    if not window:
        raise SystemExit(f"no training step after {warmup} warm-up steps was logged")
    seconds = sum(l["interval_s"] for l in window)
    allreduce = sum(l.get("allreduce_s", 0.0) for l in window)
    return {
        "steps": len(window),
        "examples": sum(l["examples"] for l in window),
        "seconds": seconds,
        "examples_per_s": sum(l["examples"] for l in window) / seconds,
        "step_s": seconds / len(window),
        "allreduce_s_per_step": allreduce / len(window),
        "allreduce_share": allreduce / seconds,
        "reduced_bytes_per_step": sum(l.get("reduced_bytes", 0.0) for l in window) / len(window),
    }


def bench_parallel(args, out):
    """2 ranks x 1 thread against 1 rank x 2 threads, the same global batch and batches."""
    data_dir, model_dir = os.path.join(WORK, "data"), os.path.join(WORK, f"model-{args.config}")
    make_data(data_dir)
    cfg = make_model(model_dir, args.config)
    per_rank = args.batch_size // 2
    steps = args.warmup + args.parallel_steps
    runs = {}
    for name, ranks, batch in (("1 rank x 2 threads", 1, 2 * per_rank), ("2 ranks x 1 thread", 2, per_rank)):
        job = os.path.join(WORK, f"parallel-{ranks}.json")
        ckpt = os.path.join(WORK, f"parallel-checkpoints-{ranks}")
        write_job(job, model_dir, data_dir, batch)
        spec = json.load(open(job))
        spec["spec"]["training"].update({"maxSteps": steps, "logEverySteps": 1, "evalEverySteps": 0})
        spec["spec"]["checkpoints"] = {"uri": ckpt, "everySteps": 10**9}
        json.dump(spec, open(job, "w"), indent=1)
        shutil.rmtree(ckpt, ignore_errors=True)
        cmd = [MTL_TRAINER, "--device", "cpu", "--threads", str(2 // ranks), "train", "--job", job]
        if ranks > 1:
            cmd += ["--nproc-per-node", str(ranks)]
        env = dict(os.environ, MTL_CACHE_DIR=os.path.join(WORK, "parallel-cache"), RUST_LOG="info")
        print("+", " ".join(cmd), flush=True)
        done = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode != 0:
            sys.stderr.write(done.stderr[-4000:])
            raise SystemExit(f"{name}: mtl-trainer exited {done.returncode}")
        shutil.rmtree(ckpt, ignore_errors=True)
        runs[name] = {"ranks": ranks, "threads_per_rank": 2 // ranks, "batch_per_rank": batch,
                      **parallel_summary(train_lines(done.stderr), args.warmup)}
    one, two = runs["1 rank x 2 threads"], runs["2 ranks x 1 thread"]
    # The same comparison for PyTorch's own DistributedDataParallel on this machine, at two
    # sequence lengths: the allreduce costs the same whatever the batch, so the ratio depends on
    # how much compute a step has to set against it.
    torch_ddp = []
    for tokens in DDP_TOKENS:
        ddp = os.path.join(WORK, f"ddp-reference-{tokens}.json")
        sh([sys.executable, os.path.join(ROOT, "bench", "ddp_reference.py"), "--model", model_dir,
            "--tokens", tokens, "--global-batch", str(2 * per_rank), "--warmup", str(args.warmup),
            "--steps", str(args.parallel_steps), "--out", ddp])
        torch_ddp.append(json.load(open(ddp)))
    out["parallel"] = {
        "config": {"name": args.config, **CONFIGS[args.config], "vocab_size": cfg.vocab_size,
                   "global_batch": 2 * per_rank, "warmup_steps": args.warmup, "measured_steps": args.parallel_steps},
        "runs": runs,
        "ratio": two["examples_per_s"] / one["examples_per_s"],
        "torch_ddp": torch_ddp,
    }


def bench_operator(args, out):
    results = []
    for jobs in args.jobs:
        path = os.path.join(WORK, f"operator-{jobs}.json")
        sh([SCALE, "--operator", OPERATOR, "--jobs", str(jobs), "--out", path])
        results.append(json.load(open(path)))
    out["operator"] = results


def fmt(x, digits=2):
    return f"{x:.{digits}f}"


def markdown(out):
    lines = [f"# Benchmark {out['started']}", "", f"Machine: {out['machine']}", ""]
    if "train" in out:
        t = out["train"]
        c = t["config"]
        m = t["matmul"]
        lines += [
            f"## Training step, {c['name']} encoder ({c['num_hidden_layers']} layers, hidden {c['hidden_size']}, "
            f"FFN {c['intermediate_size']}, vocab {c['vocab_size']}), batch {c['batch_size']}, maxLength 128, "
            f"{c.get('precision', 'fp32')} on {c.get('device', 'cpu')}, {c['threads']} threads",
            "",
            f"{c['measured_steps']} measured steps after {c['warmup_steps']} warm-up steps, the same batches "
            f"(proportional sampling over STS-B/RTE/CSQA sized {c['task_sizes']}) for every row. "
            f"libtorch matmul ({m['m']}x{m['k']} @ {m['k']}x{m['n']}, {m['kind']}): "
            f"{fmt(m['flops_per_s'] / 1e9, 1)} GFLOP/s. Useful GFLOP/s counts the model's matmuls over the real "
            f"tokens only (forward + backward, the full encoder as HF defines it); MFU is that divided by the "
            f"matmul rate. mtl-trainer skips the padding and, in the last layer, every token but the first past "
            f"keys and values (the heads read the first token only), so it does less work than it is credited with "
            f"(about 7% less at 12 layers).",
            "",
            "| implementation | padding | examples/s | real tokens/s | padding share | step (s) | useful GFLOP/s | MFU | data pipeline share |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name, s in t["runs"].items():
            lines.append(
                f"| {name} | {s['padding']} | {fmt(s['examples_per_s'])} | {fmt(s['real_tokens_per_s'], 0)} | "
                f"{fmt(100 * s['padding_share'], 0)}% | {fmt(s['step_s'], 3)} | {fmt(s['model_tflops_per_s'] * 1e3, 1)} | "
                f"{fmt(s['mfu'])} | {fmt(100 * s['data_share'], 2)}% |"
            )
        lines += [
            "",
            "Data pipeline (reading and tokenization once per dataset, then sampling and collation every step):",
            "",
            "| implementation | reading + tokenization (sequences/s) | collation (ms/step) | share of step time |",
            "|---|---|---|---|",
        ]
        for name, s in t["runs"].items():
            lines.append(
                f"| {name} | {fmt(s['load_sequences_per_s'], 0)} | {fmt(s['collate_ms_per_step'], 2)} | "
                f"{fmt(100 * s['data_share'], 2)}% |"
            )
        r = t["ratios"]
        a = t["loss_agreement"]
        lines += [
            "",
            f"mtl-trainer / reference best: **{fmt(r['vs_best'])}x** examples/s; "
            f"mtl-trainer / reference original: **{fmt(r['vs_original'])}x**.",
            "",
            f"Loss agreement over the first {len(a['steps'])} steps (dropout off, same initial weights and "
            f"batches): max relative difference {a['max_rel_diff']:.2e} (tolerance {a['tolerance']:.0e}), "
            f"token counts {'identical' if all(s['same_tokens'] for s in a['steps']) else 'DIFFERENT'}: "
            f"**{'ok' if a['ok'] else 'FAILED'}**.",
            "",
            "| step | task | mtl-trainer loss | reference loss | relative difference |",
            "|---|---|---|---|---|",
        ]
        for s in a["steps"]:
            lines.append(f"| {s['step']} | {s['task']} | {s['mtl_trainer']:.6f} | {s['reference']:.6f} | {s['rel_diff']:.1e} |")
        lines.append("")
    if "data" in out:
        d = out["data"]
        r = d["ratios"]
        lines += [
            "## Data at scale (MiniLM tokenizer, maxLength 64)",
            "",
            "Generated STS-B-format tasks (bench/large_data.py) plus the bundled RTE. Tokenization: mtl-trainer reads, "
            "tokenizes and writes the token store into an empty cache (`mtl-bench load`); the reference is HF "
            "`datasets`: `load_dataset(\"csv\")` then `map(batched=True)` with the same fast tokenizer.",
            "",
            "| rows | TSV | mtl-trainer (examples/s) | HF datasets (examples/s) | ratio | store on disk | tokens | load, cache cold | load, cache warm |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for s_, ratio in zip(d["sizes"], r["tokenize_vs_datasets"]):
            lines.append(
                f"| {s_['rows']:,} | {s_['tsv_bytes'] / 2**20:.0f} MiB | {fmt(s_['cold']['examples_per_s'], 0)} | "
                f"{fmt(s_['hf']['examples_per_s'], 0)} | **{fmt(ratio)}x** | {s_['store_bytes'] / 2**20:.0f} MiB | "
                f"{s_['tokens']:,} | {fmt(s_['cold']['seconds'], 1)} s | {fmt(s_['warm']['seconds'], 2)} s |"
            )
        big = d["sizes"][-1]["rows"]
        lines += [
            "",
            f"Training {d['train_steps']} steps (batch 16, CPU) on the {big:,}-row task against the bundled data:",
            "",
            "| | bundled | large | |",
            "|---|---|---|---|",
            f"| peak RSS (whole process) | {d['peak_rss_bytes']['bundled'] / 2**20:.0f} MiB | "
            f"{d['peak_rss_bytes']['large'] / 2**20:.0f} MiB | +{r['rss_above_bundled_bytes'] / 2**20:.0f} MiB |",
            f"| examples/s | {fmt(d['examples_per_s']['bundled'])} | {fmt(d['examples_per_s']['large'])} | "
            f"**{fmt(r['train_speed_large_over_bundled'])}x** |",
            "",
            f"Restart with the token-store cache: {fmt(r['restart_warm_s'], 2)} s to load every store, against "
            f"{fmt(r['restart_cold_s'], 1)} s reading and tokenizing.",
            "",
        ]
    if "parallel" in out:
        p_ = out["parallel"]
        c = p_["config"]
        lines += [
            f"## Data parallel, {c['name']} encoder ({c['num_hidden_layers']} layers, hidden {c['hidden_size']}), "
            f"global batch {c['global_batch']}, CPU",
            "",
            f"`mtl-trainer train` both times, the same batches (proportional sampling over STS-B/RTE/CSQA); "
            f"{c['measured_steps']} measured steps after {c['warmup_steps']} warm-up steps. Two ranks run on Gloo "
            f"over loopback on this machine's cores; not measured here: NCCL, GPUs, a network between nodes.",
            "",
            "| run | batch per rank | examples/s | step (s) | allreduce per step (s) | allreduce share | reduced per step |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, r in p_["runs"].items():
            shared = r["ranks"] > 1
            lines.append(
                f"| {name} | {r['batch_per_rank']} | {fmt(r['examples_per_s'])} | "
                f"{fmt(r['step_s'], 2)} | "
                f"{fmt(r['allreduce_s_per_step'], 3) if shared else '-'} | "
                f"{fmt(100 * r['allreduce_share'], 1) + '%' if shared else '-'} | "
                f"{fmt(r['reduced_bytes_per_step'] / 2**20, 1) + ' MiB' if shared else '-'} |"
            )
        lines += ["", f"2 ranks / 1 rank examples/s: **{fmt(p_['ratio'])}x** (target 0.85).", ""]
        if "torch_ddp" in p_:
            lines += torch_ddp_lines(p_)
    if "operator" in out:
        lines += [
            "## Operator against the Kubernetes API stand-in",
            "",
            "| jobs | time to every pod (s) | time to every status (s) | peak RSS (MiB) | operator CPU (ms/job) | API requests / job | reconciles / job |",
            "|---|---|---|---|---|---|---|",
        ]
        for o in out["operator"]:
            lines.append(
                f"| {o['jobs']} | {fmt(o['seconds_to_pods'])} | {fmt(o['seconds_to_status'])} | "
                f"{fmt(o['peak_rss_bytes'] / 2**20, 1)} | {fmt(o['operator_cpu_ms_per_job'], 2)} | "
                f"{fmt(o['requests_per_job'], 1)} | {fmt(o['reconciles_per_job'], 1)} |"
            )
        ops = out["operator"]
        if len(ops) >= 2:
            a, b = ops[0], ops[-1]
            grow = b["jobs"] / a["jobs"]
            lines += [
                "",
                f"From {a['jobs']} to {b['jobs']} jobs ({grow:.0f}x): time to pods x{b['seconds_to_pods'] / a['seconds_to_pods']:.1f}, "
                f"time to status x{b['seconds_to_status'] / a['seconds_to_status']:.1f}, "
                f"peak RSS x{b['peak_rss_bytes'] / a['peak_rss_bytes']:.2f} "
                f"(+{(b['peak_rss_bytes'] - a['peak_rss_bytes']) / (b['jobs'] - a['jobs']) / 1024:.1f} KiB per job), "
                f"operator CPU per job x{b['operator_cpu_ms_per_job'] / max(a['operator_cpu_ms_per_job'], 1e-9):.2f}, "
                f"requests per job x{b['requests_per_job'] / a['requests_per_job']:.2f}.",
            ]
        top = ops[-1]
        lines += [
            "",
            f"At {top['jobs']} jobs: **{fmt(top['requests_per_job'], 1)} API requests per job** (target 5), "
            f"peak RSS **{fmt(top['peak_rss_bytes'] / 2**20, 1)} MiB** (target 64).",
            "",
            "| verb | resource | requests / job |",
            "|---|---|---|",
        ]
        for k in sorted(top.get("requests_by_kind", []), key=lambda k: -k["count"]):
            lines.append(f"| {k['verb']} | {k['resource']} | {fmt(k['count'] / top['jobs'], 2)} |")
        lines.append("")
    return "\n".join(lines)


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB, {platform.system()} {platform.release()}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", choices=sorted(CONFIGS), default="base")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--agree-steps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--jobs", default="100,1000", help="operator scale points, comma-separated")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--skip-operator", action="store_true")
    ap.add_argument("--data-sizes", default="200000,1000000", help="rows of the generated tasks")
    ap.add_argument("--data-steps", type=int, default=30)
    ap.add_argument("--skip-data", action="store_true")
    ap.add_argument("--parallel-steps", type=int, default=8)
    ap.add_argument("--skip-parallel", action="store_true")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    args = ap.parse_args()
    args.jobs = [int(j) for j in args.jobs.split(",") if j]
    args.data_sizes = [int(n) for n in args.data_sizes.split(",") if n]

    os.makedirs(WORK, exist_ok=True)
    os.makedirs(RESULTS, exist_ok=True)
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H-%M-%SZ")
    out = {"started": started, "machine": machine()}
    if not args.skip_train:
        bench_train(args, out)
    if not args.skip_data:
        bench_data(args, out)
    if not args.skip_parallel:
        bench_parallel(args, out)
    if not args.skip_operator:
        bench_operator(args, out)
    parts = [p for p, skip in ((args.config, args.skip_train), ("data", args.skip_data),
                               ("parallel", args.skip_parallel), ("operator", args.skip_operator)) if not skip]
    name = f"{started}-{'+'.join(parts) or 'none'}"
    with open(os.path.join(RESULTS, name + ".json"), "w") as f:
        json.dump(out, f, indent=1)
    md = markdown(out)
    for path in (os.path.join(RESULTS, name + ".md"), os.path.join(RESULTS, "latest.md")):
        with open(path, "w") as f:
            f.write(md)
    print(md)
    agreement = out.get("train", {}).get("loss_agreement")
    if agreement and not agreement["ok"]:
        sys.exit("loss agreement failed: the speed comparison is not of the same computation")


if __name__ == "__main__":
    main()
