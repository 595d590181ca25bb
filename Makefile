# The two commands of the README:
#   make demo   install, then run the whole loop on the bundled defaults
#   make test   install with test tools, then run the whole test suite
# `make test-fast` runs only the tests that need no real engine.
# The install prints only its own lines: pip's and the build's output go to .venv/cai-install.log,
# shown when a step fails (CAI_INSTALL_VERBOSE=1 prints it as it comes). The cai commands print
# cai's lines and bars only (CAI_LIBRARY_LOGS=1 brings back vLLM's, torch's, datasets' own output).

VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test test-fast install install-test bench clean

install:
	bash scripts/install.sh

install-test:
	bash scripts/install.sh test

demo: install
	$(BIN)/cai models pull
	$(BIN)/cai demo

test: install-test
	$(BIN)/cai models pull
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q --durations=30

test-fast: install-test
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m "not slow"

bench: install
	$(BIN)/python benchmarks/throughput.py

clean:
	rm -rf runs out .pytest_cache
