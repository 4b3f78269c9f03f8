# docent: fetch models, build, run the demo, test, bench.
#
# The llama.cpp build is tuned to the host CPU: the AVX-512 families that llama-cpp-sys-2's
# build script leaves off are switched on when /proc/cpuinfo lists them. AMX stays off
# (its kernels die with SIGILL on hosts that advertise it without enabling it).
# `make build PORTABLE=1` builds llama.cpp for the crate's default (AVX2-level) baseline.

SHELL := /bin/bash
CARGO ?= cargo
PORTABLE ?= 0
MODELS_DIR ?= models
MODEL_CACHE ?= $(HOME)/.cache/docent/wheels

CPU_FLAGS := $(shell grep -m1 '^flags' /proc/cpuinfo 2>/dev/null)
has = $(if $(filter $(1),$(CPU_FLAGS)),ON,OFF)

ifeq ($(PORTABLE),1)
GGML_ENV :=
TARGET_DIR := target/portable
else
GGML_ENV := GGML_AVX512=$(call has,avx512f) GGML_AVX512_VNNI=$(call has,avx512_vnni) \
	GGML_AVX512_BF16=$(call has,avx512_bf16) GGML_AVX512_VBMI=$(call has,avx512vbmi) \
	GGML_AVX_VNNI=$(call has,avx_vnni) GGML_AMX_TILE=OFF GGML_AMX_INT8=OFF GGML_AMX_BF16=OFF
TARGET_DIR := target
endif

BUILD_ENV := $(GGML_ENV) CARGO_TARGET_DIR=$(TARGET_DIR)
BIN := $(TARGET_DIR)/release/docent

.PHONY: all deps models models-test models-nomic build run test bench lint install compare-pdf-readers

# Debian packages the build and the tests need, checked before anything compiles:
# installed with apt-get when root, otherwise the exact sudo line to run, and a stop.
# haproxy is the load balancer in front of the cluster test's nodes.
# Each entry is CHECK:PACKAGE; a check is a command on PATH, a Python module, or (lib) an
# installed package. pip fetches the models; cmake, g++ and libclang build llama.cpp.
DEPS := cmake:cmake g++:g++ lib:libclang-dev python-pip:python3-pip python-venv:python3-venv \
	/usr/bin/chromium:chromium lib:fonts-liberation node:nodejs npm:npm \
	/usr/sbin/haproxy:haproxy

deps:
	@missing=""; for d in $(DEPS); do c=$${d%%:*} p=$${d#*:}; \
		case $$c in \
			lib) dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' ;; \
			python-pip) python3 -m pip --version >/dev/null 2>&1 ;; \
			python-venv) python3 -c 'import ensurepip' >/dev/null 2>&1 ;; \
			*) command -v $$c >/dev/null 2>&1 ;; \
		esac || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			echo "installing Debian packages:$$missing"; \
			export DEBIAN_FRONTEND=noninteractive; \
			apt-get update -qq && apt-get install -y -qq $$missing; \
		else \
			echo "docent needs these Debian packages before it can build; run:"; \
			echo "  sudo apt-get install -y$$missing"; \
			echo "then run make again."; \
			exit 1; \
		fi; \
	fi

models: deps
	python3 models/fetch.py "$(MODEL_CACHE)" "$(MODELS_DIR)" embed small default

# The tests need only the embedder and the small chat model.
models-test: deps
	python3 models/fetch.py "$(MODEL_CACHE)" "$(MODELS_DIR)" embed small

# nomic-embed-text-v1.5 (274 MB from 284 MB of wheels), the second embedder.
models-nomic: deps
	python3 models/fetch.py "$(MODEL_CACHE)" "$(MODELS_DIR)" nomic

# The GGML_* variables only take effect on a fresh llama-cpp-sys-2 build: remember the last
# set used and clean that one crate when it changes.
$(TARGET_DIR)/.ggml-flags: FORCE
	@mkdir -p $(TARGET_DIR)
	@if [ "$$(cat $@ 2>/dev/null)" != "$(GGML_ENV)" ]; then \
		if [ -f $@ ]; then echo "llama.cpp build flags changed: rebuilding llama-cpp-sys-2"; \
			CARGO_TARGET_DIR=$(TARGET_DIR) $(CARGO) clean --release -p llama-cpp-sys-2; fi; \
		echo "$(GGML_ENV)" > $@; fi

FORCE:

build: deps $(TARGET_DIR)/.ggml-flags
	$(BUILD_ENV) $(CARGO) build --release --locked

run: deps models build
	bash tests/demo.sh $(BIN)

# Python test tools (the official openai SDK) in a virtualenv under target/.
PYENV := target/pyenv
$(PYENV)/.installed: tests/requirements.txt | deps
	python3 -m venv $(PYENV)
	$(PYENV)/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt
	touch $@

# The widget's browser test tools (playwright-core, pinned by the lock file).
BROWSER_MODULES := tests/browser/node_modules/.package-lock.json
$(BROWSER_MODULES): tests/browser/package-lock.json | deps
	cd tests/browser && npm ci --no-audit --no-fund

# llama.cpp's own OpenAI-compatible server for the remote-engine tests, built once from the
# pinned llama.cpp source in llama-cpp-python's sdist, with the in-process build's CPU flags.
LLAMA_SERVER := target/llama-server/bin/llama-server
$(LLAMA_SERVER): tests/engine/build.sh tests/engine/sdist.sh | deps
	$(GGML_ENV) tests/engine/build.sh "$(MODEL_CACHE)" target/llama-server

