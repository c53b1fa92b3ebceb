# TunneLS. `make` builds build/tunnels; `make test` runs every spec; `make demo` runs a local
# tunnel with generated certificates. Each target first installs the Debian packages it needs
# and are missing (scripts/deps.sh), when it runs: reading the Makefile (make clean, make -n)
# installs nothing.
CC ?= cc
PKGS := luajit libevent libevent_openssl openssl
# Recursive: pkg-config runs when a recipe needs the flags, after the packages are in.
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS))
PKG_LIBS = $(shell pkg-config --libs $(PKGS))
OPT ?= -O2 -g
SAN ?=
CFLAGS += $(OPT) $(SAN) -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror \
	-fno-strict-aliasing $(PKG_CFLAGS)
LDFLAGS += $(SAN)
BUILD ?= build

ENGINE := account addr alerts bulkread client dgram dingtalk dingtalk_msg direct flags frame httpreq log luahost main metrics mux notify pool reuse server session sidmap socks tls turns udpassoc udpdest udprelay udpsess writethrough
PURE := frame socks dgram flags httpreq log sidmap dingtalk_msg reuse turns
OBJS := $(ENGINE:%=$(BUILD)/%.o) $(BUILD)/policy_lua.o $(BUILD)/rules_lua.o
TOOLS := $(BUILD)/tn-dest $(BUILD)/tn-load $(BUILD)/tn-hook $(BUILD)/tn-bench $(BUILD)/tn-delay \
	$(BUILD)/tn-tlscost $(BUILD)/tn-hostile $(BUILD)/tn-udp

# Fuzz targets (fuzz/fuzz_*.c) and the pure sources each one needs.
FUZZ := frame socks flags proxyreq dgram
FUZZ_SRC_frame := engine/frame.c
FUZZ_SRC_socks := engine/socks.c
FUZZ_SRC_flags := engine/flags.c engine/log.c
FUZZ_SRC_proxyreq := engine/httpreq.c engine/socks.c
FUZZ_SRC_dgram := engine/dgram.c engine/socks.c
FUZZ_SECONDS ?= 60

.PHONY: all test demo clean format tools fuzz bench bench-bulk bench-hostile valgrind install
all: $(BUILD)/tunnels $(BUILD)/tunnels.1 $(BUILD)/libtunnels_pure.so $(TOOLS) \
	$(FUZZ:%=$(BUILD)/replay-%)

# Where `make install` puts things: $(DESTDIR)$(PREFIX)/bin, share/man/man1, share/doc/tunnels,
# lib/systemd/system (the units' ExecStart rewritten to $(PREFIX)/bin/tunnels).
PREFIX ?= /usr/local
DESTDIR ?=

$(BUILD):
	mkdir -p $(BUILD)

# The build's packages, checked (and installed when missing) once per change of deps.sh.
$(BUILD)/.deps-build: scripts/deps.sh | $(BUILD)
	scripts/deps.sh build
	touch $@

