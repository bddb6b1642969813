#include "kv/etcd_kv.h"

#include <curl/curl.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "kv/buffered_txn.h"

namespace tessera {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

// Limits that keep every operation bounded: a dead endpoint costs at most
// kConnectTimeout, a stuck one kRequestTimeout, and an operation gives up
// with kUnavailable after the operation timeout (URL option timeout_ms,
// default kDefaultOperationTimeoutMs) of trying every endpoint. The default
// covers a leader election; longer outages are ridden out (or not) by
// WithTransaction's retry window, which the mount sets.
constexpr long kConnectTimeoutMs = 1000;
constexpr long kRequestTimeoutMs = 5000;
constexpr int64_t kDefaultOperationTimeoutMs = 3000;
// etcd's default --max-txn-ops: the most compares (and, separately, the most
// writes) one txn may carry.
constexpr size_t kMaxTxnOps = 128;

constexpr char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

std::string Base64Encode(std::string_view in) {
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8) | uint8_t(in[i + 2]);
    out += kB64[v >> 18];
    out += kB64[(v >> 12) & 63];
    out += kB64[(v >> 6) & 63];
    out += kB64[v & 63];
  }
  if (i + 1 == in.size()) {
    uint32_t v = uint8_t(in[i]) << 16;
    out += kB64[v >> 18];
    out += kB64[(v >> 12) & 63];
    out += "==";
  } else if (i + 2 == in.size()) {
    uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8);
    out += kB64[v >> 18];
    out += kB64[(v >> 12) & 63];
    out += kB64[(v >> 6) & 63];
    out += '=';
  }
  return out;
}

Result<std::string> Base64Decode(std::string_view in) {
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    int v;
    if (c >= 'A' && c <= 'Z') v = c - 'A';
    else if (c >= 'a' && c <= 'z') v = c - 'a' + 26;
    else if (c >= '0' && c <= '9') v = c - '0' + 52;
    else if (c == '+' || c == '-') v = 62;
    else if (c == '/' || c == '_') v = 63;
    else if (c == '=') break;
    else return Corrupt("etcd returned invalid base64");
    acc = (acc << 6) | uint32_t(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += char((acc >> bits) & 0xff);
    }
  }
  return out;
}

// The gateway encodes int64 fields as JSON strings and omits zero ones.
int64_t Int64Field(const json& j, const char* name) {
  auto it = j.find(name);
  if (it == j.end()) return 0;
  if (it->is_string()) return std::stoll(it->get<std::string>());
  if (it->is_number_integer()) return it->get<int64_t>();
  return 0;
}

size_t AppendBody(char* data, size_t size, size_t n, void* out) {
  static_cast<std::string*>(out)->append(data, size * n);
  return size * n;
}

