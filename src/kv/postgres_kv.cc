#include "kv/postgres_kv.h"

#include <libpq-fe.h>

#include <array>
#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/coding.h"
#include "common/log.h"
#include "kv/buffered_txn.h"

namespace tessera {
namespace {

// Bounds every statement, lock waits included, so that a stuck server or a
// forgotten lock holder surfaces as kUnavailable instead of a hang. Commits
// only wait for other commits, which are short.
constexpr const char* kStatementTimeout = "30s";
// Client-side limits, for a server or network that stops answering (the
// statement timeout is enforced by the server): connect within 10 s; drop a
// TCP connection whose sent data stays unacknowledged for 30 s or whose idle
// peer fails keepalive probes. The URL may override each of them.
constexpr std::array<const char*, 6> kClientKeys = {"connect_timeout",  "keepalives",
                                                    "keepalives_idle",  "keepalives_interval",
                                                    "keepalives_count", "tcp_user_timeout"};
constexpr std::array<const char*, 6> kClientValues = {"10", "1", "30", "10", "3", "30000"};
// Idle connections kept for reuse; more are closed when returned.
constexpr size_t kMaxIdleConnections = 16;

constexpr unsigned kByteaOid = 17;
constexpr unsigned kInt8Oid = 20;
constexpr unsigned kByteaArrayOid = 1001;

constexpr unsigned kInt8ArrayOid = 1016;

struct StatementDef {
  const char* name;
  const char* sql;
  int nparams;
  std::array<unsigned, 8> types;
};

enum StatementId : size_t {
  kGet,
  kBatchGet,
  kScanTo,
  kScanAll,
  kCommit,
  kFoldAdds,
  kNumStatements
};

// Counters (KvTxn::Increment) keep their base value in tessera_kv and every
// addition as a row of tessera_kv_add, so that transactions adding to one
// counter insert rows side by side instead of updating one row, which
// serializable isolation would fail. A row's generation g is the id of the
// transaction that last put it; additions carry the generation they add
// to, so a later put (a new generation) supersedes them without reading
// them. Reads add the additions of the current generation; FoldAdds moves
// additions into the base values now and then. Only 8-byte values can be
// counters: reading other keys leaves tessera_kv_add alone, which matters
// because serializable isolation makes every read there conflict with the
// next addition that lands on the same index page.
#define TESSERA_ADDS                                                     \
  "CASE WHEN length(kv.v) = 8 THEN (SELECT sum(a.d)::bigint FROM "       \
  "tessera_kv_add a WHERE a.k = kv.k AND a.g = kv.g) END"

// LIMIT NULL means no limit.
constexpr std::array<StatementDef, kNumStatements> kStatements = {{
    {"tessera_get", "SELECT v, " TESSERA_ADDS " FROM tessera_kv kv WHERE k = $1", 1, {kByteaOid}},
    {"tessera_batch_get", "SELECT k, v, " TESSERA_ADDS " FROM tessera_kv kv WHERE k = ANY($1)", 1,
     {kByteaArrayOid}},
    {"tessera_scan_to",
     "SELECT k, v, " TESSERA_ADDS " FROM tessera_kv kv WHERE k >= $1 AND k < $2 ORDER BY k LIMIT $3",
     3,
     {kByteaOid, kByteaOid, kInt8Oid}},
    {"tessera_scan_all",
     "SELECT k, v, " TESSERA_ADDS " FROM tessera_kv kv WHERE k >= $1 ORDER BY k LIMIT $2",
     2,
     {kByteaOid, kInt8Oid}},
    // A whole commit in one statement (one round trip). $1/$2: keys and
    // values to put, $3: keys to delete, $4/$5: counters and what to add to
    // them. A key is in at most one of $1, $3 and $4. Adding to an absent
    // counter creates its base row (0) first. $6/$7: keys taken from the
    // read cache (PgReadCache) with the values they were found with, $8:
    // keys found absent there; when any of them differs, the statement
    // fails as a serialization failure (a conflict, retried). Every part
    // reads the state from before the statement's own writes.
    {"tessera_commit",
     "WITH stale AS (SELECT 1 FROM unnest($6::bytea[], $7::bytea[]) AS c(k, v) "
     "LEFT JOIN tessera_kv kv ON kv.k = c.k WHERE kv.v IS DISTINCT FROM c.v "
     "UNION ALL SELECT 1 FROM tessera_kv WHERE k = ANY($8)), "
     "del AS (DELETE FROM tessera_kv WHERE k = ANY($3)), "
     "ins AS (INSERT INTO tessera_kv (k, v, g) "
     "SELECT u.k, u.v, txid_current() FROM unnest($1::bytea[], $2::bytea[]) AS u(k, v) "
     "ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v, g = EXCLUDED.g), "
     "base AS (INSERT INTO tessera_kv (k, v, g) "
     "SELECT k, '\\x0000000000000000'::bytea, txid_current() FROM unnest($4::bytea[]) AS k "
     "ON CONFLICT (k) DO NOTHING), "
     "adds AS (INSERT INTO tessera_kv_add (k, g, d) "
     "SELECT u.k, COALESCE(kv.g, txid_current()), u.d "
     "FROM unnest($4::bytea[], $5::int8[]) AS u(k, d) LEFT JOIN tessera_kv kv ON kv.k = u.k) "
     "SELECT CASE WHEN EXISTS (SELECT 1 FROM stale) THEN tessera_stale_read() ELSE 1 END",
     8,
     {kByteaArrayOid, kByteaArrayOid, kByteaArrayOid, kByteaArrayOid, kInt8ArrayOid,
      kByteaArrayOid, kByteaArrayOid, kByteaArrayOid}},
    // Moves the additions of up to $1 counters into their base values
    // (additions of a superseded generation just go).
    {"tessera_fold_adds",
     "WITH keys AS (SELECT DISTINCT k FROM tessera_kv_add LIMIT $1), "
     "gone AS (DELETE FROM tessera_kv_add a USING keys WHERE a.k = keys.k RETURNING a.k, a.g, a.d), "
     "sums AS (SELECT k, g, sum(d)::bigint AS d FROM gone GROUP BY k, g) "
     "UPDATE tessera_kv kv SET v = int8send(('x' || encode(kv.v, 'hex'))::bit(64)::bigint + sums.d) "
     "FROM sums WHERE kv.k = sums.k AND kv.g = sums.g AND length(kv.v) = 8",
     1,
     {kInt8Oid}},
}};

#undef TESSERA_ADDS

// Stores made before counters took additions lack the generation column.
constexpr const char* kSchemaSql =
    "CREATE TABLE IF NOT EXISTS tessera_kv (k bytea PRIMARY KEY, v bytea NOT NULL, "
    "g bigint NOT NULL DEFAULT 0);"
    "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE "
    "table_schema = current_schema() AND table_name = 'tessera_kv' AND column_name = 'g') "
    "THEN ALTER TABLE tessera_kv ADD COLUMN g bigint NOT NULL DEFAULT 0; END IF; END $$;"
    "CREATE TABLE IF NOT EXISTS tessera_kv_add (k bytea NOT NULL, g bigint NOT NULL, "
    "d bigint NOT NULL);"
    "CREATE INDEX IF NOT EXISTS tessera_kv_add_k ON tessera_kv_add (k);"
    "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_proc WHERE proname = 'tessera_stale_read' AND "
    "pronamespace = current_schema()::regnamespace) THEN "
    "CREATE FUNCTION tessera_stale_read() RETURNS int LANGUAGE plpgsql AS $f$ BEGIN "
    "RAISE EXCEPTION USING ERRCODE = 'serialization_failure', "
    "MESSAGE = 'a cached read changed before the commit'; END $f$; END IF; END $$";

using PgResult = std::unique_ptr<PGresult, decltype(&PQclear)>;

struct Connection {
  ~Connection() { PQfinish(conn); }
  PGconn* conn = nullptr;
  // A ROLLBACK was sent and its answer not read yet (see PgTxn::End).
  bool rolling_back = false;
  // Left in a state nobody should reuse (a pipeline cut short).
  bool broken = false;
};

// One statement parameter: bytes sent in binary, or text (for the limit),
// or NULL.
struct Param {
  std::optional<std::string_view> value;
  bool binary = true;
};

void PutInt32(std::string* out, uint32_t v) {
  const char b[4] = {char(v >> 24), char(v >> 16), char(v >> 8), char(v)};
  out->append(b, 4);
}

// A bytea[] in PostgreSQL's binary array format: dimensions, flags, the
// element type, then each element as length + bytes.
template <typename Strings>
std::string EncodeByteaArray(const Strings& items) {
  std::string out;
  PutInt32(&out, items.empty() ? 0 : 1);  // dimensions
  PutInt32(&out, 0);                       // no NULL elements
  PutInt32(&out, kByteaOid);
  if (!items.empty()) {
    PutInt32(&out, static_cast<uint32_t>(items.size()));
    PutInt32(&out, 1);  // lower bound
  }
  for (std::string_view item : items) {
    PutInt32(&out, static_cast<uint32_t>(item.size()));
    out.append(item);
  }
  return out;
}

// An int8[] in the same format.
std::string EncodeInt8Array(const std::vector<int64_t>& items) {
  std::string out;
  PutInt32(&out, items.empty() ? 0 : 1);
  PutInt32(&out, 0);
  PutInt32(&out, kInt8Oid);
  if (!items.empty()) {
    PutInt32(&out, static_cast<uint32_t>(items.size()));
    PutInt32(&out, 1);
  }
  for (int64_t item : items) {
    PutInt32(&out, 8);
    PutBig64(&out, static_cast<uint64_t>(item));
  }
  return out;
}

// Pending counter additions this process commits before it folds a batch of
// them (anyone's) into the counters' base values, and the batch's size.
constexpr int64_t kAddsPerFold = 1000;
constexpr const char* kFoldBatch = "64";

// Values this process read or wrote lately. A transaction that may write
// takes its point reads from here when it can, saving a round trip each
// (the lookup before a create reads the directory and the absent name; the
// create finds both here). Its commit checks every such value against the
// table in the same statement, so a stale one costs a retry, never a wrong
// result. Counters (8-byte values) are never kept: additions change their
// value without changing their row.
class PgReadCache {
 public:
  static constexpr size_t kMaxKeys = 100'000;

