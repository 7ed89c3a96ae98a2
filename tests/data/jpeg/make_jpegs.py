#!/usr/bin/env python3
"""Test JPEGs and OpenCV's decoding of them, for hrnet-runtime's JPEG decoder (kept for the record;
tests never run it).

Encodes crops of ../pose/astronaut.png in the JPEG variants COCO-style data sets contain and writes,
for each `NAME.jpg`, `NAME.png`: the pixels of
`cv2.imread(path, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)` (libjpeg-turbo 3.0.3 inside
opencv-python-headless 4.10: integer ISLOW IDCT, fancy upsampling), converted BGR -> RGB and stored
losslessly. That flag pair is how the official deep-high-resolution-net.pytorch reads images: EXIF
orientation is ignored. `exif_rot90.jpg` carries orientation 6; for the record, `exif_rot90_applied.png`
is what a plain `cv2.imread` (which applies the orientation) returns.

Usage: /path/to/venv/bin/python make_jpegs.py   (numpy, opencv-python-headless==4.10.*, pillow)
"""
import io
import os

import cv2
import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
assert cv2.__version__.startswith("4.10"), cv2.__version__

src = cv2.imread(os.path.join(HERE, "..", "pose", "astronaut.png"), cv2.IMREAD_COLOR)
S = cv2.IMWRITE_JPEG_SAMPLING_FACTOR


def crop(x, y, w, h):
    return np.ascontiguousarray(src[y : y + h, x : x + w])


# name: (BGR image, cv2.imwrite params); odd sizes exercise partial MCUs and the upsampling edges.
CASES = {
    "baseline_420": (crop(60, 20, 101, 77), [cv2.IMWRITE_JPEG_QUALITY, 90, S, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420]),
    "baseline_444": (crop(80, 40, 64, 48), [cv2.IMWRITE_JPEG_QUALITY, 95, S, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]),
    "baseline_422": (crop(10, 100, 75, 53), [cv2.IMWRITE_JPEG_QUALITY, 85, S, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422]),
    "baseline_440": (crop(100, 60, 66, 59), [cv2.IMWRITE_JPEG_QUALITY, 85, S, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_440]),
    "baseline_411": (crop(30, 150, 83, 41), [cv2.IMWRITE_JPEG_QUALITY, 85, S, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_411]),
    "low_quality_420": (crop(120, 120, 90, 70), [cv2.IMWRITE_JPEG_QUALITY, 20, S, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420]),
    "progressive_420": (crop(0, 0, 97, 83), [cv2.IMWRITE_JPEG_QUALITY, 90, cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
    "restart_420": (crop(140, 30, 88, 72), [cv2.IMWRITE_JPEG_QUALITY, 90, cv2.IMWRITE_JPEG_RST_INTERVAL, 3]),
    "grayscale": (cv2.cvtColor(crop(50, 80, 79, 61), cv2.COLOR_BGR2GRAY), [cv2.IMWRITE_JPEG_QUALITY, 90]),
    "tiny_3x2": (crop(128, 128, 3, 2), [cv2.IMWRITE_JPEG_QUALITY, 90]),
}


def reference(path):
    img = cv2.imread(path, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    assert img is not None and img.ndim == 3, path
    return img


for name, (img, params) in CASES.items():
    path = os.path.join(HERE, name + ".jpg")
    assert cv2.imwrite(path, img, params), name
    cv2.imwrite(os.path.join(HERE, name + ".png"), reference(path))

# EXIF orientation 6 ("rotate 90 CW to display"), written by Pillow (OpenCV writes no EXIF).
rgb = cv2.cvtColor(crop(70, 90, 61, 45), cv2.COLOR_BGR2RGB)
exif = Image.Exif()
exif[0x0112] = 6
path = os.path.join(HERE, "exif_rot90.jpg")
Image.fromarray(rgb).save(path, quality=90, exif=exif.tobytes())
ignored = reference(path)
applied = cv2.imread(path, cv2.IMREAD_COLOR)
assert applied.shape[:2] == ignored.shape[1::-1], "cv2.imread applies the orientation"
cv2.imwrite(os.path.join(HERE, "exif_rot90.png"), ignored)
cv2.imwrite(os.path.join(HERE, "exif_rot90_applied.png"), applied)
for f in sorted(os.listdir(HERE)):
    print(f, os.path.getsize(os.path.join(HERE, f)))
