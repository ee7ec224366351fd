#!/usr/bin/env python3
"""End-to-end tests of `fastkv serve` with real clients, on loopback only.

- the official `openai` package: completions and chat, streaming and not, usage, logprobs,
  /v1/models, per-request kv_compression (object and spec string);
- raw HTTP for bad input (malformed JSON, wrong types, unknown method options, prompt over the
  context, absurd max_tokens, API key, oversized body, n > 1): 4xx OpenAI-style errors, and a
  stream running meanwhile is not disturbed;
- outputs equal `fastkv generate` with the same options, alone and batched with others, greedy
  and seeded sampling;
- admission: queue full -> 503, a request over --kv-memory -> 400, --kv-memory never exceeded;
  a client that disconnects is cancelled and its sequence freed; SIGTERM finishes in-flight
  requests and exits 0;
- a bounded load test: 8 concurrent clients x 50 requests, no error, outputs equal the CLI's,
  server RSS stable within 5% between the second and the last tenth.

Usage: test_serve.py FASTKV_BINARY. Prints one PASS/FAIL line per test and a closing
"serve tests: N passed, M failed" line; exit status 1 when any failed.
"""
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback

import openai

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STORIES = os.path.join(ROOT, "..", "shared", "models", "stories260K", "stories260K.gguf")
SMOLLM = os.path.join(
    os.environ.get("FASTKV_MODEL_DIR", os.path.expanduser("~/.cache/fastkv/models")),
    "SmolLM2-135M-Instruct.Q4_1.gguf")
API_KEY = "test-key-123"
ENV = dict(os.environ)
FASTKV = None


class Server:
    """One `fastkv serve` process on 127.0.0.1 with a port the OS picks (--port 0)."""

    def __init__(self, model, *extra):
        self.log_path = f"/tmp/fastkv_serve_test_{os.getpid()}_{id(self)}.log"
        self.log = open(self.log_path, "w+")
        self.proc = subprocess.Popen(
            [FASTKV, "serve", "--model", model, "--port", "0", "--threads", "2", *extra],
            stdout=self.log, stderr=self.log, env=ENV)
        self.port = None
        deadline = time.time() + 30
        while time.time() < deadline and self.port is None:
            if self.proc.poll() is not None:
                raise RuntimeError("server exited: " + open(self.log_path).read())
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", open(self.log_path).read())
            if m:
                self.port = int(m.group(1))
            else:
                time.sleep(0.05)
        if self.port is None:
            self.stop()
            raise RuntimeError("server did not start: " + open(self.log_path).read())

    def url(self):
        return f"http://127.0.0.1:{self.port}/v1"

    def client(self, key=API_KEY):
        return openai.OpenAI(base_url=self.url(), api_key=key, max_retries=0, timeout=120)

    def request(self, method, path, body=None, headers=None, raw=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        h = {"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"}
        h.update(headers or {})
        data = raw if raw is not None else (json.dumps(body) if body is not None else None)
        conn.request(method, path, body=data, headers=h)
        r = conn.getresponse()
        text = r.read().decode("utf-8", "replace")
        conn.close()
        return r.status, text

    def metrics(self):
        status, text = self.request("GET", "/metrics")
        assert status == 200, status
        out = {}
        for line in text.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
        return out

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


def cli_generate(model, prompt, max_tokens, *, chat=False, method=None, temperature=0.0, seed=None,
                 top_p=None, ignore_eos=False):
    cmd = [FASTKV, "generate", "--model", model, "--prompt", prompt, "--max-new-tokens",
           str(max_tokens), "--temperature", str(temperature), "--threads", "2", "--no-stream"]
    if ignore_eos:
        cmd.append("--ignore-eos")
    if chat:
        cmd.append("--chat")
    if method:
        cmd += ["--method", method]
    if seed is not None:
        cmd += ["--seed", str(seed)]
    if top_p is not None:
        cmd += ["--top-p", str(top_p)]
    out = subprocess.run(cmd, capture_output=True, env=ENV, timeout=120)
    assert out.returncode == 0, out.stderr.decode()
    text = out.stdout.decode("utf-8")
    assert text.endswith("\n")
    return text[:-1]


def raw_exchange(port, request_bytes, timeout=10):
    """Sends raw bytes; returns (head, body, seconds to the whole answer)."""
    t0 = time.time()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request_bytes)
        reply = b""
        while True:
            head, sep, body = reply.partition(b"\r\n\r\n")
            m = re.search(rb"Content-Length: (\d+)", head)
            if sep and m and len(body) >= int(m.group(1)):
                break
            chunk = sock.recv(65536)
            assert chunk, reply
            reply += chunk
    head, _, body = reply.decode("utf-8", "replace").partition("\r\n\r\n")
    return head, body, time.time() - t0


