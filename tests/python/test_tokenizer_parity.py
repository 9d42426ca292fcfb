"""Token-id parity of dsocr's tokenizer with the reference `tokenizers` library (PyPI), through
`dsocr tokenize` exactly as users and scripts drive it."""
import json
import pathlib
import subprocess
import sys

import pytest
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers
from tokenizers import pre_tokenizers, trainers

from conftest import BIN_DIR, SOURCE_DIR
from tokenizer_corpus import corpus, megabyte_inputs

OCR_TOKENIZER_DIR = SOURCE_DIR.parent / "shared" / "model-files" / "deepseek-ocr2"


def dsocr_tokenize(model_dir: pathlib.Path, lines: list, decode: bool = False, timeout=600):
    stdin = "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines)
    args = [str(BIN_DIR / "dsocr"), "tokenize", "--model", str(model_dir)]
    if decode:
        args.append("--decode")
    proc = subprocess.run(args, input=stdin.encode(), capture_output=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr.decode()
    return [json.loads(line) for line in proc.stdout.decode().split("\n") if line]


def assert_same_ids(reference: Tokenizer, model_dir: pathlib.Path, texts: list[str]):
    ours = dsocr_tokenize(model_dir, texts)
    theirs = [e.ids for e in reference.encode_batch(texts, add_special_tokens=False)]
    assert len(ours) == len(texts)
    mismatches = [(t, o, r) for t, o, r in zip(texts, ours, theirs) if o != r]
    assert not mismatches, (f"{len(mismatches)} of {len(texts)} differ; first: "
                            + "\n".join(repr(m) for m in mismatches[:5]))
    return ours


@pytest.fixture(scope="module")
def ocr_reference():
    return Tokenizer.from_file(str(OCR_TOKENIZER_DIR / "tokenizer.json"))


def test_corpus_ids_match_exactly(ocr_reference):
    texts = corpus()
    assert len(texts) >= 20000
    assert_same_ids(ocr_reference, OCR_TOKENIZER_DIR, texts)


def test_megabyte_inputs_match_exactly(ocr_reference):
    assert_same_ids(ocr_reference, OCR_TOKENIZER_DIR, megabyte_inputs())


def test_decode_round_trips_and_matches_reference(ocr_reference):
    texts = corpus(3000, seed=77)
    ids = assert_same_ids(ocr_reference, OCR_TOKENIZER_DIR, texts)
    decoded = dsocr_tokenize(OCR_TOKENIZER_DIR, ids, decode=True)
    assert decoded == [ocr_reference.decode(i, skip_special_tokens=False) for i in ids]
    assert decoded == texts  # byte-level BPE loses nothing


def test_decode_of_arbitrary_id_sequences(ocr_reference):
    # Random ids split characters between tokens and hit ids with no token at all.
    import random
    rng = random.Random(5)
    seqs = [[rng.randrange(0, 129280) for _ in range(rng.randint(0, 12))] for _ in range(3000)]
    seqs += [[223], [223, 223], [16, 5, 223, 128815, 1]]
    assert dsocr_tokenize(OCR_TOKENIZER_DIR, seqs, decode=True) == [
        ocr_reference.decode(s, skip_special_tokens=False) for s in seqs]


def train(tmp_path: pathlib.Path, name: str, configure, texts: list[str]) -> pathlib.Path:
    tok = Tokenizer(models.BPE())
    configure(tok)
    trainer = trainers.BpeTrainer(vocab_size=1500, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<s>", "</s>"])
    tok.train_from_iterator(texts, trainer)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<sep>"])
    tok.add_tokens([AddedToken("<mask>", lstrip=True, rstrip=True),
                    AddedToken("wordy", single_word=True), AddedToken("norm me", normalized=True)])
    out = tmp_path / name
    out.mkdir()
    tok.save(str(out / "tokenizer.json"))
    return out


SPLIT_FAMILIES = {
    "gpt2_prefix_space": lambda t: setattr(
        t, "pre_tokenizer", pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)),
    "split_behaviours": lambda t: setattr(t, "pre_tokenizer", pre_tokenizers.Sequence([
        pre_tokenizers.Split(" ", behavior="merged_with_next"),
        pre_tokenizers.Split(Regex(r"\d+"), behavior="contiguous"),
        pre_tokenizers.Split(Regex(r"[.,;]"), behavior="merged_with_previous"),
        pre_tokenizers.Split(Regex(r"\n+"), behavior="removed"),
        pre_tokenizers.Split(Regex(r"\p{L}+"), behavior="isolated", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])),
    "normalizers": lambda t: (
        setattr(t, "normalizer", normalizers.Sequence([
            normalizers.Strip(), normalizers.Replace(Regex(r"\s+"), " "),
            normalizers.Replace("ab", "X"), normalizers.Prepend("_")])),
        setattr(t, "pre_tokenizer", pre_tokenizers.ByteLevel(add_prefix_space=False))),
}


@pytest.mark.parametrize("family", sorted(SPLIT_FAMILIES))
def test_other_tokenizer_families(tmp_path, family):
    texts = corpus(2500, seed=11)
    extra = ["a <mask> b", "x<mask>y", "  <mask>  ", "wordy", "a wordy b", "unwordyish", "norm me",
             "<sep><sep>", "1,2.3;4\n\n5 six", "abab cab"]
    model_dir = train(tmp_path, family, SPLIT_FAMILIES[family], texts[:1500])
    reference = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    assert_same_ids(reference, model_dir, texts + extra)


def test_unsupported_components_are_load_errors(tmp_path):
    spec = json.loads((OCR_TOKENIZER_DIR / "tokenizer.json").read_text())
    for field, value, needle in [("normalizer", {"type": "NFKC"}, "NFKC"),
                                 ("model", {"type": "WordPiece", "vocab": {}}, "WordPiece"),
                                 ("decoder", {"type": "Metaspace"}, "Metaspace")]:
        broken = dict(spec, **{field: value})
        d = tmp_path / field
        d.mkdir()
        (d / "tokenizer.json").write_text(json.dumps(broken))
        proc = subprocess.run([str(BIN_DIR / "dsocr"), "tokenize", "--model", str(d)],
                              input=b'"x"\n', capture_output=True, timeout=120)
        assert proc.returncode == 1 and needle in proc.stderr.decode(), proc.stderr


def test_cli_reports_bad_lines(ocr_reference):
    proc = subprocess.run([str(BIN_DIR / "dsocr"), "tokenize", "--model", str(OCR_TOKENIZER_DIR)],
                          input=b'"ok"\n42\n"never reached"\n', capture_output=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stdout.decode().split("\n") == [json.dumps(ocr_reference.encode("ok").ids).replace(" ", ""), ""]
    assert "line 2: expected a JSON string" in proc.stderr.decode()


def test_every_code_point_is_classified_like_the_reference(ocr_reference):
    # Each code point in contexts where its Unicode category decides the split (letter runs,
    # digits, punctuation, spaces): catches a regex engine with other Unicode tables.
    code_points = [c for c in range(0x80, 0x110000) if not 0xD800 <= c < 0xE000]
    lines = []
    for i in range(0, len(code_points), 16):
        chunk = [chr(c) for c in code_points[i:i + 16]]
        lines.append(" ".join(f"x{ch}1{ch}!{ch} {ch}\n" for ch in chunk))
    assert_same_ids(ocr_reference, OCR_TOKENIZER_DIR, lines)


def test_unicode_additions_table_is_current():
    import unicodedata
    if unicodedata.unidata_version != "14.0.0":
        pytest.skip("the generator needs Python's Unicode 14.0 data (Python 3.11)")
    generated = subprocess.run(
        [sys.executable, str(SOURCE_DIR / "tests" / "tools" / "gen_unicode_additions.py")],
        capture_output=True, text=True, check=True).stdout
    assert generated == (SOURCE_DIR / "tokenizer" / "unicode_16_additions.inc").read_text()


def test_byte_fallback_unk_and_ignore_merges_family(tmp_path):
    # Character-level BPE (no ByteLevel): unknown characters fall back to <0xXX> byte tokens, or to
    # <unk> (fused) when byte_fallback is off; ignore_merges takes whole-word vocabulary hits.
    texts = corpus(2500, seed=21)
    for name, byte_fallback, ignore_merges in [("fallback", True, True), ("unk", False, False)]:
        tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=byte_fallback, fuse_unk=True,
                                   ignore_merges=ignore_merges))
        tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"\s+"), behavior="removed")
        specials = ["<unk>"] + [f"<0x{b:02X}>" for b in range(256)]
        trainer = trainers.BpeTrainer(vocab_size=1200, show_progress=False, limit_alphabet=60,
                                      special_tokens=specials)
        tok.train_from_iterator(texts[:1500], trainer)
        out = tmp_path / name
        out.mkdir()
        tok.save(str(out / "tokenizer.json"))
        reference = Tokenizer.from_file(str(out / "tokenizer.json"))
        assert_same_ids(reference, out, texts + ["漢字 ünïcødé 😀 plain words"])
