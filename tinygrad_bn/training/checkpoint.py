"""Checkpoints as ``.npz`` files that load without pickle: loading a file never runs code.

Format (version 2)
------------------
A checkpoint is a zip archive of ``.npy`` members, stored uncompressed, in this order:

- ``__tinygrad_bn_checkpoint__.npy``: a 0-d str array, the tag ``"tinygrad_bn checkpoint v2"``;
- ``__tinygrad_bn_keys__.npy``: a 1-d uint8 array holding the key names as an ASCII JSON list
  (``\\uXXXX`` escapes keep every Python str exact: NULs, lone surrogates, any length);
- ``arr_0.npy``, ``arr_1.npy``, ...: the arrays; ``arr_i`` holds ``keys[i]``, in dict order.

Key names never become zip member names or keyword arguments, so every str is a valid key
("file", "allow_pickle", "a/b", "../x", "", unicode). ``np.load(path)`` still reads a
checkpoint (as ``arr_0``, ...). Version-1 files, whose members are named after their keys
(``np.savez``), still load.

What is stored: ndarrays, Tensors (their ``.data``), NumPy scalars and Python numbers whose
dtype is bool, int, uint, float, complex, datetime, timedelta, bytes or str. Object arrays are
refused, since only pickle could store them; structured dtypes are refused too.

Limits on load (hostile files)
------------------------------
Every size is checked against what the archive declares BEFORE anything is decompressed or
allocated, so a tiny file cannot make ``load`` allocate terabytes:

- the uncompressed size of all members together is at most ``max_bytes`` (``MAX_BYTES``,
  4 GiB); one member counts against the same limit;
- a compressed member larger than ``RATIO_FREE_BYTES`` (1 MiB) expands at most ``max_ratio``
  times (``MAX_RATIO``, 200): a zip bomb is refused even under ``max_bytes``;
- each ``.npy`` header (shape, dtype) must declare exactly the bytes its member holds, so an
  array is never allocated bigger than the member that fills it;
- dtypes with Python objects (pickle), unsupported dtypes, ``.npy`` versions other than 1.0
  and 2.0, duplicate member names or keys, absolute or ``..`` member names, encrypted members
  and members the format does not list are refused. Fortran-ordered arrays are plain data and
  load as such.

Every refusal is a ValueError naming the file and the member or limit at fault.

Atomic saves
------------
``save`` writes a temporary file in the target folder (so the final ``os.replace`` is atomic),
named ``.tmp-tinygrad_bn-<pid>-<random>@<host>.npz``, created with mode ``0o666`` so the umask
(and default ACLs) give it the mode of any normally created file. The file is fsynced, renamed
over the target and the folder fsynced: a crash at any point leaves either the old checkpoint
or the complete new one. Temporary files of crashed saves are removed by the next save into the
same folder; see ``_is_stale`` for how a crashed save is told from one still running.
"""
from __future__ import annotations

import io
import json
import math
import os
import re
import socket
import time
import zipfile
import zlib
from collections import OrderedDict

import numpy as np

_FORMAT_KEY = "__tinygrad_bn_checkpoint__"  # member holding the format tag
_INDEX_KEY = "__tinygrad_bn_keys__"  # member holding the key names (version 2)
_FORMAT = "tinygrad_bn checkpoint v2"
_FORMAT_V1 = "tinygrad_bn checkpoint v1"  # members named after their keys; still loads

MAX_BYTES = 4 * 2**30  # uncompressed bytes of all members together
MAX_RATIO = 200  # uncompressed / compressed size of one compressed member
RATIO_FREE_BYTES = 2**20  # members up to this size are not ratio-checked (zeros compress 1000x)
MAX_INDEX_BYTES = 64 * 2**20  # the JSON list of key names
STALE_SECONDS = 3600  # age after which a temp file whose writer we cannot check is removed

