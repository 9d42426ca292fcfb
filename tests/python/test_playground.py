"""The web playground (issue #20) in headless Chromium, served by the real dsocr-server.

(a) On the demo model, with --api-key: the key typed into the page, a generated PNG uploaded, the
    answer streamed to the end; its text equals the API's own answer to the same request. A wrong
    key shows the server's 401.
(b) The box overlay: the demo model never writes grounding tags, so a small proxy serves the page
    from the real server but answers the chat request itself with a canned stream in the API's
    format (a grounding block, a `pages` object with a box). The label and the box are checked
    in the DOM and, from a screenshot, in pixels. The same proxy checks a PDF (a white page of the
    page's aspect ratio), an SSE error event, that model output cannot inject HTML, and Stop.

Needs Debian's chromium and chromium-driver (scripts/setup.sh installs them) and PyPI selenium.
"""
import base64
import http.server
import io
import json
import shutil
import threading
import time
import urllib.error
import urllib.request

import pytest
from PIL import Image, ImageDraw

from conftest import ServerProcess

selenium = pytest.importorskip("selenium", reason="PyPI selenium is not installed")
from selenium import webdriver  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="needs Debian's chromium and chromium-driver (scripts/setup.sh installs them)")

API_KEY = "sk-playground-test"
VIEWPORT = (1280, 1400)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("playground")
    proc = ServerProcess("--model", "demo", "--api-key", API_KEY, "--max-model-len", "2048",
                         env={"DSOCR_CACHE_DIR": str(tmp / "cache")})
    try:
        proc.wait_healthy()
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={VIEWPORT[0]},{VIEWPORT[1]}", "--force-device-scale-factor=1",
                "--hide-scrollbars"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options,
                              service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def make_png(path, size=(400, 300)):
    img = Image.new("RGB", size, (235, 235, 235))
    draw = ImageDraw.Draw(img)
    for i in range(5):
        draw.text((20, 20 + 40 * i), f"Playground line {i}", fill="black")
    img.save(path)
    return path.read_bytes()


def open_page(browser, base_url, key):
    browser.get(base_url + "/")
    browser.execute_script("localStorage.clear()")
    key_field = browser.find_element(By.ID, "api-key")
    key_field.clear()
    key_field.send_keys(key)


def send_and_wait(browser, timeout=90):
    browser.find_element(By.ID, "send").click()
    WebDriverWait(browser, timeout).until(
        lambda d: d.find_element(By.ID, "send").is_enabled()
        and not d.find_element(By.ID, "status").text.startswith(("Sending", "Streaming")))
    return browser.find_element(By.ID, "status").text


def text_of(browser, element_id):
    return browser.find_element(By.ID, element_id).get_property("textContent")


def api_chat(base_url, body):
    req = urllib.request.Request(base_url + "/v1/chat/completions", json.dumps(body).encode(),
                                 {"Content-Type": "application/json",
                                  "Authorization": "Bearer " + API_KEY})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())


def test_streams_the_demo_model_with_the_key(server, browser, tmp_path):
    png = make_png(tmp_path / "page.png")
    open_page(browser, server.base_url, API_KEY)
    browser.find_element(By.ID, "file-input").send_keys(str(tmp_path / "page.png"))
    max_tokens = browser.find_element(By.ID, "max-tokens")
    max_tokens.clear()
    max_tokens.send_keys("12")
    status = send_and_wait(browser)

    assert status.startswith("Done"), (status, text_of(browser, "error"))
    assert browser.find_element(By.ID, "error").get_attribute("hidden") is not None
    raw = text_of(browser, "raw")
    # The same request through the API (the page sends task "document", no text part).
    reference = api_chat(server.base_url, {
        "model": "demo", "task": "document", "max_tokens": 12,
        "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {
            "url": "data:image/png;base64," + base64.b64encode(png).decode()}}]}]})
    assert raw and raw == reference["choices"][0]["message"]["content"]
    tokens = reference["usage"]["completion_tokens"]
    assert f"{tokens} token" in status and "pages done" in status
    # The picked image is shown (blob: URL, allowed by the CSP) and has loaded.
    assert browser.execute_script(
        "const i = document.querySelector('#pages img'); return i && i.complete && i.naturalWidth")
    # No script error and no CSP violation on the way.
    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not severe, severe

    # A wrong key: the server's 401, shown as an error.
    key_field = browser.find_element(By.ID, "api-key")
    key_field.clear()
    key_field.send_keys("sk-wrong")
    status = send_and_wait(browser)
    assert status.startswith("Failed")
    error = browser.find_element(By.ID, "error")
    assert error.is_displayed()
    assert "HTTP 401" in error.text and "API key" in error.text