// The endpoints of one store and the HTTP calls to them. Thread-safe.
class EtcdClient {
 public:
  EtcdClient(std::string url, std::vector<std::string> endpoints, int64_t timeout_ms)
      : url_(std::move(url)), endpoints_(std::move(endpoints)), timeout_(timeout_ms) {
    static std::once_flag init;
    std::call_once(init, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  }
  ~EtcdClient() {
    for (CURL* h : idle_) curl_easy_cleanup(h);
  }

  const std::string& url() const { return url_; }

  // POSTs `body` to `path`, trying the endpoints in turn (starting with the
  // last one that worked) until one answers without a transport error or a
  // 5xx, or the operation timeout passes. Returns the parsed answer.
  Result<json> Call(const std::string& path, const json& body) {
    std::string payload = body.dump();
    Clock::time_point deadline = Clock::now() + timeout_;
    std::string last_error;
    while (true) {
      size_t start = preferred_.load();
      for (size_t i = 0; i < endpoints_.size(); ++i) {
        size_t e = (start + i) % endpoints_.size();
        long code = 0;
        std::string answer;
        // A stuck endpoint may hold the request until kRequestTimeout, but
        // never past the operation's deadline.
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
        long request_timeout = std::clamp<long>(left.count(), 200, kRequestTimeoutMs);
        std::string error = Post(endpoints_[e], path, payload, request_timeout, &code, &answer);
        if (error.empty() && code >= 200 && code < 300) {
          preferred_.store(e);
          json parsed = json::parse(answer, nullptr, /*allow_exceptions=*/false);
          if (parsed.is_discarded()) return IoError(url_ + ": etcd answered invalid JSON");
          return parsed;
        }
        // 408 and 429 are the gateway's own trouble (a member shutting down
        // answers 408 "client connection is closing"), not the request's.
        if (error.empty() && code < 500 && code != 408 && code != 429) {
          // The request itself is wrong (too many operations, ...): another
          // endpoint would refuse it too.
          std::string hint = answer.find("too many operations") != std::string::npos
                                 ? " (start etcd with a larger --max-txn-ops)"
                                 : "";
          return IoError(url_ + ": etcd " + path + " failed (HTTP " + std::to_string(code) +
                         "): " + answer + hint);
        }
        last_error = endpoints_[e] + ": " + (error.empty() ? "HTTP " + std::to_string(code) +
                                                                 " " + answer
                                                           : error);
        if (Clock::now() >= deadline) {
          return Unavailable(url_ + ": no etcd endpoint answered (last: " + last_error + ")");
        }
      }
      // Every endpoint failed: leave a cluster a moment to elect a leader.
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      if (Clock::now() >= deadline) {
        return Unavailable(url_ + ": no etcd endpoint answered (last: " + last_error + ")");
      }
    }
  }

 private:
  // One HTTP POST; returns a transport error message or "" (then *code and
  // *answer are set).
  std::string Post(const std::string& endpoint, const std::string& path,
                   const std::string& payload, long timeout_ms, long* code, std::string* answer) {
    CURL* h = Acquire();
    if (h == nullptr) return "curl_easy_init failed";
    std::string full = "http://" + endpoint + path;
    char errbuf[CURL_ERROR_SIZE] = {0};
    curl_slist* headers = curl_slist_append(nullptr, "Content-Type: application/json");
    curl_easy_setopt(h, CURLOPT_URL, full.c_str());
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, payload.data());
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, long(payload.size()));
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, kConnectTimeoutMs);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);  // timeouts without SIGALRM in threads
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, &AppendBody);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, answer);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    CURLcode rc = curl_easy_perform(h);
    curl_slist_free_all(headers);
    std::string error;
    if (rc != CURLE_OK) {
      error = errbuf[0] != '\0' ? errbuf : curl_easy_strerror(rc);
    } else {
      curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, code);
    }
    Release(h, rc == CURLE_OK);
    return error;
  }

  // Handles are reused so that keep-alive connections are too.
  CURL* Acquire() {
    {
      std::lock_guard lock(mu_);
      if (!idle_.empty()) {
        CURL* h = idle_.back();
        idle_.pop_back();
        curl_easy_reset(h);
        return h;
      }
    }
    return curl_easy_init();
  }

  void Release(CURL* h, bool healthy) {
    if (!healthy) {  // drop a handle whose connection may be half-broken
      curl_easy_cleanup(h);
      return;
    }
    std::lock_guard lock(mu_);
    idle_.push_back(h);
  }

  const std::string url_;
  const std::vector<std::string> endpoints_;
  const std::chrono::milliseconds timeout_;
  std::atomic<size_t> preferred_{0};
  std::mutex mu_;
  std::vector<CURL*> idle_;  // guarded by mu_
};

// The smallest key greater than every key starting with `prefix` ("" when
// there is none, i.e. a prefix of only 0xff bytes).
std::string PrefixEnd(std::string prefix) {
  while (!prefix.empty()) {
    if (uint8_t(prefix.back()) != 0xff) {
      prefix.back() = char(uint8_t(prefix.back()) + 1);
      return prefix;
    }
    prefix.pop_back();
  }
  return prefix;
}

struct Shared {
  std::unique_ptr<EtcdClient> client;
  std::string prefix;  // "/name/"
  // "/name!deletes", outside the prefix: every commit that deletes a key
  // rewrites it, so a transaction that scanned too many keys to check each
  // one for deletion checks this instead (see CommitWrites).
  std::string deletes_key;
  // Held by an exclusive transaction for its whole life and by every other
  // transaction of this store while it commits, so that this process's
  // transactions cannot make an exclusive one conflict.
  std::mutex exclusive_mu;
};

