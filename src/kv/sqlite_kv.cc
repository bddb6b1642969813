#include "kv/sqlite_kv.h"

#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "common/log.h"
#include "kv/buffered_txn.h"

namespace tessera {
namespace {

// Long enough to ride out another process's commit or checkpoint; a writer
// holds the lock only while applying one transaction's buffered writes.
constexpr int kBusyTimeoutMs = 5000;
// Idle connections kept for reuse; more are closed when returned.
constexpr size_t kMaxIdleConnections = 16;

// Statements every connection prepares once and reuses.
enum StatementId : size_t {
  kGet,
  kScanTo,
  kScanAll,
  kPut,
  kDelete,
  kBegin,
  kBeginImmediate,
  kCommit,
  kRollback,
  kNumStatements,
};

constexpr std::array<const char*, kNumStatements> kStatementSql = {
    "SELECT v FROM kv WHERE k = ?1",
    "SELECT k, v FROM kv WHERE k >= ?1 AND k < ?2 ORDER BY k LIMIT ?3",
    "SELECT k, v FROM kv WHERE k >= ?1 ORDER BY k LIMIT ?2",
    "INSERT OR REPLACE INTO kv (k, v) VALUES (?1, ?2)",
    "DELETE FROM kv WHERE k = ?1",
    "BEGIN",
    "BEGIN IMMEDIATE",
    "COMMIT",
    "ROLLBACK",
};

// Busy and locked both mean "someone else is (or was) writing": retryable.
bool IsBusy(int rc) {
  int primary = rc & 0xff;
  return primary == SQLITE_BUSY || primary == SQLITE_LOCKED;
}

// One SQLite connection with its prepared statements. Used by one
// transaction at a time.
struct Connection {
  Connection() { statements.fill(nullptr); }
  ~Connection() {
    for (sqlite3_stmt* s : statements) sqlite3_finalize(s);
    sqlite3_close_v2(db);
  }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  sqlite3* db = nullptr;
  std::array<sqlite3_stmt*, kNumStatements> statements;
};

// Resets a cached statement and drops its bindings when a call is done with
// it: that closes its read cursor and stops it pointing at our buffers.
class StatementUse {
 public:
  explicit StatementUse(sqlite3_stmt* s) : s_(s) {}
  ~StatementUse() {
    sqlite3_reset(s_);
    sqlite3_clear_bindings(s_);
  }
  StatementUse(const StatementUse&) = delete;
  StatementUse& operator=(const StatementUse&) = delete;
  sqlite3_stmt* get() const { return s_; }

 private:
  sqlite3_stmt* s_;
};

// Binds bytes as a BLOB. A zero-length blob must be bound explicitly:
// sqlite3_bind_blob with no data would bind NULL. The bytes must outlive the
// statement's use (SQLITE_STATIC): StatementUse clears them.
int BindBytes(sqlite3_stmt* s, int index, std::string_view bytes) {
  if (bytes.empty()) return sqlite3_bind_zeroblob(s, index, 0);
  return sqlite3_bind_blob64(s, index, bytes.data(), bytes.size(), SQLITE_STATIC);
}

std::string ColumnBytes(sqlite3_stmt* s, int column) {
  const void* data = sqlite3_column_blob(s, column);
  int size = sqlite3_column_bytes(s, column);
  if (data == nullptr || size <= 0) return std::string();
  return std::string(static_cast<const char*>(data), static_cast<size_t>(size));
}

// One mutex per database file (by device and inode), shared by every store
// in this process that opens it. Committers take it so that threads of one
// process queue for the write lock instead of failing against each other.
std::shared_ptr<std::mutex> CommitMutexFor(dev_t dev, ino_t ino) {
  static std::mutex* registry_mu = new std::mutex;
  static auto* registry = new std::map<std::pair<dev_t, ino_t>, std::weak_ptr<std::mutex>>;
  std::lock_guard lock(*registry_mu);
  for (auto it = registry->begin(); it != registry->end();) {
    it = it->second.expired() ? registry->erase(it) : std::next(it);
  }
  std::weak_ptr<std::mutex>& slot = (*registry)[{dev, ino}];
  std::shared_ptr<std::mutex> mu = slot.lock();
  if (!mu) {
    mu = std::make_shared<std::mutex>();
    slot = mu;
  }
  return mu;
}

// What a store and its transactions share: the connection pool. Outlives the
// store while transactions are open. Thread-safe.
class SqliteShared {
 public:
  SqliteShared(std::string url, std::string path) : url_(std::move(url)), path_(std::move(path)) {}

  const std::string& url() const { return url_; }
  std::mutex& commit_mu() { return *commit_mu_; }
  void set_commit_mu(std::shared_ptr<std::mutex> mu) { commit_mu_ = std::move(mu); }

