"""Ocean analysis tools, published with dagen.

A realistic module to build and serve: monthly climatologies and anomalies of
gridded fields, zonal means, a numpy histogram and a scalar equation of state.
"""

import numpy as np
import xarray as xr

__all__ = ["climatology", "anomaly", "zonal_mean", "histogram", "sea_water_density", "describe"]


def climatology(da: xr.DataArray, dim: str = "time") -> xr.DataArray:
    """Mean annual cycle: the mean of each calendar month.

    Parameters
    ----------
    da : DataArray
        Monthly (or finer) data with a datetime coordinate along ``dim``.
    dim : str
        Name of the time dimension.

    Returns
    -------
    DataArray
        The field with ``dim`` replaced by ``month`` (1..12).
    """
    return da.groupby(f"{dim}.month").mean(dim, keep_attrs=True)


def anomaly(da: xr.DataArray, dim: str = "time") -> xr.DataArray:
    """Departure of each time step from its month's climatology.

    Parameters
    ----------
    da : DataArray
        Monthly (or finer) data with a datetime coordinate along ``dim``.
    dim : str
        Name of the time dimension.

    Returns
    -------
    DataArray
        Same shape and coordinates as ``da``.
    """
    clim = climatology(da, dim)
    result = (da.groupby(f"{dim}.month") - clim).drop_vars("month")
    result.attrs = dict(da.attrs)
    result.name = da.name
    return result


def zonal_mean(da: xr.DataArray, lon: str = "lon", skipna: bool | None = None) -> xr.DataArray:
    """Mean along the longitude dimension.

    Parameters
    ----------
    da : DataArray
        A field with a longitude dimension.
    lon : str
        Name of the longitude dimension.
    skipna : bool, optional
        Skip missing values; by default only for float data.
    """
    return da.mean(lon, skipna=skipna, keep_attrs=True)


def histogram(values: np.ndarray, bins: int = 10, weights: np.ndarray | None = None) -> np.ndarray:
    """Counts of ``values`` in ``bins`` equal bins between their minimum and maximum.

    Parameters
    ----------
    values : ndarray
        Any numbers; NaNs are ignored.
    bins : int
        Number of bins.
    weights : ndarray, optional
        A weight for each value.
    """
    finite = np.isfinite(values)
    w = None if weights is None else weights[finite]
    counts, _ = np.histogram(values[finite], bins=bins, weights=w)
    return counts


def sea_water_density(temperature: float, salinity: float, pressure: float = 0.0) -> float:
    """Density of sea water from a linear equation of state.

    Parameters
    ----------
    temperature : float
        Conservative temperature in degC.
    salinity : float
        Absolute salinity in g/kg.
    pressure : float
        Sea pressure in dbar.

    Returns
    -------
    float
        Density in kg/m3.
    """
    if salinity < 0:
        raise ValueError(f"salinity must not be negative, got {salinity}")
    rho0, alpha, beta, kappa = 1027.0, 1.7e-4, 7.6e-4, 4.4e-6
    return rho0 * (1 - alpha * (temperature - 10.0) + beta * (salinity - 35.0) + kappa * pressure)


def describe(names: list[str], units: dict[str, str] | None = None) -> dict[str, str]:
    """Describe variables by name, with their units when known.

    Parameters
    ----------
    names : list of str
        Variable names.
    units : dict, optional
        Units by variable name.
    """
    units = units or {}
    return {name: f"{name} [{units.get(name, '1')}]" for name in names}
