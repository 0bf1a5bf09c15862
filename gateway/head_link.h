// The HTTP gateway's connection to the head: a DEALER on the head's control socket, owned by one
// thread, shared by every HTTP connection. Requests are queued from any thread; replies are
// routed by request id to the callback of the request that asked.
//
// The gateway is a client like `hearth` itself: it speaks only the wire protocol, so it could
// run in another process, and the head treats its requests like anyone else's.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "transport/codec.h"
#include "transport/curve.h"

namespace hearth::http {

namespace wire = transport::wire;

class HeadLink {
 public:
  // Called on the link's thread for each reply (nullptr once when the request timed out, or when
  // the link stops). Return true to keep receiving replies to the same request, false when done.
  // The reader is valid only during the call: copy what you need.
  using OnReply = std::function<bool(const wire::Envelope::Reader* reply)>;

  // `head` is the head's control endpoint (tcp://HOST:PORT). Starts the thread.
  // `keys`: the head's own identity (the gateway runs on the head), or none with --insecure.
  HeadLink(const std::string& head, std::optional<transport::CurveKeys> keys);
  ~HeadLink();
  HeadLink(const HeadLink&) = delete;
  HeadLink& operator=(const HeadLink&) = delete;

  // Sends the message (its request id is set here) and returns that id. `idle_timeout` is the
  // longest wait for the next reply. Thread-safe.
  uint64_t request(std::unique_ptr<capnp::MallocMessageBuilder> message, OnReply on_reply,
                   std::chrono::milliseconds idle_timeout);
  // Sends a CancelRequest for `request_id`. With `forget`, its replies stop being routed;
  // without, the caller still gets the final (cancelled) event with its counts. Thread-safe.
  void cancel(uint64_t request_id, bool forget = true);

  // Messages received that matched no request (late replies to cancelled ones), for /metrics.
  uint64_t unrouted() const { return unrouted_.load(); }

 private:
  struct Pending {
    OnReply on_reply;
    std::chrono::milliseconds idle_timeout;
    std::chrono::steady_clock::time_point deadline;
  };
  struct Outgoing {
    zmq::message_t frame;
    uint64_t id = 0;
    OnReply on_reply;     // empty for a cancel
    bool forget = false;  // a cancel that also stops routing
    std::chrono::milliseconds idle_timeout{0};
    std::chrono::steady_clock::time_point deadline;  // give up if it cannot be sent by then
  };
  void loop();
  void wake();
  void drain_outbox(zmq::socket_t& socket);
  void receive(zmq::socket_t& socket);
  void expire();

  std::string endpoint_;
  std::optional<transport::CurveKeys> keys_;
  zmq::context_t context_;
  int wake_fd_;  // eventfd: the outbox has something
  std::mutex mutex_;
  std::deque<Outgoing> outbox_;
  std::atomic<uint64_t> next_id_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> unrouted_{0};
  std::map<uint64_t, Pending> pending_;  // link thread only
  std::thread thread_;
};

}  // namespace hearth::http
