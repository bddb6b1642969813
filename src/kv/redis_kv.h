// The Redis engine (redis://[user:pass@]host:port[/db][?prefix=NAME]).
//
// Redis has neither ordered scans nor snapshots, so the engine keeps both
// itself, under the namespace prefix P (default "tessera"; the braces make
// every key hash to one cluster slot, which Lua scripts need):
//   {P}:d      hash: key -> value (the current data)
//   {P}:i      sorted set of every key, all with score 0, so ZRANGEBYLEX
//              returns them ordered by unsigned bytes
//   {P}:v      commit counter, bumped by every commit that writes
//   {P}:u:N    undo record of commit N: key -> value before N ("1"+value,
//              or "0" when absent); expires after kUndoTtlSeconds
// Every read and every commit is one Lua script, hence atomic. A
// transaction's snapshot is the counter at its first read; later reads
// rebuild values as of that snapshot from the undo records of the commits
// since. Commit applies the buffered writes only if the counter still equals
// the snapshot (kConflict otherwise): conflicts are per namespace, like
// SQLite's per-database ones. Reads return kConflict when the snapshot is
// too old to rebuild (undo records expired, or too many commits since).
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