def check_error(status, text, want_status, want_in=None, param=None):
    assert status == want_status, (status, text)
    body = json.loads(text)
    err = body["error"]
    assert isinstance(err["message"], str) and err["message"], body
    assert "type" in err and "param" in err and "code" in err, body
    if want_in:
        assert want_in in err["message"], (want_in, err["message"])
    if param is not None:
        assert err["param"] == param, (param, err)


TESTS = []


def test(fn):
    TESTS.append(fn)
    return fn


STORY_PROMPTS = ["Once upon a time", "The little dog", "Lily and Ben went to the park",
                 "One day, a big bird", "Tom had a red ball"]


# ---------------------------------------------------------------- stories260K server tests

@test
def completions_match_cli(s):
    c = s.client()
    for i, prompt in enumerate(STORY_PROMPTS[:3]):
        want = cli_generate(STORIES, prompt, 24)
        r = c.completions.create(model="stories260K", prompt=prompt, max_tokens=24, temperature=0)
        assert r.choices[0].text == want, (r.choices[0].text, want)
        assert r.choices[0].finish_reason in ("length", "stop")
        assert r.usage.completion_tokens <= 24 and r.usage.prompt_tokens > 0
        extra = r.usage.model_extra
        assert extra["kv_method"] == "fullkv" and extra["kv_cache_bytes"] > 0
        assert extra["prefill_seconds"] >= 0 and extra["decode_seconds"] >= 0
        # Streaming gives the same text, then [DONE] (the client stops on it).
        pieces, finish, usage = [], None, None
        for chunk in c.completions.create(model="stories260K", prompt=prompt, max_tokens=24,
                                          temperature=0, stream=True,
                                          stream_options={"include_usage": True}):
            if chunk.choices:
                pieces.append(chunk.choices[0].text)
                finish = chunk.choices[0].finish_reason or finish
            if chunk.usage:
                usage = chunk.usage
        assert "".join(pieces) == want, ("".join(pieces), want)
        assert finish in ("length", "stop") and usage is not None
        assert usage.completion_tokens == r.usage.completion_tokens


@test
def models_and_health(s):
    models = s.client().models.list()
    assert [m.id for m in models.data] == ["stories260K.gguf"], models
    assert s.client().models.retrieve("stories260K.gguf").id == "stories260K.gguf"
    try:
        s.client().models.retrieve("gpt-4")
        raise AssertionError("an unknown model id was retrieved")
    except openai.NotFoundError as e:
        assert "is not served here" in str(e), e
    # The auth scheme is case-insensitive (RFC 7235); the key is not.
    status, _ = s.request("GET", "/v1/models", headers={"Authorization": f"bearer {API_KEY}"})
    assert status == 200, status
    status, _ = s.request("GET", "/v1/models", headers={"Authorization": f"Bearer {API_KEY}x"})
    assert status == 401, status
    # The right path with the wrong method: 405 with Allow.
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=30)
    conn.request("GET", "/v1/completions", headers={"Authorization": f"Bearer {API_KEY}"})
    r = conn.getresponse()
    text = r.read().decode()
    conn.close()
    assert r.status == 405 and r.getheader("Allow") == "POST", (r.status, r.getheaders())
    check_error(r.status, text, 405, "takes POST")
    status, text = s.request("GET", "/health")
    assert status == 200 and json.loads(text)["status"] == "ok"
    m = s.metrics()
    for name in ["fastkv_queue_depth", "fastkv_running_sequences", "fastkv_kv_bytes_in_use",
                 "fastkv_decode_tokens_per_second", "fastkv_prefill_seconds_total",
                 "fastkv_decode_seconds_total", 'fastkv_http_requests_total{outcome="ok"}']:
        assert name in m, name


@test
def kv_compression_per_request_matches_cli(s):
    c = s.client()
    prompt = " ".join(STORY_PROMPTS) * 3
    full = c.completions.create(model="m", prompt=prompt, max_tokens=16, temperature=0)
    for spec, obj in [("fastkv:tsp_rate=0.3,retain_rate=0.2",
                       {"method": "fastkv", "tsp_rate": 0.3, "retain_rate": 0.2}),
                      ("snapkv:kv_budget=24", {"method": "snapkv", "kv_budget": 24}),
                      ("pyramidinfer:retain_rate=0.5", None)]:
        want = cli_generate(STORIES, prompt, 16, method=spec)
        for form in ([spec, obj] if obj else [spec]):
            r = c.completions.create(model="m", prompt=prompt, max_tokens=16, temperature=0,
                                     extra_body={"kv_compression": form})
            assert r.choices[0].text == want, (spec, r.choices[0].text, want)
            extra = r.usage.model_extra
            assert extra["kv_method"] == spec, extra
            assert extra["kv_cache_bytes"] < full.usage.model_extra["kv_cache_bytes"], (spec, extra)


