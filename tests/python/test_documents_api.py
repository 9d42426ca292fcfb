"""PDFs through the chat API on the real engine (issue #20): the demo model's dsocr-server, PDFs
written in the test with PyMuPDF (the official PDF script's renderer).

* A PDF (file part or image_url) answers one page per engine request, in document order: each
  page's text in the whole-document answer equals the answer to that page alone (greedy
  decoding is deterministic), and each page's width/height are PyMuPDF's 144-dpi pixmap sizes.
* Streaming gives the same content, pages in order, each page object on its page's last chunk.
* Encrypted, damaged, page-less and over-long PDFs, bad ranges and misuse are clear 4xx.
* The openai SDK sends a PDF as OpenAI's file part and reads the `pages` extension.
* A 200-page PDF streams with the server's peak memory bounded (reported on stdout).
"""
import base64
import json
import os
import urllib.error
import urllib.request

import pymupdf
import pytest

from conftest import ServerProcess

SPLIT = "\n\n<--- Page Split --->\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    s = ServerProcess("--model", "demo", env={"DSOCR_CACHE_DIR": str(cache)})
    try:
        s.wait_healthy(120)
        yield s
    finally:
        rc, log = s.stop()
        assert rc == 0, log


def make_pdf(sizes, rotations=None, texts=None) -> bytes:
    doc = pymupdf.open()
    for i, (w, h) in enumerate(sizes):
        page = doc.new_page(width=w, height=h)
        text = texts[i] if texts else f"Page {i + 1}: the quick brown fox"
        page.insert_text((20, 40), text, fontsize=14)
        page.draw_rect(pymupdf.Rect(20, 60, w - 20, min(h - 10, 160)), color=(0, 0, 1))
        if rotations and rotations[i]:
            page.set_rotation(rotations[i])
    return doc.tobytes()


def pdf_part(pdf: bytes) -> dict:
    return {"type": "file", "file": {"file_data": "data:application/pdf;base64," +
                                     base64.b64encode(pdf).decode(), "filename": "doc.pdf"}}