  std::optional<std::optional<std::string>> Find(const std::string& key) {
    std::lock_guard lock(mu_);
    auto it = map_.find(key);
    if (it == map_.end()) return std::nullopt;
    return it->second;
  }

  void Note(const std::string& key, const std::optional<std::string>& value) {
    std::lock_guard lock(mu_);
    if (value && value->size() == 8) {
      map_.erase(key);
      return;
    }
    auto [it, added] = map_.insert_or_assign(key, value);
    if (added && map_.size() > kMaxKeys) map_.clear();  // bounded; refilled by the next reads
  }

  void Forget(const std::string& key) {
    std::lock_guard lock(mu_);
    map_.erase(key);
  }

 private:
  std::mutex mu_;
  std::unordered_map<std::string, std::optional<std::string>> map_;
};

class PgShared {
 public:
  PgShared(std::string url, std::string redacted)
      : url_(std::move(url)), redacted_(std::move(redacted)) {}

  const std::string& url() const { return redacted_; }
  std::mutex& commit_mu() { return commit_mu_; }
  PgReadCache& cache() { return cache_; }

  // Connects; `initialize` (a store's first connection) also creates the
  // tables, which the statements prepared here need.
  Result<std::unique_ptr<Connection>> Open(bool initialize = false) {
    auto c = std::make_unique<Connection>();
    // Entries before dbname are defaults that the expanded URL overrides.
    std::vector<const char*> keys(kClientKeys.begin(), kClientKeys.end());
    std::vector<const char*> values(kClientValues.begin(), kClientValues.end());
    keys.push_back("dbname");
    values.push_back(url_.c_str());
    keys.push_back(nullptr);
    values.push_back(nullptr);
    c->conn = PQconnectdbParams(keys.data(), values.data(), /*expand_dbname=*/1);
    if (c->conn == nullptr) return Unavailable("cannot allocate a connection to " + redacted_);
    if (PQstatus(c->conn) != CONNECTION_OK) {
      return Unavailable("cannot connect to " + redacted_ + ": " + Trim(PQerrorMessage(c->conn)));
    }
    // Serializable isolation locks what a sequential scan read as the whole
    // table, so that any write by another transaction conflicts with it: the
    // planner's choice for a small table. Index scans lock pages instead.
    std::string set = std::string("SET statement_timeout = '") + kStatementTimeout +
                      "'; SET enable_seqscan = off; SET plan_cache_mode = force_generic_plan";
    RETURN_IF_ERROR(Exec(*c, set.c_str(), "setting the statement timeout"));
    if (initialize) {
      // Two clients creating the tables at once can collide in the catalog
      // (IF NOT EXISTS is not atomic); the second attempt then finds them.
      Status s = Exec(*c, kSchemaSql, "creating the tables");
      if (!s.ok() && !s.Is(StatusCode::kUnavailable))
        s = Exec(*c, kSchemaSql, "creating the tables");
      RETURN_IF_ERROR(s);
    }
    for (const StatementDef& def : kStatements) {
      PgResult r(PQprepare(c->conn, def.name, def.sql, def.nparams, def.types.data()), PQclear);
      RETURN_IF_ERROR(Check(*c, r.get(), "preparing statements"));
    }
    return c;
  }

