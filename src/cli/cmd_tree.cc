// tessera rmr and tessera clone: whole trees at metadata speed, for paths
// inside a mounted volume.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>

#include "cli/args.h"
#include "cli/commands.h"
#include "cli/mounted_path.h"
#include "cli/volume_store.h"
#include "common/log.h"
#include "data/delete_queue.h"
#include "data/slice_store.h"
#include "kv/kv.h"
#include "meta/meta.h"

namespace tessera {
namespace {

constexpr const char* kRmrHelp = R"(Usage: tessera rmr PATH...

Remove each PATH (inside a mounted volume) with everything below it, working
on the metadata directly in batches of entries instead of one request per
file through the mount. When the volume's trash is on (tessera format
--trash-days), every file and directory goes into the trash as rm -r would
put it there, and `tessera trash restore` brings it back; otherwise the
entries are deleted, and this command waits (up to a minute) for the
blocks of the data they held to be deleted from the bucket.

Mounts may show removed names until their entry cache expires (1 s by
default).
)";

constexpr const char* kCloneHelp = R"(Usage: tessera clone SRC DST

Copy SRC (a file, or a directory with everything below it, inside a mounted
volume) to DST (a new name in the same volume) without copying data: the
copy refers to the source's blocks, and the two diverge when either is
written. Deleting one never affects the other. A directory is copied in
batches into a new directory that appears at DST only once complete;
if the copy fails, nothing appears. Hard links inside a tree become
separate files. Copies belong to the calling user unless root runs it.
)";

// A volume opened from a path inside its mount, as tools need it: the
// metadata, and the deletion of the blocks of slices freed meanwhile.
struct ToolVolume {
  std::unique_ptr<Meta> meta;
  std::unique_ptr<ObjectStore> objects;
  std::unique_ptr<SliceStore> slices;
  std::unique_ptr<DeleteQueue> deletes;

  ~ToolVolume() {
    // Files unlinked here are deleted by this process's background thread;
    // then their blocks go.
    if (meta) meta->DrainReclaims(60'000);
    if (deletes) {
      meta->SetSliceDeleter(nullptr);
      if (!deletes->Drain(60'000)) {
        LogWarn("leaving " + std::to_string(deletes->pending()) +
                " slices to the mounts' background deletion");
      }
    }
  }
};

Result<std::unique_ptr<ToolVolume>> OpenToolVolume(const std::string& meta_url) {
  auto v = std::make_unique<ToolVolume>();
  ASSIGN_OR_RETURN(std::unique_ptr<KvStore> kv, OpenKv(meta_url));
  ASSIGN_OR_RETURN(v->meta, Meta::Open(std::move(kv)));
  const VolumeSettings& s = v->meta->settings();
  ASSIGN_OR_RETURN(v->objects, OpenVolumeStore(s));
  v->slices = std::make_unique<SliceStore>(s.name, s.block_size, v->objects.get());
  Meta* meta = v->meta.get();
  v->deletes = std::make_unique<DeleteQueue>(
      v->slices.get(), 10, 100'000, [meta](const std::vector<SliceRef>& done) {
        if (Status st = meta->DropFreedSlices(done); !st.ok()) LogWarn(st.ToString());
      });
  DeleteQueue* deletes = v->deletes.get();
  v->meta->SetSliceDeleter([deletes](const std::vector<SliceRef>& freed) { deletes->Add(freed); });
  return v;
}

// The caller as the kernel would see it.
Context Caller() {
  return Context{static_cast<uint32_t>(geteuid()), static_cast<uint32_t>(getegid()),
                 static_cast<uint32_t>(getpid())};
}

// The directory holding `path` and the last component, through the mount.
Result<std::pair<MountedPath, std::string>> ParentOf(const std::string& path) {
  std::filesystem::path p = std::filesystem::absolute(path).lexically_normal();
  if (!p.has_filename()) p = p.parent_path();
  const std::string name = p.filename().string();
  if (name.empty() || name == "." || name == "..") return Invalid(path + ": no name to work on");
  ASSIGN_OR_RETURN(MountedPath parent, ResolveMountedPath(p.parent_path().string()));
  if (!S_ISDIR(parent.st.st_mode)) return Status(StatusCode::kNotDir, p.parent_path().string() + " is not a directory");
  return std::make_pair(std::move(parent), name);
}

// "N entries, R/s" on stderr while a terminal watches.
class Progress {
 public:
  explicit Progress(const char* what) : what_(what), tty_(isatty(STDERR_FILENO) != 0) {}
  void Tell(uint64_t n) {
    n_ = n;
    auto now = std::chrono::steady_clock::now();
    if (!tty_ || now - shown_ < std::chrono::milliseconds(200)) return;
    shown_ = now;
    std::fprintf(stderr, "\r%s %llu entries, %.0f/s   ", what_, static_cast<unsigned long long>(n),
                 Rate());
  }
  double Rate() const {
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    return s > 0 ? static_cast<double>(n_) / s : 0;
  }
  double Seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }
  void Done() {
    if (tty_) std::fputs("\r\033[K", stderr);
  }