_KINDS = "biufcmMSU"  # dtype kinds stored: bool, ints, floats, complex, times, bytes, str
_MAX_HEADER = 10_000  # bytes of a .npy header dict (NumPy's own default limit)
_TMP_PREFIX = ".tmp-tinygrad_bn-"
_TMP_NAME = re.compile(r"\.tmp-tinygrad_bn-(\d+)-[0-9a-f]{8}@(.*)\.npz\Z", re.DOTALL)
_TMP_NAME_V1 = re.compile(r"\.tmp-[a-z0-9_]{8}\.npz\Z")  # mkstemp names of version 1
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed, so equal states give byte-identical files


class _Refused(ValueError):
    """Why a file is not loaded (``load`` adds the path)."""


class CheckpointTypeError(ValueError, TypeError):
    """``save`` of something that is not a Module or a dict: a ValueError, as every error of
    this module (the contract), and a TypeError, as Python would call it."""


# -- save ---------------------------------------------------------------------------------------

def save(obj, path) -> str:
    """Write a module's ``state_dict()`` (or a dict of arrays) to ``path`` atomically.

    Every key must be a str (any str) and every value an array (see the module docstring);
    otherwise a ValueError names the key and nothing is written. The file appears complete or
    not at all: it is written under a temporary name in the same folder, fsynced and renamed
    into place, so a crash (even ``kill -9``) leaves the old checkpoint intact. Folders are
    created as needed. Returns the path written (``.npz`` added if missing).
    """
    state = obj.state_dict() if hasattr(obj, "state_dict") else obj
    if not isinstance(state, dict):
        raise CheckpointTypeError(f"save() takes a Module or a dict of arrays, got "
                                  f"{type(obj).__name__}")
    arrays = [(k, _as_array(k, v)) for k, v in state.items()]  # checked before touching disk
    _index_bytes([k for k, _ in arrays])
    path = os.fspath(path)
    if not path.endswith(".npz"):
        path += ".npz"
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    _remove_stale_temps(folder)
    fd, tmp = _create_temp(folder)
    try:
        with os.fdopen(fd, "wb") as f:
            _write_archive(f, arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_folder(folder)
    return path


def _as_array(key, value) -> np.ndarray:
    """The array stored for one entry; ValueError naming the key if it cannot be stored."""
    if not isinstance(key, str):
        raise ValueError(f"checkpoint key {key!r} is a {type(key).__name__}, not a str")
    if not isinstance(value, np.ndarray) and isinstance(getattr(value, "data", None), np.ndarray):
        value = value.data  # a Tensor
    if not isinstance(value, (np.ndarray, np.generic, bool, int, float, complex)):
        raise ValueError(f"checkpoint entry {key!r} is a {type(value).__name__}, not an array "
                         "(store ndarrays, Tensors or numbers)")
    try:
        a = np.asarray(value)
    except (OverflowError, ValueError, TypeError) as e:
        raise ValueError(f"checkpoint entry {key!r} is not a storable array: {e}") from None
    if a.dtype.hasobject:
        raise ValueError(f"checkpoint entry {key!r} holds Python objects (dtype {a.dtype}), which "
                         "only pickle could store; checkpoints never use pickle")
    if a.dtype.kind not in _KINDS or a.dtype.names is not None or a.dtype.subdtype is not None:
        raise ValueError(f"checkpoint entry {key!r} has dtype {a.dtype}, which checkpoints do "
                         "not store (numbers, bools, times, bytes and str only)")
    return a


def _index_bytes(keys) -> bytes:
    """The key names as ASCII JSON, the content of the index member."""
    data = json.dumps(keys, ensure_ascii=True).encode("ascii")
    if len(data) > MAX_INDEX_BYTES:
        raise ValueError(f"the key names take {_human(len(data))}, more than the "
                         f"{_human(MAX_INDEX_BYTES)} a checkpoint allows")
    return data


def _write_archive(f, arrays) -> None:
    """Write the version-2 archive (tag, index, ``arr_i.npy``) of ``[(key, array)]`` to ``f``."""
    index = np.frombuffer(_index_bytes([k for k, _ in arrays]), dtype=np.uint8)
    members = [(_FORMAT_KEY + ".npy", np.array(_FORMAT)), (_INDEX_KEY + ".npy", index)]
    members += [(f"arr_{i}.npy", a) for i, (_, a) in enumerate(arrays)]
    with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, a in members:
            info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
            info.external_attr = 0o644 << 16
            with zf.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, a, allow_pickle=False)


