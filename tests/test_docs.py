"""Every example of README.md and docs/*.md runs (FastAPI's pattern, issue 13 §3).

- A ``python`` or ``toml`` block names the file it is from (``<!-- example: PATH -->``
  on the line before it) and must appear in that file verbatim, so the pages cannot
  drift from the files; every file of docs/examples/ is run here against a real
  ``dagen serve`` (real certificates, mutual TLS on loopback).
- The README's first ``console`` block is run as written in a temporary folder, and the
  visitor's example calls the server it started. The certificate commands of
  docs/security.md are run as written too. Every other command of a ``console`` block
  is checked: ``dagen`` commands are parsed by the ``dagen`` command itself (the
  subcommand exists, every option is known and has its value, the arguments fit),
  ``make`` targets exist, scripts accept the options shown.
- A block that only shows output or a format is marked ``text`` and is not run.

The one thing changed in an example before it runs is its target (``localhost:50051``,
or the relay's ``relay.example.org:443``): the tests' servers listen on free ports.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pickle
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import click
import numpy as np
import pytest
import xarray as xr
from conftest import (
    DAGEN,
    EXAMPLE,
    ROOT,
    SHARED_DATA,
    Certs,
    Server,
    import_client,
    start_server,
    stop_process,
)

import dagen
from dagen._build import build
from dagen._security import init_ca, issue_client, issue_server

README = ROOT / "README.md"
EXAMPLES = ROOT / "docs" / "examples"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
DOC_TARGET = "localhost:50051"
RELAY_TARGET = "relay.example.org:443"  # the relay example's target

# The files of docs/examples/ and the test that runs each.
RUN_EXAMPLES = {
    "visitor.py": "test_the_readme_runs_as_written",
    "long_calls.py": "test_long_calls",
    "long_calls_visitor.py": "test_long_calls",
    "stations.py": "test_data_classes_and_remote_classes",
    "stations_visitor.py": "test_data_classes_and_remote_classes",
    "greet.py": "test_a_function_knows_its_caller",
    "policy.toml": "test_the_policy_example",
    "tunnel.py": "test_the_tunnel_example",
    "compression.py": "test_the_compression_example",
    "relay_visitor.py": "test_the_relay_example",
    "ocean_data.py": "test_lazy_datasets",
    "ocean_data_visitor.py": "test_lazy_datasets",
}
# Programs of console blocks that are not dagen's and are not run here (ssh, compilers,
# Node.js, the shell's own words).
OTHER_PROGRAMS = {"ssh", "ssh-keygen", "autossh", "echo", "protoc", "node", "npm", "cd", "pip", "for", "do", "done",
                  "grpcurl", "systemctl", "loginctl", "journalctl", "crontab", "chmod", "mkdir"}


# -- the pages' blocks -----------------------------------------------------------------------

@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    lang: str
    text: str
    source: Path | None  # the file it claims to be from

    def __str__(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


FENCE = re.compile(r"^(\s*)```(\S*)\s*$")
SOURCE = re.compile(r"^<!-- example: (\S+) -->$")


def blocks(page: Path) -> list[Block]:
    lines = page.read_text().splitlines()
    found, i = [], 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, lang = match.groups()
        end = next(j for j in range(i + 1, len(lines)) if lines[j] == f"{indent}```")
        body = "".join(line[len(indent):] + "\n" for line in lines[i + 1:end])
        before = [line.strip() for line in lines[:i] if line.strip()]
        source = SOURCE.match(before[-1]) if before else None
        found.append(Block(page, i + 1, lang, body, ROOT / source.group(1) if source else None))
        i = end + 1
    return found


ALL_BLOCKS = [block for page in PAGES for block in blocks(page)]
CODE_BLOCKS = [block for block in ALL_BLOCKS if block.lang in ("python", "toml")]
CONSOLE_BLOCKS = [block for block in ALL_BLOCKS if block.lang == "console"]


def test_every_block_says_what_it_is():
    assert len(ALL_BLOCKS) > 20
    for block in ALL_BLOCKS:
        assert block.lang in ("python", "toml", "console", "text"), (
            f"{block}: a ```{block.lang} block; mark examples python, toml or console, and "
            "what only shows output or a format as text")


@pytest.mark.parametrize("block", CODE_BLOCKS, ids=str)
def test_each_example_is_its_file_verbatim(block: Block):
    assert block.source is not None, (
        f"{block}: say which file the example is from with <!-- example: PATH --> before it")
    assert block.source.is_file(), f"{block}: {block.source} does not exist"
    assert block.text in block.source.read_text(), (
        f"{block} differs from {block.source.relative_to(ROOT)}: copy the file's lines")


def test_every_example_file_is_shown_and_run():
    assert {path.name for path in EXAMPLES.iterdir() if path.is_file()} == set(RUN_EXAMPLES)
    shown = {block.source for block in CODE_BLOCKS}
    for name, test in RUN_EXAMPLES.items():
        assert test in globals(), name
        assert EXAMPLES / name in shown, f"docs/examples/{name} is not shown on any page"


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_links_lead_somewhere_and_the_readme_links_every_page():
    readme = README.read_text()
    for page in PAGES[1:]:
        assert f"](docs/{page.name})" in readme, f"the README does not link {page.name}"
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if target.startswith(("http://", "https://")):
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            assert linked.exists(), f"{page.name} links {target}, which does not exist"
            if anchor:
                headings = re.findall(r"^#+ (.+)$", linked.read_text(), re.M)
                assert anchor in {slug(h) for h in headings}, f"{page.name} links {target}"


def test_the_readme_is_a_front_door():
    text = README.read_text()
    assert len(text.splitlines()) <= 150
    assert "pip install --find-links build/wheels ocean_tools_client" in text  # tests/test_wheelhouse.py runs it
    assert [b for b in blocks(README) if b.lang == "console"][1].text.split()[:2] == ["make", "demo"]


# -- console blocks ------------------------------------------------------------------------

def commands(block: Block) -> Iterator[list[str]]:
    """The commands of a console block, each as its words (``$`` prompts, comments,
    ``VAR=value`` prefixes dropped; ``&&``, ``;`` and ``&`` separate commands)."""
    for line in block.text.replace("\\\n", " ").splitlines():
        line = line.strip().removeprefix("$ ")
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        words: list[str] = []
        for token in [*lexer, ";"]:
            if set(token) <= set(";&|"):
                while words and re.match(r"^[A-Za-z_]\w*=", words[0]):
                    words.pop(0)
                if words:
                    yield words
                words = []
            else:
                words.append(token)


@cache
def dagen_cli() -> click.Command:
    """The `dagen` command: pyproject.toml's entry point (dagen.__main__:main) runs the
    click group dagen._cli.main, after checking that the server extra is installed."""
    entry = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]["dagen"]
    assert entry == "dagen.__main__:main"
    return importlib.import_module("dagen._cli").main


def check_dagen(words: list[str]) -> None:
    """Parse a dagen command line with the real command, without running it."""
    command, path, args = dagen_cli(), ["dagen"], list(words[1:])
    # each context with its parent, as click makes them: a command caches its help option
    # from the first context it sees, and one without the group's "-h" would lose it
    parent: click.Context | None = None
    while isinstance(command, click.Group):
        parent = click.Context(command, info_name=path[-1], parent=parent,
                               **command.context_settings)
        sub = command.get_command(parent, args[0]) if args else None
        assert sub is not None, f"{' '.join(path)} has no command {args[:1]}"
        command, path = sub, [*path, args.pop(0)]
    ctx = click.Context(command, info_name=path[-1], parent=parent, **command.context_settings)
    try:
        values, rest, _ = command.make_parser(ctx).parse_args(args)
    except click.UsageError as error:
        raise AssertionError(f"{' '.join(words)}: {error.format_message()}") from None
    assert not rest, f"{' '.join(words)}: {' '.join(path)} takes no argument {rest}"
    for param in command.params:
        if isinstance(param, click.Argument) and param.required:
            assert isinstance(values.get(param.name), (str, list, tuple)), (
                f"{' '.join(words)}: missing the argument {param.human_readable_name}")
    if path == ["dagen", "service-unit"]:  # what follows is a dagen serve command line
        serve_args = list(values["serve_args"])
        check_dagen(["dagen", "serve", *serve_args[:serve_args.index(">")
                                                     if ">" in serve_args else None]])


@cache
def script_help(script: str) -> str:
    done = subprocess.run([sys.executable, str(ROOT / script), "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def check_command(words: list[str]) -> None:
    program = words[0]
    if program == "dagen":
        check_dagen(words)
    elif program == "make":
        makefile = (ROOT / "Makefile").read_text()
        for target in words[1:]:
            assert re.search(rf"^{re.escape(target)}:", makefile, re.M), f"no make target {target}"
    elif program == ".venv/bin/python":
        script = words[1]
        assert (ROOT / script).is_file(), f"{script} does not exist"
        for word in words[2:]:
            if word.startswith("--"):
                assert word.split("=")[0] in script_help(script), f"{script} has no {word}"
    else:
        assert program in OTHER_PROGRAMS, f"a console block runs {program!r}: check it here"


@pytest.mark.parametrize("block", CONSOLE_BLOCKS, ids=str)
def test_each_command_is_valid(block: Block):
    found = list(commands(block))
    assert found, f"{block}: no command"
    for words in found:
        check_command(words)


def test_the_checks_of_commands_can_fail():
    for line in ("dagen serve examples/ocean_tools.py --cert certs/",  # a mistyped option
                 "dagen certs client certs/",                         # a missing argument
                 "dagen certs issue certs/ alice",                    # no such command
                 "dagen serve examples/ocean_tools.py --port",        # an option's value missing
                 "make deploy", "rm -rf build/"):
        block = Block(README, 0, "console", line + "\n", None)
        with pytest.raises(AssertionError):
            for words in commands(block):
                check_command(words)


# -- running the examples ------------------------------------------------------------------

def local_module(path: Path):
    """A module of docs/examples (or examples/) imported from its file, as its owner runs it."""
    spec = importlib.util.spec_from_file_location(f"local_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def example_source(name: str, target: str, placeholder: str = DOC_TARGET) -> str:
    assert name in RUN_EXAMPLES
    source = (EXAMPLES / name).read_text()
    assert source.count(placeholder) == 1, name
    return source.replace(placeholder, target)


def run_example(name: str, target: str, placeholder: str = DOC_TARGET) -> dict:
    """Run docs/examples/NAME in this process (its client package imported already), in
    the current folder, against ``target`` (in place of ``placeholder``); returns its
    globals."""
    namespace: dict = {"__name__": f"docs_example_{Path(name).stem}"}
    exec(compile(example_source(name, target, placeholder), str(EXAMPLES / name), "exec"),
         namespace)
    return namespace


@pytest.fixture
def in_folder_with_certs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, certs: Certs) -> Path:
    """A working folder whose certs/ holds the CA, the server's and alice's certificates."""
    (tmp_path / "certs").symlink_to(certs.folder)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def served(name: str, certs: Certs, folder: Path, *args: str) -> tuple[Server, object]:
    """Build docs/examples/NAME (its lock in ``folder``), import its client, serve it."""
    module, lock = EXAMPLES / name, folder / f"{Path(name).stem}.dagen.lock"
    result = build(str(module), folder / "build", lock=lock)
    client = import_client(result.client, f"{Path(name).stem}_client")
    return start_server(module, "--certs", str(certs.folder), "--lock", str(lock), *args), client


def serve_and_visit(name: str, visitor: str, certs: Certs, folder: Path) -> tuple[dict, object]:
    """Serve docs/examples/NAME, run the VISITOR example against it; returns the visitor's
    globals and the client package."""
    server, client = served(name, certs, folder)
    try:
        return run_example(visitor, server.target), client
    finally:
        server.stop()


def test_the_readme_runs_as_written(tmp_path: Path):
    """The README's first console block in an empty folder (the example module beside
    it), then the visitor's example in another process against that server."""
    (tmp_path / "examples").mkdir()
    for name in ("ocean_tools.py", "ocean_tools.dagen.lock"):
        shutil.copy(ROOT / "examples" / name, tmp_path / "examples" / name)
    first = next(b for b in blocks(README) if b.lang == "console")
    server = None
    try:
        for words in commands(first):
            assert words[0] == "dagen", words
            if words[1] == "serve":
                assert words[-2:] == ["--port", DOC_TARGET.split(":")[1]]
                server = subprocess.Popen([*DAGEN, *words[1:-1], "0"], cwd=tmp_path,
                                          stdout=subprocess.PIPE, text=True)
                assert server.stdout is not None
                line = server.stdout.readline()
                port = re.search(r"on 127\.0\.0\.1:(\d+) \(mutual TLS", line)
                assert port, line
            else:
                done = subprocess.run([*DAGEN, *words[1:]], cwd=tmp_path, capture_output=True,
                                      text=True, timeout=300)
                assert done.returncode == 0, done.stdout + done.stderr
        assert server is not None and port is not None
        # what `pip install build/ocean_tools_client` installs; here on PYTHONPATH
        project = tmp_path / "build" / "ocean_tools_client"
        assert (project / "pyproject.toml").is_file()
        out = tmp_path / "visitor.pickle"
        runner = (f"namespace = {{}}\n"
                  f"exec(compile(open('visit.py').read(), 'visitor.py', 'exec'), namespace)\n"
                  f"import pickle\n"
                  f"pickle.dump({{k: namespace[k] for k in ('sst', 'anom', 'rho')}}, "
                  f"open({str(out)!r}, 'wb'))\n")
        (tmp_path / "visit.py").write_text(example_source("visitor.py", f"localhost:{port[1]}"))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(project), env.get("PYTHONPATH")]))
        done = subprocess.run([sys.executable, "-c", runner], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
    finally:
        if server is not None:
            stop_process(server)
    assert "refused: salinity must not be negative, got -1.0" in done.stdout
    got = pickle.loads(out.read_bytes())
    ocean_tools = local_module(EXAMPLE)
    xr.testing.assert_identical(got["anom"], ocean_tools.anomaly(got["sst"]))
    assert got["rho"] == ocean_tools.sea_water_density(12.0, 35.0)


def test_the_certificate_commands_run_as_written(tmp_path: Path):
    """docs/security.md's certificate commands, in order, in an empty folder."""
    page = ROOT / "docs" / "security.md"
    ran = []
    for block in (b for b in blocks(page) if b.lang == "console"):
        for words in commands(block):
            if words[:2] == ["dagen", "certs"]:
                done = subprocess.run([*DAGEN, *words[1:]], cwd=tmp_path, capture_output=True,
                                      text=True, timeout=120)
                assert done.returncode == 0, done.stdout + done.stderr
                ran.append(words[2])
    assert ran == ["init", "server", "client", "list", "show", "renew", "revoke"]
    assert (tmp_path / "certs" / "revoked.txt").read_text().strip()  # alice's serial


def test_long_calls(certs: Certs, in_folder_with_certs: Path, capsys: pytest.CaptureFixture):
    ns, _ = serve_and_visit("long_calls.py", "long_calls_visitor.py", certs, in_folder_with_certs)
    local = local_module(EXAMPLES / "long_calls.py")
    xr.testing.assert_allclose(ns["coarse"], local.regrid(ns["sst"]))  # runs locally too
    assert ns["reports"] and ns["reports"][-1].phase == "run"
    assert ns["reports"][-1].message == f"time step {ns['sst'].sizes['time']}"
    assert ns["month"] == 12
    xr.testing.assert_allclose(ns["mean"], list(local.monthly_means(ns["sst"]))[-1])
    out = capsys.readouterr().out
    assert "1.0 time step 24" in out
    assert "wait() did not finish within its timeout of 1 s" in out
    assert 1e-300 < ns["rough"] < 1e-3  # it went on for a while, and stopped before 3 s
    assert ns["sizes"] == [4, 2, 1] and ns["slow"].cancelled()
    assert ns["fine"] <= 1e-3
    xr.testing.assert_allclose(ns["coarse4"], local.regrid(ns["sst"], 4))


def test_data_classes_and_remote_classes(certs: Certs, in_folder_with_certs: Path):
    ns, client = serve_and_visit("stations.py", "stations_visitor.py", certs, in_folder_with_certs)
    local = local_module(EXAMPLES / "stations.py")
    assert isinstance(ns["deep"], client.Station) and ns["deep"].kind is client.Kind.SHIP
    assert (ns["deep"].name, ns["deep"].depths) == ("S7", [5.0, 50.0, 500.0])
    np.testing.assert_array_equal(ns["smooth"], local.Smoother(5).apply(np.arange(10.0)))


def test_a_function_knows_its_caller(certs: Certs, tmp_path: Path):
    server, client = served("greet.py", certs, tmp_path)
    try:
        with client.Client(server.target, certs=certs.folder, identity="alice") as remote:
            greeting = remote.greet("hi")
    finally:
        server.stop()
    assert re.fullmatch(r"hi, alice \(certificate [0-9A-Fa-f:]+\)", greeting), greeting
    assert local_module(EXAMPLES / "greet.py").greet() == "hello, local user"


def test_the_policy_example(certs: Certs, ocean_client_module, sst_small):
    """The policy of docs/security.md, served: alice is in the group ocean, bob (no SAN
    bob@uni.example.org) is not, and everyone may compute a density."""
    server = start_server(EXAMPLE, "--certs", str(certs.folder),
                          "--policy", str(EXAMPLES / "policy.toml"))
    try:
        with ocean_client_module.Client(server.target, certs=certs.folder,
                                        identity="alice") as alice:
            assert alice.anomaly(sst_small).sizes == sst_small.sizes
        with ocean_client_module.Client(server.target, certs=certs.folder,
                                        identity="bob") as bob:
            assert bob.sea_water_density(10.0, 35.0) == pytest.approx(1027.0)
            with pytest.raises(PermissionError, match="bob may not call anomaly"):
                bob.anomaly(sst_small)
            with pytest.raises(PermissionError, match="zonal_mean"):  # named by no entry
                bob.zonal_mean(sst_small)
    finally:
        server.stop()


def test_the_tunnel_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                            ocean_client_module, capsys: pytest.CaptureFixture):
    """A server whose certificate names only login1.hpc.example.org, reached at
    localhost:PORT (what an SSH tunnel gives): server_name makes TLS verify it."""
    folder = tmp_path / "certs"
    init_ca(folder)
    issue_server(folder, hosts=["login1.hpc.example.org"], ips=[])
    issue_client(folder, "alice")
    monkeypatch.chdir(tmp_path)
    server = start_server(EXAMPLE, "--certs", str(folder))
    try:
        run_example("tunnel.py", server.target)
        expected = local_module(EXAMPLE).sea_water_density(12.0, 35.0)
        assert float(capsys.readouterr().out) == pytest.approx(expected)
        with ocean_client_module.Client(server.target, certs=folder, identity="alice",
                                        timeout=10) as remote:
            with pytest.raises(dagen.ServerUnavailable):  # without it: the wrong name
                remote.sea_water_density(12.0, 35.0)
    finally:
        server.stop()


