// Server::post(): work handed to the loop's thread from other threads. `make tsan` runs these
// under ThreadSanitizer: post() is the one place where threads meet.
#include "tests/support.hpp"

#if defined(_WIN32)
#  include <windows.h>
#else
#  include <thread>
#endif
#include <atomic>
#include <functional>
#include <memory>
#include <vector>

using chatsock::milliseconds;
using cst::ChatUser;

namespace {

// A thread of its own for `body`; join() waits for it. MinGW's default thread model has no
// std::thread, so Windows uses its own threads.
class Thread {
public:
    explicit Thread(std::function<void()> body) : body_(std::move(body)) {
#if defined(_WIN32)
        handle_ = ::CreateThread(nullptr, 0, start, this, 0, nullptr);
        REQUIRE(handle_ != nullptr);
#else
        thread_ = std::thread(body_);
#endif
    }
    ~Thread() { join(); }
    Thread(const Thread&) = delete;
    Thread& operator=(const Thread&) = delete;
    void join() {
#if defined(_WIN32)
        if (handle_) ::WaitForSingleObject(handle_, INFINITE), ::CloseHandle(handle_);
        handle_ = nullptr;
#else
        if (thread_.joinable()) thread_.join();
#endif
    }

private:
#if defined(_WIN32)
    static DWORD WINAPI start(void* self) {
        static_cast<Thread*>(self)->body_();
        return 0;
    }
    HANDLE handle_ = nullptr;
#else
    std::thread thread_;
#endif
    std::function<void()> body_;
};

// Which thread is running: a number that differs between threads alive at the same time.
unsigned long long this_thread() {
#if defined(_WIN32)
    return ::GetCurrentThreadId();
#else
    return std::hash<std::thread::id>{}(std::this_thread::get_id());
#endif
}

// Stops the server if the test has not ended by `limit`: a broken post() fails, not hangs.
class Watchdog {
public:
    Watchdog(chatsock::Server& server, milliseconds limit)
        : thread_([this, &server, limit] {
              const auto deadline = chatsock::Clock::now() + limit;
              while (!done_.load() && chatsock::Clock::now() < deadline) cst::sleep_ms(5);
              if (!done_.load()) fired_.store(true), server.stop();
          }) {}
    ~Watchdog() { disarm(); }
    // True if it had to stop the server.
    bool disarm() {
        done_.store(true);
        thread_.join();
        return fired_.load();
    }

private:
    std::atomic<bool> done_{false}, fired_{false};
    Thread thread_;
};

}  // namespace

TEST_SUITE("post") {
    TEST_CASE("post: 8 threads post 10,000 tasks each: every one runs once, on the loop's thread") {
        chatsock::Server server(cst::quiet_options());
        cst::start(server);
        constexpr int threads = 8, tasks = 10000;
        std::vector<int> runs(threads * tasks, 0);  // written by the tasks: the loop's thread only
        unsigned long long loop_thread = 0;
        int off_the_loop = 0;
        std::atomic<int> refused{0};  // (doctest's checks stay on the test's own thread)
        Thread loop([&] {
            loop_thread = this_thread();  // before run(), on the loop's thread
            server.run();
        });
        {
            std::vector<std::unique_ptr<Thread>> posters;
            for (int t = 0; t < threads; ++t)
                posters.push_back(std::make_unique<Thread>([&, t] {
                    for (int i = 0; i < tasks; ++i)
                        refused += !server.post([&, k = t * tasks + i] {
                            ++runs[static_cast<std::size_t>(k)];
                            off_the_loop += this_thread() != loop_thread;
                        });
                }));
        }  // every poster has joined: all their tasks are queued before the last one
        Watchdog watchdog(server, milliseconds(20000));
        REQUIRE(server.post([&] { server.stop(); }));
        loop.join();
        CHECK_FALSE(watchdog.disarm());
        CHECK(refused.load() == 0);
        CHECK(off_the_loop == 0);
        int once = 0;
        for (int r : runs) once += r == 1;
        CHECK(once == threads * tasks);
    }

    TEST_CASE("post: a task may broadcast: a background thread tells the room the time") {
        chatsock::Server server(cst::quiet_options());
        const auto port = cst::start(server);
        Thread loop([&] { server.run(); });
        ChatUser alice;
        REQUIRE_FALSE(alice.join(port, "alice"));
        const auto deadline = chatsock::Clock::now() + cst::default_limit;
        while (!alice.client.joined() && chatsock::Clock::now() < deadline)
            alice.client.poll(milliseconds(10));
        REQUIRE(alice.client.joined());
        std::atomic<bool> done{false};
        Thread ticker([&] {  // the README's example, faster: a tick every 20 ms
            for (int tick = 1; tick <= 3 && !done.load(); ++tick) {
                cst::sleep_ms(20);
                server.post([&server, tick] { server.broadcast("tick " + std::to_string(tick)); });
            }
        });
        while (!alice.got("server", "tick 3") && chatsock::Clock::now() < deadline)
            alice.client.poll(milliseconds(10));
        done.store(true);
        ticker.join();
        CHECK(alice.texts_from("server") ==
              std::vector<std::string>{"welcome, alice! 0 other users online", "tick 1", "tick 2",
                                       "tick 3"});
        server.stop();
        loop.join();
    }

    TEST_CASE("post: before stop() a task runs, after it, post() refuses and drops the task") {
        chatsock::Server server(cst::quiet_options());
        cst::start(server);
        bool before = false, after = false;
        auto held = std::make_shared<int>(0);  // a task's captures are freed when it is dropped
        REQUIRE(server.post([&] { before = true; }));
        server.stop();
        CHECK_FALSE(server.post([&, held] { after = true; }));
        CHECK(held.use_count() == 1);
        CHECK_FALSE(server.run());  // already stopped: runs what was accepted, says goodbye
        CHECK(before);
        CHECK_FALSE(after);
    }

    TEST_CASE("post: a task that posts again runs on a later turn, not never") {
        chatsock::Server server(cst::quiet_options());
        cst::start(server);
        int turns = 0;
        std::function<void()> again = [&] {
            if (++turns < 5) server.post(again);
            else server.stop();
        };
        REQUIRE(server.post(again));
        Watchdog watchdog(server, milliseconds(4000));
        CHECK_FALSE(server.run());
        CHECK_FALSE(watchdog.disarm());
        CHECK(turns == 5);
    }
}  // TEST_SUITE("post")