def _create_temp(folder):
    """Create and open ``.tmp-tinygrad_bn-<pid>-<random>@<host>.npz`` in ``folder``.

    Mode ``0o666`` lets the umask (and default ACLs) decide, as for any new file; ``O_EXCL``
    makes the name ours alone.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        name = f"{_TMP_PREFIX}{os.getpid()}-{os.urandom(4).hex()}@{_host()}.npz"
        tmp = os.path.join(folder, name)
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"cannot create a temporary file in {folder}")


def _fsync_folder(folder) -> None:
    """Make the rename durable; not every platform can open a folder (then nothing to do)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# -- temporary files of crashed saves -----------------------------------------------------------

def _host() -> str:
    return re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname())[:64] or "host"


def _remove_stale_temps(folder) -> None:
    """Remove the temporary files that crashed saves left in ``folder`` (see ``_is_stale``)."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    now = time.time()
    for entry in entries:
        if entry.name.startswith(".tmp-") and _is_stale(entry, now):
            try:
                os.unlink(entry.path)
            except OSError:  # removed by another save meanwhile, or not ours to remove
                pass


def _is_stale(entry, now) -> bool:
    """Whether a temp file belongs to a save that can no longer finish.

    A save names its temp file after its process id and host. On this host the file is stale
    when that process no longer runs (killed or crashed: the kernel reports it gone, or a
    zombie). A running save is never touched, whatever its age; nor are files of this process
    (another thread may be saving). A reused pid only delays the removal. Where liveness cannot
    be checked (another host sharing the folder, Windows, temp files of version 1 without a
    pid) the file is stale once unmodified for ``STALE_SECONDS``: a live save keeps writing.
    """
    match = _TMP_NAME.match(entry.name)
    if match is None and _TMP_NAME_V1.match(entry.name) is None:
        return False  # not a temp file of ours
    try:
        if not entry.is_file(follow_symlinks=False):
            return False
        old = now - entry.stat(follow_symlinks=False).st_mtime > STALE_SECONDS
    except OSError:
        return False
    if match is None or match.group(2) != _host():
        return old
    pid = int(match.group(1))
    if pid == os.getpid():
        return False
    alive = _pid_alive(pid)
    return old if alive is None else not alive


def _pid_alive(pid: int):
    """True/False if process ``pid`` of this host runs or not; None if it cannot be told."""
    if os.name != "posix" or pid <= 0:  # os.kill(0 or -n, ...) would signal process groups
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # runs, as another user
        return True
    except (OverflowError, OSError):
        return None
    try:  # a zombie (killed, not yet reaped by its parent) will write nothing more
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
        return state not in (b"Z", b"X")
    except (OSError, IndexError):
        return True


# -- load ---------------------------------------------------------------------------------------

_LOAD_ERRORS = (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError, zlib.error,
                NotImplementedError, RuntimeError, OverflowError, TypeError)


def load(path, *, max_bytes: int | None = MAX_BYTES,
         max_ratio: float | None = MAX_RATIO) -> "OrderedDict[str, np.ndarray]":
    """Read a checkpoint written by ``save`` into an ordered dict of arrays (in saved order).

    ``max_bytes`` bounds the uncompressed size of the whole file and ``max_ratio`` the
    expansion of each compressed member (``None``: no limit); both are checked before anything
    is decompressed or allocated. Refuses with a ValueError naming the file: files that are
    not ``.npz``, truncated or damaged, over a limit, hold pickled objects, or were not written
    by ``save`` (see the module docstring). Nothing is modified: pass the result to
    ``model.load_state_dict`` (which checks keys and shapes before assigning).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        with open(path, "rb") as raw:
            return _read_checkpoint(raw, max_bytes, max_ratio)
    except _Refused as e:
        raise ValueError(f"cannot load checkpoint {path}: {e}") from None
    except _LOAD_ERRORS as e:
        raise ValueError(f"cannot load checkpoint {path}: {e or type(e).__name__}") from e