  // An idle connection, or a new one.
  Result<std::unique_ptr<Connection>> Acquire() {
    {
      std::lock_guard lock(mu_);
      while (!idle_.empty()) {
        std::unique_ptr<Connection> c = std::move(idle_.back());
        idle_.pop_back();
        if (FinishRollback(*c) && PQstatus(c->conn) == CONNECTION_OK) return c;
      }
    }
    return Open();
  }

  // Reads the answer to a ROLLBACK sent without waiting; false when the
  // connection did not come back to a clean state.
  static bool FinishRollback(Connection& c) {
    if (!c.rolling_back) return true;
    c.rolling_back = false;
    while (PGresult* r = PQgetResult(c.conn)) PQclear(r);
    return PQtransactionStatus(c.conn) == PQTRANS_IDLE;
  }

  // Takes back a connection with no transaction open (or one whose
  // ROLLBACK is on its way).
  void Release(std::unique_ptr<Connection> c) {
    if (c->broken || PQstatus(c->conn) != CONNECTION_OK) return;
    if (!c->rolling_back && PQtransactionStatus(c->conn) != PQTRANS_IDLE) return;
    std::lock_guard lock(mu_);
    if (idle_.size() < kMaxIdleConnections) idle_.push_back(std::move(c));
  }

  // Counts additions committed by this process; every kAddsPerFold of
  // them, folds pending additions into their counters so that reads of a
  // counter stay one short index lookup. The fold is one statement of its
  // own that keeps every counter's value, so it can run beside anything;
  // when it fails, the next one catches up.
  void NoteAdds(size_t n) {
    if (adds_since_fold_.fetch_add(static_cast<int64_t>(n)) + static_cast<int64_t>(n) <
        kAddsPerFold) {
      return;
    }
    adds_since_fold_.store(0);
    Result<std::unique_ptr<Connection>> c = Acquire();
    if (!c.ok()) return;
    const char* values[1] = {kFoldBatch};
    PgResult r(PQexecPrepared((*c)->conn, kStatements[kFoldAdds].name, 1, values, nullptr,
                              nullptr, 0),
               PQclear);
    Status s = Check(**c, r.get(), "folding counter additions");
    if (!s.ok()) LogWarn(s.ToString());
    Release(std::move(*c));
  }

