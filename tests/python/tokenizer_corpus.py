"""A deterministic tokenizer test corpus: >= 20,000 strings over every case the tokenizer must get
right (prose, code, markdown/HTML tables, LaTeX, numbers of every length, CJK, RTL and Indic
scripts, Thai, emoji and ZWJ sequences, combining marks, whitespace runs, special-token strings
embedded in text, random code points, empty input) plus a few 1 MB inputs.

Used by the pytest parity suite and by tests/tools/gen_tokenizer_golden.py (Catch2 goldens).
"""
import random

WORDS = ("the of and to in is was for on that with as by at from this be are or an it not which "
         "document table figure page section result value method data model text image layout "
         "markdown header footer column row cell total average invoice receipt formula equation "
         "Convert OCR grounding DeepSeek isn't don't we'll they've I'm you'd it's").split()
CODE = [
    "def f(x):\n    return x ** 2 + 1\n",
    "for (int i = 0; i < n; ++i) {\n\tsum += a[i] * b[i];\n}\n",
    "const auto& [key, value] = *map.find(\"k\");",
    "SELECT name, COUNT(*) FROM t WHERE id > 10 GROUP BY name;",
    "if __name__ == '__main__':\n    main()",
    "#include <vector>\nstd::vector<int> v{1, 2, 3};",
    "x = {'a': [1, 2.5, -3e10], \"b\": None}  # comment",
    "fn main() -> Result<(), Box<dyn Error>> { Ok(()) }",
]
MARKDOWN = [
    "# Title\n\n## Section 1.2\n\n- item one\n- item **two**\n\n> quote\n",
    "| Name | Qty | Price |\n|---|---:|:---:|\n| Apple | 3 | $1.20 |\n| Pear | 10 | $0.99 |\n",
    "<table><tr><td>1</td><td>2</td></tr><tr><td>a</td><td></td></tr></table>",
    "<|ref|>title<|/ref|><|det|>[[12, 34, 567, 89]]<|/det|>\n# Annual Report",
    "![figure](images/0.jpg)\n\n*Figure 1:* results on **OmniDocBench**.",
    "1. first\n2. second\n   - nested `code` span\n",
]
LATEX = [
    r"$$\int_0^\infty e^{-x^2}\,dx = \frac{\sqrt{\pi}}{2}$$",
    r"\begin{align} a &= b + c \\ d &= \sum_{i=1}^{n} x_i^2 \end{align}",
    r"$\mathbf{A}\mathbf{x} = \lambda \mathbf{x}$, where $\lambda \in \mathbb{R}$",
    r"\left( \frac{a}{b} \right)^{n-1} \cdot \alpha_{\text{max}}",
]
SCRIPTS = {
    "chinese": "文档识别是计算机视觉的重要任务之一我们提出了一种新的方法表格公式图片版面分析",
    "japanese": "ひらがなカタカナ漢字を含む日本語の文章ですテストしますアイウエオきゃっぷ",
    "korean": "한국어문서인식테스트입니다표와수식을포함합니다안녕하세요",
    "arabic": "النص العربي مع الأرقام ١٢٣ والتشكيل مُحَمَّد",
    "hebrew": "טקסט בעברית עם ניקוד שָׁלוֹם",
    "devanagari": "हिन्दी पाठ परीक्षण संख्या १२३ क्षत्रिय",
    "thai": "ภาษาไทยไม่มีช่องว่างระหว่างคำทดสอบ",
    "cyrillic": "Русский текст с ёлкой и числами",
    "greek": "Ελληνικά κείμενα αβγ ΑΒΓ",
}
EMOJI = ["😀", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "❤️", "🇫🇷", "🧑‍💻", "☕", "🔥🔥", "1️⃣", "🫠"]
COMBINING = ["e\u0301", "a\u0308\u0304", "n\u0303", "\u0915\u094d\u0937", "Z\u0351\u036b\u0343\u036a",
             "o\u0338", "\u1100\u1161\u11a8", "i\u0307"]
WHITESPACE = [" ", "  ", "\t", "\n", "\r\n", "\r", "\u00a0", "\u2028", "\u2029", "\u3000", "\u200b",
              "\u2003", "\x0b", "\x0c", "\x85", " \n ", "\n\n\n", "\t \t", "\ufeff", "\u180e", "\x1c"]
