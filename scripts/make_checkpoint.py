#!/usr/bin/env python3
"""Write a synthetic float32 safetensors checkpoint (no numpy needed): Gaussian weight matrices of
about the requested total size, plus a bias vector per layer.

usage: make_checkpoint.py OUT.safetensors TOTAL_MB [--rows R] [--cols C] [--seed S] [--shards N]

With --shards N, OUT is a directory that receives model-0000i-of-0000N.safetensors and
model.safetensors.index.json, the way sharded Hugging Face checkpoints ship.
"""
import argparse
import json
import random
import struct
from array import array


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("total_mb", type=float)
    parser.add_argument("--rows", type=int, default=1024)
    parser.add_argument("--cols", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--shards", type=int, default=0)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    block = array("f", (rng.gauss(0.0, 0.02) for _ in range(args.rows * args.cols))).tobytes()
    bias = array("f", (rng.gauss(0.0, 0.01) for _ in range(args.rows))).tobytes()
    layers = max(1, int(args.total_mb * 1e6 // len(block)))

    names = [(f"layers.{i}.weight", f"layers.{i}.bias", i) for i in range(layers)]
    if args.shards <= 0:
        write_file(args.out, names, block, bias, args)
        return
    import os
    os.makedirs(args.out, exist_ok=True)
    per = -(-layers // args.shards)
    weight_map, total = {}, 0
    for s in range(args.shards):
        part = names[s * per:(s + 1) * per]
        file = f"model-{s + 1:05d}-of-{args.shards:05d}.safetensors"
        write_file(os.path.join(args.out, file), part, block, bias, args)
        for w, b, _ in part:
            weight_map[w] = weight_map[b] = file
            total += len(block) + len(bias)
    with open(os.path.join(args.out, "model.safetensors.index.json"), "w") as out:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, out, indent=2)


def write_file(path, names, block, bias, args):
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for weight, b, _ in names:
        header[weight] = {"dtype": "F32", "shape": [args.rows, args.cols],
                          "data_offsets": [offset, offset + len(block)]}
        offset += len(block)
        header[b] = {"dtype": "F32", "shape": [args.rows], "data_offsets": [offset, offset + len(bias)]}
        offset += len(bias)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - (8 + len(text)) % 8) % 8)
    with open(path, "wb") as out:
        out.write(struct.pack("<Q", len(text)))
        out.write(text)
        for _, _, i in names:
            # Each layer is the block rotated by a different amount: distinct tensors, same statistics.
            shift = (i * 4099 * 4) % len(block)
            out.write(block[shift:] + block[:shift])
            out.write(bias)

if __name__ == "__main__":
    main()