  // Runs SQL without parameters.
  Status Exec(Connection& c, const char* sql, std::string_view what) const {
    PgResult r(PQexec(c.conn, sql), PQclear);
    return Check(c, r.get(), what);
  }

  // Runs [BEGIN,] one prepared statement [, COMMIT] in one round trip
  // (libpq's pipeline mode) and returns the statement's result, or the first
  // error. After an error the rest is skipped by the server.
  Result<PgResult> Pipeline(Connection& c, bool begin, StatementId id,
                            const std::vector<Param>& params, bool commit,
                            std::string_view what) const {
    PGconn* conn = c.conn;
    std::vector<const char*> values;
    std::vector<int> lengths;
    std::vector<int> formats;
    for (const Param& p : params) {
      // A zero-length bytea still needs a non-null pointer (null means NULL).
      values.push_back(p.value ? (p.value->empty() ? "" : p.value->data()) : nullptr);
      lengths.push_back(p.value ? static_cast<int>(p.value->size()) : 0);
      formats.push_back(p.binary ? 1 : 0);
    }
    auto cut = [&](std::string_view when) {
      c.broken = true;
      return Unavailable("PostgreSQL connection to " + redacted_ + " failed while " +
                         std::string(what) + " (" + std::string(when) + "): " +
                         Trim(PQerrorMessage(conn)));
    };
    if (PQenterPipelineMode(conn) != 1) return cut("entering pipeline mode");
    bool sent = !begin || PQsendQueryParams(conn, "BEGIN ISOLATION LEVEL SERIALIZABLE", 0,
                                            nullptr, nullptr, nullptr, nullptr, 0) == 1;
    sent = sent && PQsendQueryPrepared(conn, kStatements[id].name, static_cast<int>(values.size()),
                                       values.data(), lengths.data(), formats.data(),
                                       /*resultFormat=*/1) == 1;
    sent = sent && (!commit || PQsendQueryParams(conn, "COMMIT", 0, nullptr, nullptr, nullptr,
                                                 nullptr, 0) == 1);
    if (!sent || PQpipelineSync(conn) != 1) return cut("sending");
    const int queries = (begin ? 1 : 0) + 1 + (commit ? 1 : 0);
    const int statement = begin ? 1 : 0;
    Status first_error;
    PgResult result(nullptr, PQclear);
    for (int q = 0; q < queries; ++q) {
      PgResult r(PQgetResult(conn), PQclear);
      if (!r) return cut("reading answers");
      if (PQresultStatus(r.get()) != PGRES_PIPELINE_ABORTED && first_error.ok()) {
        first_error = Check(c, r.get(), what);
      }
      while (PGresult* end = PQgetResult(conn)) PQclear(end);  // the query's end marker
      if (q == statement) result = std::move(r);
    }
    PgResult sync(PQgetResult(conn), PQclear);
    if (!sync || PQresultStatus(sync.get()) != PGRES_PIPELINE_SYNC) return cut("syncing");
    if (PQexitPipelineMode(conn) != 1) return cut("leaving pipeline mode");
    if (!first_error.ok()) return first_error;
    return result;
  }

