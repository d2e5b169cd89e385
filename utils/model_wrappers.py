"""The plain model inside the wrappers training puts around it."""
from torch import nn

__all__ = ["unwrap_model"]


def unwrap_model(model: nn.Module) -> nn.Module:
    """``model`` without its DistributedDataParallel / DataParallel and ``torch.compile`` wrappers (any nesting):
    the module whose ``state_dict`` names checkpoints use."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod"):  # torch.compile's OptimizedModule
            model = model._orig_mod
        else:
            return model
