#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <thread>
#include <tuple>

#include "cli/args.h"
#include "cli/commands.h"
#include "cli/mount_table.h"
#include "cli/volume_store.h"
#include "common/log.h"
#include "cache/block_cache.h"
#include "common/units.h"
#include "data/slice_store.h"
#include "fuse/fuse_mount.h"
#include "kv/kv.h"
#include "meta/meta.h"
#include "object/object_store.h"
#include "object/writeback_store.h"
#include "vfs/vfs.h"

namespace tessera {
namespace {

constexpr const char* kHelp = R"(Usage: tessera mount [OPTIONS] META-URL MOUNTPOINT

Mount the volume whose metadata lives in META-URL at MOUNTPOINT (an existing
directory). In the foreground it serves until unmounted; with -d it returns
once the mount is usable and logs to a file.

Options:
  -d, --background        run in the background
  --log FILE              log file in the background (default:
                          /var/log/tessera.log for root, ~/.tessera/tessera.log)
  --attr-cache SECONDS    how long the kernel caches attributes (default 1)
  --entry-cache SECONDS   how long the kernel caches file names (default 1)
  --dir-entry-cache SECONDS  ... directory names (default 1)
  --atime-mode MODE       noatime, relatime (default) or strictatime
  --buffer-size SIZE      memory for written data not yet uploaded; a plain
                          number is MiB (default 300)
  --max-uploads N         block uploads at once (default 20)
  --max-downloads N       block downloads (readahead) at once (default 16)
  --max-deletes N         slices whose blocks are deleted at once, in the
                          background, after their last reference went
                          (default 10)
  --prefetch N            blocks a sequential reader fetches ahead (default 8)
  --cache-dir DIR         local disk cache (default /var/lib/tessera/cache
                          for root, ~/.tessera/cache; off by default for
                          volumes on local-directory storage); "none" turns
                          it off
  --writeback             stage written blocks on local disk, next to the
                          cache directory (the default one unless
                          --cache-dir is given, also for local-directory
                          volumes), and upload them in the background: close
                          and fsync do not wait for the object store. Until
                          uploaded, the data is only on this host; staged
                          blocks survive a crash and are uploaded at the
                          next mount with the same cache directory
  --upload-delay SECONDS  with --writeback, how long a staged block waits
                          before its upload (default 0)
  --cache-size SIZE       disk cache capacity; a plain number is MiB
                          (default 102400, i.e. 100 GiB)
  --free-space-ratio R    keep this fraction of the cache disk free (default 0.1)
  --memory-cache SIZE     memory block cache; a plain number is MiB (default 64)
  --max-threads N         FUSE worker threads (default 16)
  --heartbeat SECONDS     session heartbeat interval (default 12); a mount
                          that misses 5 heartbeats is presumed dead and
                          its locks and open-but-deleted files are released
  --meta-timeout SECONDS  how long an operation keeps retrying while the
                          metadata engine is unreachable (restarting, cut
                          off) before it fails with EIO (default 30)
  --debug                 trace every FUSE request on stderr

Unmount with 'tessera umount MOUNTPOINT'.
)";

CacheOptions DefaultCache() {
  CacheOptions o;
  o.memory_bytes = 64ull << 20;
  o.disk_bytes = 100ull << 30;
  o.free_space_ratio = 0.1;
  return o;
}

struct MountConfig {
  std::string meta_url;
  std::string mount_point;  // absolute
  VfsOptions vfs;
  CacheOptions cache = DefaultCache();  // disk_dir: parent of the per-volume directories
  unsigned max_threads = 16;
  int heartbeat_s = 12;
  double meta_timeout_s = 30;
  bool debug = false;
  bool cache_dir_given = false;  // --cache-dir on the command line
  bool writeback = false;
  double upload_delay_s = 0;
};

// How long an unmount keeps trying to upload staged blocks while none
// succeeds; after that they stay staged for the next mount.
constexpr auto kDrainStallLimit = std::chrono::minutes(5);

Result<double> ParseSeconds(const std::string& text, const std::string& what) {
  char* end = nullptr;
  double v = std::strtod(text.c_str(), &end);
  if (text.empty() || end == nullptr || *end != '\0' || !(v >= 0) || v > 86400 * 365) {
    return Invalid("invalid " + what + " '" + text + "' (seconds, e.g. 1 or 0.5)");
  }
  return v;
}

// A size where a plain number means MiB ("300" = 300 MiB, "2G" = 2 GiB).
Result<uint64_t> ParseMebibytes(const std::string& text) {
  bool plain = !text.empty() && text.find_first_not_of("0123456789") == std::string::npos;
  return ParseSize(plain ? text + "M" : text);
}

std::string DefaultCacheDir() {
  if (geteuid() == 0) return "/var/lib/tessera/cache";
  const char* home = std::getenv("HOME");
  return std::string(home != nullptr ? home : "/tmp") + "/.tessera/cache";
}

std::string DefaultLogFile() {
  if (geteuid() == 0) return "/var/log/tessera.log";
  const char* home = std::getenv("HOME");
  std::string dir = std::string(home != nullptr ? home : "/tmp") + "/.tessera";
  ::mkdir(dir.c_str(), 0700);
  return dir + "/tessera.log";
}

// Runs a mounted volume until it is unmounted. `ready(message)` is called
// once: with "" when the mount is usable, or with the error that stopped it.
Status Serve(const MountConfig& cfg, const std::function<void(const std::string&)>& ready) {
  auto kv = OpenKv(cfg.meta_url, KvOptions{.unavailable_retry_ms = static_cast<int64_t>(
                                               cfg.meta_timeout_s * 1000)});
  if (!kv.ok()) return kv.status();
  auto meta = Meta::Open(std::move(*kv));
  if (!meta.ok()) return meta.status();
  const VolumeSettings& s = (*meta)->settings();
  WritebackStore* writeback = nullptr;
  // Staging sits below compression and encryption: staged blocks are
  // already what the bucket gets.
  StoreLayer staging;
  if (cfg.writeback) staging = [&](std::unique_ptr<ObjectStore> objects)
      -> Result<std::unique_ptr<ObjectStore>> {
    // Next to the volume's cache directory, not inside it: the cache owns
    // and cleans what is in there.
    WritebackOptions wo;
    // Absolute: `tessera status` tells sessions apart by host and directory.
    std::error_code ec;
    wo.dir = std::filesystem::absolute(cfg.cache.disk_dir, ec).lexically_normal().string();
    while (wo.dir.size() > 1 && wo.dir.back() == '/') wo.dir.pop_back();
    wo.dir += "/" + s.uuid + "-staging";
    wo.upload_delay = std::chrono::milliseconds(static_cast<int64_t>(cfg.upload_delay_s * 1000));
    wo.max_uploads = cfg.vfs.max_uploads;
    auto staged = WritebackStore::Open(std::move(objects), wo);
    if (!staged.ok()) return staged.status().WithContext("--writeback");
    writeback = staged->get();
    return std::unique_ptr<ObjectStore>(std::move(*staged));
  };
  ASSIGN_OR_RETURN(std::unique_ptr<ObjectStore> objects, OpenVolumeStore(s, staging));
  // An unreachable endpoint, wrong keys or a missing bucket fail the mount
  // now, in one line, not every read and write later. (The prefix has no
  // '/': moto, for one, verifies signatures of %-escaped queries wrongly.)
  if (auto probe = objects->List(s.name, "", 1); !probe.ok()) {
    return probe.status().WithContext("bucket " + s.bucket + " is not usable");
  }
  SliceStore slices(s.name, s.block_size, objects.get());
  // Each volume caches in its own directory: blocks of two volumes never mix.
  CacheOptions cache_options = cfg.cache;
  // A local-directory bucket is a local disk already: copying its blocks to
  // a disk cache would only double the disk traffic, unless asked for.
  if (s.storage == "file" && !cfg.cache_dir_given) cache_options.disk_dir.clear();
  if (cache_options.disk_dir.empty()) cache_options.disk_bytes = 0;
  if (!cache_options.disk_dir.empty()) cache_options.disk_dir += "/" + s.uuid;
  auto cache = MakeBlockCache(cache_options);
  if (!cache.ok() && !cache_options.disk_dir.empty()) {
    // Another mount of this volume on this host owns the disk cache: this
    // one still works, with the memory cache only.
    LogWarn("disk cache unavailable, using memory only: " + cache.status().ToString());
    cache_options.disk_dir.clear();
    cache_options.disk_bytes = 0;
    cache = MakeBlockCache(cache_options);
  }
  if (!cache.ok()) return cache.status().WithContext("cache");
  VfsOptions vfs_options = cfg.vfs;
  // A compressed or encrypted block is decoded whole whatever part of it is
  // asked for: keep it in the cache for the next read instead of decoding
  // it again.
  vfs_options.whole_block_reads = s.compression != "none" || !s.encrypt_data_key.empty();
  Vfs vfs(meta->get(), &slices, vfs_options, cache->get());

  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  SessionInfo session{host, static_cast<uint32_t>(getpid()), cfg.mount_point, kVersion};
  session.heartbeat_s = static_cast<uint32_t>(cfg.heartbeat_s);
  if (writeback != nullptr) {
    session.staging_dir = writeback->dir();
    session.pending_uploads = writeback->Pending().objects;  // left by an earlier run
    session.pending_upload_bytes = writeback->Pending().bytes;
  }
  RETURN_IF_ERROR((*meta)->StartSession(session));

  std::mutex mu;
  std::condition_variable cv;
  bool stopping = false;
  // The heartbeat has a thread of its own: housekeeping below may take long
  // (thousands of block deletes), and a late heartbeat makes the other
  // clients presume this one dead.
  std::thread heartbeat([&] {
    std::unique_lock lock(mu);
    while (!cv.wait_for(lock, std::chrono::seconds(cfg.heartbeat_s), [&] { return stopping; })) {
      lock.unlock();
      if (Status st = (*meta)->Heartbeat(); !st.ok()) LogWarn("heartbeat: " + st.ToString());
      lock.lock();
    }
  });
  std::thread housekeeping([&] {
    std::unique_lock lock(mu);
    while (!cv.wait_for(lock, std::chrono::seconds(cfg.heartbeat_s), [&] { return stopping; })) {
      lock.unlock();
      // Clients that stopped heartbeating (killed, cut off) leave locks and
      // unlinked open files behind: any live client cleans them up.
      if (auto n = (*meta)->CleanupStaleSessions(NowNanos()); !n.ok()) {
        LogWarn("cleaning up stale sessions: " + n.status().ToString());
      } else if (*n > 0) {
        LogInfo("cleaned up " + std::to_string(*n) + " stale session(s)");
      }
      // Trash hours past the volume's trash days (one client at a time).
      if (auto n = (*meta)->EmptyTrash(NowNanos(), 10'000); !n.ok()) {
        LogWarn("emptying the trash: " + n.status().ToString());
      }
      // Files unlinked by clients that stopped before deleting them.
      if (auto n = (*meta)->ReclaimUnlinked(10'000); !n.ok()) {
        LogWarn("deleting unlinked files: " + n.status().ToString());
      }
      // Slices replaced by compaction (here or on any client) go once due.
      if (auto n = vfs.DeleteDueSlices(); !n.ok()) LogWarn("deleting slices: " + n.status().ToString());
      // Long writers without fsync: their uploaded blocks get committed.
      if (Status st = vfs.FlushUploadedBefore(10LL * 60 * 1'000'000'000); !st.ok()) {
        LogWarn("committing long-pending writes: " + st.ToString());
      }
      // Freed slices whose blocks nobody deleted yet (a crash, an error).
      if (auto n = vfs.QueueFreedSlices(); !n.ok()) {
        LogWarn("queueing freed slices: " + n.status().ToString());
      }
      lock.lock();
    }
  });
  // With --writeback the session shows how much this host still has to
  // upload: updated within a second of a change, and at every heartbeat.
  std::thread reporter;
  if (writeback != nullptr) {
    reporter = std::thread([&] {
      PendingUploads reported{session.pending_uploads, session.pending_upload_bytes};
      auto last = std::chrono::steady_clock::now();
      std::unique_lock lock(mu);
      while (!cv.wait_for(lock, std::chrono::seconds(1), [&] { return stopping; })) {
        lock.unlock();
        const PendingUploads now = writeback->Pending();
        const auto t = std::chrono::steady_clock::now();
        if (now.objects != reported.objects || now.bytes != reported.bytes ||
            t - last >= std::chrono::seconds(cfg.heartbeat_s)) {
          SessionInfo info = session;
          info.pending_uploads = now.objects;
          info.pending_upload_bytes = now.bytes;
          if (Status st = (*meta)->UpdateSession(info); st.ok()) {
            reported = now;
            last = t;
          } else {
            LogWarn("session update: " + st.ToString());
          }
        }
        lock.lock();
      }
    });
  }

  FuseOptions fo;
  fo.mount_point = cfg.mount_point;
  fo.fs_name = "tessera:" + s.name;
  fo.max_threads = cfg.max_threads;
  fo.allow_other = geteuid() == 0;
  fo.debug = cfg.debug;
  Status served = ServeFuse(&vfs, fo, [&] {
    // Before the pid file: whoever sees the mount ready can find its URL.
    if (!WriteUrlFile(cfg.mount_point, AbsoluteMetaUrl(cfg.meta_url))) {
      LogWarn("cannot write " + UrlFileFor(cfg.mount_point) +
              ": 'tessera info' will not find this mount's volume");
    }
    WritePidFile(cfg.mount_point);
    LogInfo("mounted volume " + s.name + " at " + cfg.mount_point);
    ready("");
  });
  if (Status st = vfs.FlushAll(); !st.ok()) LogError("flush at unmount: " + st.ToString());
  // Merges write blocks too: they must be done before the last uploads.
  vfs.compactor().Stop();
  if (writeback != nullptr) {
    if (Status st = writeback->Drain(kDrainStallLimit); !st.ok()) {
      LogError("at unmount: " + st.ToString());
    }
  }
  {
    std::lock_guard lock(mu);
    stopping = true;
  }
  cv.notify_all();
  heartbeat.join();
  housekeeping.join();
  if (reporter.joinable()) reporter.join();
  if (Status st = (*meta)->EndSession(); !st.ok()) LogWarn("ending session: " + st.ToString());
  if (served.ok()) LogInfo("unmounted " + cfg.mount_point);
  RemoveUrlFile(cfg.mount_point);
  // Last: `tessera umount` waits for the pid file to go.
  RemovePidFile(cfg.mount_point);
  return served;
}

// Forks a daemon that mounts; waits until it reports the mount usable or fails.
int RunInBackground(const MountConfig& cfg, const std::string& log_file) {
  int fds[2];
  if (pipe(fds) != 0) return Fail("mount", "cannot create a pipe");
  pid_t pid = fork();
  if (pid < 0) return Fail("mount", "cannot fork");
  if (pid == 0) {
    close(fds[0]);
    setsid();
    int null_fd = open("/dev/null", O_RDWR);
    int log_fd = open(log_file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (null_fd >= 0) dup2(null_fd, STDIN_FILENO);
    int out = log_fd >= 0 ? log_fd : null_fd;
    if (out >= 0) {
      dup2(out, STDOUT_FILENO);
      dup2(out, STDERR_FILENO);
    }
    bool reported = false;
    auto report = [&](const std::string& message) {
      if (reported) return;
      reported = true;
      std::string line = message.empty() ? "OK\n" : message + "\n";
      ssize_t n = write(fds[1], line.data(), line.size());
      (void)n;
      close(fds[1]);
    };
    Status st = Serve(cfg, report);
    if (!st.ok()) {
      LogError(st.ToString());
      report(st.ToString());
    }
    _exit(st.ok() ? 0 : 1);
  }
  close(fds[1]);
  std::string reply;
  char buf[512];
  ssize_t n;
  while ((n = read(fds[0], buf, sizeof(buf))) > 0) {
    reply.append(buf, static_cast<size_t>(n));
    if (reply.find('\n') != std::string::npos) break;
  }
  close(fds[0]);
  if (reply == "OK\n") {
    std::printf("Mounted at %s (daemon pid %d, log %s)\n", cfg.mount_point.c_str(),
                static_cast<int>(pid), log_file.c_str());
    return 0;
  }
  int status = 0;
  waitpid(pid, &status, 0);
  if (!reply.empty() && reply.back() == '\n') reply.pop_back();
  return Fail("mount", reply.empty() ? "the mount daemon exited without mounting" : reply);
}

}  // namespace

int RunMount(int argc, char** argv) {
  Args args;
  args.Flag("background", "-d");
  args.Flag("debug");
  args.Flag("writeback");
  for (const char* v : {"log", "attr-cache", "entry-cache", "dir-entry-cache", "max-threads",
                        "heartbeat", "meta-timeout", "atime-mode", "buffer-size", "max-uploads", "max-deletes", "max-downloads",
                        "prefetch", "cache-dir", "cache-size", "free-space-ratio",
                        "memory-cache", "upload-delay"}) {
    args.Value(v);
  }
  if (Status st = args.Parse(argc, argv, 2); !st.ok()) return Fail("mount", st);
  if (args.help()) {
    std::fputs(kHelp, stdout);
    return 0;
  }
  if (args.positional().size() != 2) return Fail("mount", "expected META-URL and MOUNTPOINT (see --help)");
  MountConfig cfg;
  cfg.meta_url = args.positional()[0];
  std::error_code ec;
  std::filesystem::path mp = std::filesystem::absolute(args.positional()[1], ec);
  cfg.mount_point = mp.lexically_normal().string();
  if (cfg.mount_point.size() > 1 && cfg.mount_point.back() == '/') cfg.mount_point.pop_back();
  struct stat st;
  if (::stat(cfg.mount_point.c_str(), &st) != 0) {
    return Fail("mount", "mount point " + cfg.mount_point + " does not exist");
  }
  if (!S_ISDIR(st.st_mode)) return Fail("mount", "mount point " + cfg.mount_point + " is not a directory");
  if (MountedFsType(cfg.mount_point) == "fuse.tessera") {
    return Fail("mount", cfg.mount_point + " is already a tessera mount");
  }
  struct Timeout {
    const char* flag;
    double* field;
  };
  for (Timeout t : {Timeout{"attr-cache", &cfg.vfs.attr_timeout_s},
                    Timeout{"entry-cache", &cfg.vfs.entry_timeout_s},
                    Timeout{"dir-entry-cache", &cfg.vfs.dir_entry_timeout_s},
                    Timeout{"meta-timeout", &cfg.meta_timeout_s}}) {
    if (auto v = args.Get(t.flag)) {
      auto seconds = ParseSeconds(*v, std::string("--") + t.flag);
      if (!seconds.ok()) return Fail("mount", seconds.status());
      *t.field = *seconds;
    }
  }
  if (auto v = args.Get("max-threads")) {
    auto n = ParseUint(*v, "--max-threads");
    if (!n.ok() || *n == 0 || *n > 1024) return Fail("mount", "--max-threads must be 1..1024");
    cfg.max_threads = static_cast<unsigned>(*n);
  }
  if (auto v = args.Get("heartbeat")) {
    auto n = ParseUint(*v, "--heartbeat");
    if (!n.ok() || *n == 0 || *n > 3600) {
      return Fail("mount", "--heartbeat must be 1 to 3600 seconds, not '" + *v + "'");
    }
    cfg.heartbeat_s = static_cast<int>(*n);
  }
  cfg.debug = args.Has("debug");
  if (auto v = args.Get("buffer-size")) {
    auto bytes = ParseMebibytes(*v);
    if (!bytes.ok() || *bytes < (1u << 20) || *bytes > (1ull << 40)) {
      return Fail("mount", "--buffer-size must be 1M to 1T, not '" + *v + "'");
    }
    cfg.vfs.buffer_bytes = *bytes;
  }
  if (auto v = args.Get("memory-cache")) {
    auto bytes = ParseMebibytes(*v);
    if (!bytes.ok() || *bytes > (1ull << 40)) return Fail("mount", "--memory-cache must be 0 to 1T, not '" + *v + "'");
    cfg.cache.memory_bytes = *bytes;
  }
  if (auto v = args.Get("cache-size")) {
    auto bytes = ParseMebibytes(*v);
    if (!bytes.ok() || *bytes == 0) return Fail("mount", "--cache-size must be a positive size, not '" + *v + "'");
    cfg.cache.disk_bytes = *bytes;
  }
  if (auto v = args.Get("free-space-ratio")) {
    char* end = nullptr;
    double r = std::strtod(v->c_str(), &end);
    if (v->empty() || *end != '\0' || !(r >= 0) || r >= 1) {
      return Fail("mount", "--free-space-ratio must be in [0, 1), not '" + *v + "'");
    }
    cfg.cache.free_space_ratio = r;
  }
  cfg.cache.disk_dir = args.Get("cache-dir", DefaultCacheDir());
  cfg.cache_dir_given = args.Has("cache-dir");
  if (cfg.cache.disk_dir == "none") cfg.cache.disk_dir.clear();
  cfg.writeback = args.Has("writeback");
  if (cfg.writeback && cfg.cache.disk_dir.empty()) {
    return Fail("mount", "--writeback stages blocks in the cache directory; it cannot be used "
                         "with --cache-dir none");
  }
  if (auto v = args.Get("upload-delay")) {
    if (!cfg.writeback) return Fail("mount", "--upload-delay needs --writeback");
    auto seconds = ParseSeconds(*v, "--upload-delay");
    if (!seconds.ok()) return Fail("mount", seconds.status());
    cfg.upload_delay_s = *seconds;
  }
  for (auto [flag, field, most] : {std::tuple{"max-downloads", &cfg.vfs.max_downloads, 1000ul},
                                   std::tuple{"prefetch", &cfg.vfs.prefetch_blocks, 1000ul}}) {
    if (auto v = args.Get(flag)) {
      auto n = ParseUint(*v, flag);
      if (!n.ok() || *n > most || (*n == 0 && std::string(flag) == "max-downloads")) {
        return Fail("mount", std::string("--") + flag + " must be " +
                                 (std::string(flag) == "prefetch" ? "0" : "1") + " to " +
                                 std::to_string(most) + ", not '" + *v + "'");
      }
      *field = *n;
    }
  }
  if (auto v = args.Get("max-uploads")) {
    auto n = ParseUint(*v, "--max-uploads");
    if (!n.ok() || *n == 0 || *n > 1000) return Fail("mount", "--max-uploads must be 1 to 1000, not '" + *v + "'");
    cfg.vfs.max_uploads = static_cast<size_t>(*n);
  }
  if (auto v = args.Get("max-deletes")) {
    auto n = ParseUint(*v, "--max-deletes");
    if (!n.ok() || *n == 0 || *n > 1000) return Fail("mount", "--max-deletes must be 1 to 1000, not '" + *v + "'");
    cfg.vfs.max_deletes = static_cast<size_t>(*n);
  }
  if (auto v = args.Get("atime-mode")) {
    if (*v == "noatime") cfg.vfs.atime_mode = AtimeMode::kNoAtime;
    else if (*v == "relatime") cfg.vfs.atime_mode = AtimeMode::kRelAtime;
    else if (*v == "strictatime") cfg.vfs.atime_mode = AtimeMode::kStrictAtime;
    else return Fail("mount", "--atime-mode must be noatime, relatime or strictatime, not '" + *v + "'");
  }

  if (args.Has("background")) {
    return RunInBackground(cfg, args.Get("log", DefaultLogFile()));
  }
  Status served = Serve(cfg, [](const std::string&) {});
  if (!served.ok()) return Fail("mount", served);
  return 0;
}

}  // namespace tessera