  // Opens a connection. `initialize` (the store's first connection) also
  // switches the file to WAL and creates the table.
  Result<std::unique_ptr<Connection>> Open(int flags, bool initialize) {
    auto conn = std::make_unique<Connection>();
    int rc = sqlite3_open_v2(path_.c_str(), &conn->db, flags | SQLITE_OPEN_NOMUTEX, nullptr);
    if ((rc & 0xff) == SQLITE_CANTOPEN) {
      // What CheckPath could not foresee (a read-only file system, an
      // unwritable directory for a privileged user...).
      return Unavailable("cannot open database file '" + path_ + "' (" + url_ +
                         "): " + sqlite3_errmsg(conn->db));
    }
    if (rc != SQLITE_OK) return Error(conn->db, rc, "opening the database");
    sqlite3_extended_result_codes(conn->db, 1);
    sqlite3_busy_timeout(conn->db, kBusyTimeoutMs);
    if (sqlite3_db_readonly(conn->db, "main") == 1) {
      return Unavailable("database file '" + path_ + "' (" + url_ + ") is read-only");
    }
    if (initialize) {
      std::string mode;
      rc = sqlite3_exec(
          conn->db, "PRAGMA journal_mode=WAL",
          [](void* out, int n, char** values, char**) {
            if (n > 0 && values[0] != nullptr) *static_cast<std::string*>(out) = values[0];
            return 0;
          },
          &mode, nullptr);
      if (rc != SQLITE_OK) return Error(conn->db, rc, "switching to WAL mode");
      if (mode != "wal") {
        // Still correct (rollback journal locking), only less concurrent.
        LogWarn("SQLite database " + url_ + " cannot use WAL mode (got '" + mode +
                "'); readers and the writer will block each other");
      }
      rc = sqlite3_exec(conn->db,
                        "CREATE TABLE IF NOT EXISTS kv (k BLOB PRIMARY KEY, v BLOB NOT NULL) "
                        "WITHOUT ROWID",
                        nullptr, nullptr, nullptr);
      if (rc != SQLITE_OK) return Error(conn->db, rc, "creating the kv table");
    }
    // In WAL mode, NORMAL syncs the WAL only at checkpoints: a committed
    // transaction survives a crash of the process (what we promise), though
    // the last ones may be lost if the machine loses power. FULL would add
    // an fsync to every metadata commit.
    rc = sqlite3_exec(conn->db, "PRAGMA synchronous=NORMAL", nullptr, nullptr, nullptr);
    if (rc != SQLITE_OK) return Error(conn->db, rc, "setting synchronous=NORMAL");
    for (size_t i = 0; i < kNumStatements; ++i) {
      rc = sqlite3_prepare_v3(conn->db, kStatementSql[i], -1, SQLITE_PREPARE_PERSISTENT,
                              &conn->statements[i], nullptr);
      if (rc != SQLITE_OK) return Error(conn->db, rc, "preparing statements");
    }
    return conn;
  }

  Result<std::unique_ptr<Connection>> Acquire() {
    {
      std::lock_guard lock(mu_);
      if (!idle_.empty()) {
        std::unique_ptr<Connection> conn = std::move(idle_.back());
        idle_.pop_back();
        return conn;
      }
    }
    return Open(SQLITE_OPEN_READWRITE, /*initialize=*/false);
  }

  // Takes back a connection that has no transaction open.
  void Release(std::unique_ptr<Connection> conn) {
    std::lock_guard lock(mu_);
    if (idle_.size() < kMaxIdleConnections) idle_.push_back(std::move(conn));
  }

  void AddIdle(std::unique_ptr<Connection> conn) { Release(std::move(conn)); }

  // kIo naming the URL, the step that failed and SQLite's message.
  Status Error(sqlite3* db, int rc, std::string_view what) const {
    const char* message = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    return IoError("SQLite error on " + url_ + " while " + std::string(what) + ": " + message +
                   " (code " + std::to_string(rc) + ")");
  }

  Status ConflictError() const {
    return Conflict("transaction conflict on " + url_ +
                    ": another transaction committed or is committing");
  }

 private:
  const std::string url_;
  const std::string path_;
  std::shared_ptr<std::mutex> commit_mu_;
  std::mutex mu_;
  std::vector<std::unique_ptr<Connection>> idle_;  // guarded by mu_
};

class SqliteTxn final : public BufferedKvTxn {
 public:
  // An exclusive transaction holds this process's commit mutex from start to
  // end and takes SQLite's write lock at its first read, so no writer of
  // this process can make it conflict: retries after a conflict use it.
  SqliteTxn(std::shared_ptr<SqliteShared> shared, bool exclusive) : shared_(std::move(shared)) {
    if (exclusive) exclusive_lock_ = std::unique_lock(shared_->commit_mu());
  }
  ~SqliteTxn() override { End(); }

