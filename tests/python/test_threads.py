"""One Model shared by several Python threads: concurrent generations and sessions give the
sequential results, and the GIL is released while the engine computes."""

import threading
import time

import numpy as np

from conftest import STORY_PROMPT

JOBS = [
    ("fastkv:tsp_layer=2,tsp_rate=0.3,retain_rate=0.2", STORY_PROMPT, {}),
    ("snapkv:retain_rate=0.2", STORY_PROMPT[::-1], {"temperature": 0.7, "seed": 3}),
    ("h2o", STORY_PROMPT[40:], {}),
    ("pyramidinfer", STORY_PROMPT, {"top_k": 5, "temperature": 1.0, "seed": 9}),
]


def run_threads(targets):
    barrier = threading.Barrier(len(targets))
    errors = []

    def wrap(fn):
        def run():
            try:
                barrier.wait()
                fn()
            except BaseException as e:  # reported below, not swallowed
                errors.append(e)
        return run

    threads = [threading.Thread(target=wrap(t)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads)


def test_threads_generating_at_once_equal_sequential(stories):
    sequential = [stories.generate(p, max_new_tokens=48, method=spec, **kw).token_ids
                  for spec, p, kw in JOBS]
    for _ in range(3):
        concurrent = [None] * len(JOBS)

        def job(i):
            spec, p, kw = JOBS[i]
            return lambda: concurrent.__setitem__(
                i, stories.generate(p, max_new_tokens=48, method=spec, **kw).token_ids)

        run_threads([job(i) for i in range(len(JOBS))])
        assert concurrent == sequential


def test_threads_streaming_and_sessions_at_once(stories):
    ids = stories.tokenizer.encode(STORY_PROMPT)
    ref_text = stories.generate(STORY_PROMPT, max_new_tokens=40, method="adakv").text
    s_ref = stories.session(method="streamingllm", max_new_tokens=8)
    ref_logits = [s_ref.prefill(ids)] + [s_ref.decode(t) for t in range(10, 18)]
    texts, logits = [], []

    def streamer():
        texts.append("".join(stories.generate(STORY_PROMPT, max_new_tokens=40, method="adakv",
                                              stream=True)))

    def stepper():
        s = stories.session(method="streamingllm", max_new_tokens=8)
        logits.append([s.prefill(ids)] + [s.decode(t) for t in range(10, 18)])

    run_threads([streamer, streamer, stepper, stepper])
    assert texts == [ref_text, ref_text]
    assert len(logits) == 2
    for run in logits:
        for a, b in zip(run, ref_logits):
            np.testing.assert_array_equal(a, b)


def test_one_session_from_two_threads_is_serialised(stories):
    s = stories.session(max_new_tokens=64)
    s.prefill(stories.tokenizer.encode(STORY_PROMPT))
    run_threads([lambda: [s.decode(7) for _ in range(32)] for _ in range(2)])
    assert s.next_pos == len(stories.tokenizer.encode(STORY_PROMPT)) + 64


def test_the_gil_is_released_while_the_engine_computes(smollm2):
    # A Python thread keeps ticking while the main thread is inside m.logits(); with the GIL
    # held it would stall for the whole call.
    ids = list(range(1000, 3000))  # ~1 s here; 600 ids took ~0.25 s, close to the 0.2 s floor
    ticks = []
    stop = threading.Event()

    def ticker():
        while not stop.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.001)

    t = threading.Thread(target=ticker)
    t.start()
    time.sleep(0.05)
    start = time.perf_counter()
    smollm2.logits(ids)
    end = time.perf_counter()
    stop.set()
    t.join()
    during = [x for x in ticks if start <= x <= end]
    duration = end - start
    assert duration > 0.2, "the call is too short to tell"
    gaps = np.diff([start] + during + [end])
    assert len(during) > 10 and gaps.max() < duration / 2, (duration, len(during), gaps.max())


def test_results_do_not_depend_on_the_thread_count(fastkv, stories):
    import os

    from conftest import STORIES

    ref = stories.generate(STORY_PROMPT, max_new_tokens=24, method="snapkv").token_ids
    one = fastkv.Model(STORIES, threads=1)
    assert one.generate(STORY_PROMPT, max_new_tokens=24, method="snapkv").token_ids == ref
    # The count is process-wide: give the rest of the suite all cores back.
    fastkv.Model(STORIES, threads=min(os.cpu_count() or 1, 1024))
