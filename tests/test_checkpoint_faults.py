"""Checkpoint faults reported by users: awkward keys, hostile archives, killed saves, file
modes, durability. Every test builds its files itself and stays small and fast."""
import io
import json
import os
import select
import signal
import stat
import struct
import subprocess
import sys
import time
import tracemalloc
import warnings
import zipfile

import numpy as np
import pytest

import tinygrad_bn
from tinygrad_bn import Tensor, checkpoint
from tinygrad_bn.models import mlp

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TAG = checkpoint._FORMAT_KEY + ".npy"
INDEX = checkpoint._INDEX_KEY + ".npy"


# -- building archives by hand ------------------------------------------------------------------

def _npy(a, allow_pickle=False) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, a, allow_pickle=allow_pickle)
    return buf.getvalue()


def _npy_header(shape, descr="<f8", version=(1, 0)) -> bytes:
    buf = io.BytesIO()
    header = {"descr": descr, "fortran_order": False, "shape": shape}
    if version == (1, 0):
        np.lib.format.write_array_header_1_0(buf, header)
    else:
        np.lib.format.write_array_header_2_0(buf, header)
    return buf.getvalue()


def _index(keys) -> bytes:
    return _npy(np.frombuffer(json.dumps(keys).encode("ascii"), dtype=np.uint8))


def _v2_members(keys, payloads):
    """Tag, index and ``arr_i.npy`` members of a version-2 checkpoint (payloads as bytes)."""
    return ([(TAG, _npy(np.array(checkpoint._FORMAT))), (INDEX, _index(keys))]
            + [(f"arr_{i}.npy", p) for i, p in enumerate(payloads)])


def _write_zip(path, members, compression=zipfile.ZIP_STORED):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names on purpose
        with zipfile.ZipFile(path, "w", compression=compression) as z:
            for name, data in members:
                z.writestr(name, data)


def _refused(path, *words, **limits):
    with pytest.raises(ValueError, match="cannot load checkpoint") as info:
        checkpoint.load(path, **limits)
    msg = str(info.value)
    assert str(path) in msg
    for w in words:
        assert w in msg, msg
    return msg


def _patch_central_size(path, member, file_size):
    """Make the zip directory declare ``file_size`` uncompressed bytes for ``member``."""
    raw = bytearray(open(path, "rb").read())
    pos = raw.find(b"PK\x01\x02")
    while pos != -1:
        name_len = struct.unpack_from("<H", raw, pos + 28)[0]
        if raw[pos + 46:pos + 46 + name_len] == member.encode():
            struct.pack_into("<I", raw, pos + 24, file_size)
            break
        pos = raw.find(b"PK\x01\x02", pos + 4)
    else:
        raise AssertionError(member)
    open(path, "wb").write(bytes(raw))


# -- 1. any str key round-trips; what cannot be stored is refused by key ---------------------

AWKWARD_KEYS = [
    "file", "allow_pickle", "a/b", "a.b", "x.npy", "../etc/passwd", "/abs", "a\\b", "C:/w",
    "", " ", "ünïcødé ключ 鍵 🔑", "new\nline", "nul\x00inside", "trailing nul\x00",
    "lone \ud800 surrogate", "k" * 10_000, "arr_0", "arr_1.npy", checkpoint._FORMAT_KEY,
    checkpoint._INDEX_KEY, "__tinygrad_bn_checkpoint__.npy", "0.weight",
]


def test_keys_named_like_savez_arguments_round_trip(tmp_path):
    # np.savez(f, **state) crashed on "file" and silently dropped "allow_pickle"
    state = {"file": np.ones(2), "allow_pickle": np.zeros(3), "args": np.arange(2)}
    got = checkpoint.load(checkpoint.save(state, tmp_path / "ck.npz"))
    assert list(got) == ["file", "allow_pickle", "args"]
    assert all(np.array_equal(got[k], v) for k, v in state.items())


