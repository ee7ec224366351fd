"""fastkv: long-context LLM inference on CPU with FastKV and 8 baseline KV-cache methods.

The C++ engine of the fastkv repository (exact against HF transformers and llama.cpp), from
Python, without torch::

    import fastkv
    m = fastkv.Model("smollm2-135m-instruct")          # or an HF folder / a .gguf file
    out = m.generate("The capital of France is", max_new_tokens=16,
                     method="fastkv", tsp_rate=0.2, retain_rate=0.1)
    print(out.text, out.kv_bytes)

    s = m.session(method=fastkv.methods.SnapKV(retain_rate=0.1))
    logits = s.prefill(m.tokenizer.encode("..."))    # np.ndarray [vocab]
    s.kept_positions()["layers"][0][0]                # prompt positions layer 0, KV head 0 kept

Errors: TypeError for an argument of the wrong type, ValueError for a bad value (the engine's
message), OSError (FileNotFoundError) for a model or tokenizer file. See docs/PYTHON.md.
"""

from __future__ import annotations

import os as _os
import numbers as _numbers
from collections.abc import Mapping as _Mapping
from dataclasses import dataclass as _dataclass
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Union

import numpy as np

from . import _core
from . import methods
from .methods import Method

__all__ = [
    "Model",
    "Tokenizer",
    "Session",
    "GenerationOutput",
    "GenerationStream",
    "Timing",
    "ModelConfig",
    "Method",
    "methods",
    "known_models",
]
__version__ = "0.1.0"

_INT32_MAX = 2**31 - 1


def _check_int(name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, _numbers.Integral):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    v = int(value)
    if not lo <= v <= hi:
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {v}")
    return v


def _check_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, _numbers.Real):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    return float(value)


def _check_str(name: str, value: Any, allow_none: bool = True) -> str:
    if value is None and allow_none:
        return ""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    return value


def _method_spec(method: Any, options: Dict[str, Any], caller: str) -> str:
    """Canonical spec of method= (None, a spec string or a Method) plus option keywords."""
    known = set(methods._KINDS)
    for key in options:
        if key not in known:
            raise TypeError(
                f"{caller}() got an unexpected keyword argument '{key}' (method options: "
                + ", ".join(sorted(known)) + ")"
            )
    if method is None:
        base = "fullkv"
    elif isinstance(method, Method):
        base = method.spec
    elif isinstance(method, str):
        base = method
    else:
        raise TypeError(
            f"method must be a spec string (\"fastkv:tsp_rate=0.2\") or a fastkv.methods object, "
            f"not {type(method).__name__}"
        )
    return _core.canonical_method_spec(base, methods.option_pairs(options))


class ModelConfig(_Mapping):
    """Read-only model configuration with Hugging Face config.json names.

    Works as a dict (``cfg["num_hidden_layers"]``, ``dict(cfg)``) and by attribute
    (``cfg.hidden_size``). Keys: model_type, architecture, name_or_path, num_hidden_layers,
    hidden_size, num_attention_heads, num_key_value_heads, head_dim, intermediate_size,
    vocab_size, max_position_embeddings, rms_norm_eps, rope_theta, rope_scaling, sliding_window,
    tie_word_embeddings, attention_bias, qk_norm, eos_token_id, bos_token_id, format
    ("safetensors" | "gguf"), weight_bytes.
    """

    def __init__(self, values: Dict[str, Any]) -> None:
        object.__setattr__(self, "_values", dict(values))

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __getattr__(self, key: str) -> Any:
        # Only public names are config fields; a dunder or private name that the class lacks
        # (__array__, __fspath__, _x) is a plain missing attribute, as on any object.
        if key.startswith("_"):
            raise AttributeError(f"'{type(self).__name__}' object has no attribute '{key}'")
        try:
            return self.__dict__["_values"][key]
        except KeyError:
            raise AttributeError(f"model config has no field '{key}'") from None

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError(f"model config is read-only: cannot set '{key}'")

    def __delattr__(self, key: str) -> None:
        raise AttributeError(f"model config is read-only: cannot delete '{key}'")

    def __setitem__(self, key: str, value: Any) -> None:
        raise TypeError(f"model config is read-only: cannot set '{key}'")

    def __delitem__(self, key: str) -> None:
        raise TypeError(f"model config is read-only: cannot delete '{key}'")

    def __repr__(self) -> str:
        return f"ModelConfig({self._values!r})"


