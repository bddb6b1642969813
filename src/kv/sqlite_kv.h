// The SQLite engine (sqlite3://PATH): the embedded default. One table,
// kv(k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID, in WAL mode so that
// readers never block the writer, and several processes on one host may open
// the same file.
//
// A transaction is a deferred SQLite transaction opened at its first read,
// so all its reads see one snapshot; its writes are buffered and applied in
// that same SQLite transaction at Commit. SQLite refuses the upgrade to a
// writer when anyone committed after the snapshot (SQLITE_BUSY_SNAPSHOT) or
// holds the write lock (SQLITE_BUSY): Commit then rolls back and returns
// kConflict, and WithTransaction retries. Conflicts are therefore detected
// per database, not per key: coarser than the contract needs, never weaker.
#pragma once

#include <memory>
#include <string_view>

#include "common/status.h"
#include "kv/kv.h"

namespace tessera {

// Opens the database file `path`; `url` is what Url() returns and what error
// messages name. Errors: kInvalid for an empty path or a directory;
// kNotFound when the file is absent and !options.create_if_missing;
// kUnavailable when its directory is missing or not writable, or the file
// is read-only; kIo for any other SQLite failure (message has the URL).
Result<std::unique_ptr<KvStore>> OpenSqliteKv(std::string_view url, std::string_view path,
                                              const KvOptions& options);

}  // namespace tessera
