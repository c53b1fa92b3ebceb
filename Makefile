# TunneLS. `make` builds build/tunnels; `make test` runs every spec; `make demo` runs a local
# tunnel with generated certificates. Each first installs missing Debian packages.
CC ?= cc
PKGS := luajit libevent libevent_openssl openssl
DEPS_OK := $(shell scripts/deps.sh >&2 && echo ok)
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS))
PKG_LIBS := $(shell pkg-config --libs $(PKGS))
OPT ?= -O2 -g
SAN ?=
CFLAGS += $(OPT) $(SAN) -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror \
	-fno-strict-aliasing $(PKG_CFLAGS)
LDFLAGS += $(SAN)
BUILD ?= build

ENGINE := addr client flags frame log luahost main mux pool reader server session sidmap socks tls
PURE := frame socks flags log sidmap
OBJS := $(ENGINE:%=$(BUILD)/%.o) $(BUILD)/policy_lua.o
TOOLS := $(BUILD)/tn-dest $(BUILD)/tn-load

.PHONY: all test demo clean format tools
all: $(BUILD)/tunnels $(BUILD)/libtunnels_pure.so $(TOOLS)

$(BUILD):
	mkdir -p $(BUILD)

$(BUILD)/%.o: engine/%.c engine/*.h | $(BUILD)
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/policy_lua.c: lua/policy.lua scripts/embed.lua | $(BUILD)
	luajit scripts/embed.lua luahost_default_policy lua/policy.lua $@

$(BUILD)/policy_lua.o: $(BUILD)/policy_lua.c
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/tunnels: $(OBJS)
	$(CC) $(LDFLAGS) -o $@ $(OBJS) $(PKG_LIBS)

# The pure modules (no I/O) as a shared library, for the specs through LuaJIT's FFI.
$(BUILD)/libtunnels_pure.so: $(PURE:%=engine/%.c) engine/*.h | $(BUILD)
	$(CC) $(CFLAGS) -fPIC -shared -o $@ $(PURE:%=engine/%.c)

$(BUILD)/tn-%: tools/tn-%.c | $(BUILD)
	$(CC) $(CFLAGS) -o $@ $< $(shell pkg-config --libs libevent openssl)

test: all
	scripts/test.sh

demo: all
	scripts/demo.sh

format:
	clang-format -i engine/*.c engine/*.h tools/*.c

clean:
	rm -rf build