  // Maps a result to a status: serialization failures and deadlocks are
  // conflicts; a broken connection or a timeout is kUnavailable.
  Status Check(Connection& c, PGresult* r, std::string_view what) const {
    ExecStatusType st = r != nullptr ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) return Status::Ok();
    const char* state = r != nullptr ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
    std::string code = state != nullptr ? state : "";
    std::string message = r != nullptr ? Trim(PQresultErrorMessage(r)) : "";
    if (message.empty()) message = Trim(PQerrorMessage(c.conn));
    std::string text = "PostgreSQL error on " + redacted_ + " while " + std::string(what) + ": " +
                       message + (code.empty() ? "" : " (SQLSTATE " + code + ")");
    if (code == "40001" || code == "40P01") return Conflict(text);
    if (PQstatus(c.conn) != CONNECTION_OK || code == "57014" || code.starts_with("08") ||
        code == "57P01" || code == "57P03") {
      return Unavailable(text);
    }
    return IoError(text);
  }

  static std::string Trim(std::string s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
    return s;
  }

 private:
  const std::string url_;
  const std::string redacted_;
  std::mutex commit_mu_;
  PgReadCache cache_;
  std::atomic<int64_t> adds_since_fold_{0};
  std::mutex mu_;
  std::vector<std::unique_ptr<Connection>> idle_;  // guarded by mu_
};

class PgTxn final : public BufferedKvTxn {
 public:
  // An exclusive transaction holds this store's commit mutex throughout, so
  // no other transaction of this process commits between its snapshot and
  // its commit: retries after a conflict use it.
  // Exclusive transactions (which may write) also read the cache.
  PgTxn(std::shared_ptr<PgShared> shared, bool exclusive)
      : shared_(std::move(shared)), use_cache_(exclusive) {
    if (exclusive) exclusive_lock_ = std::unique_lock(shared_->commit_mu());
  }
  ~PgTxn() override { End(); }