class Tokenizer:
    """The model's tokenizer, with Hugging Face argument names.

    Exactly HF ``tokenizers`` / sentencepiece on the committed goldens. Get it from
    ``Model.tokenizer``, or load one alone with ``Tokenizer.from_file(path)``.
    """

    def __init__(self, core: "_core.Tokenizer") -> None:
        self._t = core

    @classmethod
    def from_file(cls, path: Union[str, "_os.PathLike[str]"],
                  config: Optional[Union[str, "_os.PathLike[str]"]] = None) -> "Tokenizer":
        """Loads tokenizer.json (+ tokenizer_config.json), tokenizer.model (SentencePiece), the
        tokenizer inside a .gguf file, or a folder holding tokenizer.json or tokenizer.model.

        Args:
            path: the file or folder.
            config: tokenizer_config.json for a tokenizer.json (BOS/EOS, add_bos_token, chat
                template); found beside it when omitted and ``path`` is a folder.
        Raises:
            FileNotFoundError / OSError: missing or unreadable file (the engine's message).
        """
        if not isinstance(path, (str, _os.PathLike)):
            raise TypeError(f"path must be a str or os.PathLike, not {type(path).__name__}")
        cfg = "" if config is None else _os.fspath(config)
        return cls(_core.Tokenizer.from_file(_os.fspath(path), cfg))

    @classmethod
    def from_str(cls, tokenizer_json: str, config_json: Optional[str] = None) -> "Tokenizer":
        """A tokenizer from tokenizer.json text (and tokenizer_config.json text)."""
        return cls(_core.Tokenizer.from_json_string(
            _check_str("tokenizer_json", tokenizer_json, False), _check_str("config_json", config_json)))

    def encode(self, text: str, add_special_tokens: bool = True) -> List[int]:
        """Token ids of ``text``.

        Args:
            text: the text.
            add_special_tokens: add what the tokenizer's post-processor adds (BOS for Llama and
                SentencePiece tokenizers), as HF does.
        """
        return self._t.encode(_check_str("text", text, False), bool(add_special_tokens))

    def __call__(self, text: str, add_special_tokens: bool = True) -> Dict[str, List[int]]:
        """HF style: ``{"input_ids": encode(text, add_special_tokens)}``."""
        return {"input_ids": self.encode(text, add_special_tokens)}

    def decode(self, ids: Union[Sequence[int], np.ndarray], skip_special_tokens: bool = False) -> str:
        """Text of token ids (ValueError for an id outside the vocabulary).

        Args:
            ids: a sequence of ints or a 1-D integer NumPy array.
            skip_special_tokens: leave out special tokens (BOS, EOS, chat markers), as HF does.
        """
        return self._t.decode(ids, bool(skip_special_tokens))

    def apply_chat_template(
        self,
        conversation: Sequence[Dict[str, str]],
        add_generation_prompt: bool = True,
        tokenize: bool = True,
        chat_template: Optional[str] = None,
    ) -> Union[List[int], str]:
        """Renders chat messages through the model's Jinja chat template (as transformers does).

        Args:
            conversation: messages ``[{"role": "system"|"user"|"assistant", "content": str}, ...]``.
            add_generation_prompt: end with the header that starts the assistant's turn (True by
                default here, False in transformers: a prompt is usually rendered to generate).
            tokenize: return token ids (encoded without adding special tokens, since the template
                writes BOS itself); False returns the rendered text.
            chat_template: a Jinja template source to use instead of the model's.
        Raises:
            ValueError: no chat template, a template error, or malformed messages.
        """
        if isinstance(conversation, (str, bytes)) or not isinstance(conversation, Iterable):
            raise TypeError("conversation must be a list of {'role': ..., 'content': ...} dicts")
        pairs = []
        for i, msg in enumerate(conversation):
            if not isinstance(msg, _Mapping):
                raise TypeError(f"conversation[{i}] must be a dict, not {type(msg).__name__}")
            for key in ("role", "content"):
                if key not in msg:
                    raise ValueError(f"conversation[{i}] has no '{key}'")
                if not isinstance(msg[key], str):
                    raise TypeError(
                        f"conversation[{i}]['{key}'] must be a str, not {type(msg[key]).__name__}")
            pairs.append((msg["role"], msg["content"]))
        text = self._t.render_chat(pairs, bool(add_generation_prompt),
                                   _check_str("chat_template", chat_template))
        return self._t.encode(text, False) if tokenize else text

    def convert_ids_to_tokens(self, ids: Union[int, Sequence[int]]) -> Union[str, List[str]]:
        """Vocabulary strings of ids ("Ġhello", "▁the", "<0x0A>")."""
        if isinstance(ids, _numbers.Integral):
            return self._t.id_to_token(ids)
        return [self._t.id_to_token(i) for i in ids]

    def convert_tokens_to_ids(self, tokens: Union[str, Sequence[str]]) -> Union[Optional[int], List[Optional[int]]]:
        """Ids of vocabulary strings (None for a string not in the vocabulary)."""
        if isinstance(tokens, str):
            return self._t.token_to_id(tokens)
        return [self._t.token_to_id(_check_str("token", t, False)) for t in tokens]

    @property
    def vocab_size(self) -> int:
        return self._t.vocab_size

    @property
    def bos_token_id(self) -> Optional[int]:
        return self._t.bos_token_id

    @property
    def eos_token_id(self) -> Optional[int]:
        return self._t.eos_token_id

    @property
    def bos_token(self) -> str:
        return self._t.bos_token

    @property
    def eos_token(self) -> str:
        return self._t.eos_token

    @property
    def chat_template(self) -> Optional[str]:
        return self._t.chat_template or None

    def __len__(self) -> int:
        return self._t.vocab_size

    def __repr__(self) -> str:
        return f"fastkv.Tokenizer(vocab_size={self.vocab_size})"


