# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: install demo test lint protos bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip uninstall -q -y dagen  # the distribution's old name, if an older checkout installed it
	$(PY) -m pip install -q -e ".[server,test]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) examples/demo.py --work build/demo

# As root without a running SLURM, .ci/slurm-up.sh brings up a one-node SLURM for the
# cluster tests and .ci/slurm-down.sh stops it after pytest, whatever pytest's result
# (the exit code is pytest's). DAGEN_SLURM=required makes those tests fail rather than
# skip under CI=true when SLURM did not come up.
test: install
	@started=; \
	.ci/debian-packages.sh; \
	if [ "$$(id -u)" = 0 ]; then \
		export DAGEN_SLURM=required; \
		if ! sinfo -h >/dev/null 2>&1; then .ci/slurm-up.sh && started=1; fi; \
	fi; \
	$(PY) -m pytest; rc=$$?; \
	if [ -n "$$started" ]; then .ci/slurm-down.sh; fi; \
	exit $$rc

# ruff, mypy, and the import-linter contracts of .importlinter (the layering: the
# runtime never imports the CLI or build-time code; no import cycles).
lint: install
	$(VENV)/bin/ruff check src tests examples benchmarks docs/examples
	$(VENV)/bin/mypy src
	$(VENV)/bin/lint-imports --no-cache

# dagen side by side with raw grpcio, Arrow Flight and dask (benchmarks/README.md);
# writes benchmarks/results/<timestamp>.{json,md,png}. Under 15 minutes on 2 cores.
bench: install
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) benchmarks/run.py

# Regenerate the toolkit's own compiled protos (src/dagen/v1) from protos/.
protos: install
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=src --pyi_out=src protos/dagen/v1/*.proto

clean:
	rm -rf build .pytest_cache
