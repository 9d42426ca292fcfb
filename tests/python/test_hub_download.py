"""The hub client against a loopback hub look-alike (tests/python/fake_hub.py): cache layout
shared with huggingface_hub, resume, retries, checksums, auth and offline mode."""
import json
import os
import pathlib
import random
import subprocess

import pytest

from conftest import BIN_DIR, SOURCE_DIR
from fake_hub import FakeHub, Repo

COMMIT = "0123456789abcdef0123456789abcdef01234567"
CONFIG = (SOURCE_DIR.parent / "shared" / "model-files" / "deepseek-ocr2" / "config.json").read_bytes()


def model_files(seed=0):
    rng = random.Random(seed)
    return {"config.json": CONFIG,
            "tokenizer_config.json": b'{"add_bos_token": true}',
            "model.safetensors": bytes(rng.getrandbits(8) for _ in range(300_000)),
            "README.md": b"# not needed"}


@pytest.fixture
def hub():
    with FakeHub() as h:
        h.repos["org/model"] = Repo(model_files(), COMMIT)
        yield h


def dsocr(args, tmp_path, hub=None, **env):
    full_env = {"PATH": os.environ["PATH"], "HF_HOME": str(tmp_path / "hf")}
    if hub is not None:
        full_env["HF_ENDPOINT"] = hub.url
    full_env.update(env)
    return subprocess.run([str(BIN_DIR / "dsocr"), *args], capture_output=True, text=True,
                          timeout=120, env=full_env)


def test_download_layout_matches_huggingface_hub(hub, tmp_path):
    proc = dsocr(["download", "org/model"], tmp_path, hub)
    assert proc.returncode == 0, proc.stderr
    repo_dir = tmp_path / "hf" / "hub" / "models--org--model"
    snapshot = repo_dir / "snapshots" / COMMIT
    assert proc.stdout.strip() == str(snapshot)
    assert (repo_dir / "refs" / "main").read_text() == COMMIT
    for name, content in model_files().items():
        if name == "README.md":
            assert not (snapshot / name).exists()  # only configs, tokenizer files and weights
            continue
        link = snapshot / name
        assert link.is_symlink() and os.readlink(link).startswith("../../blobs/")
        assert link.read_bytes() == content
    import hashlib
    assert (repo_dir / "blobs" / hashlib.sha256(model_files()["model.safetensors"]).hexdigest()).exists()
    assert not list(repo_dir.glob("blobs/*.incomplete"))

    # huggingface_hub finds the snapshot without the network.
    from huggingface_hub import snapshot_download
    found = snapshot_download("org/model", cache_dir=str(tmp_path / "hf" / "hub"), local_files_only=True)
    assert pathlib.Path(found) == snapshot

    # A second download fetches nothing again.
    hub.requests.clear()
    assert dsocr(["download", "org/model"], tmp_path, hub).returncode == 0
    assert not [r for r in hub.requests if r[0] == "GET" and r[1].startswith("/cdn/")]


def test_uses_a_cache_made_by_huggingface_hub(hub, tmp_path):
    from huggingface_hub import snapshot_download
    env = dict(os.environ, HF_ENDPOINT=hub.url, HF_HUB_DISABLE_XET="1",
               HF_HUB_DISABLE_TELEMETRY="1")
    code = (f"from huggingface_hub import snapshot_download; print(snapshot_download("
            f"'org/model', cache_dir={str(tmp_path / 'hf' / 'hub')!r}))")
    made = subprocess.run([str(SOURCE_DIR / ".venv" / "bin" / "python"), "-c", code], env=env,
                          capture_output=True, text=True, timeout=120)
    if made.returncode != 0:
        pytest.skip(f"huggingface_hub does not talk to the fake hub: {made.stderr[-300:]}")
    proc = dsocr(["info", "--json", "--model", "org/model"], tmp_path, HF_HUB_OFFLINE="1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["model"]["dir"] == made.stdout.strip()


def test_resume_after_a_dropped_connection(hub, tmp_path):
    import hashlib
    etag = hashlib.sha256(model_files()["model.safetensors"]).hexdigest()
    hub.drop_after[etag] = 100_000
    proc = dsocr(["download", "org/model"], tmp_path, hub)
    assert proc.returncode == 0, proc.stderr
    assert "resuming" in proc.stderr
    snapshot = pathlib.Path(proc.stdout.strip())
    assert (snapshot / "model.safetensors").read_bytes() == model_files()["model.safetensors"]


def test_retries_5xx_then_succeeds(hub, tmp_path):
    hub.fail_next["/api/models/"] = 2
    hub.fail_next["/org/model/resolve/"] = 1
    proc = dsocr(["download", "org/model"], tmp_path, hub)
    assert proc.returncode == 0, proc.stderr


def test_checksum_mismatch_is_data_loss(hub, tmp_path):
    import hashlib
    etag = hashlib.sha256(model_files()["model.safetensors"]).hexdigest()
    hub.corrupt.add(etag)
    proc = dsocr(["download", "org/model"], tmp_path, hub)
    assert proc.returncode == 1
    assert "does not match" in proc.stderr and etag in proc.stderr
    repo_dir = tmp_path / "hf" / "hub" / "models--org--model"
    assert not (repo_dir / "blobs" / etag).exists()
    assert not list(repo_dir.glob("blobs/*.incomplete"))


def test_private_repo_needs_the_token(hub, tmp_path):
    hub.repos["org/private"] = Repo(model_files(1), COMMIT, private=True)
    proc = dsocr(["download", "org/private"], tmp_path, hub)
    assert proc.returncode == 1 and "HF_TOKEN" in proc.stderr
    proc = dsocr(["download", "org/private"], tmp_path, hub, HF_TOKEN=FakeHub.TOKEN)
    assert proc.returncode == 0, proc.stderr
    assert not hub.token_sent_to_cdn


def test_missing_repo_revision_and_offline(hub, tmp_path):
    proc = dsocr(["download", "org/nothing"], tmp_path, hub)
    assert proc.returncode == 1 and "404" in proc.stderr
    proc = dsocr(["download", "org/model@v9"], tmp_path, hub)
    assert proc.returncode == 1 and "404" in proc.stderr
    hub.requests.clear()
    proc = dsocr(["download", "org/model"], tmp_path, hub, HF_HUB_OFFLINE="1")
    assert proc.returncode == 1 and "HF_HUB_OFFLINE" in proc.stderr
    assert not hub.requests  # offline means no request at all
    proc = dsocr(["download", "not a repo"], tmp_path, hub)
    assert proc.returncode == 2


def test_server_downloads_its_model(hub, tmp_path):
    from conftest import ServerProcess
    server = ServerProcess("--model", "org/model@" + COMMIT,
                           env={"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf")})
    # The fake repository's weights are random bytes: the server downloads them, then refuses to
    # serve them and exits with an error instead of hanging or serving garbage.
    rc = server.proc.wait(timeout=120)
    log = server.output()
    assert rc != 0, log
    assert "downloading org/model" in log
    assert "cannot start the engine" in log or "tokenizer" in log
    assert (tmp_path / "hf" / "hub" / "models--org--model" / "snapshots" / COMMIT / "config.json").exists()
