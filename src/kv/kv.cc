// OpenKv (URL dispatch to the engines) and WithTransaction (the retry loop).
#include <algorithm>
#include <chrono>
#include <random>
#include <string>
#include <thread>

#include "kv/kv.h"
#include "kv/etcd_kv.h"
#include "kv/memory_kv.h"
#include "kv/redis_kv.h"
#include "kv/postgres_kv.h"
#include "kv/sqlite_kv.h"
#include "kv/txn_retry.h"

namespace tessera {
namespace {

// Sleeps before retry number `retry` (1 for the second attempt).
void Backoff(int retry, const TxnRetryPolicy& policy) {
  int64_t wait = policy.initial_backoff_us;
  for (int i = 1; i < retry && wait < policy.max_backoff_us; ++i) wait *= 2;
  wait = std::min(wait, policy.max_backoff_us);
  if (wait <= 0) return;
  thread_local std::minstd_rand rng(std::random_device{}());
  std::uniform_int_distribution<int64_t> jitter(wait / 2, wait);
  std::this_thread::sleep_for(std::chrono::microseconds(jitter(rng)));
}

Result<std::unique_ptr<KvStore>> OpenEngine(std::string_view url, const KvOptions& options) {
  size_t sep = url.find("://");
  if (sep != std::string_view::npos) {
    std::string_view scheme = url.substr(0, sep);
    std::string_view rest = url.substr(sep + 3);
    if (scheme == "mem") return OpenMemoryKv(rest);
    if (scheme == "etcd") return OpenEtcdKv(url, options);
    if (scheme == "sqlite3") return OpenSqliteKv(url, rest, options);
    if (scheme == "postgres" || scheme == "postgresql") return OpenPostgresKv(url, options);
    if (scheme == "redis" || scheme == "rediss") return OpenRedisKv(url, options);
  }
  return Invalid("unsupported metadata URL '" + std::string(url) +
                 "' (expected sqlite3://PATH, redis://HOST:PORT/DB, postgres://USER@HOST:PORT/DB, "
                 "etcd://HOST:PORT/PREFIX or mem://NAME)");
}

}  // namespace

Result<std::unique_ptr<KvStore>> OpenKv(std::string_view url, const KvOptions& options) {
  ASSIGN_OR_RETURN(std::unique_ptr<KvStore> store, OpenEngine(url, options));
  store->set_unavailable_retry_ms(options.unavailable_retry_ms);
  return store;
}

namespace {

Status RunTransaction(KvStore& store, const std::function<Status(KvTxn&)>& body,
                      const TxnRetryPolicy& policy, bool exclusive) {
  Status last;
  int attempts = std::max(policy.max_attempts, 1);
  // While the engine is unreachable, attempts do not count against the
  // conflict budget; they stop at a deadline instead.
  bool unavailable = false;
  std::chrono::steady_clock::time_point unavailable_since;
  int64_t unavailable_wait_ms = 10;
  for (int attempt = 1; attempt <= attempts;) {
    // The previous attempt's transaction is gone by now, so no snapshot or
    // connection is held while waiting.
    if (attempt > 1 && !unavailable) Backoff(attempt - 1, policy);
    const auto attempt_start = std::chrono::steady_clock::now();
    Status s;
    {
      Result<std::unique_ptr<KvTxn>> txn = exclusive ? store.BeginExclusive() : store.Begin();
      if (!txn.ok()) {
        s = txn.status();
      } else {
        s = body(**txn);
        if (s.ok()) {
          s = (*txn)->Commit();
        } else if (!s.Is(StatusCode::kConflict) && !s.Is(StatusCode::kUnavailable)) {
          // The body's error counts only if what it decided on still holds.
          Status verified = (*txn)->Verify();
          if (!verified.ok()) s = verified;
        }
      }
    }
    if (s.Is(StatusCode::kUnavailable)) {
      auto now = std::chrono::steady_clock::now();
      // The window counts from the start of the first failed attempt, so an
      // engine that waits out its own timeout does not double the bound.
      if (!unavailable) unavailable_since = attempt_start;
      unavailable = true;
      auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(now - unavailable_since);
      if (waited.count() + unavailable_wait_ms > store.unavailable_retry_ms()) return s;
      std::this_thread::sleep_for(std::chrono::milliseconds(unavailable_wait_ms));
      unavailable_wait_ms = std::min<int64_t>(unavailable_wait_ms * 2, 1000);
      continue;
    }
    unavailable = false;
    unavailable_wait_ms = 10;
    if (!s.Is(StatusCode::kConflict)) return s;
    last = std::move(s);
    ++attempt;
  }
  return Conflict("transaction on " + store.Url() + " still conflicted after " +
                  std::to_string(attempts) + " attempts (retries exhausted): " + last.message());
}

}  // namespace

Status WithTransaction(KvStore& store, const std::function<Status(KvTxn&)>& body,
                       const TxnRetryPolicy& policy) {
  return RunTransaction(store, body, policy, /*exclusive=*/true);
}

Status WithTransaction(KvStore& store, const std::function<Status(KvTxn&)>& body) {
  return RunTransaction(store, body, TxnRetryPolicy{}, /*exclusive=*/true);
}

Status WithReadTransaction(KvStore& store, const std::function<Status(KvTxn&)>& body) {
  return RunTransaction(store, body, TxnRetryPolicy{}, /*exclusive=*/false);
}

}  // namespace tessera
