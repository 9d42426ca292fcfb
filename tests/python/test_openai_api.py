"""dsocr-server end to end with the tiny demo model, driven by the official `openai` SDK.

Covers: non-stream and stream answers equal to `dsocr generate` (same engine, greedy), usage with
image tokens, include_usage, images as data: URIs, as http URLs from a local web server and as
file:// URLs, SDK exception classes for each error status, the README's curl and SDK examples
run verbatim, 100+ malformed requests each answered with the right 4xx while a stream completes,
client disconnect -> request cancelled and its KV freed (metrics), SIGTERM draining.
"""
import base64
import concurrent.futures
import http.client
import http.server
import io
import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import threading
import time

import openai
import pytest
from PIL import Image, ImageDraw

from conftest import BIN_DIR, SOURCE_DIR, ServerProcess, free_port

API_KEY = "sk-test-key"


def make_page(path: pathlib.Path, size=(640, 800), seed=0) -> bytes:
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    for i in range(12):
        draw.text((40, 40 + 50 * i), f"Line {i + seed}: the quick brown fox", fill="black")
    img.save(path)
    return path.read_bytes()


class ImageHost:
    """A local web server: /page.png, /text.html, /redirect -> /page.png, /big.png (too large)."""

    def __init__(self, page: bytes):
        host = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path == "/page.png":
                    self._send(200, "image/png", page)
                elif self.path == "/text.html":
                    self._send(200, "text/html", b"<html>not an image</html>")
                elif self.path == "/redirect":
                    self.send_response(302)
                    self.send_header("Location", f"http://127.0.0.1:{host.port}/page.png")
                    self.end_headers()
                elif self.path == "/big.png":
                    self._send(200, "image/png", b"\x89PNG" + b"\0" * (3 << 20))
                else:
                    self._send(404, "text/plain", b"no")

            def _send(self, status, ctype, body):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("api")
    media = tmp / "media"
    media.mkdir()
    page = make_page(media / "page.png")
    host = ImageHost(page)
    server = ServerProcess(
        "--model", "demo", "--api-key", API_KEY, "--allow-private-image-urls",
        "--allowed-local-media-path", str(media), "--max-image-bytes", str(2 << 20),
        "--max-model-len", "2048",
        env={"DSOCR_CACHE_DIR": str(tmp / "cache")})
    try:
        server.wait_healthy()
        client = openai.OpenAI(base_url=server.base_url + "/v1", api_key=API_KEY, max_retries=0,
                               timeout=120)
        yield dict(server=server, client=client, tmp=tmp, media=media, page=page, host=host,
                   cache=tmp / "cache")
    finally:
        server.stop()
        host.httpd.shutdown()


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def image_message(url: str, text: str = "Free OCR."):
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                         {"type": "text", "text": text}]}]


