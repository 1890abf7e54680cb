"""xarray objects and their attributes on the wire (see protos/dagen/v1/xarray.proto)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from xarray.indexes import PandasIndex

from ._arrays import DecodeContext, EncodeContext, attach_array, is_dask, read_array
from ._references import Reference, reference_of, resolve
from ._wire import WireError, wire_dtype

# Attribute arrays travel inside their message; anything bigger belongs in a variable.
MAX_INLINE_ARRAY_BYTES = 1 << 20


def _name(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be str to be sent, got {type(value).__name__} {value!r}")
    return value


def fill_variable(var: xr.Variable, m: Any, ctx: EncodeContext, what: str) -> None:
    m.dims.extend(_name(d, f"dimension names of {what}") for d in var.dims)
    data = var.data
    if not isinstance(data, np.ndarray) and not is_dask(data):
        data = np.asarray(var.values)  # pandas-backed index coordinates, other lazy wrappers
    attach_array(data, m.data, ctx)
    fill_attrs(var.attrs, m.attrs, what)


def fill_attrs(attrs: Mapping[Any, Any], repeated: Any, what: str) -> None:
    """Add the attributes of ``what`` to ``repeated`` (a repeated dagen.v1.Attribute);
    TypeError names the one that cannot be sent."""
    for key, value in attrs.items():
        attr = repeated.add()
        attr.name = _name(key, f"attribute names of {what}")
        try:
            write_value(value, attr.value)
        except TypeError as e:
            raise TypeError(f"attribute {key!r} of {what}: {e}") from None


def read_attrs(repeated: Any) -> dict[str, Any]:
    """The attributes in a repeated dagen.v1.Attribute."""
    return {a.name: read_value(a.value) for a in repeated}


def read_variable(m: Any, ctx: DecodeContext) -> xr.Variable:
    attrs = read_attrs(m.attrs)
    data = read_array(m.data, ctx)
    if len(m.dims) != data.ndim:
        raise WireError(f"variable has dims {list(m.dims)} but {data.ndim}-d data")
    return xr.Variable(tuple(m.dims), data, attrs=attrs)


def _fill_coords(obj: xr.DataArray | xr.Dataset, m: Any, ctx: EncodeContext) -> None:
    coords = obj.coords
    if not coords:  # (a small array's encode would spend a good part of its time on indexes)
        return
    indexes = obj.xindexes
    for name, coord in coords.items():
        if isinstance(obj.indexes.get(name), pd.MultiIndex):
            raise TypeError(f"coordinate {name!r} is a MultiIndex, which cannot be sent yet")
        index = indexes.get(name)
        if index is not None and type(index) is not PandasIndex:
            raise TypeError(
                f"coordinate {name!r} has an index of type {type(index).__name__}, which cannot "
                "be sent: only pandas indexes can (drop_indexes() it, or set_xindex() a PandasIndex)"
            )
        c = m.coords.add()
        c.name = _name(name, "coordinate names")
        fill_variable(coord.variable, c.variable, ctx, f"coordinate {name!r}")
        c.indexed = index is not None


def _coordinates(m: Any, ctx: DecodeContext) -> tuple[xr.Coordinates, list[str]]:
    """The coordinates of a message, without indexes, and the names of those to index:
    those flagged ``indexed``, or by xarray's default (dimension coordinates)."""
    variables = {c.name: read_variable(c.variable, ctx) for c in m.coords}
    indexed = [
        c.name
        for c in m.coords
        if (c.indexed if c.HasField("indexed") else variables[c.name].dims == (c.name,))
    ]
    return xr.Coordinates(variables, indexes={}), indexed


def _with_indexes(obj: Any, names: list[str]) -> Any:
    for name in names:
        if obj[name].ndim != 1:
            raise WireError(f"coordinate {name!r} is flagged indexed but is {obj[name].ndim}-d")
        obj = obj.set_xindex(name)
    return obj


def fill_dataarray(da: xr.DataArray, m: Any, ctx: EncodeContext) -> None:
    reference = reference_of(da) if is_dask(da.data) else None
    if reference is not None:  # a selection of a dataset the server opened: not its bytes
        fill_reference(reference, m.reference)
        return
    if da.name is not None:
        m.name = _name(da.name, "the DataArray's name")
    fill_variable(da.variable, m.variable, ctx, "the DataArray")
    _fill_coords(da, m, ctx)


def read_dataarray(m: Any, ctx: DecodeContext) -> xr.DataArray:
    if m.HasField("reference"):
        return resolve(m.reference, True)  # type: ignore[no-any-return]
    var = read_variable(m.variable, ctx)
    name = m.name if m.HasField("name") else None
    if not m.coords:
        # Nothing to check between a variable and coordinates: the DataArray made from
        # its variable as it is (xarray's fastpath), not rebuilt and checked again
        # (a small array's decode is mostly DataArray.__init__).
        return xr.DataArray(var, coords={}, name=name, indexes={}, fastpath=True)
    try:
        coords, indexed = _coordinates(m, ctx)
        da = xr.DataArray(
            var.data,
            dims=var.dims,
            coords=coords,
            name=name,
            attrs=var.attrs,
        )
        return _with_indexes(da, indexed)
    except (ValueError, TypeError) as e:
        raise WireError(f"inconsistent DataArray: {e}") from None