class EtcdTxn final : public BufferedKvTxn {
 public:
  EtcdTxn(std::shared_ptr<Shared> shared, bool exclusive) : shared_(std::move(shared)) {
    if (exclusive) lock_ = std::unique_lock(shared_->exclusive_mu);
  }

 protected:
  Result<std::optional<std::string>> SnapshotGet(std::string_view key) override {
    std::string full = shared_->prefix + std::string(key);
    json req = {{"key", Base64Encode(full)}};
    ASSIGN_OR_RETURN(json resp, Range(std::move(req)));
    std::optional<std::string> value;
    int64_t mod = 0;
    if (auto kvs = resp.find("kvs"); kvs != resp.end() && !kvs->empty()) {
      const json& kv = kvs->front();
      mod = Int64Field(kv, "mod_revision");
      ASSIGN_OR_RETURN(std::string v, Base64Decode(kv.value("value", "")));
      value = std::move(v);
    }
    reads_[full] = mod;
    return value;
  }

  // All keys in one request: a txn with no compares whose success ops are
  // range reads at this transaction's revision (in slices of etcd's default
  // operation limit). The first read fixes the revision from the answer.
  Result<std::vector<std::optional<std::string>>> SnapshotBatchGet(
      const std::vector<std::string>& keys) override {
    std::vector<std::optional<std::string>> values;
    values.reserve(keys.size());
    for (size_t from = 0; from < keys.size(); from += kMaxTxnOps) {
      const size_t to = std::min(keys.size(), from + kMaxTxnOps);
      json ops = json::array();
      for (size_t i = from; i < to; ++i) {
        json range = {{"key", Base64Encode(shared_->prefix + keys[i])}};
        if (revision_ != 0) range["revision"] = revision_;
        ops.push_back({{"request_range", range}});
      }
      ASSIGN_OR_RETURN(json resp, shared_->client->Call("/v3/kv/txn", {{"success", ops}}));
      if (revision_ == 0) {
        auto header = resp.find("header");
        if (header == resp.end()) {
          return IoError(shared_->client->url() + ": etcd answer has no header");
        }
        revision_ = Int64Field(*header, "revision");
      }
      auto answers = resp.find("responses");
      if (answers == resp.end() || !answers->is_array() || answers->size() != to - from) {
        return IoError(shared_->client->url() + ": etcd txn answered " +
                       std::to_string(answers == resp.end() ? 0 : answers->size()) +
                       " ranges for " + std::to_string(to - from));
      }
      for (size_t i = from; i < to; ++i) {
        const json& r = (*answers)[i - from].value("response_range", json::object());
        std::optional<std::string> value;
        int64_t mod = 0;
        if (auto kvs = r.find("kvs"); kvs != r.end() && !kvs->empty()) {
          const json& kv = kvs->front();
          mod = Int64Field(kv, "mod_revision");
          ASSIGN_OR_RETURN(std::string v, Base64Decode(kv.value("value", "")));
          value = std::move(v);
        }
        reads_[shared_->prefix + keys[i]] = mod;
        values.push_back(std::move(value));
      }
    }
    return values;
  }

  Result<ScanResult> SnapshotScan(std::string_view begin, std::string_view end,
                                  size_t limit) override {
    std::string lo = shared_->prefix + std::string(begin);
    std::string hi = end.empty() ? PrefixEnd(shared_->prefix) : shared_->prefix + std::string(end);
    json req = {{"key", Base64Encode(lo)}, {"range_end", Base64Encode(hi)}};
    if (limit != 0) req["limit"] = limit;
    ASSIGN_OR_RETURN(json resp, Range(std::move(req)));
    ScanResult out;
    if (auto kvs = resp.find("kvs"); kvs != resp.end()) {
      for (const json& kv : *kvs) {
        ASSIGN_OR_RETURN(std::string key, Base64Decode(kv.value("key", "")));
        ASSIGN_OR_RETURN(std::string value, Base64Decode(kv.value("value", "")));
        if (key.compare(0, shared_->prefix.size(), shared_->prefix) != 0) {
          return Corrupt(shared_->client->url() + ": etcd returned a key outside the prefix");
        }
        // A delete of a scanned key shows as its mod_revision no longer
        // matching: etcd compares cannot count the keys of a range.
        scanned_[key] = Int64Field(kv, "mod_revision");
        out.items.push_back(KeyValue{key.substr(shared_->prefix.size()), std::move(value)});
      }
    }
    out.more = resp.value("more", false);
    // The answer depends on the range up to the last key when the limit
    // stopped it; inserts or updates there are caught by a range compare.
    if (out.more && !out.items.empty()) {
      hi = shared_->prefix + out.items.back().key;
      hi.push_back('\0');
    }
    ranges_.emplace_back(std::move(lo), std::move(hi));
    return out;
  }

