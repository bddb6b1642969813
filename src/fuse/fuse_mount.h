// Serves a Vfs through the kernel's FUSE interface (libfuse3 low-level API).
// Each callback translates one request into one Vfs call and one reply; no
// file system logic lives here.
#pragma once

#include <functional>
#include <string>

#include "common/status.h"
#include "vfs/vfs.h"

namespace tessera {

struct FuseOptions {
  std::string mount_point;
  std::string fs_name;        // shown by mount/df as the source, e.g. "tessera:myvol"
  unsigned max_threads = 16;  // request worker threads
  bool allow_other = true;    // let every user use the mount (needs root or user_allow_other)
  bool debug = false;         // libfuse's request trace on stderr
};

// Mounts and serves requests until the file system is unmounted or the
// process receives SIGINT/SIGTERM/SIGHUP. `on_mounted` runs once the kernel
// mount exists (requests are served from then on). Returns kUnavailable if
// the mount fails, with the reason.
Status ServeFuse(Vfs* vfs, const FuseOptions& options, const std::function<void()>& on_mounted);

}  // namespace tessera
