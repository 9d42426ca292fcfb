"""The real dsocr-server binary, started the way the README starts it (--model demo)."""
import json
import os
import re
import subprocess
import urllib.error
import urllib.request

from conftest import BIN_DIR, ServerProcess, free_port


def get(url: str):
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()


def test_health_models_metrics_then_clean_sigterm(demo_server):
    status, _, body = get(demo_server.base_url + "/health")
    assert status == 200 and json.loads(body)["status"] == "ok"
    status, _, body = get(demo_server.base_url + "/v1/models")
    assert status == 200 and json.loads(body)["data"][0]["id"] == "demo"
    status, headers, body = get(demo_server.base_url + "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    assert 'dsocr_http_requests_total{route="/health",status="200"}' in body
    status, _, body = get(demo_server.base_url + "/nope")
    assert status == 404 and json.loads(body)["error"]["type"] == "not_found_error"

    rc, log = demo_server.stop()
    assert rc == 0, log
    demo_dir = demo_server.cache_dir / "demo-tiny-seed0-f32-v1"
    assert (demo_dir / "config.json").is_file() and (demo_dir / "tokenizer.json").is_file()
    assert "demo, random weights" in log and str(demo_dir) in log
    assert "received SIGTERM" in log and "stopped" in log
    assert "GET /nope 404" in log
    assert "/health" not in log.split("listening on")[1]  # probes are not logged


def test_served_model_name_and_json_logs():
    server = ServerProcess("--model", "demo", "--served-model-name", "ocr",
                           "--log-format", "json")
    try:
        server.wait_healthy()
        _, _, body = get(server.base_url + "/v1/models")
        assert json.loads(body)["data"][0]["id"] == "ocr"
    finally:
        rc, log = server.stop()
    assert rc == 0
    lines = [json.loads(line) for line in log.splitlines() if line.strip()]
    assert any(line["logger"] == "server" and "listening" in line["msg"] for line in lines)


def test_uncached_hub_model_exits_pointing_at_demo(tmp_path):
    # Offline, and with a hub that does not answer (a closed loopback port): never the internet.
    for env in ({"HF_HUB_OFFLINE": "1"}, {"HF_ENDPOINT": f"http://127.0.0.1:{free_port()}"}):
        proc = subprocess.run(
            [str(BIN_DIR / "dsocr-server"), "--model", "deepseek-ai/DeepSeek-OCR-2"],
            capture_output=True, text=True, timeout=120,
            env={"HF_HOME": str(tmp_path), "PATH": "/usr/bin:/bin", **env})
        assert proc.returncode == 2, proc.stderr
        assert "--model demo" in proc.stderr


def test_bad_flags_are_reported():
    for args, needle in [(["--port", "http"], "--port"), (["--bogus"], "unknown flag --bogus"),
                         (["--log-level", "loud"], "unknown log level"),
                         (["--device", "tpu"], "unknown device")]:
        proc = subprocess.run([str(BIN_DIR / "dsocr-server"), "--model", "demo", *args],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2, (args, proc.stderr)
        assert needle in proc.stderr, (args, proc.stderr)
    help_text = subprocess.run([str(BIN_DIR / "dsocr-server"), "--help"], capture_output=True,
                               text=True, timeout=60)
    assert help_text.returncode == 0 and "--served-model-name" in help_text.stdout


def test_cli_info_json():
    proc = subprocess.run([str(BIN_DIR / "dsocr"), "info", "--json", "--model", "demo"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["torch_version"].startswith("2.11")
    assert info["model"]["name"] == "demo"
    unknown = subprocess.run([str(BIN_DIR / "dsocr"), "frobnicate"], capture_output=True,
                             text=True, timeout=60)
    assert unknown.returncode == 2 and "unknown command" in unknown.stderr


def test_cli_resolves_model_like_the_server(tmp_path):
    # `dsocr generate` and `dsocr tokenize` take the server's --model values (one resolution,
    # engine/model_resolution.h): `demo` is made on first use in the same cache.
    env = {"PATH": "/usr/bin:/bin", "DSOCR_CACHE_DIR": str(tmp_path / "cache"),
           "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    tok = subprocess.run([str(BIN_DIR / "dsocr"), "tokenize", "--model", "demo"],
                         input='"Free OCR."\n', capture_output=True, text=True, timeout=60, env=env)
    assert tok.returncode == 0, tok.stderr
    assert json.loads(tok.stdout) and all(isinstance(i, int) for i in json.loads(tok.stdout))
    assert not (tmp_path / "cache").exists()  # a tokenizer needs no weights: nothing was made
    gen = subprocess.run([str(BIN_DIR / "dsocr"), "generate", "--model", "demo", "--prompt",
                          "Free OCR.", "--max-tokens", "3", "--json"],
                         capture_output=True, text=True, timeout=300, env=env)
    assert gen.returncode == 0, gen.stderr
    out = json.loads(gen.stdout)
    assert len(out["ids"]) <= 3 and out["prompt_ids"]
    assert (tmp_path / "cache" / "demo-tiny-seed0-f32-v1" / "config.json").is_file()
    # An uncached hub id offline fails the same way the server's does, pointing at demo.
    missing = subprocess.run([str(BIN_DIR / "dsocr"), "generate", "--model", "org/none",
                              "--prompt", "x"], capture_output=True, text=True, timeout=60, env=env)
    assert missing.returncode == 1 and "--model demo" in missing.stderr


def test_a_model_over_the_cpu_memory_budget_refuses_to_start(tmp_path):
    env = {**os.environ, "DSOCR_CACHE_DIR": str(tmp_path / "cache")}
    # The demo process holds ~0.6 GB before its KV cache; an 8192-token request needs 12 MiB of
    # KV on the demo model, more than 1% of the ~100 MiB that 700M leaves.
    for budget, needle in [("100M", "the model's weights need"),
                           ("700M", "the KV cache for one request of --max-model-len 8192")]:
        proc = subprocess.run([str(BIN_DIR / "dsocr-server"), "--model", "demo", "--port", "0",
                               "--cpu-memory-budget", budget, "--kv-memory-fraction", "0.01"],
                              capture_output=True, text=True, timeout=120, env=env)
        assert proc.returncode == 1, (budget, proc.stderr[-2000:])
        assert needle in proc.stderr + proc.stdout, (budget, proc.stderr[-2000:])
        assert "--cpu-memory-budget" in proc.stderr + proc.stdout
    # With room, the start-up log states the plan.
    server = ServerProcess("--model", "demo", "--cpu-memory-budget", "3G", env=env)
    try:
        server.wait_healthy()
    finally:
        rc, log = server.stop()
    assert rc == 0
    assert "CPU memory plan: budget 3.00 GiB = weights" in log


def test_weights_flag_picks_the_language_model_format_and_refuses_bad_values(tmp_path):
    """--weights (docs/cpu.md): int8 and bfloat16 run the demo model end to end; the float32
    demo checkpoint keeps its modules under auto; bad values and combinations are clear errors."""
    env = {**os.environ, "DSOCR_CACHE_DIR": str(tmp_path / "cache")}

    def generate(*flags):
        return subprocess.run([str(BIN_DIR / "dsocr"), "generate", "--model", "demo", "--prompt",
                               "Free OCR.", "--max-tokens", "4", "--json", *flags],
                              capture_output=True, text=True, timeout=300, env=env)

    for weights, logged in [("int8", "language-model matrices int8"),
                            ("bfloat16", "language-model matrices bfloat16"),
                            ("auto", "(float32, language-model matrices float32")]:
        proc = generate("--weights", weights)
        assert proc.returncode == 0, (weights, proc.stderr[-2000:])
        assert logged in proc.stderr, (weights, proc.stderr[-2000:])
        assert json.loads(proc.stdout)["prompt_ids"]
    bad = generate("--weights", "int4")
    assert bad.returncode != 0 and "--weights must be auto, float32, bfloat16 or int8" in bad.stderr
    wider = generate("--weights", "float32", "--dtype", "bfloat16")
    assert wider.returncode == 1 and "--weights float32 is wider than --dtype bfloat16" in wider.stderr


def test_kv_cache_dtype_flag(tmp_path):
    """--kv-cache-dtype bfloat16 under float32 compute runs the demo model end to end with a
    bfloat16 cache (half the bytes a block takes); bad values and widening are clear errors."""
    env = {**os.environ, "DSOCR_CACHE_DIR": str(tmp_path / "cache")}

    def generate(*flags):
        return subprocess.run([str(BIN_DIR / "dsocr"), "generate", "--model", "demo", "--prompt",
                               "Free OCR.", "--max-tokens", "4", "--json", *flags],
                              capture_output=True, text=True, timeout=300, env=env)

    for dtype in ("bfloat16", "auto"):
        proc = generate("--kv-cache-dtype", dtype, "--weights", "int8")
        assert proc.returncode == 0, (dtype, proc.stderr[-2000:])
        expected = "bfloat16" if dtype == "bfloat16" else "float32"
        assert re.search(r"KV cache: \d+ blocks of 16 tokens \(\d+ tokens, " + expected,
                         proc.stderr), proc.stderr[-2000:]
        assert json.loads(proc.stdout)["prompt_ids"]
    bad = generate("--kv-cache-dtype", "int8")
    assert bad.returncode != 0 and "--kv-cache-dtype must be auto, float32 or bfloat16" in bad.stderr
    wider = generate("--kv-cache-dtype", "float32", "--dtype", "bfloat16")
    assert wider.returncode != 0 and "--kv-cache-dtype float32 is wider" in wider.stderr
