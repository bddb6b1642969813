// AWS Signature Version 4 for requests signed in the Authorization header,
// and the hashes S3 requests carry (SHA-256 payload hash, Content-MD5).
//
// Pure functions over OpenSSL: no I/O, thread-safe. The S3 store signs every
// attempt of every request anew (x-amz-date changes between retries).
#pragma once

#include <cstdint>
#include <ctime>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tessera {

// Lower-case hex SHA-256 of `data`.
std::string Sha256Hex(std::string_view data);
// Raw 32-byte HMAC-SHA256 of `data` under `key`.
std::string HmacSha256(std::string_view key, std::string_view data);
// Base64 of the MD5 of `data` (the Content-MD5 header).
std::string Md5Base64(std::string_view data);
// SHA-256 of the empty string, the payload hash of bodiless requests.
inline constexpr std::string_view kEmptySha256 =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

// SigV4 URI encoding: every byte except A-Z a-z 0-9 - _ . ~ becomes %XX
// (upper-case hex); '/' is kept when `keep_slash` (object key paths).
std::string UriEncode(std::string_view s, bool keep_slash);
// "YYYYMMDDTHHMMSSZ" for a UTC time.
std::string AmzDate(std::time_t t);

// Query parameters, raw (not encoded). A parameter without a value ("?delete")
// has an empty value.
using QueryParams = std::vector<std::pair<std::string, std::string>>;
// Encodes and sorts the parameters: the canonical query string of SigV4,
// also used verbatim as the request's query so that both always agree.
std::string CanonicalQuery(const QueryParams& params);

struct SigV4Credentials {
  std::string access_key;
  std::string secret_key;
  std::string session_token;  // sent as x-amz-security-token when not empty
};

struct SigV4Request {
  std::string method;         // "GET", "PUT", ...
  std::string canonical_uri;  // the encoded path as sent, e.g. "/bucket/a%20b"
  QueryParams query;
  // Headers to sign (names in any case); host, x-amz-date and
  // x-amz-content-sha256 must be among them.
  std::vector<std::pair<std::string, std::string>> headers;
  std::string payload_hash;   // hex SHA-256 of the body (the x-amz-content-sha256 value)
};

struct SigV4Signature {
  std::string canonical_request;
  std::string string_to_sign;
  std::string signature;      // hex
  std::string authorization;  // the Authorization header value
};

// Signs `request` for `region` and `service` ("s3") at `amz_date`
// ("YYYYMMDDTHHMMSSZ", equal to the x-amz-date header).
SigV4Signature SignV4(const SigV4Request& request, const SigV4Credentials& credentials,
                      std::string_view region, std::string_view service,
                      std::string_view amz_date);

}  // namespace tessera
