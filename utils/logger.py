"""Logging set-up: the main process logs to the console and ``OUTPUT_DIR/log.txt``; others to ``log.txt.rank<N>``.

The handlers go on the root logger so every package (``data``, ``modeling``, ``evaluation``, ``engine``,
fvcore) is recorded.  Calling :func:`setup_logger` again replaces the handlers it installed before, so a process
that runs several jobs (the tests) does not duplicate lines.
"""
import logging
import os
import sys
from typing import List, Optional

__all__ = ["setup_logger"]

_FORMAT = "[%(asctime)s %(name)s %(levelname)s] %(message)s"
_DATE_FORMAT = "%m/%d %H:%M:%S"

_installed_handlers: List[logging.Handler] = []


def setup_logger(output_dir: Optional[str] = None, rank: int = 0, level: int = logging.INFO) -> logging.Logger:
    """Configure the root logger for this process and return it."""
    root = logging.getLogger()
    for handler in _installed_handlers:
        root.removeHandler(handler)
        handler.close()
    _installed_handlers.clear()

    root.setLevel(level)
    formatter = logging.Formatter(_FORMAT, datefmt=_DATE_FORMAT)
    if rank == 0:
        console = logging.StreamHandler(stream=sys.stdout)
        console.setFormatter(formatter)
        _installed_handlers.append(console)
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        filename = os.path.join(output_dir, "log.txt" if rank == 0 else f"log.txt.rank{rank}")
        file_handler = logging.FileHandler(filename, mode="a", encoding="utf-8")
        file_handler.setFormatter(formatter)
        _installed_handlers.append(file_handler)
    for handler in _installed_handlers:
        root.addHandler(handler)
    return root