def test_every_awkward_key_round_trips_exactly(tmp_path):
    state = {k: np.full(2, i, dtype=np.int32) for i, k in enumerate(AWKWARD_KEYS)}
    path = checkpoint.save(state, tmp_path / "keys.npz")
    got = checkpoint.load(path)
    assert list(got) == AWKWARD_KEYS
    for i, k in enumerate(AWKWARD_KEYS):
        assert got[k].dtype == np.int32 and np.array_equal(got[k], [i, i]), k
    # the member names stay plain whatever the keys
    with zipfile.ZipFile(path) as z:
        assert z.namelist() == [TAG, INDEX] + [f"arr_{i}.npy" for i in range(len(AWKWARD_KEYS))]
    assert os.listdir(tmp_path) == ["keys.npz"]  # "../etc/passwd" wrote nothing elsewhere


def test_dtypes_and_layouts_round_trip(tmp_path):
    f = np.arange(12.0).reshape(3, 4)
    state = {
        "f32": np.linspace(0, 1, 5, dtype=np.float32), "f16": np.ones(3, np.float16),
        "f64 big-endian": np.arange(3, dtype=">f8"), "i64": np.arange(-2, 2),
        "u8": np.arange(4, dtype=np.uint8), "bool": np.array([True, False]),
        "c128": np.array([1 + 2j]), "0-d": np.array(3.5), "empty": np.zeros((0, 3)),
        "fortran": np.asfortranarray(f), "strided": f[:, ::2], "str": np.array(["a", "bé"]),
        "bytes": np.array([b"x", b"yz"]), "time": np.array(["2024-01-01"], "datetime64[D]"),
        "tensor": Tensor(np.ones((2, 2), np.float32)), "np scalar": np.float32(2.5),
        "int": 7, "float": 0.5,
    }
    got = checkpoint.load(checkpoint.save(state, tmp_path / "d"))
    for k, v in state.items():
        want = np.asarray(v.data if isinstance(v, Tensor) else v)
        assert got[k].dtype == want.dtype and got[k].shape == want.shape, k
        assert np.array_equal(got[k], want), k
    assert got["fortran"].flags.f_contiguous


def test_top_level_save_and_load_round_trip_a_module(tmp_path):
    assert tinygrad_bn.save is checkpoint.save and tinygrad_bn.load is checkpoint.load
    model = mlp(3, (8,), 2, norm="batch", rng=0)
    model(Tensor(np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)))
    path = tinygrad_bn.save(model, tmp_path / "m")
    fresh = mlp(3, (8,), 2, norm="batch", rng=9)
    fresh.load_state_dict(tinygrad_bn.load(path))
    for k, v in model.state_dict().items():
        assert np.array_equal(fresh.state_dict()[k], v), k


@pytest.mark.parametrize("state,named", [
    ({"ok": np.ones(1), 3: np.ones(2)}, "3"),
    ({None: np.ones(2)}, "None"),
    ({b"k": np.ones(2)}, "b'k'"),
    ({("a", 1): np.ones(2)}, "('a', 1)"),
    ({"k": None}, "'k'"),
    ({"k": "text"}, "'k'"),
    ({"k": [1.0, 2.0]}, "'k'"),
    ({"k": {"a": np.ones(2)}}, "'k'"),
    ({"k": np.array([{"a": 1}], dtype=object)}, "'k'"),
    ({"k": 2**70}, "'k'"),
    ({"k": np.zeros(2, dtype=[("a", "f4")])}, "'k'"),
])
def test_what_cannot_be_stored_is_refused_by_key_and_writes_nothing(tmp_path, state, named):
    path = checkpoint.save({"old": np.arange(3)}, tmp_path / "ck.npz")
    old = open(path, "rb").read()
    with pytest.raises(ValueError) as info:
        checkpoint.save(state, path)
    assert named in str(info.value)
    assert os.listdir(tmp_path) == ["ck.npz"]  # no temp file
    assert open(path, "rb").read() == old


# -- 2. hostile archives: limits checked before allocating ---------------------------------------

