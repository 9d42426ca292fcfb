"""Writes tests/data/ngram_golden.json: the official windowed no-repeat n-gram processor
(spec §10.2, written from the spec's pseudocode) on random token streams, for the C++ test."""
import json
import pathlib
import random

WHITELIST = [128821, 128822]


def banned(generated, n, window, whitelist):
    length = len(generated)
    if length < n:
        return []
    prefix = generated[length - n + 1:]
    ban = set()
    for s in range(max(0, length - window), length - n + 1):
        if generated[s:s + n - 1] == prefix:
            ban.add(generated[s + n - 1])
    return sorted(ban - set(whitelist))


def main():
    rng = random.Random(20261123)
    cases = []
    for _ in range(400):
        vocab = rng.choice([2, 3, 5, 20])
        alphabet = list(range(vocab)) + WHITELIST
        n = rng.choice([1, 2, 3, 4, 5, 20])
        window = rng.choice([n, 10, 50, 90])
        stream = [rng.choice(alphabet) for _ in range(rng.randint(0, 150))]
        cases.append({"tokens": stream, "n": n, "window": window,
                      "banned": banned(stream, n, window, WHITELIST)})
    out = pathlib.Path(__file__).parents[1] / "data" / "ngram_golden.json"
    out.write_text(json.dumps({"whitelist": WHITELIST, "cases": cases}, separators=(",", ":")))


if __name__ == "__main__":
    main()
