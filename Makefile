# The two commands of the README: `make run` and `make test`. Both install what is missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of torch; the Docker image installs the CUDA one.
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml client/pyproject.toml | cksum | cut -d' ' -f1)
PYTEST_ARGS ?=

.PHONY: install run test test-fast lint bench clean demo-model quality

install: $(STAMP) /usr/bin/redis-server

$(STAMP): pyproject.toml client/pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || \
	  { deploy/local/apt-install.sh python3-venv && $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install --disable-pip-version-check $(TORCH) -e '.[dev,s3,bench]' -e './client[images]'
	@rm -f $(VENV)/.installed-*
	@touch $@

/usr/bin/redis-server:
	@command -v redis-server >/dev/null || deploy/local/apt-install.sh redis-server redis-tools

run: install
	deploy/local/run.sh

# Tools the tests run: promtool checks the Prometheus files, nginx is the load balancer,
# headless Chromium drives the playground (tests/browser), Redis Sentinel fails Redis over.
TEST_TOOLS := /usr/bin/promtool /usr/sbin/nginx /usr/bin/chromium /usr/bin/redis-sentinel

# The suite runs in TEST_JOBS processes (pytest-xdist), a test file to each: one process
# leaves a core idle while the chaos tests wait on leases and restarts.
TEST_JOBS ?= $(shell nproc)

# The container tests (tests/containers: images built, the compose stack started) need a Docker
# engine: one that answers, or dockerd and debootstrap installed and root to start it. Without
# that they are left out, and a banner says so before and after the run. They run after the
# rest, in one process: they share one engine and its build cache. (pytest's exit status 5,
# nothing selected, is no failure: PYTEST_ARGS may pick tests of one kind only.)
test: install $(TEST_TOOLS)
	@engine=0; $(BIN)/python -m tests.containers.engine check || engine=$$?; status=0; \
	$(BIN)/python -m pytest -m 'not containers' -n $(TEST_JOBS) --dist loadfile $(PYTEST_ARGS) \
	  || { rc=$$?; [ $$rc = 5 ] || status=$$rc; }; \
	if [ $$engine = 0 ]; then \
	  $(BIN)/python -m pytest -m containers $(PYTEST_ARGS) || { rc=$$?; [ $$rc = 5 ] || status=$$rc; }; \
	else \
	  $(BIN)/python -m tests.containers.engine check; \
	fi; exit $$status

# Everything but the slow chaos tests and the container tests.
test-fast: install $(TEST_TOOLS)
	$(BIN)/python -m pytest -m 'not slow and not containers' -n $(TEST_JOBS) --dist loadfile $(PYTEST_ARGS)

/usr/bin/chromium:
	@command -v chromium >/dev/null || deploy/local/apt-install.sh chromium

/usr/bin/promtool:
	@command -v promtool >/dev/null || deploy/local/apt-install.sh prometheus

/usr/sbin/nginx:
	@command -v nginx >/dev/null || deploy/local/apt-install.sh nginx

# Redis Sentinel for the failover test (tests/integration/test_sentinel.py).
/usr/bin/redis-sentinel:
	@command -v redis-sentinel >/dev/null || deploy/local/apt-install.sh redis-sentinel

# latentq against the pipeline called directly and a naive server (never part of `make test`);
# bench/README.md. BENCH_ARGS="--quick" for a short check, or a model, shapes, concurrency, …
BENCH_ARGS ?=

bench: install
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# The shapes demo model: trained on this machine's CPU, resumably (var/shapes-train keeps the
# checkpoints), then its outline adapter. Its weights are committed: `make run` does not train.
DEMO_ARGS ?=

# The committed model's recipe: 8,000 UNet steps, then the same run resumed to 14,000 at half
# the learning rates (a second cosine from there).
demo-model: install
	$(BIN)/python -m worker.shapes.train models/shapes --work var/shapes-train $(DEMO_ARGS)
	$(BIN)/python -m worker.shapes.train models/shapes --work var/shapes-train --steps 14000 \
	  --lr 2.5e-4 --text-lr 1e-4 $(DEMO_ARGS)
	$(BIN)/python -m worker.shapes.lora models/shapes models/adapters/shapes-outline.safetensors

# How well the shapes model follows prompts, read by the judge (bench/quality.py).
QUALITY_ARGS ?=

quality: install
	$(BIN)/python -m bench.quality $(QUALITY_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy jobs app worker bench client/latentq_client deploy/local/supervise.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