def test_a_tiny_file_declaring_a_huge_array_is_refused_without_allocating(tmp_path):
    seven_tib = (7 * 2**40 // 8,)
    payload = _npy_header(seven_tib)
    payload += b"\0" * (1024 - len(payload))
    path = tmp_path / "huge.npz"
    _write_zip(path, _v2_members(["w"], [payload]))
    assert os.path.getsize(path) < 2048
    tracemalloc.start()
    try:
        msg = _refused(path, "'arr_0.npy'", "7.0 TiB")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20, peak
    assert "MemoryError" not in msg
    # the same lie in a foreign .npz, and a version 2.0 header
    _write_zip(path, [("w.npy", _npy_header(seven_tib, version=(2, 0)) + b"\0" * 900)])
    _refused(path, "'w.npy'", "7.0 TiB")


def test_a_zip_directory_declaring_a_huge_member_is_refused(tmp_path):
    path = tmp_path / "liar.npz"
    _write_zip(path, _v2_members(["w"], [_npy(np.arange(100.0))]), zipfile.ZIP_DEFLATED)
    _patch_central_size(path, "arr_0.npy", 2**30)
    _refused(path, "'arr_0.npy'", "max_bytes=1048576", max_bytes=2**20)
    _refused(path, "'arr_0.npy'", "max_ratio=200")  # 1 GiB from a few hundred bytes
    _refused(path, max_bytes=None, max_ratio=None)  # then the header disagrees with the size


def test_a_zip_bomb_is_refused_by_ratio_and_by_total_size(tmp_path):
    path = tmp_path / "bomb.npz"
    chunk = bytes(2**20)
    with zipfile.ZipFile(path, "w") as z:
        for name, data in _v2_members(["w"], []):
            z.writestr(name, data)
        info = zipfile.ZipInfo("arr_0.npy")
        info.compress_type = zipfile.ZIP_DEFLATED
        with z.open(info, "w", force_zip64=True) as m:  # 64 MiB of zeros, 1 MiB at a time
            header = _npy_header((64 * 2**20 - 128,), descr="|u1")
            m.write(header)
            for _ in range(63):
                m.write(chunk)
            m.write(chunk[:2**20 - len(header)])
    assert os.path.getsize(path) < 2**20
    with zipfile.ZipFile(path) as z:
        assert z.getinfo("arr_0.npy").file_size == 64 * 2**20
    tracemalloc.start()
    try:
        _refused(path, "'arr_0.npy'", "max_ratio=200", "64.0 MiB")
        _refused(path, "'arr_0.npy'", "max_bytes=16777216", max_bytes=16 * 2**20)
        _refused(path, "max_bytes", max_bytes=16 * 2**20, max_ratio=None)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20, peak


def test_ordinary_compressed_members_and_small_zeros_load(tmp_path):
    rng = np.random.default_rng(0)
    state = {"w": rng.standard_normal(300_000).astype(np.float32),  # 1.2 MiB, ~1.1x
             "b": np.zeros(100_000, np.float32)}  # 400 KiB of zeros, ~1000x but small
    path = tmp_path / "zipped.npz"
    _write_zip(path, _v2_members(list(state), [_npy(a) for a in state.values()]),
               zipfile.ZIP_DEFLATED)
    got = checkpoint.load(path)
    assert all(np.array_equal(got[k], v) for k, v in state.items())
    # the total limit counts uncompressed bytes
    _refused(path, "max_bytes=1000000", max_bytes=1_000_000)


def test_limits_are_module_constants():
    assert checkpoint.MAX_BYTES == 4 * 2**30 and checkpoint.MAX_RATIO == 200


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch evil-ran",))


def _truncated(path):
    checkpoint.save({"w": np.arange(1000.0)}, path)
    raw = open(path, "rb").read()
    open(path, "wb").write(raw[:len(raw) - 40])


HOSTILE = {
    "truncated": (_truncated, ["truncated"]),
    "random bytes": (lambda p: open(p, "wb").write(os.urandom(1000)), ["not an .npz"]),
    "text": (lambda p: open(p, "w").write("w = [1, 2]\n"), ["not an .npz"]),
    "npy": (lambda p: open(p, "wb").write(_npy(np.ones(3))), ["single .npy"]),
    "pickle": (lambda p: open(p, "wb").write(b"\x80\x04N."), ["pickle"]),
    "object dtype": (lambda p: _write_zip(p, _v2_members(
        ["w"], [_npy(np.array([_Evil()], dtype=object), allow_pickle=True)])),
        ["'arr_0.npy'", "pickle"]),
    "parent dir": (lambda p: _write_zip(p, _v2_members(["w"], []) + [
        ("../evil.npy", _npy(np.ones(2)))]), ["'../evil.npy'", "unsafe"]),
    "nested parent dir": (lambda p: _write_zip(p, [("a/../../b.npy", _npy(np.ones(2)))]),
                          ["unsafe"]),
    "absolute": (lambda p: _write_zip(p, [("/etc/w.npy", _npy(np.ones(2)))]), ["unsafe"]),
    "backslashes": (lambda p: _write_zip(p, [("..\\w.npy", _npy(np.ones(2)))]), ["unsafe"]),
    "drive": (lambda p: _write_zip(p, [("C:/w.npy", _npy(np.ones(2)))]), ["unsafe"]),
    "duplicate members": (lambda p: _write_zip(p, _v2_members(["w"], [_npy(np.ones(2))]) + [
        ("arr_0.npy", _npy(np.zeros(2)))]), ["'arr_0.npy'", "twice"]),
    "duplicate keys": (lambda p: _write_zip(p, _v2_members(
        ["w", "w"], [_npy(np.ones(2)), _npy(np.zeros(2))])), ["'w'", "twice"]),
    "index not json": (lambda p: _write_zip(p, [
        (TAG, _npy(np.array(checkpoint._FORMAT))),
        (INDEX, _npy(np.frombuffer(b"[[[", np.uint8)))]), ["index"]),
    "index not bytes": (lambda p: _write_zip(p, [
        (TAG, _npy(np.array(checkpoint._FORMAT))), (INDEX, _npy(np.ones(3)))]), ["index"]),
    "deeply nested index": (lambda p: _write_zip(p, [
        (TAG, _npy(np.array(checkpoint._FORMAT))),
        (INDEX, _npy(np.frombuffer(b"[" * 100_000 + b"]" * 100_000, np.uint8)))]), ["index"]),
    "missing array": (lambda p: _write_zip(p, _v2_members(["w", "v"], [_npy(np.ones(2))])),
                      ["'v'", "missing"]),
    "no index": (lambda p: _write_zip(p, [(TAG, _npy(np.array(checkpoint._FORMAT)))]),
                 ["index"]),
    "extra member": (lambda p: _write_zip(p, _v2_members(["w"], [_npy(np.ones(2))]) + [
        ("arr_7.npy", _npy(np.ones(2)))]), ["'arr_7.npy'", "not an array listed"]),
    "trailing bytes": (lambda p: _write_zip(p, _v2_members(
        ["w"], [_npy(np.ones(2)) + b"more"])), ["'arr_0.npy'", "declares shape (2,)"]),
    "negative shape": (lambda p: _write_zip(p, _v2_members(
        ["w"], [_npy_header((-1,))])), ["'arr_0.npy'", "shape"]),
    "npy version 3": (lambda p: _write_zip(p, _v2_members(
        ["w"], [b"\x93NUMPY\x03\x00" + _npy(np.ones(2))[10:]])), ["'arr_0.npy'", "(3, 0)"]),
    "garbage header": (lambda p: _write_zip(p, _v2_members(["w"], [
        b"\x93NUMPY\x01\x00" + struct.pack("<H", 10) + b"{garbage!\n"])),
        ["'arr_0.npy'", "not a valid .npy"]),
    "bad magic": (lambda p: _write_zip(p, _v2_members(["w"], [b"NUMPY? " + bytes(100)])),
                  ["'arr_0.npy'", "not a valid .npy"]),
    "garbage version": (lambda p: _write_zip(p, _v2_members(["w"], [b"\x93NUMPY garbage"])),
                        ["'arr_0.npy'", "not supported"]),
    "structured dtype": (lambda p: _write_zip(p, _v2_members(
        ["w"], [_npy(np.zeros(2, [("a", "<f4")]))])), ["'arr_0.npy'", "dtype"]),
    "foreign npz": (lambda p: np.savez(p, w=np.ones(3)), ["not written by"]),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_archives_are_refused(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    make, words = HOSTILE[name]
    path = tmp_path / "ck.npz"
    make(path)
    _refused(path, *words)
    assert not (tmp_path / "evil-ran").exists()


def test_a_corrupted_byte_fails_the_crc(tmp_path):
    path = checkpoint.save({"w": np.arange(100.0)}, tmp_path / "ck.npz")
    raw = bytearray(open(path, "rb").read())
    pos = raw.find(_npy(np.arange(100.0))[-16:])
    raw[pos] ^= 0xFF
    open(path, "wb").write(bytes(raw))
    _refused(path, "CRC")


def test_version_1_checkpoints_still_load(tmp_path):
    path = tmp_path / "v1.npz"
    np.savez(path, **{checkpoint._FORMAT_KEY: np.array(checkpoint._FORMAT_V1)},
             **{"0.weight": np.ones((2, 2)), "a/b": np.arange(3)})
    got = checkpoint.load(path)
    assert list(got) == ["0.weight", "a/b"]
    assert np.array_equal(got["a/b"], np.arange(3))


# -- 3. a killed save: old file intact, its temp file removed by the next save ------------------

_SLOW_SAVER = r"""
import sys, time
import numpy as np
from tinygrad_bn import checkpoint

real = np.lib.format.write_array
written = []

def slow(fp, array, *args, **kwargs):
    real(fp, array, *args, **kwargs)
    written.append(array)
    if len(written) == 3:  # tag, index and the first array are in the temp file
        print("mid-save", flush=True)
        time.sleep(60)

np.lib.format.write_array = slow
checkpoint.save({"w": np.zeros(100_000), "v": np.ones(100_000)}, sys.argv[1])
"""


def _temps(folder, pid=None):
    prefix = ".tmp-tinygrad_bn-" + (f"{pid}-" if pid is not None else "")
    return sorted(n for n in os.listdir(folder) if n.startswith(prefix))


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL")
def test_kill_9_mid_save_keeps_the_old_file_and_the_next_save_removes_its_temp(tmp_path):
    path = checkpoint.save({"w": np.arange(10.0)}, tmp_path / "ck.npz")
    old = open(path, "rb").read()
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_SAVER, path], stdout=subprocess.PIPE,
                            text=True, cwd=REPO, env=env)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready and proc.stdout.readline() == "mid-save\n"
        temps = _temps(tmp_path, proc.pid)
        assert len(temps) == 1 and temps[0].endswith(".npz")
        # another save into the folder leaves the running save alone
        checkpoint.save({"x": np.ones(2)}, tmp_path / "other.npz")
        assert _temps(tmp_path, proc.pid) == temps

        os.kill(proc.pid, signal.SIGKILL)
        stat_file = f"/proc/{proc.pid}/stat"
        if os.path.exists(stat_file):  # wait until it is a zombie, and do not reap it yet
            deadline = time.time() + 5
            while open(stat_file).read().rsplit(")", 1)[1].split()[0] != "Z":
                assert time.time() < deadline
                time.sleep(0.01)
        else:
            proc.wait(5)
        assert open(path, "rb").read() == old  # the old checkpoint is intact
        assert np.array_equal(checkpoint.load(path)["w"], np.arange(10.0))
        assert _temps(tmp_path, proc.pid) == temps  # the killed save left its temp file

        checkpoint.save({"y": np.ones(2)}, tmp_path / "third.npz")
        assert sorted(os.listdir(tmp_path)) == ["ck.npz", "other.npz", "third.npz"]
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)
        proc.stdout.close()


