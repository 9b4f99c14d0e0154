"""Prompt and answer lengths checked before a run starts, in the model's own tokens.

A prompt over `generation.max_prompt_length` stops generation in a worker, after the run has
started; a training pair over `training.max_length` loses its answer's tail; a reference answer
over the largest `knobs.max_new_tokens` can never be written whole. Each is one clear error
before the run is registered, naming the longest offending problem, its length and the key to
raise (docs/config.md).

A model with a learned table of absolute positions (GPT-2, OPT, GPT-Neo, StarCoder's
gpt_bigcode) cannot go past it at all: a prompt plus its new tokens, or a training pair, longer
than the table indexes out of it (IndexError in the worker; a device assert on a GPU). That is
checked too. Rotary and ALiBi models only degrade past their trained length, so they are not.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from coral.benchmark.problem import Problem
from coral.benchmark.prompts import build_prompt, build_target
from coral.config import Config
from coral.errors import ConfigError

# model_type -> the config.json key holding its learned position table's size.
LEARNED_POSITIONS = {"gpt2": "n_positions", "gpt_bigcode": "n_positions", "opt": "max_position_embeddings",
                     "gpt_neo": "max_position_embeddings", "biogpt": "max_position_embeddings"}


def check_lengths(config: Config, problems: Mapping[str, Problem], train: Sequence[str], evaluate: Sequence[str],
                  count: Callable[[str], int] | None = None) -> None:
    """Raise ConfigError if any prompt, training pair or reference answer of the run's split
    does not fit its limit. `count` (tokens of a text) defaults to the model's tokenizer; a
    hub model not in the local cache is left to the worker's own check."""
    if count is None:
        count = _token_counter(config)
        if count is None:
            return
    style = config.benchmark.prompt_style
    prompts = {n: build_prompt(n, problems[n].buggy_source, style) for n in {*train, *evaluate}}
    answers = {n: build_target(problems[n].buggy_source, problems[n].correct_source) for n in {*train, *evaluate}}

    def longest(names: Sequence[str], text: Callable[[str], str]) -> tuple[int, str]:
        return max(((count(text(n)), n) for n in sorted(set(names))), default=(0, ""))

    length, name = longest([*train, *evaluate], prompts.__getitem__)
    limit = config.generation.max_prompt_length
    if length > limit:
        raise ConfigError(f"problem {name}: its prompt is {length} tokens, over generation.max_prompt_length="
                          f"{limit}; raise generation.max_prompt_length to at least {length}")
    length, name = longest(evaluate, answers.__getitem__)
    limit = max(config.knobs.max_new_tokens)
    if length > limit:
        raise ConfigError(f"problem {name}: its reference answer is {length} tokens, over the largest "
                          f"knobs.max_new_tokens ({limit}); raise knobs.max_new_tokens to at least {length}")
    length, name = longest(train, lambda n: prompts[n] + answers[n])
    limit = config.training.max_length
    if length > limit:
        raise ConfigError(f"problem {name}: its training pair is {length} tokens, over training.max_length="
                          f"{limit}; raise training.max_length to at least {length}")
    table = learned_positions(config.model.name)
    if table is None:
        return
    where = f"model {config.model.name} has {table} learned positions"
    length, name = longest(evaluate, prompts.__getitem__)
    new_tokens = max(config.knobs.max_new_tokens)
    if length + new_tokens > table:
        raise ConfigError(f"{where}: problem {name}'s prompt ({length} tokens) and the largest knobs.max_new_tokens "
                          f"({new_tokens}) need {length + new_tokens}; lower knobs.max_new_tokens to at most "
                          f"{max(table - length, 0)}")
    length, name = longest(train, lambda n: prompts[n] + answers[n])
    if min(length, config.training.max_length) > table:
        raise ConfigError(f"{where}: problem {name}'s training pair is {length} tokens and training.max_length="
                          f"{config.training.max_length} keeps them; lower training.max_length to at most {table}")


def learned_positions(name: str) -> int | None:
    """The size of a local model folder's learned position table, None if it has none (or the
    folder's config does not say: check_model reads it)."""
    path = Path(name).expanduser() / "config.json"
    try:
        model_config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(model_config, dict):
        return None
    key = LEARNED_POSITIONS.get(str(model_config.get("model_type")))
    size = model_config.get(key) if key else None
    return size if isinstance(size, int) and size > 0 else None


def _token_counter(config: Config) -> Callable[[str], int] | None:
    name = config.model.name
    local = name.startswith((".", "/", "~")) or Path(name).is_dir()  # as coral.model.loading.is_local
    if local and not (Path(name).expanduser() / "config.json").is_file():
        return None  # not a model folder: check_model says so
    fast = Path(name).expanduser() / "tokenizer.json"
    if local and fast.is_file():
        # The same tokenizer file transformers' fast tokenizer wraps, without importing
        # transformers (about 15 s on a loaded 2-core machine, before every run).
        from tokenizers import Tokenizer  # deferred: only a run's start needs it

        tokenizer_file = Tokenizer.from_file(str(fast))
        return lambda text: len(tokenizer_file.encode(text, add_special_tokens=True).ids)
    from transformers import AutoTokenizer  # deferred: transformers costs seconds to import

    try:
        tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=True)
    except OSError:
        return None  # a hub id not downloaded yet: the worker checks each prompt it encodes
    return lambda text: len(tokenizer(text, add_special_tokens=True)["input_ids"])