def generate_reference(env, image: pathlib.Path, prompt: str, max_tokens: int) -> dict:
    model_dir = next(p for p in env["cache"].iterdir() if p.name.startswith("demo-"))
    proc = subprocess.run(
        [str(BIN_DIR / "dsocr"), "generate", "--model", str(model_dir), "--image", str(image),
         "--prompt", prompt, "--max-tokens", str(max_tokens), "--json"],
        capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


def test_non_stream_equals_offline_generate(env):
    client = env["client"]
    r = client.chat.completions.create(model="demo", max_tokens=24,
                                       messages=image_message(data_uri(env["page"])))
    ref = generate_reference(env, env["media"] / "page.png", "<image>\nFree OCR.", 24)
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == ref["text"]
    assert r.choices[0].finish_reason == ("length" if ref["finish_reason"] == "length" else "stop")
    assert r.usage.prompt_tokens == len(ref["prompt_ids"])
    assert r.usage.prompt_tokens_details.image_tokens == ref["image_tokens"] > 0
    assert r.usage.completion_tokens == len(ref["ids"])
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_stream_with_usage_equals_non_stream(env):
    client = env["client"]
    messages = image_message(data_uri(env["page"]))
    whole = client.chat.completions.create(model="demo", max_tokens=24, messages=messages)
    chunks = list(client.chat.completions.create(
        model="demo", max_tokens=24, messages=messages, stream=True,
        stream_options={"include_usage": True}))
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    # The repeated page hit the prefix cache.
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens > 0


def test_image_urls_http_and_file(env):
    client, host = env["client"], env["host"]
    base = client.chat.completions.create(model="demo", max_tokens=8,
                                          messages=image_message(data_uri(env["page"])))
    for url in (host.url("/page.png"), host.url("/redirect"),
                "file://" + str(env["media"] / "page.png")):
        r = client.chat.completions.create(model="demo", max_tokens=8, messages=image_message(url))
        assert r.choices[0].message.content == base.choices[0].message.content, url
    with pytest.raises(openai.BadRequestError, match="not an image"):
        client.chat.completions.create(model="demo", messages=image_message(host.url("/text.html")))
    with pytest.raises(openai.BadRequestError, match="HTTP 404"):
        client.chat.completions.create(model="demo", messages=image_message(host.url("/missing")))
    with pytest.raises(openai.APIStatusError) as big:
        client.chat.completions.create(model="demo", messages=image_message(host.url("/big.png")))
    assert big.value.status_code == 413
    with pytest.raises(openai.BadRequestError, match="outside"):
        client.chat.completions.create(model="demo", messages=image_message("file:///etc/passwd"))


def test_errors_raise_the_sdk_exception_classes(env):
    client, server = env["client"], env["server"]
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="nope", messages=image_message(data_uri(env["page"])))
    assert e.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="demo", messages=image_message(data_uri(env["page"])),
                                       max_tokens=100000)
    assert e.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "x"}],
                                       temperature="hot")
    assert e.value.param == "temperature"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "x"}], n=3)
    assert e.value.param == "n"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model="demo", messages=image_message("data:image/png;base64," + base64.b64encode(
                b"definitely not an image").decode()))
    bad_key = openai.OpenAI(base_url=server.base_url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad_key.models.list()
    assert [m.id for m in client.models.list().data] == ["demo"]
    # Mid-stream-capable errors still arrive as a status before streaming starts.
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="demo", stream=True, max_tokens=100000,
                                       messages=image_message(data_uri(env["page"])))


def make_pdf(path) -> None:
    """A two-page PDF (PyMuPDF, the official PDF script's library) for the README's examples."""
    import pymupdf
    doc = pymupdf.open()
    for n, (w, h) in enumerate([(595, 842), (612, 792)], 1):
        doc.new_page(width=w, height=h).insert_text((72, 72), f"Page {n}", fontsize=24)
    doc.save(str(path))


def readme_blocks(marker: str) -> list[str]:
    text = (SOURCE_DIR / "README.md").read_text()
    blocks = re.findall(r"<!-- " + marker + r" -->\s*```(?:bash|python)\n(.*?)```", text, re.S)
    assert blocks, f"README has no block marked {marker}"
    return blocks


def test_readme_examples_run_verbatim(env, tmp_path):
    """The README's curl and SDK examples, unchanged, against a keyless server on port 8000."""
    probe = socket.socket()
    if probe.connect_ex(("127.0.0.1", 8000)) == 0:
        probe.close()
        pytest.skip("port 8000 is taken; the README examples use it")
    probe.close()
    server = ServerProcess("--model", "demo", port=8000,
                           env={"DSOCR_CACHE_DIR": str(env["cache"]), "DSOCR_API_KEY": ""})
    try:
        server.wait_healthy()
        make_page(tmp_path / "page.png")
        make_pdf(tmp_path / "doc.pdf")
        for block in readme_blocks("example:curl"):
            out = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path,
                                 capture_output=True, text=True, timeout=120)
            assert out.returncode == 0, out.stderr
            assert '"error"' not in out.stdout, out.stdout[:2000]
            assert out.stdout.strip()
        for block in readme_blocks("example:python"):
            out = subprocess.run([str(pathlib.Path(os.sys.executable)), "-c", block], cwd=tmp_path,
                                 capture_output=True, text=True, timeout=120)
            assert out.returncode == 0, out.stderr
            assert out.stdout.strip()
    finally:
        server.stop()


