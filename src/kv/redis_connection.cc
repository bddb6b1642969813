#include "kv/redis_connection.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace tessera {
namespace {

timeval Millis(int ms) { return timeval{ms / 1000, (ms % 1000) * 1000}; }

// A command's arguments as hiredis takes them.
struct Argv {
  explicit Argv(const std::vector<std::string_view>& args) {
    for (std::string_view a : args) {
      ptrs.push_back(a.data());
      lens.push_back(a.size());
    }
  }
  int count() const { return static_cast<int>(ptrs.size()); }
  std::vector<const char*> ptrs;
  std::vector<size_t> lens;
};

class PlainConnection final : public RedisConnection {
 public:
  explicit PlainConnection(redisContext* c) : c_(c) {}
  ~PlainConnection() override { redisFree(c_); }
  RedisReply Command(const std::vector<std::string_view>& args) override {
    Argv argv(args);
    return RedisReply(static_cast<redisReply*>(
        redisCommandArgv(c_, argv.count(), argv.ptrs.data(), argv.lens.data())));
  }
  std::string error() const override { return c_->errstr; }

 private:
  redisContext* c_;
};

std::string SslError(std::string_view what) {
  unsigned long e = ERR_get_error();
  char buf[256] = {0};
  if (e != 0) ERR_error_string_n(e, buf, sizeof buf);
  ERR_clear_error();
  return std::string(what) + (e != 0 ? std::string(": ") + buf : "");
}

// A TCP connection with a connect timeout, then blocking with send/receive
// timeouts. Returns the fd or -1 with *error set.
int ConnectTcp(const RedisEndpoint& ep, std::string* error) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const std::string port = std::to_string(ep.port);
  if (int rc = getaddrinfo(ep.host.c_str(), port.c_str(), &hints, &found); rc != 0) {
    *error = "cannot resolve " + ep.host + ": " + gai_strerror(rc);
    return -1;
  }
  int fd = -1;
  for (addrinfo* ai = found; ai != nullptr && fd < 0; ai = ai->ai_next) {
    fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
    if (fd < 0) continue;
    int rc = connect(fd, ai->ai_addr, ai->ai_addrlen);
    if (rc != 0 && errno == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      rc = poll(&p, 1, ep.connect_timeout_ms) == 1 ? 0 : -1;
      int soerr = 0;
      socklen_t len = sizeof soerr;
      if (rc == 0 && (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0 || soerr != 0)) {
        errno = soerr;
        rc = -1;
      } else if (rc != 0) {
        errno = ETIMEDOUT;
      }
    }
    if (rc != 0) {
      *error = "cannot connect: " + std::string(strerror(errno));
      close(fd);
      fd = -1;
    }
  }
  freeaddrinfo(found);
  if (fd < 0) return -1;
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  timeval t = Millis(ep.command_timeout_ms);
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &t, sizeof t);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &t, sizeof t);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

class TlsConnection final : public RedisConnection {
 public:
  ~TlsConnection() override {
    if (ssl_ != nullptr) SSL_free(ssl_);
    if (ctx_ != nullptr) SSL_CTX_free(ctx_);
    if (fd_ >= 0) close(fd_);
    if (reader_ != nullptr) redisReaderFree(reader_);
  }

  Status Open(const RedisEndpoint& ep) {
    reader_ = redisReaderCreate();
    ctx_ = SSL_CTX_new(TLS_client_method());
    if (reader_ == nullptr || ctx_ == nullptr) return Unavailable(SslError("out of memory"));
    SSL_CTX_set_min_proto_version(ctx_, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER, nullptr);
    const bool cas = ep.ca_file.empty()
                         ? SSL_CTX_set_default_verify_paths(ctx_) == 1
                         : SSL_CTX_load_verify_locations(ctx_, ep.ca_file.c_str(), nullptr) == 1;
    if (!cas) return Invalid(SslError("cannot load the CA certificates '" + ep.ca_file + "'"));
    std::string why;
    fd_ = ConnectTcp(ep, &why);
    if (fd_ < 0) return Unavailable(why);
    ssl_ = SSL_new(ctx_);
    if (ssl_ == nullptr || SSL_set_fd(ssl_, fd_) != 1) return Unavailable(SslError("TLS setup"));
    // The certificate must name the host we asked for: its IP address when
    // given one, else its DNS name (also sent as SNI).
    in6_addr ip;
    if (inet_pton(AF_INET, ep.host.c_str(), &ip) == 1 || inet_pton(AF_INET6, ep.host.c_str(), &ip) == 1) {
      X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl_), ep.host.c_str());
    } else {
      SSL_set_tlsext_host_name(ssl_, ep.host.c_str());
      SSL_set1_host(ssl_, ep.host.c_str());
    }
    if (SSL_connect(ssl_) != 1) {
      long verify = SSL_get_verify_result(ssl_);
      std::string reason = verify != X509_V_OK
                               ? std::string("certificate rejected: ") +
                                     X509_verify_cert_error_string(verify)
                               : SslError("TLS handshake failed");
      return Unavailable(reason);
    }
    return Status::Ok();
  }

  RedisReply Command(const std::vector<std::string_view>& args) override {
    Argv argv(args);
    char* cmd = nullptr;
    int len = redisFormatCommandArgv(&cmd, argv.count(), argv.ptrs.data(), argv.lens.data());
    if (len < 0) return Broken("cannot encode the command");
    bool sent = true;
    for (int off = 0; sent && off < len;) {
      int n = SSL_write(ssl_, cmd + off, len - off);
      if (n <= 0) sent = false;
      off += n > 0 ? n : 0;
    }
    redisFreeCommand(cmd);
    if (!sent) return Broken(SslError("sending"));
    char buf[16384];
    while (true) {
      void* reply = nullptr;
      if (redisReaderGetReply(reader_, &reply) != REDIS_OK) return Broken("protocol error");
      if (reply != nullptr) return RedisReply(static_cast<redisReply*>(reply));
      int n = SSL_read(ssl_, buf, sizeof buf);
      if (n <= 0) {
        return Broken(SSL_get_error(ssl_, n) == SSL_ERROR_ZERO_RETURN
                          ? std::string("Server closed the connection")
                          : SslError("receiving"));
      }
      redisReaderFeed(reader_, buf, static_cast<size_t>(n));
    }
  }

  std::string error() const override { return error_; }

 private:
  RedisReply Broken(std::string why) {
    error_ = std::move(why);
    return nullptr;
  }

  int fd_ = -1;
  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
  redisReader* reader_ = nullptr;
  std::string error_;
};

}  // namespace

Result<std::unique_ptr<RedisConnection>> RedisConnection::Open(const RedisEndpoint& ep) {
  if (ep.tls) {
    auto c = std::make_unique<TlsConnection>();
    RETURN_IF_ERROR(c->Open(ep));
    return std::unique_ptr<RedisConnection>(std::move(c));
  }
  redisContext* c = redisConnectWithTimeout(ep.host.c_str(), ep.port, Millis(ep.connect_timeout_ms));
  if (c == nullptr) return Unavailable("out of memory");
  if (c->err) {
    std::string why = std::string("cannot connect: ") + c->errstr;
    redisFree(c);
    return Unavailable(why);
  }
  redisSetTimeout(c, Millis(ep.command_timeout_ms));
  return std::unique_ptr<RedisConnection>(std::make_unique<PlainConnection>(c));
}

}  // namespace tessera