 protected:
  Result<std::optional<std::string>> SnapshotGet(std::string_view key) override {
    const std::string k(key);
    if (auto cached = FromCache(k)) return std::move(*cached);
    ASSIGN_OR_RETURN(PgResult r, Run(kGet, {Param{key}}, "reading a key"));
    std::optional<std::string> value;
    if (PQntuples(r.get()) != 0) value = Value(r.get(), 0, 0);
    shared_->cache().Note(k, value);
    return value;
  }

  Result<std::vector<std::optional<std::string>>> SnapshotBatchGet(
      const std::vector<std::string>& keys) override {
    std::vector<std::optional<std::string>> out(keys.size());
    std::vector<std::string> fetch;
    std::vector<size_t> fetch_at;
    for (size_t i = 0; i < keys.size(); ++i) {
      if (auto cached = FromCache(keys[i])) {
        out[i] = std::move(*cached);
      } else {
        fetch.push_back(keys[i]);
        fetch_at.push_back(i);
      }
    }
    if (fetch.empty()) return out;
    std::string array = EncodeByteaArray(fetch);
    ASSIGN_OR_RETURN(PgResult r, Run(kBatchGet, {Param{array}}, "reading keys"));
    std::map<std::string, std::string, std::less<>> found;
    for (int i = 0; i < PQntuples(r.get()); ++i) {
      found.emplace(Bytes(r.get(), i, 0), Value(r.get(), i, 1));
    }
    for (size_t j = 0; j < fetch.size(); ++j) {
      auto it = found.find(fetch[j]);
      if (it != found.end()) out[fetch_at[j]] = it->second;
      shared_->cache().Note(fetch[j], out[fetch_at[j]]);
    }
    return out;
  }

  Result<ScanResult> SnapshotScan(std::string_view begin, std::string_view end,
                                  size_t limit) override {
    // One row past the limit tells whether there is more.
    std::string sql_limit = std::to_string(limit + 1);
    Param lim{limit == 0 ? std::nullopt : std::optional<std::string_view>(sql_limit), false};
    Result<PgResult> r = end.empty()
                             ? Run(kScanAll, {Param{begin}, lim}, "scanning keys")
                             : Run(kScanTo, {Param{begin}, Param{end}, lim}, "scanning keys");
    RETURN_IF_ERROR(r.status());
    PGresult* res = r->get();
    ScanResult out;
    int rows = PQntuples(res);
    out.items.reserve(static_cast<size_t>(rows));
    for (int i = 0; i < rows; ++i) {
      out.items.push_back(KeyValue{Bytes(res, i, 0), Value(res, i, 1)});
      shared_->cache().Note(out.items.back().key, out.items.back().value);
    }
    if (limit != 0 && out.items.size() > limit) {
      out.items.pop_back();
      out.more = true;
    }
    return out;
  }

  bool AppliesIncrements() const override { return true; }

  Status CommitWrites(WriteBuffer writes, Increments increments) override {
    RETURN_IF_ERROR(failed_);
    if (writes.empty() && increments.empty() && cached_reads_.empty()) {
      End();  // a read-only transaction just drops its snapshot
      return Status::Ok();
    }
    std::unique_lock<std::mutex> lock;
    if (!exclusive_lock_.owns_lock()) lock = std::unique_lock(shared_->commit_mu());
    // Serializable isolation fails the commit (40001) when it would not be
    // equivalent to running the transactions one after the other. Blind
    // writes open the transaction in the same round trip.
    std::vector<std::string_view> put_keys, put_values, delete_keys, add_keys;
    std::vector<int64_t> add_deltas;
    for (const auto& [key, delta] : increments) {
      add_keys.push_back(key);
      add_deltas.push_back(delta);
    }
    for (const auto& [key, value] : writes) {
      if (value) {
        put_keys.push_back(key);
        put_values.push_back(*value);
      } else {
        delete_keys.push_back(key);
      }
    }
    Status s = RunCommit(put_keys, put_values, delete_keys, add_keys, add_deltas);
    if (s.ok()) {
      for (const auto& [key, value] : writes) shared_->cache().Note(key, value);
      for (const auto& [key, delta] : increments) shared_->cache().Forget(key);
      if (!add_keys.empty()) shared_->NoteAdds(add_keys.size());
    }
    return s;
  }

