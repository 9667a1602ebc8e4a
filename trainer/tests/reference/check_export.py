"""Loads a directory written by `mtl-trainer export` with transformers and checks that it
predicts what `mtl-trainer predict` wrote.

Usage: python check_export.py EXPORT_DIR INPUT_JSONL PREDICTIONS_JSONL MAX_LENGTH
INPUT lines are {"sentence1", "sentence2"} (sequence classification) or CommonsenseQA
records (multiple choice). MAX_LENGTH is the length the task was trained at: the exported
tokenizer must say so (`model_max_length`), and truncating where it says must give what
`predict` gave.
"""

import json
import sys

import torch
from transformers import AutoConfig, AutoModelForMultipleChoice, AutoModelForSequenceClassification, AutoTokenizer


def main(export_dir, input_path, preds_path, max_length):
    config = AutoConfig.from_pretrained(export_dir)
    multiple_choice = config.architectures[0].endswith("ForMultipleChoice")
    cls = AutoModelForMultipleChoice if multiple_choice else AutoModelForSequenceClassification
    model = cls.from_pretrained(export_dir).eval()
    tok = AutoTokenizer.from_pretrained(export_dir)
    assert tok.model_max_length == max_length, (tok.model_max_length, max_length)
    records = [json.loads(l) for l in open(input_path) if l.strip()]
    preds = [json.loads(l) for l in open(preds_path) if l.strip()]
    assert len(records) == len(preds), (len(records), len(preds))
    worst = 0.0
    for rec, pred in zip(records, preds):
        if multiple_choice:
            q = rec["question"]
            firsts = [q["stem"]] * len(q["choices"])
            seconds = [c["text"] for c in q["choices"]]
            enc = tok(firsts, seconds, truncation="longest_first", padding=True, return_tensors="pt")
            enc = {k: v.unsqueeze(0) for k, v in enc.items()}
        else:
            enc = tok(rec["sentence1"], rec["sentence2"], truncation="longest_first", return_tensors="pt")
        with torch.no_grad():
            logits = model(**enc).logits[0].tolist()
        worst = max(worst, max(abs(a - b) for a, b in zip(logits, pred["scores"])))
        if not multiple_choice and config.problem_type == "single_label_classification":
            label = config.id2label[max(range(len(logits)), key=lambda i: logits[i])]
            assert label == pred["prediction"], (label, pred)
    print(f"max |logit difference| = {worst:.2e}")
    assert worst < 1e-4, worst


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
