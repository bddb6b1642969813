#include <signal.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <thread>

#include "cli/args.h"
#include "cli/commands.h"
#include "cli/mount_table.h"
#include "common/units.h"

namespace tessera {
namespace {

constexpr const char* kHelp = R"(Usage: tessera umount [OPTIONS] MOUNTPOINT

Unmount a tessera volume. Everything written through the mount is already
committed when the last file is closed; umount then waits for the mount's
daemon to end its session and exit (a --writeback mount first uploads the
blocks it still has staged: allow for it in --timeout).

Options:
  --lazy          detach now even if files are open; the daemon exits when
                  the last one is closed
  --timeout SECS  how long to wait for the daemon to exit (default 60)
)";

// Runs fusermount3 -u (for users without CAP_SYS_ADMIN).
int FuserUnmount(const std::string& mount_point, bool lazy) {
  pid_t pid = fork();
  if (pid == 0) {
    if (lazy) execlp("fusermount3", "fusermount3", "-u", "-z", mount_point.c_str(), nullptr);
    else execlp("fusermount3", "fusermount3", "-u", mount_point.c_str(), nullptr);
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

}  // namespace

int RunUmount(int argc, char** argv) {
  Args args;
  args.Flag("lazy", "-l");
  args.Value("timeout");
  if (Status st = args.Parse(argc, argv, 2); !st.ok()) return Fail("umount", st);
  if (args.help()) {
    std::fputs(kHelp, stdout);
    return 0;
  }
  if (args.positional().size() != 1) return Fail("umount", "expected MOUNTPOINT (see --help)");
  std::error_code ec;
  std::string mp = std::filesystem::absolute(args.positional()[0], ec).lexically_normal().string();
  if (mp.size() > 1 && mp.back() == '/') mp.pop_back();
  auto fstype = MountedFsType(mp);
  if (!fstype) return Fail("umount", mp + " is not mounted");
  if (*fstype != "fuse.tessera") return Fail("umount", mp + " is not a tessera mount (" + *fstype + ")");
  int timeout_s = 60;
  if (auto t = args.Get("timeout")) {
    auto v = ParseUint(*t, "--timeout");
    if (!v.ok() || *v > 86400) return Fail("umount", "--timeout must be 0 to 86400 seconds, not '" + *t + "'");
    timeout_s = static_cast<int>(*v);
  }
  const bool lazy = args.Has("lazy");
  auto daemon = ReadPidFile(mp);

  if (geteuid() == 0) {
    if (umount2(mp.c_str(), lazy ? MNT_DETACH : 0) != 0) {
      if (errno == EBUSY) {
        return Fail("umount", mp + " is busy: files or directories in it are still open "
                                   "(close them, or use --lazy)");
      }
      return Fail("umount", mp + ": " + std::strerror(errno));
    }
  } else if (FuserUnmount(mp, lazy) != 0) {
    return Fail("umount", "fusermount3 could not unmount " + mp);
  }

  // Wait for the daemon to finish its shutdown (flush, end of session): it
  // removes its pid file last. The kernel may take a while longer to reap
  // the process itself, which nobody needs to wait for.
  if (daemon && !lazy) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
    while (kill(*daemon, 0) == 0 && ReadPidFile(mp) == daemon) {
      if (std::chrono::steady_clock::now() > deadline) {
        return Fail("umount", "unmounted, but the daemon (pid " + std::to_string(*daemon) +
                                  ") is still running after " + std::to_string(timeout_s) + "s");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  return 0;
}

}  // namespace tessera
