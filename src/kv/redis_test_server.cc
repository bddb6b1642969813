#include "kv/redis_test_server.h"

#include "common/free_port.h"

#include <hiredis/hiredis.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <chrono>
#include <filesystem>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace tessera {
namespace {

// A port nobody listens on right now. Another process could take it before
bool Pings(int port) {
  redisContext* c = redisConnectWithTimeout("127.0.0.1", port, timeval{0, 200000});
  bool ok = false;
  if (c != nullptr && !c->err) {
    auto* r = static_cast<redisReply*>(redisCommand(c, "PING"));
    ok = r != nullptr && r->type == REDIS_REPLY_STATUS;
    if (r != nullptr) freeReplyObject(r);
  }
  if (c != nullptr) redisFree(c);
  return ok;
}

// True once something accepts TCP connections on the port.
bool Accepts(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = fd >= 0 && connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  if (fd >= 0) close(fd);
  return ok;
}

class Server {
 public:
  ~Server() { Stop(); }

  // With `tls`, the server listens only with TLS, with a self-signed
  // certificate for 127.0.0.1 that ca_file() trusts.
  Status Start(bool tls = false) {
    const char* tmp = getenv("TMPDIR");
    std::string pattern =
        std::string(tmp != nullptr && *tmp ? tmp : "/tmp") + "/tessera-redis-XXXXXX";
    if (mkdtemp(pattern.data()) == nullptr) return Unavailable("mkdtemp failed: " + pattern);
    dir_ = pattern;
    port_ = FreePort();
    if (port_ <= 0) return Unavailable("no free port for redis-server");
    std::string port = std::to_string(port_);
    std::string log = dir_ + "/redis.log";
    std::vector<std::string> args = {"redis-server", "--port", port, "--bind", "127.0.0.1",
                                     "--save", "", "--appendonly", "no", "--dir", dir_,
                                     "--logfile", log, "--maxmemory-policy", "noeviction"};
    if (tls) {
      ca_file_ = dir_ + "/cert.pem";
      const std::string key = dir_ + "/key.pem";
      const std::string make = "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=redis"
                               " -addext subjectAltName=IP:127.0.0.1 -keyout '" + key +
                               "' -out '" + ca_file_ + "' >/dev/null 2>&1";
      if (std::system(make.c_str()) != 0) return Unavailable("openssl could not make a certificate");
      args[2] = "0";  // no plain port
      for (const std::string& a : {std::string("--tls-port"), port, std::string("--tls-cert-file"),
                                   ca_file_, std::string("--tls-key-file"), key,
                                   std::string("--tls-ca-cert-file"), ca_file_,
                                   std::string("--tls-auth-clients"), std::string("no")}) {
        args.push_back(a);
      }
    }
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_t parent = getpid();
    pid_ = fork();
    if (pid_ < 0) return Unavailable("fork failed");
    if (pid_ == 0) {
      // Dies with the test process, even when that one crashes.
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(127);
      execvp("redis-server", argv.data());
      _exit(127);
    }
    for (int i = 0; i < 100; ++i) {
      if (tls ? Accepts(port_) : Pings(port_)) return Status::Ok();
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return Unavailable(
            "redis-server did not start (is it installed? apt-get install redis-server); "
            "exit status " + std::to_string(status) + ", log " + log);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    Stop();
    return Unavailable("redis-server on port " + port + " did not answer PING within 5 s");
  }

  void Stop() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
    if (!dir_.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(dir_, ec);
      dir_.clear();
    }
  }

  int port() const { return port_; }
  const std::string& ca_file() const { return ca_file_; }

 private:
  std::string ca_file_;
  pid_t pid_ = -1;
  int port_ = 0;
  std::string dir_;
};

Result<int> TestServerPort() {
  // Destroyed at exit, which kills the server.
  static Server server;
  static std::once_flag once;
  static Status started;
  std::call_once(once, [] { started = server.Start(); });
  if (!started.ok()) return started;
  return server.port();
}

}  // namespace

Result<std::string> RedisTestCommand(const std::vector<std::string>& argv) {
  ASSIGN_OR_RETURN(int port, TestServerPort());
  redisContext* c = redisConnectWithTimeout("127.0.0.1", port, timeval{5, 0});
  if (c == nullptr || c->err) {
    if (c != nullptr) redisFree(c);
    return Unavailable("cannot connect to the test redis-server");
  }
  std::vector<const char*> args;
  std::vector<size_t> lens;
  for (const auto& a : argv) {
    args.push_back(a.data());
    lens.push_back(a.size());
  }
  auto* r = static_cast<redisReply*>(
      redisCommandArgv(c, static_cast<int>(args.size()), args.data(), lens.data()));
  Result<std::string> out = Unavailable("test redis-server: " + std::string(c->errstr));
  if (r != nullptr) {
    std::string text = r->str != nullptr ? std::string(r->str, r->len) : std::string();
    if (r->type == REDIS_REPLY_ERROR) {
      out = IoError(text);
    } else if (r->type == REDIS_REPLY_INTEGER) {
      out = std::to_string(r->integer);
    } else {
      out = text;
    }
    freeReplyObject(r);
  }
  redisFree(c);
  return out;
}

Result<std::string> NewRedisTlsTestUrl() {
  static Server server;
  static std::once_flag once;
  static Status started;
  std::call_once(once, [] { started = server.Start(/*tls=*/true); });
  if (!started.ok()) return started;
  static std::atomic<int> next{0};
  return "rediss://127.0.0.1:" + std::to_string(server.port()) + "/0?prefix=tls" +
         std::to_string(next++) + "&cacert=" + server.ca_file();
}

Result<std::string> NewRedisTestUrl() {
  ASSIGN_OR_RETURN(int port, TestServerPort());
  static std::atomic<int> next{0};
  return "redis://127.0.0.1:" + std::to_string(port) + "/0?prefix=t" +
         std::to_string(getpid()) + "-" + std::to_string(next++);
}

}  // namespace tessera