def _fake_temp(folder, name, age=0.0):
    p = os.path.join(folder, name)
    open(p, "wb").write(b"PK\x03\x04 half")
    if age:
        t = time.time() - age
        os.utime(p, (t, t))
    return name


@pytest.mark.skipif(os.name != "posix", reason="process ids")
def test_only_temp_files_of_dead_or_long_silent_writers_are_removed(tmp_path):
    host = checkpoint._host()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    old = checkpoint.STALE_SECONDS + 60
    removed = [
        _fake_temp(tmp_path, f".tmp-tinygrad_bn-{dead.pid}-0123abcd@{host}.npz"),
        _fake_temp(tmp_path, f".tmp-tinygrad_bn-{os.getppid()}-00000001@other-host.npz", old),
        _fake_temp(tmp_path, ".tmp-k2_x9q0a.npz", old),  # a version-1 mkstemp name
    ]
    kept = [
        _fake_temp(tmp_path, f".tmp-tinygrad_bn-{os.getpid()}-00000002@{host}.npz", old),
        _fake_temp(tmp_path, f".tmp-tinygrad_bn-{os.getppid()}-00000003@{host}.npz", old),
        _fake_temp(tmp_path, f".tmp-tinygrad_bn-{dead.pid}-00000004@other-host.npz"),
        _fake_temp(tmp_path, ".tmp-k2_x9q0b.npz"),
        _fake_temp(tmp_path, ".tmp-my-notes.npz", old),  # not a name save() makes
        _fake_temp(tmp_path, f".tmp-tinygrad_bn-0-00000005@{host}.npz"),
    ]
    checkpoint.save({"w": np.ones(2)}, tmp_path / "ck.npz")
    assert sorted(os.listdir(tmp_path)) == sorted(kept + ["ck.npz"])
    assert not set(removed) & set(os.listdir(tmp_path))


