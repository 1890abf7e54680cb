"""Selections of remote datasets passed back to the server that opened them, as a
``dagen.v1.DatasetReference`` instead of their bytes (see protos/dagen/v1/xarray.proto).

The client's side: every lazy variable a client made of a ``DatasetHandle``
(dagen._lazy) is registered here under its dask name. An xarray argument whose data is
exactly a selection of one (indexing, ``isel``, ``sel``) of a dataset opened through
the client making the call becomes a reference: :func:`reference_of` finds the remote
variable in its dask graph, derives integer indexers per dimension from the
coordinates, rebuilds that selection of the remote variable and sends the reference
only if the rebuilt object equals the argument: the same dask name (dask names are
deterministic tokens of the source and the indexers, so the same name is the same
data), and the same coordinates, name and attributes. Anything else (arithmetic, a
rechunk, new attributes, new coordinate labels, a chain of several selections...)
travels as bytes, as before.

The server's side: the servicer sets :data:`resolver` while it decodes a request, and
dagen._xarray asks it for the object a reference names.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

# -- the client's side ------------------------------------------------------------------------


@dataclass(frozen=True)
class Root:
    """A lazy variable of a remote dataset as the client's dataset holds it."""

    connection: Any  # the client's Connection that opened the dataset
    handle: str
    variable: str
    dataset: Callable[[], Any]  # the client's xarray.Dataset (a weak reference to it)


@dataclass(frozen=True)
class Reference:
    """What a DatasetReference says: ``isel(indexers)`` of ``variables`` of a handle."""

    handle: str
    variables: tuple[str, ...]
    indexers: dict[str, slice | int | np.ndarray]


_roots: dict[str, Root] = {}  # by the dask name of the variable's array
_lock = threading.Lock()
_sending_to: contextvars.ContextVar[Any] = contextvars.ContextVar("dagen_sending_to",
                                                                  default=None)


def register(name: str, root: Root) -> None:
    with _lock:
        _roots[name] = root


def forget(handle: str) -> None:
    """Forget the variables of a released handle."""
    with _lock:
        for name in [n for n, r in _roots.items() if r.handle == handle]:
            del _roots[name]


@contextlib.contextmanager
def sending_to(connection: Any) -> Iterator[None]:
    """Arguments encoded inside the block go to ``connection``'s server: selections of
    datasets it opened travel as references."""
    token = _sending_to.set(connection)
    try:
        yield
    finally:
        _sending_to.reset(token)


def reference_of(obj: Any) -> Reference | None:
    """The reference to send instead of ``obj`` (a DataArray or Dataset), or None."""
    connection = _sending_to.get()
    if connection is None or not _roots:
        return None
    import xarray as xr

    try:
        if isinstance(obj, xr.DataArray):
            return _reference(obj, connection, dataset=False)
        if isinstance(obj, xr.Dataset) and obj.data_vars:
            return _reference(obj, connection, dataset=True)
    except (ValueError, KeyError, TypeError, IndexError):  # not a selection we can name
        return None
    return None


def _root_of(data: Any, connection: Any) -> Root | None:
    graph = getattr(data, "dask", None)
    if graph is None:
        return None
    layers = getattr(graph, "layers", None) or {}
    found = [_roots[name] for name in layers if name in _roots]
    if len(found) != 1 or found[0].connection is not connection:
        return None
    return found[0]


def _reference(obj: Any, connection: Any, *, dataset: bool) -> Reference | None:
    arrays = list(obj.data_vars.values()) if dataset else [obj]
    roots = [_root_of(a.data, connection) for a in arrays]
    if any(r is None for r in roots):
        return None
    handles = {r.handle for r in roots if r is not None}
    if len(handles) != 1:
        return None
    first = roots[0]
    assert first is not None
    source = first.dataset()
    if source is None:  # the dataset is gone (its selections live on): send the bytes
        return None
    variables = tuple(r.variable for r in roots if r is not None)
    whole = source[list(variables)] if dataset else source[variables[0]]
    indexers = _indexers(obj, whole)
    if indexers is None:
        return None
    for candidate in (indexers, _as_arrays(indexers, whole)):
        expected = whole.isel(candidate)
        if _same_selection(expected, obj, arrays, dataset):
            return Reference(first.handle, variables, candidate)
    return None


def _as_arrays(indexers: dict[str, slice | int | np.ndarray],
               whole: Any) -> dict[str, slice | int | np.ndarray]:
    """The same indexers with slices as arrays of positions (``isel([0, 1, 2])`` names
    its dask array differently from ``isel(slice(0, 3))``)."""
    return {dim: np.arange(whole.sizes[dim])[i] if isinstance(i, slice) else i
            for dim, i in indexers.items()}


def _indexers(obj: Any, whole: Any) -> dict[str, slice | int | np.ndarray] | None:
    """Integer indexers per dimension of ``whole`` that select ``obj``, found by matching
    the coordinates; None when a dimension cannot be matched."""
    indexers: dict[str, slice | int | np.ndarray] = {}
    for dim in whole.dims:
        index = whole.indexes.get(dim)
        if dim in obj.dims:
            theirs = obj.indexes.get(dim)
            if index is None or theirs is None:
                if obj.sizes[dim] != whole.sizes[dim]:
                    return None
                continue  # whole (checked below: the selection must be the same)
            positions = index.get_indexer(theirs)
            if (positions < 0).any():
                return None
            if len(positions) == len(index) and (positions == np.arange(len(index))).all():
                continue
            indexers[dim] = _as_slice(positions)
        else:
            scalar = obj.coords.get(dim)
            if index is None or scalar is None or scalar.ndim != 0:
                return None
            position = index.get_loc(scalar.values[()])
            if not isinstance(position, int | np.integer):
                return None
            indexers[dim] = int(position)
    return indexers


def _as_slice(positions: np.ndarray) -> slice | np.ndarray:
    if len(positions) == 1:
        return slice(int(positions[0]), int(positions[0]) + 1)
    steps = np.diff(positions)
    if len(positions) and (steps == steps[0]).all() and steps[0] > 0:
        step = int(steps[0])
        return slice(int(positions[0]), int(positions[-1]) + 1, step if step != 1 else None)
    return positions.astype(np.int64)


def _same_selection(expected: Any, obj: Any, arrays: list[Any], dataset: bool) -> bool:
    """Whether ``obj`` is ``expected``: the same dask names (deterministic tokens of the
    same indexing of the same source: the same data; coordinate labels alone cannot say
    it, as ``assign_coords`` changes them and not the data), and the same coordinates,
    names and attributes (compared without computing)."""
    mine = list(expected.data_vars.values()) if dataset else [expected]
    for want, got in zip(mine, arrays, strict=True):
        if want.data.name != got.data.name:
            return False
    if dataset:
        same = expected.copy(data={k: v.data for k, v in obj.data_vars.items()})
    else:
        same = expected.copy(data=obj.data)
    return bool(same.identical(obj))


# -- the server's side ------------------------------------------------------------------------

# Set by the servicer while it decodes a request: the object a reference names (it
# raises dagen._datasets.HandleRefused when the caller may not use it).
resolver: contextvars.ContextVar[Callable[[Any, bool], Any] | None] = contextvars.ContextVar(
    "dagen_reference_resolver", default=None)


def resolve(message: Any, dataarray: bool) -> Any:
    """The server's object (a DataArray, or a Dataset) for a received DatasetReference."""
    resolve_one = resolver.get()
    if resolve_one is None:
        from ._wire import WireError

        raise WireError("a dataset reference arrived where none can be resolved (only a "
                        "server resolves the handles it opened)")
    return resolve_one(message, dataarray)
