#!/usr/bin/env python3
"""Writes tests/data/goldens/tokenizer_*.json: token ids and decoded text from independent
references, checked exactly by tests/unit/test_tokenizer.cc.

Oracles:
  llama3, qwen3          HF `tokenizers` (Tokenizer.from_file on shared/tokenizers/*/tokenizer.json)
  llama2 tokenizer.model transformers LlamaTokenizerFast (legacy, converted from the .model) for
                         ids; `sentencepiece` cross-checks the ids of texts without special strings
  stories260K.gguf       `sentencepiece` run on a ModelProto rebuilt from the GGUF vocab (read with
                         the `gguf` package); control tokens split out llama.cpp-style

Usage: python3 tools/scripts/make_tokenizer_goldens.py [--shared /work/shared]
"""
import argparse
import json
import os

CORPUS = [
    "",
    "Hello world",
    "Hello, world! How are you doing today?",
    " leading space",
    "   three leading spaces and trailing   ",
    "multiple   spaces\tand\ttabs\n\nnewlines\r\n windows\n\n\n",
    "The year 2024 had 366 days; pi ~ 3.14159265358979.",
    "1234567890 12 123 1234 12345",
    "Café naïve façade résumé Ångström jalapeño über",
    "日本語のテキストと中文文本，还有한국어 텍스트.",
    "Emoji: 😀🎉👍🏽 family 👨‍👩‍👧‍👦 flag 🇫🇷 heart ❤️",
    "def f(x):\n    return x ** 2  # square\n\nprint(f(3))\n",
    "for (int i = 0; i < n; ++i) { sum += a[i]; }",
    "<|eot_id|> looks special <|begin_of_text|>",
    "<s>[INST] hi [/INST] ok </s>",
    "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n",
    "I'm sure they'll say it's what we've DONE, isn't it? I'D say YOU'RE right.",
    "Ünïcödé mixed ASCII … “quotes” — dashes – and ‘single’",
    "a\u00a0non-breaking\u3000ideographic space",
    "\n",
    " ",
    "  \n  \t ",
    "x" * 300,
    "https://example.com/path?query=1&b=2#frag",
    "Ελληνικά и русский текст, עברית, العربية",
    "decomposed: e\u0301te\u0301 A\u030a n\u0303 \u1100\u1161\u11a8 q\u0323\u0307 o\u0308\u0304",
    "tabs\t\tand\u000bvertical\u000cfeed\u0085nel\u2028line",
    "hello<|eot_id|>world<|eot_id|><|eot_id|>  <|im_end|>\n",
    "</s></s>x<s> <s>  y",
    "Numbers: ١٢٣ ½ ² Ⅻ 1,000,000.00",
]


def essay(shared):
    d = os.path.join(shared, "data", "needle", "PaulGrahamEssays")
    names = sorted(os.listdir(d))
    with open(os.path.join(d, names[0]), encoding="utf-8") as f:
        text = f.read()
    return text[:3000]


def write(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, separators=(",", ":"))
    print(path, os.path.getsize(path), "bytes")


def hf_golden(shared, name, out_dir, corpus):
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(shared, "tokenizers", name, "tokenizer.json"))
    cases = []
    for text in corpus:
        ids_sp = tok.encode(text, add_special_tokens=True).ids
        ids = tok.encode(text, add_special_tokens=False).ids
        cases.append({
            "text": text, "ids": ids, "ids_special": ids_sp,
            "decoded": tok.decode(ids_sp, skip_special_tokens=False),
            "decoded_skip": tok.decode(ids_sp, skip_special_tokens=True),
        })
    write(os.path.join(out_dir, f"tokenizer_{name}.json"), {
        "oracle": "HF tokenizers " + __import__("tokenizers").__version__,
        "kind": "hf_json", "tokenizer": f"tokenizers/{name}/tokenizer.json",
        "config": f"tokenizers/{name}/tokenizer_config.json", "cases": cases})


