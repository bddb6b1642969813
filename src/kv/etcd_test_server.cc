#include "kv/etcd_test_server.h"

#include "common/free_port.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

namespace tessera {
namespace {

namespace fs = std::filesystem;

std::string FindEtcd() {
  for (const char* p : {"/usr/bin/etcd", "/usr/local/bin/etcd"}) {
    if (access(p, X_OK) == 0) return p;
  }
  return "";
}

size_t Discard(char*, size_t size, size_t n, void* out) {
  static_cast<std::string*>(out)->append("x");
  return size * n;
}

}  // namespace

EtcdTestCluster::~EtcdTestCluster() {
  for (size_t i = 0; i < members_.size(); ++i) StopMember(int(i));
  if (!dir_.empty()) {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
}

Status EtcdTestCluster::Start(int members) {
  std::string etcd = FindEtcd();
  if (etcd.empty()) {
    return Unavailable("etcd binary not found (install etcd-server: scripts/install-deps.sh)");
  }
  const char* tmp = getenv("TMPDIR");
  std::string pattern = std::string(tmp != nullptr && *tmp ? tmp : "/tmp") + "/tessera-etcd-XXXXXX";
  if (mkdtemp(pattern.data()) == nullptr) return Unavailable("mkdtemp failed for " + pattern);
  dir_ = pattern;
  members_.resize(members);
  std::string cluster;
  for (int i = 0; i < members; ++i) {
    members_[i].client_port = FreePort();
    members_[i].peer_port = FreePort();
    if (!cluster.empty()) cluster += ",";
    cluster += "m" + std::to_string(i) + "=http://127.0.0.1:" + std::to_string(members_[i].peer_port);
  }
  for (int i = 0; i < members; ++i) {
    Member& m = members_[i];
    std::string client = "http://127.0.0.1:" + std::to_string(m.client_port);
    std::string peer = "http://127.0.0.1:" + std::to_string(m.peer_port);
    std::vector<std::string> args = {etcd,
                                     "--name", "m" + std::to_string(i),
                                     "--data-dir", dir_ + "/m" + std::to_string(i),
                                     "--listen-client-urls", client,
                                     "--advertise-client-urls", client,
                                     "--listen-peer-urls", peer,
                                     "--initial-advertise-peer-urls", peer,
                                     "--initial-cluster", cluster,
                                     "--initial-cluster-state", "new",
                                     "--initial-cluster-token", "tessera-test",
                                     // Short timeouts: a lost member is noticed quickly.
                                     "--heartbeat-interval", "50",
                                     "--election-timeout", "500",
                                     // As operations.md asks: a metadata txn
                                     // can write more than the default 128 keys.
                                     "--max-txn-ops", "10000"};
    // Built before fork: the child of a threaded process must not allocate.
    std::vector<char*> argv;
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    std::string log = dir_ + "/etcd.log";
    pid_t pid = fork();
    if (pid == 0) {
      int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
        close(fd);
      }
      // No etcd outlives its tests, even when the test process crashes.
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      execv(argv[0], argv.data());
      _exit(127);
    }
    if (pid < 0) return Unavailable("cannot fork etcd");
    m.pid = pid;
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  for (const Member& m : members_) {
    while (!Healthy(m)) {
      int wstatus = 0;
      if (waitpid(m.pid, &wstatus, WNOHANG) == m.pid) {
        return Unavailable("etcd exited during start:\n" + LogTail());
      }
      if (std::chrono::steady_clock::now() > deadline) {
        return Unavailable("etcd did not become healthy:\n" + LogTail());
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  return Status::Ok();
}

std::string EtcdTestCluster::Endpoints() const {
  std::string out;
  for (const Member& m : members_) {
    if (!out.empty()) out += ",";
    out += "127.0.0.1:" + std::to_string(m.client_port);
  }
  return out;
}

void EtcdTestCluster::StopMember(int i) {
  Member& m = members_[i];
  if (m.pid <= 0) return;
  kill(m.pid, SIGKILL);
  int wstatus = 0;
  waitpid(m.pid, &wstatus, 0);
  m.pid = -1;
}

bool EtcdTestCluster::Healthy(const Member& m) const {
  CURL* h = curl_easy_init();
  if (h == nullptr) return false;
  std::string url = "http://127.0.0.1:" + std::to_string(m.client_port) + "/health";
  std::string body;
  curl_easy_setopt(h, CURLOPT_URL, url.c_str());
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 1000L);
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, &Discard);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &body);
  long code = 0;
  bool ok = curl_easy_perform(h) == CURLE_OK &&
            curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code) == CURLE_OK && code == 200;
  curl_easy_cleanup(h);
  return ok;
}

std::string EtcdTestCluster::LogTail() const {
  std::ifstream in(dir_ + "/etcd.log");
  std::stringstream ss;
  ss << in.rdbuf();
  std::string all = ss.str();
  return all.size() > 4000 ? all.substr(all.size() - 4000) : all;
}

Result<std::string> NewEtcdTestUrl() {
  static std::mutex mu;
  static EtcdTestCluster* server = nullptr;
  static Status start_status;
  static int prefixes = 0;
  std::lock_guard lock(mu);
  if (server == nullptr) {
    server = new EtcdTestCluster;
    // The free ports may be taken before etcd binds them: try a few times.
    for (int attempt = 0; attempt < 3; ++attempt) {
      start_status = server->Start(1);
      if (start_status.ok()) break;
      delete server;
      server = new EtcdTestCluster;
    }
    atexit([] { delete server; });
  }
  RETURN_IF_ERROR(start_status);
  return "etcd://" + server->Endpoints() + "/t" + std::to_string(getpid()) + "-" +
         std::to_string(++prefixes);
}

}  // namespace tessera
