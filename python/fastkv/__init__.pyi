# Type stubs of the fastkv package (the docstrings in __init__.py explain every argument).
import os
from collections.abc import Mapping
from typing import Any, Dict, Iterator, List, Literal, Optional, Sequence, Union, overload

import numpy as np
import numpy.typing as npt

from . import methods as methods
from .methods import Method as Method

__version__: str

_Ids = Union[Sequence[int], npt.NDArray[np.integer[Any]]]
_Path = Union[str, os.PathLike[str]]

class ModelConfig(Mapping[str, Any]):
    def __init__(self, values: Dict[str, Any]) -> None: ...
    def __getitem__(self, key: str) -> Any: ...
    def __iter__(self) -> Iterator[str]: ...
    def __len__(self) -> int: ...
    def __getattr__(self, key: str) -> Any: ...

class Tokenizer:
    @classmethod
    def from_file(cls, path: _Path, config: Optional[_Path] = None) -> Tokenizer: ...
    @classmethod
    def from_str(cls, tokenizer_json: str, config_json: Optional[str] = None) -> Tokenizer: ...
    def encode(self, text: str, add_special_tokens: bool = True) -> List[int]: ...
    def __call__(self, text: str, add_special_tokens: bool = True) -> Dict[str, List[int]]: ...
    def decode(self, ids: _Ids, skip_special_tokens: bool = False) -> str: ...
    def apply_chat_template(
        self,
        conversation: Sequence[Dict[str, str]],
        add_generation_prompt: bool = True,
        tokenize: bool = True,
        chat_template: Optional[str] = None,
    ) -> Union[List[int], str]: ...
    def convert_ids_to_tokens(self, ids: Union[int, Sequence[int]]) -> Union[str, List[str]]: ...
    def convert_tokens_to_ids(
        self, tokens: Union[str, Sequence[str]]
    ) -> Union[Optional[int], List[Optional[int]]]: ...
    @property
    def vocab_size(self) -> int: ...
    @property
    def bos_token_id(self) -> Optional[int]: ...
    @property
    def eos_token_id(self) -> Optional[int]: ...
    @property
    def bos_token(self) -> str: ...
    @property
    def eos_token(self) -> str: ...
    @property
    def chat_template(self) -> Optional[str]: ...
    def __len__(self) -> int: ...

class Timing:
    n_prompt: int
    n_decoded: int
    prefill_s: float
    decode_s: float
    prefill_tokens_per_s: float
    decode_tokens_per_s: float

class GenerationOutput:
    text: Optional[str]
    token_ids: List[int]
    prompt_ids: List[int]
    finish_reason: str
    method: str
    timing: Timing
    kv_bytes: int
    kv_bytes_after_prefill: int

class GenerationStream(Iterator[str]):
    def __iter__(self) -> GenerationStream: ...
    def __next__(self) -> str: ...
    def close(self) -> None: ...
    def __enter__(self) -> GenerationStream: ...
    def __exit__(self, *exc: Any) -> None: ...
    @property
    def result(self) -> Optional[GenerationOutput]: ...

class Session:
    model: Model
    def prefill(self, ids: _Ids) -> npt.NDArray[np.float32]: ...
    def extend(self, ids: _Ids) -> npt.NDArray[np.float32]: ...
    def decode(self, token: int) -> npt.NDArray[np.float32]: ...
    def kept_positions(self) -> Dict[str, Any]: ...
    def cache_positions(self) -> List[List[npt.NDArray[np.int32]]]: ...
    @property
    def kv_bytes(self) -> int: ...
    @property
    def next_pos(self) -> int: ...
    @property
    def timing(self) -> Timing: ...
    @property
    def method(self) -> str: ...

class Model:
    def __init__(self, path_or_name: _Path, threads: Optional[int] = None) -> None: ...
    @property
    def config(self) -> ModelConfig: ...
    @property
    def path(self) -> str: ...
    @property
    def tokenizer(self) -> Tokenizer: ...
    @overload
    def generate(
        self,
        prompt_or_ids: Union[str, _Ids],
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int = 0,
        stop: Optional[Union[str, int, Sequence[Union[str, int]]]] = None,
        method: Optional[Union[str, Method]] = None,
        stream: Literal[False] = False,
        chat: bool = False,
        system: Optional[str] = None,
        chat_template: Optional[str] = None,
        **method_options: Any,
    ) -> GenerationOutput: ...
    @overload
    def generate(
        self,
        prompt_or_ids: Union[str, _Ids],
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int = 0,
        stop: Optional[Union[str, int, Sequence[Union[str, int]]]] = None,
        method: Optional[Union[str, Method]] = None,
        *,
        stream: Literal[True],
        chat: bool = False,
        system: Optional[str] = None,
        chat_template: Optional[str] = None,
        **method_options: Any,
    ) -> GenerationStream: ...
    def session(
        self, method: Optional[Union[str, Method]] = None, max_new_tokens: int = 256, **method_options: Any
    ) -> Session: ...
    def logits(self, ids: _Ids) -> npt.NDArray[np.float32]: ...

def known_models() -> List[str]: ...