# --- (b) the box overlay, through a proxy with a canned stream ------------------------------------

PAGE_W, PAGE_H = 400, 300
TITLE_RED = (214, 39, 40)  # the colour the page gives "title" boxes (LABEL_COLOURS in playground.js)
BOX = [100, 60, 300, 180]  # pixels on the page
BOX_NORM = [round(v * 999 / s) for v, s in zip(BOX, (PAGE_W, PAGE_H, PAGE_W, PAGE_H))]
TAGGED = f"<|ref|>title<|/ref|><|det|>[[{', '.join(map(str, BOX_NORM))}]]<|/det|>\n# Hello box"


def sse(obj):
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def chunk(delta=None, finish=None, **extra):
    return {"id": "chatcmpl-canned", "object": "chat.completion.chunk", "created": 1,
            "model": "demo",
            "choices": [{"index": 0, "delta": delta or {}, "logprobs": None,
                         "finish_reason": finish}], **extra}


def page_object(index, width, height, text):
    return {"index": index, "page_number": index + 1, "width": width, "height": height,
            "finish_reason": "stop", "text": text,
            "blocks": [{"label": "title", "text": "# Hello box", "bbox": BOX,
                        "bbox_norm": BOX_NORM}]}


def canned_stream(kind):
    """The API's streaming format (docs/api.md): role chunk, content, the page's last chunk with
    `pages`, the finish chunk, [DONE]; or an error event."""
    events = [sse(chunk({"role": "assistant", "content": ""}))]
    if kind == "error":
        events.append(sse(chunk({"content": "partial "})))
        events.append(sse({"error": {"message": "page 2: the page failed to render",
                                     "type": "invalid_request_error", "param": None,
                                     "code": None}}))
    elif kind == "pdf":
        text = TAGGED + "\n\n<--- Page Split --->\n"
        events.append(sse(chunk({"content": text}, pages=[page_object(0, 612, 792, TAGGED)])))
        events.append(sse(chunk(finish="stop")))
    elif kind == "hostile":
        events.append(sse(chunk({"content": '<img src=x onerror="window.pwned=1">'
                                            "<script>window.pwned=2</script>\n"
                                            "**bold** <b>not bold</b>"})))
        events.append(sse(chunk(finish="stop")))
    else:
        events.append(sse(chunk({"content": TAGGED[:20]})))  # a tag split across chunks
        events.append(sse(chunk({"content": TAGGED[20:]},
                                pages=[page_object(0, PAGE_W, PAGE_H, TAGGED)])))
        events.append(sse(chunk(finish="stop")))
    return b"".join(events) + b": keep-alive\n\n" + b"data: [DONE]\n\n"


class CannedProxy:
    """GETs go to the real server (the playground's files, /v1/models); POST /v1/chat/completions
    is answered with canned_stream(self.kind), and its request body is kept."""

    def __init__(self, upstream):
        proxy = self
        self.kind = "image"
        self.requests = []
        self.release = threading.Event()  # ends a "slow" stream

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() in ("authorization", "accept")}
                req = urllib.request.Request(upstream + self.path, headers=headers)
                try:
                    with urllib.request.urlopen(req, timeout=10) as r:
                        status, reply_headers, body = r.status, r.headers, r.read()
                except urllib.error.HTTPError as e:
                    status, reply_headers, body = e.code, e.headers, e.read()
                self.send_response(status)
                for name in ("Content-Type", "Content-Security-Policy", "Cache-Control",
                             "X-Content-Type-Options"):
                    if reply_headers.get(name):
                        self.send_header(name, reply_headers[name])
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                proxy.requests.append({"body": json.loads(body),
                                       "authorization": self.headers.get("Authorization")})
                if proxy.kind == "slow":
                    return self._slow_stream()
                payload = canned_stream(proxy.kind)
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _slow_stream(self):
                """A stream that starts and then stalls until release is set (or 20 s)."""
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(sse(chunk({"role": "assistant", "content": ""})) +
                                 sse(chunk({"content": "first words"})))
                self.wfile.flush()
                proxy.release.wait(20)
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def proxy(server):
    p = CannedProxy(server.base_url)
    yield p
    p.httpd.shutdown()


