#!/usr/bin/env python3
"""COCO keypoint evaluation cases and pycocotools' answers, for hrnet-runtime's `pose::coco_eval`
(kept for the record; tests never run it).

Writes, for each case NAME, `eval/NAME.gt.json` (ground truth in the COCO annotation format) and
`eval/NAME.results.json` (keypoint results), and `eval/expected.json`: per case the ten statistics
of `COCOeval(gt, gt.loadRes(results), 'keypoints')` after evaluate/accumulate/summarize, and the
text summarize() printed. Seeded, so a rerun writes the same files.

Usage: /path/to/venv/bin/python make_eval_cases.py   (numpy, pycocotools)
"""
import contextlib
import io
import json
import os

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "eval")
SIGMAS = np.array([.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89, .89]) / 10.0


def r2(v):
    return float(round(float(v), 2))


class Case:
    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.images, self.anns, self.results = [], [], []
        self.categories = [{"id": 1, "name": "person", "supercategory": "person"}]

    def image(self, image_id):
        self.images.append({"id": image_id, "file_name": "%012d.jpg" % image_id, "width": 640, "height": 480})

    def person(self, image_id, scale, visible=None, iscrowd=0, category_id=1):
        """A ground-truth person of about `scale` pixels high; `visible` joints labelled (v=1 or 2)."""
        rng = self.rng
        cx, cy = rng.uniform(50, 590), rng.uniform(50, 430)
        w, h = scale * rng.uniform(0.3, 0.6), scale
        kps = []
        nvis = rng.integers(0, 18) if visible is None else visible
        labelled = set(rng.choice(17, size=nvis, replace=False).tolist())
        for j in range(17):
            if j in labelled:
                kps += [r2(cx + rng.uniform(-w / 2, w / 2)), r2(cy + rng.uniform(-h / 2, h / 2)), int(rng.integers(1, 3))]
            else:
                kps += [0, 0, 0]
        bbox = [r2(cx - w / 2), r2(cy - h / 2), r2(w), r2(h)]
        area = r2(w * h * rng.uniform(0.5, 0.9))
        self.anns.append({"id": len(self.anns) + 1, "image_id": image_id, "category_id": category_id,
                          "keypoints": kps, "num_keypoints": len(labelled), "area": area, "bbox": bbox,
                          "iscrowd": iscrowd})
        return self.anns[-1]

    def detect(self, gt, noise, score=None):
        """A result near a ground-truth person: labelled joints moved by `noise` x the OKS scale."""
        rng = self.rng
        k = np.array(gt["keypoints"], dtype=float).reshape(17, 3)
        bx, by, bw, bh = gt["bbox"]
        s = np.sqrt(max(gt["area"], 1.0))
        out = []
        for j in range(17):
            x, y = (k[j, 0], k[j, 1]) if k[j, 2] > 0 else (bx + rng.uniform(0, bw), by + rng.uniform(0, bh))
            d = rng.normal(0, 1, 2) * noise * s * SIGMAS[j] * 2
            out += [r2(x + d[0]), r2(y + d[1]), r2(rng.uniform(0, 1))]
        self.result(gt["image_id"], out, score)

    def false_positive(self, image_id, score=None):
        rng = self.rng
        cx, cy, s = rng.uniform(0, 640), rng.uniform(0, 480), rng.uniform(20, 300)
        out = []
        for _ in range(17):
            out += [r2(cx + rng.uniform(-s / 4, s / 4)), r2(cy + rng.uniform(-s / 2, s / 2)), r2(rng.uniform(0, 1))]
        self.result(image_id, out, score)

    def result(self, image_id, keypoints, score=None, category_id=1):
        score = r2(self.rng.uniform(0, 1)) if score is None else score
        self.results.append({"image_id": image_id, "category_id": category_id, "keypoints": keypoints, "score": score})

    def gt(self):
        return {"images": self.images, "annotations": self.anns, "categories": self.categories}


def case_basic():
    c = Case(1)
    for i in range(1, 9):
        c.image(i)
        for _ in range(c.rng.integers(1, 5)):
            g = c.person(i, c.rng.choice([40, 80, 120, 250]), visible=int(c.rng.integers(1, 18)))
            c.detect(g, c.rng.uniform(0.1, 1.5))
        for _ in range(c.rng.integers(0, 3)):
            c.false_positive(i)
    return c


def case_crowd():
    c = Case(2)
    for i in range(10, 16):
        c.image(i)
        for _ in range(3):
            g = c.person(i, c.rng.choice([60, 150]), visible=int(c.rng.integers(3, 18)))
            c.detect(g, c.rng.uniform(0.1, 1.0))
        crowd = c.person(i, 200, visible=0, iscrowd=1)  # a crowd region, as COCO has them
        c.detect(crowd, 0.3)
        c.detect(crowd, 0.5)
        labelled_crowd = c.person(i, 120, visible=8, iscrowd=1)  # a crowd with labelled joints
        c.detect(labelled_crowd, 0.2)
        c.detect(labelled_crowd, 0.2)
    return c


def case_no_keypoints_gt():
    """num_keypoints == 0 ground truth: ignored, and OKS measured against its doubled box."""
    c = Case(3)
    for i in range(1, 7):
        c.image(i)
        for _ in range(2):
            g = c.person(i, c.rng.choice([50, 130]), visible=0)
            c.detect(g, 0.5)
        g = c.person(i, 100, visible=12)
        c.detect(g, 0.4)
        c.false_positive(i)
    return c


