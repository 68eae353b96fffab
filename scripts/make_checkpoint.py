#!/usr/bin/env python3
"""Write a synthetic float32 safetensors checkpoint (no numpy needed): Gaussian weight matrices of
about the requested total size, plus a bias vector per layer.

usage: make_checkpoint.py OUT.safetensors TOTAL_MB [--rows R] [--cols C] [--dtype F32|F16|BF16] [--seed S]
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
    args = parser.parse_args()

    rng = random.Random(args.seed)
    block = array("f", (rng.gauss(0.0, 0.02) for _ in range(args.rows * args.cols))).tobytes()
    bias = array("f", (rng.gauss(0.0, 0.01) for _ in range(args.rows))).tobytes()
    layers = max(1, int(args.total_mb * 1e6 // len(block)))

    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for i in range(layers):
        header[f"layers.{i}.weight"] = {"dtype": "F32", "shape": [args.rows, args.cols],
                                        "data_offsets": [offset, offset + len(block)]}
        offset += len(block)
        header[f"layers.{i}.bias"] = {"dtype": "F32", "shape": [args.rows],
                                      "data_offsets": [offset, offset + len(bias)]}
        offset += len(bias)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - (8 + len(text)) % 8) % 8)
    with open(args.out, "wb") as out:
        out.write(struct.pack("<Q", len(text)))
        out.write(text)
        for i in range(layers):
            # Each layer is the block rotated by a different amount: distinct tensors, same statistics.
            shift = (i * 4099 * 4) % len(block)
            out.write(block[shift:] + block[:shift])
            out.write(bias)


if __name__ == "__main__":
    main()