def colour_close(pixel, expected, tolerance=40):
    return all(abs(a - b) <= tolerance for a, b in zip(pixel[:3], expected))


def css_rgb(value):
    """'rgb(214, 39, 40)' -> (214, 39, 40)."""
    return tuple(int(float(v)) for v in value[value.index("(") + 1:value.index(")")].split(",")[:3])


def box_geometry(browser, surface):
    """The first box's outline colour and its rectangle relative to its page surface (CSS px)."""
    return browser.execute_script("""
        const surface = arguments[0], box = surface.querySelector('.box');
        const s = surface.getBoundingClientRect(), b = box.getBoundingClientRect();
        return {colour: getComputedStyle(box).borderTopColor,
                border: parseFloat(getComputedStyle(box).borderTopWidth),
                x: b.left - s.left, y: b.top - s.top, w: b.width, h: b.height,
                sw: s.width, sh: s.height};""", surface)


def test_boxes_over_the_image(proxy, browser, tmp_path):
    make_png(tmp_path / "page.png", (PAGE_W, PAGE_H))
    proxy.kind = "image"
    open_page(browser, proxy.base_url, API_KEY)
    browser.find_element(By.ID, "file-input").send_keys(str(tmp_path / "page.png"))
    status = send_and_wait(browser, timeout=30)
    assert status.startswith("Done") and "pages done: 1" in status, status

    sent = proxy.requests[-1]
    assert sent["authorization"] == "Bearer " + API_KEY
    assert sent["body"]["stream"] is True and sent["body"]["task"] == "document"
    part = sent["body"]["messages"][0]["content"][0]
    assert part["type"] == "image_url"
    assert part["image_url"]["url"].startswith("data:image/png;base64,")

    # Raw keeps the tag; the rendering drops it and renders the heading.
    assert text_of(browser, "raw") == TAGGED
    assert browser.find_element(By.CSS_SELECTOR, "#rendered h1").text == "Hello box"
    assert "<|ref|>" not in text_of(browser, "rendered")
    labels = browser.find_elements(By.CSS_SELECTOR, "#pages .box-label")
    assert [label.text for label in labels] == ["title"]

    surface = browser.find_element(By.CSS_SELECTOR, "#pages .page-surface")
    assert surface.find_element(By.TAG_NAME, "img").get_property("naturalWidth") == PAGE_W
    g = box_geometry(browser, surface)
    # Placed from the page's pixels, scaled to the displayed size.
    scale = g["sw"] / PAGE_W
    assert g["x"] == pytest.approx(BOX[0] * scale, abs=1.5)
    assert g["y"] == pytest.approx(BOX[1] * scale, abs=1.5)
    assert g["w"] == pytest.approx((BOX[2] - BOX[0]) * scale, abs=1.5)
    assert g["h"] == pytest.approx((BOX[3] - BOX[1]) * scale, abs=1.5)

    shot = Image.open(io.BytesIO(surface.screenshot_as_png)).convert("RGB")
    colour = css_rgb(g["colour"])
    assert colour == TITLE_RED
    half = g["border"] / 2
    on_outline = [(g["x"] + g["w"] / 2, g["y"] + half),             # top edge
                  (g["x"] + g["w"] / 2, g["y"] + g["h"] - half),    # bottom edge
                  (g["x"] + half, g["y"] + g["h"] / 2),             # left edge
                  (g["x"] + g["w"] - half, g["y"] + g["h"] / 2)]    # right edge
    away = [(g["x"] + g["w"] / 2, g["y"] + g["h"] / 2 + 20),        # inside, below the text
            (g["x"] / 2, g["y"] + g["h"] / 2),                      # left of the box
            (g["x"] + g["w"] / 2, (g["y"] + g["h"] + g["sh"]) / 2)]  # below the box
    for x, y in on_outline:
        pixel = shot.getpixel((int(x), int(y)))
        assert colour_close(pixel, colour), ((x, y), pixel, colour)
    for x, y in away:
        pixel = shot.getpixel((int(x), int(y)))
        assert not colour_close(pixel, colour), ((x, y), pixel, colour)


