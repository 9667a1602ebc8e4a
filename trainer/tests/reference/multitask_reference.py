"""The transformers reference for the trainer's multi-task parity test: the original design's
multi-task training (one encoder shared by per-task HF heads, `torch.optim.AdamW` with HF
Trainer's decay groups, `get_linear_schedule_with_warmup`, `clip_grad_norm_`,
`zero_grad(set_to_none=True)`), replayed on the exact batches mtl trained on.

  multitask_reference.py models OUT_DIR
      writes OUT_DIR/{bert,roberta}/ as transformers saves a base model (config.json,
      model.safetensors; dropout off), for mtl to load as `spec.model.pretrained`
  multitask_reference.py replay RUN_DIR
      reads RUN_DIR/run.json (model dir, tasks, steps, schedule, hyper-parameters),
      RUN_DIR/init.safetensors (mtl's initial encoder + heads) and RUN_DIR/batches.safetensors
      (step<s>.micro<m>.<input>), trains, and writes RUN_DIR/reference.safetensors: every
      parameter at the end under mtl's names, and `loss` (one per micro-batch, in order)
"""

import json
import os
import sys

import torch
from safetensors.torch import load_file, save_file
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMultipleChoice,
    AutoModelForSequenceClassification,
    BertConfig,
    BertModel,
    RobertaConfig,
    RobertaModel,
    get_linear_schedule_with_warmup,
)

VOCAB = 30522  # the tokenizer the test uses (MiniLM's) decides the vocabulary


def models(out):
    torch.manual_seed(0)
    common = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        initializer_range=0.2,
        pad_token_id=0,
    )
    made = {
        # BERT: the pooler feeds every head.
        "bert": BertModel(BertConfig(max_position_embeddings=64, type_vocab_size=2, **common)),
        # RoBERTa: only the multiple-choice head reads the pooler; positions start past the pad.
        "roberta": RobertaModel(
            RobertaConfig(max_position_embeddings=66, type_vocab_size=1, layer_norm_eps=1e-5, **common)
        ),
    }
    for name, m in made.items():
        # Non-zero biases everywhere so that their updates are measured, not trivially equal.
        with torch.no_grad():
            for p_name, p in m.named_parameters():
                if p_name.endswith("bias"):
                    p.normal_(0.0, 0.05)
        m.save_pretrained(os.path.join(out, name), safe_serialization=True)


def num_labels(task):
    if task["type"] == "classification":
        return len(task["labelNames"]) if task.get("labelNames") else task["numLabels"]
    return 1


def replay(run_dir):
    with open(os.path.join(run_dir, "run.json")) as f:
        run = json.load(f)
    torch.set_num_threads(1)
    init = load_file(os.path.join(run_dir, "init.safetensors"))
    batches = load_file(os.path.join(run_dir, "batches.safetensors"))
    model_dir = run["model"]

    shared = AutoModel.from_config(AutoConfig.from_pretrained(model_dir))
    prefix = shared.base_model_prefix
    enc = {k[len(prefix) + 1 :]: v for k, v in init.items() if k.startswith(prefix + ".")}
    missing = shared.load_state_dict(enc, strict=False).missing_keys
    missing = [k for k in missing if "position_ids" not in k and "token_type_ids" not in k]
    if missing:
        sys.exit(f"multitask_reference.py: init lacks encoder tensors {missing[:3]}")
    heads = {}
    for t in run["tasks"]:
        cfg = AutoConfig.from_pretrained(model_dir, num_labels=num_labels(t))
        cls = AutoModelForMultipleChoice if t["type"] == "multipleChoice" else AutoModelForSequenceClassification
        m = cls.from_config(cfg)
        setattr(m, prefix, shared)
        head = f"heads.{t['name']}."
        state = {k[len(head) :]: v for k, v in init.items() if k.startswith(head)}
        own = {k for k in m.state_dict() if not k.startswith(prefix + ".")}
        if set(state) != own:
            sys.exit(f"multitask_reference.py: head tensors {sorted(state)} are not HF's {sorted(own)}")
        m.load_state_dict(state, strict=False)
        m.train()  # dropout is 0 in the config: train mode is deterministic
        heads[t["name"]] = m

    # One parameter list under mtl's names; HF Trainer's decay groups.
    named = {f"{prefix}.{k}": p for k, p in shared.named_parameters()}
    for name, m in heads.items():
        for k, p in m.named_parameters():
            if not k.startswith(prefix + "."):
                named[f"heads.{name}.{k}"] = p
    decay = [p for k, p in named.items() if not (k.endswith(".bias") or "LayerNorm" in k)]
    no_decay = [p for k, p in named.items() if k.endswith(".bias") or "LayerNorm" in k]
    hp = run["training"]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": hp["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
        lr=hp["learning_rate"],
        betas=(0.9, 0.999),
        eps=1e-8,
    )
    sched = get_linear_schedule_with_warmup(opt, hp["warmup_steps"], hp["total_steps"])
    params = list(named.values())

    losses = []
    for s, micro in enumerate(run["steps"]):
        for m_i, task_name in enumerate(micro):
            key = f"step{s}.micro{m_i}."
            task = next(t for t in run["tasks"] if t["name"] == task_name)
            ids = batches[key + "input_ids"]
            inputs = {
                "input_ids": ids,
                "attention_mask": batches[key + "attention_mask"],
                "token_type_ids": batches[key + "token_type_ids"],
            }
            labels = batches[key + "labels"]
            if task["type"] == "multipleChoice":
                n = labels.shape[0]
                inputs = {k: v.view(n, -1, v.shape[-1]) for k, v in inputs.items()}
            labels = labels.float() if task["type"] == "regression" else labels.long()
            loss = heads[task_name](**inputs, labels=labels).loss
            (loss / len(micro)).backward()
            losses.append(loss.item())
        torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], hp["max_grad_norm"])
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)

    out = {k: p.detach().contiguous() for k, p in named.items()}
    out["loss"] = torch.tensor(losses, dtype=torch.float64)
    save_file(out, os.path.join(run_dir, "reference.safetensors"))


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("models", "replay"):
        sys.exit(__doc__)
    {"models": models, "replay": replay}[sys.argv[1]](sys.argv[2])
