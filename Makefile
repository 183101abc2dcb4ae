# The two commands of the README, and the pieces they are built from.
#   make book   — set up, re-execute every chapter with papermill (default parameters), build the HTML
#   make test   — set up, run the unit tests, then nbval on the committed chapter notebooks
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
CHAPTERS  := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
NOTEBOOKS := book/intro.ipynb book/rerun.ipynb $(CHAPTERS) book/measurements.ipynb
export OMP_NUM_THREADS ?= 2
export PYDEVD_DISABLE_FILE_VALIDATION := 1

.PHONY: setup chromium test unit nbval execute book html chapter params binder-check bench clean

setup: $(STAMP) chromium

# Chromium for the browser check of the book (tests/test_book.py). Installed from Debian's
# packages when missing and we are root; otherwise the check is skipped and says so.
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
	  || { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	         echo "installing Chromium (apt-get) for the browser check"; \
	         apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
	           || echo "could not install Chromium: the browser check will be skipped"; \
	       else echo "no Chromium: the browser check will be skipped (apt-get install -y chromium)"; fi; }

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (adam-spikes)" >/dev/null
	touch $(STAMP)

test: setup unit nbval

unit: setup
	$(PY) -m pytest tests

nbval: setup
	$(PY) -m pytest --nbval $(NOTEBOOKS) --nbval-sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider

execute: setup
	@for nb in $(NOTEBOOKS); do \
	  echo "== executing $$nb"; \
	  $(PY) -m papermill "$$nb" "$$nb" -k python3 --cwd notebooks --log-level WARNING || exit 1; \
	done

book: execute html

html: setup
	$(VENV)/bin/jupyter-book build --all -W -n --keep-going .
	@echo "The book is in _build/html/index.html"

# Binder: repo2docker (in its own venv) must accept environment.yml; it writes the Dockerfile
# it would build to _build/binder-dockerfile.txt without building it (no Docker needed).
BINDER_VENV ?= .venv-binder
binder-check:
	@test -x $(BINDER_VENV)/bin/repo2docker || { $(PYTHON) -m venv $(BINDER_VENV) \
	  && $(BINDER_VENV)/bin/pip install --quiet jupyter-repo2docker==2026.4.0; }
	@mkdir -p _build
	$(BINDER_VENV)/bin/repo2docker --no-build --debug . > _build/binder-dockerfile.txt 2>&1 \
	  || { tail -20 _build/binder-dockerfile.txt; exit 1; }
	@grep -q 'Building conda environment for python=3.11' _build/binder-dockerfile.txt \
	  && grep -q -- '--file "environment.yml"' _build/binder-dockerfile.txt \
	  || { echo "repo2docker did not take environment.yml with python 3.11: see _build/binder-dockerfile.txt"; exit 1; }
	@echo "Binder: repo2docker accepts environment.yml (its Dockerfile: _build/binder-dockerfile.txt)"

# Re-run one chapter under new parameters into _build/rerun/ (never over the committed notebook):
#   make chapter NB=02 ARGS="-p beta2 0.99 -p steps 500"      make params NB=02
chapter: setup
	@test -n "$(NB)" || { echo 'usage: make chapter NB=02 ARGS="-p beta2 0.99"  (make params NB=02 lists them)'; exit 2; }
	$(PY) -m utils.rerun $(NB) $(ARGS)

params: setup
	@$(PY) -m utils.rerun $(or $(NB),00) --list

clean:
	rm -rf _build

# Benchmarks (not part of `make test`): ratios measured side by side, written to
# _build/bench/results.json. `make bench ARGS="--chapters"` also times every chapter;
# `make bench ARGS="--device cuda"` runs it on a GPU. The appendix page reads the copy in
# data/bench/results.json: copy a new result there (with its machine) to publish it.
bench: setup
	$(PY) -m pip install --quiet --no-deps -r benchmarks/requirements.txt
	$(PY) benchmarks/bench_tracking.py $(ARGS)