@_dataclass(frozen=True)
class Timing:
    """Where the time went, as the engine measured it."""

    n_prompt: int
    n_decoded: int
    prefill_s: float
    decode_s: float
    prefill_tokens_per_s: float
    decode_tokens_per_s: float


@_dataclass(frozen=True)
class GenerationOutput:
    """What ``Model.generate`` returns.

    Attributes:
        text: the generated text (special tokens skipped; ends before a matched stop string);
            None when the model has no tokenizer.
        token_ids: the generated ids (an end-of-generation id is not included; the token that
            completed a stop string is).
        prompt_ids: the prompt's ids as the model saw them.
        finish_reason: "stop" (an end-of-generation or stop id), "stop_string", "length"
            (max_new_tokens reached) or "cancelled".
        method: the canonical method spec that ran, e.g. "fastkv:tsp_rate=0.2".
        timing: prefill/decode seconds and tokens per second.
        kv_bytes: bytes of the KV cache (K and V rows kept) at the end.
        kv_bytes_after_prefill: the same right after prefill (what the method saved).
    """

    text: Optional[str]
    token_ids: List[int]
    prompt_ids: List[int]
    finish_reason: str
    method: str
    timing: Timing
    kv_bytes: int
    kv_bytes_after_prefill: int

    @staticmethod
    def _from_core(d: Dict[str, Any]) -> "GenerationOutput":
        return GenerationOutput(
            text=d["text"], token_ids=list(d["token_ids"]), prompt_ids=list(d["prompt_ids"]),
            finish_reason=d["finish_reason"], method=d["method"], timing=Timing(**d["timing"]),
            kv_bytes=d["kv_bytes"], kv_bytes_after_prefill=d["kv_bytes_after_prefill"])