def _read_checkpoint(raw, max_bytes, max_ratio) -> "OrderedDict[str, np.ndarray]":
    head = raw.read(8)
    raw.seek(0)
    try:
        zf = zipfile.ZipFile(raw)
    except zipfile.BadZipFile:
        raise _Refused(_not_a_zip(head)) from None
    with zf:
        infos = zf.infolist()
        _check_members(infos, os.fstat(raw.fileno()).st_size, max_bytes, max_ratio)
        for info in infos:  # every header before any data: object dtypes, sizes that lie
            if info.filename.endswith(".npy"):
                _npy_header(zf, info, max_bytes)
        by_name = {info.filename: info for info in infos}
        tag_info = by_name.get(_FORMAT_KEY + ".npy")
        tag = _read_npy(zf, tag_info) if tag_info is not None else None
        if tag is None or tag.shape != () or tag.dtype.kind != "U":
            raise _Refused("it was not written by tinygrad_bn.save")
        if str(tag) == _FORMAT:
            plan = _plan_v2(zf, by_name)
        elif str(tag) == _FORMAT_V1:
            plan = _plan_v1(by_name)
        else:
            raise _Refused(f"it was not written by tinygrad_bn.save (format {str(tag)[:80]!r})")
        return OrderedDict((key, _read_npy(zf, info)) for key, info in plan)


def _not_a_zip(head: bytes) -> str:
    if not head:
        return "it is empty"
    if head.startswith(b"\x93NUMPY"):
        return "it holds a single .npy array, not a checkpoint"
    if head[:1] == b"\x80":
        return "it looks like a pickle, which is never loaded (unpickling can run code)"
    if head.startswith(b"PK"):
        return "it is truncated or damaged (the zip directory at its end is missing)"
    return "it is not an .npz (zip) archive"


def _unsafe_name(name: str) -> bool:
    parts = re.split(r"[/\\]", name)
    return (name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name) is not None
            or ".." in parts or "\x00" in name)


def _check_members(infos, disk_size, max_bytes, max_ratio) -> None:
    """Zip-level checks, from the directory alone: names, duplicates, sizes, ratios."""
    seen = set()
    total = 0
    for info in infos:
        name = info.filename
        if _unsafe_name(name):
            raise _Refused(f"member {name!r} has an unsafe path (absolute or with '..')")
        if name in seen:
            raise _Refused(f"member {name!r} appears twice (duplicate keys)")
        seen.add(name)
        if info.flag_bits & 0x1:
            raise _Refused(f"member {name!r} is encrypted")
        if info.compress_size > disk_size or (info.compress_type == zipfile.ZIP_STORED
                                              and info.compress_size != info.file_size):
            raise _Refused(f"member {name!r} is damaged: it declares {info.compress_size} stored "
                           f"bytes for {info.file_size} in a file of {disk_size} bytes")
        total += info.file_size
        if max_bytes is not None and total > max_bytes:
            what = (f"member {name!r} declares {_human(info.file_size)}" if total == info.file_size
                    else f"the members up to {name!r} declare {_human(total)}")
            raise _Refused(f"{what} uncompressed, more than the limit max_bytes="
                           f"{max_bytes} ({_human(max_bytes)}); pass a larger max_bytes= to "
                           "load() if you trust the file")
        if (max_ratio is not None and info.compress_type != zipfile.ZIP_STORED
                and info.file_size > RATIO_FREE_BYTES
                and info.file_size > max_ratio * info.compress_size):
            raise _Refused(f"member {name!r} expands {_human(info.compress_size)} to "
                           f"{_human(info.file_size)}, a ratio of "
                           f"{info.file_size / max(info.compress_size, 1):.0f}, more than the "
                           f"limit max_ratio={max_ratio} (a zip bomb?); pass a larger "
                           "max_ratio= to load() if you trust the file")