 protected:
  Result<std::optional<std::string>> SnapshotGet(std::string_view key) override {
    RETURN_IF_ERROR(StartRead());
    StatementUse use(conn_->statements[kGet]);
    sqlite3_stmt* s = use.get();
    int rc = BindBytes(s, 1, key);
    if (rc == SQLITE_OK) rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) return std::optional<std::string>(ColumnBytes(s, 0));
    if (rc == SQLITE_DONE) return std::optional<std::string>();
    return Fail(ReadError(rc, "reading a key"));
  }

  Result<ScanResult> SnapshotScan(std::string_view begin, std::string_view end,
                                  size_t limit) override {
    RETURN_IF_ERROR(StartRead());
    StatementUse use(conn_->statements[end.empty() ? kScanAll : kScanTo]);
    sqlite3_stmt* s = use.get();
    int rc = BindBytes(s, 1, begin);
    int limit_index = 2;
    if (!end.empty()) {
      if (rc == SQLITE_OK) rc = BindBytes(s, 2, end);
      limit_index = 3;
    }
    // One row past the limit tells whether there is more; -1 means no limit.
    int64_t sql_limit = -1;
    if (limit != 0 && limit < static_cast<size_t>(INT64_MAX)) {
      sql_limit = static_cast<int64_t>(limit) + 1;
    }
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(s, limit_index, sql_limit);
    ScanResult out;
    while (rc == SQLITE_OK || rc == SQLITE_ROW) {
      rc = sqlite3_step(s);
      if (rc == SQLITE_ROW) out.items.push_back(KeyValue{ColumnBytes(s, 0), ColumnBytes(s, 1)});
    }
    if (rc != SQLITE_DONE) return Fail(ReadError(rc, "scanning keys"));
    if (limit != 0 && out.items.size() > limit) {
      out.items.pop_back();
      out.more = true;
    }
    return out;
  }

  Status CommitWrites(WriteBuffer writes, Increments) override {
    RETURN_IF_ERROR(failed_);
    if (writes.empty()) {
      End();  // a read-only transaction just drops its snapshot
      return Status::Ok();
    }
    std::unique_lock<std::mutex> lock;
    if (!exclusive_lock_.owns_lock()) lock = std::unique_lock(shared_->commit_mu());
    if (!conn_) {
      // Blind writes: nothing was read, so there is nothing to conflict
      // with; take the write lock up front (waiting up to the busy timeout).
      ASSIGN_OR_RETURN(conn_, shared_->Acquire());
      int rc = Step(kBeginImmediate);
      if (rc != SQLITE_DONE) return Abort(rc, "starting a write transaction");
    }
    for (const auto& [key, value] : writes) {
      int rc = Write(key, value);
      if (rc != SQLITE_DONE) return Abort(rc, value ? "writing a key" : "deleting a key");
    }
    int rc = Step(kCommit);
    if (rc != SQLITE_DONE) return Abort(rc, "committing");
    End();
    return Status::Ok();
  }

 private:
  // Opens the SQLite transaction at the first read. SQLite takes the WAL
  // snapshot at the first SELECT after a deferred BEGIN, and keeps it until
  // the transaction ends.
  Status StartRead() {
    RETURN_IF_ERROR(failed_);
    if (conn_) return Status::Ok();
    Result<std::unique_ptr<Connection>> conn = shared_->Acquire();
    if (!conn.ok()) return Fail(conn.status());
    conn_ = std::move(conn).value();
    int rc = Step(exclusive_lock_.owns_lock() ? kBeginImmediate : kBegin);
    if (rc != SQLITE_DONE) return Fail(ReadError(rc, "starting a transaction"));
    return Status::Ok();
  }

  // Statement helpers return SQLite's code with the statement already reset:
  // Abort and End hand the connection to other threads, so a statement still
  // in scope past them would be reset concurrently with the connection's next
  // user (SQLite then lets that user's stale snapshot commit: lost updates).
  int Step(StatementId id) {
    StatementUse use(conn_->statements[id]);
    return sqlite3_step(use.get());
  }

  int Write(std::string_view key, const std::optional<std::string>& value) {
    StatementUse use(conn_->statements[value ? kPut : kDelete]);
    sqlite3_stmt* s = use.get();
    int rc = BindBytes(s, 1, key);
    if (rc == SQLITE_OK && value) rc = BindBytes(s, 2, *value);
    if (rc == SQLITE_OK) rc = sqlite3_step(s);
    return rc;
  }

  // A busy read has already waited for the busy timeout: report the database
  // as unavailable rather than as a conflict (reads never conflict).
  Status ReadError(int rc, std::string_view what) const {
    if (IsBusy(rc)) {
      return Unavailable("SQLite database " + shared_->url() + " stayed locked for " +
                         std::to_string(kBusyTimeoutMs / 1000) + " s while " + std::string(what));
    }
    return shared_->Error(conn_->db, rc, what);
  }

