#!/usr/bin/env python3
"""Reference crops for hrnet-runtime's pose preprocessing (kept for the record; tests never run it).

Reproduces the official top-down pipeline of deep-high-resolution-net.pytorch
(lib/dataset/JointsDataset.py `_xywh2cs`, lib/utils/transforms.py `get_affine_transform`,
`cv2.warpAffine(..., flags=cv2.INTER_LINEAR)`) on a few images and boxes, and writes:

  astronaut.png           the test photograph (skimage's astronaut.png, 512 px, halved with INTER_AREA)
  synth_gradient.png      97x61 synthetic gradient + noise
  synth_tiny.png          7x5 synthetic noise (extreme upscaling)
  crops/CASE.png          the 8-bit crop cv2.warpAffine produces (12 chosen cases, 36 random boxes)
  reference.json          per case: image, box, output size, center/scale (float32, as the official
                          code keeps them), the 2x3 transform of cv2.getAffineTransform as float64 bit
                          patterns (u64), and the crop file

The crops must come from OpenCV's fixed-point 8-bit warp (AB_BITS=10, INTER_BITS=5, 15-bit weights),
which OpenCV used up to 4.10 -- the versions the official pipeline ran with (its requirements pin
opencv-python 3.4.1.15). OpenCV 4.11 replaced the 8-bit INTER_LINEAR warpAffine by a floating-point
kernel; the script refuses to run there.

Usage (outside the repo):
  python3 -m venv /tmp/venv-cv && /tmp/venv-cv/bin/pip install numpy 'opencv-python-headless==4.10.0.84'
  pip download --no-deps scikit-image -d /tmp/ski && unzip -j /tmp/ski/*.whl skimage/data/astronaut.png -d /tmp/ski
  /tmp/venv-cv/bin/python make_reference.py /tmp/ski/astronaut.png
"""
import json
import os
import struct
import sys

import cv2
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def xywh2cs(x, y, w, h, image_size):
    """`JointsDataset._xywh2cs`: float32 center and scale, aspect padding, x 1.25, pixel_std 200."""
    aspect_ratio = image_size[0] * 1.0 / image_size[1]
    pixel_std = 200
    center = np.zeros((2), dtype=np.float32)
    center[0] = x + w * 0.5
    center[1] = y + h * 0.5
    if w > aspect_ratio * h:
        h = w * 1.0 / aspect_ratio
    elif w < aspect_ratio * h:
        w = h * aspect_ratio
    scale = np.array([w * 1.0 / pixel_std, h * 1.0 / pixel_std], dtype=np.float32)
    if center[0] != -1:
        scale = scale * 1.25
    return center, scale


def get_dir(src_point, rot_rad):
    sn, cs = np.sin(rot_rad), np.cos(rot_rad)
    src_result = [0, 0]
    src_result[0] = src_point[0] * cs - src_point[1] * sn
    src_result[1] = src_point[0] * sn + src_point[1] * cs
    return src_result


def get_3rd_point(a, b):
    direct = a - b
    return b + np.array([-direct[1], direct[0]], dtype=np.float32)


def get_affine_transform(center, scale, rot, output_size, shift=np.array([0, 0], dtype=np.float32), inv=0):
    """`lib/utils/transforms.py get_affine_transform`, verbatim in its arithmetic."""
    if not isinstance(scale, np.ndarray) and not isinstance(scale, list):
        scale = np.array([scale, scale])
    scale_tmp = scale * 200.0
    src_w = scale_tmp[0]
    dst_w = output_size[0]
    dst_h = output_size[1]
    rot_rad = np.pi * rot / 180
    src_dir = get_dir([0, src_w * -0.5], rot_rad)
    dst_dir = np.array([0, dst_w * -0.5], np.float32)
    src = np.zeros((3, 2), dtype=np.float32)
    dst = np.zeros((3, 2), dtype=np.float32)
    src[0, :] = center + scale_tmp * shift
    src[1, :] = center + src_dir + scale_tmp * shift
    dst[0, :] = [dst_w * 0.5, dst_h * 0.5]
    dst[1, :] = np.array([dst_w * 0.5, dst_h * 0.5]) + dst_dir
    src[2:, :] = get_3rd_point(src[0, :], src[1, :])
    dst[2:, :] = get_3rd_point(dst[0, :], dst[1, :])
    if inv:
        return cv2.getAffineTransform(np.float32(dst), np.float32(src))
    return cv2.getAffineTransform(np.float32(src), np.float32(dst))


def bits(v):
    return struct.unpack('<Q', struct.pack('<d', float(v)))[0]


