"""Ctrl-C while the engine runs a long prompt: KeyboardInterrupt within 1 s of the signal, for
Session.prefill and for the blocking Model.generate, and what the session is afterwards (it refuses
further calls, saying so; a new session works). Each case runs in a child Python process that
gets a real SIGINT, as a user's terminal sends it."""
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT

CHILD = r"""
import sys, time
import fastkv
m = fastkv.Model("smollm2-135m-instruct")
ids = [int(i % 5000) + 100 for i in range(8000)]
case = sys.argv[1]
s = m.session("fullkv", max_new_tokens=4)
print("ready", flush=True)
try:
    if case == "prefill":
        s.prefill(ids)
    else:
        m.generate(m.tokenizer.decode(ids), max_new_tokens=4)
    print("finished", flush=True)
except KeyboardInterrupt:
    print("interrupted %.6f" % time.monotonic(), flush=True)
if case == "prefill":
    try:
        s.decode(5)
        print("decoded", flush=True)
    except Exception as e:
        print("refused:", e, flush=True)
    t = m.session("fullkv", max_new_tokens=4)
    print("new session ok" if t.prefill([1, 2, 3]).shape[0] > 0 else "new session broken",
          flush=True)
"""


@pytest.mark.parametrize("case", ["prefill", "generate"])
def test_ctrl_c_stops_a_long_prefill_within_one_second(case, smollm2):
    del smollm2  # fetched and loadable; the child loads its own copy
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "tests" / "python") + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen([sys.executable, "-c", CHILD, case], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        time.sleep(1.5)  # well inside the 8000-token prefill (tens of seconds on 2 cores)
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = out.splitlines()
    assert lines and lines[0].startswith("interrupted "), (out, err)
    latency = float(lines[0].split()[1]) - sent
    assert latency < 1.0, f"KeyboardInterrupt came {latency:.2f} s after SIGINT"
    if case == "prefill":
        assert lines[1].startswith("refused:") and "interrupted" in lines[1], lines
        assert "start a new session" in lines[1], lines
        assert lines[2] == "new session ok", lines
