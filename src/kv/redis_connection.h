// One connection to a Redis server: plain TCP through hiredis, or TLS
// (rediss://) through OpenSSL with hiredis only encoding commands and
// parsing replies, since Debian's hiredis has no TLS of its own.
#pragma once

#include <hiredis/hiredis.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace tessera {

struct RedisReplyDeleter {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using RedisReply = std::unique_ptr<redisReply, RedisReplyDeleter>;

struct RedisEndpoint {
  std::string host;
  int port = 6379;
  bool tls = false;
  std::string ca_file;  // TLS: trusted CAs (PEM); empty: the system's
  int connect_timeout_ms = 5000;
  int command_timeout_ms = 30000;
};

class RedisConnection {
 public:
  virtual ~RedisConnection() = default;
  // Connects (and for TLS verifies the server's certificate against the CAs
  // and the host name or IP address); kUnavailable with the reason if not.
  static Result<std::unique_ptr<RedisConnection>> Open(const RedisEndpoint& endpoint);
  // Sends one command and waits for its reply. nullptr on a transport error
  // (error() says which); the connection is unusable after that.
  virtual RedisReply Command(const std::vector<std::string_view>& args) = 0;
  virtual std::string error() const = 0;
};

}  // namespace tessera
