# bridgehook: `make demo` shows it working, `make test` proves it.
export PATH := /usr/local/go/bin:$(PATH)
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c

GO ?= go
# What the tests, the demo and the benchmark run: the runtimes, a static
# busybox for the containers' rootfs, iptables (nft and legacy), nftables
# for nft(8), which the tests read and flush rules with, iproute2 for
# `ip netns`, util-linux for nsenter/unshare, podman for the hooks.d test,
# systemd for systemd-analyze, which checks the units in systemd/,
# containernetworking-plugins (bridge, host-local, tuning, bandwidth) for
# the CNI chain test and bench, containerd for the `ctr run --cni` test,
# dbus and firewalld for the firewalld test, man-db for the test that
# renders the man pages, lintian for the Debian package's test, and
# netavark for the bench's podman rows.
DEBS := runc crun iptables nftables busybox-static iproute2 util-linux podman systemd containernetworking-plugins containerd dbus firewalld man-db lintian netavark

.PHONY: build man install uninstall deb test lint cover demo bench fuzz stress flaky deps clean

# Static: a dynamically linked binary spends ~3 ms in the loader on every
# container start.
build:
	CGO_ENABLED=0 $(GO) build -buildvcs=true -ldflags "-X github.com/bridgehook/bridgehook/cli.version=$(VERSION) $(LDFLAGS)" -o bridgehook .

# The version, from git describe, spelt so that Debian takes it as is:
# v0.1.0 is 0.1.0, three commits on 0.1.0+3.gabc1234, with no tag in
# reach 0~gitabc1234; .dirty for a tree with changes.
VERSION ?= $(shell v=$$(git describe --tags --match 'v[0-9]*' --dirty=.dirty 2>/dev/null) && echo "$$v" | sed -e 's/^v//' -e 's/-\([0-9]*\)-g/+\1.g/' || echo "0~git$$(git describe --always --dirty=.dirty)")

# The man pages, bridgehook(8) and one per command, written from the
# command line's own definitions into man/.
man:
	rm -rf man && $(GO) run ./internal/mangen man