class GenerationStream:
    """Iterator of text pieces from ``Model.generate(..., stream=True)``.

    The generation runs on an engine thread while you iterate; the pieces concatenate to
    ``result.text``. ``close()`` (or leaving a ``with`` block, or dropping the iterator) stops it.
    """

    def __init__(self, core: "_core.GenerationStream") -> None:
        self._s = core

    def __iter__(self) -> "GenerationStream":
        return self

    def __next__(self) -> str:
        return next(self._s)

    def close(self) -> None:
        """Stops the generation (if still running) and waits for the engine thread."""
        self._s.close()

    def __enter__(self) -> "GenerationStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def result(self) -> Optional[GenerationOutput]:
        """The whole ``GenerationOutput`` once the iterator is exhausted or the stream closed
        (None before, even if the engine thread has already finished)."""
        d = self._s.result
        return None if d is None else GenerationOutput._from_core(d)


class Session:
    """One sequence's KV cache under one method: prefill, then extend / decode step by step.

    Made by ``Model.session``. Calls release the GIL; several sessions of one model may run in
    several Python threads at once (one call at a time per session).
    """

    def __init__(self, core: "_core.Session", model: "Model") -> None:
        self._s = core
        self.model = model

    def prefill(self, ids: Union[Sequence[int], np.ndarray]) -> np.ndarray:
        """Runs the prompt (positions 0..n-1) under the method; returns the last position's
        logits, float32 [vocab]. Once per session (ValueError on a second call)."""
        return self._s.prefill(ids)

    def extend(self, ids: Union[Sequence[int], np.ndarray]) -> np.ndarray:
        """Appends tokens after what the cache holds (a question after a context, a chat's next
        turn), at positions next_pos.. ; returns the logits after the last one, [vocab]."""
        return self._s.extend(ids)

    def decode(self, token: int) -> np.ndarray:
        """Appends one token at position ``next_pos`` (= prompt length + step); returns the
        next-token logits, float32 [vocab]."""
        return self._s.decode(token)

    def kept_positions(self) -> Dict[str, Any]:
        """What prefill kept, as original prompt positions (the CLI's --dump-selection):
        ``{"layers": [[np.ndarray int32 per KV head] per layer], "tsp": np.ndarray or None}``;
        "tsp" holds the positions FastKV's Token-Selective Propagation sent on."""
        return self._s.kept_positions()

    def cache_positions(self) -> List[List[np.ndarray]]:
        """Positions each layer's KV heads hold now, including decoded/extended tokens
        ([layer][kv head] -> int32 array, ascending)."""
        return self._s.cache_positions()

    @property
    def kv_bytes(self) -> int:
        """Bytes of the KV rows held now (K and V, all layers and heads)."""
        return self._s.kv_bytes

    @property
    def next_pos(self) -> int:
        """Position the next decoded token takes."""
        return self._s.next_pos

    @property
    def timing(self) -> Timing:
        return Timing(**self._s.timing)

    @property
    def method(self) -> str:
        """Canonical spec of this session's method."""
        return self._s.method

    def __repr__(self) -> str:
        return f"fastkv.Session(method={self.method!r}, next_pos={self.next_pos})"


