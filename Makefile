# Entry points for building, testing and the labs. The scripts do the work;
# every target also runs without make (see each recipe).
#
#   make build      binaries into ./bin
#   make test       the full test suite (scripts/test.sh, as CI runs it; root)
#   make demo       the network namespace demo lab (scripts/demo.sh; root)
#   make images     static binaries and the lab's FROM scratch images (no registry)
#   make lab        images, then the containerized lab up and healthy
#   make lab-down   remove the lab's containers, networks and volumes

GO ?= go
CMDS := ./cmd/4over6d ./cmd/4over6c ./cmd/4over6-web

.PHONY: build test demo images lab lab-down

build:
	mkdir -p bin
	$(GO) build -o bin/ $(CMDS)

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
