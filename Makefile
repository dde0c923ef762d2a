# chatsock — build the demos, run the tests.
#   make              build demo_server and demo_client
#   make test         build and run every test (unit, in-process, end-to-end, interop); where
#                     libnats is installed it builds demo_cluster_server too, for e2e_cluster.py
#   make sanitize     the unit and in-process tests under ASan + UBSan; where libnats and
#                     nats-server are installed, demo_cluster_server in some e2e_cluster.py tests
#   make valgrind     the server, client and web in-process tests under valgrind (memcheck)
#   make tsan         Server::post() from 8 threads under ThreadSanitizer; where libnats and
#                     nats-server are installed, demo_cluster_server in some e2e_cluster.py tests
#   make windows      cross-build demo_server.exe, demo_client.exe and the test runner (MinGW)
#   make test-windows the unit tests and the end-to-end suites under wine, plus mixed runs
#   make mutate       plant each bug of the mutation register (tests/mutations.txt) in a copy of
#                     the header and check that its test fails (MUTATE_ARGS: see tools/mutate.py)
#   make fuzz         the libFuzzer targets in fuzz/, FUZZ_SECONDS (60) each (clang, libclang-rt-14-dev)
#   make bench        build the load generator bench/chatsock_bench (bench/run.sh runs it)
#   make cluster      build demo_cluster_server (the NATS add-on in cluster/), where libnats is
#                     installed (libnats-dev); tests/e2e_cluster.py runs it with nats-server
#   make clean
CXX      ?= g++
CXXFLAGS ?= -std=c++17 -O2 -g -Wall -Wextra -Wpedantic -Werror
TESTFLAGS = -std=c++17 -O1 -g -Wall -Wextra -Wpedantic -Werror -I.
SANFLAGS  = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all

UNIT_SOURCES = $(wildcard tests/test_*.cpp) tests/main.cpp tests/second_tu.cpp
BIN = tests/bin

all: demo_server demo_client

demo_server: demo_server.cpp chatsock.hpp
	$(CXX) $(CXXFLAGS) demo_server.cpp -o $@

demo_client: demo_client.cpp chatsock.hpp
	$(CXX) $(CXXFLAGS) demo_client.cpp -o $@

# The cluster add-on links libnats: built only where it is installed (pkg-config, or its header).
NATS_LIBS := $(shell pkg-config --libs libnats 2>/dev/null || \
                 (test -f /usr/include/nats/nats.h && echo -lnats))

ifneq ($(strip $(NATS_LIBS)),)
cluster: demo_cluster_server
else
cluster:
	@echo "libnats is not installed (apt-get install libnats-dev): the cluster add-on is not built"
endif

demo_cluster_server: demo_cluster_server.cpp cluster/chatsock_cluster.hpp cluster/cluster_wire.hpp chatsock.hpp
	$(CXX) $(CXXFLAGS) demo_cluster_server.cpp -o $@ $(NATS_LIBS) -pthread

# The unit tests, built twice: with the platform's default poller (epoll on Linux) and with
# the portable poll() backend forced, so both run the whole server and client suite.
$(BIN)/unit: $(UNIT_SOURCES) chatsock.hpp cluster/cluster_wire.hpp tests/support.hpp | $(BIN)
	@echo "== building the unit tests, default poller (epoll on Linux): one long compile, quiet until it ends"
	$(CXX) $(TESTFLAGS) $(UNIT_SOURCES) -o $@ -pthread

$(BIN)/unit_poll: $(UNIT_SOURCES) chatsock.hpp cluster/cluster_wire.hpp tests/support.hpp | $(BIN)
	@echo "== building the unit tests again, poll() backend forced: one long compile, quiet until it ends"
	$(CXX) $(TESTFLAGS) -DCHATSOCK_USE_POLL $(UNIT_SOURCES) -o $@ -pthread

$(BIN)/unit_asan: $(UNIT_SOURCES) chatsock.hpp cluster/cluster_wire.hpp tests/support.hpp | $(BIN)
	@echo "== building the unit tests under ASan + UBSan: one long compile, quiet until it ends"
	$(CXX) $(TESTFLAGS) $(SANFLAGS) $(UNIT_SOURCES) -o $@ -pthread

# demo_server with its limits on the command line, for tests/e2e_attacks.py.
$(BIN)/attack_server: tests/attack_server.cpp chatsock.hpp | $(BIN)
	@echo "== building the attack suite's server (tests/attack_server.cpp)"
	$(CXX) $(CXXFLAGS) -I. tests/attack_server.cpp -o $@

$(BIN):
	mkdir -p $(BIN)

