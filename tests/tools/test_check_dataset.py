"""tools/check_dataset.py: an ``ok:`` line and exit 0 for a good file; one ``error:`` line per problem kind (count
and first ids) and exit 2 for a bad one; never a traceback."""
import copy
import json

from tests.data.test_coco_relations import THREE_IMAGES, write_dataset
from tools.check_dataset import main


def test_a_good_file_prints_its_size(tmp_path, capsys):
    path, images = write_dataset(str(tmp_path))
    assert main(["--json", path, "--images", images]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (f"ok: {path}: 3 images, 7 boxes, 5 relations; 3 categories, 3 predicates "
                      "(MODEL.DETR.NUM_CLASSES 3 MODEL.DETR.NUM_RELATION_CLASSES 3)")
    assert out[1:] == ["note: 1 iscrowd boxes and the 1 relations using them are skipped"]


def test_a_broken_file_gets_one_line_per_problem_kind(tmp_path, capsys):
    data = copy.deepcopy(THREE_IMAGES)
    data["images"][1]["file_name"] = "missing.jpg"
    data["annotations"][0]["bbox"] = [10, 10, -1, 20]
    data["annotations"][1]["bbox"] = [10, 10, 100, 20]  # 10 px past the right edge
    data["annotations"][4]["bbox"] = [0, 0, 0, 10]
    data["annotations"][5]["id"] = 200
    data["rel_annotations"][0]["object_id"] = 12345
    data["rel_annotations"][5]["object_id"] = 101  # an annotation of image 10
    data["rel_annotations"][2]["predicate_id"] = 8
    path, images = write_dataset(str(tmp_path), data)
    assert main(["--json", path, "--images", images]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        f"error: {path}: missing_image_file: 1 image files are missing under {images} (first image ids: "
        "20 (missing.jpg))",
        f"error: {path}: degenerate_box: 2 annotations have a bbox with width or height <= 0 (first annotation "
        "ids: 100, 200)",
        f"error: {path}: box_outside_image: 1 annotations have a bbox more than 1 px outside their image (first "
        "annotation ids: 101)",
        f"error: {path}: duplicate_annotation_id: 1 annotations repeat an id (first ids: 200)",
        f"error: {path}: relation_unknown_annotation: 2 relations point at a subject_id/object_id that is not an "
        "annotation id (first relation ids: 1, 5)",  # 5's object was the annotation whose id is repeated
        f"error: {path}: unknown_predicate: 1 relations have a predicate_id that is not in rel_categories (first "
        "relation ids: 3)",
        f"error: {path}: relation_across_images: 1 relations join annotations of another image than their "
        "image_id (first relation ids: 6)",
    ]


def test_unreadable_inputs_are_one_error_line(tmp_path, capsys):
    assert main(["--json", str(tmp_path / "none.json")]) == 2
    assert capsys.readouterr().err == f"error: --json: file not found: {tmp_path / 'none.json'}\n"
    broken = tmp_path / "broken.json"
    broken.write_text('{"images": [')
    assert main(["--json", str(broken)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --json: {broken} is not valid JSON:") and err.count("\n") == 1
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({k: [] for k in ("images", "annotations", "categories", "rel_categories",
                                                 "rel_annotations")}))
    assert main(["--json", str(empty), "--images", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err == f"error: --images: folder not found: {tmp_path / 'nowhere'}\n"
    assert main(["--json", str(empty)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: {empty}: empty_vocabulary: 2 vocabulary lists are empty (first lists: categories, rel_categories)",
        f"error: {empty}: empty_split: 1 images: the split has no image (first lists: images)",
    ]
