"""Property-based round trips through a real server: whatever goes in comes out
identical (assert_identical for xarray, == with type equality for the rest)."""

import datetime as dt

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import xarray as xr
import xarray.testing.strategies as xrst
from conftest import SERVICES, import_client, start_server
from equivalence import assert_equivalent
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dagen._build import build

PROPERTIES = settings(
    max_examples=40, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def remote(tmp_path_factory, certs):
    out = tmp_path_factory.mktemp("property-build")
    module = SERVICES / "property_service.py"
    result = build(str(module), out / "build", lock=out / "lock")
    server = start_server(module, "--certs", str(certs.folder), "--lock", str(out / "lock"))
    client_module = import_client(result.client, "property_service_client")
    with client_module.Client(server.target, certs=certs.folder, identity="alice", timeout=60) as c:
        yield c
    server.stop()


# xarray's variables() cannot draw datetime64 values pandas accepts in every unit: time
# dtypes are drawn for plain arrays here, and tested in xarray objects in test_roundtrip.
NUMERIC = hnp.integer_dtypes(endianness="=") | hnp.unsigned_integer_dtypes(endianness="=") \
    | hnp.floating_dtypes(endianness="=") | hnp.complex_number_dtypes(endianness="=") \
    | hnp.boolean_dtypes() | hnp.floating_dtypes(endianness=">") | hnp.integer_dtypes(endianness=">")
WIRE_DTYPES = NUMERIC | hnp.datetime64_dtypes(endianness="=") | hnp.timedelta64_dtypes(endianness="=")


@PROPERTIES
@given(var=xrst.variables(dtype=NUMERIC))
def test_dataarrays_round_trip(remote, var):
    da = xr.DataArray(var, name="v")
    assert_equivalent(remote.echo_dataarray(da), da)


@PROPERTIES
@given(sizes=xrst.dimension_sizes(min_dims=1, max_dims=3, max_side=4), data=st.data())
def test_datasets_round_trip(remote, sizes, data):
    dims = list(sizes)
    # a data variable may not take a dimension's name (the first one is a coordinate)
    names = data.draw(st.lists(st.text("abcxyz", min_size=1, max_size=4).filter(
        lambda name: name not in sizes), min_size=1, max_size=3, unique=True))
    variables = {
        name: data.draw(xrst.variables(dims=st.just({d: sizes[d] for d in dims[: i % len(dims) + 1]}),
                                       dtype=NUMERIC))
        for i, name in enumerate(names)
    }
    coords = {dims[0]: np.arange(sizes[dims[0]]) * 1.5}
    ds = xr.Dataset(variables, coords=coords, attrs=data.draw(xrst.attrs()))
    assert_equivalent(remote.echo_dataset(ds), ds)


@PROPERTIES
@given(a=hnp.arrays(WIRE_DTYPES, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5)))
def test_arrays_round_trip(remote, a):
    assert_equivalent(remote.echo_array(a), a)


int64 = st.integers(-(2**63), 2**63 - 1)
finite = st.floats(allow_nan=False)


@PROPERTIES
@given(
    values=st.tuples(
        int64, finite, st.text(), st.binary(), st.booleans(), st.none() | finite,
        st.lists(int64), st.dictionaries(st.text(), st.lists(finite)),
        st.dictionaries(int64, st.text()), st.tuples(int64, st.text()),
        st.lists(finite).map(tuple), st.sets(int64), int64 | st.text(),
    )
)
def test_plain_values_round_trip(remote, values):
    assert_equivalent(remote.echo_plain(*values), values)


@PROPERTIES
@given(
    when=st.datetimes(timezones=st.none() | st.timezones() | st.just(dt.UTC)),
    day=st.dates(),
    span=st.timedeltas(),
    stamp=st.integers(-(2**62), 2**62).map(lambda n: np.datetime64(n, "ns")),
)
def test_times_round_trip(remote, when, day, span, stamp):
    assert_equivalent(remote.echo_times(when, day, span, stamp), (when, day, span, stamp))
