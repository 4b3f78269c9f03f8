#!/usr/bin/env python3
"""Writes all-MiniLM-L6-v2 (docent's embedder, as `make models` fetched it) as a GGUF file
that llama.cpp's `llama-server --embeddings` serves, for the remote-embedding tests.

    minilm_gguf.py MODEL_DIR OUT.gguf SDIST

MODEL_DIR holds config.json, tokenizer.json and model.safetensors; SDIST is the pinned
llama-cpp-python sdist the server is built from (tests/engine/sdist.sh), whose llama.cpp
source carries `gguf-py`, llama.cpp's own GGUF writer, used from there. The weights
stay F32 (the same numbers docent computes with in-process), the tensors are named and the
vocabulary is spelled as llama.cpp's own converter does for BERT (phantom-space WordPiece),
and pooling is the mean, as the model card prescribes. Only numpy is needed: the
safetensors file is read directly (a JSON header, then little-endian arrays).
"""
import json
import os
import struct
import sys
import tarfile
import tempfile

import numpy as np

model_dir, out_path, sdist = sys.argv[1:4]
unpacked = tempfile.TemporaryDirectory()
with tarfile.open(sdist) as tar:
    members = [m for m in tar.getmembers() if "/vendor/llama.cpp/gguf-py/gguf/" in m.name]
    tar.extractall(unpacked.name, members=members, filter="data")
(top,) = os.listdir(unpacked.name)
sys.path.insert(0, os.path.join(unpacked.name, top, "vendor", "llama.cpp", "gguf-py"))
import gguf  # noqa: E402


def read_safetensors(path):
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len))
        data = f.read()
    dtypes = {"F32": np.float32, "F16": np.float16}
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__" or info["dtype"] not in ("F32", "F16"):
            continue  # position_ids (I64) is not a weight
        start, end = info["data_offsets"]
        array = np.frombuffer(data[start:end], dtype=dtypes[info["dtype"]])
        tensors[name] = array.reshape(info["shape"]).astype(np.float32)
    return tensors


def vocab(tokenizer):
    """Tokens in id order with llama.cpp's phantom-space spelling, and their types."""
    by_id = sorted(tokenizer["model"]["vocab"].items(), key=lambda kv: kv[1])
    special = {t["content"] for t in tokenizer.get("added_tokens", []) if t.get("special")}
    tokens, types = [], []
    for token, _ in by_id:
        if token in special:
            tokens.append(token)
            types.append(gguf.TokenType.CONTROL)
        else:
            tokens.append(token[2:] if token.startswith("##") else "\u2581" + token)
            types.append(gguf.TokenType.NORMAL)
    return tokens, types


def main():
    with open(os.path.join(model_dir, "config.json")) as f:
        config = json.load(f)
    with open(os.path.join(model_dir, "tokenizer.json")) as f:
        tokenizer = json.load(f)
    arch = gguf.MODEL_ARCH.BERT
    writer = gguf.GGUFWriter(out_path + ".part", gguf.MODEL_ARCH_NAMES[arch])
    writer.add_name("all-MiniLM-L6-v2")
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_layer_norm_eps(config["layer_norm_eps"])
    writer.add_causal_attention(False)
    writer.add_pooling_type(gguf.PoolingType.MEAN)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_token_type_count(config.get("type_vocab_size", 2))
    tokens, types = vocab(tokenizer)
    writer.add_tokenizer_model("bert")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    gguf.SpecialVocab(model_dir, n_vocab=len(tokens)).add_to_gguf(writer)

    names = gguf.get_tensor_name_map(arch, config["num_hidden_layers"])
    for name, array in read_safetensors(os.path.join(model_dir, "model.safetensors")).items():
        name = name.removeprefix("bert.")
        if name in ("embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias"):
            continue
        mapped = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if mapped is None:
            sys.exit(f"no GGUF name for tensor {name}")
        writer.add_tensor(mapped, array)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(out_path + ".part", out_path)
    print(f"wrote {out_path}")


main()
