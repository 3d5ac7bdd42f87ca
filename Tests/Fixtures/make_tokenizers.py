"""Makes the tokenizer fixtures under Tests/Fixtures/tokenizers/ (run from the repository root):

    pip install tokenizers
    python3 Tests/Fixtures/make_tokenizers.py

Small tokenizers trained with Hugging Face `tokenizers` on a built-in corpus, of each kind
`moe generate` reads from a checkpoint's tokenizer.json:
- `byte_level`: byte-level BPE as Qwen2/Qwen3-MoE and OLMoE use it (a regex split of the text,
  then bytes mapped to printable characters, then BPE merges); `byte_level_deepseek` with
  DeepSeek-V3's three splits in sequence, `byte_level_o200k` with GPT-OSS's (o200k) split;
- `sentencepiece`: SentencePiece-style BPE with byte fallback as Mixtral (Llama) uses it
  ("▁" for spaces and at the start, BPE over characters, unknown characters as <0xNN> bytes).
Each folder holds tokenizer.json and cases.json: a few hundred strings (Unicode, whitespace runs,
digits, emoji, mixed scripts) with the ids `tokenizers` encodes them to and the text it decodes
those ids back to. The Swift tests read these files; they never run Python.
"""
import json
import os
import random

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tokenizers")
# DeepSeek-V3's tokenizer.json: three isolating Splits in sequence (digits in threes, CJK runs,
# then words and punctuation).
DEEPSEEK_PATTERNS = [r"\p{N}{1,3}", "[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+",
                     r"[!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"]
# GPT-OSS's (tiktoken's o200k): case-aware words with contractions, digits in threes.
O200K_PATTERN = "|".join([
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"\p{N}{1,3}", r" ?[^\s\p{L}\p{N}]+[\r\n/]*", r"\s*[\r\n]+", r"\s+(?!\S)", r"\s+"])
QWEN_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

CORPUS = [
    "The quick brown fox jumps over the lazy dog.", "Mixture-of-experts layers route each token to a few experts.",
    "All-to-all exchanges move tokens between ranks; the combine brings them back.", "It's 3.14159 and 2718 and 1000000.",
    "Données, straße, café, naïve — déjà vu!", "Привет, как дела? Всё хорошо.", "東京は日本の首都です。", "안녕하세요 세계",
    "emoji: 🙂🚀✨ and symbols ∑ ≤ ≥ → ←", "tabs\tand\nnewlines\r\nand   runs   of    spaces", "def forward(x): return x @ W + b",
    "I'm sure they'll say we'd've done it, you're right.", "MPI_Alltoallv(sendbuf, counts, displs, MPI_FLOAT, ...)",
] * 40


def cases():
    random.seed(7)
    pieces = ["hello", "world", " ", "  ", "\n", "\t", "42", "007", "3.5", "🙂", "🚀", "é", "ß", "東京", "привет", "'s", "'ll",
              "MoE", "expert", "tokens", "!!", "?", "—", "∑", "a", "Z", "x9", "__init__", "\r\n", "    "]
    strings = list(dict.fromkeys(CORPUS))
    strings += ["", " ", "   leading", "trailing   ", "\n\n", "a  b   c    d", "1234567890", "½ ¾ ⅓", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "ﬁ ligature",
                "zero\u200bwidth", "e\u0301 combining", "Ω≈ç√∫", "🏳️‍🌈 flag", "👩‍👩‍👧 family", "tab\tsep\tvalues"]
    while len(strings) < 300:
        strings.append("".join(random.choice(pieces) for _ in range(random.randint(1, 12))))
    return strings


def byte_level(patterns=(QWEN_PATTERN,)):
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(pattern), behavior="isolated") for pattern in patterns]
        + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=["<|endoftext|>"])
    tokenizer.train_from_iterator(CORPUS, trainer)
    return tokenizer


def sentencepiece():
    tokenizer = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>", fuse_unk=True))
    tokenizer.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tokenizer.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    specials = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=specials)
    tokenizer.train_from_iterator(CORPUS, trainer)
    return tokenizer


def main():
    kinds = [("byte_level", byte_level()), ("sentencepiece", sentencepiece()),
             ("byte_level_deepseek", byte_level(DEEPSEEK_PATTERNS)), ("byte_level_o200k", byte_level([O200K_PATTERN]))]
    for name, tokenizer in kinds:
        folder = os.path.join(ROOT, name)
        os.makedirs(folder, exist_ok=True)
        tokenizer.save(os.path.join(folder, "tokenizer.json"))
        records = []
        for text in cases():
            ids = tokenizer.encode(text, add_special_tokens=False).ids
            records.append({"text": text, "ids": ids, "decoded": tokenizer.decode(ids, skip_special_tokens=False)})
        with open(os.path.join(folder, "cases.json"), "w", encoding="utf-8") as file:
            json.dump(records, file, ensure_ascii=False, indent=0)
        print(name, tokenizer.get_vocab_size(), len(records))


if __name__ == "__main__":
    main()
