// A small blocking HTTP/1.1 client over libcurl, made for the S3 store.
//
// Connections: a pool of curl easy handles. A call takes an idle handle (or
// makes one), runs its request on the calling thread, and gives it back;
// each handle keeps its connection open, so the next request on it skips
// the TCP and TLS handshakes. A handle is used by one thread at a time, and
// as many requests can be in flight as there are threads calling. DNS
// answers and TLS sessions are shared by all handles.
//
// Thread-safe; Do() blocks until the response is complete or failed.
#pragma once

#include <curl/curl.h>

#include <chrono>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"

namespace tessera {

struct HttpOptions {
  std::chrono::milliseconds connect_timeout{10000};
  // A transfer slower than low_speed_limit bytes/s for low_speed_time is
  // abandoned (a stalled server, a half-open connection).
  long low_speed_limit = 1024;
  std::chrono::seconds low_speed_time{30};
  bool verify_tls = true;
  std::string ca_file = {};  // CA bundle ("" = libcurl's default)
  std::string ca_path = {};  // CA directory ("" = libcurl's default)
  size_t max_idle_handles = 64;  // idle handles kept (with their connections)
};

struct HttpRequest {
  std::string method;  // GET, HEAD, PUT, POST, DELETE
  std::string url;
  std::vector<std::string> headers;  // "Name: value"
  std::string_view body;             // sent with PUT and POST (must outlive Do)
};

struct HttpResponse {
  long status = 0;
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-case
  std::string body;
  long new_connections = 0;  // connections opened for this request (0: reused)

  // The value of a header (name lower-case), "" when absent.
  std::string Header(std::string_view name) const;
};

class HttpClient {
 public:
  explicit HttpClient(HttpOptions options);
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // Sends one request and reads the whole response, whatever its status.
  // Errors: kUnavailable when a retry may cure it (cannot resolve or connect,
  // timed out, connection dropped, body shorter than Content-Length),
  // kPermission when the server's TLS certificate fails verification,
  // kInvalid for an unusable URL, kIo otherwise. Messages name the URL.
  Result<HttpResponse> Do(const HttpRequest& request);

 private:
  CURL* Acquire();
  void Release(CURL* handle);
  static void LockShare(CURL*, curl_lock_data data, curl_lock_access, void* self);
  static void UnlockShare(CURL*, curl_lock_data data, void* self);

  const HttpOptions options_;
  CURLSH* share_ = nullptr;  // DNS cache and TLS sessions of every handle
  std::mutex share_locks_[CURL_LOCK_DATA_LAST];
  std::mutex mu_;
  std::vector<CURL*> idle_;  // guarded by mu_
};

}  // namespace tessera