# Every method the engine has, with options that compress on stories260K's short prompts.
EVERY_METHOD = ["fullkv", "fastkv:tsp_rate=0.3,retain_rate=0.2", "snapkv:retain_rate=0.2",
                "pyramidkv:retain_rate=0.2", "adakv:retain_rate=0.2",
                "streamingllm:retain_rate=0.2", "h2o:retain_rate=0.2",
                "gemfilter:retain_rate=0.2", "pyramidinfer:retain_rate=0.5",
                "keydiff:retain_rate=0.2"]


@test
def every_method_4_at_once_64_tokens_equals_cli(s):
    """Each method: 4 requests at once (2 streaming, 2 not), 64 tokens past EOS, so that
    decode-time hooks run in the batched step (PyramidInfer compacts at step 16 and after); each
    answer equals `fastkv generate` with the same options."""
    c = s.client()
    listed = subprocess.run([FASTKV, "generate", "--help"], capture_output=True, text=True,
                            env=ENV).stdout
    for spec in EVERY_METHOD:
        assert spec.split(":")[0] in listed, (spec, "not in generate --help")
    prompts = [" ".join(STORY_PROMPTS[i:] + STORY_PROMPTS[:i]) * 2 for i in range(4)]
    for spec in EVERY_METHOD:
        want = [cli_generate(STORIES, p, 64, method=spec, ignore_eos=True) for p in prompts]
        got = [None] * 4

        def run(i):
            body = {"kv_compression": spec, "ignore_eos": True}
            if i % 2 == 0:
                r = c.completions.create(model="m", prompt=prompts[i], max_tokens=64,
                                         temperature=0, extra_body=body)
                assert r.usage.completion_tokens == 64, (spec, r.usage)
                got[i] = r.choices[0].text
            else:
                got[i] = "".join(ch.choices[0].text for ch in c.completions.create(
                    model="m", prompt=prompts[i], max_tokens=64, temperature=0, stream=True,
                    extra_body=body))

        threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert got == want, (spec, got, want)
    assert s.proc.poll() is None, "the server died"


@test
def logprobs_completions(s):
    r = s.client().completions.create(model="m", prompt="Once upon a time", max_tokens=6,
                                      temperature=0, logprobs=3)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 6
    for chosen, top in zip(lp.token_logprobs, lp.top_logprobs):
        assert chosen <= 0 and len(top) == 3
        # Greedy: the chosen token is the most likely one.
        assert abs(max(top.values()) - chosen) < 1e-6
    assert "".join(lp.tokens) == r.choices[0].text


@test
def stop_strings(s):
    c = s.client()
    full = c.completions.create(model="m", prompt="Once upon a time", max_tokens=30, temperature=0)
    text = full.choices[0].text
    stop = text[10:14]
    r = c.completions.create(model="m", prompt="Once upon a time", max_tokens=30, temperature=0,
                             stop=[stop, "zzzz"])
    assert r.choices[0].text == text[:text.index(stop)], (r.choices[0].text, stop)
    assert r.choices[0].finish_reason == "stop"
    pieces = [ch.choices[0].text for ch in c.completions.create(
        model="m", prompt="Once upon a time", max_tokens=30, temperature=0, stop=stop,
        stream=True)]
    assert "".join(pieces) == text[:text.index(stop)]


@test
def seeded_sampling_matches_cli(s):
    c = s.client()
    for seed in (1, 7):
        want = cli_generate(STORIES, "The little dog", 20, temperature=0.8, seed=seed, top_p=0.9)
        r = c.completions.create(model="m", prompt="The little dog", max_tokens=20,
                                 temperature=0.8, top_p=0.9, seed=seed)
        assert r.choices[0].text == want, (seed, r.choices[0].text, want)


