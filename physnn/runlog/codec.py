"""Encodings of what a run file stores: strict/loose JSON, checkpoint trees of tensors and arrays as
JSON plus raw bytes (never pickle), and snapshots of the random number generators."""

from __future__ import annotations

import json
import math
import os
import random
from collections import OrderedDict
from typing import Any, Mapping

import numpy as np
import torch


# ---------------------------------------------------------------- JSON codecs
def _strict_json(obj: Any, where: str) -> Any:
    """Plain JSON (configs): str keys, lists, numbers, strings; names the bad entry otherwise."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        if not math.isfinite(obj):
            raise ValueError(f"{where} = {obj} is not a finite number; JSON cannot hold it")
        return float(obj)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise TypeError(f"{where} has a key {k!r} of type {type(k).__name__}; JSON keys must be strings")
            out[k] = _strict_json(v, f"{where}[{k!r}]")
        return out
    if isinstance(obj, (list, tuple)):
        return [_strict_json(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    raise TypeError(
        f"{where} is a {type(obj).__name__}; a run file stores configurations as JSON "
        f"(dicts, lists, numbers, strings, None) — convert it first"
    )


def _loose_json(obj: Any, depth: int = 0) -> Any:
    """Best-effort JSON for event fields and describe() output: never raises (events come from drivers)."""
    if depth > 20:
        return repr(obj)[:200]
    if obj is None or isinstance(obj, (bool, str, int)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else repr(obj)
    if isinstance(obj, (np.generic,)):
        return _loose_json(obj.item(), depth + 1)
    if isinstance(obj, (torch.Tensor, np.ndarray)):
        arr = obj.detach().cpu().numpy() if isinstance(obj, torch.Tensor) else obj
        if arr.size <= 64 and arr.dtype != object:
            return _loose_json(arr.tolist(), depth + 1)
        return {"shape": list(arr.shape), "dtype": str(arr.dtype), "note": "array too large for an event; not stored"}
    if isinstance(obj, Mapping):
        return {str(k): _loose_json(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_loose_json(v, depth + 1) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, BaseException):
        return f"{type(obj).__name__}: {obj}"
    return repr(obj)[:1000]


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")


# ------------------------------------------------------ checkpoint tree codec
_TAGS = frozenset({"__tensor__", "__ndarray__", "__npscalar__", "__tuple__", "__dict__", "__odict__", "__float__"})


class _Packer:
    """Turns a tree of dicts/lists/tuples/tensors/arrays/scalars into JSON + one byte buffer.

    Tensors and arrays become ``{"__tensor__": i}`` references into a table of
    (dtype, shape, offset, nbytes); their raw bytes are concatenated. Python
    floats round-trip exactly through JSON (shortest repr); non-finite floats,
    tuples, dicts with non-string keys and OrderedDicts (with a state dict's
    ``_metadata``) are tagged so that they come back as the same types.
    """

    def __init__(self) -> None:
        self.table: list[dict[str, Any]] = []
        self.chunks: list[Any] = []  # bytes, or uint8 arrays viewing a tensor
        self.size = 0

    def _add(self, raw: Any, entry: dict[str, Any]) -> int:
        """``raw``: the array's bytes (``bytes``, or a uint8 array that views a tensor's memory: no copy)."""
        entry.update(offset=self.size, nbytes=len(raw))
        self.table.append(entry)
        self.chunks.append(raw)
        self.size += len(raw)
        return len(self.table) - 1

    def _tensor(self, t: torch.Tensor, where: str) -> int:
        if t.layout != torch.strided or t.is_quantized:
            raise TypeError(f"{where} is a {t.layout} tensor; only dense (strided) tensors can be stored")
        t = t.detach().to("cpu").resolve_conj().resolve_neg().contiguous()
        # a view of the tensor's memory, not a copy: the checkpoint is written before the caller goes on
        raw = t.reshape(-1).view(torch.uint8).numpy() if t.numel() else b""
        return self._add(raw, {"kind": "torch", "dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape)})

    def _ndarray(self, a: np.ndarray, where: str) -> int:
        if a.dtype.hasobject or a.dtype.fields is not None:
            raise TypeError(
                f"{where} is a numpy array of dtype {a.dtype}; object and structured arrays cannot be "
                f"stored without pickle"
            )
        return self._add(
            np.ascontiguousarray(a).tobytes(), {"kind": "numpy", "dtype": a.dtype.str, "shape": list(a.shape)}
        )

    def pack(self, obj: Any, where: str) -> Any:
        if obj is None or isinstance(obj, (bool, str)):
            return obj
        if isinstance(obj, int):
            return obj
        if isinstance(obj, float):
            return obj if math.isfinite(obj) else {"__float__": repr(obj)}
        if isinstance(obj, torch.Tensor):
            return {"__tensor__": self._tensor(obj, where)}
        if isinstance(obj, np.ndarray):
            return {"__ndarray__": self._ndarray(obj, where)}
        if isinstance(obj, np.generic):
            return {"__npscalar__": self._ndarray(np.asarray(obj), where)}
        if isinstance(obj, tuple):
            return {"__tuple__": [self.pack(v, f"{where}[{i}]") for i, v in enumerate(obj)]}
        if isinstance(obj, list):
            return [self.pack(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        if isinstance(obj, OrderedDict):
            items = [[self.pack(k, f"{where}<key {k!r}>"), self.pack(v, f"{where}[{k!r}]")] for k, v in obj.items()]
            meta = getattr(obj, "_metadata", None)
            out: dict[str, Any] = {"__odict__": items}
            if meta is not None:
                out["_metadata"] = self.pack(dict(meta), f"{where}._metadata")
            return out
        if isinstance(obj, Mapping):
            keys = list(obj.keys())
            if all(isinstance(k, str) for k in keys) and not any(k in _TAGS for k in keys):
                return {k: self.pack(v, f"{where}[{k!r}]") for k, v in obj.items()}
            return {
                "__dict__": [
                    [self.pack(k, f"{where}<key {k!r}>"), self.pack(v, f"{where}[{k!r}]")] for k, v in obj.items()
                ]
            }
        raise TypeError(
            f"{where} is a {type(obj).__qualname__}; a checkpoint stores tensors, numpy arrays, numbers, strings, "
            f"None and lists/tuples/dicts of them (never pickle) — convert it first"
        )


def _unpack(obj: Any, table: list[dict[str, Any]], data: bytes) -> Any:
    if isinstance(obj, list):
        return [_unpack(v, table, data) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__odict__" in obj:
        od = OrderedDict((_unpack(k, table, data), _unpack(v, table, data)) for k, v in obj["__odict__"])
        if "_metadata" in obj:
            od._metadata = _unpack(obj["_metadata"], table, data)  # type: ignore[attr-defined]
        return od
    if len(obj) == 1:
        ((tag, val),) = obj.items()
        if tag == "__tensor__":
            return _restore_tensor(table[val], data)
        if tag == "__ndarray__":
            return _restore_ndarray(table[val], data)
        if tag == "__npscalar__":
            return _restore_ndarray(table[val], data)[()]
        if tag == "__tuple__":
            return tuple(_unpack(v, table, data) for v in val)
        if tag == "__dict__":
            return {_unpack(k, table, data): _unpack(v, table, data) for k, v in val}
        if tag == "__float__":
            return float(val)
    return {k: _unpack(v, table, data) for k, v in obj.items()}


def _restore_tensor(entry: Mapping[str, Any], data: bytes) -> torch.Tensor:
    dtype = getattr(torch, entry["dtype"], None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown torch dtype {entry['dtype']!r}")
    raw = data[entry["offset"] : entry["offset"] + entry["nbytes"]]
    shape = tuple(entry["shape"])
    if not raw:
        return torch.empty(shape, dtype=dtype)
    # .clone(): torch's allocator aligns to 64 bytes, a bytearray does not. Vectorised kernels
    # (Adam's updates, MKL) can round differently on unaligned memory, which would make a resumed
    # run differ from an uninterrupted one in the last bits.
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(dtype).reshape(shape).clone()


def _restore_ndarray(entry: Mapping[str, Any], data: bytes) -> np.ndarray:
    raw = data[entry["offset"] : entry["offset"] + entry["nbytes"]]
    return np.frombuffer(raw, dtype=np.dtype(entry["dtype"])).reshape(entry["shape"]).copy()


# ------------------------------------------------------------------ RNG state
def _python_state() -> tuple[int, np.ndarray, Any]:
    """``random.getstate()`` with its 625 words as a uint32 array (2.5 KiB of bytes in a checkpoint, instead of
    6 KiB of JSON numbers in every manifest)."""
    version, internal, gauss = random.getstate()
    return version, np.asarray(internal, dtype=np.uint32), gauss


def capture_rng(
    *,
    torch_generators: Mapping[str, torch.Generator] | None = None,
    numpy_generators: Mapping[str, np.random.Generator] | None = None,
    cuda: bool | None = None,
) -> dict[str, Any]:
    """Snapshot of the random number generators a training run draws from.

    Always: Python's ``random``, NumPy's legacy global state and torch's CPU
    generator; plus the named ``torch.Generator``/``numpy.random.Generator``
    objects given, and the CUDA generators when CUDA is initialised (or
    ``cuda=True``). Store it with :meth:`RunWriter.checkpoint` and give it back
    to :func:`restore_rng` to continue the exact same random streams.
    """
    state: dict[str, Any] = {
        "python": _python_state(),
        "numpy_global": np.random.get_state(),
        "torch_global": torch.get_rng_state(),
    }
    if cuda is None:
        cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    if cuda:
        state["torch_cuda"] = list(torch.cuda.get_rng_state_all())
    if torch_generators:
        state["torch"] = {name: g.get_state() for name, g in torch_generators.items()}
    if numpy_generators:
        state["numpy"] = {name: g.bit_generator.state for name, g in numpy_generators.items()}
    return state


def restore_rng(
    state: Mapping[str, Any],
    *,
    torch_generators: Mapping[str, torch.Generator] | None = None,
    numpy_generators: Mapping[str, np.random.Generator] | None = None,
) -> None:
    """Put every generator back where :func:`capture_rng` found it."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(int(v) for v in internal), gauss))
    np.random.set_state(state["numpy_global"])
    torch.set_rng_state(state["torch_global"])
    if "torch_cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["torch_cuda"])
    for kind, gens in (("torch", torch_generators), ("numpy", numpy_generators)):
        saved = state.get(kind, {})
        for name, g in (gens or {}).items():
            if name not in saved:
                raise KeyError(f"the RNG snapshot has no {kind} generator {name!r}; it has {sorted(saved)}")
            if kind == "torch":
                g.set_state(saved[name])
            else:
                g.bit_generator.state = saved[name]
