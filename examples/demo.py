"""The whole workflow, end to end: ``make demo`` runs this.

1. ``dagen build examples/ocean_tools.py -o <work>/build``
2. ``dagen certs init/server/client`` into ``<work>/certs``
3. ``pip install --find-links <work>/build/wheels ocean_tools_client`` (the visitor's command;
   here into <work>/visitor-packages with --target and --no-deps: this environment has the
   runtime already, and keeps no client of its own)
4. ``dagen serve examples/ocean_tools.py --certs <work>/certs`` (mutual TLS)
5. ``python examples/call_ocean_tools.py`` in another process, connected through
   DAGEN_TARGET / DAGEN_CERTS / DAGEN_IDENTITY
6. stop the server
"""

import argparse
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


def run(*args: str, **kwargs) -> subprocess.CompletedProcess:
    print("$", " ".join(args), flush=True)
    return subprocess.run(args, check=True, **kwargs)


def start_server(certs: Path) -> tuple[subprocess.Popen, int]:
    command = [str(BIN / "dagen"), "serve", str(HERE / "ocean_tools.py"), "--certs", str(certs),
               "--host", "127.0.0.1", "--port", "0"]
    print("$", " ".join(command), "&", flush=True)
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    line = server.stdout.readline()
    match = re.search(r"on 127\.0\.0\.1:(\d+)", line)
    if not match:
        server.kill()
        raise SystemExit(f"the server did not start: {line!r}")
    print(line.strip(), flush=True)
    return server, int(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="build/demo", help="folder for the build and certificates")
    work = Path(parser.parse_args().work).resolve()
    build, certs = work / "build", work / "certs"

    run(str(BIN / "dagen"), "build", str(HERE / "ocean_tools.py"), "-o", str(build))
    if not (certs / "alice.key").exists():
        run(str(BIN / "dagen"), "certs", "init", str(certs))
        run(str(BIN / "dagen"), "certs", "server", str(certs), "--host", "localhost", "--ip", "127.0.0.1")
        run(str(BIN / "dagen"), "certs", "client", str(certs), "alice")
    # The visitor's install, from the wheelhouse, into a folder of its own: the project's
    # environment (where `make test` runs) is left as it was.
    visitor = work / "visitor-packages"
    run(sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--upgrade", "--no-index",
        "--target", str(visitor), "--find-links", str(build / "wheels"), "ocean_tools_client")

    server, port = start_server(certs)
    try:
        env = dict(os.environ, DAGEN_TARGET=f"localhost:{port}", DAGEN_CERTS=str(certs),
                   DAGEN_IDENTITY="alice", PYTHONPATH=str(visitor))
        print(f"$ DAGEN_TARGET=localhost:{port} DAGEN_CERTS={certs} DAGEN_IDENTITY=alice "
              f"python examples/call_ocean_tools.py", flush=True)
        subprocess.run([sys.executable, str(HERE / "call_ocean_tools.py")], env=env, check=True,
                       cwd=work)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    print("demo finished: the server is stopped")


if __name__ == "__main__":
    main()
