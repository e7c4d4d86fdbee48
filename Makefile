# Fleetplane build, check and test targets. Run `make help` for a list.

GO        ?= go
BUF       := $(GO) tool buf
PKGS      := ./...
TEST_TIMEOUT ?= 30m

.PHONY: help
help: ## Show the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

web/node_modules/.bin/protoc-gen-es: web/package.json web/package-lock.json
	npm --prefix web ci --no-audit --no-fund
	@touch $@

.PHONY: generate
generate: web/node_modules/.bin/protoc-gen-es ## Regenerate gen/ from proto/.
	$(BUF) generate

.PHONY: build
build: ## Build bin/fleetplane and bin/fleetplane-agent.
	$(GO) build -o bin/ ./cmd/...

.PHONY: lint
lint: generate ## gofmt, go vet, go.mod tidy, buf lint and breaking checks, generated code current, import rules.
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '^gen/')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) mod tidy -diff
	$(BUF) lint
	@if git rev-parse -q --verify HEAD~1 >/dev/null && git cat-file -e HEAD~1:buf.yaml 2>/dev/null; then \
		$(BUF) breaking --against '.git#ref=HEAD~1'; \
	else echo "buf breaking: no earlier commit with protos, skipped"; fi
	@if [ -n "$$(git status --porcelain -- gen)" ]; then echo "gen/ is out of date; run make generate and commit:"; git status --porcelain -- gen; exit 1; fi
	@bad=$$($(GO) list -deps ./agent/... ./cmd/fleetplane-agent/... 2>/dev/null | grep -E '^github.com/fleetplane/fleetplane/(server|store|dispatcher)(/|$$)' || true); \
		if [ -n "$$bad" ]; then echo "agent must not import server, store or dispatcher code:"; echo "$$bad"; exit 1; fi

.PHONY: test
test: ## Run every test with the race detector.
	$(GO) test -race -timeout $(TEST_TIMEOUT) $(PKGS)

.PHONY: check
check: lint test ## Everything CI runs.

.PHONY: bench
bench: ## Run the benchmarks (figures go in docs/benchmarks.md).
	$(GO) test -run '^$$' -bench . -benchmem -timeout 60m $(PKGS)

LOAD_AGENTS ?= 10000

.PHONY: loadtest
loadtest: build ## Run LOAD_AGENTS simulated agents against bin/fleetplane serve (takes minutes).
	bin/fleetplane-load --count $(LOAD_AGENTS) --server-binary bin/fleetplane \
		--start-interval 2ms --enroll-max-delay 10s --timeout 40m

.PHONY: demo
demo: build ## Run the demo: a server, three agents, two rollouts, until converged.
	bin/fleetplane demo --until-converged

FUZZTIME ?= 30s

.PHONY: fuzz
fuzz: ## Fuzz every parser and request decoder for FUZZTIME each.
	$(GO) test -run '^$$' -fuzz '^FuzzParseLabels$$' -fuzztime $(FUZZTIME) ./store/selector
	$(GO) test -run '^$$' -fuzz '^FuzzParseFields$$' -fuzztime $(FUZZTIME) ./store/selector
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./client/resourcefile
	$(GO) test -run '^$$' -fuzz '^FuzzTemplate$$' -fuzztime $(FUZZTIME) ./server/tasks
	$(GO) test -run '^$$' -fuzz '^FuzzCreateJSON$$' -fuzztime $(FUZZTIME) ./server
	$(GO) test -run '^$$' -fuzz '^FuzzUnaryJSON$$' -fuzztime $(FUZZTIME) ./server
	$(GO) test -run '^$$' -fuzz '^FuzzAssign$$' -fuzztime $(FUZZTIME) ./dispatcher
