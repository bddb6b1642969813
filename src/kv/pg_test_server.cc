#include "kv/pg_test_server.h"

#include "common/free_port.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <grp.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <pwd.h>
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
#include <string>
#include <thread>
#include <vector>

namespace tessera {
namespace {

namespace fs = std::filesystem;

// The newest /usr/lib/postgresql/<version>/bin that has initdb and postgres.
std::string FindBinDir() {
  std::string best;
  int best_version = -1;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/usr/lib/postgresql", ec)) {
    fs::path bin = entry.path() / "bin";
    if (!fs::exists(bin / "initdb") || !fs::exists(bin / "postgres")) continue;
    int version = std::atoi(entry.path().filename().c_str());
    if (version > best_version) {
      best_version = version;
      best = bin.string();
    }
  }
  return best;
}

class PgTestServer {
 public:
  ~PgTestServer() {
    Stop();
    if (!dir_.empty()) {
      std::error_code ec;
      fs::remove_all(dir_, ec);
    }
  }

  Status Start() {
    std::string bin = FindBinDir();
    if (bin.empty()) {
      return Unavailable(
          "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin "
          "(install the postgresql package: scripts/install-deps.sh)");
    }
    const char* tmp = getenv("TMPDIR");
    std::string pattern = std::string(tmp != nullptr && *tmp ? tmp : "/tmp") + "/tessera-pg-XXXXXX";
    if (mkdtemp(pattern.data()) == nullptr) return Unavailable("mkdtemp failed for " + pattern);
    dir_ = pattern;
    log_ = dir_ + "/server.log";
    if (geteuid() == 0) {
      passwd* pw = getpwnam("postgres");
      if (pw == nullptr) return Unavailable("running as root and there is no 'postgres' user");
      uid_ = pw->pw_uid;
      gid_ = pw->pw_gid;
      if (chown(dir_.c_str(), uid_, gid_) != 0) return Unavailable("cannot chown " + dir_);
    }
    std::string data = dir_ + "/data";
    pid_t initdb = Spawn({bin + "/initdb", "-D", data, "-U", "tessera", "-A", "trust", "--no-sync",
                          "-E", "UTF8", "--no-locale"},
                         /*die_with_parent=*/false);
    int wstatus = 0;
    if (initdb < 0 || waitpid(initdb, &wstatus, 0) != initdb || !WIFEXITED(wstatus) ||
        WEXITSTATUS(wstatus) != 0) {
      return Unavailable("initdb failed:\n" + LogTail());
    }
    // The kernel picked a free port, but someone may take it before the
    // server binds it: try a few.
    for (int attempt = 0; attempt < 3; ++attempt) {
      port_ = FreePort();
      // Dies with this process even when it crashes, so no server outlives
      // its tests.
      pid_ = Spawn({bin + "/postgres", "-D", data, "-p", std::to_string(port_), "-k", dir_, "-c",
                    "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
                    "-c", "full_page_writes=off", "-c", "max_connections=200"},
                   /*die_with_parent=*/true);
      if (pid_ < 0) return Unavailable("cannot start postgres");
      if (WaitReady()) return Status::Ok();
      Stop();
    }
    return Unavailable("PostgreSQL test server did not start:\n" + LogTail());
  }

  // Runs one statement on a new superuser connection; the error text or "".
  std::string AdminExec(const std::string& sql) const {
    std::string admin = "host=127.0.0.1 port=" + std::to_string(port_) +
                        " user=tessera dbname=postgres connect_timeout=10";
    PGconn* conn = PQconnectdb(admin.c_str());
    std::string error;
    if (PQstatus(conn) != CONNECTION_OK) {
      error = PQerrorMessage(conn);
    } else {
      PGresult* r = PQexec(conn, sql.c_str());
      ExecStatusType st = PQresultStatus(r);
      if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) error = PQresultErrorMessage(r);
      PQclear(r);
    }
    PQfinish(conn);
    return error;
  }

  Result<std::string> NewDatabase() {
    std::string name = "t" + std::to_string(++schemas_);
    std::string error = AdminExec("CREATE SCHEMA " + name);
    if (!error.empty()) return Unavailable("cannot create a test schema: " + error);
    // A schema per store is as isolated as a database for tables created
    // without a schema name, and takes milliseconds instead of a copy of
    // the template database.
    return "postgres://tessera@127.0.0.1:" + std::to_string(port_) +
           "/postgres?sslmode=disable&options=-c%20search_path%3D" + name;
  }

 private:
  // Runs argv as the unprivileged user (when root), output to the log.
  pid_t Spawn(const std::vector<std::string>& args, bool die_with_parent) {
    // Built before fork: the child of a threaded process must not allocate.
    std::vector<char*> argv;
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    pid_t pid = fork();
    if (pid != 0) return pid;
    int fd = open(log_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
      close(fd);
    }
    if (geteuid() == 0 && (setgroups(0, nullptr) != 0 || setgid(gid_) != 0 || setuid(uid_) != 0)) {
      _exit(126);
    }
    // Set after setuid, which clears it. "Parent" is the forking thread:
    // callers start the server from the test's main thread.
    if (die_with_parent) prctl(PR_SET_PDEATHSIG, SIGQUIT);
    execv(argv[0], argv.data());
    _exit(127);
  }

  bool WaitReady() {
    std::string conninfo = "host=127.0.0.1 port=" + std::to_string(port_) +
                           " user=tessera dbname=postgres connect_timeout=2";
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (std::chrono::steady_clock::now() < deadline) {
      if (PQping(conninfo.c_str()) == PQPING_OK) return true;
      int wstatus = 0;
      if (waitpid(pid_, &wstatus, WNOHANG) == pid_) {
        pid_ = -1;
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }

  // Fast shutdown: disconnects clients.
  void Stop() {
    if (pid_ > 0) {
      kill(pid_, SIGINT);
      int wstatus = 0;
      auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      while (waitpid(pid_, &wstatus, WNOHANG) == 0) {
        if (std::chrono::steady_clock::now() > deadline) {
          kill(pid_, SIGKILL);
          waitpid(pid_, &wstatus, 0);
          break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      pid_ = -1;
    }
  }

  std::string LogTail() const {
    std::ifstream in(log_);
    std::stringstream ss;
    ss << in.rdbuf();
    std::string all = ss.str();
    return all.size() > 4000 ? all.substr(all.size() - 4000) : all;
  }

  std::string dir_;
  std::string log_;
  uid_t uid_ = 0;
  gid_t gid_ = 0;
  pid_t pid_ = -1;
  int port_ = -1;
  int schemas_ = 0;
};

std::mutex server_mu;
PgTestServer* server = nullptr;  // guarded by server_mu
Status start_status;             // guarded by server_mu

}  // namespace

Result<std::string> NewPgTestDatabase() {
  std::lock_guard lock(server_mu);
  if (server == nullptr) {
    server = new PgTestServer;
    start_status = server->Start();
    // Stops the server when the process exits normally; if it crashes, the
    // server gets SIGQUIT as its parent dies.
    atexit([] { delete server; });
  }
  RETURN_IF_ERROR(start_status);
  return server->NewDatabase();
}

Status TerminatePgTestConnections() {
  std::lock_guard lock(server_mu);
  if (server == nullptr) return Internal("the PostgreSQL test server was not started");
  std::string error = server->AdminExec(
      "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
      "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()");
  if (!error.empty()) return Unavailable("cannot terminate connections: " + error);
  return Status::Ok();
}

}  // namespace tessera
