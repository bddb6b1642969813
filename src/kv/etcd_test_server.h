// Throwaway etcd servers for tests (the Debian etcd-server package's `etcd`
// binary): each member gets free 127.0.0.1 client and peer ports and a
// temporary data directory, and dies with the test process.
#pragma once

#include <string>
#include <vector>

#include "common/status.h"

namespace tessera {

// A static cluster of `members` etcd processes on loopback.
class EtcdTestCluster {
 public:
  EtcdTestCluster() = default;
  EtcdTestCluster(const EtcdTestCluster&) = delete;
  EtcdTestCluster& operator=(const EtcdTestCluster&) = delete;
  ~EtcdTestCluster();  // stops every member and removes the data

  // Starts the members and waits until each one reports /health. Errors
  // (kUnavailable) say what is missing or failed, with the log's tail.
  Status Start(int members);
  // "host:port,host:port,..." of the members' client URLs.
  std::string Endpoints() const;
  // Kills member `i` (SIGKILL, as a crash would).
  void StopMember(int i);

 private:
  struct Member {
    int client_port = -1;
    int peer_port = -1;
    int pid = -1;
  };
  bool Healthy(const Member& m) const;
  std::string LogTail() const;

  std::string dir_;
  std::vector<Member> members_;
};

// The URL of a new, empty prefix on this process's single-member test server
// (started at the first call, stopped at exit), so each test starts clean.
Result<std::string> NewEtcdTestUrl();

}  // namespace tessera
