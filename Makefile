# Two entry points, each doing its own idempotent set-up (no root needed):
#   make quickstart   pretrain SimCLR alone and in a DoGo cohort on digits, probe both, print a table
#   make test         the import contract (lint-imports, pyproject.toml) and the test suite
#   make reproduce    the Fashion-MNIST studies of docs/RESULTS.md and docs/RESULTS-budgets.md (hours;
#                     resumable: rerun after a stop); REUSE=1 rebuilds the pages from the committed results
#                     in docs/results/ without training
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: quickstart test lint docs install clean reproduce

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip >/dev/null 2>&1 || true
	@echo "installing dogo and its pinned dependencies into $(VENV) (CPU torch)..."
	@$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

quickstart: $(STAMP)
	@$(VENV)/bin/dogo quickstart

# The static checks alone: the import contract, ruff lint, mypy, then ruff format (passes once the tree is formatted).
lint: $(STAMP)
	@$(VENV)/bin/lint-imports
	@$(VENV)/bin/ruff check src tests
	@$(VENV)/bin/mypy src/dogo
	@$(VENV)/bin/ruff format --check src tests

test: lint
	@NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet
	@$(PY) -m pytest -q -n 2 --dist loadfile

# The documentation site (mkdocs-material + mkdocstrings) into site/.
docs: $(STAMP)
	@NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

# Each study as name:page; STUDIES=fashion-mnist picks one.
STUDIES ?= fashion-mnist:RESULTS fashion-mnist-budgets:RESULTS-budgets

reproduce: $(STAMP)
	@set -e; for study in $(STUDIES); do \
	  name=$${study%%:*}; page=docs/$${study##*:}.md; \
	  if [ "$(REUSE)" != 1 ]; then \
	    $(VENV)/bin/dogo study studies/$$name.yaml --out runs/study-$$name --publish docs/results/$$name --no-report; \
	  fi; \
	  if [ -d docs/results/$$name ]; then $(VENV)/bin/dogo report docs/results/$$name --out $$page; \
	  else echo "$$name: no published results in docs/results/$$name yet (run make reproduce without REUSE)"; fi; \
	done

clean:
	rm -rf $(VENV) runs .dogo-cache site