def test_the_relay_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, certs: Certs,
                           ocean_client_module, capsys: pytest.CaptureFixture):
    """docs/deployment.md's visitor through a relay: a real `dagen relay` and the ocean
    tools served with `--relay` (no TCP port), the visitor's target the relay, its server
    name the one the server publishes."""
    pytest.importorskip("asyncssh")
    from relaying import make_setup, start_relay, start_relayed_server

    setup = make_setup(tmp_path, certs.folder, "ocean.relay.example.org",
                       "other.relay.example.org", EXAMPLE)
    relay = start_relay(setup)
    try:
        server, _ = start_relayed_server(setup, relay)
        try:
            (tmp_path / "visitor").mkdir()
            (tmp_path / "visitor" / "certs").symlink_to(setup.certs)
            monkeypatch.chdir(tmp_path / "visitor")
            run_example("relay_visitor.py", relay.target, RELAY_TARGET)
            expected = local_module(EXAMPLE).sea_water_density(12.0, 35.0)
            assert float(capsys.readouterr().out) == pytest.approx(expected)
        finally:
            stop_process(server)
    finally:
        stop_process(relay.process)


def test_the_compression_example(ocean_server: Server, in_folder_with_certs: Path,
                                 ocean_client_module):
    ns = run_example("compression.py", ocean_server.target)
    ocean_tools = local_module(EXAMPLE)
    xr.testing.assert_identical(ns["anom"], ocean_tools.anomaly(ns["sst"]))
    xr.testing.assert_identical(ns["clim"], ocean_tools.climatology(ns["sst"]))


