# Two entry points, each doing its own idempotent set-up (no root needed):
#   make quickstart   pretrain SimCLR alone and in a DoGo cohort on digits, probe both, print a table
#   make test         the import contract (lint-imports, pyproject.toml) and the test suite
#   make reproduce    the Fashion-MNIST study of docs/RESULTS.md (hours; resumable: rerun after a stop);
#                     REUSE=1 rebuilds the page from the committed results in docs/results/ without training
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: quickstart test install clean reproduce

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
	@$(VENV)/bin/lint-imports
	@$(PY) -m pytest -q -n 2 --dist loadfile

STUDY     ?= studies/fashion-mnist.yaml
STUDY_DIR ?= runs/study-fashion-mnist
RESULTS   ?= docs/results/fashion-mnist

reproduce: $(STAMP)
ifeq ($(REUSE),1)
	@$(VENV)/bin/dogo report $(RESULTS) --out docs/RESULTS.md
else
	@$(VENV)/bin/dogo study $(STUDY) --out $(STUDY_DIR) --publish $(RESULTS) --no-report
	@$(VENV)/bin/dogo report $(RESULTS) --out docs/RESULTS.md
endif

clean:
	rm -rf $(VENV) runs .dogo-cache
