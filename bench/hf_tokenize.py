"""The tokenization reference for `make bench`: what a Python user does with HF `datasets` —
`load_dataset("csv")` on the GLUE TSV, then `map(batched=True)` with the same fast tokenizer
(truncation to maxLength, no padding) — timed in this process.

  python bench/hf_tokenize.py --data stsb.tsv --tokenizer tokenizer.json --max-length 64
                              --cache-dir DIR --out hf.json
"""

import argparse
import csv
import json
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", required=True)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--cache-dir", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    from datasets import load_dataset
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_file=args.tokenizer, pad_token="[PAD]")
    started = time.perf_counter()
    ds = load_dataset(
        "csv",
        data_files=args.data,
        delimiter="\t",
        quoting=csv.QUOTE_NONE,
        cache_dir=args.cache_dir,
        split="train",
    )
    loaded = time.perf_counter()

    def encode(batch):
        return tok(batch["sentence1"], batch["sentence2"], truncation=True, max_length=args.max_length)

    out = ds.map(encode, batched=True, remove_columns=ds.column_names)
    done = time.perf_counter()
    rows = len(out)
    tokens = sum(len(x) for x in out.data.column("input_ids").to_pylist()[:1000]) / min(rows, 1000)
    with open(args.out, "w") as f:
        json.dump(
            {
                "examples": rows,
                "read_s": loaded - started,
                "map_s": done - loaded,
                "seconds": done - started,
                "examples_per_s": rows / (done - started),
                "mean_tokens_first_1000": tokens,
            },
            f,
            indent=1,
        )


if __name__ == "__main__":
    main()
