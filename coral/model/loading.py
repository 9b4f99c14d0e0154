"""Loading the base model once per worker process, and naming its weights by content.

The fingerprint is sha256 over the weight files' bytes (safetensors, else pytorch_model*.bin)
plus the dtype they are loaded in: it goes into every adapter cache key, so an adapter trained on
other weights (or other numerics) is never taken for this one. It needs no torch and no loading,
so an orchestrator can compute cache keys without holding the model.
"""

from __future__ import annotations

import re
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from coral.config import ModelConfig
from coral.errors import ConfigError
from coral.hashing import content_hash, file_fingerprint
from coral.model.weights import check_weights, weight_files

# A folder holding none of these has no tokenizer transformers could load (as coral.run.lifecycle).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(eq=False)
class LoadedModel:
    """A base model, its tokenizer and where it runs. Adapters come and go; this stays clean.

    `lock` serialises jobs on this model: training and generation both modify its modules
    for the duration of a job (adapter injected or merged) and restore them afterwards.
    """

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    device: torch.device
    name: str
    fingerprint: str
    lock: threading.RLock = field(default_factory=threading.RLock)


def resolve_device(choice: str) -> torch.device:
    """'auto' picks cuda > mps > cpu; an explicit choice that is not available is an error."""
    cuda = torch.cuda.is_available()
    mps = torch.backends.mps.is_available()
    if choice == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if choice == "cuda" and not cuda:
        raise ConfigError("model.device: 'cuda' requested but torch sees no CUDA device")
    if choice == "mps" and not mps:
        raise ConfigError("model.device: 'mps' requested but torch sees no MPS device")
    if choice not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"model.device: unknown device {choice!r} (auto, cpu, cuda, mps)")
    return torch.device(choice)


def is_local(name: str) -> bool:
    return name.startswith((".", "/", "~")) or Path(name).is_dir()


def weights_dir(model: ModelConfig) -> Path:
    """Where the weight files are: the local folder, or the hub cache's snapshot (no network)."""
    if is_local(model.name):
        folder = Path(model.name).expanduser()
        if not folder.is_dir():
            raise ConfigError(f"model.name: folder not found: {folder}")
        return folder
    from huggingface_hub import try_to_load_from_cache  # only when a hub name is resolved

    cached = try_to_load_from_cache(model.name, "config.json")
    if not isinstance(cached, str):
        raise ConfigError(f"model.name {model.name!r}: not in the Hugging Face cache; load it once first")
    return Path(cached).parent


_SHA256 = re.compile(r"[0-9a-f]{64}")


def cache_blob_sha256(path: Path) -> str | None:
    """The sha256 of a Hugging Face cache file, from its name, or None. In the hub cache a
    snapshot's weight file links to blobs/<sha256 of its content> (huggingface_hub checks the
    download against it), so the name is the content id without reading 13.5 GB."""
    if not path.is_symlink():
        return None
    target = path.resolve()
    return target.name if target.parent.name == "blobs" and _SHA256.fullmatch(target.name) else None


def base_fingerprint(model: ModelConfig) -> str:
    """Content id of the base model's weights as CORAL loads them (files + dtype): from the
    hub cache's blob names when every weight file has one, else by reading the files."""
    folder = weights_dir(model)
    files = weight_files(folder)
    blobs = {f.relative_to(folder).as_posix(): cache_blob_sha256(f) for f in files}
    if all(blobs.values()):
        return content_hash({"weights_blob_sha256": blobs, "dtype": model.dtype}, length=32)
    return content_hash({"weights_sha256": file_fingerprint(files, root=folder), "dtype": model.dtype}, length=32)


