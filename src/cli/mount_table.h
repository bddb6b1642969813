// Where a mount's daemon can be found: the kernel's mount table and a pid
// file per mount point in a runtime directory.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>

namespace tessera {

// The file system type of the mount at `path` ("fuse.tessera" for ours), or
// nullopt when nothing is mounted exactly there.
std::optional<std::string> MountedFsType(const std::string& path);
// The pid file of the daemon serving `mount_point` (an absolute path).
std::string PidFileFor(const std::string& mount_point);
bool WritePidFile(const std::string& mount_point);
std::optional<pid_t> ReadPidFile(const std::string& mount_point);
void RemovePidFile(const std::string& mount_point);

}  // namespace tessera