@test
def batched_equals_alone(s):
    """Eight different requests at once (one decode batch) give what each gives alone."""
    c = s.client()
    reqs = []
    for i in range(8):
        prompt = STORY_PROMPTS[i % len(STORY_PROMPTS)] + (" and" * i)
        kv = [None, "fastkv:tsp_rate=0.3,retain_rate=0.3", "snapkv:kv_budget=16"][i % 3]
        sampling = {"temperature": 0} if i % 2 == 0 else {"temperature": 0.9, "seed": 100 + i}
        reqs.append((prompt, kv, sampling))

    def run(req):
        prompt, kv, sampling = req
        body = {"kv_compression": kv} if kv else {}
        return c.completions.create(model="m", prompt=prompt, max_tokens=300, extra_body=body,
                                    **sampling).choices[0].text

    alone = [run(r) for r in reqs]
    before = s.metrics()
    results = [None] * len(reqs)
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, run(reqs[i])))
               for i in range(len(reqs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == alone, (results, alone)
    after = s.metrics()
    tokens = after["fastkv_generated_tokens_total"] - before["fastkv_generated_tokens_total"]
    steps = after["fastkv_decode_steps_total"] - before["fastkv_decode_steps_total"]
    assert tokens > 1.5 * steps, ("the requests did not share decode steps", tokens, steps)
    for (prompt, kv, sampling), got in zip(reqs[:3], alone[:3]):
        want = cli_generate(STORIES, prompt, 300, method=kv, temperature=sampling["temperature"],
                            seed=sampling.get("seed"))
        assert got == want, (prompt, got, want)


@test
def bad_input_gets_4xx_and_disturbs_nothing(s):
    # A stream runs while the bad requests come in; it must end exactly as it does alone.
    want = cli_generate(STORIES, "Once upon a time", 400)
    got = []
    t = threading.Thread(target=lambda: got.append("".join(
        ch.choices[0].text for ch in s.client().completions.create(
            model="m", prompt="Once upon a time", max_tokens=400, temperature=0, stream=True))))
    t.start()
    cases = [
        (b"{not json", 400, "not valid JSON", None),
        (b"[1, 2]", 400, "JSON object", None),
        (json.dumps({"prompt": 5}).encode(), 400, None, "prompt"),
        (json.dumps({"prompt": "x", "max_tokens": "10"}).encode(), 400, "integer", "max_tokens"),
        (json.dumps({"prompt": "x", "max_tokens": 10 ** 9}).encode(), 400, "context length",
         "max_tokens"),
        (json.dumps({"prompt": "x", "max_tokens": -1}).encode(), 400, None, "max_tokens"),
        (json.dumps({"prompt": "x", "temperature": "hot"}).encode(), 400, None, "temperature"),
        (json.dumps({"prompt": "x", "n": 2}).encode(), 400, "'n' must be 1", "n"),
        (json.dumps({"prompt": "x", "stream": "yes"}).encode(), 400, None, "stream"),
        (json.dumps({"prompt": "x", "kv_compression": {"method": "fastkv", "tsp_ratee": 0.2}})
         .encode(), 400, "tsp_ratee", "kv_compression.tsp_ratee"),
        (json.dumps({"prompt": "x", "kv_compression": {"method": "nosuch"}}).encode(), 400,
         "nosuch", None),
        (json.dumps({"prompt": "x", "kv_compression": "fastkv:tsp_rate=1.5"}).encode(), 400,
         "tsp_rate", None),
        (json.dumps({"prompt": "x", "kv_compression": 3}).encode(), 400, None, "kv_compression"),
        (json.dumps({"prompt": "word " * 3000}).encode(), 400, "context length", "prompt"),
        (json.dumps({"prompt": [1, 2, 999999]}).encode(), 400, "token id", "prompt"),
        (json.dumps({"prompt": ["a", "b"]}).encode(), 400, "one prompt", "prompt"),
        (json.dumps({"prompt": [1.5, 2]}).encode(), 400, "prompt token 0 (1.5) is not a token id",
         "prompt"),
        (json.dumps({"prompt": []}).encode(), 400, "empty array", "prompt"),
        (json.dumps({"prompt": "x", "top_p": 1.5}).encode(), 400, "(0, 1], got 1.5", "top_p"),
        (json.dumps({"prompt": "x", "top_p": 0}).encode(), 400, "(0, 1], got 0", "top_p"),
        (json.dumps({"prompt": "x", "kv_compression": {"method": "fastkv", "tsp_rate": "0.2"}})
         .encode(), 400, "'tsp_rate' must be a number, got \"0.2\"", "kv_compression.tsp_rate"),
        (json.dumps({"prompt": "x", "kv_compression": {"method": "snapkv", "kv_budget": 8.5}})
         .encode(), 400, "must be an integer", "kv_compression.kv_budget"),
        (json.dumps({"prompt": "x", "kv_compression": {"method": "snapkv", "pooling": 1}})
         .encode(), 400, "must be a string", "kv_compression.pooling"),
        (json.dumps({"prompt": "x", "seed": -1}).encode(), 400, None, "seed"),
        (json.dumps({"prompt": "x", "stop": ["a", 3]}).encode(), 400, None, "stop"),
        (json.dumps({"prompt": "x", "logprobs": 50}).encode(), 400, None, "logprobs"),
        # Fields that would change what the output means are refused, not ignored.
        (json.dumps({"prompt": "x", "suffix": "end"}).encode(), 400, "suffix", "suffix"),
        (json.dumps({"prompt": "x", "response_format": {"type": "json_object"}}).encode(), 400,
         "json_object", "response_format.type"),
        (json.dumps({"prompt": "x", "tool_choice": "required"}).encode(), 400, None,
         "tool_choice"),
        (json.dumps({"prompt": "x", "functions": [{"name": "f"}]}).encode(), 400, None,
         "functions"),
        (b"{" + b'"prompt": "' + b"a" * (300 * 1024) + b'"}', 413, "max-body", None),
    ]
    for raw, status, needle, param in cases:
        st, text = s.request("POST", "/v1/completions", raw=raw)
        check_error(st, text, status, needle, param)
    st, text = s.request("POST", "/v1/chat/completions", body={"messages": "hi"})
    check_error(st, text, 400, None, "messages")
    st, text = s.request("POST", "/v1/chat/completions",
                         body={"messages": [{"role": "usr", "content": "hi"}]})
    check_error(st, text, 400, "\"usr\" is not one of", "messages[0].role")
    st, text = s.request("POST", "/v1/chat/completions",
                         body={"messages": [{"role": "user", "content": "hi"}]})
    check_error(st, text, 400, "chat template", "messages")  # stories260K has none
    # A user message without text is a client bug, not an empty turn.
    for content, needle in [(None, "missing or null"), ([], "empty array"),
                            (5, "got 5"), ([{"type": "image_url"}], "parts must be")]:
        st, text = s.request("POST", "/v1/chat/completions",
                             body={"messages": [{"role": "user", "content": content}]})
        check_error(st, text, 400, needle, "messages[0].content")
    # API key: missing, wrong.
    st, text = s.request("POST", "/v1/completions", body={"prompt": "x"},
                         headers={"Authorization": ""})
    check_error(st, text, 401, "missing API key")
    st, text = s.request("POST", "/v1/completions", body={"prompt": "x"},
                         headers={"Authorization": "Bearer wrong"})
    check_error(st, text, 401, "invalid API key")
    # A space inside the token is not the key; trailing spaces are the header's optional white
    # space, not part of its value (RFC 9110 5.5), so "Bearer KEY " is the key.
    st, text = s.request("POST", "/v1/completions", body={"prompt": "x"},
                         headers={"Authorization": f"Bearer {API_KEY} x"})
    check_error(st, text, 401, "invalid API key")
    st, text = s.request("POST", "/v1/completions", body={"prompt": "x", "max_tokens": 1},
                         headers={"Authorization": f"Bearer {API_KEY} "})
    assert st == 200, (st, text)
    try:
        s.client(key="wrong").completions.create(model="m", prompt="x", max_tokens=2)
        raise AssertionError("wrong key accepted")
    except openai.AuthenticationError:
        pass
    st, text = s.request("GET", "/v1/nothing")
    check_error(st, text, 404)
    # A POST without Content-Length (or a chunked body): 411 at once (cpp-httplib alone would read
    # a body until its 30 s read timeout first).
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                     b"Authorization: Bearer " + API_KEY.encode() + b"\r\n\r\n")
        reply = b""
        while b"\r\n\r\n" not in reply or len(reply.partition(b"\r\n\r\n")[2]) < int(
                re.search(rb"Content-Length: (\d+)", reply).group(1)):
            chunk = sock.recv(65536)
            assert chunk, reply
            reply += chunk
    head, _, text = reply.decode("utf-8", "replace").partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 411"), head
    check_error(411, text, 411, "Content-Length")
    # A malformed or oversized Content-Length: answered at once, before any body is read.
    for length, status, needle in [("-1", 400, "not a byte count"), ("12abc", 400, "not a byte"),
                                   ("99999999999999999999", 413, "--max-body"),
                                   ("300000", 413, "--max-body")]:
        head, text, seconds = raw_exchange(
            s.port, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: " +
            length.encode() + b"\r\nAuthorization: Bearer " + API_KEY.encode() + b"\r\n\r\n")
        assert head.startswith(f"HTTP/1.1 {status}"), (length, head)
        check_error(status, text, status, needle)
        assert seconds < 1.0, (length, seconds)
    # OPTIONS / PATCH on a known path: 405 with Allow, as the other wrong methods.
    for method, path, allow in [("OPTIONS", "/v1/completions", "POST"),
                                ("PATCH", "/v1/chat/completions", "POST"),
                                ("OPTIONS", "/health", "GET"),
                                ("OPTIONS", "/v1/models/stories260K.gguf", "GET")]:
        conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=30)
        conn.request(method, path, headers={"Authorization": f"Bearer {API_KEY}"})
        r = conn.getresponse()
        text = r.read().decode()
        conn.close()
        assert r.status == 405 and r.getheader("Allow") == allow, (method, path, r.status)
        check_error(r.status, text, 405, f"takes {allow}")
    t.join()
    assert got == [want], (got, want)
    # The server still answers normally.
    r = s.client().completions.create(model="m", prompt="Once upon a time", max_tokens=5,
                                      temperature=0)
    assert r.choices[0].text == cli_generate(STORIES, "Once upon a time", 5)