def test_lazy_datasets(certs: Certs, in_folder_with_certs: Path):
    """docs/datasets.md: the visitor opens the owner's dataset at once, computes a
    selection, passes another back to a function of the same service; each equals the
    same selection of the dataset opened locally."""
    if not hasattr(dagen, "dataset"):
        pytest.skip("dagen.dataset missing")
    if not (SHARED_DATA / "eraint_uvz.nc").is_file():
        pytest.skip(f"no {SHARED_DATA / 'eraint_uvz.nc'} (the shared data beside the repository)")
    ns, _ = serve_and_visit("ocean_data.py", "ocean_data_visitor.py", certs,
                            in_folder_with_certs)
    local = local_module(EXAMPLES / "ocean_data.py")
    with local.era_interim() as ds:
        jet = ds.u.sel(level=200, latitude=slice(60, 20)).mean("longitude")
        xr.testing.assert_identical(ns["jet"], jet.compute())
        xr.testing.assert_identical(ns["z500"], local.zonal_mean(ds.z.sel(level=500)).compute())
        xr.testing.assert_identical(ns["wind"], ds[["u", "v"]].isel(month=0).load())
        assert ns["ds"].u.chunks == ds.u.chunks == ((1, 1), (1, 1, 1), (241,), (480,))


@pytest.fixture
def sst_small() -> xr.DataArray:
    import pandas as pd

    time = pd.date_range("2000-01-01", periods=24, freq="MS")
    return xr.DataArray(np.arange(24 * 6, dtype="f8").reshape(24, 2, 3),
                        dims=("time", "lat", "lon"), coords={"time": time}, name="sst")
