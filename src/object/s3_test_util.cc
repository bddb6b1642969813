#include "object/s3_test_util.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "common/free_port.h"
#include "object/s3_http.h"
#include "object/s3_sign.h"
#include "object/s3_xml.h"

extern char** environ;

namespace tessera {
namespace {

std::string TempDir() {
  const char* t = std::getenv("TMPDIR");
  return t != nullptr && *t != '\0' ? t : "/tmp";
}

bool CanConnect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  close(fd);
  return ok;
}

int ConnectLoopback(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

std::string Tail(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str();
  if (s.size() > 600) s = "..." + s.substr(s.size() - 600);
  for (char& c : s) {
    if (c == '\n') c = ' ';
  }
  return s;
}

// A signed request to the test server (moto checks it when auth is on).
Result<HttpResponse> Signed(HttpClient& http, const std::string& endpoint, int port,
                            const std::string& method, const std::string& path,
                            const std::string& service, const std::string& body,
                            const std::string& access_key, const std::string& secret_key) {
  const std::string date = AmzDate(std::time(nullptr));
  const std::string hash = Sha256Hex(body);
  SigV4Request req;
  req.method = method;
  req.canonical_uri = path;
  req.payload_hash = hash;
  req.headers = {{"host", "127.0.0.1:" + std::to_string(port)},
                 {"x-amz-content-sha256", hash},
                 {"x-amz-date", date}};
  SigV4Signature sig = SignV4(req, {access_key, secret_key, ""}, "us-east-1", service, date);
  HttpRequest http_req;
  http_req.method = method;
  http_req.url = endpoint + path;
  http_req.body = body;
  for (const auto& [n, v] : req.headers) http_req.headers.push_back(n + ": " + v);
  http_req.headers.push_back("Authorization: " + sig.authorization);
  if (service == "iam") http_req.headers.push_back("Content-Type: application/x-www-form-urlencoded");
  return http.Do(http_req);
}

bool SendAll(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n <= 0) return false;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

// Reads into *buf until it holds "\r\n\r\n"; returns the head's length or 0 at EOF.
size_t ReadHead(int fd, std::string* buf) {
  char tmp[65536];
  while (true) {
    size_t end = buf->find("\r\n\r\n");
    if (end != std::string::npos) return end + 4;
    ssize_t n = recv(fd, tmp, sizeof(tmp), 0);
    if (n <= 0) return 0;
    buf->append(tmp, static_cast<size_t>(n));
  }
}

bool ReadAtLeast(int fd, std::string* buf, size_t n) {
  char tmp[65536];
  while (buf->size() < n) {
    ssize_t r = recv(fd, tmp, sizeof(tmp), 0);
    if (r <= 0) return false;
    buf->append(tmp, static_cast<size_t>(r));
  }
  return true;
}

// The value of a header in an HTTP head, "" when absent (or -1 as a number).
std::string HeaderOf(const std::string& head, const std::string& name) {
  std::istringstream in(head);
  std::string line;
  while (std::getline(in, line)) {
    size_t colon = line.find(':');
    if (colon == std::string::npos || colon != name.size()) continue;
    bool match = true;
    for (size_t i = 0; i < colon; ++i) {
      match = match && std::tolower(static_cast<unsigned char>(line[i])) == name[i];
    }
    if (!match) continue;
    std::string v = line.substr(colon + 1);
    while (!v.empty() && (v.back() == '\r' || v.back() == ' ')) v.pop_back();
    while (!v.empty() && v.front() == ' ') v.erase(0, 1);
    return v;
  }
  return "";
}

// The head without the given header lines.
std::string WithoutHeader(const std::string& head, const std::string& name) {
  std::string out;
  size_t pos = 0;
  while (pos < head.size()) {
    size_t end = head.find("\r\n", pos);
    if (end == std::string::npos) end = head.size();
    std::string line = head.substr(pos, end - pos);
    std::string lower = line.substr(0, name.size() + 1);
    for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (lower != name + ":") out += line + "\r\n";
    pos = end + 2;
  }
  // `head` ended with an empty line; keep exactly one.
  while (out.ends_with("\r\n\r\n")) out.resize(out.size() - 2);
  return out + "\r\n";
}

std::string Canned(int status, const std::string& reason, const std::string& code,
                   const std::string& message) {
  std::string body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>" + code +
                     "</Code><Message>" + message + "</Message></Error>";
  return "HTTP/1.1 " + std::to_string(status) + " " + reason +
         "\r\nContent-Type: application/xml\r\nContent-Length: " + std::to_string(body.size()) +
         "\r\n\r\n" + body;
}

}  // namespace

Result<MotoServer::Tls> MakeSelfSignedCert(const std::string& dir) {
  MotoServer::Tls tls{dir + "/cert.pem", dir + "/key.pem"};
  std::string cmd = "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
                    " -days 2 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 -keyout '" +
                    tls.key_file + "' -out '" + tls.cert_file + "' >/dev/null 2>&1";
  if (std::system(cmd.c_str()) != 0) {
    return Unavailable("could not make a certificate with the openssl command (apt install openssl)");
  }
  return tls;
}

Result<std::unique_ptr<MotoServer>> MotoServer::Start(bool auth, const Tls* tls) {
  std::string last_error;
  for (int attempt = 0; attempt < 3; ++attempt) {
    std::unique_ptr<MotoServer> server(new MotoServer());
    server->port_ = FreePort();
    server->tls_ = tls != nullptr;
    const std::string port = std::to_string(server->port_);
    const std::string log = TempDir() + "/tessera-moto-" + port + ".log";
    std::vector<std::string> args = {"moto_server", "-H", "127.0.0.1", "-p", port};
    if (tls != nullptr) args.insert(args.end(), {"-c", tls->cert_file, "-k", tls->key_file});
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    // The environment is built before fork: the child may only exec.
    std::vector<std::string> env_strings;
    for (char** e = environ; *e != nullptr; ++e) {
      if (!std::string_view(*e).starts_with("INITIAL_NO_AUTH_ACTION_COUNT=")) {
        env_strings.emplace_back(*e);
      }
    }
    // Three requests without checks: creating the IAM user, its key and policy.
    if (auth) env_strings.emplace_back("INITIAL_NO_AUTH_ACTION_COUNT=3");
    std::vector<char*> envp;
    for (std::string& e : env_strings) envp.push_back(e.data());
    envp.push_back(nullptr);
    const pid_t parent = getpid();
    int log_fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    pid_t pid = fork();
    if (pid < 0) return Unavailable("fork failed");
    if (pid == 0) {
      // The server dies with the test, whatever happens to the test.
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(1);
      int null_fd = open("/dev/null", O_RDONLY);
      dup2(null_fd, 0);
      if (log_fd >= 0) {
        dup2(log_fd, 1);
        dup2(log_fd, 2);
      }
      execvpe("moto_server", argv.data(), envp.data());
      _exit(127);
    }
    if (log_fd >= 0) close(log_fd);
    server->pid_ = pid;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    bool ready = false;
    while (std::chrono::steady_clock::now() < deadline) {
      int wstatus = 0;
      if (waitpid(pid, &wstatus, WNOHANG) == pid) {
        server->pid_ = -1;
        if (WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 127) {
          unlink(log.c_str());
          return Unavailable(
              "moto_server is not on PATH (it comes with Python's moto package, "
              "`pip install 'moto[server]'`)");
        }
        last_error = "moto_server exited at start: " + Tail(log);
        break;
      }
      if (CanConnect(server->port_)) {
        ready = true;
        break;
      }
      usleep(20000);
    }
    unlink(log.c_str());  // the server keeps writing to it, unnamed
    if (!ready) {
      if (last_error.empty()) last_error = "moto_server did not listen on port " + port + " within 30 s";
      continue;  // killed by the destructor; another port may do
    }
    if (auth) {
      Status st = server->CreateUser();
      if (!st.ok()) return st.WithContext("setting up moto_server's IAM user");
    }
    return server;
  }
  return Unavailable(last_error);
}

MotoServer::~MotoServer() {
  if (pid_ <= 0) return;
  kill(pid_, SIGTERM);
  for (int i = 0; i < 250; ++i) {
    if (waitpid(pid_, nullptr, WNOHANG) == pid_) return;
    usleep(20000);
  }
  kill(pid_, SIGKILL);
  waitpid(pid_, nullptr, 0);
}

MotoServer* MotoServer::Shared(std::string* error) {
  static std::unique_ptr<MotoServer> server;
  static std::string start_error;
  static bool tried = false;
  if (!tried) {
    tried = true;
    auto started = Start(/*auth=*/false);
    if (started.ok()) {
      server = std::move(*started);
    } else {
      start_error = started.status().ToString();
    }
  }
  if (server == nullptr && error != nullptr) *error = start_error;
  return server.get();
}

std::string MotoServer::endpoint() const {
  return std::string(tls_ ? "https" : "http") + "://127.0.0.1:" + std::to_string(port_);
}

std::string MotoServer::UniqueBucketName() {
  static std::atomic<int> counter{0};
  return "tessera-" + std::to_string(getpid()) + "-" + std::to_string(counter++);
}

Status MotoServer::CreateUser() {
  HttpClient http(HttpOptions{.verify_tls = false});
  // Signed with made-up keys: moto checks none of these three requests, but
  // routes them to IAM by the credential scope.
  auto iam = [&](const std::string& form) -> Result<std::string> {
    ASSIGN_OR_RETURN(HttpResponse r, Signed(http, endpoint(), port_, "POST", "/", "iam",
                                            form + "&Version=2010-05-08", "AKIAINITIAL",
                                            "initial"));
    if (r.status != 200) return IoError("IAM " + form + ": HTTP " + std::to_string(r.status) + " " + r.body);
    return r.body;
  };
  RETURN_IF_ERROR(iam("Action=CreateUser&UserName=tessera").status());
  ASSIGN_OR_RETURN(std::string key_xml, iam("Action=CreateAccessKey&UserName=tessera"));
  ASSIGN_OR_RETURN(XmlElement doc, ParseXml(key_xml));
  const XmlElement* result = doc.Child("CreateAccessKeyResult");
  const XmlElement* key = result != nullptr ? result->Child("AccessKey") : nullptr;
  if (key == nullptr) return IoError("no AccessKey in " + key_xml);
  access_key_ = key->ChildText("AccessKeyId");
  secret_key_ = key->ChildText("SecretAccessKey");
  const std::string policy = UriEncode(
      R"({"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]})",
      false);
  return iam("Action=PutUserPolicy&UserName=tessera&PolicyName=all&PolicyDocument=" + policy)
      .status();
}