def raw_post(port, body: bytes, headers=None, path="/v1/chat/completions"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    hdrs = {"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"}
    hdrs.update(headers or {})
    conn.request("POST", path, body=body, headers=hdrs)
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, data


def bad_input_corpus(page: bytes) -> list[tuple[bytes, int, dict]]:
    """(body, expected status, extra headers): 100+ ways to get a request wrong."""
    img = {"type": "image_url", "image_url": {"url": data_uri(page)}}
    ok_msgs = [{"role": "user", "content": [img, {"type": "text", "text": "Free OCR."}]}]
    base = {"model": "demo", "messages": ok_msgs, "max_tokens": 4}
    cases: list[tuple[bytes, int, dict]] = []

    def with_(**kw):
        d = dict(base)
        d.update(kw)
        return json.dumps(d).encode()

    # Unparseable or wrong top-level shapes.
    for raw in [b"", b"{", b"}", b"nul", b"[]", b"[1]", b"1", b"\"s\"", b"true", b"null",
                b"{\"model\":}", b"{'model':'demo'}", b"\xff\xfe", b"{\"a\":1,}",
                b"{\"model\":\"demo\",\"messages\":[" + b"[" * 10 + b"]"]:
        cases.append((raw, 400, {}))
    # Each field with wrong types or values.
    wrong = {
        "model": [None, 1, [], {}],
        "messages": [None, "hi", 1, {}, [], [1], [None], [{"role": "user"}],
                     [{"content": "x"}], [{"role": 1, "content": "x"}],
                     [{"role": "wizard", "content": "x"}], [{"role": "user", "content": 1}],
                     [{"role": "user", "content": [1]}], [{"role": "user", "content": [{}]}],
                     [{"role": "user", "content": [{"type": "video"}]}],
                     [{"role": "user", "content": [{"type": "text"}]}],
                     [{"role": "user", "content": [{"type": "text", "text": 5}]}],
                     [{"role": "user", "content": [{"type": "image_url"}]}],
                     [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}],
                     [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": ""}}]}],
                     [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": 5}}]}]],
        "max_tokens": ["1", 0, -5, 1.5, [], {}, True, 100000],
        "max_completion_tokens": ["1", 0, -1, 2.5],
        "temperature": ["hot", -1, 2.5, [], {}],
        "top_p": ["x", 0, -0.1, 1.5],
        "top_k": ["x", -2, 0.5],
        "min_p": [-0.1, 1.1, "x"],
        "seed": ["x", 1.5, []],
        "stop": [1, [1], [""], {}, ["a" * 300]],
        "stream": ["yes", 1, []],
        "stream_options": ["x", 1, []],
        "n": [0, 2, -1, "1", 1.5],
        "presence_penalty": [3, -3, "x"],
        "frequency_penalty": [3, -3, "x"],
        "repetition_penalty": [0, -1, "x", 1000],
        "skip_special_tokens": ["no", 0],
        "ngram_size": [-1, "x", 1.5],
        "ngram_window": [-1, "x"],
        "ngram_whitelist": ["x", [-1], ["a"], 5],
        "stop_token_ids": ["x", [-1], [1.5]],
        "logprobs": [True, "x"],
        "task": ["poem", 1],
    }
    for field, values in wrong.items():
        for v in values:
            status = 404 if field == "model" and isinstance(v, str) else 400
            cases.append((with_(**{field: v}), status, {}))
    cases.append((with_(model="not-served"), 404, {}))
    cases.append((with_(stream=False, stream_options={"include_usage": True}), 400, {}))
    # Bad images.
    for url in ["data:image/png;base64,!!!!", "data:text/plain;base64,aGk=",
                "data:image/png,raw", "data:image/png;base64," + base64.b64encode(b"GIF89a").decode(),
                "data:image/png;base64," + base64.b64encode(page[: len(page) // 2]).decode(),
                "ftp://example.com/a.png", "gopher://x", "javascript:alert(1)", "/etc/passwd",
                "file:///etc/passwd", "http://", "http://[::1", "nonsense"]:
        cases.append((with_(messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": url}}]}]), 400, {}))
    # Too many images, more <image> markers than images.
    cases.append((with_(messages=[{"role": "user", "content": [img] * 17}]), 400, {}))
    cases.append((with_(messages=[{"role": "user", "content": "<image><image> two markers"}]), 400, {}))
    # Authentication.
    cases.append((with_(), 401, {"Authorization": "Bearer wrong"}))
    cases.append((with_(), 401, {"Authorization": ""}))
    cases.append((with_(), 401, {"Authorization": f"Basic {API_KEY}"}))
    return cases


def test_bad_input_corpus_while_a_stream_completes(env):
    server, client = env["server"], env["client"]
    messages = image_message(data_uri(env["page"]), "Convert the document to markdown.")
    solo = client.chat.completions.create(model="demo", max_tokens=160, messages=messages)

    def stream():
        return "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model="demo", max_tokens=160, messages=messages, stream=True) if c.choices)

    cases = bad_input_corpus(env["page"])
    assert len(cases) >= 100
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        streamed = pool.submit(stream)
        results = list(pool.map(lambda c: (c, raw_post(server.port, c[0], c[2])), cases))
        assert streamed.result(timeout=300) == solo.choices[0].message.content
    for (body, expected, _), (status, data) in results:
        assert status == expected, (body[:200], data[:300])
        err = json.loads(data)["error"]
        assert set(err) >= {"message", "type", "param", "code"}
    # Body over the limit, and form-encoded bodies, still get JSON errors.
    status, data = raw_post(server.port, b"x" * (64 << 20) + b"x")
    assert status == 413 and json.loads(data)["error"]
    assert server.proc.poll() is None


def metric(server, name: str) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    m = re.search(r"^" + re.escape(name) + r" ([0-9.e+-]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def test_disconnect_cancels_and_frees_kv(env):
    server = env["server"]
    before = metric(server, 'dsocr_requests_total{finish_reason="cancelled"}')
    body = json.dumps({"model": "demo", "max_tokens": 800, "stream": True,
                       "ngram_size": 0,
                       "messages": image_message(data_uri(env["page"]))}).encode()
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 + f"Authorization: Bearer {API_KEY}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                 + body)
    sock.settimeout(60)
    got = b""
    while got.count(b"data: ") < 3:
        piece = sock.recv(4096)
        assert piece, got
        got += piece
    assert got.startswith(b"HTTP/1.1 200"), got[:500]
    assert metric(server, "dsocr_requests_running") == 1
    sock.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if (metric(server, 'dsocr_requests_total{finish_reason="cancelled"}') == before + 1
                and metric(server, "dsocr_requests_running") == 0
                and metric(server, "dsocr_kv_cache_usage_ratio") == 0):
            break
        time.sleep(0.1)
    assert metric(server, 'dsocr_requests_total{finish_reason="cancelled"}') == before + 1
    assert metric(server, "dsocr_requests_running") == 0
    assert metric(server, "dsocr_kv_cache_usage_ratio") == 0


def test_sigterm_drains_in_flight_requests(env, tmp_path):
    server = ServerProcess("--model", "demo", "--drain-timeout", "60",
                           env={"DSOCR_CACHE_DIR": str(env["cache"])})
    try:
        server.wait_healthy()
        client = openai.OpenAI(base_url=server.base_url + "/v1", api_key="none", max_retries=0)
        messages = image_message(data_uri(env["page"]))
        solo = client.chat.completions.create(model="demo", max_tokens=200, messages=messages,
                                              extra_body={"ngram_size": 0})
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            pending = pool.submit(lambda: client.chat.completions.create(
                model="demo", max_tokens=200, messages=messages, extra_body={"ngram_size": 0}))
            while metric(server, "dsocr_requests_running") < 1:
                time.sleep(0.02)
            server.proc.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            with pytest.raises(openai.APIStatusError) as refused:  # new work is refused
                client.chat.completions.create(model="demo", max_tokens=2, messages=messages)
            assert refused.value.status_code == 503
            assert pending.result(timeout=120).choices[0].message.content == \
                solo.choices[0].message.content
        code, out = server.stop(timeout=60)
        assert code == 0, out
        assert "draining" in out
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