SPECIAL = ["<image>", "<|ref|>", "<|/ref|>", "<|det|>", "<|/det|>", "<|grounding|>", "<td>",
           "</td>", "<tr>", "</tr>", "<|User|>", "<|Assistant|>", "<｜begin▁of▁sentence｜>",
           "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>", "<｜place▁holder▁no▁7｜>", "<|EOT|>", "<｜User｜>",
           "<imag", "<|ref", "<image", "<<image>>", "<td></td>", "<image><image>", "< image>"]
PUNCT = list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~") + ["...", "—", "–", "«»", "“”", "‘’", "、。", "！？", "・"]


def number(rng: random.Random) -> str:
    digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 40)))
    form = rng.randrange(6)
    if form == 0:
        return digits
    if form == 1:
        return f"{digits[:10]}.{digits[10:] or '0'}"
    if form == 2:
        return f"{int(digits[:12]):,}"
    if form == 3:
        return "-" + digits + "%"
    if form == 4:
        return "".join(chr(ord(d) - ord("0") + 0xFF10) for d in digits[:8])  # full-width digits
    return "".join(chr(ord(d) - ord("0") + 0x0660) for d in digits[:8])  # Arabic-Indic digits


def random_code_points(rng: random.Random) -> str:
    out = []
    for _ in range(rng.randint(1, 30)):
        plane = rng.random()
        if plane < 0.5:
            cp = rng.randint(0x20, 0x2FFF)
        elif plane < 0.8:
            cp = rng.randint(0x3000, 0xD7FF)
        elif plane < 0.95:
            cp = rng.randint(0xE000, 0xFFFD)
        else:
            cp = rng.randint(0x10000, 0x10FFFF)
        out.append(chr(cp))
    return "".join(out)


def fragment(rng: random.Random) -> str:
    kind = rng.randrange(12)
    if kind == 0:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 12))) + rng.choice(["", ".", ",", "!", "?"])
    if kind == 1:
        return rng.choice(CODE)
    if kind == 2:
        return rng.choice(MARKDOWN)
    if kind == 3:
        return rng.choice(LATEX)
    if kind == 4:
        return number(rng)
    if kind == 5:
        text = rng.choice(list(SCRIPTS.values()))
        a = rng.randrange(len(text))
        return text[a:a + rng.randint(1, 20)]
    if kind == 6:
        return "".join(rng.choice(EMOJI) for _ in range(rng.randint(1, 4)))
    if kind == 7:
        return rng.choice(WORDS) + rng.choice(COMBINING)
    if kind == 8:
        return "".join(rng.choice(WHITESPACE) for _ in range(rng.randint(1, 5)))
    if kind == 9:
        return rng.choice(SPECIAL)
    if kind == 10:
        return "".join(rng.choice(PUNCT) for _ in range(rng.randint(1, 5)))
    return random_code_points(rng)


def corpus(n: int = 20000, seed: int = 1234) -> list[str]:
    rng = random.Random(seed)
    out = ["", " ", "\n", "a", "<image>", "<image>\n<|grounding|>Convert the document to markdown.",
           "<image>\nFree OCR.", " <image> ", "\r\n\r\n", "\u00a0\u00a0x"]
    out += [number(rng) for _ in range(200)]
    out += [str(10 ** k) for k in range(40)] + ["9" * k for k in range(1, 40)]
    out += list(SPECIAL) + [w + s + w for w in ("x", " ", "\n") for s in SPECIAL]
    out += list(SCRIPTS.values()) + EMOJI + COMBINING + WHITESPACE
    while len(out) < n:
        pieces = [fragment(rng) for _ in range(rng.randint(1, 6))]
        sep = rng.choice(["", " ", "\n", "", ""])
        out.append(sep.join(pieces))
    return out


def megabyte_inputs() -> list[str]:
    rng = random.Random(99)
    prose = []
    size = 0
    while size < 1 << 20:
        frag = fragment(rng)
        prose.append(frag)
        size += len(frag.encode())
    return [
        " ".join(prose),
        "a" * (1 << 20),                      # one 1 MB word: BPE must not be quadratic
        "1234567890" * (1 << 17),             # digits: the \p{N}{1,3} split
        SCRIPTS["chinese"] * 10000,           # CJK run
        " \t\n" * 350000,                     # whitespace only
    ]
