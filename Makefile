# Two commands set everything up: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test test-dates lint clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Reinstall only when the dependency list changes.
$(STAMP): setup.cfg pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	WXB_LOG_FORMAT=$${WXB_LOG_FORMAT:-text} $(PY) -m wxbackend serve --demo

test: $(STAMP)
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

# The whole suite on the dates where the calendar's rules differ (README, "Tests").
TEST_DATES := 2027-03-31 2027-06-30T23:30+08:00 2027-12-31 2028-01-01
test-dates: $(STAMP)
	set -e; for day in $(TEST_DATES); do \
		echo "== WXB_TEST_TODAY=$$day"; \
		WXB_TEST_TODAY=$$day $(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS); \
	done

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports --no-cache

clean:
	rm -rf $(VENV) var .pytest_cache
