// The transactional, ordered key-value interface that the metadata layer is
// written over once. Engines: SQLite (sqlite3://PATH, the embedded default),
// Redis (redis://), PostgreSQL (postgres://), etcd (etcd://) and memory
// (mem://NAME, for tests); every engine implements the same two classes and
// passes the same conformance suite (kv_conformance_test.cc).
//
// Semantics every engine provides:
//  - Keys and values are arbitrary byte strings; keys sort by unsigned bytes.
//  - A transaction sees its own writes and commits all of its writes
//    atomically or none of them. A read-only transaction (Begin) reads one
//    consistent snapshot. A transaction that may write (BeginExclusive) may
//    instead read newer data at each read (Redis): then its commit checks
//    every read, and Verify tells whether a body that failed saw data that
//    was out of date.
//  - Commits are serializable: Commit fails with kConflict when another
//    transaction committed, after this one read something, a change that
//    would make this one's result differ from running the two one after the
//    other. Engines may be stricter (most fail on any change to anything
//    read since); the caller retries the whole body (WithTransaction).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace tessera {

struct KeyValue {
  std::string key;
  std::string value;
  bool operator==(const KeyValue&) const = default;
};

struct ScanResult {
  std::vector<KeyValue> items;  // ascending by key
  bool more = false;            // true when the limit stopped the scan before `end`
};

// One transaction. Not thread-safe: used by one thread at a time. Destroying
// a transaction that was not committed discards its writes. Errors: kIo or
// kUnavailable when the engine cannot be reached or fails; kConflict only
// from Commit.
class KvTxn {
 public:
  virtual ~KvTxn() = default;

  // The value of `key`, or std::nullopt when it does not exist.
  virtual Result<std::optional<std::string>> Get(std::string_view key) = 0;
  // Values of several keys at once, in the order of `keys`.
  virtual Result<std::vector<std::optional<std::string>>> BatchGet(
      const std::vector<std::string>& keys) = 0;
  // Pairs with begin <= key < end, ascending, at most `limit` of them
  // (limit 0: no limit). An empty `end` means "to the end of the key space".
  virtual Result<ScanResult> Scan(std::string_view begin, std::string_view end,
                                  size_t limit) = 0;
  // Buffered until Commit; visible to this transaction's later reads at once.
  virtual void Put(std::string_view key, std::string_view value) = 0;
  virtual void Delete(std::string_view key) = 0;
  // Adds `delta` to the counter at `key` (8 bytes, big-endian two's
  // complement; absent counts as 0) when the transaction commits, without
  // reading it: engines that apply it in place let transactions that only
  // add to the same counter commit side by side instead of conflicting. A
  // later read of the key in this transaction reads the stored value (and
  // conflicts with other changes to it like any read) plus the delta.
  virtual void Increment(std::string_view key, int64_t delta) = 0;
  // Applies the writes atomically. kConflict: nothing was applied, retry.
  // A transaction with no writes commits trivially (or, on an engine that
  // answered reads from a cache, checks them). Call at most once.
  virtual Status Commit() = 0;
  // For a transaction that is given up instead of committed: kConflict when
  // something it read may have been out of date (an engine answering reads
  // from a cache of what it read and wrote before), so that a decision the
  // caller made from those reads must be made again. Ok otherwise.
  virtual Status Verify() { return Status::Ok(); }
};

// An engine. Thread-safe: any number of transactions may run at once from
// any threads.
class KvStore {
 public:
  virtual ~KvStore() = default;
  // The URL it was opened with, without any password.
  virtual std::string Url() const = 0;
  // Starts a transaction. Does not block on other transactions.
  virtual Result<std::unique_ptr<KvTxn>> Begin() = 0;
  // Starts a transaction that this process's other transactions cannot make
  // conflict, for running a body again after a conflict. It may block while
  // another exclusive transaction or a commit of this process runs. Engines
  // without such a mode start an ordinary transaction.
  virtual Result<std::unique_ptr<KvTxn>> BeginExclusive() { return Begin(); }

  // How long WithTransaction keeps retrying a body that failed with
  // kUnavailable (the engine restarting or unreachable) before returning
  // that error; 0 returns it at once. Set by OpenKv from KvOptions.
  int64_t unavailable_retry_ms() const { return unavailable_retry_ms_; }
  void set_unavailable_retry_ms(int64_t ms) { unavailable_retry_ms_ = ms; }

 private:
  int64_t unavailable_retry_ms_ = 0;
};

struct KvOptions {
  // When false, opening a store that does not exist yet (an absent SQLite
  // file) fails with kNotFound instead of creating it.
  bool create_if_missing = false;
  // See KvStore::unavailable_retry_ms. Commands that should fail fast
  // (format, status) keep a short window; a mount rides out a restart.
  int64_t unavailable_retry_ms = 5'000;
};

// Opens an engine from its URL: "sqlite3://PATH" or "mem://NAME" (NAME
// optional; stores with the same NAME are shared within the process).
// Errors: kInvalid for a malformed or unknown URL, kNotFound for an absent
// store without create_if_missing, kUnavailable/kIo when it cannot be opened;
// each message names the URL.
Result<std::unique_ptr<KvStore>> OpenKv(std::string_view url, const KvOptions& options = {});

// Runs `body` in a transaction and commits it, retrying the whole body with
// growing, jittered backoff while it (or Commit) returns kConflict, up to 200
// attempts, and while it returns kUnavailable, for up to the store's
// unavailable_retry_ms. A commit cut off by a broken connection may have been
// applied; the body then runs again on the new state (an exclusive create may
// report EEXIST for the file it made), which is why the window is bounded
// and every engine's own timeouts are finite. Transactions that may write run exclusive (BeginExclusive):
// engines with one writer at a time (SQLite) then queue this process's
// writers instead of letting them conflict. Returns the body's first non-conflict error, or the commit's.
// The body must be safe to run several times (no side effects outside txn).
Status WithTransaction(KvStore& store, const std::function<Status(KvTxn&)>& body);
// The same for a body that only reads: it never blocks writers.
Status WithReadTransaction(KvStore& store, const std::function<Status(KvTxn&)>& body);

}  // namespace tessera
