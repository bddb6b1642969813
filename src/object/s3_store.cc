#include "object/s3_store.h"

#include <algorithm>
#include <cstdlib>
#include <ctime>
#include <mutex>
#include <random>
#include <thread>

#include "common/log.h"
#include "object/s3_xml.h"

namespace tessera {
namespace {

constexpr size_t kMaxKeyBytes = 1024;  // S3's limit
constexpr uint64_t kMinPartSize = 5ull << 20;
constexpr int kMaxParts = 10000;
constexpr size_t kDeleteBatch = 1000;

bool Is2xx(long status) { return status >= 200 && status < 300; }

std::string Getenv(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr ? v : "";
}

// S3's answer in a message: "403 InvalidAccessKeyId: The AWS Access Key Id ...".
std::string Answer(const HttpResponse& r, const S3Error& e) {
  std::string out = std::to_string(r.status);
  if (!e.code.empty()) out += " " + e.code;
  if (!e.message.empty()) out += ": " + e.message;
  if (!e.endpoint.empty()) out += " (endpoint " + e.endpoint + ")";
  return out;
}

// Statuses S3 documents as "try again": throttling and server trouble.
bool RetryableStatus(const HttpResponse& r, const S3Error& e) {
  if (r.status == 500 || r.status == 502 || r.status == 503 || r.status == 504 ||
      r.status == 429) {
    return true;
  }
  return r.status == 400 && e.code == "RequestTimeout";
}

// "bytes FIRST-LAST/TOTAL" (TOTAL may be '*'): FIRST and LAST.
bool ParseContentRange(const std::string& v, uint64_t* first, uint64_t* last) {
  if (!v.starts_with("bytes ")) return false;
  char* end = nullptr;
  const char* p = v.c_str() + 6;
  *first = std::strtoull(p, &end, 10);
  if (end == p || *end != '-') return false;
  p = end + 1;
  *last = std::strtoull(p, &end, 10);
  return end != p && *end == '/' && *last >= *first;
}

}  // namespace

Result<std::unique_ptr<S3Store>> S3Store::Open(std::string_view bucket_url, S3Options options) {
  ASSIGN_OR_RETURN(S3Location location, ParseS3Url(bucket_url));
  if (options.access_key.empty() || options.secret_key.empty()) {
    return Invalid("no S3 credentials for " + location.Url() +
                   ": give an access key and a secret key (or set AWS_ACCESS_KEY_ID and "
                   "AWS_SECRET_ACCESS_KEY)");
  }
  if (options.ca_bundle.empty()) {
    for (const char* env : {"AWS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"}) {
      options.ca_bundle = Getenv(env);
      if (!options.ca_bundle.empty()) break;
    }
  }
  options.max_attempts = std::max(options.max_attempts, 1);
  options.part_concurrency = std::max(options.part_concurrency, 1);
  std::string region = !options.region.empty()     ? options.region
                       : !location.region.empty() ? location.region
                                                  : "us-east-1";
  return std::unique_ptr<S3Store>(new S3Store(std::move(location), std::move(options), region));
}

S3Store::S3Store(S3Location location, S3Options options, std::string region)
    : location_(std::move(location)),
      options_(std::move(options)),
      region_(std::move(region)),
      http_(HttpOptions{.connect_timeout = options_.connect_timeout,
                        .low_speed_limit = options_.low_speed_limit,
                        .low_speed_time = options_.low_speed_time,
                        .verify_tls = !options_.skip_tls_verify,
                        .ca_file = options_.ca_bundle,
                        .ca_path = Getenv("SSL_CERT_DIR"),
                        .max_idle_handles = options_.max_idle_connections}) {}

S3Store::Stats S3Store::stats() const {
  return Stats{requests_.load(), retries_.load(), new_connections_.load()};
}

std::string S3Store::Url(const Call& call) const {
  std::string url = location_.Origin() + location_.Path(call.key);
  if (!call.query.empty()) url += "?" + CanonicalQuery(call.query);
  return url;
}

Status S3Store::CheckKey(std::string_view key) const {
  if (key.empty()) return Invalid("empty object key in " + Describe());
  if (key.size() > kMaxKeyBytes) {
    return Invalid("object key longer than 1024 bytes in " + Describe() + ": " +
                   std::string(key.substr(0, 64)) + "...");
  }
  return Status::Ok();
}

Result<HttpResponse> S3Store::SendOnce(const Call& call, const std::string& payload_hash) {
  const std::string amz_date = AmzDate(std::time(nullptr));
  SigV4Request sign;
  sign.method = call.method;
  sign.canonical_uri = location_.Path(call.key);
  sign.query = call.query;
  sign.payload_hash = payload_hash;
  sign.headers = {{"host", location_.HostHeader()},
                  {"x-amz-content-sha256", payload_hash},
                  {"x-amz-date", amz_date}};
  if (!options_.session_token.empty()) {
    sign.headers.emplace_back("x-amz-security-token", options_.session_token);
  }
  if (!call.content_md5.empty()) sign.headers.emplace_back("content-md5", call.content_md5);
  SigV4Credentials creds{options_.access_key, options_.secret_key, options_.session_token};
  SigV4Signature sig = SignV4(sign, creds, region_, "s3", amz_date);

  HttpRequest req;
  req.method = call.method;
  req.url = Url(call);
  req.body = call.body;
  // The Host header is set explicitly so that what is signed is what is sent.
  for (const auto& [name, value] : sign.headers) req.headers.push_back(name + ": " + value);
  req.headers.push_back("Authorization: " + sig.authorization);
  for (const std::string& h : call.headers) req.headers.push_back(h);
  ++requests_;
  auto response = http_.Do(req);
  if (response.ok()) new_connections_ += static_cast<uint64_t>(response->new_connections);
  return response;
}

Result<HttpResponse> S3Store::Send(const Call& call, const Check& check) {
  thread_local std::minstd_rand rng(std::random_device{}());
  const std::string payload_hash = call.body.empty() ? std::string(kEmptySha256) : Sha256Hex(call.body);
  const auto start = std::chrono::steady_clock::now();
  auto pause = options_.first_backoff;
  for (int attempt = 1;; ++attempt) {
    Status failure;
    auto response = SendOnce(call, payload_hash);
    if (!response.ok()) {
      if (!response.status().Is(StatusCode::kUnavailable)) return response.status();
      failure = response.status();
    } else if (Is2xx(response->status)) {
      Status checked = check ? check(*response) : Status::Ok();
      if (checked.ok()) return response;
      if (!checked.Is(StatusCode::kUnavailable)) return checked;
      failure = Unavailable(call.method + " " + Url(call) + ": " + checked.message());
    } else {
      S3Error e = ParseS3Error(response->body);
      if (!RetryableStatus(*response, e)) return response;
      failure = Unavailable(call.method + " " + Url(call) + ": " + Answer(*response, e));
    }
    std::uniform_int_distribution<int64_t> jitter(pause.count() / 2, pause.count());
    const auto wait = std::chrono::milliseconds(jitter(rng));
    const auto elapsed = std::chrono::steady_clock::now() - start;
    if (attempt >= options_.max_attempts || elapsed + wait > options_.max_retry_time) {
      return Unavailable(failure.message() + " (tried " + std::to_string(attempt) +
                         (attempt == 1 ? " time)" : " times)"));
    }
    LogDebug(failure.message() + "; retrying in " + std::to_string(wait.count()) + " ms");
    std::this_thread::sleep_for(wait);
    pause = std::min(pause * 2, options_.max_backoff);
    ++retries_;
  }
}

Status S3Store::HttpError(const Call& call, const HttpResponse& r) const {
  const S3Error e = ParseS3Error(r.body);
  const std::string what = call.method + " " + Url(call) + ": " + Answer(r, e);
  if (e.code == "NoSuchBucket") {
    return NotFound("bucket '" + location_.bucket + "' does not exist at " + location_.Origin() +
                    " (" + what + ")");
  }
  if (r.status == 404 && !call.key.empty() && (e.code.empty() || e.code == "NoSuchKey")) {
    return NotFound("object '" + call.key + "' not found in " + Describe());
  }
  if (r.status == 404) return NotFound(what);
  if (r.status == 403) {
    // A HEAD response has no body to say why.
    return Status(StatusCode::kPermission,
                  what + (e.code.empty() ? " (access denied: check the access key, secret key "
                                           "and region)"
                                         : ""));
  }
  if (r.status == 301 || r.status == 307 || r.status == 400) {
    return Invalid(what);
  }
  return IoError(what);
}

Status S3Store::Put(std::string_view key, std::string_view data) {
  RETURN_IF_ERROR(CheckKey(key));
  if (data.size() > options_.multipart_threshold) return PutMultipart(key, data);
  Call call{.method = "PUT", .key = std::string(key), .body = data,
            .headers = {"Content-Type: application/octet-stream"}};
  ASSIGN_OR_RETURN(HttpResponse r, Send(call));
  if (!Is2xx(r.status)) return HttpError(call, r);
  return Status::Ok();
}

Result<std::string> S3Store::Get(std::string_view key, uint64_t offset, int64_t length) {
  RETURN_IF_ERROR(CheckKey(key));
  if (length == 0) {
    // Nothing to read, but an absent object is still an error.
    ASSIGN_OR_RETURN(ObjectInfo info, Head(key));
    (void)info;
    return std::string();
  }
  // Always a Range, also for whole objects: a 206 names the bytes it
  // carries, so a short body is caught even when its length header agrees.
  std::string range = "Range: bytes=" + std::to_string(offset) + "-";
  if (length > 0) range += std::to_string(offset + static_cast<uint64_t>(length) - 1);
  Call call{.method = "GET", .key = std::string(key), .headers = {range}};
  auto check = [&](const HttpResponse& r) -> Status {
    if (r.status == 206) {
      uint64_t first = 0, last = 0;
      if (!ParseContentRange(r.Header("content-range"), &first, &last) || first != offset) {
        return Unavailable("206 with a bad Content-Range '" + r.Header("content-range") + "'");
      }
      if (r.body.size() != last - first + 1) {
        return Unavailable("truncated response: " + std::to_string(r.body.size()) + " of " +
                           std::to_string(last - first + 1) + " bytes");
      }
      if (length > 0 && r.body.size() > static_cast<uint64_t>(length)) {
        return IoError("206 with more bytes than asked for");
      }
      return Status::Ok();
    }
    // 200: the whole object (a server that ignores Range, or an empty one).
    const std::string len = r.Header("content-length");
    if (!len.empty() && std::strtoull(len.c_str(), nullptr, 10) != r.body.size()) {
      return Unavailable("truncated response: " + std::to_string(r.body.size()) + " of " + len +
                         " bytes");
    }
    return Status::Ok();
  };
  ASSIGN_OR_RETURN(HttpResponse r, Send(call, check));
  if (r.status == 206) return std::move(r.body);
  if (r.status == 200) {
    if (offset >= r.body.size()) return std::string();
    size_t n = r.body.size() - offset;
    if (length > 0) n = std::min(n, static_cast<size_t>(length));
    return r.body.substr(offset, n);
  }
  // The range starts at or past the end: the object exists, the bytes do not.
  if (r.status == 416) return std::string();
  return HttpError(call, r);
}

Result<ObjectInfo> S3Store::Head(std::string_view key) {
  RETURN_IF_ERROR(CheckKey(key));
  Call call{.method = "HEAD", .key = std::string(key)};
  ASSIGN_OR_RETURN(HttpResponse r, Send(call));
  if (!Is2xx(r.status)) return HttpError(call, r);
  ObjectInfo info;
  info.key = std::string(key);
  const std::string len = r.Header("content-length");
  if (len.empty() || len.find_first_not_of("0123456789") != std::string::npos) {
    return IoError("HEAD " + Url(call) + ": no valid Content-Length");
  }
  info.size = std::strtoull(len.c_str(), nullptr, 10);
  auto mtime = ParseHttpDate(r.Header("last-modified"));
  if (!mtime.ok()) return IoError("HEAD " + Url(call) + ": " + mtime.status().message());
  info.mtime_ns = *mtime;
  return info;
}

Status S3Store::Delete(std::string_view key) {
  RETURN_IF_ERROR(CheckKey(key));
  Call call{.method = "DELETE", .key = std::string(key)};
  ASSIGN_OR_RETURN(HttpResponse r, Send(call));
  if (Is2xx(r.status)) return Status::Ok();
  Status st = HttpError(call, r);
  // Absent already: what Delete promises. A missing bucket is still an error.
  if (r.status == 404 && ParseS3Error(r.body).code != "NoSuchBucket") return Status::Ok();
  return st;
}

Result<ListPage> S3Store::List(std::string_view prefix, std::string_view start_after,
                               size_t limit) {
  if (limit == 0) limit = 1000;
  ListPage page;
  std::string token;
  while (true) {
    Call call{.method = "GET"};
    call.query = {{"list-type", "2"},
                  {"encoding-type", "url"},
                  {"max-keys", std::to_string(std::min<size_t>(limit - page.objects.size(), 1000))}};
    if (!prefix.empty()) call.query.emplace_back("prefix", std::string(prefix));
    if (token.empty() && !start_after.empty()) {
      call.query.emplace_back("start-after", std::string(start_after));
    }
    if (!token.empty()) call.query.emplace_back("continuation-token", token);
    ListV2Page parsed;
    auto check = [&](const HttpResponse& r) -> Status {
      auto p = ParseListV2(r.body);
      if (!p.ok()) return Unavailable("unreadable listing: " + p.status().message());
      parsed = std::move(*p);
      return Status::Ok();
    };
    ASSIGN_OR_RETURN(HttpResponse r, Send(call, check));
    if (!Is2xx(r.status)) return HttpError(call, r);
    for (ObjectInfo& o : parsed.objects) {
      const std::string_view after =
          page.objects.empty() ? start_after : std::string_view(page.objects.back().key);
      if (o.key <= after || !o.key.starts_with(prefix)) {
        return IoError("GET " + Url(call) + ": listing returned '" + o.key +
                       "' out of order or outside the prefix");
      }
      page.objects.push_back(std::move(o));
    }
    // S3 may return short pages before the end: only IsTruncated says more.
    if (!parsed.truncated) return page;
    if (page.objects.size() >= limit) {
      page.more = true;
      return page;
    }
    token = parsed.next_token;
  }
}

Status S3Store::DeleteMany(const std::vector<std::string>& keys) {
  for (size_t begin = 0; begin < keys.size(); begin += kDeleteBatch) {
    std::vector<std::string> batch(keys.begin() + static_cast<std::ptrdiff_t>(begin),
                                   keys.begin() + static_cast<std::ptrdiff_t>(
                                                      std::min(keys.size(), begin + kDeleteBatch)));
    for (const std::string& key : batch) RETURN_IF_ERROR(CheckKey(key));
    ASSIGN_OR_RETURN(std::string body, DeleteRequestXml(batch));
    Call call{.method = "POST", .query = {{"delete", ""}}, .body = body,
              .headers = {"Content-Type: application/xml"}, .content_md5 = Md5Base64(body)};
    std::vector<std::string> errors;
    auto check = [&](const HttpResponse& r) -> Status {
      auto e = ParseDeleteErrors(r.body);
      if (!e.ok()) return Unavailable("unreadable delete result: " + e.status().message());
      errors = std::move(*e);
      return Status::Ok();
    };
    ASSIGN_OR_RETURN(HttpResponse r, Send(call, check));
    if (!Is2xx(r.status)) return HttpError(call, r);
    if (!errors.empty()) {
      return IoError("could not delete " + std::to_string(errors.size()) + " of " +
                     std::to_string(batch.size()) + " keys in " + Describe() + ", first " +
                     errors.front());
    }
  }
  return Status::Ok();
}

Result<std::string> S3Store::CreateMultipartUpload(std::string_view key) {
  RETURN_IF_ERROR(CheckKey(key));
  Call call{.method = "POST", .key = std::string(key), .query = {{"uploads", ""}},
            .headers = {"Content-Type: application/octet-stream"}};
  std::string id;
  auto check = [&](const HttpResponse& r) -> Status {
    auto parsed = ParseUploadId(r.body);
    if (!parsed.ok()) return Unavailable("unreadable response: " + parsed.status().message());
    id = std::move(*parsed);
    return Status::Ok();
  };
  ASSIGN_OR_RETURN(HttpResponse r, Send(call, check));
  if (!Is2xx(r.status)) return HttpError(call, r);
  return id;
}

Result<std::string> S3Store::UploadPart(std::string_view key, std::string_view upload_id,
                                        int part_number, std::string_view data) {
  RETURN_IF_ERROR(CheckKey(key));
  if (part_number < 1 || part_number > kMaxParts) {
    return Invalid("part number " + std::to_string(part_number) + " is not in 1..10000");
  }
  Call call{.method = "PUT", .key = std::string(key),
            .query = {{"partNumber", std::to_string(part_number)},
                      {"uploadId", std::string(upload_id)}},
            .body = data};
  auto check = [](const HttpResponse& r) -> Status {
    return r.Header("etag").empty() ? Unavailable("no ETag in the response") : Status::Ok();
  };
  ASSIGN_OR_RETURN(HttpResponse r, Send(call, check));
  if (!Is2xx(r.status)) return HttpError(call, r);
  return r.Header("etag");
}

Status S3Store::CompleteMultipartUpload(std::string_view key, std::string_view upload_id,
                                        const std::vector<std::string>& etags) {
  RETURN_IF_ERROR(CheckKey(key));
  const std::string body = CompleteMultipartXml(etags);
  Call call{.method = "POST", .key = std::string(key),
            .query = {{"uploadId", std::string(upload_id)}}, .body = body,
            .headers = {"Content-Type: application/xml"}};
  // S3 may answer 200 and still fail, with an <Error> in the body.
  auto check = [&](const HttpResponse& r) -> Status {
    auto doc = ParseXml(r.body);
    if (!doc.ok()) return Unavailable("unreadable response: " + doc.status().message());
    if (doc->name != "Error") return Status::Ok();
    const std::string code = doc->ChildText("Code");
    const std::string msg = code + ": " + doc->ChildText("Message");
    if (code == "InternalError" || code == "SlowDown" || code == "ServiceUnavailable") {
      return Unavailable(msg);
    }
    return IoError("POST " + Url(call) + ": " + msg);
  };
  ASSIGN_OR_RETURN(HttpResponse r, Send(call, check));
  if (!Is2xx(r.status)) return HttpError(call, r);
  return Status::Ok();
}

Status S3Store::AbortMultipartUpload(std::string_view key, std::string_view upload_id) {
  RETURN_IF_ERROR(CheckKey(key));
  Call call{.method = "DELETE", .key = std::string(key),
            .query = {{"uploadId", std::string(upload_id)}}};
  ASSIGN_OR_RETURN(HttpResponse r, Send(call));
  if (Is2xx(r.status) || (r.status == 404 && ParseS3Error(r.body).code == "NoSuchUpload")) {
    return Status::Ok();
  }
  return HttpError(call, r);
}

Status S3Store::PutMultipart(std::string_view key, std::string_view data, uint64_t part_size) {
  RETURN_IF_ERROR(CheckKey(key));
  if (part_size == 0) part_size = options_.part_size;
  part_size = std::max(part_size, kMinPartSize);
  // 10000 parts at most: larger objects get larger parts.
  part_size = std::max<uint64_t>(part_size, (data.size() + kMaxParts - 1) / kMaxParts);
  const size_t parts = std::max<size_t>(1, (data.size() + part_size - 1) / part_size);
  ASSIGN_OR_RETURN(std::string upload_id, CreateMultipartUpload(key));

  std::vector<std::string> etags(parts);
  std::atomic<size_t> next{0};
  std::mutex mu;
  Status first_error;
  auto worker = [&] {
    for (size_t i = next++; i < parts; i = next++) {
      {
        std::lock_guard lock(mu);
        if (!first_error.ok()) return;
      }
      const size_t begin = i * part_size;
      auto etag = UploadPart(key, upload_id, static_cast<int>(i + 1),
                             data.substr(begin, std::min<size_t>(part_size, data.size() - begin)));
      std::lock_guard lock(mu);
      if (!etag.ok()) {
        if (first_error.ok()) first_error = etag.status();
        return;
      }
      etags[i] = std::move(*etag);
    }
  };
  std::vector<std::thread> threads;
  const size_t n_threads = std::min<size_t>(parts, static_cast<size_t>(options_.part_concurrency));
  for (size_t t = 1; t < n_threads; ++t) threads.emplace_back(worker);
  worker();
  for (std::thread& t : threads) t.join();

  Status st = first_error;
  if (st.ok()) {
    st = CompleteMultipartUpload(key, upload_id, etags);
    if (st.Is(StatusCode::kNotFound)) {
      // A retried Complete whose first try did complete finds no upload:
      // the object tells whether it is there.
      auto head = Head(key);
      if (head.ok() && head->size == data.size()) return Status::Ok();
    }
    if (st.ok()) return st;
  }
  if (Status abort = AbortMultipartUpload(key, upload_id); !abort.ok()) {
    LogWarn("could not abort multipart upload of " + std::string(key) + " in " + Describe() +
            ": " + abort.ToString());
  }
  return st.WithContext("multipart upload of '" + std::string(key) + "'");
}

}  // namespace tessera
