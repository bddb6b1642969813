// The PostgreSQL engine (postgres://user:pass@host:port/db?sslmode=..., also
// postgresql://): the URL goes to libpq as is. One table,
//   tessera_kv (k bytea PRIMARY KEY, v bytea NOT NULL)
// (bytea compares by unsigned bytes, the order Scan needs), and a one-row
// table tessera_kv_clock that every writing transaction bumps at commit.
//
// A transaction is a REPEATABLE READ transaction opened at its first read
// (PostgreSQL takes the snapshot at the first statement); writes are buffered
// and applied at Commit after updating the clock row. The clock is what makes
// "anything this transaction read changed since its snapshot" a conflict:
// PostgreSQL fails an update of a row that another transaction changed after
// our snapshot (SQLSTATE 40001), and every committed write changed the clock.
// SERIALIZABLE alone would not do: it lets a transaction commit after another
// changed what it read when the two can be ordered (reader first), and the
// contract forbids that. Conflicts are therefore per database, like SQLite.
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
