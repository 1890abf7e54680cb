"""Where ``--executor dask`` runs calls: a cluster file, or a scheduler that already runs.

``cluster.yaml`` (or ``[tool.dagen.cluster]`` in a pyproject.toml)::

    kind: slurm            # slurm, pbs, sge, lsf, htcondor (dask-jobqueue), or local
    options:               # keyword arguments of that cluster class
      cores: 4
      memory: 16GB
      queue: compute
      job_script_prologue: ["source ~/venvs/ocean/bin/activate"]
    scale: {jobs: 2}       # or adapt: {minimum: 0, maximum: 20}
    wait_for_workers: 300  # seconds a call waits for a worker before failing (UNAVAILABLE)
    upload: false          # true: send the served module's file to the workers

The served module must be importable where the workers run: a shared environment
(the same virtualenv through ``job_script_prologue``, the module's folder on a shared
file system, which the workers also try by its path), or ``upload: true`` for a
module that is one file (sent with ``Client.upload_file``). It is checked on the
workers before the first call runs, with an error that says so.

Dask comms between the server, the scheduler and the workers use TLS by default
(temporary certificates: ``security=True``); ``options: {security: false}`` turns that
off. Nothing here imports dask until a cluster is started.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._exceptions import ClusterError

# kind -> the dask-jobqueue class (None: distributed.LocalCluster)
KINDS: dict[str, str | None] = {
    "slurm": "SLURMCluster",
    "pbs": "PBSCluster",
    "sge": "SGECluster",
    "lsf": "LSFCluster",
    "htcondor": "HTCondorCluster",
    "local": None,
}
_KEYS = ("kind", "options", "scale", "adapt", "wait_for_workers", "upload")
# keyword arguments dagen sets itself, or that make no sense in a file
_RESERVED = {"asynchronous", "loop", "job_cls", "start", "n_workers", "scheduler_cls",
             "workers", "scheduler", "worker", "base_class_kwargs", "job_kwargs",
             "worker_kwargs", "args", "kwargs"}
DEFAULT_WAIT = 300.0


@dataclass(frozen=True)
class ClusterSpec:
    """A cluster file, checked."""

    kind: str
    options: Mapping[str, Any] = field(default_factory=dict)
    jobs: int | None = None  # scale: {jobs: N}
    adapt: tuple[int, int] | None = None  # adapt: {minimum, maximum}
    wait_for_workers: float = DEFAULT_WAIT
    upload: bool = False
    source: str = "the cluster file"


@dataclass(frozen=True)
class DaskTarget:
    """Where ``--executor dask`` sends calls: one of a cluster to start, a scheduler's
    address, or a scheduler file."""

    cluster: ClusterSpec | None = None
    scheduler: str | None = None
    scheduler_file: str | None = None
    wait_for_workers: float = DEFAULT_WAIT
    spool: str | None = None  # --spool: the folder arguments are received into

    def describe(self) -> str:
        if self.cluster is not None:
            return f"a {self.cluster.kind} cluster ({self.cluster.source})"
        if self.scheduler is not None:
            return f"the dask scheduler at {self.scheduler}"
        return f"the dask scheduler of {self.scheduler_file}"


def dask_target(
    cluster: str | None, scheduler: str | None, scheduler_file: str | None,
    wait_for_workers: float | None = None, spool: str | None = None,
) -> DaskTarget:
    """The target that ``--cluster``, ``--scheduler`` and ``--scheduler-file`` name
    (exactly one of them); ``wait_for_workers`` overrides the cluster file's; ``spool``
    is the folder of ``--spool`` (made if need be)."""
    spool = _spool_folder(spool) if spool else None
    given = [n for n, v in (("--cluster", cluster), ("--scheduler", scheduler),
                            ("--scheduler-file", scheduler_file)) if v]
    if len(given) != 1:
        raise ClusterError(
            "--executor dask needs exactly one of --cluster FILE, --scheduler ADDRESS or "
            f"--scheduler-file FILE (given: {', '.join(given) or 'none'})"
        )
    if cluster:
        spec = load_cluster_spec(cluster)
        if wait_for_workers is not None:
            spec = dataclasses.replace(spec, wait_for_workers=wait_for_workers)
        return DaskTarget(cluster=spec, wait_for_workers=spec.wait_for_workers, spool=spool)
    if scheduler_file and not Path(scheduler_file).expanduser().is_file():
        raise ClusterError(f"--scheduler-file {scheduler_file}: no such file")
    return DaskTarget(scheduler=scheduler or None, scheduler_file=scheduler_file or None,
                      wait_for_workers=wait_for_workers or DEFAULT_WAIT, spool=spool)


def _spool_folder(spool: str) -> str:
    """The absolute path of ``--spool``, made (mode 0700) if it is not there; a folder
    that cannot be made or written stops the server with what is wrong."""
    path = Path(spool).expanduser().absolute()
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise ClusterError(f"--spool {spool}: cannot make the folder ({e.strerror})") from None
    if not path.is_dir() or not os.access(path, os.W_OK | os.X_OK):
        raise ClusterError(f"--spool {spool}: not a folder this server can write into")
    return str(path)


def load_cluster_spec(path: str | Path) -> ClusterSpec:
    """Read and check a cluster file: YAML, or a pyproject.toml's ``[tool.dagen.cluster]``."""
    path = Path(path).expanduser()
    source = str(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ClusterError(f"{source}: cannot read the cluster file ({e.strerror})") from None
    if path.suffix == ".toml":
        try:
            data: Any = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ClusterError(f"{source}: not valid TOML ({e})") from None
        data = data.get("tool", {}).get("dagen", {}).get("cluster")
        if data is None:
            raise ClusterError(f"{source}: no [tool.dagen.cluster] table")
    else:
        try:
            import yaml
        except ImportError:
            raise ClusterError(
                f"{source}: reading a YAML cluster file needs pyyaml (pip install 'dagen-grpc[cluster]')"
            ) from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ClusterError(f"{source}: not valid YAML ({str(e).splitlines()[0]})") from None
    return cluster_spec(data, source)


def cluster_spec(data: Any, source: str = "the cluster file") -> ClusterSpec:
    """Check a cluster file's contents (a mapping)."""
    if not isinstance(data, dict):
        raise ClusterError(f"{source}: expected a mapping with 'kind', 'options' and 'scale'")
    unknown = sorted(set(data) - set(_KEYS))
    if unknown:
        raise ClusterError(
            f"{source}: unknown key {unknown[0]!r} (expected {', '.join(_KEYS)})"
        )
    kind = data.get("kind")
    if kind not in KINDS:
        raise ClusterError(
            f"{source}: kind {kind!r} is not one of {', '.join(KINDS)}"
            if kind is not None else f"{source}: no 'kind' (one of {', '.join(KINDS)})"
        )
    options = data.get("options") or {}
    if not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
        raise ClusterError(f"{source}: 'options' must be a mapping of keyword arguments")
    accepted = accepted_options(kind)
    for name in options:
        if name not in accepted:
            raise ClusterError(
                f"{source}: option {name!r} is not taken by {class_name(kind)} "
                f"(it takes: {', '.join(sorted(accepted))})"
            )
    scale, adapt = data.get("scale"), data.get("adapt")
    if (scale is None) == (adapt is None):
        raise ClusterError(
            f"{source}: give either 'scale: {{jobs: N}}' or 'adapt: {{minimum: M, maximum: N}}'"
            + (" (not both)" if scale is not None else ": without either no job ever starts")
        )
    jobs: int | None = None
    limits: tuple[int, int] | None = None
    if scale is not None:
        if not isinstance(scale, dict) or set(scale) != {"jobs"} or not _count(scale["jobs"], 1):
            raise ClusterError(f"{source}: 'scale' must be {{jobs: N}} with N a whole number >= 1")
        jobs = scale["jobs"]
    else:
        if (not isinstance(adapt, dict) or set(adapt) - {"minimum", "maximum"}
                or not _count(adapt.get("minimum", 0), 0)
                or not _count(adapt.get("maximum"), 1)
                or adapt.get("minimum", 0) > adapt["maximum"]):
            raise ClusterError(
                f"{source}: 'adapt' must be {{minimum: M, maximum: N}} with 0 <= M <= N and N >= 1"
            )
        limits = (adapt.get("minimum", 0), adapt["maximum"])
    wait = data.get("wait_for_workers", DEFAULT_WAIT)
    if isinstance(wait, bool) or not isinstance(wait, int | float) or wait <= 0:
        raise ClusterError(f"{source}: 'wait_for_workers' must be a number of seconds > 0")
    upload = data.get("upload", False)
    if not isinstance(upload, bool):
        raise ClusterError(f"{source}: 'upload' must be true or false")
    return ClusterSpec(kind, dict(options), jobs, limits, float(wait), upload, source)


def _count(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def class_name(kind: str) -> str:
    name = KINDS[kind]
    return f"dask_jobqueue.{name}" if name else "distributed.LocalCluster"


def _cluster_class(kind: str) -> Any:
    name = KINDS[kind]
    try:
        if name is None:
            from distributed import LocalCluster

            return LocalCluster
        import dask_jobqueue
    except ImportError as e:
        raise ClusterError(
            f"kind {kind!r} needs {e.name} (pip install 'dagen-grpc[cluster]')"
        ) from None
    return getattr(dask_jobqueue, name)


def accepted_options(kind: str) -> set[str]:
    """The keyword arguments the cluster class of ``kind`` takes (with its job class's)."""
    cls = _cluster_class(kind)
    classes = list(cls.__mro__)
    job_cls = getattr(cls, "job_cls", None)
    if job_cls is not None:
        classes += list(job_cls.__mro__)
    names: set[str] = set()
    for c in classes:
        if "__init__" in c.__dict__ and c is not object:
            for p in inspect.signature(c.__init__).parameters.values():
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                    names.add(p.name)
    return names - _RESERVED - {"self"}


def start_cluster(spec: ClusterSpec) -> Any:
    """Start the cluster a spec describes, scaled or adaptive; TLS unless turned off."""
    cls = _cluster_class(spec.kind)
    options = dict(spec.options)
    secure = options.pop("security", True)
    cluster: Any
    try:
        if spec.kind == "local":
            from distributed import LocalCluster, Security

            options.setdefault("threads_per_worker", 1)  # one task per worker: stoppable
            options.setdefault("processes", True)
            options.setdefault("host", "127.0.0.1")
            options.setdefault("dashboard_address", ":0")  # a free port, not 8787
            if secure is True:
                options["security"] = Security.temporary()
                options.setdefault("protocol", "tls://")
            elif secure:
                options["security"] = secure
            cluster = LocalCluster(n_workers=0, **options)
        else:
            scheduler_options = dict(options.get("scheduler_options") or {})
            scheduler_options.setdefault("dashboard_address", ":0")  # a free port, not 8787
            options["scheduler_options"] = scheduler_options
            cluster = cls(security=secure, **options)
    except (TypeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ClusterError(
            f"{spec.source}: {class_name(spec.kind)} refused the options: {first}"
        ) from None
    if spec.jobs is not None:
        if spec.kind == "local":
            cluster.scale(spec.jobs)
        else:
            cluster.scale(jobs=spec.jobs)
    elif spec.adapt is not None:
        minimum, maximum = spec.adapt
        if spec.kind == "local":
            cluster.adapt(minimum=minimum, maximum=maximum)
        else:
            cluster.adapt(minimum_jobs=minimum, maximum_jobs=maximum)
    return cluster


def connect(target: DaskTarget) -> tuple[Any, Any]:
    """A distributed client for the target, and the cluster dagen started (or None)."""
    try:
        from distributed import Client
    except ImportError:
        raise ClusterError("--executor dask needs distributed (pip install 'dagen-grpc[cluster]')") \
            from None
    if target.cluster is not None:
        cluster = start_cluster(target.cluster)
        try:
            return Client(cluster), cluster
        except BaseException:
            cluster.close()
            raise
    try:
        if target.scheduler_file:
            return Client(scheduler_file=str(Path(target.scheduler_file).expanduser()),
                          timeout=30), None
        return Client(target.scheduler, timeout=30), None
    except (OSError, TimeoutError) as e:
        raise ClusterError(f"cannot connect to {target.describe()}: {e}") from None
