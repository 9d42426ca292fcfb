"""The module dependency rules, checked on the #include graph of the sources.

common <- tokenizer, weights <- vision <- engine <- server: a module includes headers of its own
and of the modules below it only. The HTTP server (server/ outside server/cli/) reaches the model
only through the engine: it includes neither vision/ nor weights/ (model resolution and the engine
flags it shares with the CLI are engine/model_resolution.h and engine/engine_flags.h). The `dsocr`
tool (server/cli/) may use every module below it, the HTTP server's included (`dsocr ocr` builds
the same page objects from server/grounding.h and server/page_result.h). server/ and the
scheduler are torch-free: nothing they include, directly or through other project headers, is a
torch (torch/, ATen/, c10/) header. The build enforces the torch rule for server/ too (no torch
include path there); this test says why a violation is one and catches it in headers the build
does not compile yet.
"""
import re

from conftest import SOURCE_DIR

ALLOWED = {
    "common": {"common"},
    "tokenizer": {"common", "tokenizer"},
    "weights": {"common", "weights"},
    "vision": {"common", "vision"},
    "engine": {"common", "tokenizer", "weights", "vision", "engine"},
    "server": {"common", "tokenizer", "engine", "server"},
    # The CLI reaches the torch-free vision tools and the weights (make-model, download) directly.
    "server/cli": {"common", "tokenizer", "weights", "vision", "engine", "server", "server/cli"},
}
TOP_LEVEL = sorted({m.split("/")[0] for m in ALLOWED})
TORCH_FREE = [re.compile(p) for p in (r"^server/", r"^engine/core/", r"^engine/engine\.h$",
                                      r"^engine/device\.h$", r"^engine/model/vision_dump\.h$",
                                      r"^engine/engine_flags\.h$",
                                      r"^engine/model_resolution\.h$",
                                      r"^vision/",
                                      r"^tokenizer/", r"^common/")]
INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]', re.M)
TORCH_HEADER = re.compile(r"^(torch|ATen|c10)/")
SOURCE_SUFFIXES = {".h", ".hpp", ".cpp", ".cc", ".cu", ".cuh"}


def module_of(rel: str):
    """The module a repository path belongs to, or None outside the modules."""
    if rel.startswith("server/cli/"):
        return "server/cli"
    top = rel.split("/")[0]
    return top if top in ALLOWED else None


def sources():
    for top in TOP_LEVEL:
        for path in sorted((SOURCE_DIR / top).rglob("*")):
            if path.suffix in SOURCE_SUFFIXES:
                yield path.relative_to(SOURCE_DIR).as_posix()


def includes(rel: str):
    return [m.group(2) for m in INCLUDE.finditer((SOURCE_DIR / rel).read_text(errors="replace"))]


def project_includes(rel: str):
    return [inc for inc in includes(rel) if module_of(inc) and (SOURCE_DIR / inc).is_file()]


def test_there_are_sources_to_check():
    assert len(list(sources())) >= 10


def direction_violations():
    violations = []
    for rel in sources():
        for inc in project_includes(rel):
            if module_of(inc) not in ALLOWED[module_of(rel)]:
                violations.append(f"{rel} includes {inc}")
    return violations


def test_modules_include_only_downward():
    violations = direction_violations()
    assert not violations, "dependency direction broken:\n" + "\n".join(violations)


def torch_path(rel: str, seen=None):
    """A chain of includes from `rel` to a torch header, or None."""
    seen = seen if seen is not None else set()
    if rel in seen:
        return None
    seen.add(rel)
    for inc in includes(rel):
        if TORCH_HEADER.match(inc):
            return [rel, inc]
        if (SOURCE_DIR / inc).is_file() and module_of(inc):
            chain = torch_path(inc, seen)
            if chain:
                return [rel] + chain
    return None


def test_torch_free_files_reach_no_torch_header():
    violations = []
    for rel in sources():
        if any(p.search(rel) for p in TORCH_FREE):
            chain = torch_path(rel)
            if chain:
                violations.append(" -> ".join(chain))
    assert not violations, "torch reached a torch-free file:\n" + "\n".join(violations)


def test_the_checker_sees_a_violation(tmp_path, monkeypatch):
    # Guards the guard: a fake server file that includes an engine header which includes ATen.
    import conftest
    fake = tmp_path
    (fake / "server").mkdir()
    (fake / "engine").mkdir()
    (fake / "server" / "bad.cpp").write_text('#include "engine/model.h"\n')
    (fake / "engine" / "model.h").write_text("#include <ATen/ATen.h>\n")
    monkeypatch.setattr(conftest, "SOURCE_DIR", fake)
    monkeypatch.setitem(globals(), "SOURCE_DIR", fake)
    assert torch_path("server/bad.cpp") == ["server/bad.cpp", "engine/model.h", "ATen/ATen.h"]


def test_the_checker_keeps_vision_and_weights_out_of_the_http_server(tmp_path, monkeypatch):
    # Guards the guard: the same includes are a violation in server/ and allowed in server/cli/.
    import conftest
    fake = tmp_path
    for d in ("server/cli", "vision", "weights", "engine"):
        (fake / d).mkdir(parents=True)
    (fake / "vision" / "decode.h").write_text("")
    (fake / "weights" / "hub.h").write_text("")
    (fake / "engine" / "model_resolution.h").write_text("")
    body = '#include "vision/decode.h"\n#include "weights/hub.h"\n'
    (fake / "server" / "main.cpp").write_text(body + '#include "engine/model_resolution.h"\n')
    (fake / "server" / "cli" / "tool.cpp").write_text(body)
    monkeypatch.setattr(conftest, "SOURCE_DIR", fake)
    monkeypatch.setitem(globals(), "SOURCE_DIR", fake)
    assert direction_violations() == ["server/main.cpp includes vision/decode.h",
                                      "server/main.cpp includes weights/hub.h"]


def test_catch2_test_names_survive_ctest():
    # catch_discover_tests registers each TEST_CASE by name, and ctest splits a name at ';': the
    # registered test then matches nothing and "passes" without running (two did, unnoticed);
    # a '[' starts a tag filter when the name is passed back to the binary, and a leading '-' makes
    # it an option (Catch then fails the test).
    bad = []
    for path in sorted((SOURCE_DIR / "tests").rglob("*_test.cpp")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            m = re.search(r'TEST_CASE\(\s*"((?:[^"\\]|\\.)*)"', line)
            if m and (";" in m.group(1) or "[" in m.group(1) or m.group(1).startswith("-")):
                bad.append(f"{path.relative_to(SOURCE_DIR)}:{number}: {m.group(1)}")
    assert bad == []
