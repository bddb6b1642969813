// From a path inside a mounted Tessera volume to what a tool needs to work
// on it through the metadata: the mount, the volume's META-URL (recorded by
// the mount daemon, see mount_table.h) and the path's inode.
#pragma once

#include <sys/stat.h>

#include <optional>
#include <string>
#include <vector>

#include "cli/mount_table.h"
#include "common/status.h"
#include "common/types.h"

namespace tessera {

// The innermost mount containing `path` (absolute, without symlinks, "." or
// ".."): the entry whose mount point is the longest whole-component prefix
// of it; of several mounts stacked on one point, the last (the one on top).
// nullopt only for a relative path.
std::optional<MountEntry> InnermostMount(const std::vector<MountEntry>& mounts,
                                         const std::string& path);

struct MountedPath {
  std::string path;         // as given
  std::string real_path;    // absolute, symlinks resolved except a final one
  std::string mount_point;  // of the Tessera mount holding it
  std::string meta_url;     // of the mounted volume
  InodeId inode;            // Tessera's inode id (st_ino through the mount)
  struct stat st;           // lstat(2) of the path, through the mount
};

// Resolves `path` (relative to the current directory; a final symlink is
// described itself, not followed). Errors, each one line naming the path:
// kNotFound (or the errno's code) when it cannot be stat'ed; kInvalid
// "PATH is not inside a Tessera mount" when the innermost mount holding it
// is of another type; kUnavailable "cannot read the mount's runtime file
// ... (run as the user who mounted)" when the META-URL is not readable.
// Reads /proc/self/mountinfo and the runtime file; blocks on the mount.
Result<MountedPath> ResolveMountedPath(const std::string& path);

}  // namespace tessera
