"""tools/web_demo.py in a real browser: the gradio page served on a free localhost port with an untrained tiny model,
driven by headless Chromium from the system packages through Playwright (nothing is downloaded): load the page,
upload an image, predict, and find the triplet table's rows and the drawn image.  A screenshot is written to the
test's tmp folder (docs/web_demo.png is one of these).  Without a Chromium the browser test skips, saying so;
`.ci/run` installs it."""
import json
import os
import shutil
import socket

import numpy as np
import pytest
from PIL import Image

from tests.inference_helpers import TINY_CONFIG, make_names_world, save_initialised_model, tiny_cfg
from tools import web_demo

CHROMIUM = next((path for path in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if os.path.isfile(path)),
                shutil.which("chromium"))


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("web"))
    world = make_names_world(os.path.join(folder, "world"))
    weights = save_initialised_model(tiny_cfg(world), os.path.join(folder, "tiny.pth"))
    cfg, config_file = web_demo.load_config(TINY_CONFIG, world + ["MODEL.WEIGHTS", weights])
    return web_demo.WebDemo(cfg, config_file), world


def test_one_request_without_the_browser(demo):
    page_demo, world = demo
    image = np.asarray(Image.open(os.path.join(world[1], "1.jpg")))
    boxes, graph_png, rows, json_path = page_demo(image, 5, 0.0, name="1.jpg")
    assert boxes.size == (image.shape[1], image.shape[0])
    assert open(graph_png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    with open(json_path) as f:
        record = json.load(f)
    assert (record["width"], record["height"]) == (image.shape[1], image.shape[0])
    assert record["thresholds"]["top_k"] == 5 and record["model"]["config_file"] == TINY_CONFIG
    assert 0 < len(rows) == len(record["triplets"]) <= 5
    assert [row[1] for row in rows] == [t["predicate"] for t in record["triplets"]]
    with pytest.raises(ValueError, match="upload an image first"):
        page_demo(None, 5, 0.0)


def test_missing_demo_model_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no output/demo here
    assert web_demo.main([]) == 2
    assert "error: output/demo/config.yaml is missing: run `make demo` first" in capsys.readouterr().err


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (apt-get install -y chromium); .ci/run installs it")
def test_page_in_headless_chromium(demo, tmp_path):
    from playwright.sync_api import sync_playwright

    page_demo, world = demo
    page = web_demo.build_page(page_demo, [os.path.join(world[1], "2.jpg")], top_k=10, score_threshold=0.0)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    page.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
            tab = browser.new_page(viewport={"width": 1280, "height": 1000})
            tab.goto(f"http://127.0.0.1:{port}/", timeout=60_000)
            tab.set_input_files("#input-image input[type=file]", os.path.join(world[1], "1.jpg"))
            tab.wait_for_selector("#input-image img", timeout=30_000)
            tab.click("#predict")
            # the drawn boxes arrive as an image whose pixels the browser decoded
            tab.wait_for_function("() => { const img = document.querySelector('#boxes img');"
                                  " return img && img.complete && img.naturalWidth > 0; }", timeout=60_000)
            tab.wait_for_function("() => Number(document.querySelector('#triplets [role=grid]')"
                                  ".getAttribute('aria-rowcount')) > 1", timeout=30_000)
            rows = int(tab.locator("#triplets [role=grid]").get_attribute("aria-rowcount")) - 1  # minus header
            table = tab.locator("#triplets").inner_text()
            tab.wait_for_function("() => { const img = document.querySelector('#scene-graph img');"
                                  " return img && img.complete && img.naturalWidth > 0; }", timeout=30_000)
            tab.screenshot(path=str(tmp_path / "web_demo.png"), full_page=True)
            browser.close()
    finally:
        page.close()
    assert 0 < rows <= 10
    predicates = page_demo.predictor.predicate_names
    assert "subject" in table and "predicate" in table and any(p in table for p in predicates)
    assert (tmp_path / "web_demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"screenshot: {tmp_path / 'web_demo.png'}")
