#include "cli/mount_table.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

namespace tessera {
namespace {

// /proc/self/mountinfo escapes space, tab, newline and backslash as \ooo.
std::string Unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      int v = 0;
      bool ok = true;
      for (int k = 1; k <= 3; ++k) {
        char c = s[i + k];
        if (c < '0' || c > '7') ok = false;
        v = v * 8 + (c - '0');
      }
      if (ok) {
        out.push_back(static_cast<char>(v));
        i += 3;
        continue;
      }
    }
    out.push_back(s[i]);
  }
  return out;
}

std::string RuntimeDir() {
  if (geteuid() == 0) return "/run/tessera";
  if (const char* xdg = std::getenv("XDG_RUNTIME_DIR"); xdg != nullptr && *xdg != '\0') {
    return std::string(xdg) + "/tessera";
  }
  return "/tmp/tessera-" + std::to_string(geteuid());
}

}  // namespace

std::optional<std::string> MountedFsType(const std::string& path) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  std::optional<std::string> found;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string id, parent, dev, root, mount_point, word;
    fields >> id >> parent >> dev >> root >> mount_point;
    while (fields >> word && word != "-") {
    }
    std::string fstype;
    fields >> fstype;
    // The last matching line is the mount on top.
    if (Unescape(mount_point) == path) found = fstype;
  }
  return found;
}

std::string PidFileFor(const std::string& mount_point) {
  std::string name;
  for (char c : mount_point) {
    if (c == '/') name += "%2F";
    else if (c == '%') name += "%25";
    else name.push_back(c);
  }
  return RuntimeDir() + "/" + name + ".pid";
}

bool WritePidFile(const std::string& mount_point) {
  ::mkdir(RuntimeDir().c_str(), 0700);
  std::ofstream out(PidFileFor(mount_point), std::ios::trunc);
  out << getpid() << "\n";
  return static_cast<bool>(out);
}

std::optional<pid_t> ReadPidFile(const std::string& mount_point) {
  std::ifstream in(PidFileFor(mount_point));
  pid_t pid = 0;
  if (!(in >> pid) || pid <= 0) return std::nullopt;
  return pid;
}

void RemovePidFile(const std::string& mount_point) { ::unlink(PidFileFor(mount_point).c_str()); }

}  // namespace tessera
