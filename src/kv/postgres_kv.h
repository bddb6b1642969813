// The PostgreSQL engine (postgres://user:pass@host:port/db?sslmode=..., also
// postgresql://): the URL goes to libpq as is. Tables
//   tessera_kv (k bytea PRIMARY KEY, v bytea NOT NULL, g bigint)
//   tessera_kv_add (k bytea, g bigint, d bigint)   counter additions
// (bytea compares by unsigned bytes, the order Scan needs).
//
// A transaction is a SERIALIZABLE transaction opened at its first read
// (PostgreSQL takes the snapshot at the first statement); writes are buffered
// and applied at Commit in one statement. PostgreSQL fails a commit that
// could not be ordered among the others (SQLSTATE 40001): conflicts are
// found per index page, so transactions on unrelated keys commit side by
// side. Counter additions are rows of tessera_kv_add, added to the counter
// by readers and folded into it now and then (see README.md).
// SQLSTATE 40001 and 40P01 become kConflict; a lost connection kUnavailable.
#pragma once

#include <memory>
#include <string_view>

#include "common/status.h"
#include "kv/kv.h"

namespace tessera {

// Connects to `url` and creates the tables if they are absent. Errors:
// kUnavailable when the server cannot be reached, kIo for other failures
// (messages name the URL without its password).
Result<std::unique_ptr<KvStore>> OpenPostgresKv(std::string_view url, const KvOptions& options);

// `url` with any password removed, for messages and KvStore::Url().
std::string RedactPostgresUrl(std::string_view url);

}  // namespace tessera
