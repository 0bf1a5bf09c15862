#include "gateway/head_link.h"

#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <random>
#include <stdexcept>
#include <system_error>

#include "transport/sockets.h"

namespace hearth::http {

using Clock = std::chrono::steady_clock;

HeadLink::HeadLink(const std::string& head, std::optional<transport::CurveKeys> keys)
    : endpoint_(head),
      keys_(std::move(keys)),
      wake_fd_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)),
      next_id_(std::random_device{}()) {
  if (wake_fd_ < 0) throw std::system_error(errno, std::generic_category(), "eventfd for the HTTP gateway");
  thread_ = std::thread([this] { loop(); });
}

HeadLink::~HeadLink() {
  stop_ = true;
  wake();
  thread_.join();
  ::close(wake_fd_);
}

void HeadLink::wake() {
  const uint64_t one = 1;
  [[maybe_unused]] const auto n = ::write(wake_fd_, &one, sizeof one);
}

uint64_t HeadLink::request(std::unique_ptr<capnp::MallocMessageBuilder> message, OnReply on_reply,
                           std::chrono::milliseconds idle_timeout) {
  const uint64_t id = ++next_id_;
  message->getRoot<wire::Envelope>().setRequestId(id);
  {
    std::lock_guard lock(mutex_);
    outbox_.push_back({transport::encode(*message), id, std::move(on_reply), false, idle_timeout, Clock::now() + idle_timeout});
  }
  wake();
  return id;
}

void HeadLink::cancel(uint64_t request_id, bool forget) {
  capnp::MallocMessageBuilder b;
  b.initRoot<wire::Envelope>().initCancelRequest().setRequestId(request_id);
  {
    std::lock_guard lock(mutex_);
    // No callback marks a cancel.
    outbox_.push_back({transport::encode(b), request_id, nullptr, forget, std::chrono::milliseconds(0),
                       Clock::now() + std::chrono::seconds(5)});
  }
  wake();
}

void HeadLink::loop() {
  zmq::socket_t socket =
      transport::SocketFactory(context_, keys_)
          .connect_dealer(endpoint_, "http-" + std::to_string(std::random_device{}()),
                          {.max_message_bytes = 64 << 20, .receive_hwm = 100000, .server_key = keys_ ? keys_->public_key : ""});
  while (!stop_) {
    zmq::pollitem_t items[] = {{socket.handle(), 0, ZMQ_POLLIN, 0}, {nullptr, wake_fd_, ZMQ_POLLIN, 0}};
    bool unsent = false;
    {
      std::lock_guard lock(mutex_);
      unsent = !outbox_.empty();
    }
    // A short wait while the socket is still connecting (ZMQ_IMMEDIATE refuses to queue).
    zmq::poll(items, 2, std::chrono::milliseconds(unsent ? 10 : 100));
    if (items[1].revents & ZMQ_POLLIN) {
      uint64_t n = 0;
      [[maybe_unused]] const auto r = ::read(wake_fd_, &n, sizeof n);
    }
    drain_outbox(socket);
    if (items[0].revents & ZMQ_POLLIN) receive(socket);
    expire();
  }
  for (auto& [id, p] : pending_) p.on_reply(nullptr);
  pending_.clear();
}

void HeadLink::drain_outbox(zmq::socket_t& socket) {
  for (;;) {
    Outgoing out;
    {
      std::lock_guard lock(mutex_);
      if (outbox_.empty()) return;
      out = std::move(outbox_.front());
      outbox_.pop_front();
    }
    const bool is_cancel = !out.on_reply;
    if (is_cancel) {
      if (out.forget) pending_.erase(out.id);
    } else {
      pending_[out.id] = {std::move(out.on_reply), out.idle_timeout, Clock::now() + out.idle_timeout};
    }
    try {
      if (socket.send(out.frame, zmq::send_flags::dontwait)) continue;
    } catch (const zmq::error_t& e) {
      spdlog::warn("http: cannot send to the head at {}: {}", endpoint_, e.what());
    }
    // Not connected (yet): put it back, unless it has waited too long.
    if (!is_cancel) {
      auto it = pending_.find(out.id);
      out.on_reply = std::move(it->second.on_reply);
      pending_.erase(it);
    }
    if (Clock::now() > out.deadline) {
      if (!is_cancel) {
        spdlog::warn("http: cannot reach the head at {}", endpoint_);
        out.on_reply(nullptr);
      }
      continue;
    }
    std::lock_guard lock(mutex_);
    outbox_.push_front(std::move(out));
    return;
  }
}

void HeadLink::receive(zmq::socket_t& socket) {
  for (int i = 0; i < 1024; ++i) {
    const auto parts = transport::receive_multipart(socket);  // a reply to a client has no payload frame: any is dropped
    if (parts.empty()) return;
    try {
      const transport::Decoded d = transport::decode(parts[0]);
      const auto env = d.envelope();
      auto it = pending_.find(env.getRequestId());
      if (it == pending_.end()) {
        unrouted_++;
        continue;
      }
      it->second.deadline = Clock::now() + it->second.idle_timeout;
      if (!it->second.on_reply(&env)) pending_.erase(it);
    } catch (const std::exception& e) {
      spdlog::warn("http: dropped a reply from the head: {}", e.what());
    } catch (const kj::Exception& e) {
      spdlog::warn("http: dropped a reply from the head: {}", e.getDescription().cStr());
    }
  }
}

void HeadLink::expire() {
  const auto now = Clock::now();
  for (auto it = pending_.begin(); it != pending_.end();) {
    if (now < it->second.deadline) {
      ++it;
      continue;
    }
    spdlog::warn("http: the head did not answer request {} in {} s", it->first, it->second.idle_timeout.count() / 1000.0);
    it->second.on_reply(nullptr);
    it = pending_.erase(it);
  }
}

}  // namespace hearth::http
