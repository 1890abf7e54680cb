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

test: install
	$(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check src tests examples benchmarks
	$(VENV)/bin/mypy src

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