@test
def bad_flags_exit_nonzero_naming_the_flag(s):
    del s  # a server of its own per case, none of which may start
    cases = [(["--api-key", ""], "--api-key is empty"), (["--api-key", " k"], "--api-key"),
             (["--model-name", ""], "--model-name"), (["--model-name", "  "], "--model-name"),
             (["--max-connections", "0"], "--max-connections"),
             (["--parallel", "0"], "--parallel"), (["--kv-memory", "12XB"], "--kv-memory"),
             (["--port", "99999"], "--port"), (["--method", "fastkv:tsp_rate=2"], "tsp_rate")]
    for extra, needle in cases:
        r = subprocess.run([FASTKV, "serve", "--model", STORIES, "--port", "0", *extra],
                           capture_output=True, text=True, timeout=60, env=ENV)
        assert r.returncode != 0, (extra, r.returncode, r.stderr[-500:])
        assert needle in r.stderr and "listening" not in r.stderr, (extra, r.stderr[-500:])


@test
def second_server_on_a_used_port_fails_at_start(s):
    r = subprocess.run([FASTKV, "serve", "--model", STORIES, "--port", str(s.port)],
                       capture_output=True, text=True, timeout=60, env=ENV)
    assert r.returncode != 0, r.stderr[-500:]
    assert f"port {s.port} is already in use" in r.stderr, r.stderr[-500:]
    assert "listening" not in r.stderr


