# Every target runs on the Node.js 24 that `npm ci` installs from the `node` package,
# not on whatever Node the machine has: node_modules/.bin comes first on PATH.
SHELL := /bin/bash
export PATH := $(CURDIR)/node_modules/.bin:$(PATH)
NODE := $(CURDIR)/node_modules/.bin/node
TESTBED := $(NODE) test/testbed/cli.ts

.PHONY: help deps demo test test-unit lint format typecheck bench reliability \
        testbed-build testbed-rebuild testbed-up testbed-down testbed-status

help:
	@echo "make demo            start the local testbed and train one model across three regions"
	@echo "make bench           run the benchmarks (JSON in bench/results/)"
	@echo "make reliability     run the chaos suite and write docs/reliability.md from it"
	@echo "make test            install what is needed, start the testbed, run every test"
	@echo "make testbed-up      start the testbed (idempotent); -down stops it; -status shows it"
	@echo "make lint | format | typecheck"
	@echo "make image           build the operator image (Containerfile) with docker, podman or buildah"

# npm ci only when the lockfile changed since the last install. The `node` package's
# preinstall (which fetches the platform's Node.js build from the registry) runs on its
# own afterwards: nested inside a full `npm ci` it can hang on npm's own locks.
node_modules/.package-lock.json: package-lock.json package.json
	npm ci --ignore-scripts --no-audit --no-fund
	npm rebuild node
	@$(NODE) --version | grep -q '^v24\.' || { echo "node_modules/.bin/node is not Node.js 24"; exit 1; }
	@touch $@

deps: node_modules/.package-lock.json

demo: deps testbed-up
	@$(TESTBED) overview
	@echo
	$(NODE) test/testbed/demo.ts

test: deps
	$(NODE) test/run-all.ts

# Benchmarks against baselines measured in the same run; JSON in bench/results/. Needs the testbed.
bench: deps testbed-up
	$(NODE) bench/deltas-encode.ts
	$(NODE) bench/aggregate.ts
	$(NODE) bench/hub-aggregate.ts
	$(NODE) bench/transport.ts
	$(NODE) bench/attestation-verify.ts
	$(NODE) bench/attestation-references.ts
	$(NODE) bench/audit.ts

# The chaos suite (it restarts testbed servers; the bad-input suite first, in its full form),
# then docs/reliability.md from what it measured.
reliability: deps testbed-up
	SOVEREIGN_RELIABILITY=full ava test/chaos/bad-input.test.ts
	SOVEREIGN_RELIABILITY=full ava --config ava.disruptive.config.js 'test/chaos/**/*.disruptive.test.ts'
	$(NODE) test/chaos/report.ts

lint: deps
	biome check .

format: deps
	biome check --write .

typecheck: deps
	tsc -p tsconfig.json

testbed-build: deps
	@$(TESTBED) build

testbed-rebuild: deps
	@$(TESTBED) rebuild

testbed-up: deps
	@$(TESTBED) up

testbed-down: deps
	@$(TESTBED) down

testbed-status: deps
	@$(TESTBED) status

# The operator image (Containerfile) with the first container engine on PATH. IMAGE defaults to the
# chart's image.repository and appVersion (= package.json's version); override it to push elsewhere:
#   make image IMAGE=registry.example/sovereign-operator:0.1.0
IMAGE ?= ghcr.io/sovereign-ai/operator:$(shell sed -n 's/^  "version": "\(.*\)",$$/\1/p' package.json)
ENGINE ?= $(firstword $(foreach e,docker podman buildah,$(if $(shell command -v $(e) 2>/dev/null),$(e))))

.PHONY: image
image:
	@if [ -z "$(ENGINE)" ]; then \
	  echo "make image: no container engine found: none of docker, podman or buildah is installed (on PATH)." >&2; \
	  echo "Install one, or build the Containerfile on a machine that has one (docs/install.md)." >&2; \
	  exit 1; \
	fi
	@$(ENGINE) info >/dev/null 2>&1 || { \
	  echo "make image: $(ENGINE) is installed but \`$(ENGINE) info\` fails (is its daemon running?); cannot build here." >&2; \
	  exit 1; }
	$(if $(filter buildah,$(ENGINE)),buildah bud,$(ENGINE) build) -f Containerfile -t $(IMAGE) .
	@echo "built $(IMAGE); push it, then: helm install ... --set image.repository=<repo> --set image.tag=<tag>"
