"""A small synthetic world in the exact VG150 file format, learnable in minutes on a CPU.

``generate_synthetic_vg(out_dir, num_images, seed)`` renders flat-coloured shapes on a lightly textured grey
background (images 256-320 px a side) and writes ``VG-SGG-with-attri.h5``, ``VG-SGG-dicts-with-attri.json``,
``image_data.json`` and ``VG_100K/<image_id>.jpg`` exactly as docs/PROTOCOL.md (section 1) describes, plus the
generator's own ``synthetic_record.json`` (expected split sizes under the default filters, so tests check the
loader against an independent count).

Vocabulary: 12 object classes (3 colours x 4 shapes, e.g. "red circle") and 10 predicates.  Every image holds one to
three *groups*, each a pair of objects in a fixed geometric arrangement whose predicate follows a deterministic rule:

=============  =====================================================================  ==========================
arrangement    geometry                                                               predicates (subject first)
=============  =====================================================================  ==========================
stack          one object on top of the other, boxes overlapping by a few pixels     upper "on" lower; lower
                                                                                      "under" upper (sometimes)
side by side   horizontally touching, boxes overlapping by a few pixels              "same color as" if the
                                                                                      colours match, else "same
                                                                                      shape as" if the shapes
                                                                                      match, else "next to"
containment    a small object inside a large one                                      small "in" large; large
                                                                                      "has" small (sometimes)
occlusion      one object drawn over a corner of the other                            front "covering" back;
                                                                                      back "behind" front (sometimes)
gap            one object above the other with a vertical gap (boxes disjoint)       upper "above" lower
=============  =====================================================================  ==========================

No predicate depends on left/right, so horizontal flipping keeps every label valid.  The arrangements are drawn
with long-tailed frequencies; about 5 % of the pairs carry a second predicate ("next to" besides "same color as" /
"same shape as"), about 3 % of relation rows are exact duplicates, "above" pairs do not overlap (so the default
``FILTER_NON_OVERLAP`` removes them from training), and a few (subject, object, predicate) triplets are withheld
from split 0 and shown only in test (zero-shot).  Some rows have no relation (``-1/-1``) and two rows have no box.
Everything is a function of ``seed`` (one generator per image, so images and annotations agree with or without
JPEGs).

Config keys to train on the world written to ``OUT``::

    DATASETS.VISUAL_GENOME.IMAGES OUT/VG_100K
    DATASETS.VISUAL_GENOME.MAPPING_DICTIONARY OUT/VG-SGG-dicts-with-attri.json
    DATASETS.VISUAL_GENOME.IMAGE_DATA OUT/image_data.json
    DATASETS.VISUAL_GENOME.VG_ATTRIBUTE_H5 OUT/VG-SGG-with-attri.h5
    DATASETS.VISUAL_GENOME.NUMBER_OF_VALIDATION_IMAGES <record["number_of_validation_images"]>
    MODEL.DETR.NUM_CLASSES 12
    MODEL.DETR.NUM_RELATION_CLASSES 10

``config_overrides(OUT, record)`` returns these pairs for ``cfg.merge_from_list``
(and, for a CPU, set small ``INPUT.MIN_SIZE_TRAIN``/``MIN_SIZE_TEST``, e.g. 256-320, ``INPUT.CROP.SIZE`` below that).
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass, field

import numpy as np

from .vg_writer import encode_boxes, ranges_from_counts, vocabulary_dicts, write_json, write_vg_h5

__all__ = [
    "OBJECT_CLASSES",
    "PREDICATES",
    "ATTRIBUTES",
    "generate_synthetic_vg",
    "default_number_of_validation_images",
    "config_overrides",
]

COLOURS = {"blue": (45, 90, 215), "green": (40, 160, 70), "red": (215, 50, 50)}
SHAPES = ("circle", "diamond", "square", "triangle")
OBJECT_CLASSES = tuple(sorted(f"{c} {s}" for c in COLOURS for s in SHAPES))
PREDICATES = ("above", "behind", "covering", "has", "in", "next to", "on", "same color as", "same shape as", "under")
ATTRIBUTES = ("blue", "green", "large", "red", "small")
IMAGE_SIZES = (256, 288, 320)
CORRUPTED_IMAGE_IDS = (1592, 1722, 4616, 4617)

# Arrangement -> probability (long tail) and the predicate of its primary (subject, object) relation.
ARRANGEMENTS = {"stack": 0.35, "side": 0.32, "contain": 0.16, "occlude": 0.13, "gap": 0.04}
_PRIMARY_PREDICATE = {"stack": "on", "contain": "in", "occlude": "covering", "gap": "above"}
# Withheld from split 0: (predicate, subject-class constraint) drawn per seed.
_ZERO_SHOT_PREDICATES = ("on", "next to", "in", "covering", "on", "next to")
_MARGIN = 4  # px between a group and the image border
_GAP = 26  # px between groups (wider than any "gap" arrangement, so unrelated pairs never look related)
_P_ZERO_SHOT_TEST = 0.2  # test images that show a withheld triplet
_P_NO_RELATION = 0.03  # images with objects but no relation
_P_DUPLICATE = 0.03  # relation rows written twice
_P_SECOND_PREDICATE = 0.3  # "same color/shape as" pairs that also get "next to"
_SPLIT0_FRACTION = 0.7


def _class_index(colour: str, shape: str) -> int:
    return OBJECT_CLASSES.index(f"{colour} {shape}")


def _colour(cls: int) -> str:
    return OBJECT_CLASSES[cls].split(" ")[0]


def _shape(cls: int) -> str:
    return OBJECT_CLASSES[cls].split(" ")[1]


def _side_predicate(a: int, b: int) -> str:
    if _colour(a) == _colour(b):
        return "same color as"
    if _shape(a) == _shape(b):
        return "same shape as"
    return "next to"


@dataclass
class _Group:
    """Objects (class, float xyxy in group coordinates, drawing order) and relations (i, j, predicate, overlap)."""

    classes: list
    boxes: np.ndarray
    relations: list = field(default_factory=list)

    def scaled(self, factor: float) -> "_Group":
        return _Group(list(self.classes), self.boxes * factor, list(self.relations))


def _draw_pair_classes(rng: np.random.Generator, arrangement: str) -> tuple[int, int]:
    """Subject and object classes; containment and occlusion need different colours to be visible."""
    while True:
        a, b = int(rng.integers(len(OBJECT_CLASSES))), int(rng.integers(len(OBJECT_CLASSES)))
        if arrangement not in ("contain", "occlude") or _colour(a) != _colour(b):
            return a, b


def _size(rng: np.random.Generator, lo: float, hi: float) -> tuple[float, float]:
    side = rng.uniform(lo, hi)
    return side, side * rng.uniform(0.8, 1.25)


def _box(cx: float, cy: float, w: float, h: float) -> list:
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def _make_group(rng: np.random.Generator, arrangement: str, subject: int, obj: int) -> _Group:
    """Two objects in ``arrangement``; object 0 is drawn first.  The primary relation is subject -> object."""
    if arrangement in ("stack", "gap"):
        (wu, hu), (wl, hl) = _size(rng, 36, 64), _size(rng, 36, 64)
        gap = -rng.uniform(4, 8) if arrangement == "stack" else rng.uniform(12, 24)
        cx = max(wu, wl)
        lower = _box(cx, hu + gap + hl / 2, wl, hl)
        upper = _box(cx + rng.uniform(-0.2, 0.2) * wl, hu / 2, wu, hu)
        group = _Group([obj, subject], np.array([lower, upper]))  # subject is the upper object
        group.relations.append((1, 0, _PRIMARY_PREDICATE[arrangement], arrangement == "stack"))
        if arrangement == "stack" and rng.random() < 0.35:
            group.relations.append((0, 1, "under", True))
    elif arrangement == "side":
        (wa, ha), (wb, hb) = _size(rng, 36, 64), _size(rng, 36, 64)
        overlap = rng.uniform(4, 8)
        cy = max(ha, hb) / 2 + 8
        left = _box(wa / 2, cy, wa, ha)
        right = _box(wa - overlap + wb / 2, cy + rng.uniform(-6, 6), wb, hb)
        subject_left = rng.random() < 0.5  # the subject is on the right as often as on the left
        group = _Group([subject, obj] if subject_left else [obj, subject], np.array([left, right]))
        s, o = (0, 1) if subject_left else (1, 0)
        predicate = _side_predicate(subject, obj)
        group.relations.append((s, o, predicate, True))
        if predicate != "next to" and rng.random() < _P_SECOND_PREDICATE:
            group.relations.append((s, o, "next to", True))
        if rng.random() < 0.4:
            group.relations.append((o, s, predicate, True))
    elif arrangement == "contain":
        (wb, hb), (ws, hs) = _size(rng, 84, 112), _size(rng, 24, 34)
        hb = min(hb, wb * 1.1)
        cy_small = hb * (0.62 if _shape(obj) == "triangle" else 0.5) + rng.uniform(-0.08, 0.08) * hb
        big = _box(wb / 2, hb / 2, wb, hb)
        small = _box(wb / 2 + rng.uniform(-0.1, 0.1) * wb, cy_small, ws, hs)
        group = _Group([obj, subject], np.array([big, small]))
        group.relations.append((1, 0, "in", True))
        if rng.random() < 0.4:
            group.relations.append((0, 1, "has", True))
    elif arrangement == "occlude":
        (wb, hb), (wf, hf) = _size(rng, 48, 72), _size(rng, 36, 56)
        sx, sy = rng.choice([-1.0, 1.0], size=2)
        back = _box(0.0, 0.0, wb, hb)
        front = _box(sx * rng.uniform(0.3, 0.5) * wb, sy * rng.uniform(0.3, 0.5) * hb, wf, hf)
        group = _Group([obj, subject], np.array([back, front]))
        group.relations.append((1, 0, "covering", True))
        if rng.random() < 0.3:
            group.relations.append((0, 1, "behind", True))
    else:
        raise ValueError(f"unknown arrangement {arrangement}")
    group.boxes = group.boxes - np.tile(group.boxes[:, :2].min(axis=0), 2)  # top-left corner at (0, 0)
    return group


def _triplets(group: _Group) -> set:
    return {(group.classes[i], group.classes[j], PREDICATES.index(p)) for i, j, p, _ in group.relations}


def _choose_zero_shot(seed: int) -> list:
    """Triplets (0-based subject class, object class, predicate) withheld from split 0."""
    rng = np.random.default_rng([seed, 7919])
    chosen = []
    for predicate in _ZERO_SHOT_PREDICATES:
        while True:
            a, b = int(rng.integers(len(OBJECT_CLASSES))), int(rng.integers(len(OBJECT_CLASSES)))
            ok = _colour(a) != _colour(b) and (predicate != "next to" or _shape(a) != _shape(b))
            triplet = (a, b, PREDICATES.index(predicate))
            if ok and triplet not in chosen:
                chosen.append(triplet)
                break
    return chosen


def _arrangement_of(predicate: str) -> str:
    return {"on": "stack", "next to": "side", "in": "contain", "covering": "occlude"}[predicate]


def _place(rng: np.random.Generator, extent: np.ndarray, taken: list, width: int, height: int):
    """Top-left corner for a ``(w, h)`` extent clear of the ``taken`` rectangles, or None."""
    w, h = extent
    if w > width - 2 * _MARGIN or h > height - 2 * _MARGIN:
        return None
    for _ in range(60):
        x = rng.uniform(_MARGIN, width - _MARGIN - w)
        y = rng.uniform(_MARGIN, height - _MARGIN - h)
        if all(x > t[2] + _GAP or x + w < t[0] - _GAP or y > t[3] + _GAP or y + h < t[1] - _GAP for t in taken):
            return x, y
    return None


def _boxes_intersect(a, b) -> bool:
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


@dataclass
class _Scene:
    width: int
    height: int
    classes: list
    boxes: list  # integer xyxy pixels, drawing order
    relations: list  # (subject, object, predicate index, boxes overlap)


def _make_scene(seed: int, row: int, kind: str, in_split0: bool, zero_shot: list) -> _Scene:
    rng = np.random.default_rng([seed, row])
    width, height = (int(v) for v in rng.choice(IMAGE_SIZES, size=2))
    scene = _Scene(width, height, [], [], [])
    if kind == "empty":
        return scene
    taken = []

    def add(group: _Group) -> bool:
        for factor in (1.0, 0.8, 0.64):
            g = group.scaled(factor)
            corner = _place(rng, g.boxes[:, 2:].max(axis=0), taken, width, height)
            if corner is None:
                continue
            boxes = np.round(g.boxes + np.tile(corner, 2)).astype(int).tolist()
            if any(_boxes_intersect(boxes[i], boxes[j]) != overlap for i, j, _, overlap in g.relations):
                continue  # rounding changed the intended geometry: try smaller
            base = len(scene.boxes)
            scene.classes.extend(g.classes)
            scene.boxes.extend(boxes)
            for i, j, p, overlap in g.relations:
                scene.relations.append((base + i, base + j, PREDICATES.index(p), overlap))
                if rng.random() < _P_DUPLICATE:
                    scene.relations.append((base + i, base + j, PREDICATES.index(p), overlap))
            taken.append([min(b[0] for b in boxes), min(b[1] for b in boxes),
                          max(b[2] for b in boxes), max(b[3] for b in boxes)])
            return True
        return False

    if kind == "objects":
        for _ in range(int(rng.integers(2, 5))):
            w, h = _size(rng, 30, 60)
            add(_Group([int(rng.integers(len(OBJECT_CLASSES)))], np.array([[0.0, 0.0, w, h]])))
        return scene

    num_groups = int(rng.choice([2, 3], p=[0.55, 0.45]))
    arrangements = list(ARRANGEMENTS)
    probs = np.array([ARRANGEMENTS[a] for a in arrangements])
    for g in range(num_groups):
        if g == 0 and not in_split0 and zero_shot and rng.random() < _P_ZERO_SHOT_TEST:
            s, o, p = zero_shot[int(rng.integers(len(zero_shot)))]
            group = _make_group(rng, _arrangement_of(PREDICATES[p]), s, o)
        else:
            arrangement = arrangements[int(rng.choice(len(arrangements), p=probs / probs.sum()))]
            while True:
                group = _make_group(rng, arrangement, *_draw_pair_classes(rng, arrangement))
                if not in_split0 or not (_triplets(group) & set(zero_shot)):
                    break
        add(group)
    if num_groups == 2 and rng.random() < 0.3:  # a lone distractor without relations
        w, h = _size(rng, 30, 60)
        add(_Group([int(rng.integers(len(OBJECT_CLASSES)))], np.array([[0.0, 0.0, w, h]])))
    return scene


def _render(scene: _Scene, seed: int, row: int) -> bytes:
    from PIL import Image, ImageDraw

    rng = np.random.default_rng([seed, row, 1])
    grey = rng.uniform(212, 240)
    background = grey + rng.normal(0.0, 3.0, size=(scene.height, scene.width, 1)) + np.zeros((1, 1, 3))
    image = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for cls, (x1, y1, x2, y2) in zip(scene.classes, scene.boxes):
        colour = tuple(int(np.clip(c + rng.integers(-12, 13), 0, 255)) for c in COLOURS[_colour(cls)])
        cx, cy, r, b = (x1 + x2) / 2, (y1 + y2) / 2, x2 - 1, y2 - 1
        shape = _shape(cls)
        if shape == "circle":
            draw.ellipse([x1, y1, r, b], fill=colour)
        elif shape == "square":
            draw.rectangle([x1, y1, r, b], fill=colour)
        elif shape == "triangle":
            draw.polygon([(cx, y1), (r, b), (x1, b)], fill=colour)
        else:
            draw.polygon([(cx, y1), (r, cy), (cx, b), (x1, cy)], fill=colour)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def _image_ids(num_images: int) -> list:
    """Ids that differ from the row index and avoid the corrupted ids (3r+1 and 3r+2 never collide)."""
    return [3 * r + 1 if 3 * r + 1 not in CORRUPTED_IMAGE_IDS else 3 * r + 2 for r in range(num_images)]


def default_number_of_validation_images(num_images: int) -> int:
    return max(1, num_images // 10)


def _row_kinds(num_images: int, num_split0: int, seed: int) -> list:
    """"graph" (objects with relations), "objects" (no relation) or "empty" (no box) for every h5 row."""
    rng = np.random.default_rng([seed, 104729])
    kinds = ["objects" if rng.random() < _P_NO_RELATION else "graph" for _ in range(num_images)]
    for start in (0, num_split0):
        for offset, kind in ((1, "empty"), (2, "objects")):
            if start + offset < num_images:
                kinds[start + offset] = kind
    return kinds


def generate_synthetic_vg(
    out_dir: str,
    num_images: int,
    seed: int = 0,
    number_of_validation_images: int | None = None,
    write_images: bool = True,
) -> dict:
    """Write the synthetic world to ``out_dir`` and return (and write) the generator's record.

    The record holds, for ``VG_train``/``VG_val``/``VG_test`` under the default filters and
    ``number_of_validation_images`` (default ``num_images // 10``), the expected ``images``/``objects``/
    ``relations`` counts, the train predicate counts and the withheld zero-shot triplets (1-based subject, object,
    predicate, the column order of the released zero-shot triplet file).
    """
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    num_val = default_number_of_validation_images(num_images) if number_of_validation_images is None else int(
        number_of_validation_images
    )
    num_split0 = int(np.floor(_SPLIT0_FRACTION * num_images))
    zero_shot = _choose_zero_shot(seed)
    kinds = _row_kinds(num_images, num_split0, seed)
    scenes = [_make_scene(seed, r, kinds[r], r < num_split0, zero_shot) for r in range(num_images)]
    image_ids = _image_ids(num_images)

    image_dir = os.path.join(out_dir, "VG_100K")
    os.makedirs(image_dir, exist_ok=True)
    if write_images:
        from .vg_writer import atomic_write_bytes

        for r, scene in enumerate(scenes):  # one flush for all images (os.sync below), not two fsyncs each
            atomic_write_bytes(os.path.join(image_dir, f"{image_ids[r]}.jpg"), _render(scene, seed, r), durable=False)
        os.sync()  # the images reach the disk before the record that marks the world complete

    _write_files(out_dir, scenes, image_ids, num_split0)
    record = _record(scenes, num_split0, num_val, zero_shot)
    record.update(num_images=num_images, seed=seed)
    write_json(os.path.join(out_dir, "synthetic_record.json"), record)
    return record


def _write_files(out_dir: str, scenes: list, image_ids: list, num_split0: int) -> None:
    num_boxes = [len(s.boxes) for s in scenes]
    num_rels = [len(s.relations) for s in scenes]
    first_box, last_box = ranges_from_counts(num_boxes)
    first_rel, last_rel = ranges_from_counts(num_rels)
    box_starts = np.concatenate([[0], np.cumsum(num_boxes)[:-1]]).astype(np.int64)
    boxes = np.array([b for s in scenes for b in s.boxes], dtype=np.float64).reshape(-1, 4)
    labels = np.array([c + 1 for s in scenes for c in s.classes], dtype=np.int64)
    widths = np.repeat([s.width for s in scenes], num_boxes)
    heights = np.repeat([s.height for s in scenes], num_boxes)
    relationships = np.array(
        [[box_starts[r] + i, box_starts[r] + j] for r, s in enumerate(scenes) for i, j, _, _ in s.relations],
        dtype=np.int64,
    ).reshape(-1, 2)
    predicates = np.array([p + 1 for s in scenes for _, _, p, _ in s.relations], dtype=np.int64)
    sizes = (boxes[:, 2:] - boxes[:, :2]).max(axis=1) if len(boxes) else np.zeros(0)
    attributes = np.zeros((len(labels), 10), dtype=np.int64)
    attributes[:, 0] = [ATTRIBUTES.index(_colour(c - 1)) + 1 for c in labels]
    attributes[:, 1] = np.where(sizes >= 60, ATTRIBUTES.index("large") + 1, ATTRIBUTES.index("small") + 1)
    write_vg_h5(
        os.path.join(out_dir, "VG-SGG-with-attri.h5"),
        {
            "split": np.where(np.arange(len(scenes)) < num_split0, 0, 2),
            "img_to_first_box": first_box,
            "img_to_last_box": last_box,
            "img_to_first_rel": first_rel,
            "img_to_last_rel": last_rel,
            "labels": labels,
            "boxes_1024": encode_boxes(boxes, widths, heights, 1024),
            "boxes_512": encode_boxes(boxes, widths, heights, 512),
            "relationships": relationships,
            "predicates": predicates,
            "attributes": attributes,
            "active_object_mask": np.ones(len(labels), dtype=bool),
        },
    )
    counts = {
        "object": {n: int((labels == i + 1).sum()) for i, n in enumerate(OBJECT_CLASSES)},
        "predicate": {n: int((predicates == i + 1).sum()) for i, n in enumerate(PREDICATES)},
        "attribute": {n: int((attributes == i + 1).sum()) for i, n in enumerate(ATTRIBUTES)},
    }
    write_json(
        os.path.join(out_dir, "VG-SGG-dicts-with-attri.json"),
        vocabulary_dicts(OBJECT_CLASSES, PREDICATES, ATTRIBUTES, counts),
    )
    entries = [
        {"image_id": image_ids[r], "url": f"synthetic://VG_100K/{image_ids[r]}.jpg", "width": s.width,
         "height": s.height, "coco_id": None, "flickr_id": None}
        for r, s in enumerate(scenes)
    ]
    for k, corrupted_id in enumerate(CORRUPTED_IMAGE_IDS):  # entries without h5 row or JPEG, spread over the list
        position = min(len(entries), (k + 1) * len(scenes) // 5 + k)
        entries.insert(position, {"image_id": corrupted_id, "url": f"synthetic://VG_100K/{corrupted_id}.jpg",
                                  "width": 300, "height": 200, "coco_id": None, "flickr_id": None})
    write_json(os.path.join(out_dir, "image_data.json"), entries)


def _record(scenes: list, num_split0: int, num_val: int, zero_shot: list) -> dict:
    """Expected split sizes under the default filters, from the generator's own knowledge of each relation."""
    usable = [r for r, s in enumerate(scenes) if s.boxes and s.relations]
    split0 = [r for r in usable if r < num_split0]
    test = [r for r in usable if r >= num_split0]
    val, train = split0[:num_val], split0[num_val:]
    train_relations = {r: [rel for rel in scenes[r].relations if rel[3]] for r in train}
    train = [r for r in train if train_relations[r]]

    def counts(rows: list, relations_of) -> dict:
        return {
            "images": len(rows),
            "objects": sum(len(scenes[r].boxes) for r in rows),
            "relations": sum(len(relations_of(r)) for r in rows),
        }

    predicate_counts = np.zeros(len(PREDICATES), dtype=np.int64)
    for r in train:
        for rel in train_relations[r]:
            predicate_counts[rel[2]] += 1
    return {
        "format": "synthetic-vg/v1",
        "number_of_validation_images": num_val,
        "num_classes": len(OBJECT_CLASSES),
        "num_relation_classes": len(PREDICATES),
        "splits": {
            "VG_train": counts(train, lambda r: train_relations[r]),
            "VG_val": counts(val, lambda r: scenes[r].relations),
            "VG_test": counts(test, lambda r: scenes[r].relations),
        },
        "train_predicate_counts": predicate_counts.tolist(),
        "zero_shot_triplets": [[s + 1, o + 1, p + 1] for s, o, p in zero_shot],
    }


def config_overrides(out_dir: str, record: dict) -> list:
    """``KEY VALUE`` list pointing a config at the world in ``out_dir`` (for ``cfg.merge_from_list``)."""
    vg = "DATASETS.VISUAL_GENOME."
    return [
        vg + "IMAGES", os.path.join(out_dir, "VG_100K"),
        vg + "MAPPING_DICTIONARY", os.path.join(out_dir, "VG-SGG-dicts-with-attri.json"),
        vg + "IMAGE_DATA", os.path.join(out_dir, "image_data.json"),
        vg + "VG_ATTRIBUTE_H5", os.path.join(out_dir, "VG-SGG-with-attri.h5"),
        vg + "NUMBER_OF_VALIDATION_IMAGES", record["number_of_validation_images"],
        "MODEL.DETR.NUM_CLASSES", record["num_classes"],
        "MODEL.DETR.NUM_RELATION_CLASSES", record["num_relation_classes"],
    ]
