"""References for the trainer's activation functions and metrics.

  functions_reference.py activations OUT.safetensors
      every parameter-free activation of transformers' ACT2FN on a fixed input grid
  functions_reference.py metrics IN.json OUT.json
      sklearn's accuracy and F1 (binary with pos_label, macro) and scipy's Pearson and Spearman
      for the cases in IN.json
"""

import json
import math
import warnings
import sys

import torch
from safetensors.torch import save_file

NAMES = [
    "gelu", "gelu_10", "gelu_fast", "gelu_new", "gelu_python", "gelu_pytorch_tanh",
    "gelu_python_tanh", "gelu_accurate", "hardswish", "laplace", "leaky_relu", "linear",
    "mish", "quick_gelu", "relu", "relu2", "relu6", "sigmoid", "silu", "sqrtsoftplus",
    "swish", "tanh",
]


def grid():
    return torch.linspace(-12.0, 12.0, 481, dtype=torch.float32)


def activations(out):
    from transformers.activations import ACT2FN

    x = grid()
    save_file({"input": x, **{n: ACT2FN[n](x).clone().contiguous() for n in NAMES}}, out)


def nan_to_none(x):
    return None if math.isnan(x) else x


def metrics(inp, out):
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    with open(inp) as f:
        cases = json.load(f)
    results = []
    for c in cases:
        r = {}
        if "scores" in c:
            with warnings.catch_warnings():
                # Constant input: scipy warns and answers NaN, which JSON carries as null.
                warnings.simplefilter("ignore")
                r["pearson"] = nan_to_none(float(pearsonr(c["scores"], c["gold_scores"])[0]))
                r["spearman"] = nan_to_none(float(spearmanr(c["scores"], c["gold_scores"])[0]))
        else:
            r["accuracy"] = float(accuracy_score(c["gold"], c["pred"]))
            r["f1_binary"] = float(f1_score(c["gold"], c["pred"], average="binary", pos_label=c["positive"], labels=[0, 1], zero_division=0)) if c["classes"] == 2 else None
            r["f1_macro"] = float(f1_score(c["gold"], c["pred"], average="macro", zero_division=0))
            r["mcc"] = float(matthews_corrcoef(c["gold"], c["pred"]))
        results.append(r)
    with open(out, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "activations":
        activations(sys.argv[2])
    elif len(sys.argv) >= 4 and sys.argv[1] == "metrics":
        metrics(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
