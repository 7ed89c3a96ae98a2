#!/usr/bin/env python3
"""Reference data for hrnet-runtime's classification / segmentation heads and image pipelines
(kept for the record; tests never run it).

Writes next to this script:

  bilinear/CASE_in.npy, CASE_out.npy
        random float32 NCHW tensors and F.interpolate(mode='bilinear', align_corners) of them
        (up- and downscaling, sizes that are not multiples of 2, 1-pixel outputs)
  argmax/CASE_logits.npy, CASE_classes.npy
        random logits and F.interpolate(...).argmax(1) at a larger size (float32 class indices)
  resize/CASE.png
        PIL's Image.resize((w, h), BILINEAR) of the pose test photos (8-bit RGB, lossless);
        Pillow 13 runs the vertical pass first when the height shrinks by more than twice as
        many pixels as the width (300x199, 200x100 below), older releases never
  reference.json
        the cases above, plus for the classification pipeline (torchvision
        Compose([Resize(256), CenterCrop(224), ToTensor(), Normalize(mean, std)])) and the
        segmentation normalization (HRNet-Semantic-Segmentation's input_transform in numpy):
        the tensor's shape, its float64 sum and sum of squares, and 500 seeded samples
        (flat index, float32 value) -- the whole tensors would be megabytes

Usage: /path/to/venv/bin/python make_reference.py   (torch, torchvision, pillow, numpy)
"""
import json
import os

import numpy as np
import PIL
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torchvision import transforms

HERE = os.path.dirname(os.path.abspath(__file__))
POSE = os.path.join(HERE, '..', 'pose')
MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]


def save(path, arr):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.save(path, np.ascontiguousarray(arr, dtype=np.float32))


def load_image(name, box):
    img = Image.open(os.path.join(POSE, name)).convert('RGB')
    if box is not None:
        img = img.crop(tuple(box))
    return img


def samples(t, seed, n=500):
    flat = np.ascontiguousarray(t, dtype=np.float32).reshape(-1)
    idx = np.random.default_rng(seed).choice(flat.size, size=min(n, flat.size), replace=False)
    idx.sort()
    return dict(
        shape=list(t.shape),
        sum=float(flat.astype(np.float64).sum()),
        sum_sq=float((flat.astype(np.float64) ** 2).sum()),
        samples=[[int(i), float(flat[i])] for i in idx],
    )


def main():
    ref = dict(
        versions=dict(torch=torch.__version__, torchvision=torchvision.__version__,
                      pillow=PIL.__version__, numpy=np.__version__),
        bilinear=[], argmax=[], resize=[], classification=[], segmentation=[])
    g = torch.Generator().manual_seed(13)

    # Bilinear resizing of random tensors, as the segmentation networks call it.
    cases = [((9, 13), (18, 26)), ((5, 7), (18, 26)), ((3, 4), (18, 26)), ((5, 7), (9, 13)),
             ((18, 26), (7, 5)), ((4, 6), (4, 6)), ((1, 1), (3, 5)), ((6, 9), (1, 1)),
             ((2, 3), (17, 1))]
    for (hi, wi), (ho, wo) in cases:
        for align in (False, True):
            name = f'c5_{hi}x{wi}_to_{ho}x{wo}_{"ac" if align else "hp"}'
            x = torch.randn((1, 5, hi, wi), generator=g)
            y = F.interpolate(x, size=(ho, wo), mode='bilinear', align_corners=align)
            save(os.path.join(HERE, 'bilinear', name + '_in.npy'), x.numpy())
            save(os.path.join(HERE, 'bilinear', name + '_out.npy'), y.numpy())
            ref['bilinear'].append(dict(name=name, channels=5, input=[hi, wi], output=[ho, wo],
                                        align_corners=align))

    # Logits → image size → argmax (the segmentation pipeline's last step).
    for (k, hi, wi, ho, wo, align) in [(5, 9, 13, 72, 104, False), (7, 18, 26, 61, 97, True),
                                       (19, 8, 16, 32, 64, False)]:
        name = f'k{k}_{hi}x{wi}_to_{ho}x{wo}_{"ac" if align else "hp"}'
        x = torch.randn((1, k, hi, wi), generator=g) * 3
        y = F.interpolate(x, size=(ho, wo), mode='bilinear', align_corners=align)
        save(os.path.join(HERE, 'argmax', name + '_logits.npy'), x.numpy())
        save(os.path.join(HERE, 'argmax', name + '_classes.npy'), y.argmax(1).float().numpy())
        ref['argmax'].append(dict(name=name, classes=k, input=[hi, wi], output=[ho, wo],
                                  align_corners=align))

    # PIL's antialiased bilinear resize: down, up, mixed, odd sizes, one axis unchanged.
    images = [('astronaut.png', None), ('astronaut.png', [13, 40, 213, 171]),
              ('synth_gradient.png', None), ('synth_tiny.png', None)]
    sizes = {
        0: [(100, 100), (123, 45), (300, 199), (200, 100), (150, 100), (256, 77), (31, 256),
            (1, 1)],
        1: [(256, 168), (57, 93), (389, 256)],
        2: [(40, 90), (407, 256), (97, 30), (5, 3)],
        3: [(358, 256), (3, 11), (7, 2)],
    }
    for i, (img_name, box) in enumerate(images):
        img = load_image(img_name, box)
        for (w, h) in sizes[i]:
            name = f'{os.path.splitext(img_name)[0]}{i}_{w}x{h}'
            out = img.resize((w, h), Image.BILINEAR)
            os.makedirs(os.path.join(HERE, 'resize'), exist_ok=True)
            out.save(os.path.join(HERE, 'resize', name + '.png'))
            ref['resize'].append(dict(name=name, image=img_name, box=box, size=[w, h]))

    # Classification: the official evaluation transform (HRNet-Image-Classification valid.py:
    # Resize(int(224 / 0.875)), CenterCrop(224), ToTensor, Normalize).
    tf = transforms.Compose([transforms.Resize(int(224 / 0.875)), transforms.CenterCrop(224),
                             transforms.ToTensor(), transforms.Normalize(mean=MEAN, std=STD)])
    for i, (img_name, box) in enumerate(images):
        img = load_image(img_name, box)
        t = tf(img).numpy()
        ref['classification'].append(dict(image=img_name, box=box, crop=224,
                                          **samples(t, 100 + i)))

    # Segmentation: base_dataset.input_transform (image[:, :, ::-1] of cv2's BGR is RGB).
    for i, (img_name, box) in enumerate(images):
        rgb = np.asarray(load_image(img_name, box))
        image = rgb.astype(np.float32)
        image = image / 255.0
        image -= MEAN
        image /= STD
        t = image.transpose((2, 0, 1))
        ref['segmentation'].append(dict(image=img_name, box=box, **samples(t, 200 + i)))

    with open(os.path.join(HERE, 'reference.json'), 'w') as f:
        json.dump(ref, f, indent=1)
        f.write('\n')


if __name__ == '__main__':
    main()