Status MotoServer::CreateBucket(const std::string& name) {
  HttpClient http(HttpOptions{.verify_tls = false});
  ASSIGN_OR_RETURN(HttpResponse r, Signed(http, endpoint(), port_, "PUT", "/" + name, "s3", "",
                                          access_key_, secret_key_));
  if (r.status != 200) {
    return IoError("creating bucket " + name + ": HTTP " + std::to_string(r.status) + " " + r.body);
  }
  return Status::Ok();
}

Result<std::unique_ptr<FaultProxy>> FaultProxy::Start(int upstream_port) {
  std::unique_ptr<FaultProxy> proxy(new FaultProxy());
  proxy->upstream_port_ = upstream_port;
  proxy->listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (proxy->listen_fd_ < 0 ||
      bind(proxy->listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      listen(proxy->listen_fd_, 64) != 0 ||
      getsockname(proxy->listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    return FromErrno(errno, "fault proxy socket");
  }
  proxy->port_ = ntohs(addr.sin_port);
  proxy->acceptor_ = std::thread([p = proxy.get()] { p->AcceptLoop(); });
  return proxy;
}

FaultProxy::~FaultProxy() {
  stopping_ = true;
  shutdown(listen_fd_, SHUT_RDWR);
  if (acceptor_.joinable()) acceptor_.join();
  close(listen_fd_);
  std::vector<std::thread> workers;
  {
    std::lock_guard lock(mu_);
    for (int fd : client_fds_) shutdown(fd, SHUT_RDWR);
    workers.swap(workers_);
  }
  for (std::thread& t : workers) t.join();
}

void FaultProxy::FailNext(Fault fault, int count, const std::string& method) {
  std::lock_guard lock(mu_);
  fault_ = fault;
  fault_count_ = count;
  fault_method_ = method;
}

int FaultProxy::requests(const std::string& method) {
  std::lock_guard lock(mu_);
  return by_method_[method];
}

FaultProxy::Fault FaultProxy::TakeFault(const std::string& method) {
  std::lock_guard lock(mu_);
  ++by_method_[method];
  if (fault_count_ <= 0 || (!fault_method_.empty() && fault_method_ != method)) return Fault::kNone;
  --fault_count_;
  ++faults_;
  return fault_;
}

void FaultProxy::AcceptLoop() {
  while (!stopping_) {
    int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (stopping_ || errno == EINVAL || errno == EBADF) return;
      continue;
    }
    ++connections_;
    std::lock_guard lock(mu_);
    client_fds_.push_back(fd);
    workers_.emplace_back([this, fd] { Serve(fd); });
  }
}

void FaultProxy::Serve(int fd) {
  std::string buf;
  while (!stopping_) {
    size_t head_len = ReadHead(fd, &buf);
    if (head_len == 0) break;
    std::string head = buf.substr(0, head_len);
    buf.erase(0, head_len);
    const std::string method = head.substr(0, head.find(' '));
    const size_t body_len = std::strtoull(HeaderOf(head, "content-length").c_str(), nullptr, 10);
    if (!ReadAtLeast(fd, &buf, body_len)) break;
    std::string body = buf.substr(0, body_len);
    buf.erase(0, body_len);
    ++requests_;

    const Fault fault = TakeFault(method);
    if (fault == Fault::kDrop) break;
    if (fault == Fault::kStall) {
      // Nothing until the client hangs up (or the proxy stops).
      pollfd p{fd, POLLIN, 0};
      char c;
      while (!stopping_) {
        if (poll(&p, 1, 100) > 0 && recv(fd, &c, 1, MSG_PEEK) <= 0) break;
      }
      break;
    }
    if (fault == Fault::kSlowDown) {
      if (!SendAll(fd, Canned(503, "Slow Down", "SlowDown", "Please reduce your request rate."))) break;
      continue;
    }
    if (fault == Fault::kInternalError) {
      if (!SendAll(fd, Canned(500, "Internal Server Error", "InternalError",
                              "We encountered an internal error. Please try again."))) {
        break;
      }
      continue;
    }

    // Forward on a fresh upstream connection (moto closes each one).
    int up = ConnectLoopback(upstream_port_);
    if (up < 0 || !SendAll(up, head) || !SendAll(up, body)) {
      if (up >= 0) close(up);
      break;
    }
    std::string resp;
    size_t resp_head_len = ReadHead(up, &resp);
    if (resp_head_len == 0) {
      close(up);
      break;
    }
    std::string resp_head = resp.substr(0, resp_head_len);
    std::string resp_body = resp.substr(resp_head_len);
    const int status = std::atoi(resp_head.c_str() + resp_head.find(' ') + 1);
    const std::string clen = HeaderOf(resp_head, "content-length");
    if (method != "HEAD" && status != 204 && status != 304) {
      if (!clen.empty()) {
        ReadAtLeast(up, &resp_body, std::strtoull(clen.c_str(), nullptr, 10));
      } else {
        ReadAtLeast(up, &resp_body, SIZE_MAX);  // to EOF
      }
    }
    close(up);
    resp_head = WithoutHeader(resp_head, "connection");
    if (clen.empty() && method != "HEAD") {
      resp_head.insert(resp_head.size() - 2,
                       "Content-Length: " + std::to_string(resp_body.size()) + "\r\n");
    }
    if (fault == Fault::kCutMidBody) {
      SendAll(fd, resp_head);
      SendAll(fd, std::string_view(resp_body).substr(0, resp_body.size() / 2));
      break;
    }
    if (fault == Fault::kShortBody) {
      resp_body.resize(resp_body.size() / 2);
      resp_head = WithoutHeader(resp_head, "content-length");
      resp_head.insert(resp_head.size() - 2,
                       "Content-Length: " + std::to_string(resp_body.size()) + "\r\n");
    }
    if (!SendAll(fd, resp_head) || !SendAll(fd, resp_body)) break;
  }
  {
    std::lock_guard lock(mu_);
    std::erase(client_fds_, fd);
  }
  close(fd);
}

}  // namespace tessera
