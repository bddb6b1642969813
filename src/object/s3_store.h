// S3Store: an ObjectStore in an S3 bucket (AWS or any S3-compatible
// server), over HTTP(S) with Signature V4 in the Authorization header.
//
// The bucket URL picks the addressing style (see s3_url.h): path-style
// http[s]://HOST[:PORT]/BUCKET, or virtual-hosted https://BUCKET.HOST. Keys
// map one to one to object names.
//
// Retries: a request that fails in a way a retry may cure (cannot connect,
// timed out, connection dropped, truncated or malformed response, 5xx,
// 429/503 SlowDown, 400 RequestTimeout) is signed and sent again after a
// jittered, doubling pause, for at most `max_attempts` tries and
// `max_retry_time`; then the call fails with kUnavailable saying why and
// how often it was tried. A ranged GET never returns fewer bytes than the
// server said it sent.
//
// Errors: kNotFound for an absent key (naming it) or bucket (naming it;
// Delete of an absent key succeeds), kPermission for 403 (S3's code and
// message: InvalidAccessKeyId, SignatureDoesNotMatch, AccessDenied) and
// failed TLS verification, kInvalid for other requests S3 refuses (a wrong
// region, say), kUnavailable as above, kIo otherwise. Messages carry the
// method and URL.
//
// Thread-safe: any number of threads may call at once, each request on a
// pooled keep-alive connection of its own (s3_http.h).
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "object/object_store.h"
#include "object/s3_http.h"
#include "object/s3_sign.h"
#include "object/s3_url.h"

namespace tessera {

struct S3Options {
  std::string access_key;
  std::string secret_key;
  std::string session_token;  // temporary credentials; "" = none
  std::string region;         // "" = from an AWS host name, else us-east-1
  bool skip_tls_verify = false;
  // CA bundle for TLS; "" = $AWS_CA_BUNDLE, $CURL_CA_BUNDLE or $SSL_CERT_FILE
  // when set, else the system's.
  std::string ca_bundle;

  std::chrono::milliseconds connect_timeout{10000};
  long low_speed_limit = 1024;  // bytes/s, for low_speed_time: abandon the transfer
  std::chrono::seconds low_speed_time{30};

  int max_attempts = 6;  // first try included
  std::chrono::milliseconds first_backoff{100};
  std::chrono::milliseconds max_backoff{5000};
  std::chrono::milliseconds max_retry_time{30000};  // no new try after this long

  uint64_t multipart_threshold = 64ull << 20;  // Put uses multipart above this size
  uint64_t part_size = 16ull << 20;            // at least 5 MiB (S3's minimum)
  int part_concurrency = 4;                    // parts in flight per multipart upload
  size_t max_idle_connections = 64;
};

class S3Store : public ObjectStore {
 public:
  // Parses the bucket URL and sets the client up; sends no request (Put,
  // Get or List a key to find out whether the bucket is usable). kInvalid
  // for a bad URL or missing credentials.
  static Result<std::unique_ptr<S3Store>> Open(std::string_view bucket_url, S3Options options);

  std::string Describe() const override { return location_.Url(); }
  Status Put(std::string_view key, std::string_view data) override;
  Result<std::string> Get(std::string_view key, uint64_t offset, int64_t length) override;
  Result<ObjectInfo> Head(std::string_view key) override;
  Status Delete(std::string_view key) override;
  Result<ListPage> List(std::string_view prefix, std::string_view start_after,
                        size_t limit) override;

  // Deletes many keys, up to 1000 per request (POST ?delete). Absent keys
  // count as deleted. kIo naming the first key S3 could not delete.
  Status DeleteMany(const std::vector<std::string>& keys);

  // Multipart upload, for objects too large for one PUT (up to 10000 parts
  // of 5 MiB to 5 GiB each; only the last may be smaller). An upload not
  // completed must be aborted, or its parts stay (and cost) in the bucket.
  Result<std::string> CreateMultipartUpload(std::string_view key);  // the upload id
  // Returns the part's ETag; parts are numbered from 1.
  Result<std::string> UploadPart(std::string_view key, std::string_view upload_id,
                                 int part_number, std::string_view data);
  // etags[i] belongs to part i + 1.
  Status CompleteMultipartUpload(std::string_view key, std::string_view upload_id,
                                 const std::vector<std::string>& etags);
  Status AbortMultipartUpload(std::string_view key, std::string_view upload_id);
  // Stores `data` as a multipart upload of `part_size` parts (0: the
  // options' size), `part_concurrency` at a time; aborts it on failure.
  Status PutMultipart(std::string_view key, std::string_view data, uint64_t part_size = 0);

  const S3Location& location() const { return location_; }
  const std::string& region() const { return region_; }

  // Counters since Open, for tests and benchmarks.
  struct Stats {
    uint64_t requests = 0;         // HTTP requests sent, retries included
    uint64_t retries = 0;          // requests that were retries
    uint64_t new_connections = 0;  // TCP connections opened
  };
  Stats stats() const;

 private:
  struct Call {
    std::string method = {};
    std::string key = {};  // "" for the bucket itself
    QueryParams query = {};
    std::string_view body = {};
    std::vector<std::string> headers = {};  // unsigned extras: "Range: ...", "Content-Type: ..."
    std::string content_md5 = {};           // signed when not empty
  };
  // Looks at a 2xx response; kUnavailable means "malformed or truncated,
  // send again".
  using Check = std::function<Status(const HttpResponse&)>;

  S3Store(S3Location location, S3Options options, std::string region);
  // Sends `call` with retries (see above). Returns the last response for
  // non-2xx statuses no retry cures; the caller maps them (HttpError).
  Result<HttpResponse> Send(const Call& call, const Check& check = nullptr);
  Result<HttpResponse> SendOnce(const Call& call, const std::string& payload_hash);
  // The Status for an error response.
  Status HttpError(const Call& call, const HttpResponse& response) const;
  std::string Url(const Call& call) const;
  Status CheckKey(std::string_view key) const;

  const S3Location location_;
  const S3Options options_;
  const std::string region_;
  HttpClient http_;
  std::atomic<uint64_t> requests_{0}, retries_{0}, new_connections_{0};
};

}  // namespace tessera
