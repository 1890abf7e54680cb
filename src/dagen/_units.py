"""Keeping ``dagen serve`` running on a login node for weeks: ``dagen service-unit``.

:func:`systemd_unit` writes a user systemd unit (``systemctl --user``) that restarts
the server when it fails; :func:`loop_script` a shell script that does the same where
no user systemd runs (started from cron with ``@reboot``).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence

RESTART_SECONDS = 10
STOP_SECONDS = 30  # the server's grace for calls in progress (5 s), and more


def _systemd_quote(word: str) -> str:
    """One word of ExecStart=: specifiers (%) and variables ($) kept literal."""
    word = word.replace("%", "%%").replace("$", "$$")
    if word and not re.search(r'[\s"\'\\;]', word):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def systemd_unit(name: str, command: Sequence[str], folder: str, python_path: str = "") -> str:
    """A user systemd unit running ``command`` in ``folder``, restarted on failure."""
    environment = (f"Environment={_systemd_quote('PYTHONPATH=' + python_path)}\n"
                   if python_path else "")
    return f"""\
# A user systemd unit for {name}: save it as ~/.config/systemd/user/{name}.service, then
#   systemctl --user daemon-reload && systemctl --user enable --now {name}
#   loginctl enable-linger     (keeps it running after you log out)
# Its log: journalctl --user -u {name}
[Unit]
Description=dagen serve ({name})
StartLimitIntervalSec=600
StartLimitBurst=10

[Service]
Type=simple
WorkingDirectory={_systemd_quote(folder)}
{environment}Environment=PYTHONUNBUFFERED=1
ExecStart={' '.join(_systemd_quote(w) for w in command)}
Restart=on-failure
RestartSec={RESTART_SECONDS}
KillSignal=SIGTERM
TimeoutStopSec={STOP_SECONDS}

[Install]
WantedBy=default.target
"""


def loop_script(name: str, command: Sequence[str], folder: str, python_path: str = "") -> str:
    """A shell script running ``command`` in ``folder`` again whenever it fails; for
    hosts without a user systemd."""
    environment = f"export PYTHONPATH={shlex.quote(python_path)}\n" if python_path else ""
    log = f"$HOME/.local/state/{name}.log"
    return f"""\
#!/bin/sh
# Keeps {name} running where there is no user systemd. Save it as ~/bin/{name}.sh,
# chmod +x it, and start it at boot from your crontab (crontab -e):
#   @reboot $HOME/bin/{name}.sh
# (and once now: nohup ~/bin/{name}.sh >/dev/null 2>&1 &). Its log: {log}
# It stops when the server exits cleanly (SIGTERM to the server, or kill this script).
cd {shlex.quote(folder)} || exit 1
{environment}mkdir -p "$HOME/.local/state"
trap 'kill -TERM "$child" 2>/dev/null; wait "$child"; exit 0' TERM INT
while true; do
    {shlex.join(command)} >>"{log}" 2>&1 &
    child=$!
    wait "$child"
    status=$?
    [ "$status" -eq 0 ] && exit 0
    echo "$(date -u +%FT%TZ) {name} exited with $status, restarting in {RESTART_SECONDS} s" >>"{log}"
    sleep {RESTART_SECONDS}
done
"""
