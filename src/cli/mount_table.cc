#include "cli/mount_table.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
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

// A mount point as one file name: '/' and '%' percent-encoded.
std::string RuntimeName(const std::string& mount_point) {
  std::string name;
  for (char c : mount_point) {
    if (c == '/') name += "%2F";
    else if (c == '%') name += "%25";
    else name.push_back(c);
  }
  return name;
}

}  // namespace

std::vector<MountEntry> ParseMountInfo(std::string_view text) {
  std::vector<MountEntry> out;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    std::istringstream fields{std::string(text.substr(start, end - start))};
    start = end + 1;
    // id parent major:minor root mount-point options [optional fields...] - type source ...
    std::string id, parent, dev, root, mount_point, word;
    if (!(fields >> id >> parent >> dev >> root >> mount_point)) continue;
    bool separator = false;
    while (fields >> word) {
      if (word == "-") {
        separator = true;
        break;
      }
    }
    std::string fs_type;
    if (!separator || !(fields >> fs_type)) continue;
    out.push_back(MountEntry{Unescape(mount_point), Unescape(root), fs_type});
  }
  return out;
}

std::vector<MountEntry> ReadMountInfo() {
  std::ifstream in("/proc/self/mountinfo");
  std::stringstream text;
  text << in.rdbuf();
  return ParseMountInfo(text.str());
}

std::optional<std::string> MountedFsType(const std::string& path) {
  std::optional<std::string> found;
  // The last matching line is the mount on top.
  for (const MountEntry& m : ReadMountInfo()) {
    if (m.mount_point == path) found = m.fs_type;
  }
  return found;
}

std::string PidFileFor(const std::string& mount_point) {
  return RuntimeDir() + "/" + RuntimeName(mount_point) + ".pid";
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

std::string UrlFileFor(const std::string& mount_point) {
  return RuntimeDir() + "/" + RuntimeName(mount_point) + ".url";
}

bool WriteUrlFile(const std::string& mount_point, const std::string& meta_url) {
  ::mkdir(RuntimeDir().c_str(), 0700);
  const std::string path = UrlFileFor(mount_point);
  const std::string tmp = path + ".tmp";
  ::unlink(tmp.c_str());
  // O_EXCL|O_NOFOLLOW: never write through a file or link someone else put there.
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) return false;
  const std::string line = meta_url + "\n";
  bool ok = ::fchmod(fd, 0600) == 0 &&  // whatever the umask
            ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
  ok = ::close(fd) == 0 && ok;
  if (ok) ok = ::rename(tmp.c_str(), path.c_str()) == 0;
  if (!ok) ::unlink(tmp.c_str());
  return ok;
}

void RemoveUrlFile(const std::string& mount_point) { ::unlink(UrlFileFor(mount_point).c_str()); }

std::string AbsoluteMetaUrl(const std::string& url) {
  constexpr std::string_view kSqlite = "sqlite3://";
  if (!url.starts_with(kSqlite) || url.size() == kSqlite.size() || url[kSqlite.size()] == '/') {
    return url;
  }
  char* cwd = ::getcwd(nullptr, 0);
  if (cwd == nullptr) return url;
  std::string out = std::string(kSqlite) + cwd + "/" + url.substr(kSqlite.size());
  std::free(cwd);
  return out;
}

}  // namespace tessera