def load_base_model(model: ModelConfig) -> LoadedModel:
    """Load model + tokenizer onto the configured device, frozen, in eval mode."""
    device = resolve_device(model.device)
    local = is_local(model.name)
    if local:
        folder = Path(model.name).expanduser()
        if not (folder / "config.json").is_file():
            raise ConfigError(f"model.name: {folder} is not a saved model (no config.json)")
        check_weights(folder)  # a missing shard or a cut-off file: one line naming it
        if not any((folder / f).is_file() for f in TOKENIZER_FILES):
            # transformers would say "Couldn't instantiate the backend tokenizer from one of: "
            raise ConfigError(f"model.name {folder}: no tokenizer in the folder (tokenizer.json or "
                              "tokenizer_config.json)")
    # Weights go straight to the accelerator instead of through host memory.
    device_map = {"": str(device)} if device.type != "cpu" else None
    try:
        tokenizer = AutoTokenizer.from_pretrained(model.name, local_files_only=local)
        net = AutoModelForCausalLM.from_pretrained(
            model.name, dtype=DTYPES[model.dtype], local_files_only=local, device_map=device_map
        )
    except torch.OutOfMemoryError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as exc:
        # A folder transformers cannot read (an unknown model_type, a config.json without the
        # fields its class needs, a damaged checkpoint): one line, not its traceback.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"model.name {model.name!r}: could not load ({first[:300]})") from None
    if device_map is None:
        net = net.to(device)  # type: ignore[arg-type]  # transformers' .to() wrapper hides torch's signature
    net.eval()
    net.requires_grad_(False)
    ensure_pad_token(tokenizer, model.name)
    return LoadedModel(
        model=net,
        tokenizer=tokenizer,
        device=device,
        name=model.name,
        fingerprint=base_fingerprint(model),
    )


def ensure_pad_token(tokenizer: PreTrainedTokenizerBase, name: str) -> None:
    """Batches need a pad token; causal LMs often ship without one, so reuse EOS (or UNK)."""
    if tokenizer.pad_token_id is not None:
        return
    for token in (tokenizer.eos_token, tokenizer.unk_token):
        if token is not None:
            tokenizer.pad_token = token
            return
    raise ConfigError(f"model.name {name!r}: tokenizer has no pad, eos or unk token to pad with")


_SHARED: dict[str, LoadedModel] = {}
_SHARED_LOCK = threading.Lock()


def shared_base_model(model: ModelConfig) -> LoadedModel:
    """The process's one LoadedModel for this config: workers load once and reuse it per job."""
    key = content_hash(model)
    with _SHARED_LOCK:
        if key not in _SHARED:
            _SHARED[key] = load_base_model(model)
        return _SHARED[key]


def strip_adapters(model: torch.nn.Module) -> None:
    """Replace any peft layer left in `model` by the plain layer it wraps (no merge).

    A safety net for failures halfway through injecting or merging: whatever happened, the
    shared base leaves a job with only its own modules.
    """
    from peft.tuners.tuners_utils import BaseTunerLayer  # heavy (peft): only when adapters are merged

    wrapped = [name for name, mod in model.named_modules() if isinstance(mod, BaseTunerLayer)]
    # Outermost first; inner names vanish once their parent is replaced.
    for name in sorted(wrapped, key=lambda n: n.count(".")):
        parent_name, _, child = name.rpartition(".")
        try:
            parent = model.get_submodule(parent_name) if parent_name else model
            layer = getattr(parent, child)
        except AttributeError:
            continue
        if isinstance(layer, BaseTunerLayer):
            setattr(parent, child, layer.get_base_layer())
    if hasattr(model, "peft_config"):
        del model.peft_config


def has_adapters(model: torch.nn.Module) -> bool:
    from peft.tuners.tuners_utils import BaseTunerLayer  # heavy (peft): only when adapters are merged

    return any(isinstance(mod, BaseTunerLayer) for mod in model.modules())


@contextmanager
def seeded(device: torch.device, seed: int) -> Iterator[None]:
    """torch's global RNG seeded for the block, and put back afterwards (no state leaks out)."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        fork = torch.random.fork_rng(devices=[index], device_type="cuda")
    else:
        fork = torch.random.fork_rng(devices=[])
    with fork:
        torch.manual_seed(seed)
        yield


@contextmanager
def quiet_peft_wrap() -> Iterator[None]:
    """peft 0.21 asks transformers 5 a deprecated question when wrapping, and says it sets
    fan_in_fan_out itself for GPT-2's Conv1D layers (stored transposed); nothing to act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*is_gradient_checkpointing", FutureWarning)
        warnings.filterwarnings("ignore", "fan_in_fan_out is set to False but the target module is `Conv1D`",
                                UserWarning)
        yield
