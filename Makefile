# cnode_bridge: the one front door. `make` builds everything, `make test` runs every
# suite, `make demo` runs the demo. See README.md and docs/ARCHITECTURE.md.

ERL      ?= erl
CC       ?= cc
BUILD    ?= build
PRIV     := erlang_side/priv

# Ask the installed OTP where erl_interface and the NIF headers live (never a
# hard-coded version). Evaluated lazily so `make deps` works before OTP exists.
EI_DIR   = $(shell $(ERL) -noshell -eval 'io:format("~s",[code:lib_dir(erl_interface)]),halt().' 2>/dev/null)
ERTS_INC = $(shell $(ERL) -noshell -eval 'io:format("~s/erts-~s/include",[code:root_dir(),erlang:system_info(version)]),halt().' 2>/dev/null)

OPT      ?= -O2
CSTD     := -std=gnu11
# -Wno-format-truncation: snprintf truncating log text and names is deliberate.
WARN     := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wno-unused-parameter -Wno-format-truncation
CFLAGS   ?= $(OPT) -g
# include/ holds the whole public API (what a C user compiles against); the
# project's internal headers live beside their sources in core/ and cnode/.
ALL_CFLAGS = $(CSTD) $(WARN) $(CFLAGS) $(SAN) -fPIC -pthread -D_GNU_SOURCE \
             -Iinclude -I$(EI_DIR)/include
LDLIBS_EI  = -L$(EI_DIR)/lib -lei
LDLIBS_SYS = -lssl -lcrypto -lz -lpthread -lm -lrt