def fill_dataset(ds: xr.Dataset, m: Any, ctx: EncodeContext) -> None:
    reference = reference_of(ds) if any(is_dask(v.data) for v in ds.data_vars.values()) else None
    if reference is not None:  # a selection of a dataset the server opened: not its bytes
        fill_reference(reference, m.reference)
        return
    for name, var in ds.data_vars.items():
        d = m.data_vars.add()
        d.name = _name(name, "data variable names")
        fill_variable(var.variable, d.variable, ctx, f"data variable {name!r}")
    _fill_coords(ds, m, ctx)
    fill_attrs(ds.attrs, m.attrs, "the Dataset")


def read_dataset(m: Any, ctx: DecodeContext) -> xr.Dataset:
    if m.HasField("reference"):
        return resolve(m.reference, False)  # type: ignore[no-any-return]
    data_vars = {d.name: read_variable(d.variable, ctx) for d in m.data_vars}
    attrs = read_attrs(m.attrs)
    try:
        coords, indexed = _coordinates(m, ctx)
        return _with_indexes(xr.Dataset(data_vars, coords=coords, attrs=attrs), indexed)
    except (ValueError, TypeError) as e:
        raise WireError(f"inconsistent Dataset: {e}") from None


def fill_reference(reference: Reference, m: Any) -> None:
    """Fill a dagen.v1.DatasetReference."""
    m.handle = reference.handle
    m.variables.extend(reference.variables)
    for dim, indexer in reference.indexers.items():
        i = m.indexers.add()
        i.dim = dim
        if isinstance(indexer, slice):
            s = i.slice
            s.SetInParent()
            for name in ("start", "stop", "step"):
                if getattr(indexer, name) is not None:
                    setattr(s, name, int(getattr(indexer, name)))
        elif isinstance(indexer, int):
            i.index = indexer
        else:
            i.positions.SetInParent()
            i.positions.values.extend(int(p) for p in indexer)


def read_indexers(m: Any) -> dict[str, slice | int | np.ndarray]:
    """The isel indexers of a dagen.v1.DatasetReference."""
    indexers: dict[str, slice | int | np.ndarray] = {}
    for i in m.indexers:
        kind = i.WhichOneof("kind")
        if kind == "slice":
            s = i.slice
            indexers[i.dim] = slice(*(getattr(s, n) if s.HasField(n) else None
                                      for n in ("start", "stop", "step")))
        elif kind == "index":
            indexers[i.dim] = i.index
        elif kind == "positions":
            indexers[i.dim] = np.asarray(i.positions.values, dtype=np.int64)
        else:
            raise WireError(f"the indexer of dimension {i.dim!r} is empty")
    return indexers


# -- attribute values --------------------------------------------------------------------------


def write_value(value: Any, m: Any) -> None:
    """Fill a dagen.v1.Value, keeping the exact type (numpy scalars included)."""
    if value is None:
        m.none = True
    elif isinstance(value, np.ndarray | np.generic):
        array = np.asarray(value)
        if array.dtype.kind not in "biufcmMUS":
            raise TypeError(f"arrays of dtype {array.dtype} cannot be sent")
        if array.nbytes > MAX_INLINE_ARRAY_BYTES:
            raise TypeError(f"an attribute array of {array.nbytes} bytes is too large")
        inline = m.array_value
        inline.dtype = array.dtype.str
        inline.shape.extend(array.shape)
        inline.data = np.ascontiguousarray(array).tobytes()
        inline.scalar = isinstance(value, np.generic)
    elif isinstance(value, bool):
        m.bool_value = value
    elif isinstance(value, int):
        if not -(2**63) <= value < 2**63:
            raise TypeError(f"int {value} does not fit in 64 bits")
        m.int_value = value
    elif isinstance(value, float):
        m.float_value = value
    elif isinstance(value, str):
        m.string_value = value
    elif isinstance(value, bytes):
        m.bytes_value = value
    elif isinstance(value, list | tuple):
        m.list_value.SetInParent()
        m.list_value.is_tuple = isinstance(value, tuple)
        for item in value:
            write_value(item, m.list_value.values.add())
    elif isinstance(value, dict):
        m.map_value.SetInParent()
        for key, item in value.items():
            m.map_value.keys.append(_name(key, "dict keys in attributes"))
            write_value(item, m.map_value.values.add())
    else:
        raise TypeError(f"values of type {type(value).__name__} cannot be sent")


def read_value(m: Any) -> Any:
    kind = m.WhichOneof("kind")
    if kind is None or kind == "none":
        return None
    if kind == "array_value":
        inline = m.array_value
        dtype = wire_dtype(inline.dtype)
        shape = tuple(inline.shape)
        if any(n < 0 for n in shape) or int(np.prod(shape)) * dtype.itemsize != len(inline.data):
            raise WireError(
                f"inline array of shape {shape} and dtype {dtype} has {len(inline.data)} bytes"
            )
        array = np.frombuffer(inline.data, dtype=dtype).reshape(shape).copy()
        return array[()] if inline.scalar else array
    if kind == "list_value":
        items = [read_value(v) for v in m.list_value.values]
        return tuple(items) if m.list_value.is_tuple else items
    if kind == "map_value":
        if len(m.map_value.keys) != len(m.map_value.values):
            raise WireError("attribute map has unequal numbers of keys and values")
        return {k: read_value(v) for k, v in zip(m.map_value.keys, m.map_value.values, strict=True)}
    return getattr(m, kind)
