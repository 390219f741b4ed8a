# Two entry points, each doing its own idempotent set-up (no root needed):
#   make quickstart   pretrain SimCLR alone and in a DoGo cohort on digits, probe both, print a table
#   make test         the test suite
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: quickstart test install clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip >/dev/null 2>&1 || true
	@echo "installing dogo and its pinned dependencies into $(VENV) (CPU torch)..."
	@$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

quickstart: $(STAMP)
	@$(VENV)/bin/dogo quickstart

test: $(STAMP)
	@$(PY) -m pytest -q -n 2 --dist loadfile

clean:
	rm -rf $(VENV) runs .dogo-cache
