#include "object/retry_store.h"

#include <random>
#include <thread>

#include "common/log.h"

namespace tessera {
namespace {

bool WorthRetrying(const Status& st) {
  return st.IsRetryable() || st.Is(StatusCode::kIo);
}

const Status& StatusOf(const Status& st) { return st; }
template <typename T>
const Status& StatusOf(const Result<T>& r) {
  return r.status();
}

}  // namespace

RetryStore::RetryStore(std::unique_ptr<ObjectStore> inner, RetryPolicy policy)
    : inner_(std::move(inner)), policy_(policy) {}

template <typename Call>
auto RetryStore::Retry(Call call) -> decltype(call()) {
  thread_local std::minstd_rand rng(std::random_device{}());
  auto pause = policy_.first_pause;
  for (int attempt = 1;; ++attempt) {
    auto result = call();
    const Status& st = StatusOf(result);
    if (st.ok() || !WorthRetrying(st) || attempt >= policy_.max_attempts) return result;
    std::uniform_int_distribution<int64_t> jitter(pause.count() / 2, pause.count());
    LogWarn("object store " + inner_->Describe() + ": " + st.ToString() + "; retrying");
    std::this_thread::sleep_for(std::chrono::milliseconds(jitter(rng)));
    pause = std::min(pause * 2, policy_.max_pause);
  }
}

Status RetryStore::Put(std::string_view key, std::string_view data) {
  return Retry([&] { return inner_->Put(key, data); });
}

Result<std::string> RetryStore::Get(std::string_view key, uint64_t offset, int64_t length) {
  return Retry([&] { return inner_->Get(key, offset, length); });
}

Result<ObjectInfo> RetryStore::Head(std::string_view key) {
  return Retry([&] { return inner_->Head(key); });
}

Status RetryStore::Delete(std::string_view key) {
  return Retry([&] { return inner_->Delete(key); });
}

Result<ListPage> RetryStore::List(std::string_view prefix, std::string_view start_after,
                                  size_t limit) {
  return Retry([&] { return inner_->List(prefix, start_after, limit); });
}

}  // namespace tessera