# (name, image, box x y w h, output width, output height)
CASES = [
    ('astro_person_192x256', 'astronaut.png', (60.0, 10.0, 150.0, 240.0), 192, 256),
    ('astro_topleft_out_288x384', 'astronaut.png', (-40.0, -30.0, 120.0, 160.0), 288, 384),
    ('astro_whole_256x256', 'astronaut.png', (0.0, 0.0, 256.0, 256.0), 256, 256),
    ('astro_tiny_box_288x384', 'astronaut.png', (100.0, 60.0, 12.5, 17.3), 288, 384),
    ('astro_huge_box_192x256', 'astronaut.png', (-200.0, -100.0, 700.0, 500.0), 192, 256),
    ('astro_bottomright_out_256x256', 'astronaut.png', (180.3, 190.7, 100.2, 90.9), 256, 256),
    ('astro_downscale_64x96', 'astronaut.png', (3.0, 7.0, 250.0, 240.0), 64, 96),
    ('grad_upscale_192x256', 'synth_gradient.png', (10.5, 5.25, 40.0, 30.0), 192, 256),
    ('grad_around_256x256', 'synth_gradient.png', (-20.0, -10.0, 140.0, 80.0), 256, 256),
    ('grad_whole_288x384', 'synth_gradient.png', (0.0, 0.0, 97.0, 61.0), 288, 384),
    ('tiny_whole_192x256', 'synth_tiny.png', (0.0, 0.0, 7.0, 5.0), 192, 256),
    ('tiny_inner_64x96', 'synth_tiny.png', (1.0, 1.0, 3.0, 2.0), 64, 96),
]


def random_cases(n=36, seed=7):
    """Small crops of random boxes (fractional, anywhere from inside to far outside the image, tiny
    to huge), to exercise the rounding of the transform and of the warp on many matrices."""
    rng = np.random.default_rng(seed)
    images = [('astronaut.png', 256, 256), ('synth_gradient.png', 97, 61), ('synth_tiny.png', 7, 5)]
    sizes = [(64, 96), (48, 64), (96, 96), (72, 96)]
    cases = []
    for i in range(n):
        image, iw, ih = images[i % 3]
        w = float(np.round(np.exp(rng.uniform(np.log(0.5), np.log(3.0 * iw))), 3))
        h = float(np.round(np.exp(rng.uniform(np.log(0.5), np.log(3.0 * ih))), 3))
        x = float(np.round(rng.uniform(-w, iw), 3))
        y = float(np.round(rng.uniform(-h, ih), 3))
        ow, oh = sizes[i % 4]
        cases.append(('rand%02d_%dx%d' % (i, ow, oh), image, (x, y, w, h), ow, oh))
    return cases


def make_images(astronaut_src):
    astro = cv2.imread(astronaut_src, cv2.IMREAD_COLOR)
    assert astro.shape == (512, 512, 3), astro.shape
    astro = cv2.resize(astro, (256, 256), interpolation=cv2.INTER_AREA)
    cv2.imwrite(os.path.join(HERE, 'astronaut.png'), astro)
    rng = np.random.default_rng(20261129)
    yy, xx = np.mgrid[0:61, 0:97]
    grad = np.stack([xx * 255 // 96, yy * 255 // 60, rng.integers(0, 256, (61, 97))], -1).astype(np.uint8)
    cv2.imwrite(os.path.join(HERE, 'synth_gradient.png'), grad[:, :, ::-1])  # stored RGB = grad
    tiny = rng.integers(0, 256, (5, 7, 3)).astype(np.uint8)
    cv2.imwrite(os.path.join(HERE, 'synth_tiny.png'), tiny[:, :, ::-1])


def main():
    major, minor = (int(p) for p in cv2.__version__.split('.')[:2])
    if (major, minor) >= (4, 11):
        sys.exit('OpenCV %s warps 8-bit images in floating point; use <= 4.10' % cv2.__version__)
    make_images(sys.argv[1])
    os.makedirs(os.path.join(HERE, 'crops'), exist_ok=True)
    out = dict(opencv=cv2.__version__, cases=[])
    for name, image, box, w, h in CASES + random_cases():
        # The official pipeline reads BGR and converts to RGB (COLOR_RGB: true); the warp is per channel.
        img = cv2.cvtColor(cv2.imread(os.path.join(HERE, image), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        c, s = xywh2cs(*box, (w, h))
        trans = get_affine_transform(c, s, 0, (w, h))
        crop = cv2.warpAffine(img, trans, (int(w), int(h)), flags=cv2.INTER_LINEAR)
        cv2.imwrite(os.path.join(HERE, 'crops', name + '.png'), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
        out['cases'].append(dict(
            name=name, image=image, box=list(box), width=w, height=h,
            center=[float(v) for v in c], scale=[float(v) for v in s],
            trans=[float(v) for v in trans.reshape(-1)],
            trans_bits=[bits(v) for v in trans.reshape(-1)],
            crop='crops/%s.png' % name))
    with open(os.path.join(HERE, 'reference.json'), 'w') as f:
        json.dump(out, f, indent=1)
    print('wrote %d cases with OpenCV %s' % (len(out['cases']), cv2.__version__))


if __name__ == '__main__':
    main()
