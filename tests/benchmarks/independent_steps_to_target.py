"""Steps to 0.97 validation accuracy from a plain PyTorch loop that shares no code with the harness:
its own IDX reader, model, Adam, sampling and log-spaced checks. Same settings as the default sweep
(55,000 training images after a 5,000 held-out prefix, MLP 784-500-500-500-10, Adam 1e-3, 4 epochs).

    python tests/benchmarks/independent_steps_to_target.py DATA_DIR OUT.json [--seeds 0,1]
"""
import argparse
import gzip
import json
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def idx(path):
    blob = gzip.open(path).read()
    dims = [int.from_bytes(blob[4 + 4 * i:8 + 4 * i], "big") for i in range(blob[3])]
    return np.frombuffer(blob, np.uint8, offset=4 + 4 * len(dims)).reshape(dims)


def checks(total, per_decade=25, first=10):
    step, out = first, []
    while step <= total:
        out.append(step)
        step = max(step + 1, math.floor(step * 10 ** (1 / per_decade)))
    return out


def steps_to_target(x, y, batch, seed, target=0.97, epochs=4, val=5000):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(784, 500), nn.ReLU(), nn.Linear(500, 500), nn.ReLU(),
                          nn.Linear(500, 500), nn.ReLU(), nn.Linear(500, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    tx, ty, vx, vy = x[val:], y[val:], x[:val], y[:val]
    per_epoch = len(tx) // batch
    todo, previous = checks(epochs * per_epoch), 0
    generator = torch.Generator().manual_seed(1000 + seed)
    for step in range(1, epochs * per_epoch + 1):
        if (step - 1) % per_epoch == 0:
            order = torch.randperm(len(tx), generator=generator)
        i = order[((step - 1) % per_epoch) * batch:((step - 1) % per_epoch + 1) * batch]
        loss = F.cross_entropy(model(tx[i]), ty[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if todo and step == todo[0]:
            todo.pop(0)
            with torch.no_grad():
                accuracy = (model(vx).argmax(1) == vy).float().mean().item()
            if accuracy >= target:
                return step, previous
            previous = step
    return None, previous


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    parser.add_argument("out")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--batches", default="8,32,128,512,2048")
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    x = torch.tensor(idx(f"{args.data}/train-images-idx3-ubyte.gz").reshape(-1, 784), dtype=torch.float32) / 255
    y = torch.tensor(idx(f"{args.data}/train-labels-idx1-ubyte.gz").astype(np.int64))
    rows = []
    for batch in map(int, args.batches.split(",")):
        for seed in map(int, args.seeds.split(",")):
            steps, before = steps_to_target(x, y, batch, seed)
            rows.append({"batch_size": batch, "seed": seed, "steps_to_target": steps, "steps_before": before})
            print(rows[-1], flush=True)
    json.dump({"loop": "independent plain PyTorch", "target": 0.97, "rows": rows}, open(args.out, "w"), indent=2)


if __name__ == "__main__":
    main()
