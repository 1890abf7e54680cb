"""`assert_equivalent`: results compared by value and type, where a client's mirror of a
server type (dataclass, pydantic model, enum) counts as the type it mirrors."""

import dataclasses
import datetime as dt
import enum

import numpy as np
import pandas as pd
import xarray as xr


def _fields(value):
    if dataclasses.is_dataclass(value):
        return [f.name for f in dataclasses.fields(value)]
    return list(type(value).model_fields)


def assert_equivalent(actual, expected, where="result"):
    if isinstance(expected, xr.DataArray | xr.Dataset):
        assert type(actual) is type(expected), where
        expected = expected.compute()
        try:
            xr.testing.assert_identical(actual, expected)
        except ValueError:  # xarray cannot compare attrs holding dicts of arrays: we do
            xr.testing.assert_identical(actual.drop_attrs(deep=True), expected.drop_attrs(deep=True))
        variables = [("", actual, expected)] + [
            (name, actual[name], var) for name, var in expected.coords.items()
        ] + ([(name, actual[name], var) for name, var in expected.data_vars.items()]
             if isinstance(expected, xr.Dataset) else [])
        for name, got, want in variables:
            assert_equivalent(got.attrs, want.attrs, f"{where}: attrs of {name or 'the object'}")
        pairs = [(actual.variables, expected.variables)] if isinstance(expected, xr.Dataset) else [
            ({None: actual.variable}, {None: expected.variable}),
            (actual.coords.variables, expected.coords.variables),
        ]
        for got, want in pairs:
            for name, var in want.items():
                assert got[name].dtype == var.dtype, f"{where}: dtype of {name}"
    elif isinstance(expected, pd.DataFrame):
        assert type(actual) is pd.DataFrame, f"{where}: {type(actual)}"
        pd.testing.assert_frame_equal(actual, expected, check_exact=True, obj=where)
    elif isinstance(expected, pd.Series):
        assert type(actual) is pd.Series, f"{where}: {type(actual)}"
        pd.testing.assert_series_equal(actual, expected, check_exact=True, obj=where)
    elif isinstance(expected, np.ndarray):
        assert isinstance(actual, np.ndarray), f"{where}: {type(actual)}"
        assert (actual.dtype, actual.shape) == (expected.dtype, expected.shape), where
        np.testing.assert_array_equal(actual, expected)
    elif isinstance(expected, np.generic):
        assert type(actual) is type(expected), f"{where}: {type(actual)} != {type(expected)}"
        assert actual.dtype == expected.dtype, where
        if expected.dtype.kind in "mM" and np.isnat(expected):
            assert np.isnat(actual), where
        else:
            assert actual == expected, where
    elif isinstance(expected, enum.Enum):
        assert type(actual).__name__ == type(expected).__name__, where
        assert (actual.name, actual.value) == (expected.name, expected.value), where
    elif dataclasses.is_dataclass(expected) or hasattr(type(expected), "model_fields"):
        assert type(actual).__name__ == type(expected).__name__, where
        assert _fields(actual) == _fields(expected), where
        for name in _fields(expected):
            assert_equivalent(getattr(actual, name), getattr(expected, name), f"{where}.{name}")
    elif isinstance(expected, dict):
        assert type(actual) is dict and list(actual) == list(expected), f"{where}: keys or order"
        for key in expected:
            assert_equivalent(actual[key], expected[key], f"{where}[{key!r}]")
    elif isinstance(expected, list | tuple):
        assert type(actual) is type(expected) and len(actual) == len(expected), where
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_equivalent(a, e, f"{where}[{i}]")
    elif isinstance(expected, dt.datetime):
        assert type(actual) is dt.datetime, where
        assert (actual, actual.utcoffset(), actual.tzinfo, actual.fold) == (
            expected, expected.utcoffset(), expected.tzinfo, expected.fold), where
        assert actual.replace(tzinfo=None) == expected.replace(tzinfo=None), where  # wall time
    else:
        assert type(actual) is type(expected), f"{where}: {type(actual)} != {type(expected)}"
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"


def call_case(namespace, key, args, kwargs):
    """Call a CASES entry of a golden module on ``namespace``: the module, a client, or
    the client package (its module-level functions and classes). ``key`` is a function
    or ``Class.method``; for a method, ``args`` is (constructor args or None for the
    class itself, constructor kwargs, call args)."""
    if "." not in key:
        return getattr(namespace, key)(*args, **kwargs)
    cls_name, method = key.split(".")
    init_args, init_kwargs, call_args = args
    cls = getattr(namespace, cls_name)  # on a client: bound to it
    target = cls if init_args is None else cls(*init_args, **init_kwargs)
    return getattr(target, method)(*call_args, **kwargs)
