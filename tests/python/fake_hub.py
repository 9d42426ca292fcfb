"""A Hugging Face hub look-alike on 127.0.0.1 for the download tests: the model-info API,
resolve URLs with ETags (sha256 for "LFS" files, served through a redirect to /cdn/), range
requests, private repos (401 without the token), and injectable faults (5xx answers, a connection
dropped mid-file). It records every request so tests can count them."""
import hashlib
import http.server
import json
import threading
import urllib.parse


class Repo:
    def __init__(self, files: dict[str, bytes], commit: str, private: bool = False):
        self.files = files
        self.commit = commit
        self.private = private


class FakeHub:
    TOKEN = "hf_test_token"

    def __init__(self):
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self.fail_next: dict[str, int] = {}      # path prefix -> number of 503s to send
        self.drop_after: dict[str, int] = {}     # cdn etag -> send this many bytes, then close once
        self.corrupt: set[str] = set()           # cdn etags served with a flipped byte
        self.token_sent_to_cdn = False           # the token must stay with the hub
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_HEAD(self):
                hub.handle(self, head=True)

            def do_GET(self):
                hub.handle(self, head=False)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    @staticmethod
    def is_lfs(name: str) -> bool:
        return name.endswith(".safetensors")

    def etag(self, content: bytes, name: str) -> str:
        if self.is_lfs(name):
            return hashlib.sha256(content).hexdigest()
        return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()

    def send(self, h, status, body=b"", headers=None, head=False):
        h.send_response(status)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if not head:
            h.wfile.write(body)

    def handle(self, h, head):
        path = urllib.parse.unquote(h.path)
        self.requests.append(("HEAD" if head else "GET", path))
        path = path.split("?")[0]
        for prefix, n in list(self.fail_next.items()):
            if path.startswith(prefix) and n > 0:
                self.fail_next[prefix] = n - 1
                return self.send(h, 503, b"busy", head=head)
        authorized = h.headers.get("Authorization") == f"Bearer {self.TOKEN}"
        if path.startswith("/api/models/") and "/tree/" in path:  # huggingface_hub's file listing
            repo_id, _, rev = path[len("/api/models/"):].partition("/tree/")
            repo = self.repos.get(repo_id)
            if repo is None or rev not in ("main", repo.commit):
                return self.send(h, 404, b'{"error":"Repository not found"}', head=head)
            entries = []
            for name, content in repo.files.items():
                entry = {"type": "file", "path": name, "size": len(content),
                         "oid": hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()}
                if self.is_lfs(name):
                    entry["lfs"] = {"oid": self.etag(content, name), "size": len(content),
                                    "pointerSize": 134}
                entries.append(entry)
            return self.send(h, 200, json.dumps(entries).encode(),
                             {"Content-Type": "application/json"}, head)
        if path.startswith("/api/models/"):
            repo_id, _, rev = path[len("/api/models/"):].partition("/revision/")
            repo = self.repos.get(repo_id)
            if repo is None:
                return self.send(h, 404, b'{"error":"Repository not found"}', head=head)
            if repo.private and not authorized:
                return self.send(h, 401, b'{"error":"Invalid credentials"}', head=head)
            if rev not in ("main", repo.commit):
                return self.send(h, 404, b'{"error":"Revision not found"}', head=head)
            body = json.dumps({"id": repo_id, "sha": repo.commit,
                               "siblings": [{"rfilename": f} for f in repo.files]}).encode()
            return self.send(h, 200, body, {"Content-Type": "application/json"}, head)
        if path.startswith("/cdn/"):
            self.token_sent_to_cdn |= h.headers.get("Authorization") is not None
            etag = path[len("/cdn/"):]
            content = next((c for r in self.repos.values() for n, c in r.files.items()
                            if self.etag(c, n) == etag), None)
            if content is None:
                return self.send(h, 404, head=head)
            if etag in self.corrupt:
                content = bytes([content[0] ^ 1]) + content[1:]
            start = 0
            rng = h.headers.get("Range")
            if rng:
                start = int(rng.split("=")[1].split("-")[0])
            part = content[start:]
            if etag in self.drop_after and not head:
                cut = self.drop_after.pop(etag)
                h.send_response(206 if rng else 200)
                h.send_header("Content-Length", str(len(part)))
                if rng:
                    h.send_header("Content-Range", f"bytes {start}-{len(content) - 1}/{len(content)}")
                h.end_headers()
                h.wfile.write(part[:cut])
                h.wfile.flush()
                h.close_connection = True
                h.connection.shutdown(2)
                return
            headers = {"ETag": f'"{etag}"', "Accept-Ranges": "bytes"}
            if rng:
                headers["Content-Range"] = f"bytes {start}-{len(content) - 1}/{len(content)}"
                return self.send(h, 206, part, headers, head)
            return self.send(h, 200, content, headers, head)
        # /{org}/{name}/resolve/{rev}/{file}
        parts = path.lstrip("/").split("/", 4)
        if len(parts) == 5 and parts[2] == "resolve":
            repo = self.repos.get(f"{parts[0]}/{parts[1]}")
            if repo is None or parts[3] not in ("main", repo.commit) or parts[4] not in repo.files:
                return self.send(h, 404, b"Entry not found", head=head)
            if repo.private and not authorized:
                return self.send(h, 401, head=head)
            content = repo.files[parts[4]]
            etag = self.etag(content, parts[4])
            headers = {"X-Repo-Commit": repo.commit, "ETag": f'"{etag}"'}
            if self.is_lfs(parts[4]):
                headers.update({"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(len(content)),
                                # Absolute and on another host name, like the real CDN: clients
                                # must not send the token there, and HEAD must not follow it.
                                "Location": f"http://localhost:{self.server.server_port}/cdn/{etag}"})
                return self.send(h, 302, b"", headers, head)
            return self.send(h, 200, content, headers, head)
        return self.send(h, 404, head=head)