def case_empty_images():
    """Images without ground truth (results there are false positives), images without results."""
    c = Case(4)
    for i in [3, 5, 7, 11, 13, 17]:
        c.image(i)
    for i in [3, 7, 13]:
        for _ in range(3):
            g = c.person(i, c.rng.choice([70, 140]), visible=int(c.rng.integers(5, 18)))
            if i != 13:
                c.detect(g, c.rng.uniform(0.2, 1.0))
    for i in [5, 11, 17]:
        for _ in range(2):
            c.false_positive(i, score=r2(c.rng.uniform(0.5, 1.0)))
    return c


def case_max_dets():
    """More than 20 results on an image: only the 20 best count, ties broken by file order."""
    c = Case(5)
    for i in [1, 2]:
        c.image(i)
    gts = [c.person(1, c.rng.choice([60, 110, 200]), visible=int(c.rng.integers(4, 18))) for _ in range(12)]
    for g in gts:
        c.detect(g, 0.3, score=r2(c.rng.choice([0.3, 0.6, 0.9])))
        c.detect(g, 0.8, score=r2(c.rng.choice([0.3, 0.6, 0.9])))
    for _ in range(6):
        c.false_positive(1, score=0.6)
    g = c.person(2, 100, visible=17)
    for _ in range(25):
        c.detect(g, c.rng.uniform(0.1, 2.0), score=0.5)
    return c


def case_ties():
    """Many equal scores across images (the accumulation's stable sort decides the order)."""
    c = Case(6)
    for i in range(1, 11):
        c.image(i)
        for _ in range(3):
            g = c.person(i, c.rng.choice([45, 90, 180]), visible=int(c.rng.integers(1, 18)))
            c.detect(g, c.rng.uniform(0.1, 2.0), score=float(c.rng.choice([0.25, 0.5, 0.75])))
        c.false_positive(i, score=float(c.rng.choice([0.25, 0.5, 0.75])))
    return c


def case_area_ranges():
    """Small, medium and large people and areas at the range edges (32^2, 96^2)."""
    c = Case(7)
    for i in range(1, 6):
        c.image(i)
        for scale in [20, 40, 70, 100, 160, 300]:
            g = c.person(i, scale, visible=int(c.rng.integers(2, 18)))
            c.detect(g, c.rng.uniform(0.1, 1.2))
        edge = c.person(i, 60, visible=10)
        edge["area"] = float(32 ** 2 if i % 2 else 96 ** 2)
        c.detect(edge, 0.3)
    return c


def case_two_categories():
    """A second category: evaluated separately, averaged by summarize."""
    c = Case(8)
    c.categories.append({"id": 2, "name": "robot", "supercategory": "robot"})
    for i in range(1, 5):
        c.image(i)
        for cat in [1, 2]:
            g = c.person(i, c.rng.choice([70, 150]), visible=int(c.rng.integers(4, 18)), category_id=cat)
            c.detect(g, 0.4)
            c.results[-1]["category_id"] = cat
    c.false_positive(1)
    c.results[-1]["category_id"] = 3  # a category the ground truth does not have: dropped
    return c


def case_all_ignored():
    """Only crowd and unlabelled ground truth: no precision or recall defined (-1)."""
    c = Case(9)
    c.image(1)
    g = c.person(1, 100, visible=0)
    c.detect(g, 0.3)
    g = c.person(1, 100, visible=5, iscrowd=1)
    c.detect(g, 0.3)
    return c


def case_bbox_results():
    """Results that carry a "bbox": pycocotools then takes their area from it, not the keypoints."""
    c = Case(10)
    for i in range(1, 5):
        c.image(i)
        for _ in range(3):
            g = c.person(i, c.rng.choice([40, 90, 200]), visible=int(c.rng.integers(3, 18)))
            c.detect(g, c.rng.uniform(0.1, 1.0))
            c.results[-1]["bbox"] = [r2(v * c.rng.uniform(0.5, 1.5)) for v in g["bbox"]]
    return c


def case_random():
    c = Case(11)
    for i in range(1, 41):
        c.image(1000 + i)
        for _ in range(c.rng.integers(0, 7)):
            g = c.person(1000 + i, c.rng.uniform(15, 400), iscrowd=int(c.rng.uniform() < 0.05))
            for _ in range(c.rng.integers(0, 3)):
                c.detect(g, c.rng.uniform(0.05, 2.5))
        for _ in range(c.rng.integers(0, 4)):
            c.false_positive(1000 + i)
    c.rng.shuffle(c.results)
    return c


CASES = {
    "basic": case_basic,
    "crowd": case_crowd,
    "no_keypoints_gt": case_no_keypoints_gt,
    "empty_images": case_empty_images,
    "max_dets": case_max_dets,
    "ties": case_ties,
    "area_ranges": case_area_ranges,
    "two_categories": case_two_categories,
    "all_ignored": case_all_ignored,
    "bbox_results": case_bbox_results,
    "random": case_random,
}


def dump(obj, path):
    with open(path, "w") as f:
        json.dump(obj, f, separators=(",", ":"))
        f.write("\n")


def main():
    os.makedirs(HERE, exist_ok=True)
    expected = {}
    for name, make in CASES.items():
        case = make()
        gt_path = os.path.join(HERE, name + ".gt.json")
        res_path = os.path.join(HERE, name + ".results.json")
        dump(case.gt(), gt_path)
        dump(case.results, res_path)
        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO(gt_path)
            dt = gt.loadRes(res_path)
            ev = COCOeval(gt, dt, "keypoints")
            ev.evaluate()
            ev.accumulate()
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            ev.summarize()
        expected[name] = {"stats": [float(s) for s in ev.stats], "summary": out.getvalue()}
        print(name, " ".join("%.4f" % s for s in ev.stats))
    with open(os.path.join(HERE, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
