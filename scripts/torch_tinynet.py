#!/usr/bin/python3
"""TinyNet QAT in PyTorch with grphi's semantics: a by-hand cross-check of examples/tinynet_qat.

Not used by the tests or the demo (they must not need Python). Needs the Debian package
python3-torch. Same data, model, recipe and quantizer semantics as examples/tinynet_qat.cpp:
  784-256-10, no bias, ReLU; AdamW lr 1e-3 (wd 1e-2), batch 64, pixels x/255; 5 FP32 epochs;
  QAT from the FP32 weights, fresh AdamW lr 3e-4, 2 epochs; per-channel exponents, fc1 clip
  [-16, 8] with exponent sharing over blocks of --fc1-cluster weights (rounded mean over the
  block's nonzero members), fc2 clip [-12, 8]; identity STE: w + (q(w) - w).detach().

  /usr/bin/python3 scripts/torch_tinynet.py [--fc1-cluster 32] [--seed 0] [--epochs 5] [--qat-epochs 2]
"""
import argparse
import gzip
import math

import torch
import torch.nn.functional as F

DATA = "/usr/share/datasets/fashion-mnist"


def load(split):
    prefix = "train" if split == "train" else "t10k"
    with gzip.open(f"{DATA}/{prefix}-images-idx3-ubyte.gz") as f:
        images = torch.frombuffer(bytearray(f.read()[16:]), dtype=torch.uint8).view(-1, 784)
    with gzip.open(f"{DATA}/{prefix}-labels-idx1-ubyte.gz") as f:
        labels = torch.frombuffer(bytearray(f.read()[8:]), dtype=torch.uint8)
    return images.float() / 255.0, labels.long()


def quantize(w, base, e_min, e_max, cluster):
    """sign * base^k, k = round(log_b |w|) clipped; blocks share the rounded mean of their members' k."""
    magnitude = w.abs().double()
    k = torch.round(torch.log(magnitude.clamp_min(1e-300)) / math.log(base)).clamp(e_min, e_max)
    member = (magnitude > 0).double()
    if cluster > 1:
        rows, cols = k.shape
        pad = (-cols) % cluster
        k_blocks = F.pad(k * member, (0, pad)).view(rows, -1, cluster).sum(-1)
        count = F.pad(member, (0, pad)).view(rows, -1, cluster).sum(-1)
        shared = torch.where(count > 0, torch.round(k_blocks / count.clamp_min(1)), torch.full_like(count, e_min))
        k = shared.repeat_interleave(cluster, dim=1)[:, :cols]
    return (torch.sign(w.double()) * torch.pow(torch.tensor(base, dtype=torch.float64), k)).to(w.dtype)


class TinyNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(784, 256, bias=False)
        self.fc2 = torch.nn.Linear(256, 10, bias=False)
        self.quant = None  # (base, fc1_cluster) when quantized

    def weights(self):
        w1, w2 = self.fc1.weight, self.fc2.weight
        if self.quant is None:
            return w1, w2
        base, cluster = self.quant
        q1 = quantize(w1.detach(), base, -16, 8, cluster)
        q2 = quantize(w2.detach(), base, -12, 8, 0)
        return w1 + (q1 - w1).detach(), w2 + (q2 - w2).detach()  # identity STE

    def forward(self, x):
        w1, w2 = self.weights()
        return F.linear(F.relu(F.linear(x, w1)), w2)


def accuracy(net, x, y):
    with torch.no_grad():
        return (net(x).argmax(1) == y).float().mean().item() * 100


def train(net, x, y, epochs, lr, seed):
    opt = torch.optim.AdamW(net.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), 64):
            idx = order[i:i + 64]
            loss = F.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fc1-cluster", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--qat-epochs", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    x, y = load("train")
    xt, yt = load("test")
    net = TinyNet()
    train(net, x, y, args.epochs, 1e-3, args.seed)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    print(f"fp32 {args.epochs} epochs: {accuracy(net, xt, yt):.2f} %")
    more = TinyNet()
    more.load_state_dict(state)
    train(more, x, y, args.qat_epochs, 3e-4, args.seed + 1)
    print(f"fp32 +{args.qat_epochs} epochs at 3e-4: {accuracy(more, xt, yt):.2f} %")
    for name, base in (("phi", (1 + 5 ** 0.5) / 2), ("two", 2.0)):
        net_q = TinyNet()
        net_q.load_state_dict(state)
        net_q.quant = (base, args.fc1_cluster)
        print(f"PTQ {name}: {accuracy(net_q, xt, yt):.2f} %")
        train(net_q, x, y, args.qat_epochs, 3e-4, args.seed + 1)
        print(f"QAT {name} (fc1 cluster {args.fc1_cluster}): {accuracy(net_q, xt, yt):.2f} %")


if __name__ == "__main__":
    main()