def _npy_header(zf, info, max_bytes):
    """Parse and check one member's ``.npy`` header; returns ``(shape, fortran_order, dtype)``.

    Only the first bytes of the member are read. The header must declare exactly the data the
    member holds (so reading it allocates no more than the member's own size) and a dtype
    that loads without pickle.
    """
    name = info.filename
    with zf.open(info) as f:
        head = f.read(min(info.file_size, 12 + _MAX_HEADER))
    buf = io.BytesIO(head)
    try:
        version = np.lib.format.read_magic(buf)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(
                buf, max_header_size=_MAX_HEADER)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(
                buf, max_header_size=_MAX_HEADER)
        else:
            raise _Refused(f"member {name!r} uses .npy format {version}, which is not supported")
    except _Refused:
        raise
    except Exception as e:  # noqa: BLE001 - NumPy's parser fails in many ways (tokenize too)
        raise _Refused(f"member {name!r} is not a valid .npy array "
                       f"({type(e).__name__}: {e})") from None
    if dtype.hasobject:
        raise _Refused(f"member {name!r} holds Python objects (dtype {dtype}), i.e. pickled "
                       "data, which is never loaded (unpickling can run code)")
    if dtype.kind not in _KINDS or dtype.names is not None or dtype.subdtype is not None:
        raise _Refused(f"member {name!r} has dtype {dtype}, which checkpoints do not store")
    if any(n < 0 for n in shape):
        raise _Refused(f"member {name!r} declares the invalid shape {shape}")
    count = math.prod(shape)
    nbytes = count * dtype.itemsize
    if buf.tell() + nbytes != info.file_size:
        raise _Refused(f"member {name!r} declares shape {shape} of {dtype} "
                       f"({_human(nbytes)}) but holds {_human(info.file_size - buf.tell())} "
                       "of data (truncated or forged)")
    if max_bytes is not None and count > max_bytes:
        raise _Refused(f"member {name!r} declares {count} elements, more than max_bytes="
                       f"{max_bytes}")
    return shape, fortran, dtype


def _read_npy(zf, info) -> np.ndarray:
    """The array of a member whose header ``_npy_header`` has checked."""
    with zf.open(info) as f:
        a = np.lib.format.read_array(f, allow_pickle=False, max_header_size=_MAX_HEADER)
        if f.read(1):  # reading to the end also makes zipfile check the CRC
            raise _Refused(f"member {info.filename!r} has bytes after its array")
    return a


def _plan_v1(by_name):
    """Version 1: each ``<key>.npy`` member holds that key."""
    plan = []
    for name, info in by_name.items():
        if name == _FORMAT_KEY + ".npy":
            continue
        if not name.endswith(".npy"):
            raise _Refused(f"member {name!r} is not an array (.npy)")
        plan.append((name[:-len(".npy")], info))
    return plan


def _plan_v2(zf, by_name):
    """Version 2: the index lists the keys; ``arr_i.npy`` holds ``keys[i]``."""
    info = by_name.get(_INDEX_KEY + ".npy")
    if info is None:
        raise _Refused(f"its index of keys ({_INDEX_KEY}.npy) is missing")
    if info.file_size > MAX_INDEX_BYTES + 12 + _MAX_HEADER:
        raise _Refused(f"its index of keys is larger than {_human(MAX_INDEX_BYTES)}")
    index = _read_npy(zf, info)
    if index.dtype != np.uint8 or index.ndim != 1:
        raise _Refused("its index of keys is not a byte string")
    try:
        keys = json.loads(index.tobytes().decode("ascii"))
    except (ValueError, RecursionError) as e:
        raise _Refused(f"its index of keys is not valid JSON ({e})") from None
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise _Refused("its index of keys is not a list of str")
    if len(set(keys)) != len(keys):
        dup = next(k for i, k in enumerate(keys) if k in keys[:i])
        raise _Refused(f"its index lists the key {dup!r} twice")
    plan = []
    for i, key in enumerate(keys):
        member = by_name.get(f"arr_{i}.npy")
        if member is None:
            raise _Refused(f"the array of key {key!r} (arr_{i}.npy) is missing")
        plan.append((key, member))
    listed = {_FORMAT_KEY + ".npy", _INDEX_KEY + ".npy"} | {m.filename for _, m in plan}
    for name in by_name:
        if name not in listed:
            raise _Refused(f"member {name!r} is not an array listed in its index")
    return plan


def _human(nbytes: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if nbytes < 1024:
            return f"{nbytes} bytes" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.1f} TiB"