@test
def idle_connections_do_not_starve_health(s):
    """500 idle TCP connections open: /health still answers within 1 s, and so does a completion
    (one thread per connection, made on demand; idle ones close after the keep-alive timeout)."""
    socks = []
    try:
        for _ in range(500):
            socks.append(socket.create_connection(("127.0.0.1", s.port), timeout=10))
        time.sleep(0.3)
        t0 = time.time()
        status, text = s.request("GET", "/health")
        assert status == 200 and time.time() - t0 < 1.0, (status, time.time() - t0)
        # A slow client that sent half a request line holds only its own connection.
        socks[0].sendall(b"POST /v1/compl")
        t0 = time.time()
        r = s.client().completions.create(model="m", prompt="Once upon a time", max_tokens=4,
                                          temperature=0)
        assert r.choices[0].text and time.time() - t0 < 5.0, time.time() - t0
    finally:
        for sock in socks:
            sock.close()


@test
def load_8_clients_x_50(s):
    """8 concurrent clients x 50 requests: no error, outputs equal the CLI's, RSS stable."""
    n_clients, per_client, max_tokens = 8, 50, 24
    want = {p: cli_generate(STORIES, p, max_tokens) for p in STORY_PROMPTS}
    errors, rss = [], []
    done = [0]
    lock = threading.Lock()

    def client(ci):
        conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=60)
        for k in range(per_client):
            prompt = STORY_PROMPTS[(ci + k) % len(STORY_PROMPTS)]
            stream = (ci + k) % 2 == 1
            body = json.dumps({"prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
                               "stream": stream})
            try:
                conn.request("POST", "/v1/completions", body=body,
                             headers={"Content-Type": "application/json",
                                      "Authorization": f"Bearer {API_KEY}"})
                r = conn.getresponse()
                data = r.read().decode()
                if r.status != 200:
                    raise AssertionError(f"HTTP {r.status}: {data}")
                if stream:
                    events = [ln[6:] for ln in data.split("\n") if ln.startswith("data: ")]
                    if events[-1] != "[DONE]":
                        raise AssertionError("stream without [DONE]")
                    text = "".join(json.loads(e)["choices"][0]["text"] for e in events[:-1]
                                   if json.loads(e)["choices"])
                else:
                    text = json.loads(data)["choices"][0]["text"]
                if text != want[prompt]:
                    raise AssertionError(f"output differs for {prompt!r}: {text!r}")
            except Exception as e:  # noqa: BLE001 - collected and reported
                with lock:
                    errors.append(repr(e))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=60)
            with lock:
                done[0] += 1
                rss.append(s.rss_kib())
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:5]
    assert done[0] == n_clients * per_client
    m = s.metrics()
    print(f"    load: {m['fastkv_generated_tokens_total'] / m['fastkv_decode_steps_total']:.2f} "
          "sequences per decode step on average")
    tenth = len(rss) // 10
    second = sum(rss[tenth:2 * tenth]) / tenth
    last = sum(rss[-tenth:]) / tenth
    print(f"    load: {len(rss)} requests, RSS 2nd tenth {second:.0f} KiB, last tenth {last:.0f} KiB")
    assert abs(last - second) / second <= 0.05, (second, last)
    m = s.metrics()
    assert m["fastkv_running_sequences"] == 0 and m["fastkv_kv_bytes_reserved"] == 0, m


