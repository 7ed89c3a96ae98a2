#!/usr/bin/env python3
"""Rescoring and OKS-NMS cases and the official code's answers, for hrnet-runtime's
`pose::coco::select_results` (kept for the record; tests never run it).

Runs the official `oks_nms` / `oks_iou` (taken from deep-high-resolution-net.pytorch's
`lib/nms/nms.py` at run time, not copied) after the rescoring of `lib/dataset/coco.py`
`evaluate` (box score x mean of the keypoint confidences above TEST.IN_VIS_THRE = 0.2, 0 when
none is), with the official arrays: keypoints and confidences float32 (`all_preds`), box scores
and areas float64 (`all_boxes`, area = prod(scale * 200) in float32). Writes `nms/cases.json`:
the people in the order the network saw them, and per image (in order of first appearance) the
kept indices into that image's people, best first, and the rescored scores as float64 bit
patterns.

Needs NumPy 1.x, as in the official environment: NumPy 2 computes the rescoring in float32
(NEP 50), NumPy 1.x promotes to float64 -- the official `json.dump` of the score only works with
a float64. Seeded.

Usage: python3 -m venv /tmp/np1 && /tmp/np1/bin/pip install numpy==1.26.4
       /tmp/np1/bin/python make_nms_cases.py /path/to/deep-high-resolution-net.pytorch
"""
import ast
import json
import os
import struct
import sys

import numpy as np

assert np.__version__.startswith("1."), np.__version__
HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nms")
IN_VIS_THRE, OKS_THRE = 0.2, 0.9


def official_nms(repo):
    """`oks_iou` and `oks_nms` from the official nms.py (its other imports are compiled modules)."""
    src = open(os.path.join(repo, "lib", "nms", "nms.py")).read()
    tree = ast.parse(src)
    funcs = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in ("oks_iou", "oks_nms")]
    assert len(funcs) == 2
    ns = {"np": np}
    exec(compile(ast.Module(body=funcs, type_ignores=[]), "nms.py", "exec"), ns)
    return ns["oks_nms"]


def main(repo):
    oks_nms = official_nms(repo)
    rng = np.random.default_rng(3)
    people = []
    for image_id in [42, 7, 1000, 5]:
        base = rng.uniform(50, 400, size=(17, 2))
        for _ in range(rng.integers(3, 9)):
            kind = rng.uniform()
            if kind < 0.5:  # near-duplicates of one person: OKS around the 0.9 threshold
                xy = base + rng.normal(0, rng.choice([0.5, 2, 5]), size=(17, 2))
            else:  # someone else
                xy = rng.uniform(50, 400, size=(17, 2))
            conf = rng.uniform(0, 1, size=17)
            if rng.uniform() < 0.15:
                conf = rng.uniform(0, 0.2, size=17)  # no joint confident enough: score 0
            if rng.uniform() < 0.2:
                conf[:5] = np.float32(0.2)  # exactly the threshold, in float32 (counts: 0.2f > 0.2)
            kpts = np.concatenate([xy, conf[:, None]], axis=1).astype(np.float32)
            scale = (rng.uniform(0.3, 2.0, size=2)).astype(np.float32)
            box_score = float(rng.choice([0.5, 0.75, 0.9, round(rng.uniform(0, 1), 6)]))
            people.append({"image_id": image_id, "keypoints": kpts, "scale": scale, "box_score": box_score})
    # Exact ties: two near-duplicates with the same confidences and box score (argsort()[::-1]
    # puts the later one first, so it is kept), and someone else.
    base = rng.uniform(50, 400, size=(17, 2))
    conf = rng.uniform(0, 1, size=17)
    for xy, box_score in [(base, 0.8), (base + 0.5, 0.8), (rng.uniform(50, 400, size=(17, 2)), 0.8)]:
        kpts = np.concatenate([xy, conf[:, None]], axis=1).astype(np.float32)
        people.append({"image_id": 9, "keypoints": kpts, "scale": np.float32([1.0, 1.0]), "box_score": box_score})
    # As the official evaluate: group by image in order of first appearance, rescore, NMS.
    groups = {}
    for p in people:
        groups.setdefault(p["image_id"], []).append(p)
    expected = []
    for image_id, img_kpts in groups.items():
        db = []
        for p in img_kpts:
            n_p = {"keypoints": p["keypoints"], "area": np.prod(p["scale"] * 200),
                   "score": np.float64(p["box_score"])}
            box_score = n_p["score"]
            kpt_score = 0
            valid_num = 0
            for n_jt in range(17):
                t_s = n_p["keypoints"][n_jt][2]
                if t_s > IN_VIS_THRE:
                    kpt_score = kpt_score + t_s
                    valid_num = valid_num + 1
            if valid_num != 0:
                kpt_score = kpt_score / valid_num
            n_p["score"] = kpt_score * box_score
            db.append(n_p)
        keep = oks_nms(db, OKS_THRE)
        expected.append({
            "image_id": image_id,
            "keep": [int(k) for k in keep],
            "score_bits": [struct.unpack("<Q", struct.pack("<d", float(n["score"])))[0] for n in db],
        })
        print(image_id, len(db), "kept", [int(k) for k in keep])
    out = {
        "people": [{"image_id": p["image_id"], "box_score": p["box_score"],
                    "keypoints": [float(v) for v in p["keypoints"].reshape(-1)],
                    "scale": [float(v) for v in p["scale"]]} for p in people],
        "images": expected,
    }
    os.makedirs(HERE, exist_ok=True)
    with open(os.path.join(HERE, "cases.json"), "w") as f:
        json.dump(out, f)
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1])