  // A body that read the cache and then failed: the failure counts only if
  // what it read still holds (the same statement, writing nothing).
  Status VerifyReads() override {
    if (cached_reads_.empty()) return Status::Ok();
    return RunCommit({}, {}, {}, {}, {});
  }

 private:
  // Runs a statement in the transaction; the first one also opens it (in
  // the same round trip). A pooled connection may have been cut since it
  // was last used (server restart, idle timeout): a transaction's first
  // read is tried once more on a fresh connection before reporting
  // kUnavailable, which is safe because nothing has run yet.
  Result<PgResult> Run(StatementId id, std::initializer_list<Param> params, std::string_view what,
                       bool commit = false) {
    RETURN_IF_ERROR(failed_);
    const std::vector<Param> list(params);
    for (int attempt = 0;; ++attempt) {
      if (!conn_) {
        Result<std::unique_ptr<Connection>> c = shared_->Acquire();
        if (!c.ok()) return Fail(c.status());
        conn_ = std::move(c).value();
      }
      const bool begin = !begun_;
      Result<PgResult> r = shared_->Pipeline(*conn_, begin, id, list, commit, what);
      if (r.ok()) {
        begun_ = true;
        return r;
      }
      if (begin && !commit && attempt == 0 && r.status().Is(StatusCode::kUnavailable)) {
        conn_.reset();
        continue;
      }
      begun_ = true;  // possibly open: End() rolls it back
      return Fail(r.status());
    }
  }

  // A value from the cache, remembered for the commit's check.
  std::optional<std::optional<std::string>> FromCache(const std::string& key) {
    if (!use_cache_) return std::nullopt;
    auto cached = shared_->cache().Find(key);
    if (cached) cached_reads_.emplace_back(key, *cached);
    return cached;
  }

  // The commit statement, with the check of the cached reads; commits (or
  // ends) the transaction. After a failure nothing this transaction took
  // from the cache is trusted any more.
  Status RunCommit(const std::vector<std::string_view>& put_keys,
                   const std::vector<std::string_view>& put_values,
                   const std::vector<std::string_view>& delete_keys,
                   const std::vector<std::string_view>& add_keys,
                   const std::vector<int64_t>& add_deltas) {
    std::vector<std::string_view> seen_keys, seen_values, absent_keys;
    for (const auto& [key, value] : cached_reads_) {
      if (value) {
        seen_keys.push_back(key);
        seen_values.push_back(*value);
      } else {
        absent_keys.push_back(key);
      }
    }
    std::string k = EncodeByteaArray(put_keys), v = EncodeByteaArray(put_values),
                d = EncodeByteaArray(delete_keys), ak = EncodeByteaArray(add_keys),
                ad = EncodeInt8Array(add_deltas), sk = EncodeByteaArray(seen_keys),
                sv = EncodeByteaArray(seen_values), ab = EncodeByteaArray(absent_keys);
    // Not retried on a fresh connection: a commit whose answer was lost
    // may have been applied (WithTransaction decides what to do).
    Status s = Run(kCommit,
                   {Param{k}, Param{v}, Param{d}, Param{ak}, Param{ad}, Param{sk}, Param{sv},
                    Param{ab}},
                   "committing", /*commit=*/true)
                   .status();
    End();
    if (!s.ok()) {
      for (const auto& [key, value] : cached_reads_) shared_->cache().Forget(key);
    }
    return s;
  }

