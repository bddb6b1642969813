// The Redis engine (redis://[user:pass@]host:port[/db][?prefix=NAME]).
//
// Redis has neither ordered scans nor snapshots, so the engine keeps both
// itself, under the namespace prefix P (default "tessera"; the braces make
// every key hash to one cluster slot, which Lua scripts need):
//   {P}:d      hash: key -> value (the current data)
//   {P}:i      sorted set of every key, all with score 0, so ZRANGEBYLEX
//              returns them ordered by unsigned bytes
//   {P}:v      commit counter (the version), bumped by every commit that writes
//   {P}:u:N    undo record of commit N: key -> value before N ("1"+value,
//              or "0" when absent); deleted kMaxSnapshotLag commits later
//   {P}:m      hash: key -> version of its last change
//   {P}:t      deleted keys by the version of their delete (their {P}:m
//              entries go after kMaxSnapshotLag commits)
// Every read and every commit is one Lua script, hence atomic. A read-only
// transaction's snapshot is the counter at its first read; later reads
// rebuild values as of that snapshot from the undo records of the commits
// since. A transaction that may write reads the newest data, or this
// process's cache of recent values, and remembers the version of each
// read; its commit fails with kConflict when a key read changed after its
// version or a key in a scanned range after the range was read, so
// conflicts are per key and range. Reads return kConflict when a snapshot
// is too old to rebuild (more than kMaxSnapshotLag commits since).
#pragma once

#include <memory>
#include <string_view>

#include "common/status.h"
#include "kv/kv.h"

namespace tessera {

// Opens `url` (scheme redis or rediss). Errors: kInvalid for a malformed URL
// or rediss:// (this hiredis has no TLS); kUnavailable when the server cannot
// be reached or authentication fails; kInvalid when the server's
// maxmemory-policy could evict keys.
Result<std::unique_ptr<KvStore>> OpenRedisKv(std::string_view url, const KvOptions& options);

}  // namespace tessera
