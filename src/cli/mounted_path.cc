#include "cli/mounted_path.h"

#include <stdlib.h>

#include <cerrno>
#include <cstring>
#include <fstream>

namespace tessera {
namespace {

// Whether `path` is `mount_point` or lies under it (whole components, so
// /mnt/ab is not under /mnt/a).
bool IsUnder(const std::string& path, const std::string& mount_point) {
  if (mount_point == "/") return true;
  if (!path.starts_with(mount_point)) return false;
  return path.size() == mount_point.size() || path[mount_point.size()] == '/';
}

Result<std::string> RealPath(const std::string& path) {
  char* real = ::realpath(path.c_str(), nullptr);
  if (real == nullptr) return FromErrno(errno, path);
  std::string out(real);
  std::free(real);
  return out;
}

}  // namespace

std::optional<MountEntry> InnermostMount(const std::vector<MountEntry>& mounts,
                                         const std::string& path) {
  if (path.empty() || path[0] != '/') return std::nullopt;
  const MountEntry* best = nullptr;
  for (const MountEntry& m : mounts) {
    if (!IsUnder(path, m.mount_point)) continue;
    // ">=": a later line with the same mount point is mounted on top.
    if (best == nullptr || m.mount_point.size() >= best->mount_point.size()) best = &m;
  }
  if (best == nullptr) return std::nullopt;
  return *best;
}

Result<MountedPath> ResolveMountedPath(const std::string& path) {
  MountedPath out;
  out.path = path;
  if (path.empty()) return Invalid("empty path");
  if (::lstat(path.c_str(), &out.st) != 0) return FromErrno(errno, path);
  // Resolve the directories but keep a final symlink: info on a link
  // describes the link, as lstat does.
  if (S_ISLNK(out.st.st_mode)) {
    const size_t slash = path.rfind('/');
    const std::string dir = slash == std::string::npos ? "." : path.substr(0, slash + 1);
    ASSIGN_OR_RETURN(std::string real_dir, RealPath(dir));
    out.real_path = (real_dir == "/" ? "" : real_dir) + "/" + path.substr(slash + 1);
  } else {
    ASSIGN_OR_RETURN(out.real_path, RealPath(path));
  }
  auto mount = InnermostMount(ReadMountInfo(), out.real_path);
  if (!mount || mount->fs_type != "fuse.tessera") {
    return Invalid(path + " is not inside a Tessera mount");
  }
  out.mount_point = mount->mount_point;
  out.inode = InodeId(out.st.st_ino);

  const std::string url_file = UrlFileFor(out.mount_point);
  errno = 0;
  std::ifstream in(url_file);
  if (!in || !std::getline(in, out.meta_url) || out.meta_url.empty()) {
    const int err = errno;
    return Unavailable("cannot read the mount's runtime file " + url_file +
                       (err != 0 ? std::string(": ") + std::strerror(err) : std::string()) +
                       " (run as the user who mounted " + out.mount_point + ")");
  }
  return out;
}

}  // namespace tessera
