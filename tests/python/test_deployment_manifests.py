"""Deployment files (issue #19), checked offline: the Kubernetes manifests against the Kubernetes
schemas (PyPI kubernetes-validate ships them), the promises the manifests, compose file and gateway
make to each other (grace period above the drain, probes on /health, the autoscaler's metric is one
the server exports), and that builds take DeepSeek-OCR-2's small model files from the repository,
never from ../shared (a clone or an image build context has nothing outside the repository)."""
import copy
import hashlib
import re
import shutil
import subprocess

import pytest
import yaml
import kubernetes_validate

from conftest import BUILD_DIR, SOURCE_DIR

KUBERNETES_VERSION = "1.37.0"
DOCKER = SOURCE_DIR / "docker"
MANIFESTS = sorted((DOCKER / "kubernetes").rglob("*.yaml"))
MODEL_FILES = SOURCE_DIR / "model-files" / "deepseek-ocr2"
SHARED_MODEL_FILES = SOURCE_DIR.parent / "shared" / "model-files" / "deepseek-ocr2"
MODEL_FILE_NAMES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                    "processor_config.json", "config.json"]


def documents(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def resources(kind):
    return [(p, d) for p in MANIFESTS for d in documents(p) if d["kind"] == kind]


def validate(doc):
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def container(deployment):
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    return c


def env_value(c, name, default=None):
    return next((e["value"] for e in c.get("env", []) if e["name"] == name and "value" in e),
                default)


def test_there_are_cpu_and_gpu_deployments_a_service_and_an_autoscaler():
    names = {p.relative_to(DOCKER / "kubernetes").as_posix() for p in MANIFESTS}
    assert {"deployment.yaml", "gpu/deployment.yaml", "service.yaml", "hpa.yaml",
            "model-cache.yaml"} <= names


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.relative_to(DOCKER).as_posix())
def test_manifest_validates_strictly(path):
    for doc in documents(path):
        validate(doc)


@pytest.mark.parametrize("mutation", ["misspelled field", "wrong type", "missing required"])
def test_validation_rejects_a_broken_deployment(mutation):
    # Proves the check above can fail: the same Deployment, broken three ways.
    (_, deployment), *_ = resources("Deployment")
    broken = copy.deepcopy(deployment)
    pod = broken["spec"]["template"]["spec"]
    if mutation == "misspelled field":
        pod["terminationGracePeriod"] = pod.pop("terminationGracePeriodSeconds")
    elif mutation == "wrong type":
        container(broken)["readinessProbe"]["periodSeconds"] = "two"
    else:
        del broken["spec"]["selector"]
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(broken)


@pytest.mark.parametrize("path,deployment", resources("Deployment"),
                         ids=lambda v: v.relative_to(DOCKER).as_posix() if hasattr(v, "parts") else "")
def test_deployment_probes_and_shutdown(path, deployment):
    pod = deployment["spec"]["template"]["spec"]
    c = container(deployment)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["path"] == "/health", probe
    # SIGKILL must not cut the drain: preStop, then up to the drain timeout, within the grace.
    pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"]
    drain = int(env_value(c, "DSOCR_DRAIN_TIMEOUT", "30"))
    assert pod["terminationGracePeriodSeconds"] > pre_stop + drain
    # A draining pod answers 503 on /health; liveness must not kill it before the drain ends.
    live = c["livenessProbe"]
    assert live["periodSeconds"] * live["failureThreshold"] > pre_stop + drain
    assert c["resources"]["requests"] and c["resources"]["limits"]
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts["/var/cache/dsocr"]]["persistentVolumeClaim"]["claimName"] == \
        "dsocr-model-cache"
    assert pod["securityContext"]["runAsNonRoot"] is True


def test_gpu_deployment_requests_a_gpu_and_the_cpu_one_does_not():
    by_path = {p.relative_to(DOCKER / "kubernetes").as_posix(): d
               for p, d in resources("Deployment")}
    gpu = container(by_path["gpu/deployment.yaml"])["resources"]
    cpu = container(by_path["deployment.yaml"])["resources"]
    assert gpu["limits"]["nvidia.com/gpu"] == "1"
    assert "nvidia.com/gpu" not in cpu.get("limits", {})


