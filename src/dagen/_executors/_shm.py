"""Arrays to and from worker processes through memory-mapped files, never through a pipe.

Under ``dagen serve --executor process`` a call's arrays are received straight into
memory-mapped files of the call (in ``/dev/shm`` while it has room, else in the
temporary folder). What goes through the pipe to the worker is a pickle in which
every large array is a reference -- file, offset, dtype, shape, strides -- and the
worker maps the same files. The result comes back the same way: an array that is a
view of an argument is referred to where it lies, any other large array is written
once into a new file of the call. Files are removed when the call ends; memory
still mapped stays valid until its last array is gone.

Under ``--executor dask --spool DIR`` the same files are made in DIR (a folder the
dask workers can read, e.g. on the cluster's shared file system), each a ``.npy`` file
(:func:`npy_header`), and the worker reads the pickle with :func:`load_spooled`: each
file is opened with ``np.load(mmap_mode="c")``.
"""

from __future__ import annotations

import bisect
import errno
import io
import mmap
import os
import pickle
import shutil
import struct
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

INLINE_MAX = 64 << 10  # arrays up to this many bytes are pickled inline
_POPULATE = getattr(mmap, "MAP_POPULATE", 0)
NPY_HEADER = 4096  # bytes of a spooled file's .npy header (its data starts on a page)


def default_roots() -> list[Path]:
    """Where call folders go: shared memory first, the temporary folder when it is full."""
    roots = []
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        roots.append(shm)
    roots.append(Path(tempfile.gettempdir()))
    return roots


class Arena:
    """The memory-mapped files of one call.

    Parameters
    ----------
    name
        Names the call's folder under each root; unique per call.
    roots
        Folders to create files under, in order of preference.
    prefix
        Begins the name of each file this side creates (the server and the worker
        use different ones, so that both can add files to the same call).
    header
        Given a file's number of data bytes, the bytes that begin the file before them
        (:func:`npy_header`: the files are .npy files); None: the files hold data only.
    suffix
        Ends the name of each file.
    small_in_memory
        Arrays small enough to be pickled inline are allocated in ordinary memory, not
        in a file of their own.
    """

    def __init__(self, name: str, roots: list[Path], prefix: str = "a",
                 header: Callable[[int], bytes] | None = None, suffix: str = "",
                 small_in_memory: bool = False) -> None:
        self.folders = [root / name for root in roots]
        self.prefix = prefix
        self.header = header
        self.suffix = suffix
        self.small_in_memory = small_in_memory
        self._count = 0
        self._lock = threading.Lock()
        self._starts: list[int] = []  # address of each mapped segment, sorted
        self._segments: list[tuple[int, int, str]] = []  # (start, size, path), same order
        self._maps: dict[str, mmap.mmap] = {}

    # -- files -------------------------------------------------------------------------------

    def allocate(self, nbytes: int) -> np.ndarray:
        """A writable uint8 array of ``nbytes`` backed by a new file of the call."""
        if nbytes == 0 or (self.small_in_memory and nbytes <= INLINE_MAX):
            return np.empty(nbytes, np.uint8)
        with self._lock:
            self._count += 1
            filename = f"{self.prefix}{self._count}{self.suffix}"
        head = self.header(nbytes) if self.header is not None else b""
        last: OSError | None = None
        for folder in self.folders:
            folder.mkdir(mode=0o700, exist_ok=True)
            path = folder / filename
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                # Reserve the space now: writing into a mapping of a full tmpfs is SIGBUS.
                os.posix_fallocate(fd, 0, len(head) + nbytes)
                if head:
                    os.pwrite(fd, head, 0)
                # Map every page at once: faster than a fault per page while receiving.
                mm = mmap.mmap(fd, len(head) + nbytes, flags=mmap.MAP_SHARED | _POPULATE)
            except OSError as e:
                os.close(fd)
                path.unlink(missing_ok=True)
                if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EOPNOTSUPP):
                    raise
                last = e
                continue
            os.close(fd)
            return self._register(str(path), mm, len(head))
        raise MemoryError(f"no room for {nbytes} bytes in {[str(f) for f in self.folders]}: {last}")

    def attach(self, path: str) -> mmap.mmap:
        """The mapping of a file of the call (made by either side), mapped once."""
        with self._lock:
            mm = self._maps.get(path)
        if mm is None:
            real = Path(path).resolve()
            if not any(real.parent == f.resolve() for f in self.folders):
                raise ValueError(f"{path} is not a file of this call")
            fd = os.open(real, os.O_RDWR)
            try:
                mm = mmap.mmap(fd, 0)
            finally:
                os.close(fd)
            self._register(path, mm)
        return mm

    def _register(self, path: str, mm: mmap.mmap, skip: int = 0) -> np.ndarray:
        """The data of a mapped file (after its first ``skip`` bytes), as uint8; the
        offsets :meth:`locate` gives count from there."""
        whole = np.frombuffer(mm, np.uint8, offset=skip)
        start = whole.ctypes.data
        with self._lock:
            self._maps[path] = mm
            i = bisect.bisect_left(self._starts, start)
            self._starts.insert(i, start)
            self._segments.insert(i, (start, len(mm) - skip, path))
        return whole

    def locate(self, array: np.ndarray) -> tuple[str, int] | None:
        """The file and offset of an array that lies inside a mapped file of the call."""
        if array.size == 0:
            return None
        lo = hi = array.__array_interface__["data"][0]
        for n, stride in zip(array.shape, array.strides, strict=True):
            if stride < 0:
                lo += (n - 1) * stride
            else:
                hi += (n - 1) * stride
        hi += array.itemsize
        with self._lock:
            i = bisect.bisect_right(self._starts, lo) - 1
            if i < 0:
                return None
            start, size, path = self._segments[i]
        if hi <= start + size:
            return path, array.__array_interface__["data"][0] - start
        return None

    def remove(self) -> None:
        """Remove the call's files; memory still mapped stays valid."""
        for folder in self.folders:
            shutil.rmtree(folder, ignore_errors=True)
        with self._lock:
            self._maps.clear()  # the arrays keep their mappings alive
            self._starts.clear()
            self._segments.clear()

    # -- pickles -----------------------------------------------------------------------------

    def dumps(self, obj: Any) -> bytes:
        buf = io.BytesIO()
        _Pickler(buf, self).dump(obj)
        return buf.getvalue()

    def loads(self, data: bytes) -> Any:
        return _Unpickler(io.BytesIO(data), self).load()