  // Ends a failed commit: busy/locked is a conflict, anything else kIo.
  Status Abort(int rc, std::string_view what) {
    Status s = IsBusy(rc) ? shared_->ConflictError() : shared_->Error(conn_->db, rc, what);
    End();
    return s;
  }

  // Remembers the first error: after it SQLite may have rolled back, and a
  // later read would silently start a new snapshot.
  Status Fail(Status s) {
    if (failed_.ok()) failed_ = s;
    return s;
  }

  // Rolls back whatever is open and returns the connection to the pool (or
  // closes it if it cannot be brought back to a clean state).
  void End() {
    if (!conn_) return;
    if (!sqlite3_get_autocommit(conn_->db) && Step(kRollback) != SQLITE_DONE) {
      LogWarn("SQLite rollback failed on " + shared_->url() + ": " + sqlite3_errmsg(conn_->db));
      conn_.reset();
      return;
    }
    shared_->Release(std::move(conn_));
  }

  std::shared_ptr<SqliteShared> shared_;
  std::unique_ptr<Connection> conn_;  // set from the first read (or commit) on
  Status failed_;
  std::unique_lock<std::mutex> exclusive_lock_;  // held for the whole transaction if exclusive
};

class SqliteKvStore final : public KvStore {
 public:
  explicit SqliteKvStore(std::shared_ptr<SqliteShared> shared) : shared_(std::move(shared)) {}

  std::string Url() const override { return shared_->url(); }

  Result<std::unique_ptr<KvTxn>> Begin() override {
    return std::unique_ptr<KvTxn>(std::make_unique<SqliteTxn>(shared_, false));
  }
  Result<std::unique_ptr<KvTxn>> BeginExclusive() override {
    return std::unique_ptr<KvTxn>(std::make_unique<SqliteTxn>(shared_, true));
  }

 private:
  std::shared_ptr<SqliteShared> shared_;
};

// Checks what SQLite would report with an obscure message: a missing or
// read-only directory or file. SQLite needs to write the directory too, for
// the -wal and -shm files next to the database.
Status CheckPath(const std::string& url, const std::string& path, const KvOptions& options) {
  std::string dir = std::filesystem::path(path).parent_path().string();
  if (dir.empty()) dir = ".";
  struct stat st;
  if (stat(path.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) {
      return Invalid("metadata URL '" + url + "' names a directory, not a database file");
    }
    if (access(path.c_str(), R_OK | W_OK) != 0) {
      return Unavailable("database file '" + path + "' (" + url + ") is not readable and writable: " +
                         std::strerror(errno));
    }
  } else if (errno == ENOENT) {
    if (!options.create_if_missing) {
      return NotFound("database file '" + path + "' does not exist (run 'tessera format' first?)");
    }
  } else {
    return Unavailable("cannot access database file '" + path + "' (" + url +
                       "): " + std::strerror(errno));
  }
  if (stat(dir.c_str(), &st) != 0) {
    return Unavailable("directory '" + dir + "' for database " + url +
                       " cannot be used: " + std::strerror(errno));
  }
  if (!S_ISDIR(st.st_mode)) {
    return Unavailable("'" + dir + "' (for database " + url + ") is not a directory");
  }
  if (access(dir.c_str(), W_OK | X_OK) != 0) {
    return Unavailable("directory '" + dir + "' for database " + url +
                       " is not writable: " + std::strerror(errno));
  }
  return Status::Ok();
}

}  // namespace

Result<std::unique_ptr<KvStore>> OpenSqliteKv(std::string_view url, std::string_view path,
                                              const KvOptions& options) {
  std::string url_str(url);
  std::string path_str(path);
  if (path_str.empty()) {
    return Invalid("metadata URL '" + url_str + "' has no file path (expected sqlite3://PATH)");
  }
  RETURN_IF_ERROR(CheckPath(url_str, path_str, options));

  auto shared = std::make_shared<SqliteShared>(url_str, path_str);
  int flags = SQLITE_OPEN_READWRITE | (options.create_if_missing ? SQLITE_OPEN_CREATE : 0);
  ASSIGN_OR_RETURN(std::unique_ptr<Connection> first, shared->Open(flags, /*initialize=*/true));
  struct stat st;
  if (stat(path_str.c_str(), &st) != 0) {
    return Unavailable("database file '" + path_str + "' (" + url_str +
                       ") vanished after opening: " + std::strerror(errno));
  }
  shared->set_commit_mu(CommitMutexFor(st.st_dev, st.st_ino));
  shared->AddIdle(std::move(first));
  return std::unique_ptr<KvStore>(std::make_unique<SqliteKvStore>(std::move(shared)));
}

}  // namespace tessera
