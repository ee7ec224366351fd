"""Shared fixtures of the Python suite: paths of the repository, the shared folder, the CLI and
the fixture models. Run by tools/test.sh after `pip install` of the package (docs/PYTHON.md)."""

import json
import os
import pathlib
import subprocess

import pytest

# The suite checks the module against transformers' f32 goldens (1e-4), which only the exact f32
# matmul meets: on CPUs with AVX512_BF16 the default bf16-dot kernels round activations to bf16
# (as llama.cpp does), so pin the exact path here, as tests/e2e/test_engine_goldens.cc does; the
# bf16-dot kernels have their own tests (tests/unit/test_kernels_bf16dot.cc). Set before the
# module is imported (the kernels read it once); the CLI runs below inherit it.
os.environ.setdefault("FKV_BF16_DOT", "0")

ROOT = pathlib.Path(__file__).resolve().parents[2]
SHARED = pathlib.Path(os.environ.get("FKV_SHARED_DIR", ROOT.parent / "shared"))
CLI = pathlib.Path(os.environ.get("FASTKV_CLI", ROOT / "build" / "fastkv"))
GOLDENS = ROOT / "tests" / "data" / "goldens"
STORIES = SHARED / "models" / "stories260K" / "stories260K.gguf"
TINY_MODELS = sorted(p for p in (ROOT / "tests" / "data" / "models").glob("tiny-*") if p.is_dir())


def load_golden(name):
    with open(GOLDENS / name, encoding="utf-8") as f:
        return json.load(f)


def run_cli(*args):
    """`fastkv ARGS...` -> (stdout, stderr); a non-zero exit fails the test with its stderr."""
    assert CLI.is_file(), f"{CLI} is missing: build the CLI first (cmake --build build)"
    env = dict(os.environ)
    proc = subprocess.run([str(CLI), *map(str, args)], capture_output=True, env=env, timeout=300)
    stderr = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 0, f"fastkv {' '.join(map(str, args))} failed:\n{stderr}"
    return proc.stdout.decode("utf-8"), stderr


def cli_stats(stderr):
    """The key=value fields of the CLI's closing [fastkv] line."""
    line = [ln for ln in stderr.splitlines() if ln.startswith("[fastkv] ")][-1]
    return dict(f.split("=", 1) for f in line.split()[1:] if "=" in f)


@pytest.fixture(scope="session")
def fastkv():
    import fastkv as module

    return module


@pytest.fixture(scope="session")
def stories(fastkv):
    assert STORIES.is_file(), f"{STORIES} is missing (the team's shared folder)"
    return fastkv.Model(STORIES)


@pytest.fixture(scope="session")
def smollm2(fastkv):
    # tools/test.sh fetches it (python3 tools/scripts/fetch_models.py smollm2-135m-instruct).
    return fastkv.Model("smollm2-135m-instruct")


# A prompt long enough that every method drops something (stories260K's own style).
STORY_PROMPT = (
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the "
    "park with her friends. One day, she saw a big red ball under a tree. She ran to the ball "
    "and picked it up. Then a small dog came and wanted to play too. Lily threw the ball and "
    "the dog ran after it. They played all day until the sun went down. Lily was very happy "
    "and went home to tell her mom about the dog. Her mom smiled and gave her a big hug. The "
    "next day Lily went back to the park to look for the dog."
)