class _Pickler(pickle.Pickler):
    def __init__(self, file: io.BytesIO, arena: Arena) -> None:
        super().__init__(file, protocol=5)
        self.arena = arena

    def persistent_id(self, obj: Any) -> Any:
        if type(obj) is not np.ndarray or obj.nbytes <= INLINE_MAX or obj.dtype.hasobject:
            return None
        found = self.arena.locate(obj)
        if found is not None:
            path, offset = found
            return ("mapped", path, offset, obj.dtype, obj.shape, obj.strides)
        raw = self.arena.allocate(obj.nbytes)
        copy = raw.view(obj.dtype).reshape(obj.shape)
        np.copyto(copy, obj)
        path, offset = self.arena.locate(copy) or ("", 0)
        return ("mapped", path, offset, copy.dtype, copy.shape, copy.strides)


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, arena: Arena) -> None:
        super().__init__(file)
        self.arena = arena

    def persistent_load(self, pid: Any) -> Any:
        kind, path, offset, dtype, shape, strides = pid
        if kind != "mapped":
            raise pickle.UnpicklingError(f"unknown persistent id {kind!r}")
        mm = self.arena.attach(path)
        return np.ndarray(shape, dtype, buffer=mm, offset=offset, strides=strides)


# -- spooled files: .npy, read by dask workers ---------------------------------------------------


def npy_header(nbytes: int) -> bytes:
    """The header of a .npy file holding ``nbytes`` bytes as one uint8 array, padded to
    NPY_HEADER bytes; an array received into the file is a view of those bytes."""
    text = repr({"descr": "|u1", "fortran_order": False, "shape": (nbytes,)})
    text = text.ljust(NPY_HEADER - 10 - 1) + "\n"  # magic, version, length; newline last
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode("latin1")


def load_spooled(data: bytes) -> Any:
    """On a dask worker: the pickle :meth:`Arena.dumps` made of a call's arguments, its
    arrays opened from their spooled files with ``np.load(mmap_mode="c")`` (the file's
    pages are read as the function touches them; writing into an argument changes the
    function's copy, never the file)."""
    return _SpoolUnpickler(io.BytesIO(data)).load()


class _SpoolUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file)
        self._files: dict[str, np.ndarray] = {}

    def persistent_load(self, pid: Any) -> Any:
        kind, path, offset, dtype, shape, strides = pid
        if kind != "mapped":
            raise pickle.UnpicklingError(f"unknown persistent id {kind!r}")
        data = self._files.get(path)
        if data is None:
            data = self._files[path] = np.load(path, mmap_mode="c")
        return np.ndarray(shape, dtype, buffer=data, offset=offset, strides=strides)
