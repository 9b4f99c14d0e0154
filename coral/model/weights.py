"""A model folder's weight files, read without loading the model (no transformers; torch only for
a pytorch_model*.bin checkpoint).

Which files are the weights follows transformers' own order (model.safetensors, the safetensors
index's shards, pytorch_model.bin, the bin index's shards), so the fingerprint hashes what is
loaded and nothing else beside it (a Mistral folder's consolidated.safetensors). A safetensors
file's header names every tensor with its shape and byte range: that says, before any run
starts, whether the file was cut off and which modules LoRA can target.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from coral.errors import ConfigError, CoralError

SAFETENSORS, SAFETENSORS_INDEX = "model.safetensors", "model.safetensors.index.json"
BIN, BIN_INDEX = "pytorch_model.bin", "pytorch_model.bin.index.json"


def safetensors_header(path: Path, error: type[CoralError] = ConfigError) -> dict[str, dict]:
    """The tensors a safetensors file's header names (name -> dtype, shape, data_offsets), after
    checking the file is as long as the header says; else `error` naming the file."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise error(f"{path}: truncated ({size} bytes, no safetensors header)")
        (header_len,) = struct.unpack("<Q", head)
        if header_len > size - 8:
            raise error(f"{path}: truncated ({size} bytes, header claims {header_len})")
        try:
            header = json.loads(handle.read(header_len))
        except (ValueError, RecursionError):  # bad JSON, not UTF-8, an integer past the digit limit
            raise error(f"{path}: corrupt safetensors header") from None
    tensors = _tensors(header)
    if tensors is None:  # JSON, but not a safetensors header
        raise error(f"{path}: corrupt safetensors header (not a map of tensors with data_offsets)")
    needed = 8 + header_len + max((t["data_offsets"][1] for t in tensors.values()), default=0)
    if size < needed:
        raise error(f"{path}: truncated ({size} of {needed} bytes)")
    return tensors


def _tensors(header: object) -> dict[str, dict] | None:
    if not isinstance(header, dict):
        return None
    out = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(type(o) is int and o >= 0 for o in offsets)):
            return None
        out[name] = entry
    return out


def weight_files(folder: Path) -> list[Path]:
    """The files transformers loads the weights from, in its order of preference; a shard an
    index names but the folder lacks is one ConfigError line naming both."""
    for single, index in ((SAFETENSORS, SAFETENSORS_INDEX), (BIN, BIN_INDEX)):
        if (folder / single).is_file():
            return [folder / single]
        if (folder / index).is_file():
            return _shards(folder / index)
    raise ConfigError(f"model.name {folder}: no weights in the folder ({SAFETENSORS}, {SAFETENSORS_INDEX}, "
                      f"{BIN} or {BIN_INDEX})")


def _shards(index: Path) -> list[Path]:
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        names = sorted(set(weight_map.values()))
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
        raise ConfigError(f"{index}: not a weight index (JSON with a weight_map)") from None
    if not names or not all(isinstance(n, str) and n and "/" not in n for n in names):
        raise ConfigError(f"{index}: not a weight index (its weight_map names no shard files)")
    for name in names:
        if not (index.parent / name).is_file():
            raise ConfigError(f"model.name {index.parent}: missing {name} (a shard {index.name} names)")
    return [index.parent / n for n in names]


def check_weights(folder: Path) -> list[Path]:
    """The weight files, each safetensors one checked whole (its header read, its length
    compared): one ConfigError line naming a missing, truncated or corrupt file."""
    files = weight_files(folder)
    for path in files:
        if path.suffix == ".safetensors":
            safetensors_header(path)
        elif path.stat().st_size == 0:
            raise ConfigError(f"{path}: empty (0 bytes)")
    return files


def tensor_shapes(folder: Path) -> dict[str, list[int]]:
    """Every weight's name and shape, from the headers (safetensors) or a meta-device load (bin)."""
    shapes: dict[str, list[int]] = {}
    for path in check_weights(folder):
        if path.suffix == ".safetensors":
            shapes.update({name: list(t.get("shape") or []) for name, t in safetensors_header(path).items()})
            continue
        import torch  # deferred: only an old-style checkpoint needs it

        try:
            state = torch.load(path, map_location="meta", weights_only=True, mmap=True)
        except Exception as exc:  # pickle, zip and torch's own errors alike: one line naming the file
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise ConfigError(f"{path}: does not load ({first})") from None
        shapes.update({name: list(t.shape) for name, t in state.items() if hasattr(t, "shape")})
    return shapes


# ---------------------------------------------------------------------- LoRA target modules


def module_paths(shapes: Mapping[str, Sequence[int]]) -> set[str]:
    """Modules holding a matrix (a Linear's, Conv1D's, embedding's or a quantised layer's packed
    weight): the ones LoRA can wrap. Norms and biases hold vectors only."""
    return {name.rpartition(".")[0] for name, shape in shapes.items() if len(shape) >= 2 and "." in name}


_LAYER = re.compile(r"\.\d+\.")


def layer_modules(paths: Iterable[str]) -> list[str]:
    """The short names of the matrix modules inside numbered blocks (q_proj, c_attn, fc1, ...):
    what a researcher writes in genes.target_modules. Embeddings and the output head are left out."""
    return sorted({p.rpartition(".")[2] for p in paths if _LAYER.search(f".{p}.")})


def missing_targets(targets: Iterable[str], paths: Iterable[str]) -> list[str]:
    """The target names no module matches, by peft's rule for a list: the module's full name, or
    its name ending in "." + target."""
    paths = list(paths)
    return [t for t in targets if not any(p == t or p.endswith(f".{t}") for p in paths)]


def describe_missing(missing: Sequence[str], where: str, paths: Iterable[str]) -> str:
    """One line: which configured names the model lacks and which names it has."""
    have = layer_modules(paths)
    names = ", ".join(missing)
    verb = "is not a module" if len(missing) == 1 else "are not modules"
    hint = f"; LoRA can target its {', '.join(have)}" if have else ""
    return f"genes.target_modules: {names} {verb} of {where}{hint}"


def check_target_modules(folder: Path, target_sets: Sequence[Sequence[str]]) -> None:
    """Every module name in every set of genes.target_modules must name a module of this model;
    peft trains the ones that exist and silently drops the rest (an error only when none is left),
    so a set naming a module the model lacks would not be the adapter it says it is."""
    shapes = tensor_shapes(folder)
    paths = module_paths(shapes)
    if not paths:
        return  # nothing read that names modules: the training job's own check decides
    config = _config(folder)
    if config.get("tie_word_embeddings", True) is not False:
        paths.add("lm_head")  # a tied output layer is a module whose weight is not stored twice
    wanted = list(dict.fromkeys(m for modules in target_sets for m in modules))
    missing = missing_targets(wanted, paths)
    if missing:
        kind = (config.get("architectures") or [config.get("model_type") or "?"])[0]
        raise ConfigError(describe_missing(missing, f"{folder} ({kind})", paths))


def _config(folder: Path) -> dict:
    try:
        data = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
