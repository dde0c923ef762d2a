# chatsock — build the demos, run the tests.
#   make              build demo_server and demo_client
#   make test         build and run every test (unit, in-process, end-to-end, interop)
#   make sanitize     the unit and in-process tests under ASan + UBSan
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

# The unit tests, built twice: with the platform's default poller (epoll on Linux) and with
# the portable poll() backend forced, so both run the whole server and client suite.
$(BIN)/unit: $(UNIT_SOURCES) chatsock.hpp tests/support.hpp | $(BIN)
	$(CXX) $(TESTFLAGS) $(UNIT_SOURCES) -o $@ -pthread

$(BIN)/unit_poll: $(UNIT_SOURCES) chatsock.hpp tests/support.hpp | $(BIN)
	$(CXX) $(TESTFLAGS) -DCHATSOCK_USE_POLL $(UNIT_SOURCES) -o $@ -pthread

$(BIN)/unit_asan: $(UNIT_SOURCES) chatsock.hpp tests/support.hpp | $(BIN)
	$(CXX) $(TESTFLAGS) $(SANFLAGS) $(UNIT_SOURCES) -o $@ -pthread

$(BIN):
	mkdir -p $(BIN)

test: all $(BIN)/unit $(BIN)/unit_poll
	bash tests/run.sh

sanitize: $(BIN)/unit_asan
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 $(BIN)/unit_asan

clean:
	rm -rf $(BIN) build demo_server demo_client

.PHONY: all test sanitize clean