  Status CommitWrites(WriteBuffer writes, Increments) override {
    // A read-only transaction read one consistent revision: nothing to check.
    if (writes.empty()) return Status::Ok();
    json compare = json::array();
    // Too many keys read to check one by one (a batch of a whole listing):
    // one range covering them all, plus "no delete since the snapshot" below
    // (coarser, still correct).
    const bool coarse_reads = reads_.size() + ranges_.size() >= kMaxTxnOps;
    if (coarse_reads && !reads_.empty()) {
      ranges_.emplace_back(reads_.begin()->first, reads_.rbegin()->first + '\0');
    }
    for (const auto& [key, mod] : reads_) {
      if (coarse_reads) break;
      // mod_revision 0 compares as "absent".
      compare.push_back({{"key", Base64Encode(key)},
                         {"target", "MOD"},
                         {"result", "EQUAL"},
                         {"mod_revision", mod}});
    }
    // The ranges share one condition, so overlapping ones merge: repeated
    // scans then cost one compare, not one each.
    std::sort(ranges_.begin(), ranges_.end());
    std::vector<std::pair<std::string, std::string>> ranges;
    for (auto& range : ranges_) {
      if (!ranges.empty() && range.first <= ranges.back().second) {
        ranges.back().second = std::max(ranges.back().second, range.second);
      } else {
        ranges.push_back(std::move(range));
      }
    }
    std::vector<std::pair<std::string, int64_t>> scanned;
    for (const auto& [key, mod] : scanned_) {
      if (!reads_.contains(key)) scanned.emplace_back(key, mod);
    }
    if (!coarse_reads && reads_.size() + ranges.size() + scanned.size() <= kMaxTxnOps) {
      for (const auto& [key, mod] : scanned) {
        compare.push_back({{"key", Base64Encode(key)},
                           {"target", "MOD"},
                           {"result", "EQUAL"},
                           {"mod_revision", mod}});
      }
    } else if (!scanned.empty() || coarse_reads) {
      // Too many to check one by one: fail on any delete since the snapshot.
      compare.push_back({{"key", Base64Encode(shared_->deletes_key)},
                         {"target", "MOD"},
                         {"result", "LESS"},
                         {"mod_revision", revision_ + 1}});
    }
    for (const auto& [lo, hi] : ranges) {
      // Every key now in the range was last modified at or before the
      // snapshot: no insert or update there since.
      compare.push_back({{"key", Base64Encode(lo)},
                         {"range_end", Base64Encode(hi)},
                         {"target", "MOD"},
                         {"result", "LESS"},
                         {"mod_revision", revision_ + 1}});
    }
    if (compare.size() > kMaxTxnOps) {
      return IoError(shared_->client->url() + ": a transaction read " +
                     std::to_string(compare.size()) + " keys and ranges; etcd checks at most " +
                     std::to_string(kMaxTxnOps));
    }
    json success = json::array();
    bool deletes = false;
    for (const auto& [key, value] : writes) {
      std::string full = shared_->prefix + key;
      if (value) {
        success.push_back(
            {{"request_put", {{"key", Base64Encode(full)}, {"value", Base64Encode(*value)}}}});
      } else {
        success.push_back({{"request_delete_range", {{"key", Base64Encode(full)}}}});
        deletes = true;
      }
    }
    if (deletes) {
      success.push_back({{"request_put", {{"key", Base64Encode(shared_->deletes_key)}}}});
    }
    json req = {{"compare", std::move(compare)}, {"success", std::move(success)}};
    // Other transactions of this process wait for an exclusive one.
    std::unique_lock<std::mutex> commit_lock;
    if (!lock_.owns_lock()) commit_lock = std::unique_lock(shared_->exclusive_mu);
    ASSIGN_OR_RETURN(json resp, shared_->client->Call("/v3/kv/txn", req));
    if (!resp.value("succeeded", false)) {
      return Conflict("transaction conflict on " + shared_->client->url() +
                      ": another transaction changed what this one read");
    }
    return Status::Ok();
  }

