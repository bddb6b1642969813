// Where a mount's daemon can be found: the kernel's mount table and, per
// mount point, a pid file and a META-URL file in a runtime directory
// (/run/tessera for root, $XDG_RUNTIME_DIR/tessera or /tmp/tessera-UID
// otherwise), so only the user who mounted can find them.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tessera {

// One line of /proc/self/mountinfo (proc(5)).
struct MountEntry {
  std::string mount_point;  // unescaped
  std::string root;         // the mounted file system's directory shown ("/" but for bind mounts)
  std::string fs_type;      // "fuse.tessera" for ours
};
// Parses the text of /proc/self/mountinfo, unescaping \ooo sequences (space
// is \040). Lines that do not parse are skipped. In file order: a later
// line is mounted on top of an earlier one with the same mount point.
std::vector<MountEntry> ParseMountInfo(std::string_view text);
// This process's mount table (empty if /proc is unreadable).
std::vector<MountEntry> ReadMountInfo();

// The file system type of the mount at `path` ("fuse.tessera" for ours), or
// nullopt when nothing is mounted exactly there.
std::optional<std::string> MountedFsType(const std::string& path);
// The pid file of the daemon serving `mount_point` (an absolute path).
std::string PidFileFor(const std::string& mount_point);
bool WritePidFile(const std::string& mount_point);
std::optional<pid_t> ReadPidFile(const std::string& mount_point);
void RemovePidFile(const std::string& mount_point);

// The file holding the META-URL of the volume mounted at `mount_point`, so
// that tools given a path inside the mount can open its metadata. Mode 0600:
// a URL may hold a password.
std::string UrlFileFor(const std::string& mount_point);
// Writes it atomically (a reader never sees half a URL); false on failure.
bool WriteUrlFile(const std::string& mount_point, const std::string& meta_url);
void RemoveUrlFile(const std::string& mount_point);
// `url` usable from any directory: a relative sqlite3:// path becomes
// absolute (against the current directory); other URLs are returned as is.
std::string AbsoluteMetaUrl(const std::string& url);

}  // namespace tessera