class Model:
    """A loaded model: an HF folder (config.json + safetensors), a .gguf file, or a known short
    name ("smollm2-135m-instruct", fetched by tools/scripts/fetch_models.py).

    Args:
        path_or_name: the folder, file or short name.
        threads: kernel threads (1..1024); None keeps the default (all cores, or the last count a
            Model was given: the count is process-wide, like torch.set_num_threads).
    Raises:
        FileNotFoundError: no such path and no such model name.
        OSError: the model's files cannot be read or are malformed (the engine's message).
    """

    def __init__(self, path_or_name: Union[str, "_os.PathLike[str]"], threads: Optional[int] = None) -> None:
        if not isinstance(path_or_name, (str, _os.PathLike)):
            raise TypeError(
                f"path_or_name must be a str or os.PathLike, not {type(path_or_name).__name__}")
        n = 0 if threads is None else _check_int("threads", threads, 1, 1024)
        self._m = _core.Model(_os.fspath(path_or_name), n)
        self._tokenizer = Tokenizer(self._m.tokenizer) if self._m.has_tokenizer else None

    @property
    def config(self) -> ModelConfig:
        """The model's configuration (HF config.json names), dict-like and read-only."""
        return ModelConfig(self._m.config)

    @property
    def path(self) -> str:
        return self._m.path

    @property
    def tokenizer(self) -> Tokenizer:
        """The model's tokenizer (OSError when the model ships none)."""
        if self._tokenizer is None:
            self._m.tokenizer  # raises OSError with the engine's reason
        assert self._tokenizer is not None
        return self._tokenizer

    def _prompt_ids(self, prompt: Any, chat: bool, system: Optional[str],
                    chat_template: Optional[str]) -> Any:
        if isinstance(prompt, str):
            return self.tokenizer._t.encode_prompt(
                prompt, bool(chat), _check_str("system", system), _check_str("chat_template", chat_template))
        if chat or system is not None or chat_template is not None:
            raise ValueError("chat, system and chat_template apply to a text prompt, not to ids")
        return prompt

    def generate(
        self,
        prompt_or_ids: Union[str, Sequence[int], np.ndarray],
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int = 0,
        stop: Optional[Union[str, Sequence[Union[str, int]]]] = None,
        method: Optional[Union[str, Method]] = None,
        stream: bool = False,
        chat: bool = False,
        system: Optional[str] = None,
        chat_template: Optional[str] = None,
        **method_options: Any,
    ) -> Union[GenerationOutput, GenerationStream]:
        """Generates a continuation of a prompt under a KV-cache method (the CLI's
        ``fastkv generate``: same tokens and text for the same options).

        Args:
            prompt_or_ids: prompt text (encoded with BOS, or through the chat template when
                ``chat``), or token ids (a sequence of ints or a 1-D integer NumPy array).
            max_new_tokens: tokens to generate at most (>= 0); with the prompt it must fit the
                model's context.
            temperature: 0 = greedy (argmax); > 0 samples from softmax(logits / temperature).
            top_k: sample among the k most likely tokens (0 = off).
            top_p: nucleus sampling: the smallest set with probability >= top_p, in (0, 1]
                (1 = off).
            seed: RNG seed in [0, 2^64); the same seed gives the same tokens on every machine.
            stop: a stop string, or a list of stop strings (str) and/or stop token ids (int)
                (a token id alone must be in a list: ``stop=[2]``). Generation also stops at the
                model's end-of-generation ids. The text ends before a stop string; a stop id is
                not included in token_ids.
            method: the KV method: a spec string ("fastkv", "snapkv:retain_rate=0.1") or a
                ``fastkv.methods`` object (``fastkv.methods.FastKV(tsp_rate=0.2)``); None = full
                KV cache. ``fastkv.methods.available()`` lists the methods.
            stream: return a ``GenerationStream``, an iterator of text pieces as they are
                generated (its ``.result`` is the GenerationOutput at the end).
            chat: wrap a text prompt as a user message in the model's chat template.
            system: system message (with ``chat``).
            chat_template: Jinja template source used instead of the model's (with ``chat``).
            **method_options: options of the method, added to ``method``: tsp_layer, tsp_rate,
                tsp_len, retain_rate, kv_budget, window, kernel, pooling, mode, filter_layer,
                per_query_head (``fastkv.methods.option_help()`` explains each).
        Returns:
            GenerationOutput (text, token_ids, prompt_ids, finish_reason, method, timing,
            kv_bytes, kv_bytes_after_prefill), or a GenerationStream when ``stream``.
        Raises:
            TypeError: an argument of the wrong type or an unknown keyword.
            ValueError: a bad value (unknown method or option, option out of range, token id
                outside the vocabulary, prompt longer than the context), with the engine's
                message.
            OSError: a text prompt or stop string when the model has no tokenizer.
        """
        args = self._generation_args(prompt_or_ids, max_new_tokens, temperature, top_k, top_p,
                                     seed, stop, method, chat, system, chat_template,
                                     method_options)
        if stream:
            return GenerationStream(self._m.stream(*args))
        return GenerationOutput._from_core(self._m.generate(*args))

    def _generation_args(self, prompt_or_ids: Any, max_new_tokens: Any, temperature: Any,
                         top_k: Any, top_p: Any, seed: Any, stop: Any, method: Any, chat: Any,
                         system: Any, chat_template: Any, method_options: Dict[str, Any]) -> tuple:
        spec = _method_spec(method, method_options, "generate")
        max_new = _check_int("max_new_tokens", max_new_tokens, 0, 1 << 30)
        temp = _check_float("temperature", temperature)
        k = _check_int("top_k", top_k, 0, _INT32_MAX)
        p = _check_float("top_p", top_p)
        s = _check_int("seed", seed, 0, 2**64 - 1)
        stop_ids: List[int] = []
        stop_strings: List[str] = []
        # None, one stop string, or a list (tuple, 1-D array) of stop strings and stop token
        # ids. A bare int is refused (stop=5 reads as a count as easily as a token id), and so is
        # any other iterable (bytes, a dict or a set would be taken apart silently).
        if stop is None:
            items: Sequence[Any] = []
        elif isinstance(stop, str):
            items = [stop]
        elif isinstance(stop, (list, tuple)) or (isinstance(stop, np.ndarray) and stop.ndim == 1):
            items = stop
        else:
            hint = f" (a stop token id goes in a list: stop=[{int(stop)}])" if (
                isinstance(stop, _numbers.Integral) and not isinstance(stop, bool)) else ""
            raise TypeError(
                "stop must be None, a str or a list of str (stop strings) and int (stop token "
                f"ids), not {type(stop).__name__}{hint}")
        vocab = self._m.config["vocab_size"]
        for item in items:
            if isinstance(item, str):
                if not item:
                    raise ValueError("stop strings must not be empty")
                stop_strings.append(item)
            elif isinstance(item, _numbers.Integral) and not isinstance(item, bool):
                if not 0 <= int(item) < vocab:
                    raise ValueError(
                        f"stop token id {int(item)} is outside the vocabulary [0, {vocab})")
                stop_ids.append(int(item))
            else:
                raise TypeError(f"stop items must be str or int, not {type(item).__name__}")
        ids = self._prompt_ids(prompt_or_ids, chat, system, chat_template)
        return (ids, max_new, temp, k, p, s, stop_ids, stop_strings, spec)

    def session(self, method: Optional[Union[str, Method]] = None, max_new_tokens: int = 256,
                **method_options: Any) -> Session:
        """A new session (KV cache) of this model under a method.

        Args:
            method: spec string or ``fastkv.methods`` object, as in ``generate``; None = full KV.
            max_new_tokens: tokens that will be appended after prefill (decode rows reserved per
                head; the prompt plus this must fit the context). More may be appended as long
                as positions stay within the context.
            **method_options: options added to ``method`` (tsp_rate=..., retain_rate=...).
        """
        spec = _method_spec(method, method_options, "session")
        n = _check_int("max_new_tokens", max_new_tokens, 0, 1 << 30)
        return Session(self._m.session(spec, n), self)

    def logits(self, ids: Union[Sequence[int], np.ndarray]) -> np.ndarray:
        """Logits of every prompt position, float32 [n, vocab], with the full KV cache (for
        perplexity and fidelity; row i predicts token i + 1)."""
        return self._m.logits(ids)

    def __repr__(self) -> str:
        c = self._m.config
        return (f"fastkv.Model({self.path!r}, {c['model_type']}, layers={c['num_hidden_layers']}, "
                f"vocab={c['vocab_size']})")


def known_models() -> List[str]:
    """Short model names ``Model`` resolves (in $FASTKV_MODEL_DIR or ~/.cache/fastkv/models)."""
    return list(_core.known_model_names())
