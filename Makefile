# Entry points for building, testing and the labs. The scripts do the work;
# every target also runs without make (see each recipe).
#
#   make build      binaries into ./bin
#   make check      quick check for contributors: gofmt, vet, unit tests that
#                   need no root or namespaces (well under 2 minutes; not CI)
#   make test       the full test suite (scripts/test.sh, as CI runs it; root)
#   make demo       the network namespace demo lab (scripts/demo.sh; root)
#   make images     static binaries and the lab's FROM scratch images (no registry)
#   make lab        images, then the containerized lab up and healthy
#   make lab-down   remove the lab's containers, networks and volumes
#   make fleet-images  make images, plus 4over6d-etcd (Debian's etcd-server)
#   make fleet      fleet-images, then the containerized fleet
#                   (docker-compose.fleet.yml: 3 etcd members, 3 nodes,
#                   3 clients) up and healthy
#   make fleet-down remove the fleet's containers, networks and volumes

GO ?= go
CMDS := ./cmd/4over6d ./cmd/4over6c ./cmd/4over6-web

.PHONY: build check test demo images lab lab-down fleet-images fleet fleet-down

build:
	mkdir -p bin
	$(GO) build -o bin/ $(CMDS)

# FOUR6_SKIP_ROOT_TESTS makes the namespace tests skip even as root; the
# engine, codec, offload and option tests all still run.
check:
	test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...
	FOUR6_SKIP_ROOT_TESTS=1 $(GO) test -count=1 ./...

test:
	./scripts/test.sh

demo:
	./scripts/demo.sh

images:
	./deploy/docker/build-images.sh

lab: images
	./deploy/docker/lab.sh up

lab-down:
	./deploy/docker/lab.sh down

fleet-images:
	./deploy/docker/build-images.sh server client web etcd

fleet: fleet-images
	LAB_COMPOSE_FILE=docker-compose.fleet.yml ./deploy/docker/lab.sh up

fleet-down:
	LAB_COMPOSE_FILE=docker-compose.fleet.yml ./deploy/docker/lab.sh down
