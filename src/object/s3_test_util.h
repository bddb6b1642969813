// Test helpers for the S3 store (compiled into test binaries only):
//
// MotoServer: a real moto_server on a free loopback port, started and
// stopped by the test process (it also dies with that process). With
// `auth`, moto checks every request's signature and access key against an
// IAM user that Start() creates, with full access; without, it accepts any
// well-formed signature. (moto's own check decodes the query string before
// it signs it, so with auth on, requests whose query holds characters that
// must be %-encoded, such as a '/' in a List prefix, fail: tests with auth
// stick to plain keys and prefixes.)
//
// FaultProxy: a TCP proxy in front of a server on loopback that can answer
// the next requests with 500 or 503 SlowDown, drop the connection, cut a
// response mid-body, shorten a body (and its Content-Length), or stall. It
// keeps client connections alive even though moto closes each one, and
// counts them, so tests can see connections being reused.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/free_port.h"
#include "common/status.h"

namespace tessera {

class MotoServer {
 public:
  struct Tls {
    std::string cert_file;  // PEM; also the CA bundle that trusts it
    std::string key_file;
  };

  // kUnavailable (saying what to install) when moto_server cannot be run or
  // does not answer within 30 s.
  static Result<std::unique_ptr<MotoServer>> Start(bool auth, const Tls* tls = nullptr);
  // One server per test process, without auth, started on first use and
  // stopped at exit. Null (with the reason in *error) if it cannot start.
  static MotoServer* Shared(std::string* error);
  ~MotoServer();

  int port() const { return port_; }
  std::string endpoint() const;  // http[s]://127.0.0.1:PORT
  const std::string& access_key() const { return access_key_; }
  const std::string& secret_key() const { return secret_key_; }
  // Creates a bucket (PUT /NAME) with this server's keys.
  Status CreateBucket(const std::string& name);
  // A bucket name not used before in this process.
  static std::string UniqueBucketName();

 private:
  MotoServer() = default;
  Status CreateUser();

  pid_t pid_ = -1;
  int port_ = 0;
  bool tls_ = false;
  std::string access_key_ = "AKIATESSERATEST00001";
  std::string secret_key_ = "tessera/test/secret/key/0000000000000000";
};

// Writes a self-signed certificate for 127.0.0.1 and its key into `dir`
// with the openssl command.
Result<MotoServer::Tls> MakeSelfSignedCert(const std::string& dir);

class FaultProxy {
 public:
  enum class Fault {
    kNone,
    kSlowDown,         // 503 SlowDown, connection kept
    kInternalError,    // 500 InternalError, connection kept
    kDrop,             // close the connection without answering
    kCutMidBody,       // forward the headers and half the body, then close
    kShortBody,        // half the body, with a Content-Length saying so
    kStall,            // answer nothing until the client gives up
  };

  // Listens on a free loopback port and forwards to 127.0.0.1:upstream_port.
  static Result<std::unique_ptr<FaultProxy>> Start(int upstream_port);
  ~FaultProxy();

  int port() const { return port_; }
  // The next `count` requests whose method is `method` ("" = any) get `fault`.
  void FailNext(Fault fault, int count, const std::string& method = "");
  int connections() const { return connections_.load(); }
  int requests() const { return requests_.load(); }
  int requests(const std::string& method);  // of that method only
  int faults_injected() const { return faults_.load(); }

 private:
  FaultProxy() = default;
  void AcceptLoop();
  void Serve(int fd);
  Fault TakeFault(const std::string& method);

  int listen_fd_ = -1;
  int port_ = 0;
  int upstream_port_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<int> connections_{0}, requests_{0}, faults_{0};
  std::thread acceptor_;
  std::mutex mu_;
  std::vector<std::thread> workers_;  // guarded by mu_
  std::vector<int> client_fds_;       // guarded by mu_
  Fault fault_ = Fault::kNone;        // guarded by mu_
  int fault_count_ = 0;               // guarded by mu_
  std::string fault_method_;          // guarded by mu_
  std::map<std::string, int> by_method_;  // guarded by mu_
};

}  // namespace tessera