CORE_SRC  := $(wildcard core/*.c)
CORE_OBJ  := $(CORE_SRC:%.c=$(BUILD)/%.o)
CNODE_MAIN := cnode/main.c
CNODE_PROG := $(CNODE_MAIN) cnode/demo.c cnode/demo_probe.c
CNODE_SRC := $(filter-out $(CNODE_PROG),$(wildcard cnode/*.c))
CNODE_OBJ := $(CNODE_SRC:%.c=$(BUILD)/%.o)
NIF_SRC   := $(wildcard nif/*.c)
NIF_OBJ   := $(NIF_SRC:%.c=$(BUILD)/nifobj/%.o)
UNIT_SRC  := $(wildcard tests/unit/test_*.c)
UNIT_BIN  := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
BENCH_SRC := $(wildcard bench/*.c)
BENCH_BIN := $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)

LIBCORE   := $(BUILD)/libcnb_core.a
LIBCNODE  := $(BUILD)/libcnode_bridge.a
LIBCNODE_SO := $(BUILD)/libcnode_bridge.so
SO_MAP    := cnode/libcnode_bridge.map
# The version, from the public header (one place). The soname's version
# (CNB_MAJOR here) is MAJOR, or 0.MINOR while MAJOR is 0: before 1.0 a minor
# release may change the ABI (the option structs grow), so it is a new soname.
CNB_VERSION := $(shell sed -n 's/^\#define CNB_VERSION_STRING "\(.*\)"/\1/p' include/cnode_bridge.h)
CNB_VWORDS  := $(subst ., ,$(CNB_VERSION))
CNB_MAJOR   := $(if $(filter 0,$(firstword $(CNB_VWORDS))),0.$(word 2,$(CNB_VWORDS)),$(firstword $(CNB_VWORDS)))
CNODE_BIN := $(PRIV)/cnode
NIF_SO    := $(PRIV)/cnode_registry_nif.so

.PHONY: all c erlang deps test unit itest exunit asan lint fuzz fuzz-quick bench bench-quick demo \
        shell clean test-reliability soak test-otp install docs
.DEFAULT_GOAL := all

all: c erlang

TOOL_SRC  := $(wildcard tests/tools/*.c)
TOOL_BIN  := $(TOOL_SRC:tests/tools/%.c=$(BUILD)/tests/tools/%)

C_TARGETS := $(LIBCORE) $(LIBCNODE) $(LIBCNODE_SO) $(TOOL_BIN)
ifneq ($(wildcard $(CNODE_MAIN)),)
C_TARGETS += $(CNODE_BIN)
endif
ifneq ($(NIF_SRC),)
C_TARGETS += $(NIF_SO)
endif

c: $(C_TARGETS)

deps:
	@scripts/install-deps

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c $< -o $@

# The NIF's objects get the NIF headers and hidden visibility; -iquote core
# because the NIF names core's internal headers (cnb_bytes.h, cnb_registry_ops.h)
# without their path.
$(BUILD)/nifobj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -fvisibility=hidden -iquote core -I$(ERTS_INC) -MMD -MP -c $< -o $@

$(LIBCORE): $(CORE_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(LIBCNODE): $(CNODE_OBJ) $(CORE_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

# The shared library: soname libcnode_bridge.so.MAJOR (0.MINOR before 1.0); the version script
# exports the cnb_* names only (no cnb__* internals), and ei, linked in from
# OTP's static libei.a, stays private to it (--exclude-libs as well), so a
# service may link an ei of its own.
$(LIBCNODE_SO): $(CNODE_OBJ) $(CORE_OBJ) $(SO_MAP)
	$(CC) -shared -Wl,-soname,libcnode_bridge.so.$(CNB_MAJOR) -Wl,--version-script=$(SO_MAP) \
	  -Wl,--exclude-libs,ALL -o $@ $(CNODE_OBJ) $(CORE_OBJ) $(LDLIBS_EI) $(LDLIBS_SYS) $(SAN)

$(CNODE_BIN): $(CNODE_PROG:%.c=$(BUILD)/%.o) $(LIBCNODE)
	@mkdir -p $(dir $@)
	$(CC) -o $@ $^ $(LDLIBS_EI) $(LDLIBS_SYS) $(SAN)

# --exclude-libs: core's symbols stay inside the NIF (its calls into core
# bind directly, not through the PLT); only nif_init is exported.
$(NIF_SO): $(NIF_OBJ) $(LIBCORE)
	@mkdir -p $(dir $@)
	$(CC) -shared -fvisibility=hidden -Wl,--exclude-libs,ALL -o $@ $(NIF_OBJ) $(LIBCORE) -lz -lpthread -lrt $(SAN)

$(BUILD)/tests/%: tests/unit/%.c $(LIBCNODE)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Itests/unit -Icnode -Icore -o $@ $< $(LIBCNODE) $(LDLIBS_EI) $$(pkg-config --libs check) $(LDLIBS_SYS)

# Helper programs that integration tests drive (e.g. the term property checker).
$(BUILD)/tests/tools/%: tests/tools/%.c $(LIBCNODE)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(LIBCNODE) $(LDLIBS_EI) $(LDLIBS_SYS)

$(BUILD)/bench/%: bench/%.c $(LIBCNODE)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(LIBCNODE) $(LDLIBS_EI) $(LDLIBS_SYS)

# The NIF's term paths outside the VM: its own object, stand-ins for enif_*.
$(BUILD)/bench/bench_nif_term: bench/bench_nif_term.c $(BUILD)/nifobj/nif/cnr_term.o $(LIBCORE)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -I$(ERTS_INC) -Inif -o $@ $< $(BUILD)/nifobj/nif/cnr_term.o $(LIBCORE) -lz -lpthread -lrt

erlang: c
	scripts/build-erlang

# ---- install -----------------------------------------------------------------
# make install PREFIX=/usr/local DESTDIR=: the shared library
# (libcnode_bridge.so.VERSION, links .so.MAJOR and .so), the static library,
# the public headers in INCLUDEDIR/cnode_bridge, the cnode program, and
# cnode_bridge.pc (which points at this OTP's erl_interface for ei.h and the
# -lei a service's own ei calls need). DESTDIR stages the tree elsewhere; the
# .pc names PREFIX. See README.md, "Using it from C". Set on the command line
# only: the environment does not count (erl, for one, exports BINDIR).
PREFIX     = /usr/local
LIBDIR     = $(PREFIX)/lib
INCLUDEDIR = $(PREFIX)/include
BINDIR     = $(PREFIX)/bin
PKGCONFIGDIR = $(LIBDIR)/pkgconfig
PUBLIC_HDR := $(wildcard include/*.h)

install: $(LIBCNODE) $(LIBCNODE_SO) $(CNODE_BIN)
	install -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR)/cnode_bridge $(DESTDIR)$(BINDIR) \
	  $(DESTDIR)$(PKGCONFIGDIR)
	install -m 644 $(LIBCNODE) $(DESTDIR)$(LIBDIR)/libcnode_bridge.a
	install -m 755 $(LIBCNODE_SO) $(DESTDIR)$(LIBDIR)/libcnode_bridge.so.$(CNB_VERSION)
	ln -sf libcnode_bridge.so.$(CNB_VERSION) $(DESTDIR)$(LIBDIR)/libcnode_bridge.so.$(CNB_MAJOR)
	ln -sf libcnode_bridge.so.$(CNB_MAJOR) $(DESTDIR)$(LIBDIR)/libcnode_bridge.so
	install -m 644 $(PUBLIC_HDR) $(DESTDIR)$(INCLUDEDIR)/cnode_bridge/
	install -m 755 $(CNODE_BIN) $(DESTDIR)$(BINDIR)/cnode
	sed -e 's|@PREFIX@|$(PREFIX)|; s|@LIBDIR@|$(LIBDIR)|; s|@INCLUDEDIR@|$(INCLUDEDIR)|' \
	    -e 's|@VERSION@|$(CNB_VERSION)|; s|@EI_DIR@|$(EI_DIR)|' \
	    cnode/cnode_bridge.pc.in > $(DESTDIR)$(PKGCONFIGDIR)/cnode_bridge.pc

# ---- tests -------------------------------------------------------------------
# make test: every suite (Check units, Erlang integration, ExUnit); one summary
# line per runner at the end; non-zero exit on any failure.
test: deps
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory unit-bins asan-cnode
	@scripts/run-tests all

.PHONY: unit-bins
unit-bins: $(UNIT_BIN)

unit: deps
	@$(MAKE) --no-print-directory all unit-bins
	@scripts/run-tests unit

itest: deps
	@$(MAKE) --no-print-directory all asan-cnode
	@scripts/run-tests itest

exunit: deps
	@$(MAKE) --no-print-directory all
	@scripts/run-tests exunit

# The integration suites with every Erlang/Elixir node on OTP 27 and on OTP 29
# (Debian chroots cached in /var/cache/cnode_bridge, or $$CNB_OTP_CACHE; needs
# root, else skipped with a note) and the C node built here. CNB_OTP_RELEASES
# picks releases. See scripts/test-otp.
test-otp: deps
	@$(MAKE) --no-print-directory all
	@scripts/test-otp

# Partitions (network namespaces; needs root, else skipped with a note) and
# kill storms; `make test' runs the reduced set, RELIABILITY=full the full one.
# `make soak MINUTES=N': the churn soak. See docs/RELIABILITY.md.
MINUTES ?= 30
test-reliability: deps
	@$(MAKE) --no-print-directory all
	@RELIABILITY=$(RELIABILITY) scripts/run-tests reliability

soak: deps
	@$(MAKE) --no-print-directory all
	@MINUTES=$(MINUTES) scripts/run-tests soak

# The cnode program built with ASan + UBSan (LeakSanitizer at exit): the
# runtime suite runs its 10,000-worker test on it when it exists.
ASAN_SAN := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
.PHONY: asan-cnode
asan-cnode:
	@$(MAKE) --no-print-directory BUILD=build-asan OPT=-O1 SAN="$(ASAN_SAN)" \
	  PRIV=build-asan/priv build-asan/priv/cnode

# C unit tests under AddressSanitizer + UndefinedBehaviorSanitizer, in a build
# tree of their own.
asan: deps
	@$(MAKE) --no-print-directory BUILD=build-asan OPT=-O1 SAN="$(ASAN_SAN)" \
	  PRIV=build-asan/priv unit-bins
	@BUILD=build-asan scripts/run-tests unit

lint: all
	scripts/lint

# Every libFuzzer target for FUZZ_SECONDS each (default 60); fuzz-quick is
# the reduced run CI makes (10 s each); both fail on a crash.
fuzz:
	scripts/run-fuzz

fuzz-quick:
	FUZZ_SECONDS=10 scripts/run-fuzz

bench: deps
	@$(MAKE) --no-print-directory all $(BENCH_BIN)
	scripts/run-bench

# The targets of issue 19 only, few rounds and small counts (under a minute):
# prints the ratios; the report goes to build/bench/BENCHMARKS-quick.md.
bench-quick: deps
	@$(MAKE) --no-print-directory all $(BENCH_BIN)
	BENCH_QUICK=1 scripts/run-bench

demo: deps
	@$(MAKE) --no-print-directory all
	@scripts/demo

# The API reference: the public C headers (include/) through Doxygen into
# build/docs/c/html/, the Erlang modules through edoc into build/docs/erlang/.
docs: deps
	@rm -rf $(BUILD)/docs && mkdir -p $(BUILD)/docs/c
	(cat docs/Doxyfile; echo "OUTPUT_DIRECTORY = $(BUILD)/docs/c") | doxygen -
	$(ERL) -noshell -eval 'ok = edoc:application(cnode_bridge, "erlang_side", [{dir, "$(BUILD)/docs/erlang"}, {preprocess, true}]), halt().'
	@echo "docs: $(BUILD)/docs/c/html/index.html, $(BUILD)/docs/erlang/index.html"

shell: deps
	@$(MAKE) --no-print-directory all
	@scripts/demo-shell

clean:
	rm -rf $(BUILD) build-asan build-fuzz build-otp27 build-otp29 $(PRIV)/cnode $(PRIV)/*.so erlang_side/ebin _build

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