# Where `make install` puts things, with netavark's and the OCI hook
# projects' names. DESTDIR stages an install (nothing goes outside it).
# HOOKSDIR and CNIDIR are where podman 4.3 and CNI runtimes look, whatever
# the PREFIX.
# Debian's layout (make deb): PREFIX=/usr CNIDIR=/usr/lib/cni
# SYSTEMDDIR=/lib/systemd/system. LIBEXECDIR is taken for the convention;
# bridgehook has no helper that is not its command line, so nothing goes
# there.
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
LIBEXECDIR ?= $(PREFIX)/libexec
SYSTEMDDIR ?= $(PREFIX)/lib/systemd/system
HOOKSDIR ?= /usr/share/containers/oci/hooks.d
CNIDIR ?= /opt/cni/bin
MANDIR ?= $(PREFIX)/share/man
DOCDIR ?= $(PREFIX)/share/doc/bridgehook
DATADIR ?= $(PREFIX)/share
UNITS := $(notdir $(wildcard systemd/*.service))
# What install puts there, for uninstall to remove exactly that.
INSTALLED = $(BINDIR)/bridgehook $(CNIDIR)/bridgehook $(HOOKSDIR)/bridgehook.json \
	$(addprefix $(SYSTEMDDIR)/,$(UNITS)) \
	$(DATADIR)/bash-completion/completions/bridgehook $(DATADIR)/zsh/vendor-completions/_bridgehook \
	$(DATADIR)/fish/vendor_completions.d/bridgehook.fish $(DOCDIR)/README.md

# The static binary, the CNI plugin under its type name (a link), the
# hooks.d file and the systemd units naming the installed binary (the
# units are not enabled), the man pages, completions and docs.
install: build man
	mkdir -p .gen
	install -D -m 0755 bridgehook $(DESTDIR)$(BINDIR)/bridgehook
	install -d -m 0755 $(DESTDIR)$(CNIDIR)
	# Relative within one top-level directory, absolute across (Debian
	# policy 10.5).
	to=$(BINDIR)/bridgehook; [ "$$(echo $(CNIDIR) | cut -d/ -f2)" != "$$(echo $(BINDIR) | cut -d/ -f2)" ] || \
		to=$$(realpath -m --relative-to=$(CNIDIR) $(BINDIR)/bridgehook); ln -sfn $$to $(DESTDIR)$(CNIDIR)/bridgehook
	sed 's|/usr/local/bin/bridgehook|$(BINDIR)/bridgehook|g' hooks.d/bridgehook.json > .gen/hook.json
	install -D -m 0644 .gen/hook.json $(DESTDIR)$(HOOKSDIR)/bridgehook.json
	for u in $(UNITS); do \
		sed 's|/usr/local/bin/bridgehook|$(BINDIR)/bridgehook|g' systemd/$$u > .gen/$$u && \
		install -D -m 0644 .gen/$$u $(DESTDIR)$(SYSTEMDDIR)/$$u || exit 1; \
	done
	for p in man/*.8; do install -D -m 0644 $$p $(DESTDIR)$(MANDIR)/man8/$${p#man/} || exit 1; done
	./bridgehook completion bash > .gen/bash && install -D -m 0644 .gen/bash $(DESTDIR)$(DATADIR)/bash-completion/completions/bridgehook
	./bridgehook completion zsh > .gen/zsh && install -D -m 0644 .gen/zsh $(DESTDIR)$(DATADIR)/zsh/vendor-completions/_bridgehook
	./bridgehook completion fish > .gen/fish && install -D -m 0644 .gen/fish $(DESTDIR)$(DATADIR)/fish/vendor_completions.d/bridgehook.fish
	install -D -m 0644 README.md $(DESTDIR)$(DOCDIR)/README.md
	for d in docs/*.md; do install -D -m 0644 $$d $(DESTDIR)$(DOCDIR)/$$d || exit 1; done

uninstall: man
	rm -f $(addprefix $(DESTDIR),$(INSTALLED))
	for p in man/*.8; do rm -f $(DESTDIR)$(MANDIR)/man8/$${p#man/}; done
	for d in docs/*.md; do rm -f $(DESTDIR)$(DOCDIR)/$$d; done
	-rmdir $(DESTDIR)$(DOCDIR)/docs $(DESTDIR)$(DOCDIR)

# bridgehook_VERSION_ARCH.deb, with dpkg-deb (a native package, stripped): the install above in
# Debian's layout; the hooks.d file a conffile in /etc, linked from
# /usr/share/containers/oci/hooks.d, where podman looks unless hooks_dir
# says otherwise; no maintainer scripts, so nothing is started or
# enabled.
ARCH ?= $(shell dpkg --print-architecture)
DEB := bridgehook_$(VERSION)_$(ARCH).deb
deb:
	rm -f bridgehook_*.deb
	rm -rf .deb && $(MAKE) install LDFLAGS="-s -w" DESTDIR=$(CURDIR)/.deb PREFIX=/usr CNIDIR=/usr/lib/cni \
		SYSTEMDDIR=/lib/systemd/system HOOKSDIR=/etc/containers/oci/hooks.d
	install -d .deb/usr/share/containers/oci/hooks.d .deb/DEBIAN
	ln -s /etc/containers/oci/hooks.d/bridgehook.json .deb/usr/share/containers/oci/hooks.d/bridgehook.json
	gzip -9n .deb/usr/share/man/man8/*.8
	install -m 0644 debian/copyright .deb/usr/share/doc/bridgehook/copyright
	sed -e 's/@VERSION@/$(VERSION)/' -e "s/@DATE@/$$(date -R -d @$$(git log -1 --format=%ct))/" debian/changelog.in | gzip -9n > .deb/usr/share/doc/bridgehook/changelog.gz
	install -D -m 0644 debian/lintian-overrides .deb/usr/share/lintian/overrides/bridgehook
	sed -e 's/@VERSION@/$(VERSION)/' -e 's/@ARCH@/$(ARCH)/' debian/control.in > .deb/DEBIAN/control
	echo /etc/containers/oci/hooks.d/bridgehook.json > .deb/DEBIAN/conffiles
	cd .deb && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum > DEBIAN/md5sums
	dpkg-deb --root-owner-group -Zxz --build .deb $(DEB)

# As root, the privileged and end-to-end tests run in sandbox network
# namespaces and fail if anything they need is missing; as another user
# only the unit tests run.
test: lint
	$(GO) test -count=1 -race ./input ./port ./ipam ./hook ./nat ./oci ./cni ./names ./cli
	$(GO) test -count=1 -timeout 30m ./...

# Coverage of the tests that need no root: the packages' own, with hook's
# decisions tested against fakes of the kernel, the firewall and the store.
cover:
	$(GO) test -count=1 -cover ./input ./port ./ipam ./hook ./nat ./oci ./cni ./names ./bridge

# go vet and staticcheck; any finding fails the build.
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
lint:
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

# Two busybox containers under runc on a bridge in a sandbox namespace:
# their eth0, pings between them and to the gateway, then everything removed.
demo: deps
	BRIDGEHOOK_DEMO=1 $(GO) test -count=1 -run '^TestDemo$$' -v ./test/e2e | grep -v -e '^=== RUN' -e '^--- PASS' -e '^PASS' -e '^ok '

# The hook's cost on the container start path, against an empty Go program
# started the same way, in a sandbox namespace; then the in-process parts.
# BASE=REV adds rows for the binary of git revision REV, run in turn with
# this one: how a change moves the figures, on one machine at one time.
# RUNS=N runs each case N times (30).
bench: deps
	$(if $(BASE),bash .ci/build-rev $(BASE) $(CURDIR)/bridgehook-base &&) \
	BRIDGEHOOK_BENCH=1 BRIDGEHOOK_BENCH_RUNS=$(RUNS) $(if $(BASE),BRIDGEHOOK_BENCH_BASE=$(CURDIR)/bridgehook-base BRIDGEHOOK_BENCH_BASE_LIBS=$(CURDIR)/bridgehook-base-libs) $(GO) test -count=1 -run '^TestBenchTable$$' -v ./test/e2e | grep -v -e '^=== RUN' -e '^--- PASS' -e '^PASS' -e '^ok '
	$(GO) test -run '^$$' -bench . -benchtime 2000x ./ipam ./oci ./port

# Each fuzz target for a bounded time (FUZZTIME), from the seeds in testdata/.
FUZZTIME ?= 30s
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzReadState$$' -fuzztime $(FUZZTIME) ./oci
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./port
	$(GO) test -run '^$$' -fuzz '^FuzzHandler$$' -fuzztime $(FUZZTIME) ./names

# The long versions of the concurrency and crash tests.
stress:
	BRIDGEHOOK_STRESS=1 $(GO) test -count=1 -timeout 60m -run 'Concurrent|Killed' -v ./test/e2e

# The privileged suite FLAKY_RUNS (10) times in a row while the stress
# tests load the machine beside it: a test that fails once is a failing test.
flaky: deps
	bash .ci/flaky

# Installs the Debian packages above that are missing. A package removed
# but not purged is still known to dpkg: its status says whether it is
# installed.
#
# firewalld (for the firewalld test, which runs it in a sandbox) must never
# start on this machine: its unit is masked before the package is
# installed, and while it is, a policy-rc.d of ours (unless one is there)
# forbids its maintainer scripts to start anything.
deps:
	@missing=""; for p in $(DEBS); do \
		dpkg-query -W -f '$${Status}' $$p 2>/dev/null | grep -q ' installed$$' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		mkdir -p /etc/systemd/system && ln -sf /dev/null /etc/systemd/system/firewalld.service; \
		ours=""; if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && ours=1; fi; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; rc=$$?; \
		[ -z "$$ours" ] || rm -f /usr/sbin/policy-rc.d; \
		exit $$rc; \
	fi

clean:
	rm -rf bridgehook man .gen .deb bridgehook_*.deb