# llama.cpp's own llama-bench from the same source and CPU flags: the reference that
# `docent bench` holds in-process generation to (same GGUF, threads and prompt length).
LLAMA_BENCH := target/llama-server/bin/llama-bench
# (After llama-server: the two builds share one source and build folder.)
$(LLAMA_BENCH): tests/engine/build.sh tests/engine/sdist.sh | deps $(LLAMA_SERVER)
	$(GGML_ENV) tests/engine/build.sh "$(MODEL_CACHE)" target/llama-server llama-bench

# The embedder (all-MiniLM-L6-v2) as a GGUF file, for llama-server's /v1/embeddings in the
# remote-embedding tests: written from the fetched weights by the same llama.cpp source's
# GGUF writer.
ENGINE_EMBEDDER := target/llama-server/all-MiniLM-L6-v2.gguf
$(ENGINE_EMBEDDER): tests/engine/minilm_gguf.py tests/engine/sdist.sh $(PYENV)/.installed | models-test
	@mkdir -p $(dir $@)
	$(PYENV)/bin/python tests/engine/minilm_gguf.py $(MODELS_DIR)/all-MiniLM-L6-v2 $@ \
		"$$(tests/engine/sdist.sh "$(MODEL_CACHE)")"

# Real documents (DOCX, PDF) from Debian packages, pinned by version and sha256, for the
# document-ingest tests; the packages are cached beside the model wheels.
DOCUMENTS := target/documents/.fetched
$(DOCUMENTS): tests/documents/fetch.sh | deps
	tests/documents/fetch.sh "$(MODEL_CACHE)/debs" target/documents

test: deps models-test models-nomic $(TARGET_DIR)/.ggml-flags $(PYENV)/.installed $(BROWSER_MODULES) $(LLAMA_SERVER) $(ENGINE_EMBEDDER) $(DOCUMENTS)
	DOCENT_TEST_PYTHON=$(CURDIR)/$(PYENV)/bin/python $(BUILD_ENV) $(CARGO) test --release --locked
	# The integration suite again with every server's state in PostgreSQL + pgvector.
	DOCENT_TEST_STORE=postgres DOCENT_TEST_PYTHON=$(CURDIR)/$(PYENV)/bin/python $(BUILD_ENV) \
		$(CARGO) test --release --locked --test api

# `make build && sudo make install [PREFIX=/usr/local] [DESTDIR=…]`: the binary without
# its debug info (kept beside it in bin/.debug/docent.debug, where gdb looks; the release
# build carries about 220 MB of it, mostly llama.cpp's), the models, and an example systemd
# unit with its paths filled in (README: "Running as a service"). It builds nothing itself,
# so root never runs cargo or writes to target/.
PREFIX ?= /usr/local
DESTDIR ?=
INSTALL_ROOT = $(DESTDIR)$(PREFIX)

install:
	@test -x $(BIN) || { echo "no $(BIN): run make build (as yourself) first"; exit 1; }
	@test -f $(MODELS_DIR)/all-MiniLM-L6-v2/model.safetensors || \
		{ echo "no models in $(MODELS_DIR): run make models first"; exit 1; }
	install -d $(INSTALL_ROOT)/bin/.debug $(INSTALL_ROOT)/share/docent/models
	objcopy --only-keep-debug $(BIN) $(INSTALL_ROOT)/bin/.debug/docent.debug
	objcopy --strip-debug --add-gnu-debuglink=$(INSTALL_ROOT)/bin/.debug/docent.debug \
		$(BIN) $(INSTALL_ROOT)/bin/docent
	chmod 0755 $(INSTALL_ROOT)/bin/docent
	chmod 0644 $(INSTALL_ROOT)/bin/.debug/docent.debug
	cp -R $(MODELS_DIR)/all-MiniLM-L6-v2 $(MODELS_DIR)/*.gguf $(INSTALL_ROOT)/share/docent/models/
	sed 's|@PREFIX@|$(PREFIX)|g' docent.service > $(INSTALL_ROOT)/share/docent/docent.service
	@echo "installed $(INSTALL_ROOT)/bin/docent ($$(du -h $(INSTALL_ROOT)/bin/docent | cut -f1));" \
		"systemd unit: $(INSTALL_ROOT)/share/docent/docent.service"

# Same environment as the build, so llama-cpp-sys-2's build script is not re-run.
lint: deps $(TARGET_DIR)/.ggml-flags
	$(CARGO) fmt --check
	$(BUILD_ENV) $(CARGO) clippy --release --locked --all-targets -- -D warnings

# The PDF reader comparison behind the choice of pdf_oxide (README "Choosing the PDF reader").
compare-pdf-readers: deps
	tests/documents/readers/compare.sh "$(MODEL_CACHE)/debs" target/pdf-readers

# Every number beside a reference from the same run. llama-bench (llama.cpp's own build of
# the same source) is the reference for in-process generation; the portable build (a
# second full build, into target/portable) the reference for the host-CPU llama.cpp flags;
# redb the reference for the PostgreSQL store (run on the test venv's PostgreSQL wheel,
# which `docent bench` finds in target/pyenv).
bench: deps models build $(LLAMA_SERVER) $(LLAMA_BENCH) $(PYENV)/.installed
	$(MAKE) build PORTABLE=1
	$(BIN) bench --portable-bin target/portable/release/docent --llama-bench $(LLAMA_BENCH) \
		$(BENCH_ARGS)