$(BUILD)/%.o: engine/%.c engine/*.h | $(BUILD)/.deps-build
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/policy_lua.c: lua/policy.lua scripts/embed.lua | $(BUILD)/.deps-build
	luajit scripts/embed.lua luahost_default_policy lua/policy.lua $@

$(BUILD)/rules_lua.c: lua/rules.lua scripts/embed.lua | $(BUILD)/.deps-build
	luajit scripts/embed.lua luahost_rules_lib lua/rules.lua $@

$(BUILD)/%_lua.o: $(BUILD)/%_lua.c
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/tunnels: $(OBJS)
	$(CC) $(LDFLAGS) -o $@ $(OBJS) $(PKG_LIBS)

# tunnels(1), from the binary's own -h: every flag, never out of step.
$(BUILD)/tunnels.1: $(BUILD)/tunnels scripts/manpage.sh
	scripts/manpage.sh $(BUILD)/tunnels >$@

install: $(BUILD)/tunnels $(BUILD)/tunnels.1
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/man/man1 \
		$(DESTDIR)$(PREFIX)/share/doc/tunnels/examples $(DESTDIR)$(PREFIX)/lib/systemd/system \
		$(DESTDIR)$(PREFIX)/share/doc/tunnels/logrotate
	install -m 0755 $(BUILD)/tunnels $(DESTDIR)$(PREFIX)/bin/tunnels
	install -m 0644 $(BUILD)/tunnels.1 $(DESTDIR)$(PREFIX)/share/man/man1/tunnels.1
	install -m 0644 README.md LICENSE docs/*.md $(DESTDIR)$(PREFIX)/share/doc/tunnels/
	install -m 0644 examples/* $(DESTDIR)$(PREFIX)/share/doc/tunnels/examples/
	install -m 0644 dist/logrotate/tunnels $(DESTDIR)$(PREFIX)/share/doc/tunnels/logrotate/
	for u in dist/systemd/*.service; do \
		sed 's|/usr/bin/tunnels|$(PREFIX)/bin/tunnels|' $$u \
			>$(DESTDIR)$(PREFIX)/lib/systemd/system/$$(basename $$u) || exit 1; \
		chmod 0644 $(DESTDIR)$(PREFIX)/lib/systemd/system/$$(basename $$u); \
	done

# The pure modules (no I/O) as a shared library, for the specs through LuaJIT's FFI.
$(BUILD)/libtunnels_pure.so: $(PURE:%=engine/%.c) engine/*.h | $(BUILD)/.deps-build
	$(CC) $(CFLAGS) -fPIC -shared -o $@ $(PURE:%=engine/%.c) -lcrypto

$(BUILD)/tn-%: tools/tn-%.c | $(BUILD)/.deps-build
	$(CC) $(CFLAGS) -o $@ $< $(shell pkg-config --libs libevent openssl)

# The TLS cost of a pool rotation, with the engine's own contexts (all of it but main.o).
$(BUILD)/tn-tlscost: tools/tn-tlscost.c $(filter-out $(BUILD)/main.o,$(OBJS))
	$(CC) $(CFLAGS) -o $@ $^ $(PKG_LIBS)

# A hostile ReMux peer, with the engine's frame codec.
$(BUILD)/tn-hostile: tools/tn-hostile.c $(BUILD)/frame.o
	$(CC) $(CFLAGS) -o $@ $^ $(shell pkg-config --libs openssl)

# The corpus replayer: each target with a plain main(), built by the normal compiler.
$(BUILD)/replay-%: fuzz/fuzz_%.c fuzz/replay.c engine/*.c engine/*.h | $(BUILD)/.deps-build
	$(CC) $(CFLAGS) -o $@ fuzz/fuzz_$*.c fuzz/replay.c $(FUZZ_SRC_$*)

# libFuzzer with ASan and UBSan, each target for FUZZ_SECONDS. New inputs go to build/, the
# checked-in corpus (fuzz/corpus/) only grows by hand; crashes land in build/crash-*.
$(BUILD)/fuzz-%: fuzz/fuzz_%.c engine/*.c engine/*.h | $(BUILD)/.deps-build
	scripts/deps.sh fuzz
	clang -g -O1 -fsanitize=fuzzer,address,undefined -o $@ fuzz/fuzz_$*.c $(FUZZ_SRC_$*)

fuzz: $(FUZZ:%=$(BUILD)/fuzz-%)
	@for t in $(FUZZ); do \
	  echo "fuzz $$t: $(FUZZ_SECONDS) s"; \
	  mkdir -p $(BUILD)/corpus-$$t; \
	  $(BUILD)/fuzz-$$t -max_total_time=$(FUZZ_SECONDS) -artifact_prefix=$(BUILD)/crash-$$t- \
	    $(BUILD)/corpus-$$t fuzz/corpus/$$t 2>&1 | grep -E '^#[0-9]+[[:space:]]+DONE|ERROR|SUMMARY|Assertion'; \
	  test -z "$$(ls $(BUILD)/crash-$$t-* 2>/dev/null)" || exit 1; \
	done

bench-bulk: all
	scripts/bench-bulk.sh

# An honest client's latency and download while a hostile client and 1,000 strangers attack.
bench-hostile: all
	scripts/bench-hostile.sh

# TunneLS against its peers (installs them), on loopback and over a 50 ms link; then the rule
# library's load and decision times. Writes bench/results.md and bench/results.png.
bench: all
	scripts/bench.sh
	luajit bench/rules-bench.lua . | tee bench/rules.md

valgrind: all
	scripts/valgrind.sh

test: all
	scripts/test.sh

demo: all
	scripts/demo.sh

format:
	clang-format -i engine/*.c engine/*.h tools/*.c

clean:
	rm -rf build
