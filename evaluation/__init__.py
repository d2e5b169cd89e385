"""Scene-graph evaluation (sgdet): recall metrics, detection AP, the predictions file, inference driver."""
from .inference import inference_on_dataset
from .predictions_file import PredictionsFileError, load_predictions, save_predictions
from .sgg_evaluator import SGGEvaluator, build_sgg_evaluator

__all__ = [
    "PredictionsFileError",
    "SGGEvaluator",
    "build_sgg_evaluator",
    "inference_on_dataset",
    "load_predictions",
    "save_predictions",
]
