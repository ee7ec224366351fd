"""KV-cache compression methods as objects, one class per method of the C++ registry.

The classes are generated when the module is imported, from the registry's method names
(``policy_names()``) and the options each method accepts (``method_options()``), so a method
added to ``src/kv/registry.cc`` appears here with no Python code. Like kvpress presses::

    import fastkv
    m = fastkv.Model("smollm2-135m-instruct")
    out = m.generate("Summarise: ...", method=fastkv.methods.FastKV(tsp_rate=0.2, retain_rate=0.1))

Every object has a canonical spec string (``FastKV(tsp_rate=0.2).spec == "fastkv:tsp_rate=0.2"``);
a ``method=`` argument accepts either. Values are checked by the engine's one method-spec parser
when the object is built; checks that need the model (layer ranges) run when it is used.
"""

from __future__ import annotations

import inspect
import math
import numbers
from typing import Any, Dict, List, Tuple, Type

from . import _core

__all__ = ["Method", "available", "from_spec", "option_help"]

_KIND_TYPES = {"int": int, "float": float, "str": str, "bool": bool}


def _option_text(key: str, kind: str, value: Any) -> str:
    """Text form of one option value for the engine's parser; TypeError for a wrong type."""
    if kind == "bool":
        if not isinstance(value, bool):
            raise TypeError(f"method option {key} must be a bool, not {type(value).__name__}")
        return "true" if value else "false"
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"method option {key} must be an int, not {type(value).__name__}")
        return str(int(value))
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"method option {key} must be a number, not {type(value).__name__}")
        as_float = float(value)
        if not math.isfinite(as_float):
            raise ValueError(f"method option {key} must be a finite number, got {as_float!r}")
        return repr(as_float)
    if not isinstance(value, str):
        raise TypeError(f"method option {key} must be a str, not {type(value).__name__}")
    return value


def _option_kinds() -> Dict[str, Tuple[str, str]]:
    return {o["key"]: (o["kind"], o["help"]) for o in _core.method_option_infos()}


_KINDS = _option_kinds()


def option_pairs(options: Dict[str, Any]) -> List[Tuple[str, str]]:
    """(key, text) pairs of the options that are set (None means the method's default)."""
    pairs = []
    for key, value in options.items():
        if value is None:
            continue
        kind = _KINDS[key][0] if key in _KINDS else "str"
        pairs.append((key, _option_text(key, kind, value)))
    return pairs


def option_help() -> Dict[str, str]:
    """Every method option the engine knows, with its help text."""
    return {key: f"{kind}: {text}" for key, (kind, text) in _KINDS.items()}


class Method:
    """A KV method with its options; subclasses are generated from the C++ registry.

    ``spec`` is the canonical method-spec string the engine parses, e.g.
    ``"fastkv:tsp_rate=0.2,retain_rate=0.1"``.
    """

    name: str = ""
    option_keys: Tuple[str, ...] = ()

    def __init__(self, **options: Any) -> None:
        if type(self) is Method:
            raise TypeError("Method is abstract: use one of fastkv.methods.available()")
        for key in options:
            if key not in self.option_keys:
                valid = ", ".join(self.option_keys) or "none"
                raise TypeError(
                    f"{type(self).__name__}() got an unexpected keyword argument '{key}' "
                    f"(options of {self.name}: {valid})"
                )
        self._options = {k: v for k, v in options.items() if v is not None}
        self._spec = _core.canonical_method_spec(self.name, option_pairs(self._options))

    @property
    def spec(self) -> str:
        """Canonical method spec, e.g. ``"fastkv:tsp_rate=0.2"``."""
        return self._spec

    @property
    def options(self) -> Dict[str, Any]:
        """The options that were set (the others take the method's defaults)."""
        return dict(self._options)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._options.items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Method) and other.spec == self.spec

    def __hash__(self) -> int:
        return hash(self._spec)


def class_name(method: str) -> str:
    """Python class name of a registry name: first letter upper case, 'kv'/'llm' endings as
    acronyms, names with digits in capitals (fastkv -> FastKV, streamingllm -> StreamingLLM,
    h2o -> H2O). Attribute lookup on this module ignores case, so GemFilter works too."""
    if any(c.isdigit() for c in method):
        return method.upper()
    for acronym in ("kv", "llm"):
        if method.endswith(acronym) and len(method) > len(acronym):
            stem = method[: -len(acronym)]
            return stem[:1].upper() + stem[1:] + acronym.upper()
    return method[:1].upper() + method[1:]


def _make_class(method: str) -> Type[Method]:
    infos = _core.method_options(method)
    keys = tuple(i["key"] for i in infos)

    def __init__(self: Method, **options: Any) -> None:
        Method.__init__(self, **options)

    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    for info in infos:
        params.append(
            inspect.Parameter(
                info["key"],
                inspect.Parameter.KEYWORD_ONLY,
                default=None,
                annotation=_KIND_TYPES[info["kind"]],
            )
        )
    __init__.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    lines = [f"KV method '{method}' (method spec \"{method}:key=value,...\").", ""]
    if infos:
        lines.append("Options (None or omitted: the method's default):")
        for info in infos:
            lines.append(f"    {info['key']} ({info['kind']}): {info['help']}")
    else:
        lines.append("Takes no options.")
    doc = "\n".join(lines)
    __init__.__doc__ = doc
    name = class_name(method)
    __init__.__qualname__ = f"{name}.__init__"
    return type(
        name,
        (Method,),
        {"name": method, "option_keys": keys, "__init__": __init__, "__doc__": doc,
         "__module__": __name__},
    )


_CLASSES: Dict[str, Type[Method]] = {}
for _method in _core.policy_names():
    _cls = _make_class(_method)
    _CLASSES[_method] = _cls
    globals()[_cls.__name__] = _cls
    __all__.append(_cls.__name__)
del _method, _cls


def available() -> List[str]:
    """Registry names of every method, e.g. ['fullkv', 'fastkv', 'snapkv', ...]."""
    return list(_CLASSES)


def from_spec(spec: str) -> Method:
    """The method object of a spec string ("snapkv:retain_rate=0.1")."""
    if not isinstance(spec, str):
        raise TypeError(f"spec must be a str, not {type(spec).__name__}")
    canonical = _core.canonical_method_spec(spec, [])
    name, _, rest = canonical.partition(":")
    options: Dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        key, _, text = item.partition("=")
        kind = _KINDS[key][0]
        options[key] = (
            int(text) if kind == "int"
            else float(text) if kind == "float"
            else text == "true" if kind == "bool"
            else text
        )
    return _CLASSES[name](**options)


def __getattr__(attr: str) -> Type[Method]:
    # Case-insensitive class lookup: fastkv.methods.GemFilter, fastkv.methods.PyramidInfer.
    for method, cls in _CLASSES.items():
        if attr.lower() == method:
            return cls
    raise AttributeError(f"module 'fastkv.methods' has no method '{attr}'; available: "
                         + ", ".join(c.__name__ for c in _CLASSES.values()))


def __dir__() -> List[str]:
    return sorted(list(globals()) + [c.__name__ for c in _CLASSES.values()])
