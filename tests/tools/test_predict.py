"""tools/predict.py on a user's messy folder: bad files skipped and named (exit status 1), the JSON schema, resume and
--overwrite, JSONL output, no self-pairs by default, and batches whose outputs equal one-by-one outputs."""
import hashlib
import json
import os

import pytest
import torch

from tests.inference_helpers import TINY_CONFIG, make_names_world, save_initialised_model, tiny_cfg, \
    write_messy_folder
from tools import predict


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_names_world(str(tmp_path_factory.mktemp("world")))


@pytest.fixture(scope="module")
def weights(world, tmp_path_factory):
    return save_initialised_model(tiny_cfg(world), str(tmp_path_factory.mktemp("weights") / "tiny.pth"))


SMALL = ["INPUT.MIN_SIZE_TEST", "96", "INPUT.MAX_SIZE_TEST", "128"]  # small inputs keep the tests fast


def _argv(world, weights, inputs, output, *flags):
    return ["--config-file", TINY_CONFIG, "--input", str(inputs), "--output", str(output), *flags, *world,
            "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", weights, *SMALL]


def test_messy_folder_skips_and_names_the_bad_files(world, weights, tmp_path, capsys):
    folder = tmp_path / "photos"
    files = write_messy_folder(str(folder))
    out = tmp_path / "graphs"
    assert predict.main(_argv(world, weights, folder, out, "--batch-size", "2")) == 1
    err = capsys.readouterr().err
    summary = err[err.index("skipped 2 of 8 files:"):]
    for name in files["bad"]:
        assert f"{folder / name}: cannot decode" in summary
    assert "ignored 1 files without an image extension: notes.txt" in err
    written = sorted(os.listdir(out))
    assert written == sorted(os.path.splitext(n)[0] + ext for n in files["good"] for ext in (".json", ".png"))

    sha = hashlib.sha256(open(weights, "rb").read()).hexdigest()
    sizes = {"a_photo": (200, 150), "b_gray": (200, 150), "c_cmyk": (200, 150), "d_alpha": (180, 120),
             "e_rotated": (96, 160), "f_tiny": (1, 1)}  # e_rotated is 160x96 on disk, EXIF-rotated by 90°
    for stem, (width, height) in sizes.items():
        with open(out / f"{stem}.json") as f:
            record = json.load(f)
        assert record["format"] == "iterativesg-scene-graph/v1" and record["file_name"].startswith(stem)
        assert (record["width"], record["height"]) == (width, height)
        assert record["model"] == {"config_file": TINY_CONFIG, "meta_architecture": "IterativeSceneGraphModel",
                                   "encoder": "DETR", "weights": weights, "weights_sha256": sha,
                                   "runtime": "torch"}
        assert record["thresholds"] == {"top_k": 20, "score_threshold": 0.0, "object_threshold": 0.3,
                                        "self_pairs": False, "nms_thresh": 0.5, "relations_per_image": 100}
        assert 0 < len(record["triplets"]) <= 20
        for t in record["triplets"]:
            assert t["subject_index"] != t["object_index"]
            for x1, y1, x2, y2 in (record["objects"][t[k]]["box_xyxy"] for k in ("subject_index", "object_index")):
                assert 0 <= x1 <= x2 <= width and 0 <= y1 <= y2 <= height
        assert (out / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_keeps_existing_outputs_and_overwrite_redoes_them(world, weights, tmp_path, capsys):
    folder = tmp_path / "photos"
    write_messy_folder(str(folder))
    for name in ("b_gray.jpg", "c_cmyk.jpg", "d_alpha.png", "e_rotated.jpg", "g_truncated.jpg", "h_text.jpg"):
        os.remove(folder / name)
    out = tmp_path / "graphs"
    assert predict.main(_argv(world, weights, folder, out)) == 0
    (out / "a_photo.json").write_text('{"kept": true}')  # an existing output is not touched by a resumed run
    os.remove(out / "f_tiny.json")  # a run killed between the PNG and the JSON: the image is redone
    capsys.readouterr()
    assert predict.main(_argv(world, weights, folder, out)) == 0
    printed = capsys.readouterr()
    assert "1 of 2 images already have their output" in printed.err
    assert "wrote 1 scene graphs (.json + .png)" in printed.out and "1 already there" in printed.out
    assert json.loads((out / "a_photo.json").read_text()) == {"kept": True}
    assert json.loads((out / "f_tiny.json").read_text())["width"] == 1
    assert predict.main(_argv(world, weights, folder, out, "--overwrite")) == 0
    assert json.loads((out / "a_photo.json").read_text())["file_name"] == "a_photo.jpg"


def test_jsonl_one_line_per_image_and_a_torn_line_is_redone(world, weights, tmp_path, capsys):
    folder = tmp_path / "photos"
    files = write_messy_folder(str(folder))
    out = tmp_path / "graphs.jsonl"
    assert predict.main(_argv(world, weights, folder, out, "--format", "jsonl", "--top-k", "3")) == 1
    lines = out.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert sorted(r["file_name"] for r in records) == files["good"]
    assert all(len(r["triplets"]) <= 3 and r["thresholds"]["top_k"] == 3 for r in records)
    assert any(r["triplets"] for r in records)
    # A killed run leaves a torn last line: the resumed run drops it and redoes that image only.
    out.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:40])
    capsys.readouterr()
    assert predict.main(_argv(world, weights, folder, out, "--format", "jsonl", "--top-k", "3")) == 1
    assert "wrote 1 lines" in capsys.readouterr().out
    again = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["file_name"] for r in again) == files["good"]
    assert again[-1] == records[-1]