# ---------------------------------------------------------------- admission (own servers)

def admission_tests():
    results = []

    def run(name, fn):
        t0 = time.time()
        try:
            fn()
            results.append((name, None, time.time() - t0))
        except Exception:  # noqa: BLE001
            results.append((name, traceback.format_exc(), time.time() - t0))

    def queue_full():
        s = Server(STORIES, "--parallel", "1", "--queue", "1")
        try:
            statuses, bodies = [], []
            lock = threading.Lock()

            def one():
                st, text = s.request("POST", "/v1/completions",
                                     body={"prompt": "Once upon a time", "max_tokens": 1500,
                                           "temperature": 0})
                with lock:
                    statuses.append(st)
                    bodies.append(text)

            ts = [threading.Thread(target=one) for _ in range(6)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            assert 503 in statuses and 200 in statuses, statuses
            for st, text in zip(statuses, bodies):
                if st == 503:
                    check_error(st, text, 503, "queue is full")
        finally:
            assert s.stop() == 0

    def kv_memory():
        # stories260K: 5 layers x 4 KV heads x 8 dims x K and V x 2 bytes (f16 cache, the
        # default) = 640 bytes per row.
        limit = 640 * 1200
        s = Server(STORIES, "--kv-memory", str(limit), "--parallel", "4")
        try:
            prompt = "Once upon a time " * 100  # ~500 tokens
            st, text = s.request("POST", "/v1/completions",
                                 body={"prompt": prompt, "max_tokens": 1000, "temperature": 0})
            check_error(st, text, 400, "--kv-memory", "max_tokens")
            # Compressed, the same request fits: what compression buys.
            st, text = s.request("POST", "/v1/completions",
                                 body={"prompt": prompt, "max_tokens": 1000, "temperature": 0,
                                       "kv_compression": "snapkv:kv_budget=64"})
            assert st == 200, text
            # Three fullkv requests that fit one at a time run one after the other, and the
            # reserved bytes never pass the limit.
            peak = [0.0]
            stop = threading.Event()

            def watch():
                while not stop.is_set():
                    peak[0] = max(peak[0], s.metrics()["fastkv_kv_bytes_reserved"])
                    time.sleep(0.01)

            w = threading.Thread(target=watch)
            w.start()
            out = []
            ts = [threading.Thread(target=lambda: out.append(s.request(
                "POST", "/v1/completions",
                body={"prompt": prompt, "max_tokens": 500, "temperature": 0})))
                for _ in range(3)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            stop.set()
            w.join()
            assert [st for st, _ in out] == [200] * 3, out
            assert 0 < peak[0] <= limit, peak
        finally:
            assert s.stop() == 0

    run("queue_full_503", queue_full)
    run("kv_memory_admission", kv_memory)
    return results


# ---------------------------------------------------------------- SmolLM2 (chat template)

def smollm_tests():
    results = []
    if not os.path.exists(SMOLLM):
        print(f"SKIP chat tests: {SMOLLM} not fetched (python3 tools/scripts/fetch_models.py "
              "smollm2-135m-instruct)")
        return results
    s = Server(SMOLLM, "--parallel", "4", "--api-key", API_KEY)

    def run(name, fn):
        t0 = time.time()
        try:
            fn()
            results.append((name, None, time.time() - t0))
        except Exception:  # noqa: BLE001
            results.append((name, traceback.format_exc(), time.time() - t0))

    def chat():
        c = s.client()
        q = "What is the capital of France?"
        want = cli_generate(SMOLLM, q, 12, chat=True)
        r = c.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": q}],
                                      max_tokens=12, temperature=0)
        assert r.choices[0].message.content == want, (r.choices[0].message.content, want)
        assert r.choices[0].message.role == "assistant"
        pieces, role, usage = [], None, None
        for ch in c.chat.completions.create(model="smollm2",
                                            messages=[{"role": "user", "content": q}],
                                            max_tokens=12, temperature=0, stream=True,
                                            stream_options={"include_usage": True}):
            if ch.choices:
                role = role or ch.choices[0].delta.role
                pieces.append(ch.choices[0].delta.content or "")
            if ch.usage:
                usage = ch.usage
        assert "".join(pieces) == want and role == "assistant" and usage.completion_tokens > 0
        # kv_compression on chat, matching the CLI with the same spec.
        spec = "fastkv:tsp_rate=0.5,retain_rate=0.5"
        want = cli_generate(SMOLLM, q, 12, chat=True, method=spec)
        r = c.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": q}],
                                      max_tokens=12, temperature=0,
                                      extra_body={"kv_compression": spec})
        assert r.choices[0].message.content == want
        r = c.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": q}],
                                      max_tokens=4, temperature=0, logprobs=True, top_logprobs=2)
        assert len(r.choices[0].logprobs.content) >= 1
        assert len(r.choices[0].logprobs.content[0].top_logprobs) == 2

    def disconnect():
        for stream in (True, False):
            before = s.metrics()["fastkv_sequences_cancelled_total"]
            sock = socket.create_connection(("127.0.0.1", s.port), timeout=30)
            body = json.dumps({"messages": [{"role": "user", "content": "Tell me a long story."}],
                               "max_tokens": 1500, "temperature": 0, "stream": stream,
                               "ignore_eos": True})
            sock.sendall((f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                          f"Authorization: Bearer {API_KEY}\r\n"
                          f"Content-Type: application/json\r\n"
                          f"Content-Length: {len(body)}\r\n\r\n{body}").encode())
            if stream:
                got = b""
                while got.count(b"data: ") < 3:
                    got += sock.recv(4096)
            else:
                t0 = time.time()
                while s.metrics()["fastkv_running_sequences"] == 0:
                    assert time.time() - t0 < 20
                    time.sleep(0.02)
            sock.close()
            t0 = time.time()
            while time.time() - t0 < 5:
                m = s.metrics()
                if (m["fastkv_sequences_cancelled_total"] > before
                        and m["fastkv_running_sequences"] == 0):
                    break
                time.sleep(0.02)
            m = s.metrics()
            assert m["fastkv_sequences_cancelled_total"] > before, (stream, m)
            assert m["fastkv_running_sequences"] == 0 and m["fastkv_kv_bytes_reserved"] == 0, m
            print(f"    disconnect (stream={stream}): sequence freed {time.time() - t0:.2f} s "
                  "after the client left")

    def sigterm():
        q = "Name three colours."
        want = cli_generate(SMOLLM, q, 40, chat=True)
        got = []
        started = threading.Event()

        def stream():
            pieces = []
            for ch in s.client().chat.completions.create(
                    model="m", messages=[{"role": "user", "content": q}], max_tokens=40,
                    temperature=0, stream=True):
                started.set()
                if ch.choices:
                    pieces.append(ch.choices[0].delta.content or "")
            got.append("".join(pieces))

        t = threading.Thread(target=stream)
        t.start()
        assert started.wait(30), "the stream did not start"
        s.proc.send_signal(signal.SIGTERM)
        time.sleep(0.05)
        try:
            st, text = s.request("POST", "/v1/chat/completions",
                                 body={"messages": [{"role": "user", "content": "hi"}]})
            assert st == 503, (st, text)
        except (ConnectionError, OSError):
            pass  # already closed: also not admitted
        t.join()
        assert got == [want], (got, want)
        assert s.proc.wait(timeout=60) == 0

    try:
        run("chat_openai_client", chat)
        run("disconnect_cancels", disconnect)
        run("sigterm_finishes_in_flight", sigterm)
    finally:
        s.stop()
    return results


def main():
    global FASTKV
    FASTKV = os.path.abspath(sys.argv[1])
    t_start = time.time()
    results = []
    s = Server(STORIES, "--parallel", "8", "--api-key", API_KEY, "--max-body", "256K")
    try:
        for fn in TESTS:
            t0 = time.time()
            try:
                fn(s)
                results.append((fn.__name__, None, time.time() - t0))
            except Exception:  # noqa: BLE001
                results.append((fn.__name__, traceback.format_exc(), time.time() - t0))
            name, err, dt = results[-1]
            print(("PASS" if err is None else "FAIL") + f" {name} ({dt:.1f} s)", flush=True)
            if err:
                print(err)
    finally:
        assert s.stop() == 0, open(s.log_path).read()
    for res in admission_tests() + smollm_tests():
        results.append(res)
        name, err, dt = res
        print(("PASS" if err is None else "FAIL") + f" {name} ({dt:.1f} s)", flush=True)
        if err:
            print(err)
    failed = sum(1 for _, e, _ in results if e)
    print(f"serve tests: {len(results) - failed} passed, {failed} failed "
          f"({time.time() - t_start:.0f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
