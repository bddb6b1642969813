// The etcd engine (etcd://host:port[,host:port...]/prefix), over etcd's v3
// JSON gateway (HTTP POST /v3/kv/range and /v3/kv/txn, base64 keys/values).
//
// Every key K is stored as "/prefix/" + K, so one etcd cluster can hold
// several volumes. A transaction reads at one revision (the first read's),
// remembers the mod_revision of every key it read and every range it
// scanned, and commits with one etcd txn whose compares fail (kConflict) if
// any of those changed after that revision.
#pragma once

#include <memory>
#include <string_view>

#include "common/status.h"
#include "kv/kv.h"

namespace tessera {

// Opens `url`. Nothing is contacted until the first transaction. Errors:
// kInvalid for a malformed URL.
Result<std::unique_ptr<KvStore>> OpenEtcdKv(std::string_view url, const KvOptions& options);

}  // namespace tessera