def test_self_pairs_only_on_request():
    """A row pairing a box with itself is dropped from the user-facing output; the other rows keep their order."""
    prediction = {
        "boxes": torch.tensor([[0.0, 0, 10, 10], [5, 5, 20, 20], [30, 0, 40, 8]]),
        "labels": torch.tensor([0, 1, 2]), "scores": torch.tensor([0.9, 0.8, 0.5]),
        "rel_pairs": torch.tensor([[0, 0], [0, 1], [2, 2], [1, 2]]),
        "rel_scores": torch.tensor([[0.9, 0.1], [0.2, 0.6], [0.5, 0.4], [0.3, 0.7]]),
        "rel_ranking_scores": torch.tensor([0.729, 0.432, 0.125, 0.28]),
    }
    kept = predict.without_self_pairs(prediction)
    assert kept["rel_pairs"].tolist() == [[0, 1], [1, 2]]
    assert kept["rel_scores"].tolist() == prediction["rel_scores"][[1, 3]].tolist()
    assert kept["rel_ranking_scores"].tolist() == prediction["rel_ranking_scores"][[1, 3]].tolist()
    assert kept["boxes"] is prediction["boxes"] and kept["scores"] is prediction["scores"]
    names = (["a", "b", "c"], ["on", "has"])
    everything = predict.scene_graph_json(prediction, *names, 10, 0.0, 1.0, "x.jpg")["triplets"]
    shown = predict.scene_graph_json(kept, *names, 10, 0.0, 1.0, "x.jpg")["triplets"]
    # scores: (0,0) 0.9*0.9*0.9 = 0.729, (0,1) 0.9*0.8*0.6 = 0.432, (2,2) 0.5*0.5*0.5 = 0.125, (1,2) 0.8*0.5*0.7 = 0.28
    assert [(t["subject"], t["predicate"], t["object"], t["score"]) for t in everything] == [
        ("a", "on", "a", 0.729), ("a", "has", "b", 0.432), ("b", "has", "c", 0.28), ("c", "on", "c", 0.125)]
    assert [(t["subject"], t["predicate"], t["object"], t["score"]) for t in shown] == [
        ("a", "has", "b", 0.432), ("b", "has", "c", 0.28)]


def test_batches_of_different_sizes_equal_one_by_one(world, weights, tmp_path):
    """Five images of four padded shapes (128x96 and 127x96 share one) in batches of 4: the one-by-one
    predictions, as tensors and as the written records."""
    from PIL import Image

    cfg = tiny_cfg(world, TINY_CONFIG, "MODEL.WEIGHTS", weights, *SMALL)
    predictor = predict.SceneGraphPredictor(cfg)
    source = Image.open(os.path.join(world[1], "1.jpg"))
    folder = tmp_path / "sizes"
    folder.mkdir()
    for index, (w, h) in enumerate([(128, 96), (127, 96), (96, 128), (128, 40), (128, 20)]):
        source.resize((w, h)).save(folder / f"{index}.png")
    files = predict.list_images(str(folder))
    items = [predict.load_image(f, cfg)[1] for f in files]
    keys = [predictor.batch_key(item) for item in items]
    assert keys == [(96, 128), (96, 128), (128, 96), (64, 128), (32, 128)]  # padded to multiples of 32
    one_by_one = [predictor.predict_items([item])[0] for item in items]
    for a, b in zip(one_by_one, predictor.predict_items(items[:2])):
        _assert_same_prediction(a, b)

    batch = predict.predict(cfg, files, str(tmp_path / "four.jsonl"), output_format="jsonl", batch_size=4,
                            predictor=predictor)
    assert len(batch.written) == 5 and not batch.skipped
    records = {r["file_name"]: r for r in map(json.loads, open(tmp_path / "four.jsonl"))}
    assert sorted(records) == [f"{i}.png" for i in range(5)]
    for file_name, prediction in zip(files, one_by_one):
        expected = predict.scene_graph_json(predict.without_self_pairs(prediction), predictor.class_names,
                                            predictor.predicate_names, 20, 0.0, 0.3, file_name)
        got = records[os.path.basename(file_name)]
        assert len(got["triplets"]) == len(expected["triplets"]) > 0
        for a, b in zip(got["triplets"], expected["triplets"]):
            assert {k: v for k, v in a.items() if "score" not in k} == {k: v for k, v in b.items() if "score" not in k}
            assert abs(a["score"] - b["score"]) <= 2e-4
        for a, b in zip(got["objects"], expected["objects"]):
            assert a["label"] == b["label"] and abs(a["score"] - b["score"]) <= 2e-4
            assert max(abs(x - y) for x, y in zip(a["box_xyxy"], b["box_xyxy"])) <= 0.02


def _assert_same_prediction(a, b):
    assert torch.equal(a["labels"], b["labels"]) and torch.equal(a["rel_pairs"], b["rel_pairs"])
    torch.testing.assert_close(a["boxes"], b["boxes"], atol=1e-3, rtol=0)  # pixels
    torch.testing.assert_close(a["scores"], b["scores"], atol=1e-5, rtol=0)
    torch.testing.assert_close(a["rel_scores"], b["rel_scores"], atol=1e-5, rtol=0)