  static std::string Bytes(PGresult* r, int row, int col) {
    return std::string(PQgetvalue(r, row, col), static_cast<size_t>(PQgetlength(r, row, col)));
  }
  // The value in column `col`, plus the pending additions in the next
  // column (NULL: none) when it is a counter.
  static std::string Value(PGresult* r, int row, int col) {
    std::string v = Bytes(r, row, col);
    if (PQgetisnull(r, row, col + 1) || PQgetlength(r, row, col + 1) != 8 || v.size() != 8) {
      return v;
    }
    uint64_t sum = GetBig64(v.data()) + GetBig64(PQgetvalue(r, row, col + 1));
    std::string out;
    PutBig64(&out, sum);
    return out;
  }

  // Remembers the first error: PostgreSQL has aborted the transaction, and
  // nothing after it may run as if it had not.
  Status Fail(Status s) {
    if (failed_.ok()) failed_ = s;
    return s;
  }

  // Rolls back whatever is open and pools the connection, or drops it when
  // it is broken or cannot be brought back to a clean state.
  void End() {
    if (!conn_) return;
    if (PQstatus(conn_->conn) == CONNECTION_OK &&
        PQtransactionStatus(conn_->conn) != PQTRANS_IDLE) {
      // Sent without waiting for the answer: a read-only transaction costs
      // no extra round trip. The next user of the connection reads it.
      if (PQsendQuery(conn_->conn, "ROLLBACK") == 1) {
        conn_->rolling_back = true;
      } else {
        conn_->broken = true;
      }
    }
    shared_->Release(std::move(conn_));
  }

  std::shared_ptr<PgShared> shared_;
  const bool use_cache_;
  // Keys read from the cache, with what was found there.
  std::vector<std::pair<std::string, std::optional<std::string>>> cached_reads_;
  std::unique_ptr<Connection> conn_;  // from the first statement on
  bool begun_ = false;                // BEGIN was sent on conn_
  Status failed_;
  std::unique_lock<std::mutex> exclusive_lock_;
};

class PgKvStore final : public KvStore {
 public:
  explicit PgKvStore(std::shared_ptr<PgShared> shared) : shared_(std::move(shared)) {}
  std::string Url() const override { return shared_->url(); }
  Result<std::unique_ptr<KvTxn>> Begin() override {
    return std::unique_ptr<KvTxn>(std::make_unique<PgTxn>(shared_, false));
  }
  Result<std::unique_ptr<KvTxn>> BeginExclusive() override {
    return std::unique_ptr<KvTxn>(std::make_unique<PgTxn>(shared_, true));
  }

 private:
  std::shared_ptr<PgShared> shared_;
};

}  // namespace

std::string RedactPostgresUrl(std::string_view url) {
  std::string out(url);
  size_t sep = out.find("://");
  if (sep == std::string::npos) return out;
  size_t auth = sep + 3;
  size_t at = out.find('@', auth);
  size_t slash = out.find_first_of("/?", auth);
  if (at != std::string::npos && (slash == std::string::npos || at < slash)) {
    size_t colon = out.find(':', auth);
    if (colon != std::string::npos && colon < at) out.erase(colon, at - colon);
  }
  size_t pw = out.find("password=");
  if (pw != std::string::npos && pw > 0 && (out[pw - 1] == '?' || out[pw - 1] == '&')) {
    size_t stop = out.find('&', pw);
    out.erase(pw + 9, stop == std::string::npos ? std::string::npos : stop - pw - 9);
  }
  return out;
}

Result<std::unique_ptr<KvStore>> OpenPostgresKv(std::string_view url, const KvOptions& options) {
  // The database itself must exist: creating one needs other privileges and
  // a server-side choice of owner and encoding, so only the tables are ours.
  (void)options;
  auto shared = std::make_shared<PgShared>(std::string(url), RedactPostgresUrl(url));
  ASSIGN_OR_RETURN(std::unique_ptr<Connection> first, shared->Open(/*initialize=*/true));
  shared->Release(std::move(first));
  return std::unique_ptr<KvStore>(std::make_unique<PgKvStore>(std::move(shared)));
}

}  // namespace tessera
