"""`dsocr ocr` end to end (issue #20, item 4).

PDFs are written here with PyMuPDF (pages of several sizes); the demo model runs in-process or
behind a real dsocr-server; a small fake server (http.server) answers with grounding tags the demo
model never writes, and with the 429/503/400 answers a real one gives under load or for a bad
request. Greedy decoding is deterministic, so a run resumed after SIGKILL must write exactly the
files of a clean run, and the server mode exactly those of the in-process mode.
"""
import base64
import http.server
import io
import json
import os
import pty
import select
import signal
import subprocess
import threading
import time

import pytest
from PIL import Image

from conftest import BIN_DIR, ServerProcess

pymupdf = pytest.importorskip("pymupdf")

DSOCR = str(BIN_DIR / "dsocr")
SPLIT = "\n\n<--- Page Split --->\n"
# Points; at 144 dpi each edge doubles: 600x400, 400x600, 500x500, ...
PAGE_SIZES = [(300, 200), (200, 300), (250, 250), (300, 200), (280, 210), (210, 280)]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """One demo model for the whole module (made by the first command that needs it)."""
    cache = tmp_path_factory.mktemp("cache")
    return {**os.environ, "DSOCR_CACHE_DIR": str(cache)}


def write_pdf(path, sizes=PAGE_SIZES):
    doc = pymupdf.open()
    for number, (width, height) in enumerate(sizes, 1):
        page = doc.new_page(width=width, height=height)
        page.insert_text((20, 40), f"Page {number}", fontsize=16 + number % 10)
        page.draw_rect(pymupdf.Rect(20, 60, width - 10 * (number % 10), height - 20),
                       color=(0, 0, 1), width=2)
    doc.save(str(path))


def write_png(path, size=(320, 240)):
    image = Image.new("RGB", size, (250, 250, 250))
    for x in range(40, 200):
        image.putpixel((x, 60), (0, 0, 0))
    image.save(path)


