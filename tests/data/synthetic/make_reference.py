#!/usr/bin/env python3
"""PyTorch references for networks whose weights are too large to keep in the repository
(kept for the record; tests never run it).

The weights are not stored: every tensor is a pure function of its state_dict name, its shape
and a seed, which `hrnet_tests::synthetic_weights` (tests/lib.rs) computes bit for bit the same
way. Per tensor, a SplitMix64 stream seeded with FNV-1a-64(name) XOR seed gives u in [0, 1)
(the top 53 bits), evaluated in f64 and rounded to f32:

  *.running_var            0.5 + u
  *.running_mean           (u - 0.5) * 0.2
  2-D and 4-D *.weight     (2u - 1) * sqrt(3 / fan_in)      (variance 1/fan_in; fan_in = in*k*k)
  *.bn2.weight, *.bn3.weight  (0.5 + u) / 4   (the last BN of a residual block: keeps the
                           sums of deep networks near unit scale without calibration)
  other 1-D *.weight (BN gamma)  0.5 + u
  *.bias                   (u - 0.5) * 0.2
  *.num_batches_tracked    not generated (optional)

The model is the one of the shared reference generator (`hrnet_ref.py`: timm's HRNet modules
with the official heads and state_dict names). Writes into OUT_DIR: config.yaml, input.npy
(seeded normal, NCHW), expected.npy, expected_aux.npy (OCR) and meta.json.

Usage: make_reference.py REFGEN_DIR CONFIG.yaml OUT_DIR --seed N [--size H W]
       [--input INPUT.npy]   (default: a seeded normal input)
Needs: torch, timm, numpy, pyyaml.
"""
import argparse
import json
import os
import shutil
import sys

import numpy as np

M = (1 << 64) - 1


def fnv1a(name):
    h = 0xcbf29ce484222325
    for b in name.encode():
        h = ((h ^ b) * 0x100000001b3) & M
    return h


def uniform(name, n, seed):
    """n values of u in [0, 1): SplitMix64 over the counter, vectorized with wrapping uint64."""
    s0 = np.uint64((fnv1a(name) ^ seed) & M)
    with np.errstate(over='ignore'):
        z = s0 + np.arange(1, n + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


def synthetic(name, shape, seed):
    n = int(np.prod(shape)) if shape else 1
    u = uniform(name, n, seed)
    if name.endswith('running_var'):
        v = 0.5 + u
    elif name.endswith('running_mean'):
        v = (u - 0.5) * 0.2
    elif name.endswith('.weight') and len(shape) >= 2:
        fan_in = int(np.prod(shape[1:]))
        v = (2.0 * u - 1.0) * np.sqrt(3.0 / fan_in)
    elif name.endswith(('.bn2.weight', '.bn3.weight')):
        v = (0.5 + u) * 0.25
    elif name.endswith('.weight'):
        v = 0.5 + u
    elif name.endswith('.bias'):
        v = (u - 0.5) * 0.2
    else:
        raise SystemExit(f'no synthetic rule for {name}')
    return v.astype(np.float32).reshape(shape)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('refgen')
    ap.add_argument('config')
    ap.add_argument('out')
    ap.add_argument('--seed', type=int, required=True)
    ap.add_argument('--size', type=int, nargs=2, metavar=('H', 'W'))
    ap.add_argument('--input')
    args = ap.parse_args()
    sys.path.insert(0, args.refgen)
    import torch
    import yaml
    import hrnet_ref as ref

    with open(args.config) as f:
        cfg = yaml.safe_load(f)
    name = cfg['MODEL']['NAME']
    head = ('ocr' if name == 'seg_hrnet_ocr' else 'segmentation' if name.startswith('seg')
            else 'classification')
    model = ref.ClsHRNet(cfg) if head == 'classification' else ref.SegHRNet(cfg, head == 'ocr')
    model.eval()
    sd = model.official_state_dict()
    # official name -> the module's own state_dict name
    own = {}
    for k in model.state_dict():
        own[k] = k
    params = 0
    new = {}
    for off, t in sd.items():
        if off.endswith('num_batches_tracked'):
            continue
        v = torch.from_numpy(synthetic(off, list(t.shape), args.seed))
        t.copy_(v)  # official_state_dict() shares storage with the model's tensors
        params += v.numel()
    if args.input:
        x = torch.from_numpy(np.load(args.input))
    else:
        g = torch.Generator().manual_seed(args.seed)
        if args.size:
            h, w = args.size
        elif head == 'classification':
            w, h = cfg['MODEL']['IMAGE_SIZE']
        else:
            w, h = cfg['TEST']['IMAGE_SIZE']
        x = torch.randn((1, 3, h, w), generator=g)
    with torch.no_grad():
        y = model(x)
    os.makedirs(args.out, exist_ok=True)
    shutil.copyfile(args.config, os.path.join(args.out, 'config.yaml'))
    np.save(os.path.join(args.out, 'input.npy'), x.numpy().astype(np.float32))
    np.save(os.path.join(args.out, 'expected.npy'), y.numpy().astype(np.float32))
    if head == 'ocr':
        np.save(os.path.join(args.out, 'expected_aux.npy'),
                model.last_aux.numpy().astype(np.float32))
    meta = dict(head=head, seed=args.seed, input_shape=list(x.shape),
                output_shape=list(y.shape), output_absmax=float(y.abs().max()),
                output_std=float(y.std()), tensor_values=params, torch=torch.__version__)
    with open(os.path.join(args.out, 'meta.json'), 'w') as f:
        json.dump(meta, f, indent=1)
    print(json.dumps(meta))


if __name__ == '__main__':
    main()
