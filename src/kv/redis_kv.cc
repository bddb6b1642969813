#include "kv/redis_kv.h"


#include <algorithm>
#include <cstdlib>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "kv/buffered_txn.h"
#include "kv/redis_connection.h"

namespace tessera {
namespace {

constexpr size_t kMaxIdleConnections = 16;
constexpr int kConnectTimeoutMs = 5000;
// A script over a large range can take a while; a dead server must not hang
// the caller for ever.
constexpr int kCommandTimeoutMs = 30000;
// Rebuilding a snapshot walks one undo record per commit since: past this
// many the read gives up with kConflict instead of doing unbounded work (and
// is retried), and undo records that old are deleted.
constexpr int kMaxSnapshotLag = 2000;
// Values this process read or wrote lately, kept with the version they are
// known at (RedisReadCache): at most this many keys, and no absence older
// than half the snapshot lag a commit accepts.
constexpr size_t kReadCacheKeys = 100'000;
constexpr uint64_t kReadCacheMaxAge = kMaxSnapshotLag / 2;

// Shared prologue of the read scripts: KEYS[1] counter, KEYS[4] undo prefix,
// ARGV[1] snapshot ("" = now). Sets cur and s, or returns {s, "old"}.
constexpr const char* kSnapshotPrologue = R"lua(
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local s = cur
if ARGV[1] ~= '' then s = tonumber(ARGV[1]) end
if cur - s > tonumber(ARGV[2]) then return {tostring(s), 'old'} end
for v = s + 1, cur do
  if redis.call('EXISTS', KEYS[4] .. v) == 0 then return {tostring(s), 'old'} end
end
)lua";

// chunked(cmd, key, list): `cmd key list...` in calls of at most 1000
// arguments each (Lua's unpack has a limit), returning the replies
// concatenated. One call for many keys costs the server far less than a
// call per key.
constexpr const char* kChunkedCall = R"lua(
local function chunked(cmd, key, list)
  local out = {}
  for a = 1, #list, 1000 do
    local r = redis.call(cmd, key, unpack(list, a, math.min(a + 999, #list)))
    if type(r) == 'table' then
      for _, x in ipairs(r) do out[#out + 1] = x end
    end
  end
  return out
end
)lua";

// ARGV[3..]: keys. Returns {s, "ok", v1, v2, ...}, each "0" (absent) or
// "1"+value as of snapshot s.
const std::string kGetScript = std::string(kSnapshotPrologue) + kChunkedCall + R"lua(
local out = {tostring(s), 'ok'}
local keys = {}
for i = 3, #ARGV do keys[#keys + 1] = ARGV[i] end
local current = chunked('HMGET', KEYS[2], keys)
for j, k in ipairs(keys) do
  local val = false
  for v = s + 1, cur do
    val = redis.call('HGET', KEYS[4] .. v, k)
    if val then break end
  end
  if not val then
    if current[j] then val = '1' .. current[j] else val = '0' end
  end
  out[#out + 1] = val
end
return out
)lua";

// ARGV[3] min, ARGV[4] max (ZRANGEBYLEX syntax), ARGV[5] limit (0: none).
// Returns {s, "ok", n, n undo (key, old) pairs oldest commit first, then
// current (key, value) pairs}. The current range is fetched with room for
// every changed key to drop out of it, so the caller can cut the snapshot
// view to the limit and still know exactly whether more follows.
const std::string kScanScript = std::string(kSnapshotPrologue) + R"lua(
local out = {tostring(s), 'ok', 0}
local n = 0
for v = s + 1, cur do
  local u = redis.call('HGETALL', KEYS[4] .. v)
  for j = 1, #u do out[#out + 1] = u[j] end
  n = n + #u / 2
end
out[3] = n
local limit = tonumber(ARGV[5])
local ks
if limit == 0 then
  ks = redis.call('ZRANGEBYLEX', KEYS[3], ARGV[3], ARGV[4])
else
  ks = redis.call('ZRANGEBYLEX', KEYS[3], ARGV[3], ARGV[4], 'LIMIT', 0, limit + n + 1)
end
for j = 1, #ks do
  out[#out + 1] = ks[j]
  out[#out + 1] = redis.call('HGET', KEYS[2], ks[j]) or ''
end
return out
)lua";

// KEYS[5]: hash key -> version of its last change; KEYS[6]: sorted set of
// deleted keys by the version of their delete, whose entries in KEYS[5] go
// once no commit can be checked against that old a version any more.
// ARGV[1] maximum lag, ARGV[2] number of keys read,
// ARGV[3] number of ranges scanned, ARGV[4] the oldest version a range or
// an absent key was read at ("" = none), then each key read with the
// version it was read at, then each range as a first key, a past-the-end
// key ("" = no end) and the version it was read at, then the writes: "p"
// key value | "d" key | "i" key delta. Returns -1 on conflict: a key or a
// key in a range changed after the version it was read at, the record of a
// commit since has expired (so nobody can tell), a range or an absent key
// was read longer than the maximum lag ago (the version of a delete is
// kept that long), or a read is newer than the server (which lost
// commits). Otherwise the version of this commit, or the current version
// when there is nothing to write (a check of the reads).
const std::string kCommitScript = std::string(kChunkedCall) + R"lua(
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local nreads, nranges = tonumber(ARGV[2]), tonumber(ARGV[3])
local maxlag = tonumber(ARGV[1])
local i = 5
if ARGV[4] ~= '' then
  local base = tonumber(ARGV[4])
  if base > cur or cur - base > maxlag then return -1 end
end
if nreads > 0 then
  local read = {}
  for j = 1, nreads do read[j] = ARGV[i + 2 * (j - 1)] end
  local changed_at = chunked('HMGET', KEYS[5], read)
  for j = 1, nreads do
    local at, m = tonumber(ARGV[i + 1]), changed_at[j]
    if at > cur or (m and tonumber(m) > at) then return -1 end
    i = i + 2
  end
end
if nranges > 0 then
  local ranges = {}
  local oldest = cur
  for j = 1, nranges do
    local at = tonumber(ARGV[i + 2])
    ranges[j] = {ARGV[i], ARGV[i + 1], at}
    if at < oldest then oldest = at end
    i = i + 3
  end
  -- Keys compare by unsigned bytes (Lua's own < follows the locale).
  local function less(a, b)
    local n = math.min(#a, #b)
    for p = 1, n do
      local x, y = string.byte(a, p), string.byte(b, p)
      if x ~= y then return x < y end
    end
    return #a < #b
  end
  for v = oldest + 1, cur do
    local changed = redis.call('HKEYS', KEYS[4] .. v)
    if #changed == 0 then return -1 end
    for _, k in ipairs(changed) do
      for _, r in ipairs(ranges) do
        if v > r[3] and not less(k, r[1]) and (r[2] == '' or less(k, r[2])) then return -1 end
      end
    end
  end
end
if i > #ARGV then return cur end
local now = cur + 1
local ops, ks, vals = {}, {}, {}
while i <= #ARGV do
  ops[#ops + 1], ks[#ks + 1] = ARGV[i], ARGV[i + 1]
  if ARGV[i] == 'd' then i = i + 2 else vals[#ks] = ARGV[i + 2]; i = i + 3 end
end
-- The index (KEYS[3]) holds exactly the keys present, and KEYS[6] only
-- keys absent: only a key that appears or goes touches them.
local olds = chunked('HMGET', KEYS[2], ks)
local sets, dels, appeared, revived, buried, versions, undo = {}, {}, {}, {}, {}, {}, {}
for j, k in ipairs(ks) do
  local old = olds[j]
  if ops[j] == 'd' then
    if old then dels[#dels + 1] = k end
    buried[#buried + 1] = now
    buried[#buried + 1] = k
  else
    local v = vals[j]
    if ops[j] == 'i' then
      local n = 0
      if old then
        if #old ~= 8 then return redis.error_reply('counter is not 8 bytes long') end
        n = struct.unpack('>i8', old)
      end
      v = struct.pack('>i8', n + tonumber(v))
    end
    sets[#sets + 1] = k
    sets[#sets + 1] = v
    if not old then
      appeared[#appeared + 1] = 0
      appeared[#appeared + 1] = k
      revived[#revived + 1] = k
    end
  end
  versions[#versions + 1] = k
  versions[#versions + 1] = now
  undo[#undo + 1] = k
  if old then undo[#undo + 1] = '1' .. old else undo[#undo + 1] = '0' end
end
chunked('HSET', KEYS[2], sets)
chunked('HDEL', KEYS[2], dels)
chunked('ZADD', KEYS[3], appeared)
chunked('ZREM', KEYS[3], dels)
chunked('ZREM', KEYS[6], revived)
chunked('ZADD', KEYS[6], buried)
chunked('HSET', KEYS[5], versions)
local u = KEYS[4] .. now
chunked('HSET', u, undo)
-- Versions of keys deleted more than the maximum lag ago, and undo records
-- that old: a read that old fails the lag check above before it would look
-- for them. Every 32nd commit does it for many: each call a script makes
-- costs the server a few microseconds, whatever it does.
if now % 32 == 0 then
  local gone = redis.call('ZRANGEBYSCORE', KEYS[6], '-inf', now - maxlag - 1, 'LIMIT', 0, 4096)
  chunked('HDEL', KEYS[5], gone)
  chunked('ZREM', KEYS[6], gone)
  local expired = {}
  for v = math.max(1, now - maxlag - 31), now - maxlag do expired[#expired + 1] = KEYS[4] .. v end
  if #expired > 0 then redis.call('DEL', unpack(expired)) end
end
redis.call('SET', KEYS[1], now)
return now
)lua";

using Reply = RedisReply;
using Context = std::unique_ptr<RedisConnection>;

std::string ReplyString(const redisReply* r) {
  return r->str != nullptr ? std::string(r->str, r->len) : std::string();
}

std::string PercentDecode(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size()) {
      std::string hex(s.substr(i + 1, 2));
      char* end = nullptr;
      long v = strtol(hex.c_str(), &end, 16);
      if (end == hex.c_str() + 2) {
        out.push_back(static_cast<char>(v));
        i += 2;
        continue;
      }
    }
    out.push_back(s[i]);
  }
  return out;
}

struct RedisAddress {
  std::string user, password, host;
  bool tls = false;
  std::string ca_file;  // ?cacert=PATH (TLS)
  int port = 6379;
  int db = 0;
  std::string prefix = "tessera";
  std::string public_url;  // without the password
};

Result<RedisAddress> ParseUrl(std::string_view url) {
  RedisAddress a;
  auto bad = [&](const std::string& why) {
    return Invalid("malformed metadata URL '" + std::string(url) + "': " + why +
                   " (expected redis[s]://[user:pass@]host:port[/db][?prefix=NAME][&cacert=PEM])");
  };
  size_t sep = url.find("://");
  std::string_view rest = url.substr(sep + 3);
  size_t q = rest.find('?');
  std::string_view query = q == std::string_view::npos ? "" : rest.substr(q + 1);
  rest = rest.substr(0, q);
  size_t at = rest.rfind('@');
  if (at != std::string_view::npos) {
    std::string_view ui = rest.substr(0, at);
    rest = rest.substr(at + 1);
    size_t colon = ui.find(':');
    if (colon == std::string_view::npos) {
      a.password = PercentDecode(ui);  // redis://pass@host, as redis-cli accepts
    } else {
      a.user = PercentDecode(ui.substr(0, colon));
      a.password = PercentDecode(ui.substr(colon + 1));
    }
  }
  size_t slash = rest.find('/');
  std::string_view hostport = rest.substr(0, slash);
  if (slash != std::string_view::npos && slash + 1 < rest.size()) {
    std::string db(rest.substr(slash + 1));
    char* end = nullptr;
    long v = strtol(db.c_str(), &end, 10);
    if (*end != '\0' || v < 0) return bad("database '" + db + "' is not a number");
    a.db = static_cast<int>(v);
  }
  size_t colon = hostport.rfind(':');
  a.host = std::string(hostport.substr(0, colon));
  if (colon != std::string_view::npos) {
    std::string port(hostport.substr(colon + 1));
    char* end = nullptr;
    long v = strtol(port.c_str(), &end, 10);
    if (port.empty() || *end != '\0' || v <= 0 || v > 65535) return bad("bad port '" + port + "'");
    a.port = static_cast<int>(v);
  }
  if (a.host.empty()) return bad("no host");
  a.tls = url.substr(0, 9) == "rediss://";
  for (std::string_view rest_q = query; !rest_q.empty();) {
    size_t amp = rest_q.find('&');
    std::string_view option = rest_q.substr(0, amp);
    rest_q = amp == std::string_view::npos ? "" : rest_q.substr(amp + 1);
    if (option.substr(0, 7) == "prefix=" && option.size() > 7) {
      a.prefix = PercentDecode(option.substr(7));
    } else if (a.tls && option.substr(0, 7) == "cacert=" && option.size() > 7) {
      a.ca_file = PercentDecode(option.substr(7));
    } else {
      return bad("unknown option '" + std::string(option) + "'");
    }
  }
  a.public_url = std::string(a.tls ? "rediss://" : "redis://") + (a.user.empty() ? "" : a.user + "@") + a.host + ":" +
                 std::to_string(a.port) + "/" + std::to_string(a.db) +
                 (query.empty() ? "" : "?" + std::string(query));
  return a;
}

// Values this process read or wrote lately, each with the version (commit
// counter) it is known at. A transaction that may write takes its reads
// from here when it can, saving a round trip each: the commit script then
// checks that none of them changed after its version, so a stale value
// costs a conflict and a retry, never a wrong result. (The lookup before a
// create reads the directory and the absent name; the create finds both
// here. A create's commit leaves the new entry and attributes here for the
// rename or unlink that follows.)
class RedisReadCache {
 public:
  struct Known {
    std::optional<std::string> value;
    uint64_t version = 0;
  };

  std::optional<Known> Find(const std::string& key) {
    std::lock_guard lock(mu_);
    auto it = map_.find(key);
    if (it == map_.end()) return std::nullopt;
    // The commit can check a key that is absent only while the version of
    // its delete is kept.
    if (!it->second.value && it->second.version + kReadCacheMaxAge < newest_) return std::nullopt;
    return it->second;
  }

  // Keeps the newer of what is known and `value` at `version`.
  void Note(const std::string& key, std::optional<std::string> value, uint64_t version) {
    std::lock_guard lock(mu_);
    newest_ = std::max(newest_, version);
    auto [it, added] = map_.try_emplace(key);
    if (!added && it->second.version > version) return;
    it->second = Known{std::move(value), version};
    if (added && map_.size() > kReadCacheKeys) {
      // Bounded memory; refilled by the next reads.
      map_.clear();
    }
  }

  void Forget(const std::string& key) {
    std::lock_guard lock(mu_);
    map_.erase(key);
  }

 private:
  std::mutex mu_;
  std::unordered_map<std::string, Known> map_;
  uint64_t newest_ = 0;
};

class RedisKvStore : public KvStore {
 public:
  explicit RedisKvStore(RedisAddress a) : a_(std::move(a)) {
    std::string base = "{" + a_.prefix + "}:";
    keys_ = {base + "v", base + "d", base + "i", base + "u:", base + "m", base + "t"};
  }
  ~RedisKvStore() override = default;

  std::string Url() const override { return a_.public_url; }
  RedisReadCache& cache() { return cache_; }
  Result<std::unique_ptr<KvTxn>> Begin() override;
  Result<std::unique_ptr<KvTxn>> BeginExclusive() override;

  // Runs one script: EVALSHA sha 6 <keys_> args, loading the script first
  // when the server does not know it (first use, or after a restart), so a
  // script's text crosses the network once, not with every call.
  // `idempotent` scripts are retried once on a fresh connection when a
  // pooled one turns out broken (server restart, idle timeout); a commit is
  // not, as it may have applied.
  Result<Reply> Eval(const std::string& script, const std::vector<std::string>& args,
                     bool idempotent) {
    std::string sha = ScriptSha(script);
    const std::string nkeys = std::to_string(keys_.size());
    std::vector<std::string_view> argv = {"EVALSHA", sha, nkeys};
    for (const auto& k : keys_) argv.push_back(k);
    for (const auto& a : args) argv.push_back(a);
    bool loaded = false;
    for (int attempt = 0;; ++attempt) {
      ASSIGN_OR_RETURN(Context c, Acquire());
      if (sha.empty() || loaded) {
        loaded = true;  // until the load succeeds
        // Unknown to us, or NOSCRIPT from the server: nothing ran yet.
        Reply load = c->Command({"SCRIPT", "LOAD", script});
        if (load == nullptr || load->type != REDIS_REPLY_STRING) {
          std::string why = load == nullptr ? c->error() : ReplyString(load.get());
          DropIdle();
          if (load == nullptr && attempt == 0) continue;  // loading is always safe to repeat
          return Unavailable("redis " + Url() + ": cannot load a script: " + why);
        }
        sha.assign(load->str, load->len);
        RememberSha(script, sha);
        argv[1] = sha;
        loaded = false;
      }
      Reply r = c->Command(argv);
      if (r == nullptr) {
        std::string why = c->error();
        // A server restart breaks every pooled connection alike.
        DropIdle();
        if (idempotent && attempt == 0) continue;  // c is dropped: reconnect
        return Unavailable("redis " + Url() + ": " + why);
      }
      Release(std::move(c));
      if (r->type == REDIS_REPLY_ERROR) {
        std::string error = ReplyString(r.get());
        if (error.rfind("NOSCRIPT", 0) == 0 && attempt < 2) {
          loaded = true;
          continue;
        }
        // A server still loading its data after a restart, busy with another
        // script, or a replica not yet promoted: nothing ran, and it passes.
        for (const char* passing : {"LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN", "READONLY"}) {
          if (error.rfind(passing, 0) == 0) return Unavailable("redis " + Url() + ": " + error);
        }
        return IoError("redis " + Url() + ": " + error);
      }
      return r;
    }
  }

  std::string ScriptSha(const std::string& script) {
    std::lock_guard lock(sha_mu_);
    auto it = shas_.find(&script);
    return it == shas_.end() ? std::string() : it->second;
  }
  void RememberSha(const std::string& script, const std::string& sha) {
    std::lock_guard lock(sha_mu_);
    shas_[&script] = sha;
  }
  std::mutex sha_mu_;
  std::map<const std::string*, std::string> shas_;  // script -> its SHA1 on the server

  // Serialises this process's exclusive transactions and all its commits.
  std::mutex exclusive_mu_;

  Result<Context> Connect() {
    RedisEndpoint ep{a_.host, a_.port, a_.tls, a_.ca_file, kConnectTimeoutMs, kCommandTimeoutMs};
    Result<Context> opened = RedisConnection::Open(ep);
    if (!opened.ok()) {
      return Status(opened.status().code(), "redis " + Url() + ": " + opened.status().message());
    }
    Context c = std::move(opened).value();
    if (!a_.password.empty()) {
      Reply r = a_.user.empty() ? c->Command({"AUTH", a_.password})
                                : c->Command({"AUTH", a_.user, a_.password});
      if (r == nullptr || r->type == REDIS_REPLY_ERROR) {
        return Unavailable("redis " + Url() + ": authentication failed: " +
                           (r ? ReplyString(r.get()) : c->error()));
      }
    }
    if (a_.db != 0) {
      const std::string db = std::to_string(a_.db);
      Reply r = c->Command({"SELECT", db});
      if (r == nullptr || r->type == REDIS_REPLY_ERROR) {
        return Unavailable("redis " + Url() + ": cannot select database " + db + ": " +
                           (r ? ReplyString(r.get()) : c->error()));
      }
    }
    return c;
  }

  // Evicted keys would silently lose metadata: only policies that never
  // evict our keys (none has a TTL) are accepted.
  Status CheckEvictionPolicy() {
    ASSIGN_OR_RETURN(Context c, Acquire());
    Reply r = c->Command({"CONFIG", "GET", "maxmemory-policy"});
    if (r == nullptr) return Unavailable("redis " + Url() + ": " + c->error());
    Release(std::move(c));
    // Servers that disable CONFIG (some managed services) cannot be checked.
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2) return Status::Ok();
    std::string policy = ReplyString(r->element[1]);
    if (policy == "noeviction" || policy.rfind("volatile-", 0) == 0) return Status::Ok();
    return Invalid("redis " + Url() + " has maxmemory-policy " + policy +
                   ", which could evict metadata keys; set it to noeviction");
  }

 private:
  Result<Context> Acquire() {
    {
      std::lock_guard<std::mutex> lock(pool_mu_);
      if (!idle_.empty()) {
        Context c = std::move(idle_.back());
        idle_.pop_back();
        return c;
      }
    }
    return Connect();
  }
  void DropIdle() {
    std::lock_guard<std::mutex> lock(pool_mu_);
    idle_.clear();
  }
  void Release(Context c) {
    std::lock_guard<std::mutex> lock(pool_mu_);
    if (idle_.size() < kMaxIdleConnections) idle_.push_back(std::move(c));
  }

  RedisAddress a_;
  std::vector<std::string> keys_;
  RedisReadCache cache_;
  std::mutex pool_mu_;
  std::vector<Context> idle_;
};

// Decodes "0" / "1"+value.
Result<std::optional<std::string>> DecodeValue(const redisReply* r) {
  if (r->type != REDIS_REPLY_STRING || r->len == 0) return Corrupt("redis: bad value record");
  if (r->str[0] == '0') return std::optional<std::string>();
  return std::optional<std::string>(std::string(r->str + 1, r->len - 1));
}

class RedisTxn : public BufferedKvTxn {
 public:
  // `use_cache`: point reads may come from the store's RedisReadCache (for
  // transactions that may write, whose commit checks them).
  RedisTxn(RedisKvStore* store, std::unique_lock<std::mutex> exclusive, bool use_cache)
      : store_(store), exclusive_(std::move(exclusive)), use_cache_(use_cache) {}

 protected:
  Result<std::optional<std::string>> SnapshotGet(std::string_view key) override {
    ASSIGN_OR_RETURN(auto values, SnapshotBatchGet({std::string(key)}));
    return std::move(values[0]);
  }

  Result<std::vector<std::optional<std::string>>> SnapshotBatchGet(
      const std::vector<std::string>& keys) override {
    std::vector<std::optional<std::string>> out(keys.size());
    std::vector<std::string> fetch;
    std::vector<size_t> fetch_at;
    for (size_t i = 0; i < keys.size(); ++i) {
      if (use_cache_) {
        if (std::optional<RedisReadCache::Known> known = store_->cache().Find(keys[i])) {
          out[i] = std::move(known->value);
          read_keys_.push_back({keys[i], known->version, !out[i].has_value()});
          continue;
        }
      }
      fetch.push_back(keys[i]);
      fetch_at.push_back(i);
    }
    if (fetch.empty()) return out;
    std::vector<std::string> args = {ReadAt(), std::to_string(kMaxSnapshotLag)};
    args.insert(args.end(), fetch.begin(), fetch.end());
    ASSIGN_OR_RETURN(Reply r, store_->Eval(kGetScript, args, true));
    RETURN_IF_ERROR(TakeSnapshot(r.get()));
    if (r->elements != fetch.size() + 2) return Corrupt("redis: short reply to a read");
    for (size_t j = 0; j < fetch.size(); ++j) {
      ASSIGN_OR_RETURN(auto v, DecodeValue(r->element[j + 2]));
      store_->cache().Note(fetch[j], v, snapshot_version_);
      read_keys_.push_back({std::move(fetch[j]), snapshot_version_, !v.has_value()});
      out[fetch_at[j]] = std::move(v);
    }
    return out;
  }

  Result<ScanResult> SnapshotScan(std::string_view begin, std::string_view end,
                                  size_t limit) override {
    std::string min = begin.empty() ? "-" : "[" + std::string(begin);
    std::string max = end.empty() ? "+" : "(" + std::string(end);
    std::vector<std::string> args = {ReadAt(), std::to_string(kMaxSnapshotLag), min, max,
                                     std::to_string(limit)};
    ASSIGN_OR_RETURN(Reply r, store_->Eval(kScanScript, args, true));
    RETURN_IF_ERROR(TakeSnapshot(r.get()));
    if (r->elements < 3 || r->element[2]->type != REDIS_REPLY_INTEGER) {
      return Corrupt("redis: bad reply to a scan");
    }
    size_t n = static_cast<size_t>(r->element[2]->integer);
    if (r->elements < 3 + 2 * n || (r->elements - 3) % 2 != 0) {
      return Corrupt("redis: bad reply to a scan");
    }
    // The value each changed key had at the snapshot: the oldest undo
    // record after it wins.
    std::map<std::string, std::optional<std::string>, std::less<>> changed;
    for (size_t i = 0; i < n; ++i) {
      std::string key = ReplyString(r->element[3 + 2 * i]);
      if (changed.count(key)) continue;
      ASSIGN_OR_RETURN(auto v, DecodeValue(r->element[4 + 2 * i]));
      changed.emplace(std::move(key), std::move(v));
    }
    size_t first_current = 3 + 2 * n;
    size_t current_count = (r->elements - first_current) / 2;
    // Fetched with limit + n + 1: when truncated, the view is only known up
    // to the last fetched key, and holds more than `limit` pairs up to it.
    bool truncated = limit != 0 && current_count == limit + n + 1;
    std::string last = truncated ? ReplyString(r->element[r->elements - 2]) : std::string();
    std::map<std::string, std::string, std::less<>> view;
    for (size_t i = 0; i < current_count; ++i) {
      std::string key = ReplyString(r->element[first_current + 2 * i]);
      if (changed.count(key)) continue;  // taken from `changed` below
      view.emplace(std::move(key), ReplyString(r->element[first_current + 2 * i + 1]));
    }
    for (auto& [key, value] : changed) {
      if (!value || key < begin || (!end.empty() && key >= end)) continue;
      if (truncated && key > last) continue;
      view.emplace(key, *value);
    }
    ScanResult out;
    for (auto& [key, value] : view) {
      if (limit != 0 && out.items.size() == limit) {
        out.more = true;
        break;
      }
      out.items.push_back(KeyValue{key, value});
    }
    // What the commit must find unchanged: up to the last pair returned
    // when the limit cut the scan short, else the whole range.
    read_ranges_.push_back(ReadRange{std::string(begin),
                                     out.more ? out.items.back().key + '\0' : std::string(end),
                                     snapshot_version_});
    for (const KeyValue& kv : out.items) store_->cache().Note(kv.key, kv.value, snapshot_version_);
    return out;
  }

  bool AppliesIncrements() const override { return true; }

  Status CommitWrites(WriteBuffer writes, Increments increments) override {
    // Reads of one snapshot need no check when nothing is written; the
    // reads of a transaction that may write do.
    const bool read_anything = !read_keys_.empty() || !read_ranges_.empty();
    if (writes.empty() && increments.empty() && !(use_cache_ && read_anything)) return Status::Ok();
    std::unique_lock<std::mutex> lock;
    if (!exclusive_.owns_lock()) lock = std::unique_lock<std::mutex>(store_->exclusive_mu_);
    std::vector<std::string> args = CheckArgs();
    for (const auto& [key, value] : writes) {
      args.push_back(value ? "p" : "d");
      args.push_back(key);
      if (value) args.push_back(*value);
    }
    for (const auto& [key, delta] : increments) {
      args.push_back("i");
      args.push_back(key);
      args.push_back(std::to_string(delta));
    }
    ASSIGN_OR_RETURN(int64_t version, RunCommit(args));
    for (auto& [key, value] : writes) store_->cache().Note(key, std::move(value), version);
    for (const auto& [key, delta] : increments) store_->cache().Forget(key);
    return Status::Ok();
  }

  // A body of a transaction that may write read the newest data or the
  // cache, not one snapshot: when it fails, the failure counts only if what
  // it read still holds.
  Status VerifyReads() override {
    if (!use_cache_ || (read_keys_.empty() && read_ranges_.empty())) return Status::Ok();
    return RunCommit(CheckArgs()).status();
  }

 private:
  Status TakeSnapshot(const redisReply* r) {
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 2) return Corrupt("redis: bad reply");
    snapshot_ = ReplyString(r->element[0]);
    snapshot_version_ = std::strtoull(snapshot_.c_str(), nullptr, 10);
    if (ReplyString(r->element[1]) != "ok") {
      return Conflict("redis " + store_->Url() + ": snapshot too old to read, retry");
    }
    return Status::Ok();
  }

  // Read-only transactions read one snapshot. Transactions that may write
  // read the newest data every time: their commit checks every read
  // against what changed after it anyway, and a snapshot that falls behind
  // the commits of others costs the server a walk over their undo records
  // at every read.
  std::string ReadAt() const { return use_cache_ ? std::string() : snapshot_; }

  // The commit script's arguments up to the writes: what was read, and at
  // which versions.
  std::vector<std::string> CheckArgs() const {
    std::optional<uint64_t> oldest;
    // Only absent keys and ranges bound how old a read may be: a deleted
    // key's version is kept for kMaxSnapshotLag commits, the version of a
    // key present for as long as it stays.
    for (const ReadKey& r : read_keys_) {
      if (r.absent) oldest = std::min(oldest.value_or(r.version), r.version);
    }
    for (const ReadRange& r : read_ranges_) oldest = std::min(oldest.value_or(r.version), r.version);
    std::vector<std::string> args = {std::to_string(kMaxSnapshotLag),
                                     std::to_string(read_keys_.size()),
                                     std::to_string(read_ranges_.size()),
                                     oldest ? std::to_string(*oldest) : std::string()};
    for (const ReadKey& r : read_keys_) {
      args.push_back(r.key);
      args.push_back(std::to_string(r.version));
    }
    for (const ReadRange& r : read_ranges_) {
      args.push_back(r.first);
      args.push_back(r.end);
      args.push_back(std::to_string(r.version));
    }
    return args;
  }

  // Runs the commit script: the version it committed (or checked) at, or
  // kConflict, after which nothing this transaction read is trusted from
  // the cache any more.
  Result<int64_t> RunCommit(const std::vector<std::string>& args) {
    ASSIGN_OR_RETURN(Reply r, store_->Eval(kCommitScript, args, false));
    if (r->type != REDIS_REPLY_INTEGER) return Corrupt("redis: bad reply to a commit");
    if (r->integer < 0) {
      for (const ReadKey& r : read_keys_) store_->cache().Forget(r.key);
      return Conflict("redis " + store_->Url() + ": changed since this transaction read it");
    }
    return static_cast<int64_t>(r->integer);
  }

  RedisKvStore* store_;
  std::unique_lock<std::mutex> exclusive_;
  const bool use_cache_;
  // The commit counter at the first read ("" before it); for a transaction
  // that may write, at the latest read.
  std::string snapshot_;
  uint64_t snapshot_version_ = 0;
  // What this transaction read, for the commit's conflict check: keys and
  // ranges [first, end), each with the version it was read at.
  struct ReadRange {
    std::string first, end;
    uint64_t version = 0;
  };
  struct ReadKey {
    std::string key;
    uint64_t version = 0;
    bool absent = false;
  };
  std::vector<ReadKey> read_keys_;
  std::vector<ReadRange> read_ranges_;
};

// Read-only transactions read the server (a mount's close-to-open promise);
// transactions that may write may read the cache.
Result<std::unique_ptr<KvTxn>> RedisKvStore::Begin() {
  return std::unique_ptr<KvTxn>(new RedisTxn(this, {}, /*use_cache=*/false));
}

Result<std::unique_ptr<KvTxn>> RedisKvStore::BeginExclusive() {
  return std::unique_ptr<KvTxn>(
      new RedisTxn(this, std::unique_lock<std::mutex>(exclusive_mu_), /*use_cache=*/true));
}

}  // namespace

Result<std::unique_ptr<KvStore>> OpenRedisKv(std::string_view url, const KvOptions&) {
  ASSIGN_OR_RETURN(RedisAddress a, ParseUrl(url));
  auto store = std::make_unique<RedisKvStore>(std::move(a));
  RETURN_IF_ERROR(store->CheckEvictionPolicy());
  return std::unique_ptr<KvStore>(std::move(store));
}

}  // namespace tessera
