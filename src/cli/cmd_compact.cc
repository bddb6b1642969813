// tessera compact: merges the slices of files on demand.
#include <sys/stat.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <set>

#include "cli/args.h"
#include "cli/commands.h"
#include "cli/mounted_path.h"
#include "cli/volume_store.h"
#include "common/thread_pool.h"
#include "common/units.h"
#include "data/block_reader.h"
#include "data/compactor.h"
#include "data/slice_store.h"
#include "kv/kv.h"
#include "meta/meta.h"
#include "object/object_store.h"
#include "vfs/meta_chunks.h"

namespace tessera {
namespace {

constexpr const char* kHelp = R"(Usage: tessera compact [--threads N] PATH...

Merge the slices of every chunk of the files at PATH (a file, or a directory
and everything below it, inside a mounted volume) into one slice per chunk.
Files written by many small or overlapping writes read faster afterwards and
their metadata shrinks. Mounts do this in the background for chunks that
collect many slices; this command does it now, for everything.

Reads during compaction always return the right bytes. The replaced slices
are deleted by the volume's mounts a minute later, so that readers that
fetched the old records can finish. Data still buffered in a mount (not yet
flushed) is not affected.

Options:
  --threads N   chunks merged at once (default 4)
)";

struct FileToCompact {
  InodeId inode;
  uint64_t length = 0;
  std::string path;
};

// Regular files at or below `root` (through the mount), each inode once.
Status CollectFiles(const MountedPath& root, std::vector<FileToCompact>* out) {
  std::set<uint64_t> seen;
  auto add = [&](const std::string& path, const struct stat& st) {
    if (S_ISREG(st.st_mode) && seen.insert(st.st_ino).second) {
      out->push_back({InodeId(st.st_ino), static_cast<uint64_t>(st.st_size), path});
    }
  };
  add(root.path, root.st);
  if (!S_ISDIR(root.st.st_mode)) return Status::Ok();
  std::error_code ec;
  std::filesystem::recursive_directory_iterator it(
      root.path, std::filesystem::directory_options::skip_permission_denied, ec);
  for (; !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    struct stat st;
    if (::lstat(it->path().c_str(), &st) == 0) add(it->path().string(), st);
  }
  if (ec) return Status(StatusCode::kIo, "cannot list " + root.path + ": " + ec.message());
  return Status::Ok();
}

}  // namespace

int RunCompact(int argc, char** argv) {
  Args args;
  args.Value("threads");
  if (Status st = args.Parse(argc, argv, 2); !st.ok()) return Fail("compact", st);
  if (args.help()) {
    std::fputs(kHelp, stdout);
    return 0;
  }
  if (args.positional().empty()) return Fail("compact", "expected PATH (see --help)");
  auto threads_arg = args.GetCount("threads", 4, 1, 256);
  if (!threads_arg.ok()) return Fail("compact", threads_arg.status());
  const size_t threads = *threads_arg;

  std::vector<MountedPath> roots;
  for (const std::string& path : args.positional()) {
    auto resolved = ResolveMountedPath(path);
    if (!resolved.ok()) return Fail("compact", resolved.status());
    if (!roots.empty() && resolved->meta_url != roots.front().meta_url) {
      return Fail("compact", "all paths must be in one volume: " + path);
    }
    roots.push_back(std::move(*resolved));
  }
  auto kv = OpenKv(roots.front().meta_url);
  if (!kv.ok()) return Fail("compact", kv.status());
  auto meta = Meta::Open(std::move(*kv));
  if (!meta.ok()) return Fail("compact", meta.status());
  const VolumeSettings& s = (*meta)->settings();
  auto objects = OpenVolumeStore(s);
  if (!objects.ok()) return Fail("compact", objects.status());
  SliceStore slices(s.name, s.block_size, objects->get());
  MetaChunks chunks(meta->get());

  std::vector<FileToCompact> files;
  for (const MountedPath& root : roots) {
    if (Status st = CollectFiles(root, &files); !st.ok()) return Fail("compact", st);
  }

  std::atomic<uint64_t> merged{0}, records_before{0}, records_after{0}, written{0};
  std::mutex error_mu;
  Status first_error;
  {
    BlockReader reader(&slices, nullptr, threads);
    Compactor compactor(&chunks, &reader, CompactOptions{});
    ThreadPool pool(threads);
    for (const FileToCompact& f : files) {
      const uint64_t chunk_count = (f.length + kChunkSize - 1) / kChunkSize;
      for (uint64_t c = 0; c < chunk_count; ++c) {
        pool.Submit([&, f, c] {
          auto r = compactor.CompactChunk(f.inode, static_cast<uint32_t>(c), true);
          if (!r.ok()) {
            std::lock_guard lock(error_mu);
            if (first_error.ok()) first_error = r.status().WithContext(f.path);
            return;
          }
          records_before += r->records_before;
          records_after += r->records_after;
          if (r->merged) merged++;
          written += r->bytes_written;
        });
      }
    }
  }
  if (!first_error.ok()) return Fail("compact", first_error);
  std::printf("compacted %llu chunks of %zu files: %llu slice records -> %llu, %s written\n",
              static_cast<unsigned long long>(merged.load()), files.size(),
              static_cast<unsigned long long>(records_before.load()),
              static_cast<unsigned long long>(records_after.load()),
              FormatBytes(written.load()).c_str());
  return 0;
}

}  // namespace tessera
