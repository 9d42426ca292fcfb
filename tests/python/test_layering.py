"""The module dependency rules, checked on the #include graph of the sources.

common <- tokenizer, weights <- vision <- engine <- server: a module includes headers of its own
and of the modules below it only. server/ and the scheduler are torch-free: nothing they include,
directly or through other project headers, is a torch (torch/, ATen/, c10/) header. The build
enforces the torch rule for server/ too (no torch include path there); this test says why a
violation is one and catches it in headers the build does not compile yet.
"""
import re

from conftest import SOURCE_DIR

ALLOWED = {
    "common": {"common"},
    "tokenizer": {"common", "tokenizer"},
    "weights": {"common", "weights"},
    "vision": {"common", "vision"},
    "engine": {"common", "tokenizer", "weights", "vision", "engine"},
    # The CLI (server/cli/cli_main.cpp) reaches the torch-free vision tools directly.
    "server": {"common", "tokenizer", "weights", "vision", "engine", "server"},
}
TORCH_FREE = [re.compile(p) for p in (r"^server/", r"^engine/core/", r"^engine/engine\.h$",
                                      r"^engine/device\.h$", r"^engine/model/vision_dump\.h$",
                                      r"^vision/",
                                      r"^tokenizer/", r"^common/")]
INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]', re.M)
TORCH_HEADER = re.compile(r"^(torch|ATen|c10)/")
SOURCE_SUFFIXES = {".h", ".hpp", ".cpp", ".cc", ".cu", ".cuh"}


def sources():
    for module in ALLOWED:
        for path in sorted((SOURCE_DIR / module).rglob("*")):
            if path.suffix in SOURCE_SUFFIXES:
                yield path.relative_to(SOURCE_DIR).as_posix()


def includes(rel: str):
    return [m.group(2) for m in INCLUDE.finditer((SOURCE_DIR / rel).read_text(errors="replace"))]


def project_includes(rel: str):
    return [inc for inc in includes(rel) if inc.split("/")[0] in ALLOWED
            and (SOURCE_DIR / inc).is_file()]


def test_there_are_sources_to_check():
    assert len(list(sources())) >= 10


def test_modules_include_only_downward():
    violations = []
    for rel in sources():
        module = rel.split("/")[0]
        for inc in project_includes(rel):
            if inc.split("/")[0] not in ALLOWED[module]:
                violations.append(f"{rel} includes {inc}")
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
        if (SOURCE_DIR / inc).is_file() and inc.split("/")[0] in ALLOWED:
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
