"""Reference numerics from HuggingFace transformers for the trainer's parity tests.

For small random BERT and RoBERTa configs this writes, per model type, a directory with:
  config.json                the encoder config (as transformers saves it)
  model.safetensors          the multi-task layout: encoder + heads.<task>.classifier.*
  expected.safetensors       inputs, logits, losses, gradients and one AdamW step
Tasks: reg (regression, 1 output), cls (3 classes), mc (multiple choice, 3 choices).
Dropout is 0 so train-mode gradients are deterministic.

Usage: python hf_reference.py OUT_DIR
"""

import os
import sys

import torch
from safetensors.torch import save_file
from transformers import (
    BertConfig,
    BertForMultipleChoice,
    BertForSequenceClassification,
    RobertaConfig,
    RobertaForMultipleChoice,
    RobertaForSequenceClassification,
)

VOCAB, SEQ, BATCH, CHOICES = 99, 12, 4, 3


def config(kind):
    common = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        initializer_range=0.2,
    )
    if kind == "bert":
        return BertConfig(max_position_embeddings=64, type_vocab_size=2, layer_norm_eps=1e-12, pad_token_id=0, **common)
    return RobertaConfig(max_position_embeddings=66, type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=1, **common)


def inputs(kind, rows, gen):
    pad = 0 if kind == "bert" else 1
    ids = torch.randint(3, VOCAB, (rows, SEQ), generator=gen)
    mask = torch.ones(rows, SEQ, dtype=torch.long)
    for r in range(rows):
        n = SEQ - (r % 4) * 2  # some rows padded
        ids[r, n:] = pad
        mask[r, n:] = 0
    types = torch.zeros(rows, SEQ, dtype=torch.long)
    if kind == "bert":
        types[:, SEQ // 2 :] = 1
        types = types * mask
    return ids, types, mask


def main(out):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    for kind in ["bert", "roberta"]:
        cfg = config(kind)
        seq_cls = BertForSequenceClassification if kind == "bert" else RobertaForSequenceClassification
        mc_cls = BertForMultipleChoice if kind == "bert" else RobertaForMultipleChoice
        prefix = "bert" if kind == "bert" else "roberta"
        cfg_reg = cfg.__class__(**{**cfg.to_dict(), "num_labels": 1})
        cfg_cls = cfg.__class__(**{**cfg.to_dict(), "num_labels": 3})
        models = {
            "mc": mc_cls(cfg),
            "reg": seq_cls(cfg_reg),
            "cls": seq_cls(cfg_cls),
        }
        # One shared encoder: the multiple-choice model's (it has the pooler).
        enc = getattr(models["mc"], prefix).state_dict()
        for name in ["reg", "cls"]:
            missing, _ = getattr(models[name], prefix).load_state_dict(enc, strict=False)
            assert all("pooler" in m for m in missing), missing
        tensors = {f"{prefix}.{k}": v.clone() for k, v in enc.items() if "position_ids" not in k}
        for name, m in models.items():
            for k, v in m.state_dict().items():
                if k.startswith("classifier."):
                    tensors[f"heads.{name}.{k}"] = v.clone()

        d = os.path.join(out, kind)
        os.makedirs(d, exist_ok=True)
        cfg.save_pretrained(d)
        save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(d, "model.safetensors"))

        expected = {}
        for name, m in models.items():
            rows = BATCH * CHOICES if name == "mc" else BATCH
            ids, types, mask = inputs(kind, rows, gen)
            if name == "reg":
                labels = torch.rand(BATCH, generator=gen) * 5
            elif name == "cls":
                labels = torch.randint(0, 3, (BATCH,), generator=gen)
            else:
                labels = torch.randint(0, CHOICES, (BATCH,), generator=gen)
            shape = (BATCH, CHOICES, SEQ) if name == "mc" else (rows, SEQ)
            kwargs = dict(input_ids=ids.view(shape), attention_mask=mask.view(shape))
            if kind == "bert":
                kwargs["token_type_ids"] = types.view(shape)
            m.eval()
            with torch.no_grad():
                expected[f"{name}.eval_logits"] = m(**kwargs).logits
            m.train()
            m.zero_grad()
            outputs = m(**kwargs, labels=labels)
            outputs.loss.backward()
            expected[f"{name}.input_ids"] = ids
            expected[f"{name}.token_type_ids"] = types
            expected[f"{name}.attention_mask"] = mask
            expected[f"{name}.labels"] = labels.double()
            expected[f"{name}.loss"] = outputs.loss.detach().reshape(1)
            expected[f"{name}.logits"] = outputs.logits.detach()
            for k, p in m.named_parameters():
                if p.grad is None:
                    continue
                our = f"heads.{name}.{k}" if k.startswith("classifier.") else k
                expected[f"{name}.grad.{our}"] = p.grad.detach().clone()
            if name == "cls":
                # Two AdamW steps (HF Trainer grouping: no decay on biases and LayerNorm).
                decay = [p for k, p in m.named_parameters() if not (k.endswith(".bias") or "LayerNorm" in k)]
                no_decay = [p for k, p in m.named_parameters() if k.endswith(".bias") or "LayerNorm" in k]
                opt = torch.optim.AdamW(
                    [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                    lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
                )
                opt.step()
                opt.step()
                for k, p in m.named_parameters():
                    our = f"heads.{name}.{k}" if k.startswith("classifier.") else k
                    expected[f"{name}.adamw.{our}"] = p.detach().clone()
        save_file({k: v.contiguous() for k, v in expected.items()}, os.path.join(d, "expected.safetensors"))


if __name__ == "__main__":
    main(sys.argv[1])
