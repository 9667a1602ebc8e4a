"""The Python reference for `make bench`: the original project's multi-task training step on
HuggingFace transformers + torch, run on the batches mtl-bench planned.

One encoder shared by per-task HF models (`AutoModelForSequenceClassification` for regression
and classification, `AutoModelForMultipleChoice`), as the original's Trainer subclass did;
AdamW with HF Trainer's decay groups, its linear warmup schedule, gradient clipping at 1.0 and
`zero_grad(set_to_none=True)`. Two modes:

  original  sequences padded to maxLength when tokenized (the original's preprocessing),
            torch.optim.AdamW as the Trainer of its time built it
  best      per-batch dynamic padding (DataCollatorWithPadding / DataCollatorForMultipleChoice)
            and fused AdamW (`adamw_torch_fused`, today's Trainer default)

Usage: reference.py --job JOB --plan RUST_REPORT.json --init INIT.safetensors --mode best
                    --warmup 2 --steps 10 [--no-dropout] --threads N [--device cuda]
                    [--precision bf16] --out OUT.json

On CUDA, `--precision bf16` runs the forward passes under `torch.autocast("cuda",
dtype=torch.bfloat16)`, as HF Trainer's `bf16=True` does.
"""

import argparse
import csv
import json
import math
import os
import sys
import time

import torch
import yaml
from safetensors.torch import load_file
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMultipleChoice,
    AutoModelForSequenceClassification,
    PreTrainedTokenizerFast,
    get_linear_schedule_with_warmup,
)


def load_job(path):
    with open(path) as f:
        doc = json.load(f) if path.endswith(".json") else yaml.safe_load(f)
    spec = doc.get("spec", doc)
    base = os.path.dirname(os.path.abspath(path))

    def resolve(p):
        return p if p.startswith("gs://") or os.path.isabs(p) else os.path.normpath(os.path.join(base, p))

    spec["model"]["pretrained"] = resolve(spec["model"]["pretrained"])
    for t in spec["tasks"]:
        t["train"] = resolve(t["train"])
    return spec


def read_task(task):
    """(list of [(text, pair)] per example, labels) from a GLUE TSV or CommonsenseQA JSONL."""
    seqs, labels = [], []
    if task["format"] == "glueTsv":
        with open(task["train"], newline="") as f:
            for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
                a, b = (row[c] for c in task["textFields"])
                seqs.append([(a, b)])
                raw = row[task["labelField"]]
                if task["type"] == "regression":
                    labels.append(float(raw))
                else:
                    labels.append(task["labelNames"].index(raw))
    elif task["format"] == "commonsenseQaJsonl":
        with open(task["train"]) as f:
            for line in f:
                if not line.strip():
                    continue
                r = json.loads(line)
                q = r["question"]
                seqs.append([(q["stem"], c["text"]) for c in q["choices"]])
                labels.append([c["label"] for c in q["choices"]].index(r["answerKey"]))
    else:
        sys.exit(f"reference.py: format {task['format']} is not supported by the benchmark")
    return seqs, labels


def num_labels(task):
    if task["type"] == "regression":
        return 1
    if task["type"] == "multipleChoice":
        return 1
    return len(task["labelNames"]) if task.get("labelNames") else task["numLabels"]


def build(spec, init_path, dropout):
    model_dir = spec["model"]["pretrained"]
    shared = AutoModel.from_config(AutoConfig.from_pretrained(model_dir))
    prefix = shared.base_model_prefix
    init = load_file(init_path)
    missing = shared.load_state_dict(
        {k[len(prefix) + 1 :]: v for k, v in init.items() if k.startswith(prefix + ".")}, strict=False
    ).missing_keys
    missing = [k for k in missing if "position_ids" not in k and "token_type_ids" not in k]
    if missing:
        sys.exit(f"reference.py: {init_path} lacks encoder tensors {missing[:3]}")
    models = {}
    for t in spec["tasks"]:
        cfg = AutoConfig.from_pretrained(model_dir, num_labels=num_labels(t))
        cls = AutoModelForMultipleChoice if t["type"] == "multipleChoice" else AutoModelForSequenceClassification
        m = cls.from_config(cfg)
        setattr(m, prefix, shared)
        head = f"heads.{t['name']}."
        state = {k[len(head) :]: v for k, v in init.items() if k.startswith(head)}
        own = {k: v for k, v in m.state_dict().items() if not k.startswith(prefix + ".")}
        if set(state) != set(own):
            sys.exit(f"reference.py: head tensors {sorted(state)} do not match HF's {sorted(own)}")
        m.load_state_dict(state, strict=False)
        m.train(dropout)
        models[t["name"]] = m
    return shared, models


def optimizer(models, mode, spec):
    seen, decay, no_decay = set(), [], []
    for m in models.values():
        for name, p in m.named_parameters():
            if id(p) in seen:
                continue
            seen.add(id(p))
            (no_decay if name.endswith(".bias") or "LayerNorm" in name else decay).append(p)
    tr = spec["training"]
    groups = [
        {"params": decay, "weight_decay": tr.get("weightDecay", 0.0)},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    params = decay + no_decay
    lr = tr.get("learningRate", 2e-5)
    opt = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8, fused=(mode == "best"))
    return opt, params


