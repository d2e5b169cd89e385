"""inference_on_dataset drives a model in eval mode without gradients and feeds the evaluator."""
import numpy as np
import pytest
import torch

from evaluation import SGGEvaluator, inference_on_dataset
from evaluation.predictions_file import PredictionsFileError
from evaluation.synthetic import random_prediction, random_split

NUM_CLASSES, NUM_PREDICATES = 10, 5


class ReplayModel(torch.nn.Module):
    """Returns prepared predictions for each image id and records the mode it was called in."""

    def __init__(self, outputs_by_id, dtype=torch.float32):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.outputs_by_id = outputs_by_id
        self.dtype = dtype
        self.calls, self.returned = [], []

    def forward(self, batch):
        self.calls.append((self.training, torch.is_grad_enabled()))
        outputs = []
        for item in batch:
            output = {key: torch.from_numpy(value) for key, value in self.outputs_by_id[item["image_id"]].items()}
            output["rel_scores"] = output["rel_scores"].to(self.dtype)
            outputs.append(output)
        self.returned += outputs
        return outputs


@pytest.fixture
def split_and_outputs():
    rng = np.random.default_rng(5)
    split = random_split(rng, 5, NUM_CLASSES, NUM_PREDICATES, boxes_per_image=6, relations_per_image=4)
    outputs = {int(r["image_id"]): random_prediction(rng, r, NUM_CLASSES, NUM_PREDICATES, num_boxes=20,
                                                     num_rows=120) for r in split.records}
    return split, outputs


def direct_metrics(split, outputs):
    evaluator = SGGEvaluator(split, zero_shot_triplets=np.zeros((0, 3), np.int64))
    for image_id, output in outputs.items():
        evaluator.process([{"image_id": image_id}], [output])
    return evaluator.evaluate()


def test_runs_model_in_eval_mode_and_returns_metrics(split_and_outputs):
    split, outputs = split_and_outputs
    model = ReplayModel(outputs)
    model.train()
    ids = [int(i) for i in split.image_ids]
    loader = [[{"image_id": i}] for i in ids[:3]] + [[{"image_id": i} for i in ids[3:]]]  # batches of 1 and 2
    evaluator = SGGEvaluator(split, zero_shot_triplets=np.zeros((0, 3), np.int64), inference_amp=True)
    results = inference_on_dataset(model, loader, evaluator)
    assert results == direct_metrics(split, outputs)
    assert model.calls == [(False, False)] * 4 and model.training
    assert [output["image_id"] for output in model.returned] == split.image_ids.tolist()


def test_low_precision_outputs_are_converted(split_and_outputs):
    split, outputs = split_and_outputs
    model = ReplayModel(outputs, dtype=torch.bfloat16)
    evaluator = SGGEvaluator(split, zero_shot_triplets=np.zeros((0, 3), np.int64))
    results = inference_on_dataset(model, [[{"image_id": int(i)}] for i in split.image_ids], evaluator)
    assert 0 < results["R@100"] <= 1


def test_bad_model_output_names_the_image(split_and_outputs):
    split, outputs = split_and_outputs
    first = int(split.image_ids[0])
    outputs[first]["scores"][0] = np.nan
    evaluator = SGGEvaluator(split, zero_shot_triplets=np.zeros((0, 3), np.int64))
    second = int(split.image_ids[1])
    evaluator.process([{"image_id": second}], [outputs[second]])
    evaluator.process([{"image_id": first}], [outputs[first]])  # values are checked with the batch
    with pytest.raises(PredictionsFileError, match=f"model output for image_id {first}: 'scores' contains NaN"):
        evaluator.evaluate()
    bad_shape = dict(outputs[second], rel_scores=outputs[second]["rel_scores"][:, :3])
    with pytest.raises(PredictionsFileError, match=f"image_id {second}: 'rel_scores' has shape"):
        evaluator.process([{"image_id": second}], [bad_shape])  # shapes are checked at once
    with pytest.raises(KeyError, match="image_id 123456 is not in the evaluated split"):
        evaluator.process([{"image_id": 123456}], [outputs[first]])