def split_specials(text, specials):
    """llama.cpp / HF-legacy: split on special strings (leftmost, longest)."""
    out, i, start = [], 0, 0
    specials = sorted(specials, key=len, reverse=True)
    while i < len(text):
        hit = next((s for s in specials if text.startswith(s, i)), None)
        if hit is None:
            i += 1
            continue
        if i > start:
            out.append(text[start:i])
        out.append((hit,))
        i += len(hit)
        start = i
    if start < len(text):
        out.append(text[start:])
    return out


def spm_encode(sp, text, specials):
    ids = []
    for part in split_specials(text, list(specials)):
        if isinstance(part, tuple):
            ids.append(specials[part[0]])
        else:
            ids.extend(sp.encode(part))
    return ids


def llama2_golden(shared, out_dir, corpus):
    import sentencepiece as spm
    path = os.path.join(shared, "tokenizers", "llama2-sentencepiece", "tokenizer.model")
    sp = spm.SentencePieceProcessor(model_file=path)
    specials = {sp.id_to_piece(i): i for i in (sp.unk_id(), sp.bos_id(), sp.eos_id())}
    fast = None
    try:
        from transformers import LlamaTokenizer
        fast = LlamaTokenizer.from_pretrained(os.path.dirname(path))
    except Exception as e:  # transformers is optional; sentencepiece alone is the oracle then
        print("transformers unavailable:", e)
    cases = []
    for text in corpus:
        ids = spm_encode(sp, text, specials)
        if not any(s in text for s in specials):
            assert ids == sp.encode(text), text
        # transformers 5 treats text after a special token non-legacy (no "▁" prepended), so it
        # only cross-checks texts without special strings.
        if fast is not None and not any(s in text for s in specials):
            hf = fast.encode(text, add_special_tokens=False)
            if hf != ids:
                print("  transformers differs:", repr(text[:40]), hf[:8], ids[:8])
        ids_sp = [sp.bos_id()] + ids
        case = {"text": text, "ids": ids, "ids_special": ids_sp,
                "decoded_skip": sp.decode([i for i in ids_sp if i not in specials.values()])}
        cases.append(case)
    write(os.path.join(out_dir, "tokenizer_llama2_spm.json"), {
        "oracle": "sentencepiece " + spm.__version__ + (" (ids cross-checked with transformers LlamaTokenizer)" if fast else ""),
        "kind": "sentencepiece", "tokenizer": "tokenizers/llama2-sentencepiece/tokenizer.model",
        "cases": cases})


def llama2c_encode(tok_bin, text):
    """llama2.c's encode() (run.c) on its tok512.bin: dummy prefix, code points, byte fallback
    (+3), then repeatedly merge the adjacent pair whose concatenation scores best (leftmost)."""
    import struct
    with open(tok_bin, "rb") as f:
        data = f.read()
    (max_len,), off, vocab, scores = struct.unpack_from("i", data), 4, [], []
    while off < len(data):
        sc, n = struct.unpack_from("fi", data, off)
        vocab.append(data[off + 8:off + 8 + n])
        scores.append(sc)
        off += 8 + n
    index = {v: i for i, v in enumerate(vocab)}
    ids = []
    if text:
        ids.append(index[b" "])
    for ch in text:
        b = ch.encode("utf-8")
        if b in index:
            ids.append(index[b])
        else:
            ids.extend(x + 3 for x in b)
    while True:
        best, best_i = -1e10, -1
        for i in range(len(ids) - 1):
            j = index.get(vocab[ids[i]] + vocab[ids[i + 1]])
            if j is not None and scores[j] > best:
                best, best_i = scores[j], i
        if best_i < 0:
            return ids
        ids[best_i:best_i + 2] = [index[vocab[ids[best_i]] + vocab[ids[best_i + 1]]]]