 private:
  // A range request at this transaction's revision; the first one fixes it.
  Result<json> Range(json req) {
    if (revision_ != 0) req["revision"] = revision_;
    ASSIGN_OR_RETURN(json resp, shared_->client->Call("/v3/kv/range", req));
    if (revision_ == 0) {
      auto header = resp.find("header");
      if (header == resp.end()) return IoError(shared_->client->url() + ": etcd answer has no header");
      revision_ = Int64Field(*header, "revision");
    }
    return resp;
  }

  std::shared_ptr<Shared> shared_;
  std::unique_lock<std::mutex> lock_;
  int64_t revision_ = 0;                  // the snapshot; 0 before the first read
  std::map<std::string, int64_t> reads_;    // full key got -> mod_revision (0: absent)
  std::map<std::string, int64_t> scanned_;  // full key scanned -> mod_revision
  std::vector<std::pair<std::string, std::string>> ranges_;  // scanned [lo, hi)
};

class EtcdKvStore final : public KvStore {
 public:
  explicit EtcdKvStore(std::shared_ptr<Shared> shared) : shared_(std::move(shared)) {}

  std::string Url() const override { return shared_->client->url(); }

  Result<std::unique_ptr<KvTxn>> Begin() override {
    return std::unique_ptr<KvTxn>(std::make_unique<EtcdTxn>(shared_, false));
  }
  Result<std::unique_ptr<KvTxn>> BeginExclusive() override {
    return std::unique_ptr<KvTxn>(std::make_unique<EtcdTxn>(shared_, true));
  }

 private:
  std::shared_ptr<Shared> shared_;
};

}  // namespace

Result<std::unique_ptr<KvStore>> OpenEtcdKv(std::string_view url, const KvOptions&) {
  std::string_view rest = url;
  if (rest.substr(0, 7) != "etcd://") return Invalid("not an etcd URL: '" + std::string(url) + "'");
  rest.remove_prefix(7);
  size_t slash = rest.find('/');
  std::string_view hosts = rest.substr(0, slash);
  std::string_view name = slash == std::string_view::npos ? "" : rest.substr(slash + 1);
  int64_t timeout_ms = kDefaultOperationTimeoutMs;
  if (size_t q = name.find('?'); q != std::string_view::npos) {
    std::string_view query = name.substr(q + 1);
    name = name.substr(0, q);
    if (query.substr(0, 11) != "timeout_ms=" || query.size() == 11 ||
        query.find_first_not_of("0123456789", 11) != std::string_view::npos) {
      return Invalid("etcd URL '" + std::string(url) + "': the only option is timeout_ms=N");
    }
    timeout_ms = std::stoll(std::string(query.substr(11)));
  }
  while (!name.empty() && name.back() == '/') name.remove_suffix(1);
  if (name.empty()) {
    return Invalid("etcd URL '" + std::string(url) + "' needs a prefix: etcd://HOST:PORT/PREFIX");
  }
  std::vector<std::string> endpoints;
  while (!hosts.empty()) {
    size_t comma = hosts.find(',');
    std::string_view host = hosts.substr(0, comma);
    if (host.empty() || host.find(':') == std::string_view::npos) {
      return Invalid("etcd URL '" + std::string(url) + "': expected HOST:PORT, got '" +
                     std::string(host) + "'");
    }
    endpoints.emplace_back(host);
    if (comma == std::string_view::npos) break;
    hosts.remove_prefix(comma + 1);
  }
  if (endpoints.empty()) return Invalid("etcd URL '" + std::string(url) + "' names no endpoint");
  auto shared = std::make_shared<Shared>();
  shared->client = std::make_unique<EtcdClient>(std::string(url), std::move(endpoints), timeout_ms);
  shared->prefix = "/" + std::string(name) + "/";
  shared->deletes_key = "/" + std::string(name) + "!deletes";
  return std::unique_ptr<KvStore>(std::make_unique<EtcdKvStore>(std::move(shared)));
}

}  // namespace tessera
