// The retry policy behind WithTransaction, exposed so that tests (and tools
// that prefer to fail fast) can shorten it. WithTransaction(store, body) uses
// the defaults below.
#pragma once

#include <cstdint>
#include <functional>

#include "common/status.h"
#include "kv/kv.h"

namespace tessera {

struct TxnRetryPolicy {
  // Enough for a transaction on a slow engine (each read a network round
  // trip) that keeps losing to clients hammering the same directory: about
  // ten seconds of trying before the caller gets an error.
  int max_attempts = 200;
  // The wait before the second attempt; it doubles per attempt up to
  // max_backoff_us, and each wait is drawn uniformly from [half, all] of it
  // so that colliding transactions spread out.
  int64_t initial_backoff_us = 100;
  int64_t max_backoff_us = 50'000;
};

// WithTransaction with an explicit policy; same contract otherwise.
Status WithTransaction(KvStore& store, const std::function<Status(KvTxn&)>& body,
                       const TxnRetryPolicy& policy);

}  // namespace tessera