 private:
  const char* what_;
  const bool tty_;
  uint64_t n_ = 0;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now(), shown_;
};

}  // namespace

int RunRmr(int argc, char** argv) {
  Args args;
  if (Status st = args.Parse(argc, argv, 2); !st.ok()) return Fail("rmr", st);
  if (args.help()) {
    std::fputs(kRmrHelp, stdout);
    return 0;
  }
  if (args.positional().empty()) return Fail("rmr", "expected PATH (see --help)");
  int rc = 0;
  for (const std::string& path : args.positional()) {
    auto where = ParentOf(path);
    if (!where.ok()) {
      rc = Fail("rmr", where.status());
      continue;
    }
    auto volume = OpenToolVolume(where->first.meta_url);
    if (!volume.ok()) return Fail("rmr", volume.status());
    Progress progress("removed");
    auto n = (*volume)->meta->RemoveTree(Caller(), where->first.inode, where->second,
                                         [&](uint64_t k) { progress.Tell(k); });
    progress.Done();
    if (!n.ok()) {
      rc = Fail("rmr", n.status().WithContext(path));
      continue;
    }
    const bool trash = (*volume)->meta->settings().trash_days > 0;
    std::printf("%s: %llu entries %s in %.2f s (%.0f/s)\n", path.c_str(),
                static_cast<unsigned long long>(*n), trash ? "moved to the trash" : "removed",
                progress.Seconds(), progress.Rate());
  }
  return rc;
}

int RunClone(int argc, char** argv) {
  Args args;
  if (Status st = args.Parse(argc, argv, 2); !st.ok()) return Fail("clone", st);
  if (args.help()) {
    std::fputs(kCloneHelp, stdout);
    return 0;
  }
  if (args.positional().size() != 2) return Fail("clone", "expected SRC and DST (see --help)");
  const std::string& src_path = args.positional()[0];
  const std::string& dst_path = args.positional()[1];
  auto src = ResolveMountedPath(src_path);
  if (!src.ok()) return Fail("clone", src.status());
  auto dst = ParentOf(dst_path);
  if (!dst.ok()) return Fail("clone", dst.status());
  if (dst->first.meta_url != src->meta_url) {
    return Fail("clone", "SRC and DST must be in one volume");
  }
  auto volume = OpenToolVolume(src->meta_url);
  if (!volume.ok()) return Fail("clone", volume.status());
  Progress progress("copied");
  auto n = (*volume)->meta->Clone(Caller(), src->inode, dst->first.inode, dst->second,
                                  [&](uint64_t k) { progress.Tell(k); });
  progress.Done();
  if (!n.ok()) return Fail("clone", n.status().WithContext(dst_path));
  std::printf("%s -> %s: %llu entries cloned in %.2f s (%.0f/s)\n", src_path.c_str(),
              dst_path.c_str(), static_cast<unsigned long long>(*n), progress.Seconds(),
              progress.Rate());
  return 0;
}

}  // namespace tessera
