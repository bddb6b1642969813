// Where an S3 bucket lives, parsed from the bucket URL a volume is formatted
// with. One rule decides the addressing style:
//
//   http[s]://HOST[:PORT]/BUCKET[/]   path-style: objects at /BUCKET/KEY on HOST
//   http[s]://BUCKET.DOMAIN[:PORT][/] virtual-hosted: objects at /KEY on BUCKET.DOMAIN
//
// A URL with a path is path-style (the only style IPs, localhost and most
// S3-compatible servers answer); a URL without one is virtual-hosted, the
// bucket being the first label of a host name that has a dot. The region
// comes from an AWS host name (s3.REGION.amazonaws.com, s3-REGION...,
// s3.dualstack.REGION...; s3.amazonaws.com is us-east-1), else "".
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"

namespace tessera {

struct S3Location {
  std::string scheme;  // "http" or "https"
  std::string host;    // the host requests go to (with the bucket when virtual-hosted)
  int port = 0;        // 0: the scheme's default
  std::string bucket;
  bool virtual_hosted = false;
  std::string region;  // from an AWS host name, else ""

  // The Host header: host, plus ":port" when one was given.
  std::string HostHeader() const;
  // The encoded request path of a key ("" for the bucket itself).
  std::string Path(std::string_view key) const;
  // scheme://HostHeader(): the prefix of every request URL.
  std::string Origin() const;
  // The bucket URL in its normal form (no trailing '/'), for messages.
  std::string Url() const;
};

// kInvalid, naming the URL and what is wrong, for anything else: another
// scheme, no bucket, a bad port or bucket name, a query, credentials in the URL.
Result<S3Location> ParseS3Url(std::string_view url);

}  // namespace tessera
