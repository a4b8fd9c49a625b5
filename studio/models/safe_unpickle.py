"""Reading a torch.save file without running its pickle.

A torch.save file is a zip: <name>/data.pkl (a pickle) and <name>/data/<key> (raw tensor bytes).
Unpickling calls whatever the pickle names, so a hostile file runs code the moment torch.load(
weights_only=False) reads it. Here the pickle goes through pickle.Unpickler with find_class as an
allow-list (Python's documented way to restrict globals): a name not on it raises before anything is
called, so nothing runs. The tensor bytes are read with the stdlib zipfile and torch.frombuffer.

Why not torch.load(weights_only=True) with safe_globals: it also refuses os.system, but its list is
torch's (some 140 globals in 2.13, changed from release to release), and its refusal is a multi-line
message whose wording changes with it. This list is exactly what the course's file needs, fixed by us;
a refusal is one line naming the global; and a torch upgrade cannot change what a file may contain.
The cost is reading the zip layout ourselves, stable since torch 1.6 (the older non-zip format is refused).
"""

from __future__ import annotations

import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path

import torch

# torch pickles a storage's element type as a global: torch.FloatStorage etc.
STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}


class UnsafePickleError(ValueError):
    """The file cannot be read safely, or is not a torch.save file; one line naming the file and the problem."""


class PickledObject:
    """What an allowed class of the file (e.g. the course's GPTConfig) becomes: its saved fields in `fields`,
    and `name`, the global it was pickled as. None of the original class's code runs, or is even imported."""

    name = "?"

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"{self.name}: expected its fields as a dict, got {type(state).__name__}")
        self.fields = dict(state)


class _StorageType:
    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    """torch._utils._rebuild_tensor_v2's job: a view of a storage. as_strided refuses one reaching past its end."""
    if not isinstance(storage, torch.Tensor):
        raise pickle.UnpicklingError("a tensor whose storage is not one of the file's")
    tensor = torch.as_strided(storage, tuple(size), tuple(stride), int(storage_offset))
    if tensor.numel() > storage.numel():  # overlapping strides: a small file posing as huge weights (memory, not code)
        raise pickle.UnpicklingError(f"a tensor of {tensor.numel()} elements over a storage of {storage.numel()}")
    return tensor


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    if not isinstance(data, torch.Tensor):
        raise pickle.UnpicklingError("a parameter that is not a tensor")
    return data


ALLOWED_FUNCTIONS = {
    "collections.OrderedDict": OrderedDict,  # state_dict() and a tensor's (empty) backward hooks
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor_v2,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
}


class _AllowListUnpickler(pickle.Unpickler):
    def __init__(self, file, archive: zipfile.ZipFile, prefix: str, classes: dict[str, type[PickledObject]]):
        super().__init__(file)
        self.archive, self.prefix, self.classes = archive, prefix, classes
        self.storages: dict[str, torch.Tensor] = {}

    def find_class(self, module: str, name: str):
        qualified = f"{module}.{name}"
        if qualified in ALLOWED_FUNCTIONS:
            return ALLOWED_FUNCTIONS[qualified]
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(STORAGE_DTYPES[name])
        if qualified in self.classes:
            return self.classes[qualified]
        raise UnsafePickleError(f"global {qualified} is not allowed")

    def persistent_load(self, pid):
        # torch.save writes ("storage", storage type, key, location, number of elements)
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise pickle.UnpicklingError(f"unknown persistent id {str(pid)[:60]}")
        _, storage_type, key, _location, numel = pid
        if key not in self.storages:
            self.storages[key] = self._read_storage(str(key), storage_type.dtype, int(numel))
        return self.storages[key]

    def _read_storage(self, key: str, dtype: torch.dtype, numel: int) -> torch.Tensor:
        record = f"{self.prefix}data/{key}"
        try:
            info = self.archive.getinfo(record)
        except KeyError:
            raise pickle.UnpicklingError(f"tensor data {record} is missing") from None
        expected = numel * torch.empty((), dtype=dtype).element_size()
        if info.file_size != expected:  # checked before reading: a lying header cannot make us allocate
            raise pickle.UnpicklingError(f"{record} holds {info.file_size} bytes, its tensor needs {expected}")
        if numel == 0:
            return torch.empty(0, dtype=dtype)
        return torch.frombuffer(bytearray(self.archive.read(record)), dtype=dtype)


def load_torch_file(path: str | Path, classes: dict[str, type[PickledObject]] | None = None):
    """The object a torch.save file holds, built from the allow-list only: dicts, lists, strings, numbers,
    OrderedDict, CPU tensors, and instances of `classes` ({"module.Name": PickledObject subclass}).
    Raises UnsafePickleError (one line, naming path) for a refused global and for anything unreadable."""
    path = Path(path)
    classes = classes or {}
    try:
        with zipfile.ZipFile(path) as archive:
            prefix = _archive_prefix(path, archive)
            byteorder = archive.read(prefix + "byteorder").decode() if prefix + "byteorder" in archive.namelist() else "little"
            if byteorder != "little":
                raise UnsafePickleError(f"{path}: saved on a {byteorder}-endian machine; only little-endian files are read")
            with archive.open(prefix + "data.pkl") as pickled:
                return _AllowListUnpickler(pickled, archive, prefix, classes).load()
    except UnsafePickleError as error:
        message = str(error)
        raise UnsafePickleError(message if message.startswith(str(path)) else f"{path}: refused: {message}; nothing was run") from None
    except FileNotFoundError:
        raise UnsafePickleError(f"{path}: file not found") from None
    except zipfile.BadZipFile:
        raise UnsafePickleError(f"{path}: not a torch.save zip file (a file of torch < 1.6, or not a checkpoint)") from None
    except Exception as error:  # a hostile or damaged pickle can raise almost anything from the unpickler
        raise UnsafePickleError(f"{path}: damaged torch.save file ({type(error).__name__}: {error})") from None


def _archive_prefix(path: Path, archive: zipfile.ZipFile) -> str:
    """'<name>/': torch.save puts every record under one folder named after the file it first wrote."""
    pickles = [name for name in archive.namelist() if name.endswith("/data.pkl") and name.count("/") == 1]
    if len(pickles) != 1:
        raise UnsafePickleError(f"{path}: a zip file, but not one torch.save wrote (no single <name>/data.pkl)")
    return pickles[0][: -len("data.pkl")]
