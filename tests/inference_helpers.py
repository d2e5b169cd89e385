"""Shared pieces of the inference tests (tools/predict.py, tools/web_demo.py, tools/export_onnx.py): a tiny
synthetic world for the class and predicate names, a freshly initialised tiny model saved as a checkpoint, and a
folder of the files a user's photo folder really holds."""
import os
from typing import List

import numpy as np
import torch
from PIL import Image

from configs.defaults import get_cfg
from data.synthetic import config_overrides, generate_synthetic_vg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_CONFIG = os.path.join(ROOT, "configs", "tiny_cpu.yaml")
DEMO_CONFIG = os.path.join(ROOT, "configs", "demo_synthetic.yaml")


def make_names_world(directory: str) -> List[str]:
    """A 6-image synthetic world (its images and its class/predicate names); its config overrides."""
    record = generate_synthetic_vg(directory, num_images=6, seed=3, number_of_validation_images=1)
    return [str(value) for value in config_overrides(directory, record)]


def tiny_cfg(world: List[str], config_file: str = TINY_CONFIG, *overrides):
    cfg = get_cfg()
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(world) + ["MODEL.DEVICE", "cpu", *overrides])
    return cfg


def save_initialised_model(cfg, path: str, seed: int = 0) -> str:
    """Build ``cfg``'s model with ``seed`` (untrained) and save it as a checkpoint ``path`` (the format
    ``engine.checkpoint`` writes); returns ``path``."""
    from engine.checkpoint import CHECKPOINT_FORMAT
    from modeling import build_model

    torch.manual_seed(seed)
    torch.save({"format": CHECKPOINT_FORMAT, "model": build_model(cfg).state_dict()}, path)
    return path


def write_messy_folder(directory: str) -> dict:
    """The files of a real photo folder: a JPEG, a grayscale JPEG, a CMYK JPEG, an RGBA PNG, an EXIF-rotated JPEG,
    a 1x1 PNG, a truncated JPEG, a text file named .jpg and a notes.txt (ignored: no image extension).  Returns
    ``{"good": [names], "bad": [names], "ignored": [names]}``."""
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (150, 200, 3), dtype=np.uint8))
    rgb.save(os.path.join(directory, "a_photo.jpg"), quality=90)
    rgb.convert("L").save(os.path.join(directory, "b_gray.jpg"))
    rgb.convert("CMYK").save(os.path.join(directory, "c_cmyk.jpg"))
    rgba = rgb.resize((180, 120)).convert("RGBA")
    rgba.putalpha(128)
    rgba.save(os.path.join(directory, "d_alpha.png"))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    rgb.resize((160, 96)).save(os.path.join(directory, "e_rotated.jpg"), exif=exif)
    Image.new("RGB", (1, 1), (200, 30, 30)).save(os.path.join(directory, "f_tiny.png"))
    full = os.path.join(directory, "a_photo.jpg")
    with open(full, "rb") as f:
        payload = f.read()
    with open(os.path.join(directory, "g_truncated.jpg"), "wb") as f:
        f.write(payload[: len(payload) // 2])
    with open(os.path.join(directory, "h_text.jpg"), "w") as f:
        f.write("this is not an image\n")
    with open(os.path.join(directory, "notes.txt"), "w") as f:
        f.write("holiday photos\n")
    return {"good": ["a_photo.jpg", "b_gray.jpg", "c_cmyk.jpg", "d_alpha.png", "e_rotated.jpg", "f_tiny.png"],
            "bad": ["g_truncated.jpg", "h_text.jpg"], "ignored": ["notes.txt"]}