def stories_golden(shared, out_dir, corpus):
    import gguf
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb
    path = os.path.join(shared, "models", "stories260K", "stories260K.gguf")
    r = gguf.GGUFReader(path)
    f = r.fields
    toks = [bytes(f["tokenizer.ggml.tokens"].parts[i]).decode("utf-8") for i in f["tokenizer.ggml.tokens"].data]
    scores = [float(f["tokenizer.ggml.scores"].parts[i][0]) for i in f["tokenizer.ggml.scores"].data]
    types = [int(f["tokenizer.ggml.token_type"].parts[i][0]) for i in f["tokenizer.ggml.token_type"].data]
    m = pb.ModelProto()
    for t, s, ty in zip(toks, scores, types):
        p = m.pieces.add()
        p.piece, p.score, p.type = t, s, ty
    m.trainer_spec.model_type = pb.TrainerSpec.BPE
    m.trainer_spec.byte_fallback = True
    m.trainer_spec.unk_id, m.trainer_spec.bos_id, m.trainer_spec.eos_id, m.trainer_spec.pad_id = 0, 1, 2, -1
    m.normalizer_spec.name = "identity"
    m.normalizer_spec.add_dummy_prefix = True
    m.normalizer_spec.remove_extra_whitespaces = False
    m.normalizer_spec.escape_whitespaces = True
    sp = spm.SentencePieceProcessor(model_proto=m.SerializeToString())
    specials = {t: i for i, (t, ty) in enumerate(zip(toks, types)) if ty in (2, 3, 4)}
    cases, n_llama2c = [], [0]
    for text in corpus:
        ids = spm_encode(sp, text, specials)
        if not any(s in text for s in specials) and len(text) < 400:
            ref = llama2c_encode(os.path.join(shared, "models", "stories260K", "tok512.bin"), text)
            assert ref == ids, (text, ref, ids)
            n_llama2c[0] += 1
        ids_sp = [1] + ids
        cases.append({"text": text, "ids": ids, "ids_special": ids_sp,
                      "decoded_skip": sp.decode([i for i in ids_sp if i not in specials.values()])})
    write(os.path.join(out_dir, "tokenizer_stories260K_gguf.json"), {
        "oracle": "sentencepiece " + spm.__version__ + " on the GGUF vocab (gguf " + gguf.__version__ + ")"
        if hasattr(gguf, "__version__") else "sentencepiece on the GGUF vocab",
        "kind": "gguf", "tokenizer": "models/stories260K/stories260K.gguf",
        "vocab_size": len(toks), "cases": cases})
    print("  stories260K: %d cases also equal llama2.c's encode on tok512.bin" % n_llama2c[0])


