"""pandas DataFrames and Series through a real `dagen serve` over mutual TLS: every column
kind, the index and the names come back so that assert_frame_equal holds exactly."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from conftest import SERVICES, SHARED_DATA, Certs, import_client, start_server

from dagen._build import build

BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")


@pytest.fixture(scope="module")
def table_build(tmp_path_factory):
    return build(str(SERVICES / "table_service.py"), tmp_path_factory.mktemp("table-build"))


@pytest.fixture(scope="module")
def tables(table_build, certs: Certs):
    server = start_server(SERVICES / "table_service.py", "--certs", str(certs.folder))
    module = import_client(table_build.client, "table_service_client")
    try:
        with module.Client(server.target, certs=certs.folder, identity="alice", timeout=120) as c:
            yield c
    finally:
        server.stop()


def every_kind(n: int = 6) -> pd.DataFrame:
    """One column of each kind a station table has."""
    rng = np.random.default_rng(0)
    df = pd.DataFrame({
        "temperature": rng.normal(280, 5, n),
        "count": np.arange(n, dtype="int32"),
        "flag": np.arange(n) % 2 == 0,
        "time": pd.date_range("2020-01-01", periods=n, freq="h"),
        "local": pd.date_range("2020-03-29", periods=n, freq="h", tz=BERLIN),
        "offset": pd.date_range("2020-01-01", periods=n, tz=dt.timezone(dt.timedelta(hours=-3))),
        "utc": pd.date_range("2020-01-01", periods=n, freq="min", tz="UTC"),
        "lag": pd.to_timedelta(np.arange(n), unit="s"),
        "name": ["Nord", None, "Süd", "Ost", "West", "Mitte"][:n],
        "code": pd.array(["a", None, "b", "c", "d", "e"][:n], dtype="string"),
        "raw": pd.Series(["p", "q", None, "r", "s", "t"][:n], dtype=object),
        "quality": pd.Categorical(["good", "bad", None, "good", "bad", "good"][:n],
                                  categories=["bad", "good"], ordered=True),
        "level": pd.Categorical([850, 500, 850, 200, 500, 850][:n]),
        "samples": pd.array([1, None, 3, 4, 5, 6][:n], dtype="Int64"),
        "valid": pd.array([True, None, False, True, True, False][:n], dtype="boolean"),
        "missing": pd.to_datetime(["2020-01-01", None, "2021-01-01", None, "2022-01-01", None][:n]),
    }, index=pd.Index(list("uvwxyz")[:n], name="station"))
    df.columns.name = "variables"
    return df


def test_every_column_kind_and_a_named_index_round_trip(tables):
    df = every_kind()
    back = tables.echo_frame(df)
    pd.testing.assert_frame_equal(back, df, check_exact=True)
    assert list(back.dtypes) == list(df.dtypes)


@pytest.mark.parametrize("index", [
    pd.RangeIndex(10, 22, 2),
    pd.RangeIndex(6, name="row"),
    pd.date_range("2020-01-01", periods=6, freq="D", name="time"),
    pd.date_range("2020-01-01", periods=6, freq="15min", tz=BERLIN),
    pd.DatetimeIndex(["2020-01-03", "2020-01-01", "2020-01-02"] * 2),  # no freq
    pd.Index([3.5, 1.0, 2.0, 4.0, 5.0, 6.0], name="depth"),
    pd.CategoricalIndex(list("abcabc"), name="kind"),
    pd.timedelta_range("0s", periods=6, freq="s"),
], ids=lambda i: type(i).__name__ + (f"-{i.name}" if i.name else ""))
def test_indexes_round_trip(tables, index):
    df = pd.DataFrame({"x": np.arange(6.0)}, index=index)
    back = tables.echo_frame(df)
    pd.testing.assert_frame_equal(back, df, check_exact=True)
    assert type(back.index) is type(df.index)
    series = pd.Series(np.arange(6), index=index, name="x")
    pd.testing.assert_series_equal(tables.echo_series(series), series, check_exact=True)


def test_series_of_every_kind_keep_their_name_or_none(tables):
    df = every_kind()
    for name in df.columns:
        series = df[name]
        pd.testing.assert_series_equal(tables.echo_series(series), series, check_exact=True)
    unnamed = pd.Series([1.5, np.nan, 3.0])
    back = tables.echo_series(unnamed)
    assert back.name is None
    pd.testing.assert_series_equal(back, unnamed, check_exact=True)


def test_empty_frames_repeated_names_and_tables_in_containers(tables):
    for df in (pd.DataFrame(), every_kind().iloc[:0], pd.DataFrame(index=pd.RangeIndex(3))):
        pd.testing.assert_frame_equal(tables.echo_frame(df), df, check_exact=True)
    twice = pd.DataFrame([[1, 2], [3, 4]], columns=["a", "a"])
    pd.testing.assert_frame_equal(tables.echo_frame(twice), twice, check_exact=True)
    a, b = every_kind(), pd.DataFrame({"z": [1.0, 2.0]})
    got = tables.frames({"second": a, "first": b})
    pd.testing.assert_series_equal(got[0], a.iloc[:, 0], check_exact=True)
    pd.testing.assert_series_equal(got[1], b.iloc[:, 0], check_exact=True)


def test_a_large_column_travels_in_chunks(tables):
    n = 2_000_000  # 16 MB per float column: several chunks each
    df = pd.DataFrame({"a": np.arange(n, dtype="float64"), "b": np.arange(n) % 7 == 0},
                      index=pd.date_range("2000-01-01", periods=n, freq="s", name="time"))
    pd.testing.assert_frame_equal(tables.echo_frame(df), df, check_exact=True)


def test_the_server_computes_on_the_table(tables):
    df = every_kind(6).reset_index()
    df["station"] = ["a", "b", "a", "b", "a", "b"]
    expected = df.groupby("station", observed=True).mean(numeric_only=True)
    pd.testing.assert_frame_equal(tables.station_means(df), expected, check_exact=True)


def test_real_data_as_a_table(tables):
    path = SHARED_DATA / "eraint_uvz.nc"
    if not path.exists():
        pytest.skip(f"{path} is absent (the shared data folder of this environment)")
    try:
        ds = xr.open_dataset(path)
    except (ValueError, ImportError) as e:
        pytest.skip(f"no netCDF engine: {e}")
    df = ds["z"].isel(month=0, level=0).to_dataframe().reset_index()
    df["level"] = df["level"].astype("category")
    pd.testing.assert_frame_equal(tables.echo_frame(df), df, check_exact=True)
    means = tables.station_means(df, by="latitude")
    pd.testing.assert_frame_equal(means, df.groupby("latitude").mean(numeric_only=True),
                                  check_exact=True)


@pytest.mark.parametrize(("table", "words"), [
    (pd.DataFrame({1: [1.0]}), ["column names must be str", "astype(str)"]),
    (pd.DataFrame({"a": [1]}, index=pd.MultiIndex.from_tuples([(1, 2)])),
     ["MultiIndex", "reset_index()"]),
    (pd.DataFrame({"p": pd.period_range("2020", periods=1, freq="M")}),
     ["column 'p'", "period[M]", "astype"]),
    (pd.DataFrame({"o": [object()]}), ["column 'o'", "object arrays cannot be sent"]),
])
def test_tables_that_cannot_be_sent_are_refused_with_what_to_do(tables, table, words):
    with pytest.raises(TypeError) as refused:
        tables.echo_frame(table)
    for word in words:
        assert word in str(refused.value)


def test_a_class_taking_a_table_makes_the_client_depend_on_pandas(tmp_path):
    source = tmp_path / "fitting.py"
    source.write_text(
        "import pandas as pd\n\n\n"
        "class Model:\n"
        "    def __init__(self, table: pd.DataFrame) -> None:\n"
        "        self.table = table\n\n"
        "    def rows(self) -> int:\n"
        "        return len(self.table)\n")
    built = build(str(source), tmp_path / "build")
    assert '"pandas>=2"' in (built.client / "pyproject.toml").read_text()


def test_the_client_annotates_and_depends_on_pandas(table_build):
    import inspect

    module = import_client(table_build.client, "table_service_client")
    signature = inspect.signature(module.echo_frame)
    assert signature.parameters["table"].annotation is pd.DataFrame
    assert signature.return_annotation is pd.DataFrame
    assert '"pandas>=2"' in (table_build.client / "pyproject.toml").read_text()
    assert 'import "dagen/v1/table.proto";' in table_build.proto.read_text()
