"""Adapter identity and storage: cache key, metadata, integrity checks, atomic publication.

An adapter lives in CORAL_HOME/adapters/CACHE_KEY/ as peft's files (adapter_config.json,
adapter_model.safetensors) plus coral_adapter.json (what it was trained from, the file's sha256,
the loss curve). Writers build it in a hidden temp folder next to its final place and rename it
in one step, so a reader sees either no adapter or a whole one. This module needs no torch.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from coral.config import TrainingConfig
from coral.errors import AdapterError
from coral.evolution.genome import Genome, HeavyGenes
from coral.hashing import content_hash
from coral.model.weights import safetensors_header

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
METADATA = "coral_adapter.json"
METADATA_SCHEMA = 1
TEMP_PREFIX = ".tmp-"  # hidden, so listings of adapters/ skip half-built folders
KEY_LENGTH = 24  # hex characters of sha256: 96 bits, folder names stay short


def canonical_genes(genes: HeavyGenes) -> HeavyGenes:
    """Target modules as a sorted set: ('v_proj', 'q_proj') trains what the reverse trains."""
    return genes.model_copy(update={"target_modules": tuple(sorted(set(genes.target_modules)))})


def gene_key(genome: Genome) -> str:
    """Identifies the adapter within a run (base, data and training settings are fixed per run)."""
    return content_hash(canonical_genes(genome.genes))


def data_fingerprint(pairs: Sequence[tuple[str, str]]) -> str:
    """Content id of the training data: the (prompt, target) pairs, in order."""
    return content_hash([[prompt, target] for prompt, target in pairs], length=32)


def adapter_cache_key(genes: HeavyGenes, base_fingerprint: str, data_fingerprint: str, training: TrainingConfig) -> str:
    """What an adapter is a function of: genes, base weights, training data, training settings."""
    return content_hash(
        {
            "genes": canonical_genes(genes),
            "base": base_fingerprint,
            "data": data_fingerprint,
            # Which data is already the fingerprint's to say: two choices giving the same pairs
            # give the same adapter (and the keys of adapters trained before the choice existed hold).
            "training": training.model_dump(mode="json", exclude={"data"}),
        },
        length=KEY_LENGTH,
    )


class AdapterInfo(BaseModel):
    """coral_adapter.json, plus where the adapter lies and whether this call found it ready."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = METADATA_SCHEMA
    cache_key: str
    genes: HeavyGenes
    base_fingerprint: str
    data_fingerprint: str
    training: TrainingConfig
    seed: int  # torch seed derived from the cache key
    pairs_used: int  # pairs with at least one answer token within training.max_length
    pairs_dropped: int
    train_tokens: int  # non-padding tokens seen over all steps
    loss_curve: list[float]
    wall_seconds: float  # recorded, never decides anything
    weights_sha256: str  # of adapter_model.safetensors, checked on every load
    versions: dict[str, str] = Field(default_factory=dict)
    # Not stored in the file:
    path: Path | None = Field(default=None, exclude=True)
    cache_hit: bool = Field(default=False, exclude=True)

    @property
    def tokens_per_second(self) -> float:
        return self.train_tokens / self.wall_seconds if self.wall_seconds > 0 else 0.0


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_metadata(folder: Path, info: AdapterInfo) -> None:
    (folder / METADATA).write_text(info.model_dump_json(indent=2) + "\n", encoding="utf-8")


def read_adapter(folder: Path) -> AdapterInfo:
    """Check that `folder` holds one whole adapter and return its metadata; else AdapterError."""
    folder = Path(folder)
    if not folder.is_dir():
        raise AdapterError(f"adapter folder not found: {folder}")
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS, METADATA):
        if not (folder / name).is_file():
            raise AdapterError(f"adapter {folder}: missing {name}")
    for name in (ADAPTER_CONFIG, METADATA):
        try:
            json.loads((folder / name).read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise AdapterError(f"{folder / name}: not valid JSON ({exc})") from None
    try:
        info = AdapterInfo.model_validate_json((folder / METADATA).read_text(encoding="utf-8"))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(file)"
        raise AdapterError(f"{folder / METADATA}: {where}: {first['msg']}") from None
    weights = folder / ADAPTER_WEIGHTS
    safetensors_header(weights, AdapterError)  # whole: as long as its header says
    if sha256_file(weights) != info.weights_sha256:
        raise AdapterError(f"{weights}: corrupt (sha256 differs from {METADATA})")
    return info.model_copy(update={"path": folder})


def check_base(info: AdapterInfo, base_fingerprint: str) -> None:
    if info.base_fingerprint != base_fingerprint:
        raise AdapterError(
            f"adapter {info.cache_key} was trained on base weights {info.base_fingerprint}, "
            f"but the loaded base is {base_fingerprint}"
        )


def find_adapter(folder: Path) -> AdapterInfo | None:
    """The finished adapter at cache folder `folder` (named by its key), None if there is none;
    a damaged one, or one filed under another key, is an AdapterError."""
    if not Path(folder).exists():
        return None
    info = read_adapter(folder)
    check_cache_key(folder, info.cache_key)
    return info.model_copy(update={"cache_hit": True})


def check_cache_key(folder: Path, cache_key: str) -> None:
    """A cache folder holds the adapter of the key it is named by: one copied or renamed under
    another key would be trained on other genes or data, and read as if it were not."""
    if Path(folder).name != cache_key:
        raise AdapterError(f"{Path(folder) / METADATA}: holds adapter {cache_key!r}, not "
                           f"{Path(folder).name!r} (cache folders are named by their key)")


def cached_key(folder: Path) -> str:
    """The key a cache folder's metadata records (only the metadata is read)."""
    if not Path(folder).is_dir():
        raise AdapterError(f"adapter folder not found: {folder}")
    try:
        return AdapterInfo.model_validate_json((Path(folder) / METADATA).read_text(encoding="utf-8")).cache_key
    except FileNotFoundError:
        raise AdapterError(f"adapter {folder}: missing {METADATA}") from None
    except (ValidationError, UnicodeDecodeError, ValueError) as exc:
        raise AdapterError(f"{Path(folder) / METADATA}: not valid metadata ({str(exc).splitlines()[0]})") from None


def publish(temp: Path, target: Path) -> bool:
    """Rename a finished temp folder into place. False (temp removed) if another writer won."""
    try:
        os.rename(temp, target)
        return True
    except OSError as exc:
        # A non-empty target: someone published first. Theirs is as good as ours (same key).
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
        shutil.rmtree(temp, ignore_errors=True)
        return False
