#!/usr/bin/env python3
"""Expected values of the evaluation metrics, computed with the official Python packages.

Reads tests/data/goldens/eval/metric_cases.json (hand-written cases: English, Chinese, edge cases)
and writes tests/data/goldens/eval/metric_goldens.json, which tests/unit/test_eval_metrics.cc
compares fastkv's C++ metrics against.

The LongBench scorers below restate LongBench's metrics.py from its documented behaviour; the
heavy lifting is done by the packages LongBench itself uses:
  pip install rouge==1.0.1 fuzzywuzzy==0.18.0 jieba==0.42.1
(fuzzywuzzy WITHOUT python-Levenshtein, so fuzz.ratio runs on difflib.SequenceMatcher, as the
LongBench requirements install it.)
"""
import json
import os
import re
import string
import sys
from collections import Counter

import jieba
from fuzzywuzzy import fuzz
from rouge import Rouge

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CASES = os.path.join(ROOT, "tests/data/goldens/eval/metric_cases.json")
OUT = os.path.join(ROOT, "tests/data/goldens/eval/metric_goldens.json")

CN_PUNCT = ("！？｡。＂＃＄％＆＇（）＊＋，－／：；＜＝＞＠［＼］＾＿｀｛｜｝～｟｠｢｣､、〃》「」『』【】〔〕〖〗"
            "〘〙〚〛〜〝〞〟〰〾〿–—‘’‛“”„‟…‧﹏.")


def normalize_answer(s):
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def normalize_zh_answer(s):
    s = s.lower()
    punct = set(string.punctuation + CN_PUNCT)
    s = "".join(ch for ch in s if ch not in punct)
    return "".join(s.split())


def f1_tokens(pred, truth):
    common = Counter(pred) & Counter(truth)
    same = sum(common.values())
    if same == 0:
        return 0
    p = 1.0 * same / len(pred)
    r = 1.0 * same / len(truth)
    return (2 * p * r) / (p + r)


def qa_f1(pred, gt):
    return f1_tokens(normalize_answer(pred).split(), normalize_answer(gt).split())


def qa_f1_zh(pred, gt):
    p = [normalize_zh_answer(t) for t in jieba.cut(pred, cut_all=False)]
    g = [normalize_zh_answer(t) for t in jieba.cut(gt, cut_all=False)]
    return f1_tokens([t for t in p if t], [t for t in g if t])


def rouge_score(pred, gt):
    try:
        scores = Rouge().get_scores([pred], [gt], avg=True)
    except Exception:  # LongBench: bare except -> 0.0
        return 0.0
    return scores["rouge-l"]["f"]


def rouge_zh(pred, gt):
    return rouge_score(" ".join(jieba.cut(pred, cut_all=False)),
                       " ".join(jieba.cut(gt, cut_all=False)))


def code_sim(pred, gt):
    chosen = ""
    for line in pred.lstrip("\n").split("\n"):
        if "`" not in line and "#" not in line and "//" not in line:
            chosen = line
            break
    return fuzz.ratio(chosen, gt) / 100


def classification(pred, gt, classes):
    matched = [c for c in classes if c in pred]
    for term in matched:  # removing while iterating, as the original does
        if term in gt and term != gt:
            matched.remove(term)
    return 1.0 / len(matched) if gt in matched else 0.0


def count(pred, gt):
    nums = re.findall(r"\d+", pred)
    right = sum(1 for n in nums if str(n) == str(gt))
    return 0.0 if not nums else float(right / len(nums))


def retrieval(pred, gt, pattern):
    gt_id = re.findall(pattern, gt)[0]
    nums = re.findall(r"\d+", pred)
    right = sum(1 for n in nums if str(n) == str(gt_id))
    return 0.0 if not nums else float(right / len(nums))


def string_match_all(pred, refs):  # RULER, after its postprocess_pred
    pred = re.sub(r"[\x00-\x1f]", "\n", pred.strip()).strip()
    return sum(1.0 if r.lower() in pred.lower() else 0.0 for r in refs) / len(refs)


def needle(pred, answer):  # share of the expected answer's words in the response
    def words(t):
        t = t.lower()
        return "".join(" " if ch in string.punctuation else ch for ch in t).split()
    exp, got = words(answer), set(words(pred))
    return sum(1 for w in exp if w in got) / len(exp) if exp else 0.0


def main():
    cases = json.load(open(CASES, encoding="utf-8"))["cases"]
    out = []
    for c in cases:
        m = c["metric"]
        e = dict(c)
        if m == "jieba_cut":
            e["expected_tokens"] = list(jieba.cut(c["text"], cut_all=False))
        elif m == "string_match_all":
            e["expected"] = string_match_all(c["prediction"], c["references"])
        else:
            p, g = c["prediction"], c["ground_truth"]
            fn = {"qa_f1": lambda: qa_f1(p, g), "qa_f1_zh": lambda: qa_f1_zh(p, g),
                  "rouge": lambda: rouge_score(p, g), "rouge_zh": lambda: rouge_zh(p, g),
                  "code_sim": lambda: code_sim(p, g),
                  "classification": lambda: classification(p, g, c["all_classes"]),
                  "count": lambda: count(p, g),
                  "retrieval": lambda: retrieval(p, g, r"Paragraph (\d+)"),
                  "retrieval_zh": lambda: retrieval(p, g, r"段落(\d+)"),
                  "needle": lambda: needle(p, g)}[m]
            e["expected"] = float(fn())
            if m == "code_sim":
                e["expected_fuzz_ratio"] = fuzz.ratio(p, g)
        out.append(e)
    with open(OUT + ".tmp", "w", encoding="utf-8") as f:
        json.dump({"generator": "tools/scripts/make_metric_goldens.py",
                   "packages": {"rouge": "1.0.1", "fuzzywuzzy": "0.18.0 (difflib backend)",
                                "jieba": jieba.__version__},
                   "cases": out}, f, ensure_ascii=False, indent=1)
    os.replace(OUT + ".tmp", OUT)
    print(f"wrote {len(out)} cases to {os.path.relpath(OUT, ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
