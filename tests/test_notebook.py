"""In a real Jupyter kernel (ipykernel, driven by jupyter_client), calling a real
`dagen serve`: the progress bar appears (a widget with ipywidgets, text without),
the client and remote errors show as HTML, `await dagen.acall(...)` works in the
kernel's event loop, and interrupting the kernel cancels the call on the server."""

import os
import sys
import time
from pathlib import Path

import pytest
from guarded import wait_until

jupyter_client = pytest.importorskip("jupyter_client")
pytest.importorskip("ipykernel")


@pytest.fixture(scope="module")
def kernel(progress_server, certs, progress_build):
    """A kernel with a client of the server in ``remote``."""
    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_name="python3")
    km.kernel_spec.argv[0] = sys.executable  # this environment's Python, whatever is installed
    km.start_kernel(env={**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", "")})
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=120)
        reply, _ = run(kc, f"""
import sys
sys.path.insert(0, {str(progress_build.client)!r})
import dagen
import progress_service_client
remote = progress_service_client.Client({progress_server.target!r}, certs={str(certs.folder)!r},
                                        identity="alice", timeout=60)
""")
        assert reply["status"] == "ok", reply
        yield km, kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def run(kc, code: str, timeout: float = 60, *, then=None):
    """Execute ``code``; the reply and the iopub messages of the execution. ``then`` runs
    once the execution has started (before its end is awaited)."""
    msg_id = kc.execute(code)
    if then is not None:
        then()
    outputs = []
    while True:
        msg = kc.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break
        outputs.append(msg)
    while True:
        reply = kc.get_shell_msg(timeout=timeout)
        if reply["parent_header"].get("msg_id") == msg_id:
            return reply["content"], outputs


def texts(outputs, kind: str) -> str:
    """Everything of ``kind`` ("stream", "text/html", a widget's state) in the outputs."""
    found = []
    for msg in outputs:
        content = msg["content"]
        if kind == "stream" and msg["msg_type"] == "stream":
            found.append(content["text"])
        elif kind == "widget" and msg["msg_type"] in ("comm_open", "comm_msg"):
            found.append(repr(content.get("data", {}).get("state", {})))
        elif kind in content.get("data", {}):
            found.append(str(content["data"][kind]))
    return "\n".join(found)


def test_the_client_and_a_remote_error_show_as_html(kernel):
    _, kc = kernel
    reply, outputs = run(kc, "remote")
    assert reply["status"] == "ok"
    view = texts(outputs, "text/html")
    assert "mutual TLS as alice" in view and "count(n: int) -&gt; int" in view, view
    assert "Report progress" in view  # the first line of a docstring
    reply, outputs = run(kc, """
try:
    remote.refuse("nothing")
except progress_service_client.Refused as e:  # the served module's exception, mirrored
    error = e
error""")
    view = texts(outputs, "text/html")
    assert "Refused" in view and "refused nothing" in view, view


def test_the_progress_bar_is_a_widget_with_ipywidgets(kernel, tmp_path):
    pytest.importorskip("ipywidgets")
    _, kc = kernel
    reply, outputs = run(kc, f"remote.tick(0.5, {str(tmp_path / 'log')!r})")
    assert reply["status"] == "ok", reply
    assert texts(outputs, "application/vnd.jupyter.widget-view+json")  # a widget was shown
    assert "tick()" in texts(outputs, "widget")  # its label
    assert not texts(outputs, "stream")  # and no text bar


def test_the_progress_bar_is_text_without_ipywidgets(kernel, tmp_path):
    _, kc = kernel
    code = f"""
saved = sys.modules.get("ipywidgets")
sys.modules["ipywidgets"] = None  # as if it were not installed
try:
    remote.tick(0.5, {str(tmp_path / 'log')!r})
finally:
    sys.modules["ipywidgets"] = saved
"""
    reply, outputs = run(kc, code)
    assert reply["status"] == "ok", reply
    text = texts(outputs, "stream")
    assert "tick():" in text and "%|" in text, text


def test_await_acall_in_the_kernels_event_loop(kernel):
    _, kc = kernel
    reply, outputs = run(kc, "await dagen.acall(remote.add, 2, 3)")
    assert reply["status"] == "ok", reply
    assert texts(outputs, "text/plain") == "5"


def test_interrupting_the_kernel_cancels_the_call_on_the_server(kernel, progress_server,
                                                                tmp_path):
    km, kc = kernel
    log = tmp_path / "ticks"

    def interrupt_once_it_runs():
        assert wait_until(lambda: log.exists() and log.stat().st_size > 0, 30)
        time.sleep(0.3)
        km.interrupt_kernel()

    reply, _ = run(kc, f"remote.tick(60.0, {str(log)!r})", then=interrupt_once_it_runs)
    assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt", reply
    time.sleep(0.5)
    size = log.stat().st_size
    time.sleep(1.0)
    assert log.stat().st_size == size, "the function goes on writing after the interrupt"
    assert wait_until(lambda: "tick() cancelled" in Path(progress_server.log).read_text(), 5)
    reply, outputs = run(kc, "remote.add(1, 1)")  # the kernel and the client go on
    assert texts(outputs, "text/plain") == "2"