# -- 4. file mode as for any new file -----------------------------------------------------------

@pytest.mark.skipif(os.name != "posix", reason="umask")
@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_file_mode_follows_the_umask_like_a_normal_file(tmp_path, umask):
    target = tmp_path / "ck.npz"
    open(target, "wb").close()
    os.chmod(target, 0o600)  # overwriting gives the new-file mode too
    previous = os.umask(umask)
    try:
        checkpoint.save({"w": np.ones(2)}, target)
        checkpoint.save({"w": np.ones(2)}, tmp_path / "new.npz")
        open(tmp_path / "normal.txt", "w").close()
    finally:
        os.umask(previous)
    normal = stat.S_IMODE(os.stat(tmp_path / "normal.txt").st_mode)
    assert normal == 0o666 & ~umask
    assert stat.S_IMODE(os.stat(target).st_mode) == normal
    assert stat.S_IMODE(os.stat(tmp_path / "new.npz").st_mode) == normal


# -- 5. atomic and durable replace --------------------------------------------------------------

def test_overwriting_keeps_the_old_file_until_the_replace(tmp_path, monkeypatch):
    path = checkpoint.save({"w": np.arange(3.0)}, tmp_path / "ck.npz")
    old = open(path, "rb").read()
    real_replace = os.replace
    seen = []

    def replace(src, dst):
        assert open(dst, "rb").read() == old  # untouched while the new one was written
        assert os.path.dirname(os.path.abspath(src)) == str(tmp_path)
        assert np.array_equal(checkpoint.load(src)["w"], np.zeros(4))  # the new one: complete
        seen.append(src)
        real_replace(src, dst)

    monkeypatch.setattr(checkpoint.os, "replace", replace)
    checkpoint.save({"w": np.zeros(4)}, path)
    assert len(seen) == 1 and not os.path.exists(seen[0])
    assert np.array_equal(checkpoint.load(path)["w"], np.zeros(4))


def test_the_file_and_its_folder_are_fsynced_around_the_replace(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append("fsync folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    def replace(src, dst):
        events.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr(checkpoint.os, "fsync", fsync)
    monkeypatch.setattr(checkpoint.os, "replace", replace)
    checkpoint.save({"w": np.ones(2)}, tmp_path / "ck.npz")
    expected = ["fsync file", "replace"] + (["fsync folder"] if os.name == "posix" else [])
    assert events == expected


def test_a_save_failing_mid_write_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch):
    path = checkpoint.save({"w": np.arange(3.0)}, tmp_path / "ck.npz")
    old = open(path, "rb").read()
    real = np.lib.format.write_array
    calls = []

    def failing(fp, array, *args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise OSError("disk full")
        real(fp, array, *args, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array", failing)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save({"a": np.ones(2), "b": np.ones(2)}, path)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["ck.npz"]
    assert open(path, "rb").read() == old