def ocr(*args, env=None, timeout=600):
    return subprocess.run([DSOCR, "ocr", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)


def files_of(out):
    """Every file under `out` (relative path -> bytes)."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def check_document(out, name, sizes, pdf=True):
    pages = json.loads((out / f"{name}.blocks.json").read_text())
    assert [p["index"] for p in pages] == list(range(len(sizes)))
    assert [p["page_number"] for p in pages] == list(range(1, len(sizes) + 1))
    markdown = []
    for page, (width, height) in zip(pages, sizes):
        stem = out / name / f"page_{page['page_number']:04d}"
        assert (page["width"], page["height"]) == (width, height)
        assert page["finish_reason"] in ("stop", "length")
        assert isinstance(page["text"], str) and isinstance(page["blocks"], list)
        assert json.loads(stem.with_suffix(".json").read_text()) == page
        assert Image.open(f"{stem}_boxes.png").size == (width, height)
        markdown.append(stem.with_suffix(".md").read_text())
    expected = "".join(m + SPLIT for m in markdown) if pdf else markdown[0]
    # Links to the page's image crops, seen from DIR/ instead of DIR/NAME/.
    expected = expected.replace("![](images/", f"![]({name}/images/")
    assert (out / f"{name}.md").read_text() == expected
    return pages


def test_pdf_and_image_in_process(tmp_path, env):
    write_pdf(tmp_path / "doc.pdf")
    write_png(tmp_path / "scan.png")
    out = tmp_path / "out"
    proc = ocr(tmp_path / "doc.pdf", tmp_path / "scan.png", "--out", out, "--max-tokens", 6,
               "--concurrency", 3, env=env)
    assert proc.returncode == 0, proc.stderr
    # 144 dpi: twice the points.
    check_document(out, "doc", [(2 * w, 2 * h) for w, h in PAGE_SIZES])
    check_document(out, "scan", [(320, 240)], pdf=False)
    # Off a terminal: one plain line per page, and the summary.
    for n in range(1, 7):
        assert f"page {n}/6 of doc.pdf done in " in proc.stderr
    assert "page 1/1 of scan.png done in " in proc.stderr
    assert "7 pages: 7 ok, 0 failed, 0 skipped in " in proc.stderr
    assert "\r" not in proc.stderr
    # No temporary file is left behind.
    assert not [p for p in out.rglob(".*")]

    # A rerun finds everything done, says so, and changes nothing.
    before = files_of(out)
    again = ocr(tmp_path / "doc.pdf", tmp_path / "scan.png", "--out", out, "--max-tokens", 6,
                env=env)
    assert again.returncode == 0, again.stderr
    assert "doc.pdf: 6 of 6 pages already written, skipped" in again.stderr
    assert "7 pages: 0 ok, 0 failed, 7 skipped" in again.stderr
    assert files_of(out) == before

    # --pages selects pages; its files are those of a full run (named by page number).
    sub = tmp_path / "sub"
    part = ocr(tmp_path / "doc.pdf", "--out", sub, "--max-tokens", 6, "--pages", "2-3", env=env)
    assert part.returncode == 0, part.stderr
    pages = json.loads((sub / "doc.blocks.json").read_text())
    assert [(p["index"], p["page_number"]) for p in pages] == [(0, 2), (1, 3)]
    for n in (2, 3):
        name = f"doc/page_{n:04d}.md"
        assert (sub / name).read_bytes() == before[name]


def test_resume_after_sigkill_gives_the_clean_run_files(tmp_path, env):
    sizes = PAGE_SIZES + PAGE_SIZES[:2]
    write_pdf(tmp_path / "doc.pdf", sizes)
    clean = tmp_path / "clean"
    proc = ocr(tmp_path / "doc.pdf", "--out", clean, "--max-tokens", 12, "--concurrency", 2,
               env=env)
    assert proc.returncode == 0, proc.stderr

    out = tmp_path / "resumed"
    killed = subprocess.Popen([DSOCR, "ocr", str(tmp_path / "doc.pdf"), "--out", str(out),
                               "--max-tokens", "12", "--concurrency", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    first = out / "doc" / "page_0001.json"
    deadline = time.monotonic() + 300
    while not first.exists() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    done = sorted(p.name for p in (out / "doc").glob("page_*.json"))
    assert 1 <= len(done) < len(sizes), done
    assert not (out / "doc.md").exists()

    rerun = ocr(tmp_path / "doc.pdf", "--out", out, "--max-tokens", 12, "--concurrency", 2,
                env=env)
    assert rerun.returncode == 0, rerun.stderr
    assert f"doc.pdf: {len(done)} of {len(sizes)} pages already written, skipped" in rerun.stderr
    assert f"{len(sizes) - len(done)} ok, 0 failed, {len(done)} skipped" in rerun.stderr
    check_document(out, "doc", [(2 * w, 2 * h) for w, h in sizes])
    # Byte for byte the clean run's files, temporary leftovers of the killed write included.
    assert files_of(out) == files_of(clean)

    # --force redoes every page, with the same result.
    forced = ocr(tmp_path / "doc.pdf", "--out", out, "--max-tokens", 12, "--force", env=env)
    assert forced.returncode == 0, forced.stderr
    assert f"{len(sizes)} ok, 0 failed, 0 skipped" in forced.stderr
    assert files_of(out) == files_of(clean)


def test_corrupt_pdf_fails_clearly_and_the_rest_is_written(tmp_path, env):
    (tmp_path / "bad.pdf").write_bytes(b"%PDF-1.7\n1 0 obj << /Type /Catalog >>\ngarbage")
    (tmp_path / "empty.pdf").write_bytes(b"")
    write_png(tmp_path / "scan.png")
    out = tmp_path / "out"
    proc = ocr(tmp_path / "bad.pdf", tmp_path / "empty.pdf", tmp_path / "scan.png", "--out", out,
               "--max-tokens", 4, env=env)
    assert proc.returncode == 1, proc.stderr
    assert "bad.pdf failed: cannot read the PDF" in proc.stderr
    assert "empty.pdf failed: cannot read the PDF" in proc.stderr
    assert "3 pages: 1 ok, 2 failed" in proc.stderr
    check_document(out, "scan", [(320, 240)], pdf=False)
    assert not (out / "bad.md").exists() and not (out / "bad").exists()


def test_page_over_the_context_fails_the_page_and_exit_code(tmp_path, env):
    write_pdf(tmp_path / "doc.pdf", PAGE_SIZES[:2])
    out = tmp_path / "out"
    proc = ocr(tmp_path / "doc.pdf", "--out", out, "--max-tokens", 100000, env=env)
    assert proc.returncode == 1, proc.stderr
    assert "page 1/2 of doc.pdf failed: context_length_exceeded" in proc.stderr
    assert "page 2/2 of doc.pdf failed: " in proc.stderr
    assert "2 pages: 0 ok, 2 failed" in proc.stderr
    assert not (out / "doc.md").exists() and not (out / "doc.blocks.json").exists()


def test_usage_errors_exit_2(tmp_path):
    write_png(tmp_path / "a.png")
    (tmp_path / "x").mkdir()
    write_png(tmp_path / "x" / "a.png")
    for args, needle in [([], "no input files"),
                         ([tmp_path / "a.png"], "--out DIR is required"),
                         ([tmp_path / "a.png", "--out", tmp_path, "--concurrency", 0],
                          "--concurrency"),
                         ([tmp_path / "a.png", "--out", tmp_path, "--pages", "3-1"], "--pages"),
                         ([tmp_path / "a.png", "--out", tmp_path, "--task", "poem"], "--task"),
                         ([tmp_path / "a.png", "--out", tmp_path, "--bogus"], "--bogus"),
                         ([tmp_path / "a.png", tmp_path / "x" / "a.png", "--out", tmp_path],
                          "would both write")]:
        proc = ocr(*args, timeout=60)
        assert proc.returncode == 2, (args, proc.stderr)
        assert needle in proc.stderr, (args, proc.stderr)
    help_text = subprocess.run([DSOCR, "ocr", "--help"], capture_output=True, text=True)
    assert help_text.returncode == 0 and "--concurrency" in help_text.stdout
    assert "ocr" in subprocess.run([DSOCR, "--help"], capture_output=True, text=True).stdout


def test_server_mode_against_dsocr_server(tmp_path, env):
    write_pdf(tmp_path / "doc.pdf", PAGE_SIZES[:3])
    write_png(tmp_path / "scan.png")
    local = tmp_path / "local"
    proc = ocr(tmp_path / "doc.pdf", tmp_path / "scan.png", "--out", local, "--max-tokens", 6,
               env=env)
    assert proc.returncode == 0, proc.stderr

    server = ServerProcess("--model", "demo", "--api-key", "sesame",
                           env={"DSOCR_CACHE_DIR": env["DSOCR_CACHE_DIR"]})
    try:
        server.wait_healthy()
        out = tmp_path / "remote"
        no_key = ocr(tmp_path / "doc.pdf", "--out", out, "--server", server.base_url,
                     env={**env, "DSOCR_API_KEY": ""})
        assert no_key.returncode == 1 and "HTTP 401" in no_key.stderr, no_key.stderr
        remote = ocr(tmp_path / "doc.pdf", tmp_path / "scan.png", "--out", out, "--server",
                     server.base_url + "/v1/", "--max-tokens", 6, "--concurrency", 2,
                     env={**env, "DSOCR_API_KEY": "sesame"})
        assert remote.returncode == 0, remote.stderr
        assert "4 pages: 4 ok, 0 failed, 0 skipped" in remote.stderr
        check_document(out, "doc", [(2 * w, 2 * h) for w, h in PAGE_SIZES[:3]])
        check_document(out, "scan", [(320, 240)], pdf=False)
        # The same model, prompt and greedy decoding: the same files as in-process.
        assert files_of(out) == files_of(local)

        # The server refuses the request (400, over the context): the page fails, the run too.
        refused = ocr(tmp_path / "scan.png", "--out", tmp_path / "refused", "--server",
                      server.base_url, "--api-key", "sesame", "--max-tokens", 100000, env=env)
        assert refused.returncode == 1, refused.stderr
        assert "page 1/1 of scan.png failed: HTTP 400" in refused.stderr
    finally:
        rc, log = server.stop()
    assert rc == 0, log


class FakeServer:
    """Answers /v1/models and chat completions from a script of (status, headers, body)."""

    def __init__(self, replies, content, page=None):
        self.replies = list(replies)
        self.content = content
        self.page = page  # the answer's `pages[0]`, when set
        self.posts = []
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def send(self, status, body, headers=()):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers:
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self.send(200, {"object": "list", "data": [{"id": "fake", "object": "model"}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.posts.append(body)
                if fake.replies:
                    status, headers, error = fake.replies.pop(0)
                    self.send(status, {"error": {"message": error, "type": "x", "param": None,
                                                 "code": None}}, headers)
                    return
                answer = {"object": "chat.completion", "choices": [
                    {"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": fake.content}}]}
                if fake.page is not None:
                    answer["pages"] = [fake.page]
                self.send(200, answer)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


GROUNDED = ("<|ref|>title<|/ref|><|det|>[[100, 100, 900, 200]]<|/det|>\n# Title\n\n"
            "<|ref|>image<|/ref|><|det|>[[0, 500, 499, 999]]<|/det|>\n"
            "<|ref|>text<|/ref|><|det|>[[100, 300, 900, 400]]<|/det|>\nBody text.")


def test_grounding_boxes_crops_and_retries_through_a_fake_server(tmp_path):
    write_pdf(tmp_path / "doc.pdf", PAGE_SIZES[:2])
    fake = FakeServer([(503, [("Retry-After", "0")], "loading"),
                       (429, [("Retry-After", "0")], "busy")], GROUNDED)
    try:
        out = tmp_path / "out"
        proc = ocr(tmp_path / "doc.pdf", "--out", out, "--server", fake.url, "--concurrency", 1,
                   "--max-tokens", 50, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert len(fake.posts) == 4  # two pages, one 503 and one 429 retried
        post = fake.posts[-1]
        assert post["model"] == "fake" and post["max_tokens"] == 50 and not post["stream"]
        url = post["messages"][0]["content"][0]["image_url"]["url"]
        assert url.startswith("data:image/png;base64,")
        sent = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
        assert sent.size == (400, 600)  # page 2 at 144 dpi, sent as PNG
    finally:
        fake.close()
    pages = check_document(out, "doc", [(600, 400), (400, 600)])
    assert [b["label"] for b in pages[0]["blocks"]] == ["title", "image", "text"]
    assert pages[0]["blocks"][0]["bbox"] == [60, 40, 540, 80]  # int(v / 999 * 600 or 400)
    assert pages[0]["blocks"][0]["bbox_norm"] == [100, 100, 900, 200]
    # The official PDF rewrite: the image block becomes a link to its crop, the others go.
    page1 = (out / "doc" / "page_0001.md").read_text()
    assert page1 == "\n# Title\n\n![](images/0_0.jpg)\n\nBody text."
    assert (out / "doc" / "page_0002.md").read_text().count("![](images/1_0.jpg)") == 1
    crop = Image.open(out / "doc" / "images" / "0_0.jpg")
    assert crop.size == (299, 200)  # x 0..299, y 200..400 of the 600x400 render
    assert Image.open(out / "doc" / "images" / "1_0.jpg").size == (199, 300)
    # The document links into NAME/.
    assert "![](doc/images/0_0.jpg)" in (out / "doc.md").read_text()
    # Boxes drawn: the title's left outline (x = 60, y in 40..80) on the white page.
    boxes = Image.open(out / "doc" / "page_0001_boxes.png").convert("RGB")
    assert boxes.getpixel((60, 70)) != (255, 255, 255)
    assert boxes.getpixel((59, 70)) == (255, 255, 255)


def test_a_400_fails_that_page_only(tmp_path):
    write_pdf(tmp_path / "doc.pdf", PAGE_SIZES[:3])
    fake = FakeServer([(400, [], "page too odd")], "plain text")
    try:
        proc = ocr(tmp_path / "doc.pdf", "--out", tmp_path / "out", "--server", fake.url,
                   "--concurrency", 1, timeout=120)
    finally:
        fake.close()
    assert proc.returncode == 1, proc.stderr
    assert "page 1/3 of doc.pdf failed: HTTP 400: page too odd" in proc.stderr
    assert "3 pages: 2 ok, 1 failed" in proc.stderr
    assert len(fake.posts) == 3  # a 400 is not retried
    assert (tmp_path / "out" / "doc" / "page_0002.md").read_text() == "plain text"
    assert not (tmp_path / "out" / "doc.md").exists()


def test_the_servers_page_object_is_kept_and_renumbered(tmp_path):
    write_pdf(tmp_path / "doc.pdf", PAGE_SIZES[:2])
    page = {"index": 0, "page_number": 1, "width": 7, "height": 9, "finish_reason": "stop",
            "text": "served", "blocks": [{"label": "", "text": "served", "bbox": None,
                                          "bbox_norm": None}], "note": "from the server"}
    fake = FakeServer([], "served", page)
    try:
        proc = ocr(tmp_path / "doc.pdf", "--out", tmp_path / "out", "--server", fake.url,
                   timeout=120)
    finally:
        fake.close()
    assert proc.returncode == 0, proc.stderr
    pages = json.loads((tmp_path / "out" / "doc.blocks.json").read_text())
    assert pages == [{**page, "index": 0, "page_number": 1}, {**page, "index": 1, "page_number": 2}]
    assert json.loads((tmp_path / "out" / "doc" / "page_0002.json").read_text())["index"] == 1
    # The boxes picture is the page as rendered, whatever size the server claims.
    assert Image.open(tmp_path / "out" / "doc" / "page_0002_boxes.png").size == (400, 600)


def test_progress_bar_on_a_terminal(tmp_path):
    write_pdf(tmp_path / "doc.pdf", PAGE_SIZES[:3])
    fake = FakeServer([], "text")
    try:
        pid, fd = pty.fork()
        if pid == 0:
            os.execv(DSOCR, [DSOCR, "ocr", str(tmp_path / "doc.pdf"), "--out",
                             str(tmp_path / "out"), "--server", fake.url, "--concurrency", "1"])
        output = b""
        while True:
            ready, _, _ = select.select([fd], [], [], 60)
            if not ready:
                break
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
        _, status = os.waitpid(pid, 0)
    finally:
        fake.close()
    assert os.waitstatus_to_exitcode(status) == 0, output
    text = output.decode()
    assert "\r[" in text and "3/3 pages" in text and "pages/s" in text and "ETA" in text
    assert "page 1/3 of doc.pdf done" not in text  # the bar replaces the plain lines
    assert "3 pages: 3 ok, 0 failed, 0 skipped" in text


def peak_rss_mib(args):
    """Runs dsocr with `args`; its exit code and its own peak resident memory."""
    proc = subprocess.Popen([DSOCR, *map(str, args)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss / 1024


def test_memory_stays_bounded_on_a_long_pdf(tmp_path):
    # A4 pages render to 1191x1684 (6 MiB of RGB each): 150 pages held at once would be ~900 MiB
    # more than 15. Pages are rendered when their turn comes, at most --concurrency at a time.
    # Measured: 633 MiB for 20 pages, 641 for 200, 665 for 500 (508 of it is the process with
    # libtorch loaded, before any page).
    fake = FakeServer([], "<|ref|>title<|/ref|><|det|>[[100, 100, 900, 200]]<|/det|>\n# T")
    try:
        peaks = []
        for pages in (15, 150):
            write_pdf(tmp_path / f"long{pages}.pdf", [(595.276, 841.89)] * pages)
            rc, peak = peak_rss_mib(["ocr", tmp_path / f"long{pages}.pdf", "--out",
                                     tmp_path / "out", "--server", fake.url, "--concurrency", 4])
            assert rc == 0
            peaks.append(peak)
    finally:
        fake.close()
    assert len(fake.posts) == 165
    assert peaks[1] - peaks[0] < 150, peaks
