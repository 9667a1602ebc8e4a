"""Large GLUE-format tasks for `make bench`'s data benchmark: STS-B-style sentence pairs
(GLUE TSV with STS-B's columns) of any size, made from the bundled examples' sentences
recombined with a seeded generator, so that no two rows are alike and the text has the
bundled data's lengths.

  python bench/large_data.py --rows 1000000 --out bench/work/stsb-1000000.tsv
"""

import argparse
import csv
import os
import random

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEADER = ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2", "score"]


def sentences():
    pool = []
    for task in ("stsb", "rte"):
        for split in ("train", "dev"):
            with open(os.path.join(ROOT, "examples", "data", task, f"{split}.tsv"), newline="") as f:
                for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
                    pool += [row["sentence1"], row["sentence2"]]
    return pool


def write(path, rows, seed=11):
    """Writes `rows` sentence pairs to `path` (once: an existing file of that size is kept)."""
    if os.path.exists(path):
        with open(path) as f:
            if sum(1 for _ in f) == rows + 1:
                return path
    rng = random.Random(seed)
    pool = sentences()
    words = [w for s in pool for w in s.split()]
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("\t".join(HEADER) + "\n")
        for i in range(rows):
            a = rng.choice(pool)
            # The pair: another sentence, or the first with a few words swapped.
            if rng.random() < 0.5:
                b = rng.choice(pool)
            else:
                ws = a.split()
                for _ in range(rng.randint(1, 3)):
                    ws[rng.randrange(len(ws))] = rng.choice(words)
                b = " ".join(ws)
            score = round(rng.uniform(0, 5), 3)
            f.write(f"{i}\tmain-captions\tlarge\t2026\t{i:07d}\tnone\tnone\t{a}\t{b}\t{score}\n")
    os.replace(tmp, path)
    return path


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    write(args.out, args.rows)