def tiny_golden(shared, out_dir, corpus, variant):
    """A small SentencePiece-style BPE tokenizer.json trained here with HF `tokenizers` (so the
    tokenizer itself fits in the golden), in the Llama-2/Mistral "legacy" layout (Prepend+Replace
    normalizer, "a b" merges) or the newer one (Metaspace prepend_scheme=first, [a, b] merges).
    Added tokens exercise lstrip/rstrip/single_word/normalized."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    if variant == "legacy":
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    else:
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=[], limit_alphabet=120, show_progress=False)
    d = os.path.join(shared, "data", "needle", "PaulGrahamEssays")
    files = [os.path.join(d, n) for n in sorted(os.listdir(d))[:8]]
    tok.train(files, trainer)
    j = json.loads(tok.to_str())
    n = max(j["model"]["vocab"].values()) + 1
    for b in range(256):
        j["model"]["vocab"]["<0x%02X>" % b] = n + b
    if variant != "legacy":
        j["model"]["merges"] = [m.split(" ") if isinstance(m, str) else m for m in j["model"]["merges"]]
    else:
        j["model"]["merges"] = [" ".join(m) if isinstance(m, list) else m for m in j["model"]["merges"]]
    tok = Tokenizer.from_str(json.dumps(j))
    tok.add_special_tokens([AddedToken("<tool>", lstrip=True, rstrip=True, normalized=False, special=True)])
    tok.add_tokens([AddedToken("magic", single_word=True, normalized=True),
                    AddedToken("<|x|>", normalized=False)])
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
    extra = ["a <tool> b", "x  <tool>  y", "magic magical magic, amagic", "hi<|x|>there <|x|> ",
             "\u00e9t\u00e9 \U0001F600 ~ \u4e2d\u6587 zz"]
    cases = []
    for text in corpus + extra:
        ids_sp = tok.encode(text, add_special_tokens=True).ids
        cases.append({"text": text, "ids": tok.encode(text, add_special_tokens=False).ids,
                      "ids_special": ids_sp,
                      "decoded": tok.decode(ids_sp, skip_special_tokens=False),
                      "decoded_skip": tok.decode(ids_sp, skip_special_tokens=True)})
    write(os.path.join(out_dir, f"tokenizer_tiny_spm_{variant}.json"), {
        "oracle": "HF tokenizers " + __import__("tokenizers").__version__, "kind": "hf_json_inline",
        "tokenizer_json": tok.to_str(), "cases": cases})


def nfc_tables(path):
    """src/tokenizer/nfc_tables.inc: canonical combining classes, full canonical decompositions
    and primary compositions from Python's unicodedata (for the NFC normalizer)."""
    import sys
    import unicodedata as ud
    ccc, dec, comp = [], [], []
    for cp in range(0x110000):
        c = chr(cp)
        if 0xAC00 <= cp <= 0xD7A3:
            continue  # Hangul syllables are algorithmic
        if ud.combining(c):
            ccc.append((cp, ud.combining(c)))
        d = ud.normalize("NFD", c)
        if d != c:
            dec.append((cp, [ord(x) for x in d]))
        raw = ud.decomposition(c)
        if raw and not raw.startswith("<"):
            parts = [int(x, 16) for x in raw.split()]
            if len(parts) == 2 and ud.normalize("NFC", chr(parts[0]) + chr(parts[1])) == c:
                comp.append((parts[0], parts[1], cp))
    with open(path, "w") as f:
        f.write("// Generated by tools/scripts/make_tokenizer_goldens.py --nfc-tables (Unicode %s).\n"
                % ud.unidata_version)
        f.write("static const uint32_t kCcc[][2] = {\n")
        f.write(",".join("{0x%X,%d}" % x for x in ccc) + "};\n")
        pool = []
        f.write("static const uint32_t kDecomp[][3] = {\n")
        rows = []
        for cp, d in dec:
            rows.append("{0x%X,%d,%d}" % (cp, len(pool), len(d)))
            pool.extend(d)
        f.write(",".join(rows) + "};\n")
        f.write("static const uint32_t kDecompPool[] = {\n" + ",".join("0x%X" % x for x in pool) + "};\n")
        comp.sort()
        f.write("static const uint32_t kComp[][3] = {\n")
        f.write(",".join("{0x%X,0x%X,0x%X}" % x for x in comp) + "};\n")
    print(path, len(ccc), len(dec), len(comp))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=os.environ.get("FKV_SHARED_DIR", "/work/shared"))
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "..", "tests", "data", "goldens"))
    ap.add_argument("--nfc-tables", action="store_true", help="also regenerate src/tokenizer/nfc_tables.inc")
    a = ap.parse_args()
    if a.nfc_tables:
        nfc_tables(os.path.join(os.path.dirname(__file__), "..", "..", "src", "tokenizer", "nfc_tables.inc"))
    corpus = CORPUS + [essay(a.shared)]
    os.makedirs(a.out, exist_ok=True)
    hf_golden(a.shared, "llama3", a.out, corpus)
    hf_golden(a.shared, "qwen3", a.out, corpus)
    llama2_golden(a.shared, a.out, corpus)
    stories_golden(a.shared, a.out, corpus)
    tiny_golden(a.shared, a.out, corpus, "legacy")
    tiny_golden(a.shared, a.out, corpus, "metaspace")


if __name__ == "__main__":
    main()
