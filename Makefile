# The two commands of the README, and the pieces they are built from.
#   make book   — set up, build the HTML with every page re-executed (default parameters) into _build/
#   make test   — set up, run the unit tests, then nbval on the committed chapter notebooks, every
#                 page executed under the "another machine" switch (ADAM_SPIKES_PERTURB=1e-12)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
CHAPTERS  := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
NOTEBOOKS := book/intro.ipynb book/rerun.ipynb book/definitions.ipynb book/api_monitor.ipynb $(CHAPTERS) book/measurements.ipynb
export OMP_NUM_THREADS ?= 2
export PYDEVD_DISABLE_FILE_VALIDATION := 1

.PHONY: setup chromium test unit unit-other-cpu nbval execute book html chapter params binder-check bench clean lock sweeps sweep

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

$(STAMP): requirements.txt constraints.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -c constraints.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (adam-spikes)" >/dev/null
	touch $(STAMP)

test: setup unit nbval

# Both tiers run on JOBS worker processes (pytest-xdist; default: the machine's cores): the unit
# tests spread test by test, the pages notebook by notebook (--dist loadscope keeps a notebook's
# cells in one kernel, in order), the slowest pages first (NBVAL_FIRST; the rest follow as a
# worker frees up). Each worker takes one thread (TEST_ENV; ADAM_SPIKES_MAX_THREADS caps the
# runs that ask for more, utils/training/threads.py), so two workers never put four threads on
# two cores. `make test JOBS=1` runs them one after another as before.
JOBS ?= $(shell nproc 2>/dev/null || echo 1)
TEST_ENV := OMP_NUM_THREADS=1 ADAM_SPIKES_MAX_THREADS=1
unit: setup
	$(TEST_ENV) $(PY) -m pytest -n $(JOBS) tests

# The unit tests again with torch's kernels forced to another instruction set, which rounds as
# another CPU would (.ci/run calls it after `make test`): AVX2 where the machine's own is another,
# the plain (unvectorised) kernels where it is AVX2. A check that passes only on the machine that
# stored the tables fails here. `make unit-other-cpu CPU=default` picks the set.
CPU ?= $(shell $(PY) -c "import torch; print('default' if torch.backends.cpu.get_cpu_capability() == 'AVX2' else 'avx2')" 2>/dev/null)
unit-other-cpu: setup
	@echo "unit tests with ATEN_CPU_CAPABILITY=$(CPU) (this machine's own: $$($(PY) -c 'import torch; print(torch.backends.cpu.get_cpu_capability())'))"
	ATEN_CPU_CAPABILITY=$(CPU) $(TEST_ENV) $(PY) -m pytest -n $(JOBS) tests

# nbval runs every page under the "another machine" switch (ADAM_SPIKES_PERTURB, see
# utils/training/models.py): every model's initial parameters move by PERTURB relative, so each chaotic
# trajectory differs from the one the committed outputs came from, as on another CPU. What nbval
# compares (each cell's metadata "nbval" says why it is stable; tests/test_nbval_cells.py) and
# every check a page asserts must hold anyway.  `make nbval PERTURB=0` compares the plain run.
PERTURB ?= 1e-12
NBVAL_FIRST := notebooks/03_gradient_alignment.ipynb notebooks/11_sustained_predictor.ipynb notebooks/09_watch_your_run.ipynb notebooks/10_spike_types.ipynb
nbval: setup
	ADAM_SPIKES_PERTURB=$(PERTURB) $(TEST_ENV) $(PY) -m pytest -n $(JOBS) --dist loadscope --no-loadscope-reorder --nbval $(NBVAL_FIRST) $(filter-out $(NBVAL_FIRST),$(NOTEBOOKS)) --nbval-sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider

# Rewrite the committed notebooks with the outputs of their default run (what nbval compares
# against): after a change to a chapter or to utils/, run this and commit the notebooks.
execute: setup
	@for nb in $(NOTEBOOKS); do \
	  echo "== executing $$nb"; \
	  $(PY) -m papermill "$$nb" "$$nb" -k python3 --cwd notebooks --log-level WARNING || exit 1; \
	done

# The book, every page re-executed by Jupyter Book itself (default parameters) into _build/:
# the committed notebooks are never rewritten. The build reads _config.yml with execution
# switched on (written to _build/_config.execute.yml; its local extension path made absolute,
# since Jupyter Book reads that one relative to the configuration file).
book: setup
	@mkdir -p _build
	sed -e 's/^  execute_notebooks: "off"/  execute_notebooks: "force"/' \
	    -e 's|: book/_ext|: $(CURDIR)/book/_ext|' _config.yml > _build/_config.execute.yml
	@grep -q 'execute_notebooks: "force"' _build/_config.execute.yml || { echo "_config.yml: execute_notebooks not found"; exit 1; }
	$(VENV)/bin/jupyter-book build --all -W -n --keep-going --config _build/_config.execute.yml .
	@echo "The book is in _build/html/index.html"
	@git diff --quiet -- $(NOTEBOOKS) 2>/dev/null || echo "warning: committed notebooks differ from HEAD (edited by hand?)"

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
	$(PY) -m utils.book.rerun $(NB) $(ARGS)

params: setup
	@$(PY) -m utils.book.rerun $(or $(NB),00) --list

clean:
	rm -rf _build

# Seed sweeps (not part of `make test`): each chapter's default run over 16 seeds on Dask (a
# LocalCluster of this machine's cores, or the cluster at $$DASK_SCHEDULER), written with
# provenance to data/sweeps/<name>.csv.gz, which the chapters read. Finished tasks are cached
# in _build/sweeps/, so an interrupted sweep resumes where it stopped.
#   make sweeps                  every sweep          make sweep NAME=03_gradient_alignment
sweeps: setup
	$(PY) -m utils.book.sweeps all
	$(PY) -m utils.book.watch_sweep
	$(PY) -m utils.book.prefixes
	$(PY) -m utils.book.mechanism

# NAME=watch is chapter 9's table (utils.book.watch_sweep: its seeds run one after another, each timing
# the monitor); every other name is a registered sweep of utils.book.sweeps.

sweep: setup
	@test -n "$(NAME)" || { echo 'usage: make sweep NAME=<name>  (names: $(PY) -m utils.book.sweeps --list)'; exit 2; }
	@if [ "$(NAME)" = watch ]; then $(PY) -m utils.book.watch_sweep; else $(PY) -m utils.book.sweeps $(NAME); fi

# Re-pin the whole environment (constraints.txt) from the working .venv, after a change to
# requirements.txt has been installed and tested. The benchmark's extra package is left out.
lock: setup
	@{ sed -n '1,/^[^#]/p' constraints.txt | grep '^#'; \
	   $(PY) -m pip freeze --exclude-editable | sed -E 's/\+[A-Za-z0-9.]+$$//' \
	     | grep -v -i -E "^($$(sed -E 's/[ =].*//' benchmarks/requirements.txt | grep -v '^#' | grep . | paste -sd'|'))=="; \
	 } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	@echo "constraints.txt: $$(grep -c '==' constraints.txt) packages pinned"

# Benchmarks (not part of `make test`): ratios measured side by side, written to
# _build/bench/results.json. `make bench ARGS="--chapters"` also times every chapter;
# `make bench ARGS="--device cuda"` runs it on a GPU. The appendix page reads the copy in
# data/bench/results.json: copy a new result there (with its machine) to publish it.
bench: setup
	$(PY) -m pip install --quiet --no-deps -r benchmarks/requirements.txt
	$(PY) benchmarks/bench_tracking.py $(ARGS)