def tokenize(tok, spec, tasks_data, mode):
    max_len = spec["model"]["maxLength"]
    encoded = {}
    for name, (seqs, labels) in tasks_data.items():
        flat = [pair for ex in seqs for pair in ex]
        enc = tok(
            [a for a, _ in flat],
            [b for _, b in flat],
            truncation=True,
            max_length=max_len,
            padding="max_length" if mode == "original" else False,
            return_token_type_ids=False,
        )
        rows, i = [], 0
        for ex in seqs:
            rows.append([{k: enc[k][i + j] for k in ("input_ids", "attention_mask")} for j in range(len(ex))])
            i += len(ex)
        encoded[name] = rows
    return encoded


def collate(tok, features, labels, regression, device):
    """DataCollatorWithPadding / DataCollatorForMultipleChoice: pad to the longest (a no-op on
    sequences already padded to maxLength), multiple choice flattened then reshaped."""
    choices = len(features[0])
    flat = [f for ex in features for f in ex]
    batch = tok.pad(flat, padding=True, return_tensors="pt")
    if choices > 1:
        batch = {k: v.view(len(features), choices, -1) for k, v in batch.items()}
    batch["labels"] = torch.tensor(labels, dtype=torch.float if regression else torch.long)
    return {k: v.to(device) for k, v in batch.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--job", required=True)
    ap.add_argument("--plan", required=True, help="mtl-bench's report: its plan is followed")
    ap.add_argument("--init", required=True)
    ap.add_argument("--mode", choices=["original", "best"], required=True)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--no-dropout", action="store_true")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    spec = load_job(args.job)
    with open(args.plan) as f:
        rust = json.load(f)
    total = args.warmup + args.steps
    plan = rust["plan"][:total]
    if len(plan) < total:
        sys.exit(f"reference.py: {args.plan} plans {len(plan)} steps, {total} asked")
    tasks = {t["name"]: t for t in spec["tasks"]}

    tok = PreTrainedTokenizerFast(
        tokenizer_file=os.path.join(spec["model"]["pretrained"], "tokenizer.json"), pad_token="[PAD]"
    )
    started = time.perf_counter()
    data = {t["name"]: read_task(t) for t in spec["tasks"]}
    encoded = tokenize(tok, spec, data, args.mode)
    load_s = time.perf_counter() - started

    torch.manual_seed(spec["training"].get("seed", 42))
    shared, models = build(spec, args.init, not args.no_dropout)
    device = torch.device(args.device)
    shared.to(device)
    for m in models.values():
        m.to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    autocast = lambda: torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16")  # noqa: E731
    if tok.pad_token_id != shared.config.pad_token_id:
        sys.exit(f"reference.py: tokenizer pads with {tok.pad_token_id}, the model with {shared.config.pad_token_id}")
    opt, params = optimizer(models, args.mode, spec)
    sched = rust["schedule"]
    scheduler = get_linear_schedule_with_warmup(opt, sched["warmup"], sched["total"])
    max_norm = spec["training"].get("maxGradNorm", 1.0)

    steps = []
    for step, p in enumerate(plan):
        t0 = time.perf_counter()
        name = p["task"]
        task = tasks[name]
        features = [encoded[name][i] for i in p["examples"]]
        labels = [data[name][1][i] for i in p["examples"]]
        batch = collate(tok, features, labels, task["type"] == "regression", device)
        sync()
        t1 = time.perf_counter()
        lr = scheduler.get_last_lr()[0]
        with autocast():
            loss = models[name](**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, max_norm)
        opt.step()
        scheduler.step()
        opt.zero_grad(set_to_none=True)
        value = loss.item()
        sync()
        t2 = time.perf_counter()
        ids = batch["input_ids"]
        steps.append(
            {
                "step": step,
                "task": name,
                "examples": len(features),
                "rows": int(math.prod(ids.shape[:-1])),
                "seq_len": int(ids.shape[-1]),
                "real_tokens": int(batch["attention_mask"].sum()),
                "sum_sq_len": int((batch["attention_mask"].sum(-1) ** 2).sum()),
                "loss": value,
                "lr": lr,
                "data_s": t1 - t0,
                "compute_s": t2 - t1,
            }
        )
    report = {
        "implementation": f"transformers {__import__('transformers').__version__} ({args.mode})",
        "device": args.device,
        "precision": args.precision,
        "threads": torch.get_num_threads(),
        "pad_to": spec["model"]["maxLength"] if args.mode == "original" else None,
        "dropout": not args.no_dropout,
        "warmup": args.warmup,
        "load_s": load_s,
        "tokenized_sequences": sum(len(ex) for rows in encoded.values() for ex in rows),
        "steps": steps,
    }
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
