"""The reference for `make bench`'s data-parallel part: PyTorch's own DistributedDataParallel
(Gloo) on the same machine, 2 ranks x 1 thread against 1 rank x 2 threads with the same global
batch, so the ratio mtl-trainer reaches can be read against what torch reaches here.

The model is the bench's encoder (config.json of MODEL_DIR, random weights) under
AutoModelForSequenceClassification, AdamW (fused), batches of random tokens whose lengths are
drawn uniformly from --tokens LO-HI, padded per batch as HF's collator does. The token range
sets the compute of a step against the fixed cost of its allreduce (the whole model's
gradients): run it once with a range whose one-rank throughput matches mtl-trainer's, so the
two ratios compare the same balance of compute and communication.

Usage: ddp_reference.py --model MODEL_DIR --tokens 40-127 --global-batch 8 --warmup 2 --steps 8
       --out OUT.json
"""

import argparse
import json
import os
import socket
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from transformers import AutoConfig, AutoModelForSequenceClassification


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def token_range(text):
    """`LO-HI` (inclusive) as a pair, LO >= 2 so every sequence has more than its specials."""
    try:
        lo, hi = (int(x) for x in text.split("-"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--tokens {text!r}: expected LO-HI, e.g. 40-127")
    if not 2 <= lo <= hi:
        raise argparse.ArgumentTypeError(f"--tokens {text!r}: need 2 <= LO <= HI")
    return lo, hi


def batches(cfg, global_batch, steps, tokens, seed=0):
    """The same global batches for every run: (ids, mask, labels) per step."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        lengths = torch.randint(tokens[0], tokens[1] + 1, (global_batch,), generator=g)
        width = int(lengths.max())
        ids = torch.randint(5, cfg.vocab_size, (global_batch, width), generator=g)
        mask = (torch.arange(width)[None, :] < lengths[:, None]).long()
        ids = ids * mask + cfg.pad_token_id * (1 - mask)
        labels = torch.randint(0, 2, (global_batch,), generator=g)
        out.append((ids, mask, labels))
    return out


def worker(rank, world, port, args, result):
    torch.set_num_threads(2 // world)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    cfg = AutoConfig.from_pretrained(args.model, num_labels=2)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(cfg)
    model.train()
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    times = []
    for i, (ids, mask, labels) in enumerate(batches(cfg, args.global_batch, args.warmup + args.steps, args.tokens)):
        shard = slice(rank * args.global_batch // world, (rank + 1) * args.global_batch // world)
        ids, mask, labels = ids[shard], mask[shard], labels[shard]
        width = int(mask.sum(1).max())
        if world > 1:
            dist.barrier()
        t0 = time.perf_counter()
        loss = model(input_ids=ids[:, :width], attention_mask=mask[:, :width], labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if world > 1:
            dist.barrier()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    if rank == 0:
        result.put(sum(times))
    if world > 1:
        dist.destroy_process_group()


def run(world, args):
    ctx = mp.get_context("spawn")
    result = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=worker, args=(r, world, port, args, result)) for r in range(world)]
    for p in procs:
        p.start()
    seconds = result.get()
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise SystemExit(f"rank exited {p.exitcode}")
    return {"ranks": world, "threads_per_rank": 2 // world, "seconds": seconds,
            "examples_per_s": args.global_batch * args.steps / seconds}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--tokens", type=token_range, default=(40, 127), help="LO-HI tokens per sequence")
    ap.add_argument("--global-batch", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    one = run(1, args)
    two = run(2, args)
    json.dump({"tokens": list(args.tokens), "1 rank x 2 threads": one, "2 ranks x 1 thread": two,
               "ratio": two["examples_per_s"] / one["examples_per_s"]}, open(args.out, "w"), indent=1)


if __name__ == "__main__":
    main()
