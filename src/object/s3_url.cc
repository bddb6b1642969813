#include "object/s3_url.h"

#include <cctype>
#include <vector>

#include "object/s3_sign.h"

namespace tessera {
namespace {

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool IsIpv4(std::string_view host) {
  if (host.empty()) return false;
  for (char c : host) {
    if (!std::isdigit(static_cast<unsigned char>(c)) && c != '.') return false;
  }
  return true;
}

std::vector<std::string> Split(std::string_view s, char sep) {
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    size_t end = s.find(sep, start);
    out.emplace_back(s.substr(start, end == std::string_view::npos ? s.npos : end - start));
    if (end == std::string_view::npos) return out;
    start = end + 1;
  }
}

// The region an AWS S3 endpoint name carries, "" for other hosts.
std::string RegionOf(const std::string& domain) {
  std::string rest;
  for (const char* suffix : {".amazonaws.com", ".amazonaws.com.cn"}) {
    std::string_view s(suffix);
    if (domain.size() > s.size() && domain.compare(domain.size() - s.size(), s.size(), s) == 0) {
      rest = domain.substr(0, domain.size() - s.size());
    }
  }
  if (rest.empty()) return "";
  std::vector<std::string> labels = Split(rest, '.');
  // The S3 label is the last one named s3 or s3-REGION; what follows it
  // (dualstack, then the region) says where.
  for (size_t i = labels.size(); i-- > 0;) {
    const std::string& l = labels[i];
    if (l == "s3" || l == "s3-external-1") {
      for (size_t j = i + 1; j < labels.size(); ++j) {
        if (labels[j] != "dualstack" && labels[j] != "s3-accesspoint") return labels[j];
      }
      return "us-east-1";
    }
    if (l.starts_with("s3-")) return l.substr(3);
  }
  return "";
}

Status CheckBucketName(std::string_view url, const std::string& bucket) {
  auto alnum = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  bool ok = bucket.size() >= 3 && bucket.size() <= 63 && alnum(bucket.front()) &&
            alnum(bucket.back());
  for (char c : bucket) ok = ok && (alnum(c) || c == '-' || c == '.');
  if (ok) return Status::Ok();
  return Invalid("invalid bucket name '" + bucket + "' in '" + std::string(url) +
                 "': use 3-63 lowercase letters, digits, '.' and '-', starting and ending "
                 "with a letter or digit");
}

}  // namespace

std::string S3Location::HostHeader() const {
  return port == 0 ? host : host + ":" + std::to_string(port);
}

std::string S3Location::Path(std::string_view key) const {
  std::string path = virtual_hosted ? "" : "/" + bucket;
  if (key.empty()) return path.empty() ? "/" : path;
  return path + "/" + UriEncode(key, /*keep_slash=*/true);
}

std::string S3Location::Origin() const { return scheme + "://" + HostHeader(); }

std::string S3Location::Url() const {
  return virtual_hosted ? Origin() : Origin() + "/" + bucket;
}

Result<S3Location> ParseS3Url(std::string_view url) {
  auto bad = [&](const std::string& why) {
    return Invalid("invalid S3 bucket URL '" + std::string(url) + "': " + why +
                   " (expected http[s]://HOST[:PORT]/BUCKET or https://BUCKET.HOST)");
  };
  S3Location loc;
  std::string_view rest;
  const std::string lower = Lower(url.substr(0, 8));
  if (lower.starts_with("https://")) {
    loc.scheme = "https";
    rest = url.substr(8);
  } else if (lower.starts_with("http://")) {
    loc.scheme = "http";
    rest = url.substr(7);
  } else {
    return bad("it must start with http:// or https://");
  }
  if (rest.find_first_of("?#") != std::string_view::npos) return bad("it has a query or fragment");
  size_t slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  std::string_view path = slash == std::string_view::npos ? "" : rest.substr(slash);
  if (authority.find('@') != std::string_view::npos) {
    return bad("credentials do not go in the URL; use --access-key and --secret-key");
  }
  std::string_view port_text;
  if (authority.starts_with("[")) {  // IPv6 literal
    size_t close = authority.find(']');
    if (close == std::string_view::npos) return bad("unclosed '[' in the host");
    loc.host = Lower(authority.substr(0, close + 1));
    std::string_view after = authority.substr(close + 1);
    if (!after.empty() && !after.starts_with(":")) return bad("junk after the IPv6 address");
    if (!after.empty()) port_text = after.substr(1);
    if (after == ":") return bad("empty port");
  } else {
    size_t colon = authority.find(':');
    loc.host = Lower(authority.substr(0, colon));
    if (colon != std::string_view::npos) {
      port_text = authority.substr(colon + 1);
      if (port_text.empty()) return bad("empty port");
    }
    for (char c : loc.host) {
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-') {
        return bad("invalid character '" + std::string(1, c) + "' in the host");
      }
    }
  }
  if (loc.host.empty() || loc.host == "[]") return bad("no host");
  if (!port_text.empty()) {
    int port = 0;
    for (char c : port_text) {
      if (!std::isdigit(static_cast<unsigned char>(c)) || port > 65535) {
        return bad("invalid port '" + std::string(port_text) + "'");
      }
      port = port * 10 + (c - '0');
    }
    if (port < 1 || port > 65535) return bad("invalid port '" + std::string(port_text) + "'");
    loc.port = port;
  }
  while (path.ends_with("/")) path.remove_suffix(1);
  std::string domain = loc.host;
  if (path.empty()) {
    size_t dot = loc.host.find('.');
    if (loc.host.starts_with("[") || IsIpv4(loc.host) || dot == std::string::npos) {
      return bad("no bucket: put it in the path");
    }
    loc.virtual_hosted = true;
    loc.bucket = loc.host.substr(0, dot);
    domain = loc.host.substr(dot + 1);
  } else {
    path.remove_prefix(1);
    if (path.find('/') != std::string_view::npos) {
      return bad("a path below the bucket is not supported");
    }
    loc.bucket = std::string(path);
  }
  RETURN_IF_ERROR(CheckBucketName(url, loc.bucket));
  loc.region = RegionOf(domain);
  return loc;
}

}  // namespace tessera
