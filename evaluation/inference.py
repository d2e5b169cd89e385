"""``inference_on_dataset``: run a model over a test loader and feed an evaluator, with progress and ETA."""
import contextlib
import datetime
import logging
import time
from typing import Dict, Iterable, Optional

import torch
from tqdm import tqdm

from utils import comm

logger = logging.getLogger(__name__)

# Seconds between two progress log lines.
LOG_PERIOD_S = 30.0


@contextlib.contextmanager
def _eval_mode(model: torch.nn.Module):
    """Eval mode for the duration, the previous mode restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _model_on_cuda(model: torch.nn.Module) -> bool:
    parameter = next(model.parameters(), None)
    return parameter is not None and parameter.is_cuda


def inference_on_dataset(model: torch.nn.Module, loader: Iterable, evaluator, amp: Optional[bool] = None) -> Dict:
    """Run ``model`` on every batch of ``loader`` (this process's shard) and return ``evaluator.evaluate()``.

    The model runs in eval mode under ``torch.no_grad``; each output dict gets the ``image_id`` of its input.
    ``amp`` asks for bf16 autocast, applied only when the model is on CUDA; ``None`` takes the evaluator's
    ``inference_amp`` (``SOLVER.AMP.ENABLED`` for evaluators from ``build_sgg_evaluator``). Rank 0 shows a tqdm
    bar and logs throughput and ETA every ``LOG_PERIOD_S`` seconds.
    """
    if amp is None:
        amp = bool(getattr(evaluator, "inference_amp", False))
    on_cuda = _model_on_cuda(model)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if amp and on_cuda else contextlib.nullcontext()
    try:
        total = len(loader)
    except TypeError:
        total = None
    main = comm.is_main_process()
    evaluator.reset()
    start = last_log = time.perf_counter()
    done = 0
    with _eval_mode(model), torch.no_grad(), tqdm(total=total, disable=not main, desc="inference") as bar:
        for inputs in loader:
            with autocast:
                outputs = model(inputs)
            if on_cuda:
                torch.cuda.synchronize()
            for item, output in zip(inputs, outputs):
                output["image_id"] = item["image_id"]
            evaluator.process(inputs, outputs)
            done += 1
            bar.update(1)
            now = time.perf_counter()
            if main and now - last_log >= LOG_PERIOD_S:
                last_log = now
                per_batch = (now - start) / done
                eta = f", ETA {datetime.timedelta(seconds=int(per_batch * (total - done)))}" if total else ""
                logger.info("Inference done %d/%s batches, %.4f s/batch%s", done, total or "?", per_batch, eta)
    elapsed = time.perf_counter() - start
    if main:
        logger.info("Inference of %d batches took %s (%.4f s/batch)", done,
                    datetime.timedelta(seconds=int(elapsed)), elapsed / max(done, 1))
    return evaluator.evaluate() or {}