# Windows, cross-built with MinGW-w64 (win32 thread model: no std::thread) and run under wine.
MINGW    ?= x86_64-w64-mingw32-g++
WINFLAGS  = -std=c++17 -O2 -Wall -Wextra -Wpedantic -Werror -static
WIN_TEST_SOURCES = $(UNIT_SOURCES) $(wildcard tests/windows/*.cpp)

windows: demo_server.exe demo_client.exe $(BIN)/unit.exe

demo_server.exe: demo_server.cpp chatsock.hpp
	$(MINGW) $(WINFLAGS) demo_server.cpp -o $@ -lws2_32

demo_client.exe: demo_client.cpp chatsock.hpp
	$(MINGW) $(WINFLAGS) demo_client.cpp -o $@ -lws2_32

# MinGW does not search /usr/include; give it doctest alone through a link.
$(BIN)/include/doctest: | $(BIN)
	mkdir -p $(BIN)/include && ln -sfn /usr/include/doctest $@

$(BIN)/unit.exe: $(WIN_TEST_SOURCES) $(wildcard tests/windows/*.inc) chatsock.hpp cluster/cluster_wire.hpp tests/support.hpp | $(BIN)/include/doctest
	@echo "== building the unit tests for Windows (MinGW): one long compile, quiet until it ends"
	$(MINGW) $(WINFLAGS) -I. -I$(BIN)/include -DDOCTEST_CONFIG_NO_MULTITHREADING \
	    $(WIN_TEST_SOURCES) -o $@ -lws2_32

# Below Vista (no WSAPoll) the header must stop the build with a clear #error.
$(BIN)/win_vista_check: chatsock.hpp | $(BIN)
	if printf '#define _WIN32_WINNT 0x0501\n#include "chatsock.hpp"\n' | \
	    $(MINGW) -std=c++17 -fsyntax-only -I. -x c++ - 2>$@.err; then exit 1; fi
	grep -q 'chatsock needs Windows Vista or later' $@.err && touch $@

test-windows: windows all $(BIN)/win_vista_check
	bash tests/run_windows.sh

# `cluster` builds demo_cluster_server where libnats is installed, else says why not (and
# tests/e2e_cluster.py then skips its tests, saying why).
test: all cluster $(BIN)/unit $(BIN)/unit_poll $(BIN)/attack_server
	bash tests/run.sh

# The mutation register: every one-line bug in tests/mutations.txt, planted alone in a copy of
# chatsock.hpp, must fail the test named for it. CI runs a sample: MUTATE_ARGS="--budget S
# --sample-from COMMIT".
MUTATE_ARGS ?=
mutate:
	python3 tools/mutate.py $(MUTATE_ARGS)

# The server, client, web and flood in-process tests under valgrind (memcheck): no errors, no
# definite leaks.
VALGRIND ?= valgrind --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite --quiet
valgrind: $(BIN)/unit
	$(VALGRIND) $(BIN)/unit --no-intro -ts=server,client,web,flood

$(BIN)/attack_server_asan: tests/attack_server.cpp chatsock.hpp | $(BIN)
	@echo "== building the attack suite's server under ASan + UBSan"
	$(CXX) $(TESTFLAGS) $(SANFLAGS) tests/attack_server.cpp -o $@

# The unit tests, then the attack suite against a sanitized server (shorter soak).
# Threads meet only in Server::post(): its tests, under ThreadSanitizer (g++'s libtsan).
$(BIN)/unit_tsan: tests/test_post.cpp tests/main.cpp chatsock.hpp tests/support.hpp | $(BIN)
	$(CXX) $(TESTFLAGS) -fsanitize=thread tests/test_post.cpp tests/main.cpp -o $@ -pthread

tsan: $(BIN)/unit_tsan
	TSAN_OPTIONS=halt_on_error=1 $(BIN)/unit_tsan --no-intro
	@$(MAKE) --no-print-directory tsan-cluster

sanitize: $(BIN)/unit_asan $(BIN)/attack_server_asan
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 $(BIN)/unit_asan
	CHATSOCK_ATTACK_SERVER=$(CURDIR)/$(BIN)/attack_server_asan CHATSOCK_SANITIZED=1 \
	    CHATSOCK_SOAK_SECONDS=10 python3 tests/e2e_attacks.py
	CHATSOCK_ATTACK_SERVER=$(CURDIR)/$(BIN)/attack_server_asan CHATSOCK_SANITIZED=1 \
	    python3 tests/e2e_web.py WebAttacks
	@$(MAKE) --no-print-directory sanitize-cluster

# The cluster add-on's node built with ASan + UBSan, and with TSan (libnats itself is not
# instrumented: TSan reported nothing from it, so there are no suppressions), each run in about
# a minute of tests/e2e_cluster.py: CHATSOCK_SANITIZED makes every test stop its nodes with
# SIGTERM, then fail on a non-zero exit or a sanitizer's report in a node's stderr. Left out:
# the slowest, which wait out timeouts (NodeLoss, NatsLoss' kill -STOP; make test runs them).
CLUSTER_ASAN_TESTS = BadInput Resends Startup Auth.test_token \
    Room.test_messages_reach_every_other_client_once_in_order Room.test_a_leave_reaches_the_other_nodes \
    Commands.test_msg_me_and_who_reach_other_nodes Commands.test_nick_is_claimed_across_the_cluster
CLUSTER_TSAN_TESTS = NatsLoss.test_kill_9_of_a_nats_server Startup BadInput FloodControl Auth.test_token \
    Room.test_messages_reach_every_other_client_once_in_order \
    Names.test_the_same_name_at_the_same_moment_on_two_nodes_goes_to_one \
    Commands.test_the_same_nick_at_the_same_moment_on_two_nodes_goes_to_one
NATS_SERVER := $(shell command -v nats-server 2>/dev/null)

$(BIN)/asan/demo_cluster_server: demo_cluster_server.cpp cluster/chatsock_cluster.hpp cluster/cluster_wire.hpp chatsock.hpp
	@mkdir -p $(@D) && echo "== building demo_cluster_server under ASan + UBSan"
	$(CXX) $(TESTFLAGS) $(SANFLAGS) demo_cluster_server.cpp -o $@ $(NATS_LIBS) -pthread

$(BIN)/tsan/demo_cluster_server: demo_cluster_server.cpp cluster/chatsock_cluster.hpp cluster/cluster_wire.hpp chatsock.hpp
	@mkdir -p $(@D) && echo "== building demo_cluster_server under ThreadSanitizer"
	$(CXX) $(TESTFLAGS) -fsanitize=thread demo_cluster_server.cpp -o $@ $(NATS_LIBS) -pthread

ifneq ($(and $(strip $(NATS_LIBS)),$(NATS_SERVER)),)
sanitize-cluster: $(BIN)/asan/demo_cluster_server
	CHATSOCK_BIN_DIR=$(CURDIR)/$(BIN)/asan CHATSOCK_SANITIZED=1 ASAN_OPTIONS=detect_leaks=1 \
	    UBSAN_OPTIONS=print_stacktrace=1 python3 tests/e2e_cluster.py $(CLUSTER_ASAN_TESTS)

tsan-cluster: $(BIN)/tsan/demo_cluster_server
	CHATSOCK_BIN_DIR=$(CURDIR)/$(BIN)/tsan CHATSOCK_SANITIZED=1 \
	    python3 tests/e2e_cluster.py $(CLUSTER_TSAN_TESTS)
else
sanitize-cluster tsan-cluster:
	@echo "libnats or nats-server is not installed (apt-get install libnats-dev nats-server):" \
	    "demo_cluster_server is not tested under the sanitizers"
endif

# Fuzzing (clang + libFuzzer). Each target runs on a working copy of its seed corpus in
# fuzz/corpus-work/, so the seeds in fuzz/corpus/ stay as they are; a crash leaves its input
# in fuzz/corpus-work/ and the log's tail on screen.
FUZZ_SECONDS ?= 60
FUZZ_CXX     ?= clang++
FUZZFLAGS     = -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
                -Wall -Wextra -Werror -I.
FUZZ_WORK     = fuzz/corpus-work

$(BIN)/fuzz_%: fuzz/fuzz_%.cpp fuzz/reference.hpp chatsock.hpp | $(BIN)
	@echo "== building the fuzz target fuzz_$* (clang, libFuzzer + ASan + UBSan)"
	$(FUZZ_CXX) $(FUZZFLAGS) $< -o $@

$(BIN)/fuzz_cluster_wire: cluster/cluster_wire.hpp  # the code it fuzzes, besides chatsock.hpp

fuzz: $(BIN)/fuzz_decoder $(BIN)/fuzz_server_input $(BIN)/fuzz_wire $(BIN)/fuzz_cluster_wire
	@for pair in decoder:decoder server_input:server wire:wire cluster_wire:cluster_wire; do \
	    target=$${pair%%:*}; work=$(FUZZ_WORK)/$${pair##*:}; log=$(FUZZ_WORK)/$$target.log; \
	    mkdir -p $$work && cp fuzz/corpus/$${pair##*:}/* $$work/; \
	    echo "== fuzz_$$target, $(FUZZ_SECONDS) s"; \
	    if ! $(BIN)/fuzz_$$target -max_total_time=$(FUZZ_SECONDS) -timeout=30 -print_final_stats=1 \
	            -artifact_prefix=$(FUZZ_WORK)/$$target- $$work >$$log 2>&1; then \
	        tail -n 40 $$log; echo "fuzz_$$target found a crash: see $$log and $(FUZZ_WORK)/$$target-*"; exit 1; \
	    fi; \
	    grep -E '^#[0-9]+[[:space:]]+DONE|^stat::(number_of_executed_units|average_exec_per_sec|new_units_added)' $$log; \
	done

# The load generator, never part of the tests: bench/run.sh builds it and demo_server, then
# runs the workloads.
bench: bench/chatsock_bench bench/floor_relay demo_server

bench/chatsock_bench: bench/chatsock_bench.cpp
	$(CXX) -std=c++17 -O2 -g -Wall -Wextra -Wpedantic -Werror $< -o $@

bench/floor_relay: bench/floor_relay.cpp
	$(CXX) -std=c++17 -O2 -g -Wall -Wextra -Wpedantic -Werror $< -o $@

clean:
	rm -rf $(BIN) build demo_server demo_client demo_cluster_server demo_server.exe demo_client.exe
	rm -f bench/chatsock_bench bench/floor_relay

.PHONY: all cluster test mutate valgrind sanitize tsan sanitize-cluster tsan-cluster clean windows test-windows fuzz bench