def chat(server, body: dict, timeout: float = 300):
    req = urllib.request.Request(server.base_url + "/v1/chat/completions",
                                 json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def request(pdf: bytes, **extra) -> dict:
    return {"model": "demo", "max_tokens": 6,
            "messages": [{"role": "user", "content": [pdf_part(pdf)]}], **extra}


def sse_events(body: str):
    events = [e[len("data: "):] for e in body.split("\n\n") if e.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


MIXED = [(595, 842), (612, 792), (400, 250), (300, 420)]
ROTATIONS = [0, 0, 90, 270]


def reference_sizes(pdf: bytes):
    doc = pymupdf.open(stream=pdf, filetype="pdf")
    return [(p.get_pixmap(matrix=pymupdf.Matrix(2, 2), alpha=False).width,
             p.get_pixmap(matrix=pymupdf.Matrix(2, 2), alpha=False).height) for p in doc]


def test_pages_in_order_at_144_dpi(server):
    pdf = make_pdf(MIXED, ROTATIONS)
    status, body = chat(server, request(pdf, max_tokens=16))
    assert status == 200, body
    answer = json.loads(body)
    pages = answer["pages"]
    # Pages that read differently, or a swap would go unnoticed below.
    assert len({p["text"] for p in pages}) == len(pages), [p["text"] for p in pages]
    assert [p["index"] for p in pages] == [0, 1, 2, 3]
    assert [p["page_number"] for p in pages] == [1, 2, 3, 4]
    assert [(p["width"], p["height"]) for p in pages] == reference_sizes(pdf)
    content = answer["choices"][0]["message"]["content"]
    assert content == "".join(p["text"] + SPLIT for p in pages)
    # Each page's text is what that page alone gives: the pages were not mixed up.
    usage = {"prompt_tokens": 0, "completion_tokens": 0}
    for p in pages:
        status, one = chat(server, request(pdf, max_tokens=16, pages=str(p["page_number"])))
        assert status == 200, one
        single = json.loads(one)
        assert single["pages"][0]["text"] == p["text"]
        assert single["pages"][0]["page_number"] == p["page_number"]
        for k in usage:
            usage[k] += single["usage"][k]
    for k in usage:
        assert answer["usage"][k] == usage[k]


def test_streaming_matches_and_carries_page_objects(server):
    pdf = make_pdf(MIXED[:3], ROTATIONS[:3])
    status, body = chat(server, request(pdf))
    assert status == 200
    whole = json.loads(body)
    status, body = chat(server, request(pdf, stream=True, markdown=True,
                                        stream_options={"include_usage": True}))
    assert status == 200, body
    content, objects = "", []
    for e in sse_events(body):
        assert "error" not in e, e
        if e["choices"] and "content" in e["choices"][0]["delta"]:
            content += e["choices"][0]["delta"]["content"]
        if "pages" in e:
            objects += e["pages"]
            assert content.endswith(SPLIT)  # on the page's last chunk
        if e.get("usage"):
            assert e["usage"]["completion_tokens"] == whole["usage"]["completion_tokens"]
    assert content == whole["choices"][0]["message"]["content"]
    assert [o["index"] for o in objects] == [0, 1, 2]
    assert [o["text"] for o in objects] == [p["text"] for p in whole["pages"]]
    assert all("markdown" in o and "images" in o for o in objects)


def test_pdf_behind_an_image_url(server):
    pdf = make_pdf(MIXED[:2])
    url = "data:application/pdf;base64," + base64.b64encode(pdf).decode()
    status, body = chat(server, {"model": "demo", "max_tokens": 4, "messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]})
    assert status == 200, body
    assert len(json.loads(body)["pages"]) == 2


def zero_page_pdf() -> bytes:
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [] /Count 0 >>"]
    out, offsets = b"%PDF-1.4\n", []
    for i, o in enumerate(objects):
        offsets.append(len(out))
        out += f"{i + 1} 0 obj\n".encode() + o + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out


def test_bad_pdfs_and_limits_are_4xx(server):
    good = make_pdf(MIXED[:3])
    doc = pymupdf.open(stream=good, filetype="pdf")
    encrypted = doc.tobytes(encryption=pymupdf.PDF_ENCRYPT_AES_256, user_pw="secret",
                            owner_pw="owner")
    corrupt = good[: len(good) // 3] + b"\x00garbage" * 100
    cases = [
        (request(encrypted), 400, "password"),
        (request(b"%PDF-1.7\n" + os.urandom(2000)), 400, None),
        (request(corrupt), None, None),  # poppler may repair a truncated file: 200 or 400
        (request(zero_page_pdf()), 400, "no pages"),
        (request(make_pdf([(100, 100)] * 500)), 413, "200"),
        (request(good, pages="4"), 400, "past the last page"),
        (request(good, pages="3-1"), 400, None),
        (request(good, pages=[1, 2]), 400, None),
        ({"model": "demo", "messages": [{"role": "user", "content": [
            pdf_part(good), {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}]}]},
         400, "only image"),
        ({"model": "demo", "messages": [{"role": "user", "content": [
            {"type": "file", "file": {"file_id": "file-abc"}}]}]}, 400, "file_data"),
    ]
    for body, want, needle in cases:
        status, text = chat(server, body)
        if want is None:
            assert status in (200, 400), text
            continue
        assert status == want, (want, text[:300])
        error = json.loads(text)["error"]
        if needle:
            assert needle in error["message"], error
    # The server kept serving.
    assert chat(server, request(good, max_tokens=2))[0] == 200


def test_openai_sdk_sends_a_pdf_and_reads_pages(server):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused")
    pdf = make_pdf(MIXED[:2])
    resp = client.chat.completions.create(
        model="demo", max_tokens=4,
        messages=[{"role": "user", "content": [{"type": "file", "file": {
            "file_data": "data:application/pdf;base64," + base64.b64encode(pdf).decode(),
            "filename": "doc.pdf"}}]}],
        extra_body={"pages": "2"})
    pages = resp.model_extra["pages"]
    assert len(pages) == 1 and pages[0]["page_number"] == 2
    assert resp.choices[0].message.content == pages[0]["text"] + SPLIT


def rss_peak_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_a_200_page_pdf_streams_in_bounded_memory(server):
    # Small pages (one global view each) keep the demo model's 200 pages near a minute here; each
    # page has its own text, so no page is a cache hit of another.
    n = 200
    pdf = make_pdf([(200, 150)] * n, texts=[f"Page {i + 1} of {n}" for i in range(n)])
    # The warm-up fills the window of pages in flight (16) as the big one will, so the model's
    # activations for that batch are already counted in `before`.
    status, body = chat(server, request(make_pdf([(200, 150)] * 32), max_tokens=1))
    assert status == 200
    before = rss_peak_kib(server.proc.pid)
    req = urllib.request.Request(server.base_url + "/v1/chat/completions",
                                 json.dumps(request(pdf, max_tokens=1, stream=True)).encode(),
                                 {"Content-Type": "application/json"})
    indexes = []
    with urllib.request.urlopen(req, timeout=900) as r:
        for raw in r:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            assert "error" not in event, event
            indexes += [p["index"] for p in event.get("pages", [])]
    after = rss_peak_kib(server.proc.pid)
    assert indexes == list(range(n))
    print(f"\n200-page PDF: server peak RSS {before / 1024:.0f} MiB after a 32-page warm-up, "
          f"{after / 1024:.0f} MiB after the 200 pages (+{(after - before) / 1024:.0f} MiB)")
    # A window of pages is in flight, not the document: the 200 pages may not cost much more
    # than the 32 did (the PDF itself, its base64 body and the answer are a few MiB).
    assert after - before < 256 * 1024