def test_service_targets_the_container_port():
    (_, service), = resources("Service")
    for _, deployment in resources("Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items()
        ports = {p["name"] for p in container(deployment)["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports


def test_autoscaler_scales_the_deployment_on_a_metric_the_server_exports():
    (_, hpa), = resources("HorizontalPodAutoscaler")
    (_, deployment), *_ = resources("Deployment")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    names = [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"]]
    assert names == ["dsocr_requests_waiting"]
    exported = (SOURCE_DIR / "server" / "server_metrics.cpp").read_text()
    assert '"dsocr_requests_waiting"' in exported


def test_compose_grace_period_covers_the_drain_and_gateway_publishes_the_port():
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    replica, gateway = compose["services"]["dsocr"], compose["services"]["gateway"]
    grace = int(re.fullmatch(r"(\d+)s", replica["stop_grace_period"]).group(1))
    env = dict(e.partition("=")[::2] for e in replica["environment"])
    drain = int(re.search(r":-(\d+)", env["DSOCR_DRAIN_TIMEOUT"]).group(1))
    # A string: podman-compose 1.0 mangles a list form when it makes more than one replica.
    assert isinstance(replica["healthcheck"]["test"], str)
    assert replica["healthcheck"]["test"].endswith(" http://127.0.0.1:8000/health")
    assert grace > drain
    assert replica["deploy"]["replicas"] == "${DSOCR_REPLICAS:-2}"
    assert gateway["ports"] == ["${DSOCR_BIND:-0.0.0.0}:${DSOCR_PORT:-8000}:8000"]
    assert "ports" not in replica  # replicas are reached through the gateway only


def test_gateway_retries_only_connection_failures_and_checks_health():
    cfg = (DOCKER / "gateway" / "haproxy.cfg").read_text()
    directives = [line.split("#")[0].strip() for line in cfg.splitlines()]
    assert [d for d in directives if d.startswith("retry-on")] == ["retry-on conn-failure"]
    assert "balance leastconn" in directives
    assert "http-check send meth GET uri /health ver HTTP/1.1 hdr Host dsocr" in directives
    assert "http-check expect status 200" in directives
    assert not any(d.startswith(("option http-buffer-request", "compression")) for d in directives)


@pytest.mark.skipif(not shutil.which("haproxy"), reason="haproxy not installed")
def test_gateway_config_parses():
    subprocess.run([shutil.which("haproxy"), "-c", "-q", "-f",
                    str(DOCKER / "gateway" / "haproxy.cfg")], check=True,
                   env={"DSOCR_UPSTREAM": "dsocr"})


def test_dockerfile_runtime_promises():
    text = (DOCKER / "Dockerfile").read_text()
    runtime = text[text.rindex("\nFROM "):]
    assert re.search(r"^USER dsocr$", runtime, re.M)
    assert re.search(r"^HEALTHCHECK .*/health", runtime, re.M | re.S)
    assert re.search(r'^VOLUME \["/var/cache/dsocr"\]$', runtime, re.M)
    assert re.search(r"^STOPSIGNAL SIGTERM$", runtime, re.M)
    assert "DSOCR_CACHE_DIR=/var/cache/dsocr" in runtime and "HF_HOME=/var/cache/dsocr/" in runtime
    assert "DSOCR_MODEL_FILES_DIR=/opt/dsocr/share/dsocr/deepseek-ocr2" in runtime


def test_model_files_are_in_the_repository_with_the_documented_digests():
    provenance = (MODEL_FILES / "PROVENANCE.md").read_text()
    table = dict(re.findall(r"^\| (\S+) \| ([0-9a-f]{64}) \|$", provenance, re.M))
    assert sorted(table) == sorted(MODEL_FILE_NAMES)
    for name in MODEL_FILE_NAMES:
        assert hashlib.sha256((MODEL_FILES / name).read_bytes()).hexdigest() == table[name], name


@pytest.mark.skipif(not SHARED_MODEL_FILES.is_dir(), reason="no ../shared reference set")
def test_model_files_equal_the_reference_set():
    for name in MODEL_FILE_NAMES:
        assert (MODEL_FILES / name).read_bytes() == (SHARED_MODEL_FILES / name).read_bytes(), name


def test_no_build_or_product_file_reads_model_files_from_outside_the_repository():
    product = [SOURCE_DIR / "CMakeLists.txt", SOURCE_DIR / "scripts" / "setup.sh"]
    for folder in ("cmake", "common", "tokenizer", "weights", "vision", "engine", "server",
                   "docker"):
        product += [p for p in (SOURCE_DIR / folder).rglob("*") if p.is_file()]
    offenders = [str(p.relative_to(SOURCE_DIR)) for p in product
                 if re.search(r"shared/model-files", p.read_text(errors="replace"))
                 and not p.name.endswith("_test.cpp")]
    assert offenders == []


def test_the_build_copies_the_repository_model_files():
    # What DSOCR_DEFAULT_MODEL_FILES_DIR points to in the binaries.
    built = BUILD_DIR / "share" / "dsocr" / "deepseek-ocr2"
    # configure_file() makes the files it copies dependencies of the build's regeneration, so
    # build.ninja names the source the copies come from (a stale cache entry from an older
    # build directory would not tell).
    ninja = (BUILD_DIR / "build.ninja").read_text()
    assert "shared/model-files" not in ninja
    assert str(MODEL_FILES / "tokenizer.json") in ninja
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                 "processor_config.json"):
        assert (built / name).read_bytes() == (MODEL_FILES / name).read_bytes(), name


def test_every_compose_service_sets_its_ulimits():
    # Without them a runtime's default limits can exceed the host's and the container cannot start
    # (runc: "error setting rlimits", exit 126): the gateway failed exactly so.
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    for name, service in compose["services"].items():
        assert set(service.get("ulimits", {})) >= {"nofile", "nproc"}, name


def test_container_test_build_args_are_the_dockerfiles():
    # podman and docker only warn about a build argument the Dockerfile does not declare, so a
    # renamed ARG would silently turn the host compiler cache off (a 15-20 min compile in CI).
    declared = set(re.findall(r"^ARG (\w+)", (DOCKER / "Dockerfile").read_text(), re.M))
    script = (SOURCE_DIR / "scripts" / "container-test.sh").read_text()
    passed = set(re.findall(r"--build-arg \"?(\w+)=", script))
    passed |= set(re.search(r"for var in ([\w ]+); do", script).group(1).split())
    assert {"DSOCR_CCACHE_DIR", "DSOCR_SRC_DIR", "LANG"} <= passed
    assert passed <= declared


def test_setup_installs_and_configures_the_container_tools():
    ci = (SOURCE_DIR / ".ci" / "run").read_text()
    assert re.search(r"^\./scripts/setup\.sh\b", ci, re.M)
    assert re.search(r"^\./scripts/test\.sh\b", ci, re.M)
    setup = (SOURCE_DIR / "scripts" / "setup.sh").read_text()
    packages = re.search(r"^CONTAINER_PACKAGES=\(([^)]*)\)", setup, re.M).group(1).split()
    assert {"podman", "buildah", "runc", "debootstrap"} <= set(packages)
    assert 'runtime = "runc"' in setup
    assert 'default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]' in setup


def test_the_container_test_is_registered_only_on_request():
    # Opt-in until a CI run has carried it (tests/CMakeLists.txt): registered with
    # -DDSOCR_CONTAINER_TESTS=ON where podman is installed, never by default.
    cache = (BUILD_DIR / "CMakeCache.txt").read_text()
    wanted = "DSOCR_CONTAINER_TESTS:BOOL=ON" in cache and shutil.which("podman")
    listed = subprocess.run(["ctest", "--test-dir", str(BUILD_DIR), "-N", "-R", "^container_test$"],
                            capture_output=True, text=True, check=True).stdout
    assert ("Total Tests: 1" in listed) == bool(wanted), listed