def test_pdf_page_is_a_white_page_of_its_aspect_ratio(proxy, browser, tmp_path):
    pdf = tmp_path / "doc.pdf"
    Image.new("RGB", (612, 792), "white").save(pdf)  # Pillow writes a one-page PDF
    proxy.kind = "pdf"
    open_page(browser, proxy.base_url, API_KEY)
    browser.find_element(By.ID, "file-input").send_keys(str(pdf))
    browser.find_element(By.ID, "page-range").send_keys("1-2")
    status = send_and_wait(browser, timeout=30)
    assert status.startswith("Done") and "pages done: 1" in status, status

    body = proxy.requests[-1]["body"]
    part = body["messages"][0]["content"][0]
    assert part["type"] == "file" and part["file"]["filename"] == "doc.pdf"
    assert part["file"]["file_data"].startswith("data:application/pdf;base64,")
    assert base64.b64decode(part["file"]["file_data"].split(",", 1)[1]) == pdf.read_bytes()
    assert body["pages"] == "1-2"

    surface = browser.find_element(By.CSS_SELECTOR, "#pages .page-surface")
    assert not surface.find_elements(By.TAG_NAME, "img")
    size = surface.size
    assert size["width"] / size["height"] == pytest.approx(612 / 792, rel=0.01)
    g = box_geometry(browser, surface)
    shot = Image.open(io.BytesIO(surface.screenshot_as_png)).convert("RGB")
    x, y = g["x"] + g["w"] / 2, g["y"] + g["border"] / 2
    assert colour_close(shot.getpixel((int(x), int(y))), TITLE_RED)
    assert shot.getpixel((int(g["x"] / 2), int(g["y"] + g["h"] / 2))) == (255, 255, 255)
    assert browser.find_elements(By.CSS_SELECTOR, "#rendered hr.page-split")


def test_stream_error_event_and_hostile_output(proxy, browser, tmp_path):
    make_png(tmp_path / "page.png")
    proxy.kind = "error"
    open_page(browser, proxy.base_url, API_KEY)
    browser.find_element(By.ID, "file-input").send_keys(str(tmp_path / "page.png"))
    status = send_and_wait(browser, timeout=30)
    assert status.startswith("Failed"), status
    error = browser.find_element(By.ID, "error")
    assert error.is_displayed() and "page 2: the page failed to render" in error.text
    assert text_of(browser, "raw") == "partial "

    proxy.kind = "hostile"
    status = send_and_wait(browser, timeout=30)
    assert status.startswith("Done"), status
    assert not browser.find_element(By.ID, "error").is_displayed()
    rendered = browser.find_element(By.ID, "rendered")
    assert not rendered.find_elements(By.CSS_SELECTOR, "img, script, b")
    assert rendered.find_element(By.TAG_NAME, "strong").text == "bold"
    assert "<script>" in rendered.text and "<b>not bold</b>" in rendered.text
    time.sleep(0.2)  # an onerror handler, had the <img> been created, would have run by now
    assert browser.execute_script("return window.pwned === undefined")


def test_stop_aborts_the_stream(proxy, browser, tmp_path):
    make_png(tmp_path / "page.png")
    proxy.kind = "slow"
    proxy.release.clear()
    open_page(browser, proxy.base_url, API_KEY)
    browser.find_element(By.ID, "file-input").send_keys(str(tmp_path / "page.png"))
    browser.find_element(By.ID, "send").click()
    try:
        WebDriverWait(browser, 20).until(lambda d: text_of(d, "raw") == "first words")
        assert browser.find_element(By.ID, "status").text.startswith("Streaming")
        assert not browser.find_element(By.ID, "send").is_enabled()
        browser.find_element(By.ID, "stop").click()
        WebDriverWait(browser, 5).until(
            lambda d: d.find_element(By.ID, "status").text.startswith("Stopped"))
    finally:
        proxy.release.set()
    assert browser.find_element(By.ID, "send").is_enabled()
    assert not browser.find_element(By.ID, "stop").is_enabled()
    assert not browser.find_element(By.ID, "error").is_displayed()  # a stop is not an error
    assert text_of(browser, "raw") == "first words"
